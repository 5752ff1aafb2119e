//! Rounding f32 values to bfloat16's precision, in place: the one primitive our bf16 autocast
//! (`crate::model::autocast`) is built from.
//!
//! A bf16 value is the top 16 bits of an f32 (8 exponent bits, 7 mantissa bits), so a tensor
//! rounded to bf16 can stay in f32 storage and go through the f32 kernels unchanged: the
//! product of two bf16 values is exact in f32 (8 + 8 significant bits < 24), so an f32 matrix
//! product of rounded operands is a bf16 matrix product with f32 accumulation, which is what
//! PyTorch's CPU autocast (oneDNN) computes. Why not `vdpbf16ps` (AVX512-BF16): on the Xeon this
//! was written on (Emerald Rapids, no AMX) it retires 0.45x the multiply-adds of f32 FMA
//! (a register-only loop, 24 accumulators: 80 against 182 GFLOP/s on one core), and PyTorch's
//! own bf16 matrix products ran at 0.6x its f32 ones; see BENCHMARKS.md.
//!
//! Training keeps its activations (the tensors the backward pass reads) in bf16 storage instead:
//! half the memory of a step, as autocast's bf16 tensors take. [`narrowed`] and [`widened`] move
//! values between the two storages exactly (a rounded f32 and its bf16 are the same number).
//!
//! Rounding is to nearest, ties to even, as `c10::BFloat16` and `half::bf16::from_f32` do;
//! NaN stays NaN (quieted), infinities stay, values above bf16's largest round to infinity.
//! Integer operations only, so every ISA path gives the same bits.
use half::bf16;
use rayon::prelude::*;

/// `x` rounded to the nearest bf16 value (ties to even), as f32 bits.
#[inline(always)]
pub fn round_bits(b: u32) -> u32 {
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
    let quiet_nan = (b | 0x0040_0000) & 0xffff_0000;
    if b & 0x7fff_ffff > 0x7f80_0000 { quiet_nan } else { rounded }
}

/// `x` rounded to the nearest bf16 value, as an f32.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    f32::from_bits(round_bits(x.to_bits()))
}

/// Chunks of this many values are rounded by one task: below it, one thread does it all.
const CHUNK: usize = 1 << 16;

/// Rounds every value of `v` to bf16 precision, in place (in parallel for large slices).
pub fn round_slice(v: &mut [f32]) {
    let one = |c: &mut [f32]| {
        super::isa::with_isa(
            #[inline(always)]
            || c.iter_mut().for_each(|x| *x = round(*x)),
        )
    };
    if v.len() <= CHUNK {
        one(v);
    } else {
        v.par_chunks_mut(CHUNK).for_each(one);
    }
}

/// Whether every value of `v` is a bf16 value already (its low 16 bits zero), so that rounding
/// would change nothing: a read-only pass, where rounding writes a new tensor.
pub fn all_rounded(v: &[f32]) -> bool {
    let scan = |c: &[f32]| {
        super::isa::with_isa(
            #[inline(always)]
            || c.iter().fold(0u32, |acc, x| acc | (x.to_bits() & 0xffff)) == 0,
        )
    };
    if v.len() <= CHUNK { scan(v) } else { v.par_chunks(CHUNK).all(scan) }
}

/// `x` rounded to the nearest bf16 value, as a bf16: `half::bf16::from_f32`'s result, but
/// branch-free integer operations that vectorise (and the same bits on every ISA path).
#[inline(always)]
pub fn to_bf16(x: f32) -> bf16 {
    bf16::from_bits((round_bits(x.to_bits()) >> 16) as u16)
}

/// `x` as an f32 (exact).
#[inline(always)]
pub fn to_f32(x: bf16) -> f32 {
    f32::from_bits((x.to_bits() as u32) << 16)
}

/// `v` rounded to bf16, in bf16 storage (half the bytes).
pub fn narrowed(v: &[f32]) -> Vec<bf16> {
    convert(v, to_bf16)
}

/// `v` in f32 storage, for the f32 kernels (exact).
pub fn widened(v: &[bf16]) -> Vec<f32> {
    convert(v, to_f32)
}

/// `v` mapped by `f` into a new vector, in chunks over the threads under [`with_isa`], written
/// without zeroing first.
fn convert<A: Copy + Sync, B: Copy + Send>(v: &[A], f: impl Fn(A) -> B + Sync) -> Vec<B> {
    let mut out: Vec<B> = Vec::with_capacity(v.len());
    let one = |(o, v): (&mut [std::mem::MaybeUninit<B>], &[A])| {
        super::isa::with_isa(
            #[inline(always)]
            || o.iter_mut().zip(v).for_each(|(o, &v)| _ = o.write(f(v))),
        )
    };
    let spare = &mut out.spare_capacity_mut()[..v.len()];
    if v.len() <= CHUNK {
        one((spare, v));
    } else {
        spare.par_chunks_mut(CHUNK).zip(v.par_chunks(CHUNK)).for_each(one);
    }
    // SAFETY: the chunks above cover the first `v.len()` elements and wrote each of them.
    unsafe { out.set_len(v.len()) };
    out
}

