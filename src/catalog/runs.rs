//! Training runs, their data split and their per-epoch metrics.
use super::{Catalog, CatalogError, Result, classify, now_rfc3339};
use rusqlite::{OptionalExtension, params};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Paused,
    Cancelled,
    Failed,
    Finished,
    /// Stored as running, but no process holds its lock: it was killed or crashed. Never
    /// stored; `train::run_status::live_status` derives it.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Finished => "finished",
            Self::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "paused" => Self::Paused,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            "finished" => Self::Finished,
            "interrupted" => Self::Interrupted,
            _ => Self::Running,
        }
    }
}

/// The name of the training preset that demonstrates the app on the built-in sample.
pub const DEMO_PRESET: &str = "demo";
/// The artworks' `source` of the built-in sample.
pub const SAMPLE_SOURCE: &str = "sample";

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRecord {
    pub id: String,
    pub arch: String,
    pub method: String,
    pub scheduler: String,
    /// The training configuration as JSON.
    pub config: String,
    pub status: RunStatus,
    pub created_at: String,
    pub epochs_done: u32,
    pub seconds: f64,
    pub val_acc: Option<f64>,
    pub top1: Option<f64>,
    pub top3: Option<f64>,
    pub message: Option<String>,
    /// How many works of the run's split come from the built-in sample.
    pub sample_works: u32,
}

impl RunRecord {
    /// What the views print beside the run's id so a demo is never mistaken for the study:
    /// "demo" for the demo preset, "sample" for any other run that learnt from sample works.
    pub fn origin_label(&self) -> Option<&'static str> {
        if self.config_str("preset").as_deref() == Some(DEMO_PRESET) {
            Some("demo")
        } else if self.sample_works > 0 {
            Some("sample")
        } else {
            None
        }
    }

    /// The precision the run trains in, as its configuration names it ("f32" for runs from
    /// before precisions were stored).
    pub fn precision(&self) -> String {
        self.config_str("precision").unwrap_or_else(|| "f32".into())
    }

    /// A string entry of the stored training configuration.
    fn config_str(&self, key: &str) -> Option<String> {
        let config = serde_json::from_str::<serde_json::Value>(&self.config).ok()?;
        config.get(key)?.as_str().map(str::to_owned)
    }

    /// The method as the run tables show it: with the precision when it is not the default.
    pub fn method_label(&self) -> String {
        match self.precision().as_str() {
            "f32" => self.method.clone(),
            p => format!("{} ({p})", self.method),
        }
    }

    /// One sentence on why the run is labelled, for hovers and the CLI's stderr.
    pub fn origin_note(&self) -> Option<String> {
        let sample = match self.sample_works {
            0 => String::new(),
            n => format!("; {n} of its works come from the built-in sample, not the study's data"),
        };
        match self.origin_label()? {
            "demo" => Some(format!("run {} used the demo preset (shows the job, not the study){sample}", self.id)),
            _ => Some(format!("run {}{sample}", self.id).replacen("; ", ": ", 1)),
        }
    }

    /// The id with its origin: "r-20261130 (demo)".
    pub fn display_name(&self) -> String {
        match self.origin_label() {
            Some(l) => format!("{} ({l})", self.id),
            None => self.id.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub val_top3: f64,
    pub lr: f64,
    pub images_per_s: f64,
    pub seconds: f64,
}

/// One training batch: its loss, the learning rate, the epoch's throughput so far and the
/// seconds since the epoch started (from which time left is estimated).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchMetrics {
    pub epoch: u32,
    /// 1-based.
    pub batch: u32,
    pub batches: u32,
    pub loss: f64,
    pub lr: f64,
    pub images_per_s: f64,
    pub elapsed_s: f64,
}

impl BatchMetrics {
    /// Position on the plots' epoch axis: epoch 1's last batch is at 1.0.
    pub fn x(&self) -> f64 {
        (self.epoch - 1) as f64 + self.batch as f64 / self.batches.max(1) as f64
    }
}

const RUN_COLUMNS: &str =
    "id, arch, method, scheduler, config, status, created_at, epochs_done, seconds, val_acc, top1, top3, message,
     (SELECT COUNT(*) FROM run_split s JOIN artworks a ON a.id = s.artwork_id
      WHERE s.run_id = runs.id AND a.source = 'sample')"; // SAMPLE_SOURCE

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        arch: r.get(1)?,
        method: r.get(2)?,
        scheduler: r.get(3)?,
        config: r.get(4)?,
        status: RunStatus::parse(&r.get::<_, String>(5)?),
        created_at: r.get(6)?,
        epochs_done: r.get(7)?,
        seconds: r.get(8)?,
        val_acc: r.get(9)?,
        top1: r.get(10)?,
        top3: r.get(11)?,
        message: r.get(12)?,
        sample_works: r.get(13)?,
    })
}

