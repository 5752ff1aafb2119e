//! The embedded sample: 32 public-domain paintings (Art Institute of Chicago, CC0) in the
//! study's groups, built into the binary (`assets/sample/`, listed by `build.rs`), so a new
//! user can try every view offline. Loading writes them under the workspace's `sample/` folder
//! and imports that folder with each work's record from `SOURCES.csv`, as source "sample".
use super::folder::{FolderError, FolderReport, import_tree};
use crate::catalog::NewArtwork;
use crate::workspace::Workspace;
use std::collections::HashMap;

include!(concat!(env!("OUT_DIR"), "/sample_files.rs"));

/// Artist, title, date, medium and licence of each sample file.
pub const SOURCES_CSV: &str = include_str!("../../assets/sample/SOURCES.csv");

/// The works' records by file (`Culture/id.jpg`).
pub fn records() -> HashMap<String, NewArtwork> {
    let mut rdr = csv::Reader::from_reader(SOURCES_CSV.as_bytes());
    rdr.records()
        .flatten()
        .map(|r| {
            let f = |i: usize| r.get(i).unwrap_or_default().to_string();
            let work = NewArtwork {
                artist: f(2),
                title: f(3),
                date: f(4),
                medium: f(5),
                link: Some(format!("https://www.artic.edu/artworks/{}", f(6))),
                ..Default::default()
            };
            (f(0), work)
        })
        .collect()
}

/// Loads the sample into the workspace (again: updates in place, adds nothing).
pub fn import_sample(ws: &mut Workspace, progress: impl Fn(usize, usize) + Sync) -> Result<FolderReport, FolderError> {
    let dir = ws.root().join("sample");
    for (rel, bytes) in SAMPLE_FILES {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|b| b == *bytes) {
            continue;
        }
        crate::fsutil::write_bytes_atomic(&path, bytes)
            .map_err(|e| FolderError::Io { path: e.path, source: e.source })?;
    }
    import_tree(ws, &dir, crate::catalog::SAMPLE_SOURCE, &records(), progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_embedded_with_a_record_for_every_file() {
        assert_eq!(SAMPLE_FILES.len(), 32);
        let r = records();
        for (rel, bytes) in SAMPLE_FILES {
            assert!(bytes.starts_with(&[0xFF, 0xD8]), "{rel} is a JPEG");
            let w = r.get(*rel).unwrap_or_else(|| panic!("{rel} has no record in SOURCES.csv"));
            assert!(!w.title.is_empty() && !w.artist.is_empty(), "{rel}");
        }
    }

    #[test]
    fn loading_the_sample_fills_an_empty_workspace_and_again_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut ws = Workspace::open(dir.path()).unwrap();
        let r = import_sample(&mut ws, |_, _| {}).unwrap();
        assert_eq!((r.imported, r.skipped.len()), (32, 0), "{:?}", r.skipped);
        let s = ws.catalog.stats().unwrap();
        assert_eq!((s.groups.len(), s.total_initial), (7, 32));
        let works = ws.catalog.artworks(&Default::default()).unwrap();
        assert!(works.iter().all(|a| a.source == "sample" && a.content_hash.is_some()));
        assert!(works.iter().any(|a| a.title == "Beata Beatrix" && a.artist.contains("Rossetti")));
        let again = import_sample(&mut ws, |_, _| {}).unwrap();
        assert_eq!((again.imported, again.updated), (0, 32));
    }
}
