//! "Most suspicious first": which works look least like paintings of their culture.
//!
//! With a trained model: low probability of the work's own label (cleanlab's self-confidence;
//! marked in-sample for works the model trained on, whose probabilities flatter them), distance
//! from the culture's mean embedding, and disagreement of the nearest neighbours' labels; works
//! whose embeddings nearly coincide are reported as near-duplicates. Without a model: cheap
//! image statistics (an extreme aspect ratio; a uniform background around an object, as in
//! museum photographs of sculptures, boxes and jewelry).
use image::RgbImage;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Suspicion {
    pub artwork_id: i64,
    /// Higher is more suspicious; comparable within one ranking only.
    pub score: f64,
    pub reasons: Vec<String>,
    pub duplicate_of: Option<i64>,
    /// The flag reason CLIP suggests (one key accepts it in the Curation view).
    pub suggested: Option<crate::catalog::FlagReason>,
}

/// Fraction of border pixels within a small distance of the border's mean colour, and how far
/// the centre differs from it: objects on studio backdrops score high.
pub fn background_uniformity(img: &RgbImage) -> f64 {
    let (w, h) = img.dimensions();
    if w < 8 || h < 8 {
        return 0.0;
    }
    let band = (w.min(h) / 16).max(1);
    let mut border = Vec::new();
    for (x, y, p) in img.enumerate_pixels() {
        if x < band || y < band || x >= w - band || y >= h - band {
            border.push([p[0] as f64, p[1] as f64, p[2] as f64]);
        }
    }
    let n = border.len() as f64;
    let mean = border.iter().fold([0.0; 3], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n, a[2] + p[2] / n]);
    let d = |p: &[f64; 3]| ((p[0] - mean[0]).powi(2) + (p[1] - mean[1]).powi(2) + (p[2] - mean[2]).powi(2)).sqrt();
    let close = border.iter().filter(|p| d(p) < 24.0).count() as f64 / n;
    let centre = img.get_pixel(w / 2, h / 2);
    let centre_far = (d(&[centre[0] as f64, centre[1] as f64, centre[2] as f64]) / 128.0).min(1.0);
    close * (0.5 + 0.5 * centre_far)
}

/// The cheap ranking, from thumbnails. `items`: (artwork id, decoded thumbnail).
pub fn cheap_scores(items: &[(i64, RgbImage)]) -> Vec<Suspicion> {
    let mut out: Vec<Suspicion> = items
        .iter()
        .map(|(id, img)| {
            let (w, h) = img.dimensions();
            let aspect = (w.max(1) as f64 / h.max(1) as f64).ln().abs();
            let bg = background_uniformity(img);
            let mut reasons = Vec::new();
            if aspect > 0.9 {
                reasons.push(format!("unusual shape ({}:{} )", w, h).replace(" )", ")"));
            }
            if bg > 0.6 {
                reasons.push(format!("plain background around an object ({:.0}% of the border uniform)", bg * 100.0));
            }
            Suspicion {
                artwork_id: *id,
                score: aspect.min(2.0) / 2.0 + bg,
                reasons,
                duplicate_of: None,
                suggested: None,
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.artwork_id.cmp(&b.artwork_id)));
    out
}

/// One work as the model sees it.
pub struct ModelView<'a> {
    pub artwork_id: i64,
    pub label: usize,
    pub probs: &'a [f32],
    pub embedding: &'a [f32],
    /// Whether the model trained on this work (its probabilities are in-sample).
    pub in_sample: bool,
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt()
}