impl Catalog {
    /// Creates a run with its split (artwork id, part) in one transaction.
    pub fn create_run(
        &mut self,
        id: &str,
        arch: &str,
        method: &str,
        scheduler: &str,
        config: &str,
        split: &[(i64, &str)],
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        tx.execute(
            "INSERT INTO runs (id, arch, method, scheduler, config, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
            params![id, arch, method, scheduler, config, now_rfc3339()],
        )
        .map_err(err)?;
        {
            let mut ins =
                tx.prepare("INSERT INTO run_split (run_id, artwork_id, part) VALUES (?1, ?2, ?3)").map_err(err)?;
            for (aid, part) in split {
                ins.execute(params![id, aid, part]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub fn run_split(&self, run: &str) -> Result<Vec<(i64, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT artwork_id, part FROM run_split WHERE run_id = ?1 ORDER BY artwork_id")
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([run], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// Records one epoch's metrics and the run's progress in one transaction (replacing the
    /// epoch if a resumed run computes it again).
    pub fn record_epoch(&mut self, run: &str, m: &EpochMetrics, best_val_acc: f64, total_seconds: f64) -> Result<()> {
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        tx.execute(
            "INSERT OR REPLACE INTO epoch_metrics (run_id, epoch, train_loss, val_loss, val_acc, val_top3, lr, images_per_s, seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![run, m.epoch, m.train_loss, m.val_loss, m.val_acc, m.val_top3, m.lr, m.images_per_s, m.seconds],
        )
        .map_err(err)?;
        tx.execute(
            "UPDATE runs SET epochs_done = ?2, val_acc = ?3, seconds = ?4 WHERE id = ?1",
            params![run, m.epoch, best_val_acc, total_seconds],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    pub fn epoch_metrics(&self, run: &str) -> Result<Vec<EpochMetrics>> {
        let mut st = self
            .conn
            .prepare("SELECT epoch, train_loss, val_loss, val_acc, val_top3, lr, images_per_s, seconds FROM epoch_metrics WHERE run_id = ?1 ORDER BY epoch")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([run], |r| {
                Ok(EpochMetrics {
                    epoch: r.get(0)?,
                    train_loss: r.get(1)?,
                    val_loss: r.get(2)?,
                    val_acc: r.get(3)?,
                    val_top3: r.get(4)?,
                    lr: r.get(5)?,
                    images_per_s: r.get(6)?,
                    seconds: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// Appends batch records (replacing any with the same epoch and batch) in one transaction.
    pub fn record_batches(&mut self, run: &str, batches: &[BatchMetrics]) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO batch_metrics (run_id, epoch, batch, batches, loss, lr, images_per_s, elapsed_s)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err)?;
            for b in batches {
                st.execute(params![run, b.epoch, b.batch, b.batches, b.loss, b.lr, b.images_per_s, b.elapsed_s])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Forgets the batches of `epoch` and later: a resumed run computes them again.
    pub fn drop_batches_from(&mut self, run: &str, epoch: u32) -> Result<()> {
        self.conn
            .execute("DELETE FROM batch_metrics WHERE run_id = ?1 AND epoch >= ?2", params![run, epoch])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn batch_metrics(&self, run: &str) -> Result<Vec<BatchMetrics>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT epoch, batch, batches, loss, lr, images_per_s, elapsed_s FROM batch_metrics
                 WHERE run_id = ?1 ORDER BY epoch, batch",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([run], |r| {
                Ok(BatchMetrics {
                    epoch: r.get(0)?,
                    batch: r.get(1)?,
                    batches: r.get(2)?,
                    loss: r.get(3)?,
                    lr: r.get(4)?,
                    images_per_s: r.get(5)?,
                    elapsed_s: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    pub fn set_run_status(&mut self, run: &str, status: RunStatus, message: Option<&str>) -> Result<()> {
        let n = self
            .conn
            .execute("UPDATE runs SET status = ?2, message = ?3 WHERE id = ?1", params![run, status.as_str(), message])
            .map_err(|e| self.err(e))?;
        if n == 0 { Err(CatalogError::UnknownRun(run.to_string())) } else { Ok(()) }
    }

    pub fn set_run_test_accuracy(&mut self, run: &str, top1: f64, top3: f64) -> Result<()> {
        self.conn
            .execute("UPDATE runs SET top1 = ?2, top3 = ?3 WHERE id = ?1", params![run, top1, top3])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at, id"))
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([], row_to_run).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    pub fn run(&self, id: &str) -> Result<RunRecord> {
        self.conn
            .query_row(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"), [id], row_to_run)
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| CatalogError::UnknownRun(id.to_string()))
    }

    /// The run with the highest validation accuracy, which commands use when none is named.
    pub fn best_run(&self) -> Result<Option<RunRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE val_acc IS NOT NULL ORDER BY val_acc DESC, created_at DESC LIMIT 1"),
                [],
                row_to_run,
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}
