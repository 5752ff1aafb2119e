//! CLIP's text tower (`CLIPTextTransformer`): token and position embeddings, the encoder with a
//! causal mask, `final_layer_norm`, pooled at the end-of-text token.
use super::config::TextConfig;
use super::encoder::{Encoder, EncoderShape};
use candle_core::{DType, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

#[derive(Debug, Clone)]
pub struct TextTransformer {
    token_embedding: Embedding,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    pub max_positions: usize,
}

impl TextTransformer {
    pub fn new(c: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let emb = vb.pp("embeddings");
        let (h, i, n) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
        let shape = EncoderShape::new(h, i, n, c.num_hidden_layers, c.layer_norm_eps, &c.hidden_act)?;
        Ok(Self {
            token_embedding: candle_nn::embedding(c.vocab_size, c.hidden_size, emb.pp("token_embedding"))?,
            position_embedding: emb.get((c.max_position_embeddings, c.hidden_size), "position_embedding.weight")?,
            encoder: Encoder::new(&shape, vb.pp("encoder"))?,
            final_layer_norm: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("final_layer_norm"))?,
            max_positions: c.max_position_embeddings,
        })
    }

    /// `ids`: batch x tokens (u32), each row ending at its first `eot` (rows padded after it with
    /// anything: the causal mask keeps padding out of the pooled token). Returns the pooled
    /// state (batch x hidden) after `final_layer_norm`.
    pub fn forward(&self, ids: &Tensor, eot: u32) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.max_positions {
            candle_core::bail!("CLIP text input has {t} tokens; at most {} fit", self.max_positions);
        }
        let x = self.token_embedding.forward(ids)?.broadcast_add(&self.position_embedding.i(..t)?)?;
        let mask: Vec<f32> =
            (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (t, t), x.device())?.to_dtype(x.dtype())?;
        let (last, _) = self.encoder.forward(&x, Some(&mask), false)?;
        let last = self.final_layer_norm.forward(&last)?;
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let pooled = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let at = row.iter().position(|&id| id == eot).unwrap_or(t - 1);
                last.i((i, at))
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&pooled, 0).and_then(|p| p.reshape((b, ())))
    }
}
