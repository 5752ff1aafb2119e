//! Getting works into the workspace: The Met's CSV and Collection API, and image folders.
pub mod folder;
pub mod met_api;
pub mod met_csv;
pub mod met_download;
pub mod met_images;
pub mod met_lfs;
pub mod met_search;
pub mod pacing;
pub mod sample;

use crate::catalog::{CatalogError, DroppedTag, NewArtwork};
use crate::culture::CultureMapping;
use crate::workspace::Workspace;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Csv(#[from] met_csv::CsvError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Folder(#[from] folder::FolderError),
    #[error(transparent)]
    Api(#[from] met_api::ApiError),
    #[error(transparent)]
    Lfs(#[from] met_lfs::LfsError),
}

/// Default of `--min-per-group`: the study keeps groups with more than 100 works.
pub const DEFAULT_MIN_PER_GROUP: usize = 100;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MetImportReport {
    pub scan: met_csv::CsvScan,
    pub inserted: usize,
    pub updated: usize,
    pub kept_groups: Vec<(String, usize)>,
    pub dropped: Vec<DroppedTag>,
}

/// Imports `MetObjects.csv`: upserts the paintings in batches, then applies the group
/// threshold over all Met works in the workspace and records what was dropped.
pub fn import_met_csv(
    ws: &mut Workspace,
    csv: &Path,
    mapping: &CultureMapping,
    min_per_group: usize,
    limit: Option<usize>,
    mut progress: impl FnMut(u64, u64),
) -> Result<MetImportReport, IngestError> {
    let mut report = MetImportReport::default();
    let mut batch: Vec<NewArtwork> = Vec::with_capacity(1000);
    let mut db_err = None;
    let flush =
        |ws: &mut Workspace, batch: &mut Vec<NewArtwork>, report: &mut MetImportReport| -> Result<(), CatalogError> {
            for o in ws.catalog.upsert_artworks(batch)? {
                match o {
                    crate::catalog::UpsertOutcome::Inserted(_) => report.inserted += 1,
                    crate::catalog::UpsertOutcome::Updated(_) => report.updated += 1,
                }
            }
            batch.clear();
            Ok(())
        };
    let scan = {
        let ws_ref = &mut *ws;
        let report_ref = &mut report;
        met_csv::scan(
            csv,
            mapping,
            limit,
            |w| {
                batch.push(w);
                if batch.len() >= 1000 && db_err.is_none() {
                    db_err = flush(ws_ref, &mut batch, report_ref).err();
                }
            },
            &mut progress,
        )?
    };
    if let Some(e) = db_err {
        return Err(e.into());
    }
    flush(ws, &mut batch, &mut report)?;
    report.scan = scan;
    let (kept, dropped) = apply_threshold(ws, min_per_group)?;
    report.kept_groups = kept;
    report.dropped = dropped;
    Ok(report)
}

/// Kept groups with their counts, and what was dropped.
pub type ThresholdOutcome = (Vec<(String, usize)>, Vec<DroppedTag>);

/// Keeps the groups with more than `min_per_group` Met works; records the rest, and the raw
/// tags no group takes, as dropped.
pub fn apply_threshold(ws: &mut Workspace, min_per_group: usize) -> Result<ThresholdOutcome, CatalogError> {
    let counts = ws.catalog.mapped_group_counts("met")?;
    let (kept, below): (Vec<_>, Vec<_>) = counts.into_iter().partition(|(_, n)| *n > min_per_group);
    let names: Vec<String> = kept.iter().map(|(g, _)| g.clone()).collect();
    ws.catalog.apply_group_threshold("met", &names)?;
    let mut dropped: Vec<DroppedTag> = below
        .into_iter()
        .map(|(tag, count)| DroppedTag { tag, count, why: format!("group with {} works or fewer", min_per_group) })
        .collect();
    let mut unmapped: HashMap<String, usize> = HashMap::new();
    for a in ws.catalog.artworks(&Default::default())?.iter().filter(|a| a.source == "met" && a.mapped_group.is_none())
    {
        *unmapped.entry(a.tags.first().unwrap_or("(no location tag)").to_string()).or_default() += 1;
    }
    dropped.extend(unmapped.into_iter().map(|(tag, count)| DroppedTag { tag, count, why: "unmapped tag".into() }));
    dropped.sort_by(|a, b| b.count.cmp(&a.count).then(a.tag.cmp(&b.tag)));
    ws.catalog.set_dropped(&dropped)?;
    Ok((kept, dropped))
}
