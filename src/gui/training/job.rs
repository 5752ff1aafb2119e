//! The Training view's background work: a training run (new or resumed) streaming its events
//! over a channel, a run's evaluation for the confusion matrix, and exports of a run's metrics.
use crate::gui::jobs::Job;
use crate::gui::shared::{PickKind, Shared};
use crate::train::metrics::Evaluation;
use crate::train::{Control, TrainConfig, TrainEvent};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

/// The events of a run and the control that pauses or cancels it.
pub type Training = (Receiver<Result<TrainEvent, String>>, Arc<Control>);

/// Starts a new run with `cfg` (or resumes `resume`) as a status-bar job (cancellable there too)
/// that streams its events to the view; a panic becomes an error message while the trainer marks
/// the run *failed*.
pub fn spawn_training(shared: &mut Shared, cfg: TrainConfig, resume: Option<String>) -> Training {
    let (tx, rx) = std::sync::mpsc::channel();
    let control = Arc::new(Control::default());
    let (ws_path, device, ctx) = (shared.ws_path.clone(), shared.device, shared.ctx.clone());
    let ctl = control.clone();
    let name = if resume.is_some() { "Resume training" } else { "Training" };
    shared.spawn(name, move |reporter| {
        let send = |e: Result<TrainEvent, String>| {
            let _ = tx.send(e);
            ctx.request_repaint();
        };
        let (mut epoch_total, mut epoch_now) = (cfg.epochs.max(1), 0u32);
        let work = std::panic::AssertUnwindSafe(|| {
            let dev = device.open().map_err(|e| e.to_string())?;
            let mut on_event = |e: TrainEvent| {
                // The status bar's Cancel reaches the trainer through its control.
                if reporter.cancelled() {
                    ctl.cancel.store(true, Ordering::Relaxed);
                }
                match &e {
                    TrainEvent::Started { epochs, first_epoch, .. } => {
                        (epoch_total, epoch_now) = ((*epochs).max(1), first_epoch.saturating_sub(1));
                    }
                    TrainEvent::Batch(b) => {
                        let f = b.x() as f32 / epoch_total as f32;
                        reporter
                            .progress(f, format!("epoch {}/{epoch_total}, batch {}/{}", b.epoch, b.batch, b.batches));
                    }
                    TrainEvent::Epoch(m) => epoch_now = m.epoch,
                    TrainEvent::Message(m) => reporter.progress(epoch_now as f32 / epoch_total as f32, m.clone()),
                    _ => {}
                }
                send(Ok(e));
            };
            match &resume {
                Some(run) => crate::train::trainer::resume(&ws_path, run, &dev, &mut on_event, &ctl),
                None => crate::train::trainer::start(&ws_path, cfg, &dev, &mut on_event, &ctl),
            }
            .map_err(|e| e.to_string())
        });
        let result = std::panic::catch_unwind(work).unwrap_or_else(|p| {
            Err(format!(
                "training crashed: {} (a bug: please report it)",
                crate::train::run_status::panic_message(p.as_ref())
            ))
        });
        match result {
            Ok(run) => Ok(format!("run {run} finished")),
            Err(e) => {
                send(Err(e.clone()));
                Err(e)
            }
        }
    });
    (rx, control)
}

/// Evaluates run `id`'s best model on its test split.
pub fn spawn_confusion(shared: &Shared, id: &str) -> Job<Evaluation> {
    let (ws_path, id, device) = (shared.ws_path.clone(), id.to_string(), shared.device);
    Job::spawn(&shared.ctx, format!("Evaluate {id}"), move |_| {
        let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let dev = device.open().map_err(|e| e.to_string())?;
        crate::train::evaluate::eval_run(&ws, &id, &dev).map_err(|e| e.to_string())
    })
}

/// Exports a run's metrics as CSV, or its plots as PNG.
pub fn export_metrics(shared: &mut Shared, run: &str, png: bool) {
    let (picker, ws_path, run) = (shared.picker.clone(), shared.ws_path.clone(), run.to_string());
    shared.spawn("Export metrics", move |_| {
        let kind = if png { PickKind::SavePng } else { PickKind::SaveCsv };
        let Some(out) = picker(kind).into_iter().next() else { return Ok("cancelled".into()) };
        let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let ms = ws.catalog.epoch_metrics(&run).map_err(|e| e.to_string())?;
        if png {
            let img = crate::analysis::render::metrics_png(&run, &ms);
            crate::fsutil::write_atomic(&out, |f| {
                img.write_to(&mut std::io::BufWriter::new(f), image::ImageFormat::Png).map_err(std::io::Error::other)
            })
            .map_err(|e| e.to_string())?;
            return Ok(format!("plots of {run} written to {}", out.display()));
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["epoch", "train_loss", "val_loss", "val_acc", "val_top3", "lr", "images_per_s", "seconds"])
            .map_err(|e| e.to_string())?;
        for m in &ms {
            w.serialize((m.epoch, m.train_loss, m.val_loss, m.val_acc, m.val_top3, m.lr, m.images_per_s, m.seconds))
                .map_err(|e| e.to_string())?;
        }
        let bytes = w.into_inner().map_err(|e| e.to_string())?;
        crate::fsutil::write_bytes_atomic(&out, &bytes).map_err(|e| e.to_string())?;
        Ok(format!("{} epochs of {run} written to {}", ms.len(), out.display()))
    });
}
