use super::*;

/// Values on the bf16 grid, of both signs and several magnitudes.
pub(super) fn bf16_values(len: usize, seed: usize) -> Vec<f32> {
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
    matmul_into(&mut dst, ld, accumulate, &packed, 2..2 + m, b, parallel, false);
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
fn products_with_lanes_along_the_columns_land_transposed() {
    // Pixel counts of 1, 7 x 7 and 14 x 14 maps and ragged ones; column ranges starting on a
    // panel, the last one ragged.
    for (m, n, k, cols) in [(1, 64, 3, 0..64), (49, 128, 37, 64..128), (196, 130, 64, 0..130), (13, 200, 2, 128..200)] {
        let a_data = bf16_values(k * m, 6);
        // The pixels' columns: the transpose of a `k x m` column buffer.
        let a = MatRef::transposed(&a_data, m, k);
        let b_data = bf16_values(n * k, 7);
        // The weights: the transpose of an `n x k` weight matrix.
        let b = MatRef::transposed(&b_data, k, n);
        let ld = m + 3;
        let mut dst = vec![MaybeUninit::new(f32::NAN); cols.len() * ld];
        matmul_lanes_into(&mut dst, ld, &PackedLhs::new(a), &PackedRhs::new(b), cols.clone());
        for (j, c) in cols.clone().enumerate() {
            for r in 0..ld {
                // SAFETY: every element was initialised above.
                let got = unsafe { dst[j * ld + r].assume_init() };
                if r >= m {
                    assert!(got.is_nan(), "[{j}][{r}] beyond the product was written");
                    continue;
                }
                let (want, scale) = reference(&a, &b, r, c);
                let tol = 4.0 * f32::EPSILON as f64 * scale + 1e-30;
                assert!((got as f64 - want).abs() <= tol, "{m}x{k} by {k}x{n}, {cols:?}: [{c}][{r}] {got} vs {want}");
            }
        }
    }
}

#[test]
fn rounding_while_packing_gives_the_products_of_the_rounded_values() {
    // Evaluation hands the kernel activations that may not be bf16 values yet: packing them
    // with rounding must give exactly the product of the rounded values.
    let (m, n, k) = (7, 70, 19);
    let off_grid = |len: usize, seed: usize| -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 1001.3 - 1.0).collect()
    };
    let rounded = |v: &[f32]| v.iter().map(|&x| super::super::bf16::round(x)).collect::<Vec<_>>();
    let (a_raw, b_raw) = (off_grid(m * k, 1), off_grid(k * n, 2));
    let (a_bf16, b_bf16) = (rounded(&a_raw), rounded(&b_raw));
    assert!(a_raw.iter().zip(&a_bf16).filter(|(a, b)| a != b).count() > m * k / 2);
    // SAFETY: every element is initialised (to 0 before the product).
    let bits = |v: Vec<MaybeUninit<f32>>| v.iter().map(|x| unsafe { x.assume_init() }.to_bits()).collect::<Vec<_>>();
    fn view(d: &[f32], rows: usize, cols: usize, transposed: bool) -> MatRef<'_, f32> {
        if transposed { MatRef::transposed(d, rows, cols) } else { MatRef::rows(d, rows, cols) }
    }
    for transposed in [false, true] {
        let view = |d, rows, cols| view(d, rows, cols, transposed);
        let (a_raw, b_raw, a_bf16, b_bf16) = (&a_raw[..], &b_raw[..], &a_bf16[..], &b_bf16[..]);
        let mut got = vec![MaybeUninit::new(0f32); m * n];
        let lhs = PackedLhs::new_in(view(a_raw, m, k), Vec::new(), true);
        matmul_into(&mut got, n, false, &lhs, 0..m, view(b_raw, k, n), false, true);
        let mut want = vec![MaybeUninit::new(0f32); m * n];
        matmul_into(&mut want, n, false, &PackedLhs::new(view(a_bf16, m, k)), 0..m, view(b_bf16, k, n), false, false);
        assert_eq!(bits(got), bits(want), "transposed operands: {transposed}");
        // The products with the output along the lanes pack their left operand the same way.
        let mut got = vec![MaybeUninit::new(0f32); m * n];
        matmul_lanes_into(&mut got, m, &lhs, &PackedRhs::new(view(b_bf16, k, n)), 0..n);
        let mut want = vec![MaybeUninit::new(0f32); m * n];
        let exact = PackedLhs::new(view(a_bf16, m, k));
        matmul_lanes_into(&mut want, m, &exact, &PackedRhs::new(view(b_bf16, k, n)), 0..n);
        assert_eq!(bits(got), bits(want), "lanes, transposed operands: {transposed}");
    }
}

