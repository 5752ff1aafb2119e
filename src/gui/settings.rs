//! What the app remembers between runs: window size, last view, last workspace. Kept as a small
//! JSON file in the platform config directory, written atomically.
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    pub view: super::View,
    pub window_size: [f32; 2],
    pub workspace: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self { view: super::View::Dataset, window_size: [1280.0, 800.0], workspace: None }
    }
}

impl Settings {
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("org", "artculture", "artculture").map(|d| d.config_dir().join("settings.json"))
    }

    /// Reads settings; a missing or unreadable file gives the defaults (settings are a comfort,
    /// never a reason not to start).
    pub fn load(path: Option<&PathBuf>) -> Self {
        path.and_then(|p| std::fs::read(p).ok()).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn save(&self, path: Option<&PathBuf>) {
        if let (Some(p), Ok(json)) = (path, serde_json::to_vec_pretty(self)) {
            let _ = crate::fsutil::write_bytes_atomic(p, &json);
        }
    }
}
