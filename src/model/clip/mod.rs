//! OpenAI's CLIP (Radford et al. 2021) as Hugging Face `transformers` defines `CLIPModel`, with
//! its state_dict names, so `openai/clip-vit-base-patch32`'s `model.safetensors` loads unchanged.
//! An image tower, a text tower and their projections into one space where a painting and the
//! words that describe it lie close: what zero-shot flagging, "more like this" and search by
//! words use. candle-transformers has a CLIP too; ours reuses the project's `Linear` (weights
//! streamed as `W x^T`, see `model::linear`) and returns the attention rollout's inputs, and it
//! keeps candle-transformers (and the `tokenizers` build it pulls in) out of the build.
pub mod backbone;
pub mod config;
pub mod encoder;
pub mod hub;
pub mod text;
pub mod tokenizer;
pub mod vision;

pub use config::ClipConfig;
pub use tokenizer::Tokenizer;

use crate::model::linear::Linear;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use std::path::Path;

/// The normalisation CLIP was trained with (OpenAI's preprocessing; not ImageNet's).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

#[derive(Debug, Clone)]
pub struct ClipModel {
    pub text_model: text::TextTransformer,
    pub vision_model: vision::VisionTransformer,
    visual_projection: Linear,
    text_projection: Linear,
    logit_scale: Tensor,
    pub config: ClipConfig,
}

impl ClipModel {
    pub fn new(config: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let (t, v, p) = (&config.text_config, &config.vision_config, config.projection_dim);
        Ok(Self {
            text_model: text::TextTransformer::new(t, vb.pp("text_model"))?,
            vision_model: vision::VisionTransformer::new(v, vb.pp("vision_model"))?,
            visual_projection: Linear::new(vb.get((p, v.hidden_size), "visual_projection.weight")?, None),
            text_projection: Linear::new(vb.get((p, t.hidden_size), "text_projection.weight")?, None),
            logit_scale: vb.get((), "logit_scale")?,
            config: config.clone(),
        })
    }

    /// `config.json` and `model.safetensors` of a Hugging Face CLIP checkpoint, as plain tensors
    /// (inference only), each tensor checked by name and shape.
    pub fn load(config: &Path, weights: &Path, device: &Device) -> std::result::Result<Self, ClipError> {
        let text = std::fs::read_to_string(config).map_err(|e| ClipError::File(config.into(), e.to_string()))?;
        let cfg = ClipConfig::from_json(&text).map_err(|e| ClipError::File(config.into(), e))?;
        let vb = crate::model::weights::var_builder(weights, DType::F32, device)
            .map_err(|e| ClipError::File(weights.into(), e.to_string()))?;
        Self::new(&cfg, vb).map_err(|e| ClipError::File(weights.into(), e.to_string()))
    }

    /// Image features in the shared space (batch x projection_dim), not normalised.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, pooled, _) = self.vision_model.forward(pixels, false)?;
        self.visual_projection.forward(&pooled)
    }

    /// Image features and the attention rollout map (batch x side x side) from one pass.
    pub fn image_features_with_rollout(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, pooled, attention) = self.vision_model.forward(pixels, true)?;
        let side = self.vision_model.image_size / self.vision_model.patch_size;
        Ok((self.visual_projection.forward(&pooled)?, vision::attention_rollout(&attention, side)?))
    }

    /// Text features in the shared space (batch x projection_dim), not normalised.
    pub fn text_features(&self, ids: &Tensor, eot: u32) -> Result<Tensor> {
        self.text_projection.forward(&self.text_model.forward(ids, eot)?)
    }

    /// `logit_scale.exp() * cos(image, text)`, images x texts, as `CLIPModel` returns them.
    pub fn logits_per_image(&self, image_features: &Tensor, text_features: &Tensor) -> Result<Tensor> {
        let i = encoder::l2_normalize(image_features)?;
        let t = encoder::l2_normalize(text_features)?;
        i.matmul(&t.t()?)?.broadcast_mul(&self.logit_scale.exp()?)
    }

    /// The scale CLIP's logits carry (100 for the published model).
    pub fn logit_scale(&self) -> Result<f32> {
        self.logit_scale.exp()?.to_dtype(DType::F32)?.to_scalar::<f32>()
    }
}

/// The configuration of a CLIP weights file: `config.json` beside it (as the hub cache and a
/// downloaded checkpoint folder hold it), else the published ViT-B/32's.
pub fn config_beside(weights: &Path) -> std::result::Result<ClipConfig, ClipError> {
    let path = weights.with_file_name("config.json");
    if !path.exists() {
        return Ok(ClipConfig::vit_b32());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ClipError::File(path.clone(), e.to_string()))?;
    ClipConfig::from_json(&text).map_err(|e| ClipError::File(path, e))
}

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("{0}: {1}")]
    File(std::path::PathBuf, String),
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
    #[error(
        "CLIP weights are not in the Hugging Face cache and this run is offline; run `artculture weights fetch clip` while online"
    )]
    NotCached,
    #[error("downloading CLIP from {repo}: {detail}")]
    Download { repo: String, detail: String },
}
