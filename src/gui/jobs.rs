//! Background jobs: work on a worker thread that reports progress over a channel and wakes the
//! UI with `request_repaint`, so the UI thread never waits on disk, network or a model.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

/// What a job tells the UI.
pub enum JobEvent<T> {
    Progress { fraction: f32, message: String },
    Done(Result<T, String>),
}

/// The worker's side: report progress, check for cancellation.
#[derive(Clone)]
pub struct Reporter<T> {
    tx: Sender<JobEvent<T>>,
    ctx: egui::Context,
    cancel: Arc<AtomicBool>,
}

impl<T> Reporter<T> {
    pub fn progress(&self, fraction: f32, message: impl Into<String>) {
        let _ = self.tx.send(JobEvent::Progress { fraction, message: message.into() });
        self.ctx.request_repaint();
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }
}

/// The UI's side of one running job.
pub struct Job<T> {
    pub name: String,
    pub fraction: f32,
    pub message: String,
    cancel: Arc<AtomicBool>,
    rx: Receiver<JobEvent<T>>,
}

impl<T: Send + 'static> Job<T> {
    pub fn spawn(
        ctx: &egui::Context,
        name: impl Into<String>,
        work: impl FnOnce(&Reporter<T>) -> Result<T, String> + Send + 'static,
    ) -> Self {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let reporter = Reporter { tx, ctx: ctx.clone(), cancel: cancel.clone() };
        std::thread::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&reporter)))
                .unwrap_or_else(|_| Err("the job crashed (a bug: please report it)".to_string()));
            // A job's tensors are freed by now; give their pages back (see `crate::alloc`).
            crate::alloc::release_free_memory();
            let _ = reporter.tx.send(JobEvent::Done(result));
            reporter.ctx.request_repaint();
        });
        Self { name: name.into(), fraction: 0.0, message: String::new(), cancel, rx }
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelling(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Drains events; returns the result once the job has finished.
    pub fn poll(&mut self) -> Option<Result<T, String>> {
        while let Ok(ev) = self.rx.try_recv() {
            match ev {
                JobEvent::Progress { fraction, message } => {
                    self.fraction = fraction;
                    self.message = message;
                }
                JobEvent::Done(r) => return Some(r),
            }
        }
        None
    }
}
