//! `artculture bench conv_layers`: every distinct convolution of ResNet-50 at 224 x 224 and
//! batch 16, forward and both gradients, through our kernels and through candle's own CPU ops
//! (`conv2d`; `conv_transpose2d` for the input gradient, as candle's backward pass does it), in
//! GFLOP/s. This is the per-layer profile behind BENCHMARKS.md's explanation of the gap. Under
//! `--precision bf16` the operands are bf16 values and the products those bf16 autocast runs
//! (on `vdpbf16ps` where it is enabled), without candle's side.
use artculture::kernels::conv::eval_bf16::{self, StoredEpilogue};
use artculture::kernels::conv::{
    Bf16Rounding, ConvGeom, DotWeights, Prepared, forward, input_grad, stored, weight_grad,
};
use artculture::kernels::winograd;
use artculture::kernels::{blocked, dot_bf16};
use artculture::model::autocast;
use candle_core::{Device, Tensor};
use std::time::Instant;

type Conv = (usize, usize, usize, usize, usize, usize, usize);

/// (in channels, input size, out channels, kernel, stride, padding, uses in the network).
const RESNET50_CONVS: [Conv; 23] = [
    (3, 224, 64, 7, 2, 3, 1),
    (64, 56, 64, 1, 1, 0, 1),
    (64, 56, 64, 3, 1, 1, 3),
    (64, 56, 256, 1, 1, 0, 4),
    (256, 56, 64, 1, 1, 0, 2),
    (256, 56, 128, 1, 1, 0, 1),
    (128, 56, 128, 3, 2, 1, 1),
    (128, 28, 512, 1, 1, 0, 4),
    (256, 56, 512, 1, 2, 0, 1),
    (512, 28, 128, 1, 1, 0, 3),
    (128, 28, 128, 3, 1, 1, 3),
    (512, 28, 256, 1, 1, 0, 1),
    (256, 28, 256, 3, 2, 1, 1),
    (256, 14, 1024, 1, 1, 0, 6),
    (512, 28, 1024, 1, 2, 0, 1),
    (1024, 14, 256, 1, 1, 0, 5),
    (256, 14, 256, 3, 1, 1, 5),
    (1024, 14, 512, 1, 1, 0, 1),
    (512, 14, 512, 3, 2, 1, 1),
    (512, 7, 2048, 1, 1, 0, 3),
    (1024, 14, 2048, 1, 2, 0, 1),
    (2048, 7, 512, 1, 1, 0, 2),
    (512, 7, 512, 3, 1, 1, 2),
];

