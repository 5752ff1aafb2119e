//! Zero-shot "is this a painting?": each work's CLIP image embedding against text embeddings of
//! a painting and of each flag reason (sculpture, book, manuscript, container, jewelry, snuff
//! box), each class a set of phrasings under several templates, averaged as CLIP's authors
//! ensemble prompts (unit text embeddings averaged, the mean scaled to unit length again).
use super::clip_works::WorkIndex;
use crate::catalog::FlagReason;
use crate::model::clip::{ClipModel, Tokenizer, encoder::l2_normalize};
use candle_core::{Device, Result, Tensor};

/// The classes a work can be, with the phrasings that describe each. Paintings come in the forms
/// the Met's eleven groups hold (oil on canvas, panels, scrolls, album leaves, miniatures), so a
/// Japanese hanging scroll or an Indian miniature reads as a painting, not as a manuscript.
pub const CLASSES: [(Option<FlagReason>, &[&str]); 7] = [
    (
        None,
        &[
            "a painting",
            "an oil painting on canvas",
            "a painting on a wooden panel",
            "a watercolor painting",
            "a portrait painting",
            "a landscape painting",
            "a hanging scroll painting",
            "an album leaf painting",
            "a miniature painting",
        ],
    ),
    (Some(FlagReason::Sculpture), &["a sculpture", "a marble statue", "a bronze figure", "a carved relief", "a bust"]),
    (Some(FlagReason::Book), &["a book", "a printed book", "a bound volume", "an open book with printed text"]),
    (
        Some(FlagReason::Manuscript),
        &["a page of handwritten text", "a manuscript", "a page of calligraphy", "a letter"],
    ),
    (Some(FlagReason::Container), &["a vase", "a bowl", "a ceramic jar", "a lidded box", "a cup"]),
    (Some(FlagReason::Jewelry), &["a piece of jewelry", "a ring", "a necklace", "a brooch", "a pendant"]),
    (Some(FlagReason::SnuffBox), &["a snuff box", "a small decorated snuff box", "a snuff bottle"]),
];

pub const TEMPLATES: [&str; 4] = ["{}.", "a photo of {}.", "a museum photograph of {}.", "a close-up photo of {}."];

/// One unit vector per class (rows in [`CLASSES`] order): classes x dim.
pub fn class_embeddings(model: &ClipModel, tok: &Tokenizer, device: &Device) -> Result<Tensor> {
    let rows = CLASSES
        .iter()
        .map(|(_, phrases)| {
            let texts: Vec<String> =
                phrases.iter().flat_map(|p| TEMPLATES.iter().map(move |t| t.replace("{}", p))).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let t = l2_normalize(&model.text_features(&tok.batch(&refs, device)?, tok.end)?)?;
            l2_normalize(&t.mean_keepdim(0)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
}

/// What CLIP says of one work.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ZeroShot {
    pub artwork_id: i64,
    /// The probability that the work is not a painting (1 - P(painting)).
    pub not_painting: f32,
    /// The likeliest flag reason and its probability.
    pub reason: FlagReason,
    pub reason_p: f32,
}

/// Softmax over the classes at CLIP's logit scale, for every work of the index.
pub fn classify(index: &WorkIndex, classes: &Tensor, logit_scale: f32) -> Result<Vec<ZeroShot>> {
    let class_rows = classes.to_vec2::<f32>()?;
    Ok(index
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let row = index.row(i);
            let logits: Vec<f32> =
                class_rows.iter().map(|c| logit_scale * c.iter().zip(row).map(|(a, b)| a * b).sum::<f32>()).collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let z: f32 = exp.iter().sum();
            let p: Vec<f32> = exp.iter().map(|e| e / z).collect();
            let (best, reason_p) = p
                .iter()
                .enumerate()
                .skip(1)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, v)| (k, *v))
                .unwrap_or((1, 0.0));
            ZeroShot {
                artwork_id: *id,
                not_painting: 1.0 - p[0],
                reason: CLASSES[best].0.unwrap_or(FlagReason::Other),
                reason_p,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_work_closest_to_a_reason_gets_it_and_a_painting_scores_low() {
        // Three-dimensional stand-ins: painting along x, sculpture along y, the rest along z.
        let mut classes = vec![vec![0.0f32; 3]; CLASSES.len()];
        classes[0][0] = 1.0;
        classes[1][1] = 1.0;
        for c in classes.iter_mut().skip(2) {
            c[2] = 1.0;
        }
        let classes = Tensor::new(classes, &Device::Cpu).unwrap();
        let index = WorkIndex::new(
            vec![1, 2],
            vec![None, None],
            vec![false, false],
            vec![vec![0.9, 0.1, 0.0], vec![0.1, 0.8, 0.05]],
        );
        let z = classify(&index, &classes, 100.0).unwrap();
        assert!(z[0].not_painting < 0.01, "{z:?}");
        assert!(z[1].not_painting > 0.99 && z[1].reason == FlagReason::Sculpture, "{z:?}");
    }
}
