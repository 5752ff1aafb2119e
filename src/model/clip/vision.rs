//! CLIP's image tower (`CLIPVisionTransformer`): 32 x 32 patches embedded by a strided
//! convolution, a class token, learned positions, `pre_layrnorm` (sic, the published name),
//! the encoder, and `post_layernorm` on the class token.
use super::config::VisionConfig;
use super::encoder::{Encoder, EncoderShape};
use candle_core::{D, IndexOp, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, VarBuilder};

#[derive(Debug, Clone)]
pub struct VisionTransformer {
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    pub image_size: usize,
    pub patch_size: usize,
}

impl VisionTransformer {
    pub fn new(c: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let emb = vb.pp("embeddings");
        let conv = Conv2dConfig { stride: c.patch_size, ..Default::default() };
        let w = emb.get((c.hidden_size, c.num_channels, c.patch_size, c.patch_size), "patch_embedding.weight")?;
        let positions = (c.image_size / c.patch_size).pow(2) + 1;
        let (h, i, n) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
        let shape = EncoderShape::new(h, i, n, c.num_hidden_layers, c.layer_norm_eps, &c.hidden_act)?;
        Ok(Self {
            class_embedding: emb.get(c.hidden_size, "class_embedding")?,
            patch_embedding: Conv2d::new(w, None, conv),
            position_embedding: emb.get((positions, c.hidden_size), "position_embedding.weight")?,
            pre_layrnorm: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::new(&shape, vb.pp("encoder"))?,
            post_layernorm: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("post_layernorm"))?,
            image_size: c.image_size,
            patch_size: c.patch_size,
        })
    }

    /// `pixels`: batch x 3 x size x size, normalised with CLIP's mean and std. Returns the last
    /// hidden state (batch x tokens x hidden), the pooled class token after `post_layernorm`,
    /// and, with `keep_attention`, each layer's head-averaged attention.
    pub fn forward(&self, pixels: &Tensor, keep_attention: bool) -> Result<(Tensor, Tensor, Vec<Tensor>)> {
        let (b, _, h, w) = pixels.dims4()?;
        if h != self.image_size || w != self.image_size {
            candle_core::bail!(
                "CLIP vision input is {h} x {w}; this model takes {0} x {0} (its position embeddings are learned for that size)",
                self.image_size
            );
        }
        let patches = self.patch_embedding.forward(pixels)?.flatten_from(2)?.transpose(1, 2)?;
        let d = self.class_embedding.dim(0)?;
        let cls = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?.to_dtype(patches.dtype())?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let x = self.pre_layrnorm.forward(&x)?;
        let (last, attention) = self.encoder.forward(&x, None, keep_attention)?;
        let pooled = self.post_layernorm.forward(&last.i((.., 0, ..))?)?;
        Ok((last, pooled, attention))
    }
}

/// Attention rollout (Abnar and Zuidema 2020): the product over layers of (attention + identity),
/// rows renormalised, read from the class token to the patches; a (side x side) map per image,
/// scaled to [0, 1]. It says which patches the class token drew on, through every layer.
pub fn attention_rollout(attention: &[Tensor], side: usize) -> Result<Tensor> {
    let Some(first) = attention.first() else { candle_core::bail!("attention rollout needs at least one layer") };
    let (b, t, _) = first.dims3()?;
    let eye = Tensor::eye(t, first.dtype(), first.device())?.broadcast_as((b, t, t))?;
    let mut rollout = eye.clone();
    for a in attention {
        let a = (a + &eye)?;
        let a = a.broadcast_div(&a.sum_keepdim(D::Minus1)?)?;
        rollout = a.matmul(&rollout)?;
    }
    let cls = rollout.i((.., 0, 1..))?.contiguous()?;
    let min = cls.min_keepdim(D::Minus1)?;
    let range = (cls.max_keepdim(D::Minus1)? - &min)?.clamp(1e-12, f64::INFINITY)?;
    cls.broadcast_sub(&min)?.broadcast_div(&range)?.reshape((b, side, side))
}
