use super::*;

/// Deterministic values in [-1, 1), most of them not bf16 values (rounding matters), shared by the
/// convolution paths' bit-equality tests.
pub(super) fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0 + 1e-4 * (i % 7) as f32).collect()
}

/// The definition, one output at a time, in f64.
fn naive(g: &ConvGeom, x: &[f64], w: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; g.n * g.c_out * g.oh * g.ow];
    for b in 0..g.n {
        for o in 0..g.c_out {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = 0.0;
                    for c in 0..g.c_in {
                        for ki in 0..g.k {
                            for kj in 0..g.k {
                                let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xi = ((b * g.c_in + c) * g.h + iy as usize) * g.w + ix as usize;
                                acc += x[xi] * w[((o * g.c_in + c) * g.k + ki) * g.k + kj];
                            }
                        }
                    }
                    y[((b * g.c_out + o) * g.oh + oy) * g.ow + ox] = acc;
                }
            }
        }
    }
    y
}

fn data(len: usize, seed: usize) -> Vec<f64> {
    (0..len).map(|i| (((i * 7919 + seed * 104729) % 2003) as f64 / 1001.0) - 1.0).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// n, c_in, h, w, c_out, k, stride, pad
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
const CASES: [Case; 8] = [
    (2, 3, 9, 11, 4, 3, 1, 1),
    (3, 2, 10, 9, 5, 3, 2, 1),
    (1, 3, 15, 13, 2, 7, 2, 3),
    (2, 6, 5, 5, 7, 1, 1, 0),
    (2, 4, 7, 8, 3, 1, 2, 0),
    (1, 2, 12, 12, 3, 11, 4, 2),
    // Batch 1 on maps of several bands (13 and 4), output channels split between threads.
    (1, 64, 64, 64, 2, 3, 1, 1),
    (1, 256, 48, 48, 3, 1, 1, 0),
];

#[test]
fn forward_matches_the_definition() {
    for &(n, c, h, w, o, k, s, p) in &CASES {
        let g = ConvGeom::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
        let (x, wt) = (data(n * c * h * w, 1), data(o * c * k * k, 2));
        let got = forward(&g, &x, &wt, Prepared::None, None);
        let want = naive(&g, &x, &wt);
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-12, "{g:?}: max error {err}");
    }
}

/// The gradients are the adjoints of the forward map: <dY, conv(X, W)> is linear in X and in
/// W, so <dW, W'> and <dX, X'> must equal <dY, conv(X, W')> and <dY, conv(X', W)>.
#[test]
fn gradients_are_the_adjoints_of_the_forward_pass() {
    for &(n, c, h, w, o, k, s, p) in &CASES {
        let g = ConvGeom::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
        let (x, wt) = (data(n * c * h * w, 3), data(o * c * k * k, 4));
        let dy = data(n * o * g.oh * g.ow, 5);
        let (x2, w2) = (data(x.len(), 6), data(wt.len(), 7));
        let dw = weight_grad(&g, &x, &dy);
        let dx = input_grad(&g, &wt, &dy);
        let lhs_w = dot(&dw, &w2);
        let rhs_w = dot(&dy, &naive(&g, &x, &w2));
        assert!((lhs_w - rhs_w).abs() < 1e-9 * rhs_w.abs().max(1.0), "{g:?}: dW {lhs_w} vs {rhs_w}");
        let lhs_x = dot(&dx, &x2);
        let rhs_x = dot(&dy, &naive(&g, &x2, &wt));
        assert!((lhs_x - rhs_x).abs() < 1e-9 * rhs_x.abs().max(1.0), "{g:?}: dX {lhs_x} vs {rhs_x}");
    }
}

/// F(2x2, 3x3) against the definition: odd and even maps (a last tile row or column half
/// outside), fewer images than threads with their output channels split between the threads
/// (small maps) or their tile rows (from 28 x 28: a task's rows in one band or several, three
/// threads for one image and two for two), and maps of several bands of tiles.
#[test]
fn winograd_matches_the_definition() {
    let cases = [
        (2, 3, 9, 11, 4),
        (1, 5, 7, 7, 6),
        (3, 2, 1, 1, 3),
        (1, 2, 2, 5, 1),
        (2, 64, 70, 66, 5),
        (1, 6, 29, 31, 5),
        (1, 64, 70, 66, 5),
        (2, 3, 28, 28, 7),
    ];
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for (n, c, h, w, o) in cases {
            let g = ConvGeom::new(&[n, c, h, w], &[o, c, 3, 3], 1, 1).unwrap();
            let (x, wt) = (data(n * c * h * w, 11), data(o * c * 9, 12));
            let u = super::super::winograd::transform_weights(o, c, &wt);
            let got = pool.install(|| forward(&g, &x, &wt, Prepared::Winograd(&u), None));
            let want = naive(&g, &x, &wt);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12, "{g:?} on {threads} threads: max error {err}");
        }
    }
}