/// The fastest of `reps` runs after a warm-up (the result is kept from the optimiser).
fn best_of<R>(reps: usize, mut f: impl FnMut() -> anyhow::Result<R>) -> anyhow::Result<f64> {
    std::hint::black_box(f()?);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        std::hint::black_box(f()?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// A layer's name in the reports: `64x56x56 -> 256, 1x1/1`.
fn layer_name(&(c, h, o, k, s, ..): &Conv) -> String {
    format!("{c}x{h}x{h} -> {o}, {k}x{k}/{s}")
}

/// Whether `bench --layer` (a part of the name) asks for this layer; all without one.
fn chosen(l: &Conv, layer: Option<&str>) -> bool {
    layer.is_none_or(|part| layer_name(l).contains(part))
}

pub fn conv_layers(reps: usize, batch: usize, layer: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let bf16 = autocast::bf16();
    let mut layers = Vec::new();
    let (mut ours_total, mut candle_total) = (0.0, 0.0);
    for conv in RESNET50_CONVS.iter().filter(|l| chosen(l, layer)) {
        let &(c, h, o, k, s, p, uses) = conv;
        let mut g = ConvGeom::new(&[batch, c, h, h], &[o, c, k, k], s, p)?;
        let x = Tensor::randn(0f32, 1.0, (batch, c, h, h), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.05, (o, c, k, k), &Device::Cpu)?;
        // Under `--precision bf16`: bf16 values, and the products bf16 autocast runs on.
        let (x, w) = if bf16 { (autocast::round(&x)?, autocast::round(&w)?) } else { (x, w) };
        g.bf16_dot = bf16 && artculture::kernels::dot_bf16::enabled();
        let y = x.conv2d(&w, p, s, 1, 1)?;
        let dy = Tensor::randn(0f32, 1.0, y.dims(), &Device::Cpu)?;
        let (xv, wv, dyv) = (
            x.flatten_all()?.to_vec1::<f32>()?,
            w.flatten_all()?.to_vec1::<f32>()?,
            dy.flatten_all()?.to_vec1::<f32>()?,
        );
        let gflop = 2.0 * (batch * o * c * k * k * y.dim(2)? * y.dim(3)?) as f64 / 1e9;
        let (fwd, dx, dw) = if g.bf16_dot {
            // As training runs them: activations and gradients read from bf16 storage.
            let (xs, dys) = (artculture::kernels::bf16::narrowed(&xv), artculture::kernels::bf16::narrowed(&dyv));
            (
                best_of(reps, || Ok(stored::forward(&g, &xs, &wv)))?,
                best_of(reps, || Ok(stored::input_grad(&g, &wv, &dys)))?,
                best_of(reps, || Ok(stored::weight_grad(&g, &xs, &dys)))?,
            )
        } else {
            (
                // As `Conv2dOp` runs it: Winograd's method for 3x3 stride-1 layers, the weight
                // transformed per call.
                best_of(reps, || {
                    let u = winograd::applies(&g).then(|| winograd::transform_weights(o, c, &wv));
                    Ok(forward(&g, &xv, &wv, u.as_deref().map_or(Prepared::None, Prepared::Winograd), None))
                })?,
                best_of(reps, || Ok(input_grad(&g, &wv, &dyv)))?,
                best_of(reps, || Ok(weight_grad(&g, &xv, &dyv)))?,
            )
        };
        ours_total += uses as f64 * (fwd + dx + dw);
        let ours_gflops = [gflop / fwd, gflop / dx, gflop / dw];
        if bf16 {
            // candle has no bf16 autocast to compare with.
            layers.push(serde_json::json!({
                "layer": layer_name(conv),
                "uses": uses,
                "gflop": gflop,
                "ours_gflops": ours_gflops,
            }));
            continue;
        }
        let c_fwd = best_of(reps, || Ok(x.conv2d(&w, p, s, 1, 1)?))?;
        // candle's backward: conv_transpose2d for the input, conv2d of the transposed input and
        // gradient for the weights.
        let out_pad = h + 2 * p - ((y.dim(2)? - 1) * s + k);
        let c_dx = best_of(reps, || Ok(dy.conv_transpose2d(&w, p, out_pad, s, 1)?))?;
        let c_dw = best_of(reps, || Ok(x.transpose(0, 1)?.conv2d(&dy.transpose(0, 1)?, p, 1, s, 1)?))?;
        candle_total += uses as f64 * (c_fwd + c_dx + c_dw);
        layers.push(serde_json::json!({
            "layer": layer_name(conv),
            "uses": uses,
            "gflop": gflop,
            "ours_gflops": ours_gflops,
            "candle_gflops": [gflop / c_fwd, gflop / c_dx, gflop / c_dw],
        }));
    }
    Ok(serde_json::json!({
        "batch": batch,
        "columns": "GFLOP/s of [forward, input gradient, weight gradient]",
        "layers": layers,
        "all_convolutions_seconds": { "ours": ours_total, "candle": candle_total },
    }))
}

/// `artculture bench winograd_layers`: ResNet-50's 3x3 stride-1 convolutions in evaluation, at
/// batch 1 and 16, by the direct method and by Winograd's F(2x2, 3x3) (with its weight transform
/// timed apart: a loaded model does it once). The figures behind `model::conv`'s choice to keep the transform at small batches.
pub fn winograd_layers(reps: usize) -> anyhow::Result<serde_json::Value> {
    use artculture::kernels::winograd;
    let mut layers = Vec::new();
    for &(c, h, o, k, s, p, _) in RESNET50_CONVS.iter().filter(|l| l.3 == 3 && l.4 == 1) {
        for batch in [1, 16] {
            let g = ConvGeom::new(&[batch, c, h, h], &[o, c, k, k], s, p)?;
            let xv = Tensor::randn(0f32, 1.0, (batch, c, h, h), &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let wv = Tensor::randn(0f32, 0.05, (o, c, k, k), &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let u = winograd::transform_weights(o, c, &wv);
            let direct = best_of(reps, || Ok(forward(&g, &xv, &wv, Prepared::None, None)))?;
            let fast = best_of(reps, || Ok(forward(&g, &xv, &wv, Prepared::Winograd(&u), None)))?;
            let transform = best_of(reps, || Ok(winograd::transform_weights(o, c, &wv)))?;
            layers.push(serde_json::json!({
                "layer": format!("{c}x{h}x{h} -> {o}, 3x3/1"),
                "batch": batch,
                "direct_ms": direct * 1e3,
                "winograd_ms": fast * 1e3,
                "weight_transform_ms": transform * 1e3,
            }));
        }
    }
    Ok(serde_json::json!({ "layers": layers }))
}

/// `artculture bench eval_layers`: every distinct convolution of ResNet-50 as evaluation runs it
/// (in f32 on AVX-512 the channels-last blocked path, `ARTCULTURE_BLOCKED=0` the matrix-product
/// one: Winograd with the kept transform for 3x3 stride-1 ones, the direct method otherwise, no
/// epilogue), at batch 1 and 16, in milliseconds per use and summed over the network. Set
/// beside ONNX Runtime's per-node profile (`scripts/ort_profile.py`), it says which layers a
/// gap comes from. Under `--precision bf16` on the bf16 kernels, as bf16 evaluation runs them:
/// from bf16 storage into bf16 storage with the weights packed once (as a loaded model keeps
/// them), through the fused epilogue (batch norm's scale and shift, ReLU, autocast's roundings).
pub fn eval_layers(reps: usize, layer: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for batch in [1, 16] {
        let (mut layers, mut total) = (Vec::new(), 0.0);
        for conv in RESNET50_CONVS.iter().filter(|l| chosen(l, layer)) {
            let &(c, h, o, k, s, p, uses) = conv;
            let g = ConvGeom::new(&[batch, c, h, h], &[o, c, k, k], s, p)?;
            let xv = Tensor::randn(0f32, 1.0, (batch, c, h, h), &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let wv = Tensor::randn(0f32, 0.05, (o, c, k, k), &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let seconds = if autocast::bf16() && dot_bf16::enabled() {
                let g = ConvGeom { bf16_dot: true, bf16_round: true, ..g };
                let (w, x) = (DotWeights::new(&g, &wv), artculture::kernels::bf16::narrowed(&xv));
                let (scale, shift) = (vec![1.0; o], vec![0.0; o]);
                let e = StoredEpilogue {
                    scale: &scale,
                    shift: &shift,
                    residual: None,
                    relu: true,
                    rounding: Bf16Rounding::ConvAndOutput,
                };
                // The weight was rounded as it was packed and the input is bf16 storage: nothing
                // is left to round on the way in, as for a loaded model's layer past the first.
                let g = ConvGeom { bf16_round: false, ..g };
                best_of(reps, || Ok(eval_bf16::forward(&g, &x, &w, &e)))?
            } else if blocked::enabled() && !autocast::bf16() {
                blocked_layer_seconds(reps, batch, conv, &xv, &wv)?
            } else {
                let u = winograd::applies(&g).then(|| winograd::transform_weights(o, c, &wv));
                let prepared = u.as_deref().map_or(Prepared::None, Prepared::Winograd);
                best_of(reps, || Ok(forward(&g, &xv, &wv, prepared, None)))?
            };
            let gflop = 2.0 * (batch * o * c * k * k * g.oh * g.ow) as f64 / 1e9;
            total += uses as f64 * seconds;
            layers.push(serde_json::json!({
                "layer": layer_name(conv),
                "uses": uses,
                "ms": seconds * 1e3,
                "gflops": gflop / seconds,
            }));
        }
        out.insert(
            format!("batch{batch}"),
            serde_json::json!({ "layers": layers, "all_convolutions_ms": total * 1e3 }),
        );
    }
    Ok(out.into())
}

/// One layer on the blocked layout as ResNet-50's evaluation runs it: a batch of one is shared
/// by a team of the threads (its pixels or its output channels; the team is started for the
/// layer, so a batch-1 time includes waking the helpers, which a whole network pays once), a
/// larger batch spreads whole images (each with maps of its own). Borders as in the network: a
/// 3x3's input has one, the stem's input three.
fn blocked_layer_seconds(
    reps: usize,
    batch: usize,
    &(c, h, o, k, s, p, _): &Conv,
    xv: &[f32],
    wv: &[f32],
) -> anyhow::Result<f64> {
    use rayon::prelude::*;
    let conv = blocked::BlockedConv::new(wv, [o, c, k], s, p, &vec![1.0; o], &vec![0.0; o])?;
    let (oh, ow) = conv.out_size(h, h);
    let mut maps: Vec<(blocked::Map, blocked::Map)> = xv
        .chunks(c * h * h)
        .map(|img| {
            let (mut x, mut y) = (blocked::Map::default(), blocked::Map::default());
            x.load_chw(img, c, h, h, p);
            y.reshape(o, oh, ow, 0);
            (x, y)
        })
        .collect();
    best_of(reps, || {
        if batch == 1 {
            let (x, y) = &mut maps[0];
            artculture::kernels::team::with_team(|team| conv.forward(x, y, false, true, team));
        } else {
            let solo = artculture::kernels::team::Team::solo();
            maps.par_iter_mut().for_each(|(x, y)| conv.forward(x, y, false, true, solo));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--layer` keeps the layers whose printed name contains its text, and without it every
    /// layer runs.
    #[test]
    fn layer_picks_by_the_printed_name() {
        let names = |layer| RESNET50_CONVS.iter().filter(|l| chosen(l, layer)).map(layer_name).collect::<Vec<_>>();
        assert_eq!(names(None).len(), RESNET50_CONVS.len());
        assert_eq!(names(Some("56x56 -> 256")), ["64x56x56 -> 256, 1x1/1"]);
        assert_eq!(names(Some("3x3/2")).len(), 3);
        assert!(names(Some("5x5")).is_empty());
    }
}
