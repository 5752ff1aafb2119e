//! bf16 autocast: PyTorch's `torch.autocast("cpu", dtype=torch.bfloat16)` semantics for our
//! layers.
//!
//! Inside an [`Autocast`] scope, convolutions and linear layers take their f32 input, weight and
//! bias rounded to bf16, accumulate in f32 and hand on a bf16 output; batch norm works in f32 on
//! that bf16 input and hands on bf16; the loss, softmax and the optimiser stay in f32 on f32
//! master weights, and checkpoints hold f32. A gradient flowing back through a bf16 tensor is
//! bf16 too, so [`round`]'s backward pass rounds the gradient: the weight gradient a step sees
//! is the bf16 one, as under autocast.
//!
//! Values rounded to bf16 stay in f32 tensors (see `kernels::bf16` for why the f32 kernels then
//! compute bf16 products exactly). The scope is per thread, like PyTorch's: the thread that runs
//! a forward pass decides; the kernels' worker threads only compute.
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use std::cell::Cell;

/// The precision a model computes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 throughout (the default: see the README's "Precision" section).
    #[default]
    F32,
    /// PyTorch's bf16 autocast.
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Option<Precision> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(Precision::F32),
            "bf16" | "bfloat16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

thread_local! {
    static BF16: Cell<bool> = const { Cell::new(false) };
}

/// While alive, this thread's forward passes run in `precision`; dropping it restores the
/// previous setting (scopes nest).
#[must_use = "autocast ends when the guard is dropped"]
pub struct Autocast {
    previous: bool,
}

impl Autocast {
    pub fn new(precision: Precision) -> Self {
        let previous = BF16.with(|c| c.replace(precision == Precision::Bf16));
        Self { previous }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        BF16.with(|c| c.set(self.previous));
    }
}

/// Whether this thread is inside a bf16 [`Autocast`] scope.
pub fn bf16() -> bool {
    BF16.with(Cell::get)
}

/// Runs `f` on one of rayon's worker threads, this thread's autocast setting with it, while
/// this thread waits (directly where this thread is a worker already).
///
/// Why: every kernel of a forward pass shares its work between the pool's threads. Called from
/// a thread outside the pool (the CLI's main thread, the app's background jobs), each of a
/// pass's ~60 parallel ops is handed to the pool and its caller put to sleep until the pool
/// wakes it again; from a worker, the op runs on the calling thread and the pool's other
/// threads join it. `bench forward1`, six alternating rounds: median 48.5 -> 46.6 ms.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let precision = if bf16() { Precision::Bf16 } else { Precision::F32 };
    rayon::join(
        move || {
            let _scope = Autocast::new(precision);
            f()
        },
        || (),
    )
    .0
}

/// `t` rounded to bf16 inside a bf16 scope (f32 tensors only, as autocast casts only f32), `t`
/// itself otherwise. Differentiable: the gradient is rounded the same way.
pub fn cast(t: &Tensor) -> Result<Tensor> {
    if !bf16() {
        return Ok(t.clone());
    }
    // In evaluation most inputs are the previous layer's bf16 output: checking costs a read,
    // rounding a new tensor. With a gradient to track the op stays, for its backward rounding.
    if t.dtype() == DType::F32
        && !t.track_op()
        && crate::kernels::applies(t)
        && t.is_contiguous()
        && crate::kernels::with_slice::<f32, _>(t, "bf16 check", crate::kernels::bf16::all_rounded)?
    {
        return Ok(t.clone());
    }
    round(t)
}

/// `t` rounded to bf16 precision (nearest, ties to even), kept in f32; its gradient is rounded
/// too. Tensors of other dtypes pass through, as autocast leaves them.
pub fn round(t: &Tensor) -> Result<Tensor> {
    if t.dtype() != DType::F32 {
        return Ok(t.clone());
    }
    if crate::kernels::applies(t) {
        return t.apply_op1(RoundBf16);
    }
    // GPUs (and the CPU standing in for one): candle's casts round to nearest even, and the
    // cast's backward pass casts the gradient through bf16 as well.
    t.to_dtype(DType::BF16)?.to_dtype(DType::F32)
}

/// The CPU op behind [`round`].
struct RoundBf16;

impl CustomOp1 for RoundBf16 {
    fn name(&self) -> &'static str {
        "round to bf16"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = crate::kernels::contiguous_slice::<f32>(s, l, "round to bf16")
            .or_else(|_| candle_core::bail!("round to bf16: expected a contiguous f32 input"))?;
        Ok((CpuStorage::F32(crate::kernels::bf16::rounded(x)), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(round(&grad.contiguous()?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn the_scope_rounds_values_and_gradients_and_ends_with_its_guard() {
        let x =
            Var::from_vec(vec![1.0f32 + 1.0 / 256.0 + 1.0 / 65536.0, std::f32::consts::PI], 2, &Device::Cpu).unwrap();
        assert_eq!(cast(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), x.as_tensor().to_vec1::<f32>().unwrap());
        let y = {
            let _bf16 = Autocast::new(Precision::Bf16);
            assert!(bf16());
            {
                let _f32 = Autocast::new(Precision::F32);
                assert!(!bf16(), "an inner f32 scope");
            }
            assert!(bf16(), "the outer scope is back");
            cast(x.as_tensor()).unwrap()
        };
        assert!(!bf16());
        assert_eq!(y.to_vec1::<f32>().unwrap(), [1.0078125, 3.140625]);
        // d(sum(y * c))/dx = c rounded to bf16.
        let c = Tensor::new(&[0.1f32, 1.0 + 1.0 / 256.0], &Device::Cpu).unwrap();
        let grads = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, [crate::kernels::bf16::round(0.1), 1.0]);
    }

    #[test]
    fn work_handed_to_a_worker_keeps_the_callers_precision() {
        let on = || on_worker(|| (rayon::current_thread_index().is_some(), bf16()));
        assert_eq!(on(), (true, false));
        {
            let _bf16 = Autocast::new(Precision::Bf16);
            assert_eq!(on(), (true, true), "a bf16 scope travels with the work");
        }
        assert!(!bf16());
        // The worker's own setting is its scope's alone: nothing stays behind on the pool.
        assert_eq!(on(), (true, false));
    }

    #[test]
    fn names_parse_back() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(Precision::parse(p.as_str()), Some(p));
        }
        assert_eq!(Precision::parse("fp8"), None);
    }
}
