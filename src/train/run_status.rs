//! How a run's status tells the truth: every error or panic after a run exists marks it
//! *failed* with its message, and a run stored as *running* whose process died reads as
//! *interrupted*. One process trains a run at a time, under the run's `train.lock`.
use super::TrainError;
use crate::catalog::RunStatus;
use crate::workspace::Workspace;
use std::path::Path;

/// The run's folder: `runs/<id>/` (checkpoints, configuration, the training lock).
pub(super) fn run_dir(ws: &Workspace, run: &str) -> std::path::PathBuf {
    ws.runs_dir().join(run)
}

/// Runs the work of a run that exists in the catalog and makes its stored status say how it
/// ended: any error or panic marks it *failed* with the message, a cancellation *cancelled*.
/// Nothing after `create_run` may leave a run "running" for a process that is gone.
pub(super) fn guarded(
    ws_path: &Path,
    run: &str,
    work: impl FnOnce() -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|payload| Err(TrainError::Panicked(panic_message(payload.as_ref()))));
    let (status, outcome) = match outcome {
        Ok(()) => return Ok(()),
        // Someone else's run: its status is theirs to write.
        Err(e @ TrainError::Busy(_)) => return Err(e),
        Err(TrainError::Cancelled(_)) => (RunStatus::Cancelled, Err(TrainError::Cancelled(run.to_string()))),
        Err(e) => (RunStatus::Failed, Err(e)),
    };
    let message = outcome.as_ref().err().map(|e| e.to_string());
    // A fresh connection: the one the work used may be mid-transaction after a panic. If even
    // this write fails, the run still reads as *interrupted* (running, lock free), which is true.
    if let Ok(mut ws) = Workspace::open(ws_path) {
        let _ = ws.catalog.set_run_status(run, status, message.as_deref());
    }
    outcome
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The run's training lock: one process trains a run at a time (a second `--resume`, or the
/// app's Resume, while the first still runs would write the same checkpoints). The OS drops
/// the lock when the process dies, which is how an *interrupted* run is told from a running one.
pub(super) fn lock_run(ws: &Workspace, run: &str) -> Result<std::fs::File, TrainError> {
    let dir = run_dir(ws, run);
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::Io { path: dir.clone(), detail: e.to_string() })?;
    let lock_path = dir.join("train.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| TrainError::Io { path: lock_path.clone(), detail: e.to_string() })?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(_) => Err(TrainError::Busy(run.to_string())),
    }
}

/// The run's status as a user should read it: a run stored as *running* whose lock no process
/// holds was interrupted (killed, crashed, machine off) and can be resumed.
pub fn live_status(ws: &Workspace, rec: &crate::catalog::RunRecord) -> RunStatus {
    if rec.status != RunStatus::Running {
        return rec.status;
    }
    let lock_path = run_dir(ws, &rec.id).join("train.lock");
    match std::fs::File::open(&lock_path) {
        // Never locked (the process died before its first epoch's lock) or lock free now.
        Err(_) => RunStatus::Interrupted,
        Ok(f) => match f.try_lock_shared() {
            Ok(()) => RunStatus::Interrupted,
            Err(_) => RunStatus::Running,
        },
    }
}

/// Every run of the workspace, with [`live_status`].
pub fn runs_with_live_status(ws: &Workspace) -> Result<Vec<crate::catalog::RunRecord>, TrainError> {
    let mut runs = ws.catalog.runs()?;
    for r in &mut runs {
        r.status = live_status(ws, r);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace_with_runs(ids: &[&str]) -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let mut ws = Workspace::open(dir.path()).unwrap();
        for id in ids {
            ws.catalog.create_run(id, "resnet50", "finetune", "StepLR", "{}", &[]).unwrap();
        }
        (dir, ws)
    }

    #[test]
    fn a_panic_or_an_error_after_the_run_exists_marks_it_failed_with_the_message() {
        let (dir, ws) = workspace_with_runs(&["crash", "error", "cancel", "busy"]);
        let e = guarded(dir.path(), "crash", || panic!("index out of bounds")).unwrap_err();
        assert!(matches!(&e, TrainError::Panicked(m) if m == "index out of bounds"), "{e}");
        guarded(dir.path(), "error", || Err(TrainError::Data("no images".into()))).unwrap_err();
        let e = guarded(dir.path(), "cancel", || Err(TrainError::Cancelled(String::new()))).unwrap_err();
        assert!(e.to_string().contains("--resume cancel"), "the run's own id: {e}");
        guarded(dir.path(), "busy", || Err(TrainError::Busy("busy".into()))).unwrap_err();
        let run = |id| ws.catalog.run(id).unwrap();
        assert_eq!(run("crash").status, RunStatus::Failed);
        assert!(run("crash").message.unwrap().contains("training crashed: index out of bounds"));
        assert_eq!((run("error").status, run("error").message.as_deref()), (RunStatus::Failed, Some("no images")));
        assert_eq!(run("cancel").status, RunStatus::Cancelled);
        assert_eq!(run("busy").status, RunStatus::Running, "another process's run is left alone");
    }

    #[test]
    fn a_running_run_without_a_live_lock_reads_as_interrupted() {
        let (_dir, ws) = workspace_with_runs(&["r"]);
        let rec = ws.catalog.run("r").unwrap();
        assert_eq!(live_status(&ws, &rec), RunStatus::Interrupted, "no lock file: never trained or died early");
        let lock = lock_run(&ws, "r").unwrap();
        assert_eq!(live_status(&ws, &rec), RunStatus::Running);
        assert!(matches!(lock_run(&ws, "r"), Err(TrainError::Busy(_))), "one trainer per run");
        drop(lock);
        assert_eq!(live_status(&ws, &rec), RunStatus::Interrupted, "its process is gone");
    }
}
