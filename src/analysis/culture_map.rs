//! The study's culture map: per-culture mean embeddings, their pairwise L2 distances, the
//! normalised similarity s(A, B) = d(A, B)^-1 / sum over C != A of d(A, C)^-1 (not symmetric:
//! each row sums to 1), a ForceAtlas2 layout, and the chords above the top-quartile threshold.
use super::forceatlas2::{Fa2Settings, Layout};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Chord {
    pub from: String,
    pub to: String,
    pub similarity: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CultureMap {
    pub cultures: Vec<String>,
    pub counts: Vec<usize>,
    pub distance: Vec<Vec<f64>>,
    pub similarity: Vec<Vec<f64>>,
    pub positions: Vec<[f64; 2]>,
    /// The similarity at or above which a pair is drawn (the top quartile by default).
    pub threshold: f64,
    pub chords: Vec<Chord>,
}

/// Mean vector per group. `vectors` and `groups` are parallel; groups index `names`.
pub fn means(vectors: &[Vec<f32>], groups: &[usize], k: usize) -> (Vec<Vec<f64>>, Vec<usize>) {
    let dim = vectors.first().map(Vec::len).unwrap_or(0);
    let mut sums = vec![vec![0f64; dim]; k];
    let mut counts = vec![0usize; k];
    for (v, &g) in vectors.iter().zip(groups) {
        counts[g] += 1;
        for (s, x) in sums[g].iter_mut().zip(v) {
            *s += *x as f64;
        }
    }
    for (s, &c) in sums.iter_mut().zip(&counts) {
        s.iter_mut().for_each(|x| *x /= c.max(1) as f64);
    }
    (sums, counts)
}

pub fn distances(means: &[Vec<f64>]) -> Vec<Vec<f64>> {
    means
        .iter()
        .map(|a| means.iter().map(|b| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()).collect())
        .collect()
}

/// Row-normalised inverse distances; the diagonal is 0. Coincident means get the largest
/// finite similarity of their row instead of infinity.
pub fn similarity(distance: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let k = distance.len();
    let floor = 1e-12;
    (0..k)
        .map(|a| {
            let inv: Vec<f64> = (0..k).map(|c| if c == a { 0.0 } else { 1.0 / distance[a][c].max(floor) }).collect();
            let total: f64 = inv.iter().sum();
            inv.iter().map(|v| if total > 0.0 { v / total } else { 0.0 }).collect()
        })
        .collect()
}

/// The q-quantile (linear interpolation, as numpy's default) of the off-diagonal similarities.
pub fn quantile_threshold(sim: &[Vec<f64>], q: f64) -> f64 {
    let mut v: Vec<f64> = sim
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.iter().enumerate().filter(move |(j, _)| *j != i).map(|(_, x)| *x))
        .collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

pub fn chords(names: &[String], sim: &[Vec<f64>], threshold: f64) -> Vec<Chord> {
    let mut out = Vec::new();
    for (i, row) in sim.iter().enumerate() {
        for (j, &s) in row.iter().enumerate() {
            if i != j && s >= threshold {
                out.push(Chord { from: names[i].clone(), to: names[j].clone(), similarity: s });
            }
        }
    }
    out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    out
}

/// ForceAtlas2 positions, edges weighted by the symmetrised similarity (scaled so the mean
/// edge weight is 1).
pub fn layout(sim: &[Vec<f64>], seed: u64, settings: Fa2Settings) -> Layout {
    let k = sim.len();
    let mut w = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            if i != j {
                w[i * k + j] = (sim[i][j] + sim[j][i]) / 2.0 * (k as f64 - 1.0);
            }
        }
    }
    Layout::new(w, k, settings, seed)
}

/// Everything the map shows, from per-work vectors.
pub fn build(names: &[String], vectors: &[Vec<f32>], groups: &[usize], seed: u64) -> CultureMap {
    let (m, counts) = means(vectors, groups, names.len());
    let distance = distances(&m);
    let similarity = similarity(&distance);
    let mut l = layout(&similarity, seed, Fa2Settings::default());
    l.run(1e-4);
    let threshold = quantile_threshold(&similarity, 0.75);
    CultureMap {
        cultures: names.to_vec(),
        counts,
        chords: chords(names, &similarity, threshold),
        distance,
        similarity,
        positions: l.pos,
        threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_similarities_by_hand() {
        // Means (0,0), (3,4), (6,8): d01 = 5, d02 = 10, d12 = 5.
        let vectors = vec![vec![0.0f32, 0.0], vec![0.0, 0.0], vec![3.0, 4.0], vec![6.0, 8.0], vec![6.0, 8.0]];
        let groups = vec![0, 0, 1, 2, 2];
        let (m, counts) = means(&vectors, &groups, 3);
        assert_eq!(counts, vec![2, 1, 2]);
        let d = distances(&m);
        assert_eq!(d[0][1], 5.0);
        assert_eq!(d[0][2], 10.0);
        assert_eq!(d[1][2], 5.0);
        let s = similarity(&d);
        // Row 0: 1/5 and 1/10 -> 2/3, 1/3. Row 1: 1/5, 1/5 -> 1/2, 1/2.
        assert!((s[0][1] - 2.0 / 3.0).abs() < 1e-12 && (s[0][2] - 1.0 / 3.0).abs() < 1e-12);
        assert!((s[1][0] - 0.5).abs() < 1e-12 && (s[1][2] - 0.5).abs() < 1e-12);
        assert_ne!(s[0][1], s[1][0], "similarity is not symmetric");
        for row in &s {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn top_quartile_chords() {
        let s = vec![vec![0.0, 0.9, 0.1], vec![0.5, 0.0, 0.5], vec![0.2, 0.8, 0.0]];
        let t = quantile_threshold(&s, 0.75);
        // Off-diagonal sorted: .1 .2 .5 .5 .8 .9 -> position 3.75 -> 0.5 + 0.75 * 0.3 = 0.725.
        assert!((t - 0.725).abs() < 1e-12);
        let names: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
        let c = chords(&names, &s, t);
        assert_eq!(
            c.iter().map(|c| (c.from.as_str(), c.to.as_str())).collect::<Vec<_>>(),
            vec![("A", "B"), ("C", "B")]
        );
    }
}
