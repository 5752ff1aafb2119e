use super::*;
use rand::{Rng, SeedableRng};

/// `n` values drawn uniformly from `[-scale, scale]`.
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// The definition, in f64: `relu?(scale * conv(x, w) + shift + residual?)` for one image.
#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f32],
    [c_in, h, w]: [usize; 3],
    wt: &[f32],
    [c_out, k, stride, pad]: [usize; 4],
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    let mut out = vec![0.0; c_out * oh * ow];
    for co in 0..c_out {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0.0f64;
                for ci in 0..c_in {
                    for kh in 0..k {
                        for kw in 0..k {
                            let (iy, ix) = (
                                (oy * stride + kh) as isize - pad as isize,
                                (ox * stride + kw) as isize - pad as isize,
                            );
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let xv = x[(ci * h + iy as usize) * w + ix as usize] as f64;
                                s += xv * wt[((co * c_in + ci) * k + kh) * k + kw] as f64;
                            }
                        }
                    }
                }
                let i = (co * oh + oy) * ow + ox;
                let mut v = s * scale[co] as f64 + shift[co] as f64 + residual.map_or(0.0, |r| r[i] as f64);
                if relu {
                    v = v.max(0.0);
                }
                out[i] = v as f32;
            }
        }
    }
    out
}

/// Every tile shape the engine picks (14 pixels of a row, 7 of two rows; strides 1 and 2; RGB
/// input; a map read as one row; tails of rows and maps; borders read and written) against the
/// definition, on one thread and shared between threads (by channels, and by pixels on large
/// maps); 3x3 stride-1 layers by Winograd's methods (F(4x4, 3x3) up to 128 input channels,
/// F(2x2, 3x3) above), shared by blocks or by channels.
#[test]
fn blocked_convolutions_match_the_definition() {
    if !available() {
        eprintln!("skipped: the blocked layout needs AVX-512 (this CPU runs {:?})", isa::active());
        return;
    }
    // (c_in, h, w, c_out, k, stride, pad, input border, output border)
    let cases = [
        (32, 9, 9, 64, 1, 1, 0, 0, 0),    // one row of 81 pixels: 5 tiles of 14 + a tail of 11
        (16, 15, 17, 32, 1, 1, 0, 0, 1),  // rows of 17 into a bordered map
        (32, 12, 12, 64, 1, 2, 0, 0, 0),  // downsample: rows of 6, 7-pixel tiles
        (32, 28, 28, 32, 1, 2, 0, 0, 0),  // downsample: rows of 14
        (16, 14, 14, 32, 3, 1, 1, 1, 0),  // 3x3 from a bordered map
        (32, 7, 7, 64, 3, 1, 1, 1, 0),    // 7-wide rows
        (16, 15, 15, 32, 3, 2, 1, 1, 0),  // 3x3 stride 2, odd size
        (16, 30, 30, 32, 3, 2, 1, 2, 0),  // input border wider than the padding
        (3, 37, 35, 64, 7, 2, 3, 3, 1),   // the stem: RGB, into a bordered map
        (16, 30, 28, 32, 3, 1, 1, 1, 1),  // 840 pixels: shared between threads by pixels
        (16, 28, 29, 64, 1, 1, 0, 0, 0),  // and as one row
        (32, 15, 17, 64, 3, 1, 1, 2, 0),  // F(4x4, 3x3)'s blocks past an odd map's edge
        (144, 14, 14, 64, 3, 1, 1, 1, 1), // F(2x2, 3x3), shared by blocks, into a bordered map
        (160, 9, 11, 32, 3, 1, 1, 2, 0),  // F(2x2, 3x3)'s blocks past an odd map's edge
        (24, 10, 12, 32, 3, 1, 1, 1, 0),  // 3x3 stride 1 direct: channels not in 16s
    ];
    for (i, &(c_in, h, w, c_out, k, stride, pad, xpad, opad)) in cases.iter().enumerate() {
        let seed = 100 + i as u64;
        let x = values(seed, c_in * h * w, 1.0);
        let wt = values(seed + 1, c_out * c_in * k * k, 1.0 / ((c_in * k * k) as f32).sqrt());
        let scale: Vec<f32> = values(seed + 2, c_out, 0.5).iter().map(|v| 1.0 + v).collect();
        let shift = values(seed + 3, c_out, 0.5);
        let conv = BlockedConv::new(&wt, [c_out, c_in, k], stride, pad, &scale, &shift).unwrap();
        let (oh, ow) = conv.out_size(h, w);
        let res = values(seed + 4, c_out * oh * ow, 1.0);
        let mut xm = Map::default();
        xm.load_chw(&x, c_in, h, w, xpad);
        for (residual, relu, parallel) in
            [(false, false, false), (true, true, true), (false, true, true), (true, false, false)]
        {
            let mut out = Map::default();
            if residual {
                out.load_chw(&res, c_out, oh, ow, opad);
            } else {
                out.reshape(c_out, oh, ow, opad);
            }
            // Shared: a team of two, as one image runs; otherwise on the calling thread.
            pool(2).install(|| {
                if parallel {
                    crate::kernels::team::with_team(|team| conv.forward(&xm, &mut out, residual, relu, team))
                } else {
                    conv.forward(&xm, &mut out, residual, relu, crate::kernels::team::Team::solo())
                }
            });
            let mut got = vec![0.0; c_out * oh * ow];
            out.store_chw(&mut got);
            let want = reference(
                &x,
                [c_in, h, w],
                &wt,
                [c_out, k, stride, pad],
                &scale,
                &shift,
                residual.then_some(&res[..]),
                relu,
            );
            let bound = 1e-5 * ((c_in * k * k) as f32).sqrt();
            for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= bound * (1.0 + e.abs()),
                    "case {i} (residual {residual}, relu {relu}): output {j}: {g} vs {e}"
                );
            }
            if opad > 0 {
                assert!(out.data[..(out.w + 2 * opad) * c_out].iter().all(|&v| v == 0.0), "case {i}: border written");
            }
        }
    }
}

