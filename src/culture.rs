//! The study's culture groups and the mapping from The Met's raw location tags to them.
//!
//! The mapping is a user-editable table (`assets/culture_map.csv`, compiled in as the default);
//! tags are matched case-insensitively, whole first, then by their parts, so that
//! "India (Rajasthan, Mewar)" falls back to "India".
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The 11 groups the study keeps, in the order of its Table 1 legend (alphabetical).
pub const STUDY_GROUPS: [&str; 11] = [
    "American", "British", "Chinese", "Dutch", "Flemish", "French", "German", "Indian", "Italian", "Japanese",
    "Spanish",
];

/// Default mapping table, the one that reproduces the study.
pub const DEFAULT_MAPPING_CSV: &str = include_str!("../assets/culture_map.csv");

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot read mapping table {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{origin}, line {line}: expected `tag,group`, found {text:?}")]
    BadLine { origin: String, line: usize, text: String },
    #[error("{origin}: the mapping table maps no tag to any group")]
    Empty { origin: String },
}

/// Raw location tags of one work, in the order they are consulted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RawTags {
    pub culture: String,
    pub country: String,
    pub nationality: String,
}

impl RawTags {
    /// Every non-empty tag, in lookup order (`|`-separated values split).
    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        [&self.culture, &self.country, &self.nationality]
            .into_iter()
            .flat_map(|field| field.split('|'))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// The first tag present, used to report works that map to nothing.
    pub fn first(&self) -> Option<&str> {
        self.candidates().next()
    }
}

#[derive(Debug, Clone)]
pub struct CultureMapping {
    table: HashMap<String, String>,
}

fn normalise(tag: &str) -> String {
    tag.trim().trim_matches(|c| c == '?' || c == ',').trim().to_lowercase()
}

impl CultureMapping {
    /// The built-in table.
    pub fn study_default() -> Self {
        Self::parse(DEFAULT_MAPPING_CSV, "built-in mapping").expect("built-in mapping table parses")
    }

    pub fn from_file(path: &Path) -> Result<Self, MappingError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| MappingError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses `tag,group` lines; `#` starts a comment; a `tag,group` header is allowed.
    pub fn parse(text: &str, origin: &str) -> Result<Self, MappingError> {
        let mut table = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim().trim_start_matches('\u{feff}');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((tag, group)) = line.rsplit_once(',') else {
                return Err(MappingError::BadLine { origin: origin.to_string(), line: i + 1, text: raw.to_string() });
            };
            let (tag, group) = (tag.trim().trim_matches('"'), group.trim().trim_matches('"'));
            if tag.eq_ignore_ascii_case("tag") && group.eq_ignore_ascii_case("group") {
                continue;
            }
            if tag.is_empty() || group.is_empty() {
                return Err(MappingError::BadLine { origin: origin.to_string(), line: i + 1, text: raw.to_string() });
            }
            table.insert(normalise(tag), group.to_string());
        }
        if table.is_empty() {
            return Err(MappingError::Empty { origin: origin.to_string() });
        }
        Ok(Self { table })
    }

    /// The group of a single tag: whole, then the text before a parenthesis, then each part
    /// inside it.
    pub fn group_of_tag(&self, tag: &str) -> Option<&str> {
        let whole = normalise(tag);
        if let Some(g) = self.table.get(&whole) {
            return Some(g);
        }
        let (head, rest) = match whole.split_once('(') {
            Some((h, r)) => (h, r.trim_end_matches(')')),
            None => (whole.as_str(), ""),
        };
        std::iter::once(head)
            .chain(head.split(','))
            .chain(rest.split(','))
            .map(normalise)
            .find_map(|part| self.table.get(&part))
            .map(String::as_str)
    }

    /// The group of a work: the first of its tags (Culture, then Country, then Artist
    /// Nationality) that maps.
    pub fn group_of(&self, tags: &RawTags) -> Option<&str> {
        tags.candidates().find_map(|t| self.group_of_tag(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(culture: &str, country: &str, nationality: &str) -> RawTags {
        RawTags { culture: culture.into(), country: country.into(), nationality: nationality.into() }
    }

    #[test]
    fn overlapping_tags_merge_by_union() {
        let m = CultureMapping::study_default();
        for t in ["England", "United Kingdom", "british", " Scottish "] {
            assert_eq!(m.group_of_tag(t), Some("British"), "{t}");
        }
        for t in ["India", "Gujarat", "Rajasthan", "India (Gujarat)", "India (Rajasthan, Mewar)"] {
            assert_eq!(m.group_of_tag(t), Some("Indian"), "{t}");
        }
        assert_eq!(m.group_of_tag("Atlantis"), None);
    }

    #[test]
    fn culture_then_country_then_nationality() {
        let m = CultureMapping::study_default();
        assert_eq!(m.group_of(&tags("Japan", "China", "American")), Some("Japanese"));
        assert_eq!(m.group_of(&tags("", "China", "American")), Some("Chinese"));
        assert_eq!(m.group_of(&tags("Atlantis", "", "French|American")), Some("French"));
        assert_eq!(m.group_of(&tags(" ", " ", " ")), None);
    }

    #[test]
    fn every_study_group_is_reachable() {
        let m = CultureMapping::study_default();
        for g in STUDY_GROUPS {
            assert!(m.table.values().any(|v| v == g), "{g} has no tag");
        }
    }

    #[test]
    fn bad_table_names_the_line() {
        let err = CultureMapping::parse("tag,group\nFrance,French\nnonsense\n", "my.csv").unwrap_err();
        assert_eq!(err.to_string(), "my.csv, line 3: expected `tag,group`, found \"nonsense\"");
    }
}
