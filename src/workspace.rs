//! The workspace: a folder holding `catalog.sqlite`, `images/`, `thumbs/`, `runs/` and
//! `features/`.
use crate::catalog::{Catalog, CatalogError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot create workspace folder {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("{path} is a file, not a workspace folder")]
    NotAFolder { path: PathBuf },
    #[error("no platform data directory is known for this user; pass --workspace DIR")]
    NoDataDir,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Mapping(#[from] crate::culture::MappingError),
}

pub const SUBFOLDERS: [&str; 4] = ["images", "thumbs", "runs", "features"];

/// The editable culture mapping table inside a workspace.
pub const MAPPING_FILE: &str = "culture_map.csv";

#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    pub catalog: Catalog,
}

/// The platform data directory's workspace (e.g. `~/.local/share/artculture/workspace`).
pub fn default_dir() -> Result<PathBuf, WorkspaceError> {
    directories::ProjectDirs::from("org", "artculture", "artculture")
        .map(|d| d.data_dir().join("workspace"))
        .ok_or(WorkspaceError::NoDataDir)
}

impl Workspace {
    /// Opens the workspace at `root`, creating its folders and catalog if they are missing.
    pub fn open(root: &Path) -> Result<Self, WorkspaceError> {
        if root.is_file() {
            return Err(WorkspaceError::NotAFolder { path: root.to_path_buf() });
        }
        for sub in std::iter::once("").chain(SUBFOLDERS) {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(|source| WorkspaceError::Create { path: p.clone(), source })?;
        }
        let catalog = Catalog::open(&root.join("catalog.sqlite"))?;
        // The mapping table lives in the workspace so users can edit it; a new workspace gets
        // the study's table.
        let mapping = root.join(MAPPING_FILE);
        if !mapping.exists() {
            crate::fsutil::write_bytes_atomic(&mapping, crate::culture::DEFAULT_MAPPING_CSV.as_bytes())
                .map_err(|e| WorkspaceError::Create { path: mapping.clone(), source: e.source })?;
        }
        Ok(Self { root: root.to_path_buf(), catalog })
    }

    /// The workspace's culture mapping table (`culture_map.csv`), read now.
    pub fn culture_mapping(&self) -> Result<crate::culture::CultureMapping, WorkspaceError> {
        Ok(crate::culture::CultureMapping::from_file(&self.root.join(MAPPING_FILE))?)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn thumbs_dir(&self) -> PathBuf {
        self.root.join("thumbs")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn features_dir(&self) -> PathBuf {
        self.root.join("features")
    }

    /// An absolute path for a path stored relative to the workspace.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_layout_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        drop(Workspace::open(&root).unwrap());
        for sub in SUBFOLDERS {
            assert!(root.join(sub).is_dir(), "{sub}");
        }
        assert!(root.join("catalog.sqlite").is_file());
        // The editable mapping table is there, and an edit is what the workspace reads.
        std::fs::write(root.join(MAPPING_FILE), "tag,group\nAtlantis,Atlantean\n").unwrap();
        let ws = Workspace::open(&root).unwrap();
        assert_eq!(ws.culture_mapping().unwrap().group_of_tag("atlantis"), Some("Atlantean"));
    }

    #[test]
    fn a_file_is_not_a_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, "hi").unwrap();
        assert!(matches!(Workspace::open(&f), Err(WorkspaceError::NotAFolder { .. })));
    }
}
