//! Register-only multiply-add loops (16 independent accumulators, no memory traffic): the rate
//! one core sustains for f32 FMA and for the bf16 dot product `vdpbf16ps`. `bench isa_peak`
//! prints them; [`super::enabled`] runs them briefly to decide whether bf16 products run on
//! `vdpbf16ps` on this CPU.
#![cfg(target_arch = "x86_64")]
// The loops index the accumulators, the form measured in BENCHMARKS.md (codegen of these loops
// decides the figure, so it stays as measured).
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;
use std::time::Instant;

/// 16 chains of `_mm512_fmadd_ps`: 16 x 16 lanes x 2 flops per iteration. The operands pass
/// through `black_box`, or the compiler folds `x * 1 + b` into an add.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub fn fma512(n: usize) -> f32 {
    // Distinct starting values: sixteen equal chains were merged and shuffled between registers.
    let mut acc: [__m512; 16] = std::array::from_fn(|j| _mm512_set1_ps(j as f32));
    let (a, b) = (_mm512_set1_ps(std::hint::black_box(0.999_999)), _mm512_set1_ps(std::hint::black_box(1e-9)));
    for _ in 0..n {
        for j in 0..16 {
            acc[j] = _mm512_fmadd_ps(acc[j], a, b);
        }
    }
    acc.iter().fold(0.0, |s, v| s + _mm512_reduce_add_ps(*v))
}

/// 16 chains of `_mm512_dpbf16_ps`: 16 x 16 lanes x 2 pairs x 2 flops per iteration.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub fn dpbf16(n: usize) -> f32 {
    let mut acc: [__m512; 16] = std::array::from_fn(|j| _mm512_set1_ps(j as f32));
    let v = _mm512_set1_ps(std::hint::black_box(1e-9));
    let one = _mm512_cvtne2ps_pbh(v, v);
    for _ in 0..n {
        for j in 0..16 {
            acc[j] = _mm512_dpbf16_ps(acc[j], one, one);
        }
    }
    acc.iter().fold(0.0, |s, v| s + _mm512_reduce_add_ps(*v))
}

/// GFLOP/s (a multiply-add counts 2) of `f`, which does `flops` per call, best of `tries`.
pub fn rate(flops: f64, tries: usize, f: impl Fn() -> f32) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..tries {
        let t = Instant::now();
        std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    flops / best / 1e9
}

/// (f32 FMA, `vdpbf16ps`) GFLOP/s of one core over `iters` iterations each, best of `tries`.
/// The caller checks that the CPU has AVX-512F and AVX512-BF16.
pub fn rates(iters: usize, tries: usize) -> (f64, f64) {
    // SAFETY: the caller checked the CPU features (see above).
    let fma = rate((iters * 16 * 16 * 2) as f64, tries, || unsafe { fma512(iters) });
    let dot = rate((iters * 16 * 16 * 4) as f64, tries, || unsafe { dpbf16(iters) });
    (fma, dot)
}