/// `v` rounded to bf16 precision, as a new vector: one pass, where a copy rounded in place
/// was two (the copy was 11 % of a bf16 transfer epoch in `perf`, for the head's weights).
pub fn rounded(v: &[f32]) -> Vec<f32> {
    convert(v, round)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's `torch.tensor(x).to(torch.bfloat16).float()` for these inputs (torch 2.15).
    #[test]
    fn rounds_to_nearest_even_as_pytorch_does() {
        let cases: [(f32, f32); 10] = [
            (1.0, 1.0),
            // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
            (1.0 + 1.0 / 256.0, 1.0),
            // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to even, 1 + 2^-6.
            (1.0 + 3.0 / 256.0, 1.0 + 1.0 / 64.0),
            (1.0 + 1.0 / 256.0 + 1.0 / 65536.0, 1.0 + 1.0 / 128.0),
            (-std::f32::consts::E, -2.71875),
            (std::f32::consts::PI, 3.140625),
            (1e-40, f32::from_bits(0x0001_0000)), // 9.18355e-41
            (f32::MAX, f32::INFINITY),
            (f32::NEG_INFINITY, f32::NEG_INFINITY),
            (0.0, 0.0),
        ];
        for (x, want) in cases {
            assert_eq!(round(x), want, "{x:e}");
        }
        assert!(round(f32::NAN).is_nan());
        assert!(round(f32::from_bits(0x7f80_0001)).is_nan(), "a signalling NaN with low bits only stays NaN");
        assert_eq!(round(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn narrowing_rounds_as_half_does_and_widening_is_exact() {
        let v: Vec<f32> = (0..2 * CHUNK + 9)
            .map(|i| ((i as f32) * 0.377).cos() * 1e4 / (1 + i % 89) as f32)
            .chain([f32::NAN, f32::INFINITY, -0.0, f32::MAX, 1e-40, 1.0 + 1.0 / 256.0])
            .collect();
        let n = narrowed(&v);
        let w = widened(&n);
        for ((x, b), y) in v.iter().zip(&n).zip(&w) {
            assert_eq!(b.to_bits(), bf16::from_f32(*x).to_bits(), "{x:e}");
            assert_eq!(y.to_bits(), round(*x).to_bits(), "{x:e}");
        }
    }

    #[test]
    fn a_slice_of_bf16_values_is_recognised() {
        let mut v: Vec<f32> = (0..2 * CHUNK + 5).map(|i| i as f32 * 0.001).collect();
        assert!(!all_rounded(&v));
        round_slice(&mut v);
        assert!(all_rounded(&v));
        v[CHUNK + 3] = 0.1;
        assert!(!all_rounded(&v), "one value off the bf16 grid");
    }

    #[test]
    fn rounding_is_idempotent_and_the_parallel_path_agrees_with_the_scalar_one() {
        let v: Vec<f32> =
            (0..3 * CHUNK + 17).map(|i| ((i as f32) * 0.618034).sin() * 1e3 / (1 + i % 97) as f32).collect();
        let r = rounded(&v);
        for (a, b) in v.iter().zip(&r) {
            assert_eq!(round(*a).to_bits(), b.to_bits());
            assert_eq!(round(*b).to_bits(), b.to_bits());
            assert_eq!(b.to_bits() & 0xffff, 0);
            assert!((a - b).abs() <= a.abs() / 256.0, "{a} -> {b}: more than half a bf16 ulp");
        }
    }

    /// candle's bf16 addition (our vendored loop, which a training step's backward pass uses to
    /// add the gradients of residual connections) rounds each f32 sum as `half` does: ties to
    /// even, NaN stays NaN, overflow to infinity, on the vector loop and its tail alike.
    #[test]
    fn candle_bf16_addition_rounds_each_sum_to_nearest_even() {
        let values: Vec<f32> = (0..1000)
            .map(|i| ((i as f32) * 0.731).sin() * 10f32.powi(i % 9 - 4))
            .chain([1.0, 1.0 / 256.0, 3.0 / 256.0, f32::MAX, f32::NAN, f32::INFINITY, -0.0, 1e-40, 0.0])
            .map(|v| bf16::from_f32(v).to_f32())
            .collect();
        let other: Vec<f32> = values.iter().rev().copied().collect();
        let t = |v: &[f32]| candle_core::Tensor::new(v, &candle_core::Device::Cpu)?.to_dtype(candle_core::DType::BF16);
        let sum = (t(&values).unwrap() + t(&other).unwrap()).unwrap().to_vec1::<bf16>().unwrap();
        for ((a, b), s) in values.iter().zip(&other).zip(&sum) {
            let want = bf16::from_f32(a + b);
            assert!(want.to_bits() == s.to_bits() || (want.is_nan() && s.is_nan()), "{a:e} + {b:e}: {s} not {want}");
        }
        // 1 + 2^-8 lies halfway between 1 and the next bf16 (ties to even: 1), 1 + 3 * 2^-8
        // halfway between 1 + 2^-7 and 1 + 2^-6 (to even: 1 + 2^-6).
        let ties = (t(&[1.0, 1.0]).unwrap() + t(&[1.0 / 256.0, 3.0 / 256.0]).unwrap()).unwrap();
        assert_eq!(ties.to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap(), [1.0, 1.0 + 1.0 / 64.0]);
    }
}
