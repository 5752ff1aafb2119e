//! Time left in a run, from what its batches and epochs measured. Shared by the app (a run it
//! trains, one the CLI trains, one reopened) so every view says the same.
use crate::catalog::{BatchMetrics, EpochMetrics};

/// Seconds left until `total_epochs` finish, or `None` before the first batch has been timed.
/// The current epoch's rest is its batches left at the pace so far; each later epoch takes as
/// long as the last finished one (validation and checkpoint included), or, in the first epoch,
/// its batches at the current pace.
pub fn time_left(batches: &[BatchMetrics], epochs: &[EpochMetrics], total_epochs: u32) -> Option<f64> {
    let last = batches.last()?;
    if last.batch == 0 || last.elapsed_s <= 0.0 {
        return None;
    }
    let per_batch = last.elapsed_s / last.batch as f64;
    let this_epoch = last.batches.saturating_sub(last.batch) as f64 * per_batch;
    let finished = epochs.iter().any(|m| m.epoch == last.epoch);
    let later = total_epochs.saturating_sub(last.epoch) as f64;
    let per_epoch = epochs.last().map(|m| m.seconds).unwrap_or(last.batches as f64 * per_batch);
    Some(if finished { 0.0 } else { this_epoch } + later * per_epoch)
}

/// "1 h 05 min", "12 min 30 s", "45 s": what a progress line shows.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: u32, batch: u32, batches: u32, elapsed_s: f64) -> BatchMetrics {
        BatchMetrics { epoch, batch, batches, loss: 1.0, lr: 0.1, images_per_s: 1.0, elapsed_s }
    }

    fn epoch(epoch: u32, seconds: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0,
            val_loss: 1.0,
            val_acc: 0.5,
            val_top3: 0.9,
            lr: 0.1,
            images_per_s: 1.0,
            seconds,
        }
    }

    #[test]
    fn first_epoch_extrapolates_from_its_own_pace() {
        // 10 of 40 batches in 20 s: 60 s left in this epoch, then 2 epochs of 80 s.
        assert_eq!(time_left(&[batch(1, 10, 40, 20.0)], &[], 3), Some(60.0 + 160.0));
    }

    #[test]
    fn later_epochs_take_as_long_as_the_last_finished_one() {
        let bs = [batch(1, 40, 40, 80.0), batch(2, 20, 40, 50.0)];
        // Epoch 1 took 100 s with validation; epoch 2 is half done at 2.5 s a batch.
        assert_eq!(time_left(&bs, &[epoch(1, 100.0)], 3), Some(20.0 * 2.5 + 100.0));
        // After epoch 2's last batch and its record, only epoch 3 is left.
        let bs = [batch(2, 40, 40, 90.0)];
        assert_eq!(time_left(&bs, &[epoch(1, 100.0), epoch(2, 110.0)], 3), Some(110.0));
        assert_eq!(time_left(&[], &[], 3), None);
    }

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(format_duration(45.4), "45 s");
        assert_eq!(format_duration(750.0), "12 min 30 s");
        assert_eq!(format_duration(3900.0), "1 h 05 min");
    }
}
