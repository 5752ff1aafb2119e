//! Thumbnails for the grid: decoded and shrunk on worker threads from the pre-resized cache
//! (`thumbs/`), turned into textures only when shown, and evicted least-recently-used so memory
//! stays bounded however many works the workspace holds. The UI never waits for a decode.
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};

/// Longest side of a grid thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 192;

struct Queue {
    /// Most recent requests are served first: they are what is on screen now.
    jobs: Mutex<VecDeque<(i64, PathBuf)>>,
    ready: Condvar,
}

pub struct ThumbCache {
    queue: Arc<Queue>,
    results: Receiver<(i64, Option<egui::ColorImage>)>,
    textures: HashMap<i64, (egui::TextureHandle, u64)>,
    pending: HashSet<i64>,
    failed: HashSet<i64>,
    clock: u64,
    pub capacity: usize,
}

impl ThumbCache {
    pub fn new(ctx: &egui::Context, workers: usize, capacity: usize) -> Self {
        let queue = Arc::new(Queue { jobs: Mutex::new(VecDeque::new()), ready: Condvar::new() });
        let (tx, results) = channel();
        for _ in 0..workers.max(1) {
            let (queue, tx, ctx): (Arc<Queue>, Sender<_>, egui::Context) = (queue.clone(), tx.clone(), ctx.clone());
            std::thread::spawn(move || {
                loop {
                    let job = {
                        let mut q = queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
                        while q.is_empty() {
                            q = queue.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                        }
                        q.pop_back()
                    };
                    let Some((id, path)) = job else { continue };
                    let img = crate::imaging::decode_file(&path).ok().map(|d| {
                        let small = image::imageops::thumbnail(&d.rgb, THUMB_SIDE, THUMB_SIDE);
                        let (w, h) = small.dimensions();
                        egui::ColorImage::from_rgb([w as usize, h as usize], small.as_raw())
                    });
                    if tx.send((id, img)).is_err() {
                        return;
                    }
                    ctx.request_repaint();
                }
            });
        }
        Self {
            queue,
            results,
            textures: HashMap::new(),
            pending: HashSet::new(),
            failed: HashSet::new(),
            clock: 0,
            capacity,
        }
    }

    /// Takes finished decodes; creates their textures and evicts the oldest beyond capacity.
    pub fn poll(&mut self, ctx: &egui::Context) {
        while let Ok((id, img)) = self.results.try_recv() {
            self.pending.remove(&id);
            match img {
                Some(img) => {
                    self.clock += 1;
                    let tex = ctx.load_texture(format!("thumb-{id}"), img, egui::TextureOptions::LINEAR);
                    self.textures.insert(id, (tex, self.clock));
                }
                None => {
                    self.failed.insert(id);
                }
            }
        }
        if self.textures.len() > self.capacity {
            let mut by_age: Vec<(u64, i64)> = self.textures.iter().map(|(id, (_, t))| (*t, *id)).collect();
            by_age.sort_unstable();
            for (_, id) in by_age.into_iter().take(self.textures.len() - self.capacity) {
                self.textures.remove(&id);
            }
        }
    }

    /// The texture if ready; otherwise asks a worker for it (once) and returns `None`.
    pub fn get(&mut self, id: i64, path: Option<&PathBuf>) -> Option<egui::TextureHandle> {
        self.clock += 1;
        if let Some((tex, used)) = self.textures.get_mut(&id) {
            *used = self.clock;
            return Some(tex.clone());
        }
        if let Some(p) = path
            && !self.pending.contains(&id)
            && !self.failed.contains(&id)
        {
            self.pending.insert(id);
            self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner()).push_back((id, p.clone()));
            self.queue.ready.notify_one();
        }
        None
    }

    pub fn is_broken(&self, id: i64) -> bool {
        self.failed.contains(&id)
    }

    pub fn loaded(&self) -> usize {
        self.textures.len()
    }

    /// Drops queued requests (e.g. after fast scrolling) so workers serve what is visible.
    pub fn forget_queue(&mut self) {
        let mut q = self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for (id, _) in q.drain(..) {
            self.pending.remove(&id);
        }
    }

    pub fn clear(&mut self) {
        self.forget_queue();
        self.textures.clear();
        self.failed.clear();
    }
}
