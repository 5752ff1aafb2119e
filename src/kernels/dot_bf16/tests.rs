use super::*;

/// Values on the bf16 grid, of both signs and several magnitudes.
fn bf16_values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let v = (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0) * (1 + i % 3) as f32;
            super::super::bf16::round(v)
        })
        .collect()
}

/// The product in f64 (exact for these sizes), and the sum of the products' magnitudes per
/// element: f32 accumulation may differ from it by a few ulps of that sum.
fn reference(a: &MatRef<f32>, b: &MatRef<f32>, r: usize, c: usize) -> (f64, f64) {
    (0..a.cols).fold((0.0, 0.0), |(s, m), i| {
        let p = a.data[r * a.rs + i * a.cs] as f64 * b.data[i * b.rs + c * b.cs] as f64;
        (s + p, m + p.abs())
    })
}

fn check(m: usize, n: usize, k: usize, transposed_rhs: bool, accumulate: bool, parallel: bool) {
    // Rows 2..2 + m of a taller operand: the row range is honoured.
    let a_data = bf16_values((m + 3) * k, 1);
    let a = MatRef::rows(&a_data, m + 3, k);
    let b_data = bf16_values(k * n, 2);
    let b = if transposed_rhs { MatRef::transposed(&b_data, k, n) } else { MatRef::rows(&b_data, k, n) };
    let ld = n + 5;
    let start = bf16_values(m * ld, 3);
    let mut dst: Vec<MaybeUninit<f32>> = start.iter().map(|&v| MaybeUninit::new(v)).collect();
    let packed = PackedLhs::new(a);
    matmul_into(&mut dst, ld, accumulate, &packed, 2..2 + m, b, parallel);
    for r in 0..m {
        for c in 0..ld {
            // SAFETY: every element was initialised above.
            let got = unsafe { dst[r * ld + c].assume_init() };
            if c >= n {
                assert_eq!(got, start[r * ld + c], "column {c} beyond the product was written");
                continue;
            }
            let (want, scale) = reference(&a, &b, r + 2, c);
            let want = want + if accumulate { start[r * ld + c] as f64 } else { 0.0 };
            let tol = 4.0 * f32::EPSILON as f64 * (scale + start[r * ld + c].abs() as f64) + 1e-30;
            assert!(
                (got as f64 - want).abs() <= tol,
                "{m}x{k} by {k}x{n} (transposed {transposed_rhs}, accumulate {accumulate}): [{r}][{c}] {got} vs {want}"
            );
        }
    }
}

#[test]
fn products_match_exact_arithmetic_at_every_edge() {
    for (m, n, k) in [(1, 1, 1), (5, 15, 2), (6, 16, 3), (7, 63, 17), (13, 64, 64), (6, 65, 1), (12, 130, 33)] {
        for transposed in [false, true] {
            for accumulate in [false, true] {
                for parallel in [false, true] {
                    check(m, n, k, transposed, accumulate, parallel);
                }
            }
        }
    }
}

#[test]
fn the_vector_kernel_gives_the_portable_kernels_sums() {
    // Where the CPU has AVX512-BF16 the vector kernel runs above; here both run on one block.
    let (k, cols) = (37, 50);
    let a_data = bf16_values(MR * k, 4);
    let b_data = bf16_values(k * cols, 5);
    let packed = PackedLhs::new(MatRef::rows(&a_data, MR, k));
    let mut panel = Vec::new();
    pack_panel(&MatRef::rows(&b_data, k, cols), 0, cols, &mut panel);
    let (mut vector, mut portable) = (vec![0.0f32; MR * NR], vec![0.0f32; MR * NR]);
    let block = |c: &mut Vec<f32>| Block {
        a: &packed.pairs,
        lda: MR,
        row: 0,
        b: &panel,
        c: c.as_mut_ptr(),
        ldc: NR,
        cols,
        accumulate: false,
    };
    block(&mut vector).run(MR, vector_kernel());
    block(&mut portable).portable(MR, k.div_ceil(2));
    for (i, (v, p)) in vector.iter().zip(&portable).enumerate() {
        assert!((v - p).abs() <= 1e-5 * p.abs().max(1.0), "[{}][{}]: {v} vs {p}", i / NR, i % NR);
    }
}

#[test]
fn a_mismatched_inner_dimension_is_refused() {
    let a = vec![0.0f32; 6];
    let packed = PackedLhs::new(MatRef::rows(&a, 2, 3));
    let b = vec![0.0f32; 8];
    let mut dst = vec![MaybeUninit::new(0.0f32); 8];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        matmul_into(&mut dst, 4, false, &packed, 0..2, MatRef::rows(&b, 2, 4), false)
    }));
    assert!(r.is_err());
}

#[test]
fn convolutions_on_the_dot_kernel_give_the_f32_kernels_results() {
    // Forward, weight and input gradients of 3x3 (strides 1 and 2, with band edges), 1x1 and
    // 7x7/2 convolutions, on bf16 values: the two paths may differ only by f32 summation order.
    use crate::kernels::conv::{ConvGeom, forward, input_grad, weight_grad};
    for (c_in, hw, c_out, k, stride, pad) in
        [(19, 23, 13, 3, 1, 1), (16, 17, 70, 3, 2, 1), (33, 9, 66, 1, 1, 0), (3, 29, 8, 7, 2, 3)]
    {
        let n = 3;
        let x = bf16_values(n * c_in * hw * hw, 11);
        let w = bf16_values(c_out * c_in * k * k, 12);
        let mut g = ConvGeom::new(&[n, c_in, hw, hw], &[c_out, c_in, k, k], stride, pad).unwrap();
        let dy = bf16_values(n * c_out * g.oh * g.ow, 13);
        let f32_path = (forward(&g, &x, &w, None, None), weight_grad(&g, &x, &dy), input_grad(&g, &w, &dy));
        g.bf16_dot = true;
        let dot_path = (forward(&g, &x, &w, None, None), weight_grad(&g, &x, &dy), input_grad(&g, &w, &dy));
        for (what, a, b) in [
            ("forward", &f32_path.0, &dot_path.0),
            ("weight grad", &f32_path.1, &dot_path.1),
            ("input grad", &f32_path.2, &dot_path.2),
        ] {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "{k}x{k}/{stride} {c_in}->{c_out}: {what} differs by {diff:e} of {scale:e}");
        }
    }
}