#[test]
fn a_transposed_panel_is_packed_pair_by_pair() {
    // 35 pairs (two blocks of 16 for the register transpose where the CPU has it, then 3 under
    // a mask) of 50 columns (three groups of 16, then 2, the rest zero), from 7 columns in.
    let (k, n, j0, cols) = (70, 60, 7, 50);
    let data = bf16_values(k * n, 9);
    let b = MatRef::transposed(&data, k, n);
    // A reused buffer's old values: the columns beyond `cols` must come out zero.
    let mut panel = vec![u32::MAX; k.div_ceil(2) * NR];
    pack_panel::<false, _>(&b, j0, cols, &mut panel);
    assert_eq!(panel.len(), k / 2 * NR);
    for p in 0..k / 2 {
        for c in 0..NR {
            let want = if c < cols {
                let (lo, hi) = (data[(j0 + c) * k + 2 * p], data[(j0 + c) * k + 2 * p + 1]);
                lo.to_bits() >> 16 | hi.to_bits() & 0xffff_0000
            } else {
                0
            };
            assert_eq!(panel[p * NR + c], want, "pair {p} of column {c}");
        }
    }
}

/// Rounding while packing a transposed panel and a left operand with contiguous rows (f32
/// weights, rounded per training step) gives `round_bits` of every value: ties to even either
/// way, values that carry into the exponent, infinities and NaNs (quieted), in whole blocks of
/// sixteen pairs and the masked remainder.
#[test]
fn rounding_while_packing_rounds_every_value_as_round_bits_does() {
    let specials = [
        f32::from_bits(0x3f80_8000), // a tie, to the even value below
        f32::from_bits(0x3f81_8000), // a tie, to the even value above
        f32::from_bits(0x3f80_8001),
        f32::from_bits(0x7f7f_ffff), // the largest f32: carries to infinity
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7f80_0001), // a signalling NaN
        f32::from_bits(0xffc0_1234),
        -0.0,
        f32::from_bits(0x0000_8000), // a subnormal tie
    ];
    let (k, n) = (70, 37);
    let data: Vec<f32> = (0..k * n)
        .map(|i| if i % 7 == 3 { specials[i / 7 % specials.len()] } else { (i as f32 * 0.7311).sin() * 3.0 })
        .collect();
    let bits = |v: f32| super::super::bf16::round_bits(v.to_bits());
    let want = |lo: f32, hi: f32| bits(lo) >> 16 | bits(hi) & 0xffff_0000;
    let b = MatRef::transposed(&data, k, n);
    let mut panel = vec![0; k.div_ceil(2) * NR];
    pack_panel::<true, _>(&b, 0, NR.min(n), &mut panel);
    for p in 0..k / 2 {
        for c in 0..NR.min(n) {
            let (lo, hi) = (data[c * k + 2 * p], data[c * k + 2 * p + 1]);
            assert_eq!(panel[p * NR + c], want(lo, hi), "panel: pair {p} of column {c} ({lo:e}, {hi:e})");
        }
    }
    let (m, rs) = (32, k);
    let lhs = PackedLhs::new_in(MatRef::new(&data, m, k, rs, 1), Vec::new(), true);
    for p in 0..k / 2 {
        for r in 0..m {
            let (lo, hi) = (data[r * rs + 2 * p], data[r * rs + 2 * p + 1]);
            assert_eq!(lhs.pairs[p * m + r], want(lo, hi), "left operand: pair {p} of row {r} ({lo:e}, {hi:e})");
        }
    }
}

