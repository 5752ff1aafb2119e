//! The training loop's per-batch record: each batch's loss is read back from the device, checked,
//! reported to the front end and written to the catalog. On the CPU a loss is read as soon as it
//! exists (it costs nothing); on a GPU reading it would wait for the device after every step, so
//! losses stay there and are read together once a second or every 32 batches (the device rule in
//! `model::device`), and a diverging run is stopped at that read, naming its first bad batch.
//! Records reach the catalog every two seconds (one transaction each), so another process can
//! follow the run without a commit per batch.
use super::{TrainError, TrainEvent};
use crate::catalog::BatchMetrics;
use crate::workspace::Workspace;
use candle_core::{DType, Tensor};
use std::time::{Duration, Instant};

const READ_EVERY: Duration = Duration::from_secs(1);
const READ_AT_MOST: usize = 32;
const WRITE_EVERY: Duration = Duration::from_secs(2);

struct Unread {
    metrics: BatchMetrics,
    images: usize,
    loss: Tensor,
}

pub(super) struct BatchLog {
    unread: Vec<Unread>,
    unwritten: Vec<BatchMetrics>,
    read_at: Instant,
    written_at: Option<Instant>,
    /// Images queued this epoch (for images per second) and read (for the mean loss).
    queued: usize,
    pub seen: usize,
    pub loss_sum: f64,
}

impl BatchLog {
    pub fn new() -> Self {
        Self {
            unread: Vec::new(),
            unwritten: Vec::new(),
            read_at: Instant::now(),
            written_at: None,
            queued: 0,
            seen: 0,
            loss_sum: 0.0,
        }
    }

    pub fn start_epoch(&mut self) {
        (self.queued, self.seen, self.loss_sum) = (0, 0, 0.0);
    }

    /// Records one batch's loss (a scalar tensor on the training device) after its step.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        ws: &mut Workspace,
        run: &str,
        (epoch, batch, batches): (u32, usize, usize),
        images: usize,
        loss: Tensor,
        lr: f64,
        started: Instant,
        events: &mut dyn FnMut(TrainEvent),
    ) -> Result<(), TrainError> {
        let elapsed_s = started.elapsed().as_secs_f64();
        self.queued += images;
        let metrics = BatchMetrics {
            epoch,
            batch: batch as u32,
            batches: batches as u32,
            loss: f64::NAN,
            lr,
            images_per_s: self.queued as f64 / elapsed_s.max(1e-9),
            elapsed_s,
        };
        crate::model::device::check_dtype(&loss, "training loss")?;
        let on_device = crate::model::device::is_accelerator(loss.device());
        self.unread.push(Unread { metrics, images, loss });
        if !on_device || self.unread.len() >= READ_AT_MOST || self.read_at.elapsed() >= READ_EVERY {
            self.read(events)?;
        }
        if self.written_at.is_none_or(|t| t.elapsed() >= WRITE_EVERY) { self.write(ws, run) } else { Ok(()) }
    }

    /// Reads the losses still on the device (one transfer), checks and reports them.
    pub fn read(&mut self, events: &mut dyn FnMut(TrainEvent)) -> Result<(), TrainError> {
        self.read_at = Instant::now();
        if self.unread.is_empty() {
            return Ok(());
        }
        let losses: Vec<Tensor> = self.unread.iter().map(|u| u.loss.flatten_all()).collect::<Result<_, _>>()?;
        let all = Tensor::cat(&losses, 0)?;
        // f64 only on the CPU (parity runs); a device reads f32 and widens here.
        let values: Vec<f64> = match all.dtype() {
            DType::F64 => all.to_vec1::<f64>()?,
            _ => all.to_dtype(DType::F32)?.to_vec1::<f32>()?.into_iter().map(f64::from).collect(),
        };
        for (u, l) in std::mem::take(&mut self.unread).into_iter().zip(values) {
            let m = BatchMetrics { loss: l, ..u.metrics };
            if !l.is_finite() {
                return Err(TrainError::Diverged { epoch: m.epoch, batch: m.batch as usize, loss: l, lr: m.lr });
            }
            self.loss_sum += l * u.images as f64;
            self.seen += u.images;
            self.unwritten.push(m);
            events(TrainEvent::Batch(m));
        }
        Ok(())
    }

    /// Writes what was read to the catalog.
    pub fn write(&mut self, ws: &mut Workspace, run: &str) -> Result<(), TrainError> {
        self.written_at = Some(Instant::now());
        ws.catalog.record_batches(run, &self.unwritten)?;
        self.unwritten.clear();
        Ok(())
    }
}
