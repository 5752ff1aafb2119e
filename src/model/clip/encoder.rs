//! The transformer both CLIP towers share (`CLIPEncoder`): pre-norm layers of multi-head
//! self-attention and a two-layer MLP, parameters named as `transformers`' state_dict
//! (`layers.{i}.self_attn.{q,k,v,out}_proj`, `layer_norm1`, `mlp.fc1`, `mlp.fc2`, `layer_norm2`).
use super::config::Activation;
use crate::kernels::{self, linear::Epilogue};
use crate::model::linear::Linear;
use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

fn linear(dim_in: usize, dim_out: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::new(vb.get((dim_out, dim_in), "weight")?, Some(vb.get(dim_out, "bias")?)))
}

/// A linear layer over the last axis of a (batch, tokens, features) tensor, as one matrix
/// product over all rows, with `act` applied to its output. On the CPU, with nothing to
/// differentiate, the fused kernel of [`kernels::linear`] writes the result once.
fn apply_act(l: &Linear, x: &Tensor, act: Epilogue) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    let w = l.weight();
    let fused = kernels::applies(x)
        && x.dtype() == w.dtype()
        && w.device().is_cpu()
        && w.dims2()?.1 == d
        && !x.track_op()
        && !w.track_op()
        && l.bias().is_none_or(|b| !b.track_op());
    if fused {
        let n = w.dim(0)?;
        macro_rules! run {
            ($t:ty) => {{
                let y = kernels::with_slice::<$t, _>(x, "clip linear input", |xs| {
                    kernels::with_slice::<$t, _>(w, "clip linear weight", |ws| match l.bias() {
                        Some(bias) => kernels::with_slice::<$t, _>(bias, "clip linear bias", |bs| {
                            kernels::linear::forward(xs, ws, Some(bs), b * t, d, n, act)
                        }),
                        None => Ok(kernels::linear::forward(xs, ws, None, b * t, d, n, act)),
                    })
                })???;
                Tensor::from_vec(y, (b, t, n), x.device())
            }};
        }
        return match x.dtype() {
            DType::F64 => run!(f64),
            _ => run!(f32),
        };
    }
    let y = l.forward(&x.reshape((b * t, d))?)?.reshape((b, t, ()))?;
    match act {
        Epilogue::None => Ok(y),
        Epilogue::QuickGelu => &y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?,
    }
}

fn apply(l: &Linear, x: &Tensor) -> Result<Tensor> {
    apply_act(l, x, Epilogue::None)
}

#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl Attention {
    pub fn new(hidden: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q_proj: linear(hidden, hidden, vb.pp("q_proj"))?,
            k_proj: linear(hidden, hidden, vb.pp("k_proj"))?,
            v_proj: linear(hidden, hidden, vb.pp("v_proj"))?,
            out_proj: linear(hidden, hidden, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `mask`: added to the attention scores (tokens x tokens), e.g. the text tower's causal one.
    /// Returns the output and the attention weights (batch, heads, tokens, tokens).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |y: Tensor| y.reshape((b, t, self.heads, hd))?.transpose(1, 2)?.contiguous();
        let scale = 1.0 / (hd as f64).sqrt();
        let q = split((apply(&self.q_proj, x)? * scale)?)?;
        let k = split(apply(&self.k_proj, x)?)?;
        let v = split(apply(&self.v_proj, x)?)?;
        let mut scores = q.matmul(&k.t()?.contiguous()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        Ok((apply(&self.out_proj, &y)?, weights))
    }
}

#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    pub fn new(hidden: usize, intermediate: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(hidden, intermediate, vb.pp("fc1"))?,
            fc2: linear(intermediate, hidden, vb.pp("fc2"))?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match self.act {
            Activation::QuickGelu => apply_act(&self.fc1, x, Epilogue::QuickGelu)?,
            Activation::Gelu => apply(&self.fc1, x)?.gelu_erf()?,
        };
        apply(&self.fc2, &h)
    }
}

#[derive(Debug, Clone)]
pub struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    mlp: Mlp,
    layer_norm2: LayerNorm,
}

impl EncoderLayer {
    pub fn new(
        hidden: usize,
        intermediate: usize,
        heads: usize,
        eps: f64,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::new(hidden, heads, vb.pp("self_attn"))?,
            layer_norm1: candle_nn::layer_norm(hidden, eps, vb.pp("layer_norm1"))?,
            mlp: Mlp::new(hidden, intermediate, act, vb.pp("mlp"))?,
            layer_norm2: candle_nn::layer_norm(hidden, eps, vb.pp("layer_norm2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (a, weights) = self.self_attn.forward(&self.layer_norm1.forward(x)?, mask)?;
        let x = (x + a)?;
        let x = (&x + self.mlp.forward(&self.layer_norm2.forward(&x)?)?)?;
        Ok((x, weights))
    }
}

#[derive(Debug, Clone)]
pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

/// Layer sizes of one tower.
pub struct EncoderShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub eps: f64,
    pub act: Activation,
}

impl EncoderShape {
    pub fn new(hidden: usize, intermediate: usize, heads: usize, layers: usize, eps: f64, act: &str) -> Result<Self> {
        let act = Activation::parse(act).map_err(candle_core::Error::msg)?;
        Ok(Self { hidden, intermediate, heads, layers, eps, act })
    }
}

impl Encoder {
    pub fn new(s: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        let layers = (0..s.layers)
            .map(|i| EncoderLayer::new(s.hidden, s.intermediate, s.heads, s.eps, s.act, vb.pp(format!("layers.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// The last hidden state; with `keep_attention`, every layer's attention weights too
    /// (averaged over heads: batch x tokens x tokens), for attention rollout.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, keep_attention: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut kept = Vec::new();
        for layer in &self.layers {
            let (y, w) = layer.forward(&x, mask)?;
            if keep_attention {
                kept.push(w.mean(1)?);
            }
            x = y;
        }
        Ok((x, kept))
    }
}

/// Rows scaled to unit length (CLIP compares embeddings by cosine).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&norm)
}
