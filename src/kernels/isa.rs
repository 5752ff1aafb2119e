//! Which vector instructions the kernels use, chosen at run time: one binary runs AVX-512 code
//! on CPUs that have it, AVX2 + FMA code on the others, and plain x86-64 (SSE2) or NEON code
//! otherwise. `gemm` (built with its `x86-v4` feature) makes the same choice for the matrix
//! products; our own loops (batch norm, SGD, pooling glue) run under [`with_isa`].
//!
//! The choice can be lowered, never raised: `ARTCULTURE_ISA=avx2` (or `baseline`) makes an
//! AVX-512 machine run the AVX2 path, which is how the parity tests check every path the machine
//! can run. Our loops accumulate in explicit lanes and never fuse a multiply and an add, so every
//! path gives the same bits (the tests check that too); `gemm`'s own choice follows the CPU only.
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// What every CPU of the target has: SSE2 on x86-64, NEON on aarch64.
    Baseline,
    /// x86-64-v3: AVX2 and FMA.
    Avx2,
    /// x86-64-v4: AVX-512 F, BW, CD, DQ and VL.
    Avx512,
}

impl Isa {
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Baseline if cfg!(target_arch = "aarch64") => "neon",
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    pub fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "baseline" | "sse2" | "neon" => Some(Isa::Baseline),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx-512" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// What this CPU can run.
pub fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl") {
            return Isa::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// 0: not chosen yet; else 1 + the Isa's index.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

fn encode(isa: Isa) -> u8 {
    1 + isa as u8
}

fn decode(v: u8) -> Isa {
    match v {
        3 => Isa::Avx512,
        2 => Isa::Avx2,
        _ => Isa::Baseline,
    }
}

/// The ISA our loops use: the CPU's, lowered by `ARTCULTURE_ISA` or [`set_max`].
pub fn active() -> Isa {
    match ACTIVE.load(Ordering::Relaxed) {
        0 => {
            let wanted = std::env::var("ARTCULTURE_ISA").ok().and_then(|v| Isa::parse(&v));
            let isa = wanted.map_or(detected(), |w| w.min(detected()));
            ACTIVE.store(encode(isa), Ordering::Relaxed);
            isa
        }
        v => decode(v),
    }
}

/// Lowers the ISA for the rest of the process (tests run every path this way); a level above
/// what the CPU has becomes the CPU's. Returns the one now active.
pub fn set_max(isa: Isa) -> Isa {
    let isa = isa.min(detected());
    ACTIVE.store(encode(isa), Ordering::Relaxed);
    isa
}

/// The kernel set `gemm` picked for f32 matrix products on this CPU (its own run-time choice).
pub fn gemm_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        // Only where the build has them (see build.rs).
        #[cfg(gemm_x86_v4)]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "fma";
        }
        "scalar"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// The CPU's model name, as the OS reports it ("unknown" where it does not).
pub fn cpu_model() -> String {
    let from_proc = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    #[cfg(target_os = "macos")]
    let from_proc = from_proc.or_else(|| {
        let out = std::process::Command::new("sysctl").args(["-n", "machdep.cpu.brand_string"]).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    from_proc.filter(|s| !s.is_empty()).unwrap_or_else(|| "unknown".into())
}

/// Runs `f` compiled for the active ISA. `f` and what it calls must be `#[inline(always)]` (or
/// small enough to inline) for the wider instructions to reach its loops; call it once per plane
/// or slice, not per element.
#[inline(always)]
pub fn with_isa<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match active() {
            // SAFETY: `active()` never exceeds `detected()`, so the CPU has these features.
            Isa::Avx512 => return unsafe { avx512(f) },
            Isa::Avx2 => return unsafe { avx2(f) },
            Isa::Baseline => {}
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_a_request_above_the_cpu_is_lowered_to_it() {
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::parse(isa.as_str()), Some(isa));
        }
        assert_eq!(Isa::parse("avx1024"), None);
        assert!(detected() >= Isa::Baseline);
        assert_eq!(with_isa(|| 2 + 2), 4);
        assert!(!cpu_model().is_empty());
    }
}