#[test]
fn max_pooling_from_a_bordered_map_matches_the_definition() {
    if !available() {
        return;
    }
    for (h, w) in [(8, 8), (7, 9), (112, 112)] {
        let c = 32;
        let x: Vec<f32> = values(7, c * h * w, 1.0).iter().map(|v| v.max(0.0)).collect();
        let mut xm = Map::default();
        xm.load_chw(&x, c, h, w, 1);
        let mut ym = Map::default();
        ym.max_pool_3x3s2_from(&xm);
        let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        assert_eq!((ym.h, ym.w), (oh, ow));
        let mut got = vec![0.0; c * oh * ow];
        ym.store_chw(&mut got);
        for ch in 0..c {
            for y in 0..oh {
                for xx in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for iy in (2 * y).saturating_sub(1)..(2 * y + 2).min(h) {
                        for ix in (2 * xx).saturating_sub(1)..(2 * xx + 2).min(w) {
                            m = m.max(x[(ch * h + iy) * w + ix]);
                        }
                    }
                    assert_eq!(got[(ch * oh + y) * ow + xx], m, "{h}x{w}: channel {ch} at {y},{xx}");
                }
            }
        }
    }
}

#[test]
fn shapes_the_tiles_cannot_hold_are_refused_by_name() {
    let w = vec![0.0; 48 * 16];
    let err = BlockedConv::new(&w, [48, 16, 1], 1, 0, &[1.0; 48], &[0.0; 48]).unwrap_err();
    assert!(err.to_string().contains("48x16x1x1"), "{err}");
    let w = vec![0.0; 32 * 16 * 9];
    assert!(BlockedConv::new(&w, [32, 16, 3], 3, 1, &[1.0; 32], &[0.0; 32]).is_err());
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}