/// A left operand with its rows contiguous, from f32 and from bf16 storage: 37 rows (two
/// blocks of 16 for the register transpose where the CPU has it, then 5 one pair at a time) of
/// 71 values (35 whole pairs: two blocks of 16, then 3 under a mask, then the odd value and a
/// zero), each row 80 values apart; the last row ends where the data does, so that a read past
/// its values would leave the slice.
#[test]
fn a_left_operand_is_packed_pair_by_pair_from_either_storage() {
    let (m, k, rs) = (37, 71, 80);
    let data = bf16_values((m - 1) * rs + k, 11);
    let narrow = super::super::bf16::narrowed(&data);
    let from_f32 = PackedLhs::new(MatRef::new(&data, m, k, rs, 1));
    let from_bf16 = PackedLhs::new(MatRef::new(&narrow, m, k, rs, 1));
    for p in 0..k.div_ceil(2) {
        for r in 0..m {
            let hi = if 2 * p + 1 < k { data[r * rs + 2 * p + 1].to_bits() } else { 0 };
            let want = data[r * rs + 2 * p].to_bits() >> 16 | hi & 0xffff_0000;
            assert_eq!(from_f32.pairs[p * m + r], want, "pair {p} of row {r} from f32");
            assert_eq!(from_bf16.pairs[p * m + r], want, "pair {p} of row {r} from bf16");
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
    let mut panel = vec![0; k.div_ceil(2) * NR];
    pack_panel::<false, _>(&MatRef::rows(&b_data, k, cols), 0, cols, &mut panel);
    let (mut vector, mut portable) = (vec![0.0f32; MR * NR], vec![0.0f32; MR * NR]);
    let block = |c: &mut Vec<f32>| Block {
        a: &packed.pairs,
        lda: MR,
        ldr: 1,
        row: 0,
        b: &panel,
        c: c.as_mut_ptr(),
        ldc: NR,
        cols,
        accumulate: false,
        transposed: false,
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
        matmul_into(&mut dst, 4, false, &packed, 0..2, MatRef::rows(&b, 2, 4), false, false)
    }));
    assert!(r.is_err());
}

#[test]
fn convolutions_on_the_dot_kernel_give_the_f32_kernels_results() {
    // Forward, weight and input gradients of 3x3 (strides 1 and 2, with band edges), 1x1 and
    // 7x7/2 convolutions, on bf16 values: the two paths may differ only by f32 summation order.
    // The last four put the output (or, backward, the input) channels along the lanes: 7 x 7
    // maps, 64 channels per task; at batch 1 the two threads take 64 channels each.
    use crate::kernels::conv::{ConvGeom, Prepared, forward, input_grad, lanes, weight_grad};
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for (n, c_in, hw, c_out, k, stride, pad, along_channels) in [
        (3, 19, 23, 13, 3, 1, 1, false),
        (3, 16, 17, 70, 3, 2, 1, false),
        (3, 33, 9, 66, 1, 1, 0, false),
        (3, 3, 29, 8, 7, 2, 3, false),
        (3, 64, 7, 128, 1, 1, 0, true),
        (2, 64, 14, 64, 3, 2, 1, true),
        (2, 128, 7, 64, 3, 1, 1, true),
        (1, 64, 7, 128, 1, 1, 0, true),
    ] {
        let x = bf16_values(n * c_in * hw * hw, 11);
        let w = bf16_values(c_out * c_in * k * k, 12);
        let mut g = ConvGeom::new(&[n, c_in, hw, hw], &[c_out, c_in, k, k], stride, pad).unwrap();
        let dy = bf16_values(n * c_out * g.oh * g.ow, 13);
        let paths = |g: &ConvGeom| {
            pool.install(|| (forward(g, &x, &w, Prepared::None, None), weight_grad(g, &x, &dy), input_grad(g, &w, &dy)))
        };
        let f32_path = paths(&g);
        g.bf16_dot = true;
        // On AMX tiles the output channels never run along the lanes.
        assert_eq!(pool.install(|| lanes(&g)), along_channels && !on_tiles(), "{g:?}");
        let dot_path = paths(&g);
        for (what, a, b) in [
            ("forward", &f32_path.0, &dot_path.0),
            ("weight grad", &f32_path.1, &dot_path.1),
            ("input grad", &f32_path.2, &dot_path.2),
        ] {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "{g:?}: {what} differs by {diff:e} of {scale:e}");
        }
    }
}

/// A weight large enough to be packed by every thread (from outside the pool, as a layer packs
/// it) comes out as packed by one thread (inside a pool task), in both layouts and for a row
/// length that leaves a lone last value.
#[test]
fn packing_shared_between_threads_gives_the_same_pairs() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for (m, k) in [(300, 501), (260, 640)] {
        let data = bf16_values(m * k, 11);
        for a in [MatRef::rows(&data, m, k), MatRef::transposed(&data, m, k)] {
            assert!(k.div_ceil(2) * m >= 1 << 16, "the case must be large enough to be shared");
            let shared = PackedLhs::new_in(a, vec![7; 3], true);
            let alone = pool.install(|| PackedLhs::new_in(a, Vec::new(), true));
            assert!(shared.pairs == alone.pairs, "{m} x {k}, row stride {}", a.rs);
        }
        let b = MatRef::rows(&data, k, m);
        let shared = PackedRhs::new_rounding(b, true);
        let alone = pool.install(|| PackedRhs::new_rounding(b, true));
        assert!(shared.pairs == alone.pairs, "{k} x {m} panels");
    }
}
