//! CLIP's image tower as a culture backbone (the transfer method: frozen, its embeddings cached,
//! only the culture head trains). The vector the head sees is the projected image embedding;
//! the "feature map" a prediction shows is the attention rollout over the patch grid (a ViT has
//! no last convolutional map to sum), 7 x 7 for ViT-B/32 at 224 px like ResNet-50's.
use super::config::ClipConfig;
use super::vision::{VisionTransformer, attention_rollout};
use crate::model::linear::Linear;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct ClipBackbone {
    vision_model: VisionTransformer,
    visual_projection: Linear,
    pub embed_dim: usize,
}

impl ClipBackbone {
    /// Parameters under `transformers`' names (`vision_model.*`, `visual_projection.weight`), so
    /// the published `model.safetensors` loads (its text tower is not read).
    pub fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let v = &cfg.vision_config;
        Ok(Self {
            vision_model: VisionTransformer::new(v, vb.pp("vision_model"))?,
            visual_projection: Linear::new(
                vb.get((cfg.projection_dim, v.hidden_size), "visual_projection.weight")?,
                None,
            ),
            embed_dim: cfg.projection_dim,
        })
    }

    pub fn image_size(&self) -> usize {
        self.vision_model.image_size
    }

    /// CLIP's tower always computes in f32 (`--precision bf16` covers the convolutional
    /// networks): its projection must not round while the encoder does not.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let _f32 = crate::model::autocast::Autocast::new(crate::model::autocast::Precision::F32);
        let (_, pooled, _) = self.vision_model.forward(x, false)?;
        self.visual_projection.forward(&pooled)
    }

    /// The embedding and the attention rollout (batch x 1 x side x side) from one pass.
    pub fn embed_with_map(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let _f32 = crate::model::autocast::Autocast::new(crate::model::autocast::Precision::F32);
        let (_, pooled, attention) = self.vision_model.forward(x, true)?;
        let side = self.vision_model.image_size / self.vision_model.patch_size;
        let map = attention_rollout(&attention, side)?.unsqueeze(1)?;
        Ok((self.visual_projection.forward(&pooled)?, map))
    }
}
