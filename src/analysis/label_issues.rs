//! Wrong culture tags, found out of sample: K linear heads, each trained on the other folds'
//! cached embeddings, give every work probabilities from a model that never saw its label;
//! confident learning (Northcutt, Jiang and Chuang 2021, cleanlab's `find_label_issues`) then
//! picks the works whose label the evidence contradicts: per-class thresholds (a class's mean
//! probability over the works that carry its label), a work counted as class j when j is its
//! likeliest class above threshold, and those counted off their label ranked by self-confidence
//! (the probability of their own label), lowest first. In-sample probabilities flatter the very
//! mistakes they should expose: a head that trained on a wrong label has learned it.
use candle_core::{D, DType, Device, Result, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// One work whose culture tag looks wrong.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelIssue {
    /// Row in the input.
    pub index: usize,
    /// The probability of its own label, out of sample.
    pub self_confidence: f32,
    /// The class the evidence points to.
    pub suggested: usize,
    pub suggested_p: f32,
    /// Whether confident learning counts it off its label (else it is ranked after those that are).
    pub confident: bool,
}

/// Options of the linear heads.
#[derive(Debug, Clone, Copy)]
pub struct HeadOptions {
    pub folds: usize,
    pub steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self { folds: 5, steps: 300, lr: 1.0, weight_decay: 1e-3, seed: 0 }
    }
}

/// Standardises columns and scales rows to about unit length (so one learning rate suits
/// CLIP's 512 and ResNet's 2048 dimensions).
fn standardise(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(0)?;
    let c = x.broadcast_sub(&mean)?;
    let std = c.sqr()?.mean_keepdim(0)?.sqrt()?.clamp(1e-6, f64::INFINITY)?;
    c.broadcast_div(&std)? / (x.dim(1)? as f64).sqrt()
}

/// A softmax regression trained by full-batch gradient descent with Nesterov momentum on
/// `x` (rows) and `labels`; returns (weights, bias).
fn fit(x: &Tensor, labels: &[usize], classes: usize, o: &HeadOptions) -> Result<(Tensor, Tensor)> {
    let (n, d) = x.dims2()?;
    let dev = x.device();
    let onehot: Vec<f32> =
        labels.iter().flat_map(|&l| (0..classes).map(move |c| if c == l { 1.0 } else { 0.0 })).collect();
    let y = Tensor::from_vec(onehot, (n, classes), dev)?;
    let (mut w, mut b) = (Tensor::zeros((d, classes), DType::F32, dev)?, Tensor::zeros(classes, DType::F32, dev)?);
    let (mut vw, mut vb) = (w.zeros_like()?, b.zeros_like()?);
    let mu = 0.9;
    for _ in 0..o.steps {
        // Gradient at the look-ahead point (Nesterov).
        let (lw, lb) = ((&w + (&vw * mu)?)?, (&b + (&vb * mu)?)?);
        let p = candle_nn::ops::softmax(&x.matmul(&lw)?.broadcast_add(&lb)?, D::Minus1)?;
        let g = ((p - &y)? / n as f64)?;
        let gw = (x.t()?.matmul(&g)? + (&lw * o.weight_decay)?)?;
        let gb = g.sum(0)?;
        vw = ((&vw * mu)? - (gw * o.lr)?)?;
        vb = ((&vb * mu)? - (gb * o.lr)?)?;
        w = (&w + &vw)?;
        b = (&b + &vb)?;
    }
    Ok((w, b))
}

fn predict(x: &Tensor, head: &(Tensor, Tensor)) -> Result<Tensor> {
    candle_nn::ops::softmax(&x.matmul(&head.0)?.broadcast_add(&head.1)?, D::Minus1)
}