/// The model-based ranking. `k`: neighbours consulted. `duplicate_ratio`: a pair closer than
/// this fraction of the median nearest-neighbour distance is a near-duplicate.
pub fn model_scores(works: &[ModelView<'_>], classes: &[String], k: usize, duplicate_ratio: f64) -> Vec<Suspicion> {
    let n = works.len();
    let mut by_label: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, w) in works.iter().enumerate() {
        by_label.entry(w.label).or_default().push(i);
    }
    // Per-culture mean embedding and the spread of distances to it.
    let mut centre_stats: HashMap<usize, (Vec<f32>, f64)> = HashMap::new();
    for (label, members) in &by_label {
        let dim = works[members[0]].embedding.len();
        let mut mean = vec![0f32; dim];
        for &i in members {
            mean.iter_mut().zip(works[i].embedding).for_each(|(m, x)| *m += x / members.len() as f32);
        }
        let mut d: Vec<f64> = members.iter().map(|&i| l2(works[i].embedding, &mean)).collect();
        d.sort_by(f64::total_cmp);
        let median = d[d.len() / 2].max(1e-9);
        centre_stats.insert(*label, (mean, median));
    }
    // Nearest neighbours (exact: a few thousand works).
    let neighbours: Vec<Vec<(f64, usize)>> = (0..n)
        .map(|i| {
            let mut d: Vec<(f64, usize)> =
                (0..n).filter(|&j| j != i).map(|j| (l2(works[i].embedding, works[j].embedding), j)).collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            d.truncate(k.max(1));
            d
        })
        .collect();
    let mut nn: Vec<f64> = neighbours.iter().filter_map(|v| v.first().map(|x| x.0)).collect();
    nn.sort_by(f64::total_cmp);
    let median_nn = nn.get(nn.len() / 2).copied().unwrap_or(0.0);
    let mut out: Vec<Suspicion> = works
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let own = w.probs.get(w.label).copied().unwrap_or(0.0) as f64;
            let (mean, median) = &centre_stats[&w.label];
            let far = l2(w.embedding, mean) / median;
            let disagree = neighbours[i].iter().filter(|(_, j)| works[*j].label != w.label).count() as f64
                / neighbours[i].len().max(1) as f64;
            let mut reasons = Vec::new();
            if own < 0.3 {
                let best = crate::train::metrics::top_k(w.probs, 1)[0];
                reasons.push(format!(
                    "model gives its label {:.0}%, {} {:.0}%{}",
                    own * 100.0,
                    classes.get(best).map(String::as_str).unwrap_or("?"),
                    w.probs[best] * 100.0,
                    if w.in_sample { " (in-sample)" } else { "" }
                ));
            }
            if far > 2.0 {
                reasons.push(format!("{far:.1}x the typical distance from its culture's mean"));
            }
            if disagree >= 0.5 {
                reasons.push(format!(
                    "{:.0}% of its {} nearest neighbours have other labels",
                    disagree * 100.0,
                    neighbours[i].len()
                ));
            }
            let duplicate_of = neighbours[i]
                .first()
                .filter(|(d, _)| median_nn > 0.0 && *d < duplicate_ratio * median_nn)
                .map(|(_, j)| works[*j].artwork_id);
            if let Some(d) = duplicate_of {
                reasons.push(format!("near-duplicate of work {d}"));
            }
            let score = (1.0 - own) + (far / 2.0).min(2.0) * 0.5 + disagree;
            Suspicion { artwork_id: w.artwork_id, score, reasons, duplicate_of, suggested: None }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.artwork_id.cmp(&b.artwork_id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_on_backdrop_outranks_a_busy_painting() {
        let painting =
            RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 3) as u8]));
        let object = RgbImage::from_fn(64, 48, |x, y| {
            if (x as i32 - 32).abs() < 10 && (y as i32 - 24).abs() < 10 {
                image::Rgb([120, 60, 20])
            } else {
                image::Rgb([240, 240, 238])
            }
        });
        let r = cheap_scores(&[(1, painting), (2, object)]);
        assert_eq!(r[0].artwork_id, 2);
        assert!(r[0].reasons.iter().any(|s| s.contains("plain background")), "{:?}", r[0].reasons);
    }

    #[test]
    fn mislabelled_and_duplicate_works_are_found() {
        let classes = vec!["A".to_string(), "B".to_string()];
        // Two tight clusters; work 99 sits in B's cluster with label A; 7 and 8 coincide.
        let mut embs: Vec<(i64, usize, Vec<f32>)> = Vec::new();
        for i in 0..10 {
            embs.push((i, 0, vec![0.0 + i as f32 * 0.1, 0.0]));
            embs.push((100 + i, 1, vec![10.0 + i as f32 * 0.1, 0.0]));
        }
        embs.push((99, 0, vec![10.05, 0.0]));
        embs.push((98, 1, vec![10.9001, 0.0]));
        let probs_a = [0.9f32, 0.1];
        let probs_b = [0.1f32, 0.9];
        let works: Vec<ModelView> = embs
            .iter()
            .map(|(id, l, e)| ModelView {
                artwork_id: *id,
                label: *l,
                probs: if e[0] > 5.0 { &probs_b } else { &probs_a },
                embedding: e,
                in_sample: false,
            })
            .collect();
        let r = model_scores(&works, &classes, 5, 0.05);
        assert_eq!(r[0].artwork_id, 99, "{r:?}");
        assert!(r[0].reasons.iter().any(|s| s.contains("model gives its label 10%")));
        let dup = r.iter().find(|s| s.artwork_id == 98).unwrap();
        assert_eq!(dup.duplicate_of, Some(109));
    }
}
