//! `artculture bench isa_peak`: the multiply-add rate one core sustains in a register-only loop
//! (16 independent accumulators, no memory traffic), for f32 FMA and, where the CPU has
//! AVX512-BF16, the bf16 dot product `vdpbf16ps` (two multiply-adds per f32 lane). This is the
//! measurement behind the bf16 design in `kernels::bf16`: where `vdpbf16ps` retires fewer
//! multiply-adds than f32 FMA, bf16 values multiplied by the f32 kernels are the faster path.
use std::time::Instant;

const ITERS: usize = 20_000_000;

/// GFLOP/s (a multiply-add counts 2) of `f`, which does `flops` per call, best of 3.
fn rate(flops: f64, f: impl Fn() -> f32) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    flops / best / 1e9
}

#[cfg(target_arch = "x86_64")]
// The loops index the accumulators, the form measured in BENCHMARKS.md (codegen of these loops
// decides the figure, so it stays as measured).
#[allow(clippy::needless_range_loop)]
mod x86 {
    use std::arch::x86_64::*;

    /// 16 chains of `_mm512_fmadd_ps`: 16 x 16 lanes x 2 flops per iteration. The operands
    /// pass through `black_box`, or the compiler folds `x * 1 + b` into an add.
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
}

pub fn isa_peak() -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::json!({ "workload": "isa_peak", "what": "GFLOP/s of one core, register-only loops" });
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            v["f32_fma_avx512"] = rate((ITERS * 16 * 16 * 2) as f64, || unsafe { x86::fma512(ITERS) }).into();
        }
        if has!("avx512f") && has!("avx512bf16") {
            // SAFETY: the CPU has AVX-512F and AVX512-BF16 (checked above).
            v["bf16_dp_avx512"] = rate((ITERS * 16 * 16 * 4) as f64, || unsafe { x86::dpbf16(ITERS) }).into();
        } else {
            v["bf16_dp_avx512"] = "this CPU has no AVX512-BF16".into();
        }
    }
    Ok(v)
}
