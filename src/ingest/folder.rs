//! Importing a folder with one sub-folder per culture (`DIR/<Culture>/<images>`). Images are
//! decoded, hashed and pre-resized on all cores; what cannot be decoded is reported and skipped.
use crate::catalog::{NewArtwork, UpsertOutcome};
use crate::imaging;
use crate::workspace::Workspace;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("cannot read folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("{path} has no sub-folders: expected one folder of images per culture, e.g. {path}/French/*.jpg")]
    NoCultures { path: PathBuf },
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FolderReport {
    pub imported: usize,
    pub updated: usize,
    /// (file, why) for every file that was not imported.
    pub skipped: Vec<(String, String)>,
    /// Notes on images kept after conversion (16-bit, grayscale, CMYK...).
    pub converted: Vec<(String, String)>,
    pub per_culture: Vec<(String, usize)>,
}

struct Prepared {
    culture: String,
    rel: String,
    path: PathBuf,
    hash: String,
    width: u32,
    height: u32,
    bytes: u64,
    color: String,
}

fn list_dir(path: &Path) -> Result<Vec<PathBuf>, FolderError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| FolderError::Io { path: path.into(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Imports every file under `dir/<Culture>/` (recursively). `progress` gets (done, total).
pub fn import_folder(
    ws: &mut Workspace,
    dir: &Path,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<FolderReport, FolderError> {
    import_tree(ws, dir, "folder", &std::collections::HashMap::new(), progress)
}

/// [`import_folder`] with the works' source name and, by path under `dir`, their record
/// (title, artist, date, medium, link) where one is known.
pub fn import_tree(
    ws: &mut Workspace,
    dir: &Path,
    source: &str,
    records: &std::collections::HashMap<String, NewArtwork>,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<FolderReport, FolderError> {
    let cultures: Vec<PathBuf> = list_dir(dir)?.into_iter().filter(|p| p.is_dir() && !hidden(p)).collect();
    if cultures.is_empty() {
        return Err(FolderError::NoCultures { path: dir.into() });
    }
    let mut files = Vec::new();
    for c in &cultures {
        let name = c.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let mut stack = vec![c.clone()];
        while let Some(d) = stack.pop() {
            for p in list_dir(&d)? {
                if hidden(&p) {
                    continue;
                } else if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push((name.clone(), p));
                }
            }
        }
    }
    let total = files.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let thumbs = ws.thumbs_dir();
    let results: Vec<Result<Prepared, (String, String)>> = files
        .par_iter()
        .map(|(culture, path)| {
            let shown = path.strip_prefix(dir).unwrap_or(path).display().to_string();
            let r = (|| {
                let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
                let decoded = imaging::decode_bytes(&bytes, path).map_err(|e| e.to_string())?;
                let hash = imaging::content_hash(&bytes);
                imaging::write_cache(&decoded.rgb, &thumbs, &hash).map_err(|e| e.to_string())?;
                let (width, height) = decoded.rgb.dimensions();
                Ok(Prepared {
                    culture: culture.clone(),
                    rel: shown.clone(),
                    path: path.canonicalize().unwrap_or_else(|_| path.clone()),
                    hash,
                    width,
                    height,
                    bytes: bytes.len() as u64,
                    color: decoded.source_color,
                })
            })()
            .map_err(|why: String| (shown, why));
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total);
            r
        })
        .collect();
    let mut report = FolderReport::default();
    let mut ok = Vec::new();
    for r in results {
        match r {
            Ok(p) => ok.push(p),
            Err(s) => report.skipped.push(s),
        }
    }
    let works: Vec<NewArtwork> = ok
        .iter()
        .map(|p| {
            let known = records.get(&p.rel).cloned().unwrap_or_default();
            NewArtwork {
                source: source.into(),
                source_id: p.rel.clone(),
                title: Some(known.title)
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| p.path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string()),
                mapped_group: Some(p.culture.clone()),
                ..known
            }
        })
        .collect();
    let outcomes = ws.catalog.upsert_artworks(&works)?;
    let mut counts = std::collections::BTreeMap::new();
    for (p, o) in ok.iter().zip(outcomes) {
        let id = match o {
            UpsertOutcome::Inserted(id) => {
                report.imported += 1;
                id
            }
            UpsertOutcome::Updated(id) => {
                report.updated += 1;
                id
            }
        };
        ws.catalog.set_image(id, &p.path.display().to_string(), &p.hash, p.width, p.height, p.bytes)?;
        ws.catalog.set_culture(id, &p.culture)?;
        if p.color != "Rgb8" {
            report.converted.push((p.rel.clone(), format!("{} converted to RGB8", p.color)));
        }
        *counts.entry(p.culture.clone()).or_insert(0) += 1;
    }
    report.per_culture = counts.into_iter().collect();
    Ok(report)
}
