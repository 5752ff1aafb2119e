//! Pooling layers with a backward pass.
//!
//! candle's `max_pool2d` has no backward when the kernel is larger than the stride (ResNet's
//! and AlexNet's 3x3 stride-2 pools), and where it has one (kernel == stride, VGG's 2x2 pools)
//! candle 0.11.1 scales the gradient by 1 / kernel area once too often (it multiplies by the
//! share of maxima in the window instead of dividing by their count): VGG's first-layer
//! gradients came out 4^5 = 1024 times too small in our f64 parity test. So [`max_pool2d`]
//! builds every pool from strided views and element-wise `maximum`, whose gradient is right.
//! Padding uses a very negative value, as PyTorch pads with -inf.
use candle_core::{D, Result, Tensor};

// f32: a GPU backend may have no f64 (see `model::device`); -1e30 is exact enough in f32.
const NEG: f32 = -1e30;

/// `nn.MaxPool2d(kernel, stride, padding)` with floor mode.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if crate::kernels::applies_in_training(x) {
        return x.contiguous()?.apply_op1(crate::kernels::pool::MaxPool2dOp { kernel, stride, pad: padding });
    }
    max_pool2d_strided(x, kernel, stride, padding)
}

/// The same pool from strided views, for devices without our CPU kernel.
fn max_pool2d_strided(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    if hp < kernel || wp < kernel {
        candle_core::bail!("max pool {kernel}x{kernel}: input {h}x{w} is smaller than the kernel");
    }
    let (oh, ow) = ((hp - kernel) / stride + 1, (wp - kernel) / stride + 1);
    // Pad to a multiple of the stride large enough for every window, with "minus infinity".
    let (th, tw) = (stride * (oh + (kernel - 1) / stride + 1), stride * (ow + (kernel - 1) / stride + 1));
    let padded = pad_with(x, padding, th - h - padding, padding, tw - w - padding, NEG)?;
    // (N, C, TH/s, s, TW/s, s): window offset k lands at block k / s, phase k % s.
    let blocks = padded.reshape((n, c, th / stride, stride, tw / stride, stride))?;
    let mut out: Option<Tensor> = None;
    for ki in 0..kernel {
        let rows = blocks.narrow(2, ki / stride, oh)?.narrow(3, ki % stride, 1)?;
        for kj in 0..kernel {
            let v = rows.narrow(4, kj / stride, ow)?.narrow(5, kj % stride, 1)?;
            out = Some(match out {
                None => v,
                Some(m) => m.maximum(&v)?,
            });
        }
    }
    out.expect("kernel is at least 1").reshape((n, c, oh, ow))
}

/// Pads the last two dimensions with a constant.
fn pad_with(x: &Tensor, top: usize, bottom: usize, left: usize, right: usize, value: f32) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    // Made in f32 on the device and cast only for an f64 (CPU) input.
    let fill = |rows: usize, cols: usize| Tensor::full(value, (n, c, rows, cols), x.device())?.to_dtype(x.dtype());
    let mut parts = Vec::new();
    if top > 0 {
        parts.push(fill(top, w)?);
    }
    parts.push(x.clone());
    if bottom > 0 {
        parts.push(fill(bottom, w)?);
    }
    let hh = h + top + bottom;
    let mut cols = Vec::new();
    if left > 0 {
        cols.push(fill(hh, left)?);
    }
    cols.push(Tensor::cat(&parts, 2)?);
    if right > 0 {
        cols.push(fill(hh, right)?);
    }
    Tensor::cat(&cols, 3)
}

/// `nn.AdaptiveAvgPool2d((oh, ow))`: output cell i covers input rows
/// floor(i * h / oh) .. ceil((i + 1) * h / oh), as PyTorch computes them.
pub fn adaptive_avg_pool2d(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let x = adaptive_avg_pool_dim(x, 2, oh)?;
    adaptive_avg_pool_dim(&x, 3, ow)
}