/// In f32 the transforms' extra additions cost a little accuracy; this bounds it at twice the
/// direct method's error against the exact (f64) result, on a layer of ResNet-50's last stage.
#[test]
fn winograd_in_f32_is_about_as_accurate_as_the_direct_method() {
    let (c, h, o) = (512, 7, 16);
    let g = ConvGeom::new(&[1, c, h, h], &[o, c, 3, 3], 1, 1).unwrap();
    let (x, wt) = (data(c * h * h, 13), data(o * c * 9, 14));
    let exact = naive(&g, &x, &wt);
    let (x32, w32): (Vec<f32>, Vec<f32>) =
        (x.iter().map(|&v| v as f32).collect(), wt.iter().map(|&v| v as f32).collect());
    let u = super::super::winograd::transform_weights(o, c, &w32);
    let err = |y: Vec<f32>| y.iter().zip(&exact).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    let direct = err(forward(&g, &x32, &w32, Prepared::None, None));
    let winograd = err(forward(&g, &x32, &w32, Prepared::Winograd(&u), None));
    let scale = exact.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
    assert!(winograd < 2.0 * direct.max(1e-7 * scale), "winograd {winograd:e}, direct {direct:e}, scale {scale}");
}

#[test]
fn epilogue_applies_scale_shift_residual_and_relu() {
    // Batch 1 splits the output channels between threads (3 = 2 + 1 here), batch 2 does not;
    // the 40 x 40 map takes five bands.
    for (n, c, h) in [(1, 2, 4), (2, 2, 4), (1, 64, 40)] {
        let g = ConvGeom::new(&[n, c, h, h], &[3, c, 3, 3], 1, 1).unwrap();
        let p = h * h;
        let (x, wt) = (data(n * c * p, 8), data(27 * c, 9));
        let r = data(n * 3 * p, 10);
        let (scale, shift) = ([2.0, -1.0, 0.5], [0.1, 0.2, -0.3]);
        let e = Epilogue { scale: &scale, shift: &shift, residual: Some(&r), relu: true, rounding: Bf16Rounding::None };
        let got = forward(&g, &x, &wt, Prepared::None, Some(&e));
        let plain = naive(&g, &x, &wt);
        for (i, (got, y)) in got.iter().zip(&plain).enumerate() {
            let c = (i / p) % 3;
            assert!((got - (y * scale[c] + shift[c] + r[i]).max(0.0)).abs() < 1e-12, "n {n}, output {i}");
        }
    }
}

#[test]
fn bad_shapes_are_named() {
    let e = ConvGeom::new(&[1, 3, 8, 8], &[4, 2, 3, 3], 1, 1).unwrap_err().to_string();
    assert!(e.contains("does not fit"), "{e}");
    let e = ConvGeom::new(&[1, 3, 2, 2], &[4, 3, 7, 7], 1, 1).unwrap_err().to_string();
    assert!(e.contains("smaller than the 7x7 kernel"), "{e}");
}

/// Every band of the column buffer holds the definition's input value for each tap and output
/// pixel, zero outside the image, whatever the buffer held before: stride 1 with and without
/// padding (the fast path copies whole bands and zeroes the edges after), padding wider than
/// the kernel's reach, strides 2 and 3, single-row and single-column maps.
#[test]
fn columns_hold_each_taps_input_or_zero() {
    // c_in, h, w, k, stride, pad
    let cases = [
        (2, 6, 7, 3, 1, 1),
        (3, 5, 5, 3, 1, 0),
        (1, 7, 4, 5, 1, 2),
        (2, 4, 6, 3, 1, 2),
        (1, 1, 9, 3, 1, 1),
        (1, 8, 1, 3, 1, 1),
        (2, 9, 8, 1, 1, 0),
        (1, 9, 11, 7, 2, 3),
        (2, 7, 6, 3, 2, 1),
        (1, 10, 10, 3, 3, 1),
    ];
    for (c, h, w, k, s, p) in cases {
        let g = ConvGeom::new(&[1, c, h, w], &[1, c, k, k], s, p).unwrap();
        let x: Vec<f32> = data(c * h * w, 4).iter().map(|&v| v as f32 + 2.0).collect();
        for r0 in 0..g.oh {
            for rows in 1..=g.oh - r0 {
                let band = rows * g.ow;
                let mut cols = vec![f32::NAN; g.ckk() * band];
                im2col(&g, &x, r0, rows, &mut cols);
                for (q, row) in cols.chunks_exact(band).enumerate() {
                    let (ch, ki, kj) = (q / (k * k), q / k % k, q % k);
                    for (i, &got) in row.iter().enumerate() {
                        let (oy, ox) = (r0 + i / g.ow, i % g.ow);
                        let iy = (oy * s + ki) as isize - p as isize;
                        let ix = (ox * s + kj) as isize - p as isize;
                        let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                        let want = if inside { x[(ch * h + iy as usize) * w + ix as usize] } else { 0.0 };
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{g:?} rows {r0}+{rows}: tap {q}, pixel ({oy}, {ox})"
                        );
                    }
                }
            }
        }
    }
}

/// The weight an input gradient by Winograd's method runs with: turned half a circle, its
/// channels swapped (written by the pool's threads, one new output channel each).
#[test]
fn turned_and_swapped_turns_each_kernel_and_swaps_the_channels() {
    let (c_out, c_in) = (5, 3);
    let w: Vec<f64> = (0..c_out * c_in * 9).map(|i| i as f64).collect();
    let t = turned_and_swapped(&w, c_out, c_in);
    for o in 0..c_out {
        for c in 0..c_in {
            for i in 0..3 {
                for j in 0..3 {
                    assert_eq!(t[((c * c_out + o) * 3 + i) * 3 + j], w[((o * c_in + c) * 3 + 2 - i) * 3 + 2 - j]);
                }
            }
        }
    }
    assert!(turned_and_swapped::<f64>(&[], 0, 4).is_empty() && turned_and_swapped::<f64>(&[], 4, 0).is_empty());
}
