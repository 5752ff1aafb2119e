//! Accuracy, top-k, per-class precision and recall, and the confusion matrix.

/// `-log_softmax(logits)[label]`, computed stably (the maximum is subtracted first).
pub fn nll_of_logits(logits: &[f32], label: usize) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - logits[label] as f64
}

/// Indices of the k largest values of each row, best first.
pub fn top_k(probs: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassReport {
    pub culture: String,
    pub precision: f64,
    pub recall: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub top1: f64,
    pub top3: f64,
    pub loss: f64,
    pub count: usize,
    pub classes: Vec<String>,
    /// confusion[true][predicted]
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassReport>,
}

/// Accumulates predictions of a split.
#[derive(Debug, Clone)]
pub struct Accumulator {
    classes: Vec<String>,
    confusion: Vec<Vec<usize>>,
    top1: usize,
    top3: usize,
    loss_sum: f64,
    count: usize,
}

impl Accumulator {
    pub fn new(classes: &[String]) -> Self {
        let k = classes.len();
        Self { classes: classes.to_vec(), confusion: vec![vec![0; k]; k], top1: 0, top3: 0, loss_sum: 0.0, count: 0 }
    }

    /// Adds one example: its logits and label. The loss is PyTorch's `cross_entropy`, the
    /// negative log-softmax of the logits at the label, so a saturated model that is wrong
    /// reports how wrong it is (a loss from clamped probabilities would stop at -ln 1e-12 and
    /// ReduceLROnPlateau would decide on another number than PyTorch's). The log-sum-exp runs
    /// in f64 over the f32 logits: within f32 rounding of PyTorch's f32 result.
    pub fn add(&mut self, logits: &[f32], label: usize) {
        let top = top_k(logits, 3);
        self.confusion[label][top[0]] += 1;
        self.top1 += (top[0] == label) as usize;
        self.top3 += top.contains(&label) as usize;
        self.loss_sum += nll_of_logits(logits, label);
        self.count += 1;
    }

    pub fn finish(self) -> Evaluation {
        let n = self.count.max(1) as f64;
        let k = self.classes.len();
        let per_class = (0..k)
            .map(|c| {
                let tp = self.confusion[c][c] as f64;
                let predicted: usize = (0..k).map(|t| self.confusion[t][c]).sum();
                let support: usize = self.confusion[c].iter().sum();
                ClassReport {
                    culture: self.classes[c].clone(),
                    precision: if predicted > 0 { tp / predicted as f64 } else { 0.0 },
                    recall: if support > 0 { tp / support as f64 } else { 0.0 },
                    support,
                }
            })
            .collect();
        Evaluation {
            top1: self.top1 as f64 / n,
            top3: self.top3 as f64 / n,
            loss: self.loss_sum / n,
            count: self.count,
            classes: self.classes,
            confusion: self.confusion,
            per_class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_hand() {
        let classes: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
        let mut acc = Accumulator::new(&classes);
        // Logits = ln(probabilities), so the softmax gives these probabilities back.
        let ln = |p: [f32; 4]| p.map(f32::ln);
        acc.add(&ln([0.7, 0.1, 0.1, 0.1]), 0); // right
        acc.add(&ln([0.4, 0.3, 0.2, 0.1]), 2); // top-3 only
        acc.add(&ln([0.1, 0.2, 0.3, 0.4]), 0); // wrong
        acc.add(&ln([0.1, 0.6, 0.2, 0.1]), 1); // right
        let e = acc.finish();
        assert_eq!((e.top1, e.top3), (0.5, 0.75));
        assert_eq!(e.confusion[2][0], 1);
        assert_eq!(e.per_class[0].precision, 0.5);
        assert_eq!(e.per_class[0].recall, 0.5);
        let want_loss = -(0.7f64.ln() + 0.2f64.ln() + 0.1f64.ln() + 0.6f64.ln()) / 4.0;
        assert!((e.loss - want_loss).abs() < 1e-6);
    }

    #[test]
    fn saturated_wrong_answers_report_their_size() {
        // Probabilities clamped at 1e-12 would say 27.63 for both; cross-entropy says 100 and 1000.
        let classes: Vec<String> = ["A", "B"].iter().map(|s| s.to_string()).collect();
        let mut acc = Accumulator::new(&classes);
        acc.add(&[100.0, 0.0], 1);
        assert!((acc.clone().finish().loss - 100.0).abs() < 1e-9);
        let mut acc = Accumulator::new(&classes);
        acc.add(&[1000.0, 0.0], 1);
        assert!((acc.finish().loss - 1000.0).abs() < 1e-9);
    }
}