/// Out-of-sample probabilities (rows x classes) from `folds` heads, folds stratified by label.
pub fn out_of_sample_probs(
    rows: &[Vec<f32>],
    labels: &[usize],
    classes: usize,
    o: &HeadOptions,
) -> Result<Vec<Vec<f32>>> {
    let n = rows.len();
    let d = rows.first().map(Vec::len).unwrap_or(0);
    let x = standardise(&Tensor::from_vec(rows.concat(), (n, d), &Device::Cpu)?)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let mut fold = vec![0usize; n];
    for c in 0..classes {
        let mut members: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
        members.shuffle(&mut rng);
        for (k, i) in members.into_iter().enumerate() {
            fold[i] = k % o.folds.max(2);
        }
    }
    let mut probs = vec![Vec::new(); n];
    for f in 0..o.folds.max(2) {
        let train: Vec<u32> = (0..n as u32).filter(|&i| fold[i as usize] != f).collect();
        let held: Vec<u32> = (0..n as u32).filter(|&i| fold[i as usize] == f).collect();
        if held.is_empty() {
            continue;
        }
        let pick = |ids: &[u32]| x.index_select(&Tensor::new(ids, &Device::Cpu)?, 0);
        let train_labels: Vec<usize> = train.iter().map(|&i| labels[i as usize]).collect();
        let head = fit(&pick(&train)?, &train_labels, classes, o)?;
        for (i, p) in held.iter().zip(predict(&pick(&held)?, &head)?.to_vec2::<f32>()?) {
            probs[*i as usize] = p;
        }
    }
    Ok(probs)
}

/// In-sample probabilities: one head trained on every row (what a ranking from the trained
/// run's own predictions amounts to; kept for comparison).
pub fn in_sample_probs(rows: &[Vec<f32>], labels: &[usize], classes: usize, o: &HeadOptions) -> Result<Vec<Vec<f32>>> {
    let d = rows.first().map(Vec::len).unwrap_or(0);
    let x = standardise(&Tensor::from_vec(rows.concat(), (rows.len(), d), &Device::Cpu)?)?;
    predict(&x, &fit(&x, labels, classes, o)?)?.to_vec2::<f32>()
}

/// Confident learning on probabilities: every row ranked, likeliest label issues first.
pub fn rank_issues(probs: &[Vec<f32>], labels: &[usize], classes: usize) -> Vec<LabelIssue> {
    let mut thresholds = vec![0f32; classes];
    for (c, t) in thresholds.iter_mut().enumerate() {
        let own: Vec<f32> = probs.iter().zip(labels).filter(|(_, l)| **l == c).map(|(p, _)| p[c]).collect();
        *t = if own.is_empty() { 1.0 } else { own.iter().sum::<f32>() / own.len() as f32 };
    }
    let mut out: Vec<LabelIssue> = probs
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (p, &l))| {
            let confident_class =
                (0..classes).filter(|&c| p[c] >= thresholds[c]).max_by(|&a, &b| p[a].total_cmp(&p[b]));
            let best_other = (0..classes).filter(|&c| c != l).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(l);
            let suggested = confident_class.filter(|&c| c != l).unwrap_or(best_other);
            LabelIssue {
                index: i,
                self_confidence: p[l],
                suggested,
                suggested_p: p[suggested],
                confident: confident_class.is_some_and(|c| c != l),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.confident.cmp(&a.confident).then(a.self_confidence.total_cmp(&b.self_confidence)).then(a.index.cmp(&b.index))
    });
    out
}

/// In-sample ranking by self-confidence alone (today's model-based ranking of culture tags).
pub fn rank_in_sample(probs: &[Vec<f32>], labels: &[usize]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[a][labels[a]].total_cmp(&probs[b][labels[b]]).then(a.cmp(&b)));
    idx
}

