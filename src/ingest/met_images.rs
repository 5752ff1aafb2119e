//! `import met --images DIR`: images already on disk, named by Object ID (`436535.jpg`).
use crate::imaging;
use crate::workspace::Workspace;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LocalImagesReport {
    pub attached: usize,
    /// Met works with a culture group and no file in the folder.
    pub missing: usize,
    pub bad: Vec<(String, String)>,
}

/// Attaches `DIR/<Object ID>.<ext>` to each Met work with a culture group.
pub fn attach_local_images(ws: &mut Workspace, dir: &Path) -> Result<LocalImagesReport, super::IngestError> {
    let entries =
        std::fs::read_dir(dir).map_err(|source| super::folder::FolderError::Io { path: dir.into(), source })?;
    let mut by_id: HashMap<String, PathBuf> = HashMap::new();
    for e in entries.flatten() {
        let p = e.path();
        if let Some(stem) = p.file_stem().and_then(|s| s.to_str())
            && stem.bytes().all(|b| b.is_ascii_digit())
        {
            by_id.insert(stem.to_string(), p);
        }
    }
    let works: Vec<_> = ws
        .catalog
        .artworks(&crate::catalog::ArtworkQuery { grouped_only: true, ..Default::default() })?
        .into_iter()
        .filter(|a| a.source == "met")
        .collect();
    let thumbs = ws.thumbs_dir();
    let mut report = LocalImagesReport::default();
    let found: Vec<_> = works.iter().filter_map(|w| by_id.get(&w.source_id).map(|p| (w.id, p))).collect();
    report.missing = works.len() - found.len();
    let results: Vec<_> = found
        .par_iter()
        .map(|(id, path)| {
            let r = std::fs::read(path).map_err(|e| e.to_string()).and_then(|bytes| {
                let d = imaging::decode_bytes(&bytes, path).map_err(|e| e.to_string())?;
                let hash = imaging::content_hash(&bytes);
                imaging::write_cache(&d.rgb, &thumbs, &hash).map_err(|e| e.to_string())?;
                Ok((hash, d.rgb.dimensions(), bytes.len() as u64))
            });
            (*id, *path, r)
        })
        .collect();
    for (id, path, r) in results {
        match r {
            Ok((hash, (w, h), n)) => {
                let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
                ws.catalog.set_image(id, &abs.display().to_string(), &hash, w, h, n)?;
                report.attached += 1;
            }
            Err(why) => report.bad.push((path.display().to_string(), why)),
        }
    }
    Ok(report)
}
