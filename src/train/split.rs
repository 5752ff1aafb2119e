//! The 80/10/10 split, stratified by culture and seeded, so a run is reproducible.
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "train" => Some(Part::Train),
            "val" => Some(Part::Val),
            "test" => Some(Part::Test),
            _ => None,
        }
    }
}

/// Splits (id, culture) pairs: within each culture, after a seeded shuffle, 10% (rounded, at
/// least one when the culture has three or more works) go to validation, as many to test, the
/// rest to training.
pub fn stratified_split(items: &[(i64, String)], seed: u64) -> Vec<(i64, Part)> {
    let mut by_culture: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (id, c) in items {
        by_culture.entry(c).or_default().push(*id);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(items.len());
    for (_, mut ids) in by_culture {
        ids.sort_unstable();
        ids.shuffle(&mut rng);
        let n = ids.len();
        let tenth = if n >= 3 { ((n as f64 * 0.1).round() as usize).max(1) } else { 0 };
        for (i, id) in ids.into_iter().enumerate() {
            let part = if i < tenth {
                Part::Val
            } else if i < 2 * tenth {
                Part::Test
            } else {
                Part::Train
            };
            out.push((id, part));
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_seeded_and_complete() {
        let items: Vec<(i64, String)> =
            (0..1000).map(|i| (i, if i % 10 < 7 { "French".to_string() } else { "Dutch".to_string() })).collect();
        let a = stratified_split(&items, 7);
        assert_eq!(a, stratified_split(&items, 7));
        assert_ne!(a, stratified_split(&items, 8));
        assert_eq!(a.len(), 1000);
        let count = |c: &str, p: Part| a.iter().filter(|(id, part)| *part == p && items[*id as usize].1 == c).count();
        assert_eq!(
            (count("French", Part::Val), count("French", Part::Test), count("French", Part::Train)),
            (70, 70, 560)
        );
        assert_eq!((count("Dutch", Part::Val), count("Dutch", Part::Test), count("Dutch", Part::Train)), (30, 30, 240));
    }
}
