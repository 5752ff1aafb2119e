//! `artculture bench isa_peak`: the multiply-add rate one core sustains in a register-only loop
//! (16 independent accumulators, no memory traffic), for f32 FMA and, where the CPU has
//! AVX512-BF16, the bf16 dot product `vdpbf16ps` (two multiply-adds per f32 lane), and AMX
//! tiles (`tdpbf16ps`, 8,192 multiply-adds each) where the CPU has AMX-BF16. This is the
//! measurement behind the bf16 design in `kernels::bf16` and `kernels::dot_bf16`: on tiles
//! where the CPU has them; else where `vdpbf16ps` retires fewer multiply-adds than f32 FMA,
//! bf16 values multiplied by the f32 kernels are the faster path; where it retires more, bf16
//! products run on it.
#[cfg(target_arch = "x86_64")]
use artculture::kernels::dot_bf16::peak;

const ITERS: usize = 20_000_000;

pub fn isa_peak() -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::json!({ "workload": "isa_peak", "what": "GFLOP/s of one core, register-only loops" });
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            v["f32_fma_avx512"] = peak::rate((ITERS * 16 * 16 * 2) as f64, 3, || unsafe { peak::fma512(ITERS) }).into();
        }
        if has!("avx512f") && has!("avx512bf16") {
            // SAFETY: the CPU has AVX-512F and AVX512-BF16 (checked above).
            v["bf16_dp_avx512"] = peak::rate((ITERS * 16 * 16 * 4) as f64, 3, || unsafe { peak::dpbf16(ITERS) }).into();
        } else {
            v["bf16_dp_avx512"] = "this CPU has no AVX512-BF16".into();
        }
        use artculture::kernels::dot_bf16::amx;
        if amx::enabled() {
            let flops = (ITERS / 16 * amx::PEAK_FLOPS_PER_ITER) as f64;
            v["bf16_amx_tiles"] = peak::rate(flops, 3, || amx::peak(ITERS / 16).unwrap_or(0.0)).into();
        } else {
            v["bf16_amx_tiles"] = "this CPU has no AMX-BF16 (or the OS does not grant it)".into();
        }
    }
    Ok(v)
}
