//! The Training view's state and its transitions, free of drawing and of threads: the live run's
//! series and message as its events arrive, and the runs table's columns and order.
//! Unit-tested without a window.
use crate::catalog::{BatchMetrics, EpochMetrics, RunRecord};
use crate::train::TrainEvent;

/// Live series of the run in progress.
#[derive(Default)]
pub struct LiveRun {
    pub run_id: Option<String>,
    /// Every batch so far: streamed by a run this window trains, read from the catalog for a
    /// run another process trains (it writes them every ~2 s) or one reopened later.
    pub batches: Vec<BatchMetrics>,
    pub epochs: Vec<EpochMetrics>,
    pub message: String,
    pub paused: bool,
    pub total_epochs: u32,
}

/// What an event meant for the view beyond the series.
#[derive(Debug, PartialEq)]
pub enum Step {
    Continue,
    /// An epoch was committed to the catalog (the runs table changes).
    EpochDone,
    /// The run ended: finished, or failed with this error.
    Ended(Option<String>),
}

impl LiveRun {
    /// Takes one event of the run this window trains.
    pub fn apply(&mut self, event: Result<TrainEvent, String>) -> Step {
        match event {
            Ok(TrainEvent::Started { run_id, epochs, .. }) => {
                self.run_id = Some(run_id);
                self.total_epochs = epochs;
            }
            Ok(TrainEvent::Batch(b)) => {
                self.message = format!("epoch {}, batch {}/{}", b.epoch, b.batch, b.batches);
                self.batches.push(b);
            }
            Ok(TrainEvent::Epoch(m)) => {
                self.epochs.push(m);
                return Step::EpochDone;
            }
            Ok(TrainEvent::Message(m)) => self.message = m,
            Ok(TrainEvent::Paused) => self.paused = true,
            Ok(TrainEvent::Resumed) => self.paused = false,
            Ok(TrainEvent::Finished { best_val_acc, top1, top3, .. }) => {
                self.message = format!(
                    "finished: best val {:.1}%, test top-1 {:.1}%, top-3 {:.1}%",
                    best_val_acc * 100.0,
                    top1 * 100.0,
                    top3 * 100.0
                );
                return Step::Ended(None);
            }
            Err(e) => return Step::Ended(Some(e)),
        }
        Step::Continue
    }

    /// The worker went away without a last word: the error to show, unless it had finished.
    /// The view is never left "running".
    pub fn vanished(&self) -> Option<String> {
        (!self.message.starts_with("finished")).then(|| "training stopped without a result (see the status bar)".into())
    }
}

/// The runs table's columns (after the compare checkbox), in the order `sorted_runs` knows.
pub const RUN_COLUMNS: [&str; 10] =
    ["run", "status", "arch", "scheduler", "method", "val %", "top-1 %", "top-3 %", "epochs", "time s"];

/// The runs ordered by column `by`: numbers largest first (a missing one last), text A to Z.
pub fn sorted_runs(runs: &[RunRecord], by: usize) -> Vec<RunRecord> {
    let key = |r: &RunRecord| -> (f64, String) {
        match by {
            5 => (r.val_acc.unwrap_or(-1.0), String::new()),
            6 => (r.top1.unwrap_or(-1.0), String::new()),
            7 => (r.top3.unwrap_or(-1.0), String::new()),
            8 => (r.epochs_done as f64, String::new()),
            9 => (r.seconds, String::new()),
            1 => (0.0, r.status.as_str().to_string()),
            2 => (0.0, r.arch.clone()),
            3 => (0.0, r.scheduler.clone()),
            4 => (0.0, r.method.clone()),
            _ => (0.0, r.id.clone()),
        }
    };
    let mut runs = runs.to_vec();
    runs.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0).then(ka.1.cmp(&kb.1))
    });
    runs
}

/// A fraction as a percentage with two decimals, or a dash when there is none.
pub fn percent(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map(|x| format!("{:.2}", x * 100.0)).unwrap_or_else(|| "–".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(batch: u32) -> BatchMetrics {
        BatchMetrics { epoch: 1, batch, batches: 4, loss: 2.0, lr: 0.01, images_per_s: 3.0, elapsed_s: batch as f64 }
    }

    #[test]
    fn events_grow_the_series_and_say_when_the_run_ends() {
        let mut live = LiveRun::default();
        let started = TrainEvent::Started {
            run_id: "r1".into(),
            classes: vec!["Dutch".into(), "French".into()],
            train: 8,
            val: 1,
            test: 1,
            epochs: 2,
            first_epoch: 1,
        };
        assert_eq!(live.apply(Ok(started)), Step::Continue);
        assert_eq!(live.apply(Ok(TrainEvent::Batch(batch(3)))), Step::Continue);
        assert_eq!(
            (live.run_id.as_deref(), live.total_epochs, live.message.as_str()),
            (Some("r1"), 2, "epoch 1, batch 3/4")
        );
        live.apply(Ok(TrainEvent::Paused));
        assert!(live.paused);
        live.apply(Ok(TrainEvent::Resumed));
        assert!(!live.paused);
        assert_eq!(live.vanished().as_deref(), Some("training stopped without a result (see the status bar)"));
        assert_eq!(live.apply(Err("out of memory".into())), Step::Ended(Some("out of memory".into())));
    }

    #[test]
    fn runs_sort_by_number_largest_first_with_missing_last_and_by_text_a_to_z() {
        let run = |id: &str, arch: &str, val: Option<f64>| RunRecord {
            id: id.into(),
            arch: arch.into(),
            method: "finetune".into(),
            scheduler: "step".into(),
            config: "{}".into(),
            status: crate::catalog::RunStatus::Finished,
            created_at: String::new(),
            epochs_done: 1,
            seconds: 1.0,
            val_acc: val,
            top1: None,
            top3: None,
            message: None,
            sample_works: 0,
        };
        let runs = [run("a", "vgg16_bn", None), run("b", "alexnet", Some(0.4)), run("c", "resnet50", Some(0.6))];
        let ids = |by| sorted_runs(&runs, by).into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(5), ["c", "b", "a"]);
        assert_eq!(ids(2), ["b", "c", "a"]);
        assert_eq!(ids(0), ["a", "b", "c"]);
        assert_eq!(
            (percent(Some(0.4567)), percent(None), percent(Some(f64::NAN))),
            ("45.67".into(), "–".into(), "–".into())
        );
    }
}
