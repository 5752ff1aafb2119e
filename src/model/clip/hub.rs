//! CLIP ViT-B/32 from the Hugging Face hub: `openai/clip-vit-base-patch32` (MIT licence), its
//! `config.json`, `model.safetensors`, `vocab.json` and `merges.txt`, into the standard cache
//! (as ResNet's weights), read from the cache alone when offline.
use super::{ClipError, ClipModel, Tokenizer};
use crate::model::weights::{HubFileError, HubOptions, hub_file};
use candle_core::Device;
use std::path::PathBuf;

pub const OWNER: &str = "openai";
pub const NAME: &str = "clip-vit-base-patch32";
/// The repository's `main` holds PyTorch, TensorFlow and Flax weights; its safetensors
/// conversion (the Hub's bot, the same numbers) is the pull request candle's CLIP example loads.
pub const WEIGHTS_REVISION: &str = "refs/pr/15";
const FILES: [&str; 4] = ["config.json", "vocab.json", "merges.txt", "model.safetensors"];

/// The paths of a CLIP checkpoint's files.
#[derive(Debug, Clone)]
pub struct ClipFiles {
    pub config: PathBuf,
    pub vocab: PathBuf,
    pub merges: PathBuf,
    pub weights: PathBuf,
}

impl ClipFiles {
    /// A folder holding the four files under their published names.
    pub fn in_dir(dir: &std::path::Path) -> Self {
        Self {
            config: dir.join("config.json"),
            vocab: dir.join("vocab.json"),
            merges: dir.join("merges.txt"),
            weights: dir.join("model.safetensors"),
        }
    }

    pub fn load(&self, device: &Device) -> Result<(ClipModel, Tokenizer), ClipError> {
        let tok = Tokenizer::from_files(&self.vocab, &self.merges)
            .map_err(|e| ClipError::File(self.vocab.clone(), e.to_string()))?;
        let model = ClipModel::load(&self.config, &self.weights, device)?;
        if model.config.text_config.vocab_size <= tok.end as usize {
            return Err(ClipError::File(
                self.vocab.clone(),
                format!(
                    "token ids reach {}, the model has {} embeddings",
                    tok.end, model.config.text_config.vocab_size
                ),
            ));
        }
        Ok((model, tok))
    }
}

/// Fetches (or, offline, finds) the checkpoint. `progress` gets (file, bytes done, total).
pub fn fetch(
    opts: &HubOptions,
    progress: impl Fn(&str, u64, u64) + Send + Sync + Clone + 'static,
) -> Result<ClipFiles, ClipError> {
    let mut paths = Vec::new();
    for file in FILES {
        let p = progress.clone();
        let res = hub_file(OWNER, NAME, Some(WEIGHTS_REVISION), file, opts, Box::new(move |d, t| p(file, d, t)));
        paths.push(res.map_err(|e| match e {
            HubFileError::NotCached => ClipError::NotCached,
            HubFileError::Other(detail) => ClipError::Download { repo: format!("{OWNER}/{NAME}"), detail },
        })?);
    }
    // A proxy's error page or a truncated download must not pass for weights.
    crate::model::weights::read_header(&paths[3]).map_err(|e| ClipError::File(paths[3].clone(), e.to_string()))?;
    Ok(ClipFiles {
        config: paths[0].clone(),
        vocab: paths[1].clone(),
        merges: paths[2].clone(),
        weights: paths[3].clone(),
    })
}

/// The cached checkpoint, without any request (None when it was never fetched).
pub fn cached() -> Option<ClipFiles> {
    let opts = HubOptions { offline: true, ..HubOptions::from_env() };
    fetch(&opts, |_, _, _| {}).ok()
}