fn adaptive_avg_pool_dim(x: &Tensor, dim: usize, out: usize) -> Result<Tensor> {
    let size = x.dim(dim)?;
    if size == out {
        return Ok(x.clone());
    }
    if size % out == 0 {
        let mut shape = x.dims().to_vec();
        shape[dim] = out;
        shape.insert(dim + 1, size / out);
        return x.reshape(shape)?.mean(dim + 1);
    }
    let cells = (0..out)
        .map(|i| {
            let start = i * size / out;
            let end = ((i + 1) * size).div_ceil(out);
            x.narrow(dim, start, end - start)?.mean_keepdim(dim)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&cells, dim)
}

/// Global average pooling to an (N, C) matrix. bf16 storage (autocast training's last feature
/// map) is averaged in f32, as autocast accumulates; the cast's backward pass hands the feature
/// map a bf16 gradient.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let x = if crate::kernels::stored_bf16(x) { x.to_dtype(candle_core::DType::F32)? } else { x.clone() };
    x.mean(D::Minus1)?.mean(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A direct loop over windows, the definition of max pooling.
    fn naive(x: &[f32], h: usize, w: usize, k: usize, s: usize, p: usize) -> Vec<f32> {
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut out = vec![f32::NEG_INFINITY; oh * ow];
        for i in 0..oh {
            for j in 0..ow {
                for a in 0..k {
                    for b in 0..k {
                        let (r, c) = ((i * s + a) as isize - p as isize, (j * s + b) as isize - p as isize);
                        if r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w {
                            out[i * ow + j] = out[i * ow + j].max(x[r as usize * w + c as usize]);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn strided_max_pool_matches_definition() {
        for &(h, w, k, s, p) in &[(9, 9, 3, 2, 1), (8, 11, 3, 2, 1), (13, 13, 3, 2, 0), (7, 6, 3, 2, 0)] {
            let data: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
            let x = Tensor::from_vec(data.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
            for pool in [max_pool2d, max_pool2d_strided] {
                let got = pool(&x, k, s, p).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(got, naive(&data, h, w, k, s, p), "{h}x{w} k{k} s{s} p{p}");
            }
        }
    }

    #[test]
    fn a_nan_wins_its_windows_only() {
        // As PyTorch: a NaN input makes every window holding it NaN, and no other.
        let mut data: Vec<f32> = (0..36).map(|i| i as f32).collect();
        data[2 * 6 + 2] = f32::NAN;
        let x = Tensor::from_vec(data, (1, 1, 6, 6), &Device::Cpu).unwrap();
        let got = max_pool2d(&x, 3, 2, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Output (i, j) covers rows 2i-1..=2i+1 and columns 2j-1..=2j+1: input (2, 2) lies in
        // output (1, 1)'s window only.
        for (o, v) in got.iter().enumerate() {
            assert_eq!(v.is_nan(), o == 3 + 1, "output {o}: {v}");
        }
        assert_eq!(got[0], 7.0);
        assert_eq!(got[8], 35.0);
    }

    #[test]
    fn max_pool_has_a_gradient() {
        for pool in [max_pool2d, max_pool2d_strided] {
            let x =
                candle_core::Var::from_vec((0..25).map(|i| i as f32).collect::<Vec<_>>(), (1, 1, 5, 5), &Device::Cpu)
                    .unwrap();
            let y = pool(x.as_tensor(), 3, 2, 1).unwrap().sum_all().unwrap();
            let g = y.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // Windows' maxima are at (1,1),(1,3),(1,4),(3,1),(3,3),(3,4),(4,1),(4,3),(4,4).
            assert_eq!(g.iter().sum::<f32>(), 9.0);
            assert_eq!(g[24], 1.0);
            assert_eq!(g[0], 0.0);
            // 2x2 stride 2 (where candle's own pool gives 1/4): each window passes a gradient of 1.
            let x =
                candle_core::Var::from_vec((0..16).map(|i| i as f32).collect::<Vec<_>>(), (1, 1, 4, 4), &Device::Cpu)
                    .unwrap();
            let y = pool(x.as_tensor(), 2, 2, 0).unwrap().sum_all().unwrap();
            let g = y.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(g.iter().sum::<f32>(), 4.0);
            assert_eq!((g[5], g[7], g[13], g[15]), (1.0, 1.0, 1.0, 1.0));
        }
    }

    #[test]
    fn adaptive_pool_uses_pytorch_windows() {
        // 5 -> 3: windows [0,2), [1,4), [3,5).
        let x = Tensor::from_vec((0..5).map(|i| i as f32).collect::<Vec<_>>(), (1, 1, 1, 5), &Device::Cpu).unwrap();
        let y = adaptive_avg_pool2d(&x, 1, 3).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y, vec![0.5, 2.0, 3.5]);
        // 1 -> 7 replicates.
        let x = Tensor::ones((1, 2, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(adaptive_avg_pool2d(&x, 7, 7).unwrap().dims(), &[1, 2, 7, 7]);
    }
}