/// Pairs of near-duplicate works on both sides of a split: (train row, test row, cosine), for
/// unit rows; `threshold` e.g. 0.97 for CLIP.
pub fn cross_split_duplicates(
    rows: &[&[f32]],
    train: &[usize],
    test: &[usize],
    threshold: f32,
) -> Vec<(usize, usize, f32)> {
    use rayon::prelude::*;
    let mut pairs: Vec<(usize, usize, f32)> = test
        .par_iter()
        .flat_map_iter(|&t| {
            train.iter().filter_map(move |&r| {
                let s: f32 = rows[t].iter().zip(rows[r]).map(|(a, b)| a * b).sum();
                (s >= threshold).then_some((r, t, s))
            })
        })
        .collect();
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::{Distribution, Normal};

    const PER_CLASS: usize = 30;

    /// Eleven cultures as overlapping clusters in a space with more dimensions than works per
    /// class (as 2048-d ResNet or 512-d CLIP embeddings of a few hundred works each), and 5 % of
    /// the labels flipped to another culture by seed.
    fn generated(seed: u64) -> (Vec<Vec<f32>>, Vec<usize>, Vec<bool>) {
        let (classes, per_class, dim) = (11, PER_CLASS, 1024);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 1.0).unwrap();
        let means: Vec<Vec<f32>> =
            (0..classes).map(|_| (0..dim).map(|_| normal.sample(&mut rng) * 0.25).collect()).collect();
        let (mut rows, mut labels, mut flipped) = (Vec::new(), Vec::new(), Vec::new());
        for (c, m) in means.iter().enumerate() {
            for _ in 0..per_class {
                rows.push(m.iter().map(|x| x + normal.sample(&mut rng)).collect());
                let flip = rng.random_bool(0.05);
                labels.push(if flip { (c + rng.random_range(1..classes)) % classes } else { c });
                flipped.push(flip);
            }
        }
        (rows, labels, flipped)
    }

    /// The share of flipped works found within the top 2 x (number flipped).
    fn recall(order: &[usize], flipped: &[bool]) -> f64 {
        let n = flipped.iter().filter(|f| **f).count();
        order.iter().take(2 * n).filter(|&&i| flipped[i]).count() as f64 / n as f64
    }

    #[test]
    fn out_of_sample_confident_learning_finds_flipped_labels_that_in_sample_ranking_misses() {
        let (rows, labels, flipped) = generated(7);
        let oos = out_of_sample_probs(&rows, &labels, 11, &HeadOptions::default()).unwrap();
        let issues = rank_issues(&oos, &labels, 11);
        let k_fold: Vec<usize> = issues.iter().map(|i| i.index).collect();
        // Today's ranking: the probabilities of a head fitted to every label until its training
        // probabilities saturate, as a trained run's head is (no weight decay, trained long).
        let fitted = HeadOptions { weight_decay: 0.0, steps: 1000, lr: 200.0, ..Default::default() };
        let ins = rank_in_sample(&in_sample_probs(&rows, &labels, 11, &fitted).unwrap(), &labels);
        let (r_oos, r_in) = (recall(&k_fold, &flipped), recall(&ins, &flipped));
        eprintln!("recall at 2x flipped: K-fold {r_oos:.2}, in-sample {r_in:.2}");
        assert!(r_oos >= 0.8, "K-fold found {r_oos:.2} of the flipped labels (in-sample: {r_in:.2})");
        assert!(r_oos >= r_in + 0.2, "K-fold {r_oos:.2} does not beat in-sample {r_in:.2} by 0.2");
        // The suggestion for a found flip is, most often, the culture it came from.
        let found: Vec<&LabelIssue> = issues.iter().take(20).filter(|i| flipped[i.index]).collect();
        let right = found.iter().filter(|i| i.suggested == i.index / PER_CLASS).count();
        assert!(right * 10 >= found.len() * 8, "{right} of {} suggestions right", found.len());
    }

    #[test]
    fn near_duplicates_across_the_split_are_named() {
        let a = [1.0f32, 0.0, 0.0];
        let b = [0.999f32, 0.0447, 0.0];
        let c = [0.0f32, 1.0, 0.0];
        let rows: Vec<&[f32]> = vec![&a, &b, &c];
        let pairs = cross_split_duplicates(&rows, &[0, 2], &[1], 0.97);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].0, pairs[0].1), (0, 1));
    }
}
