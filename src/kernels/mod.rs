//! CPU kernels for the layers where candle's generic CPU backend is slow: convolution (forward
//! and both gradients as matrix products), batch norm (fused training forward and backward,
//! fused evaluation epilogue) and max pooling (argmax backward).
//!
//! candle 0.11.1 computes a convolution's input gradient with `conv_transpose2d`, whose CPU
//! kernel is a scalar dot-product loop (12-24 GFLOP/s against ~60 for a matrix product here),
//! builds im2col buffers for the whole batch at once, and runs element-wise ops on one thread,
//! each into a fresh allocation. No crate offers CPU convolution gradients on candle tensors, so
//! these kernels are written here, as candle custom ops, over the `gemm` crate candle itself uses
//! for matrix products. Every kernel is checked against PyTorch by `tests/parity.rs` (values and
//! the gradient of every parameter, in f64) and against a direct definition in its unit tests.
//!
//! Only CPU storages are handled; the layers in `crate::model` keep candle's own ops on CUDA
//! and Metal.
pub mod batch_norm;
pub mod bf16;
pub mod blocked;
pub mod conv;
pub mod conv_op;
pub mod dot_bf16;
pub mod gemv;
pub mod head;
pub mod isa;
pub mod linear;
pub mod pool;
pub mod team;
pub(crate) mod window;
pub mod winograd;

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// A value the kernels' buffers hold: their float types, and bf16 for the activations bf16
/// autocast training keeps in bf16 storage (which the convolutions' column buffers copy as they
/// are, see `conv::stored`).
pub trait Element: Copy + Send + Sync + 'static {
    const ZERO: Self;

    /// Runs `f` with this thread's scratch buffer (its length is whatever the last user left).
    /// The column buffers are rebuilt for every layer; keeping one per thread saves a memset of
    /// a fresh buffer each time (7 % of a batch-1 forward in `perf`).
    fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R;
}

/// The float types the kernels run in: f32 for use, f64 for the gradient parity tests.
pub trait Float: Element + WithDType + num_traits::Float + Send + Sync + 'static {}

thread_local! {
    static SCRATCH_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_BF16: RefCell<Vec<half::bf16>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's value of `key`, kept between calls (scratch buffers).
pub(crate) fn with_local<T: Default, R>(
    key: &'static std::thread::LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        // Re-entered on this thread (work stealing): a value of its own.
        Err(_) => f(&mut T::default()),
    })
}

impl Element for f32 {
    const ZERO: Self = 0.0;

    fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        with_local(&SCRATCH_F32, f)
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;

    fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        with_local(&SCRATCH_F64, f)
    }
}

impl Element for half::bf16 {
    const ZERO: Self = half::bf16::ZERO;

    fn with_scratch<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        with_local(&SCRATCH_BF16, f)
    }
}

impl Float for f32 {}

impl Float for f64 {}

/// The contiguous slice of a CPU storage, or an error naming the op.
pub(crate) fn contiguous_slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input, got strides {:?}", l.stride()),
    }
}

/// Runs `f` on the contiguous CPU data of `t` (made contiguous first if it is not).
pub(crate) fn with_slice<T: WithDType, R>(t: &Tensor, op: &str, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(contiguous_slice::<T>(s, layout, op)?)),
        _ => candle_core::bail!("{op}: the CPU kernel was given a tensor on {:?}", t.device().location()),
    }
}

/// A CPU tensor from a vector, on `like`'s device.
pub(crate) fn tensor_from<T: WithDType>(data: Vec<T>, shape: &[usize], like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(data, shape, like.device())
}

/// Whether the CPU stands in for a GPU (`ARTCULTURE_CPU_AS_DEVICE=1`, see `model::device`):
/// then these kernels stand aside and candle's generic ops run, as on a GPU. Read once.
pub fn cpu_as_device() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("ARTCULTURE_CPU_AS_DEVICE").is_some_and(|v| v == "1"))
}

/// Whether a tensor can go through these kernels: on the CPU, in f32 or f64.
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64) && !cpu_as_device()
}

/// Whether `t` is an activation that bf16 autocast training keeps in bf16 storage on the CPU
/// (see `bf16`): the training ops of ResNet's path (convolution, batch norm, max pooling) take
/// it as it is.
pub fn stored_bf16(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::BF16 && !cpu_as_device()
}

/// Whether the CPU training ops of ResNet's path (convolution, batch norm, max pooling) take
/// `t`: an f32 or f64 CPU tensor ([`applies`]) or a bf16-stored activation ([`stored_bf16`]).
pub fn applies_in_training(t: &Tensor) -> bool {
    applies(t) || stored_bf16(t)
}

/// Dispatches on the storage's float type.
macro_rules! dispatch_float {
    ($storage:expr, $op:expr, |$t:ident| $body:expr) => {
        match $storage {
            candle_core::CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            candle_core::CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            other => candle_core::bail!(
                "{}: unsupported dtype {:?} (f32 or f64 only)",
                $op,
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}
pub(crate) use dispatch_float;

/// A matrix view into a slice: `rows x cols` with row stride `rs` and column stride `cs`.
/// Construction checks that every element lies inside the slice, which is what makes the
/// `gemm` call in [`matmul`] sound.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    pub fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(), "matrix view out of bounds");
        Self { data, rows, cols, rs, cs }
    }

    /// Row-major `rows x cols`.
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose of a row-major `cols x rows` matrix, without copying.
    pub fn transposed(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, 1, rows)
    }
}

/// `dst (m x n, row stride dst_rs) = [dst +] lhs x rhs`.
pub(crate) fn matmul<T: Float>(
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    par: Parallelism,
) {
    // SAFETY: viewing initialised values as possibly-uninitialised ones is sound; only valid
    // values are written through the view.
    let dst = unsafe { &mut *(dst as *mut [T] as *mut [MaybeUninit<T>]) };
    matmul_into(dst, dst_rs, accumulate, lhs, rhs, par)
}

/// `dst = lhs x rhs` into memory that may be uninitialised: every element of the `m x n` view
/// (row stride `dst_rs`) is written. With `accumulate`, `dst` must be initialised.
pub(crate) fn matmul_into<T: Float>(
    dst: &mut [MaybeUninit<T>],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    par: Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len() && n <= dst_rs, "matmul: destination out of bounds");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..][..n].fill(MaybeUninit::new(T::zero()));
            }
        }
        return;
    }
    // SAFETY: the three views were bounds-checked above and in `MatRef::new`; `dst` is borrowed
    // mutably, so it does not alias `lhs` or `rhs`. Without `accumulate`, gemm does not read
    // `dst` (read_dst false) and writes every element of the view.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr() as *mut T,
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { T::one() } else { T::zero() },
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// How to spread `n` independent images over the threads: one image per task when there are at
/// least as many images as threads (each matrix product single-threaded, so the two levels do
/// not oversubscribe), otherwise one image at a time with multi-threaded matrix products.
pub(crate) fn per_image<T: Send>(out: &mut [T], n: usize, f: impl Fn(usize, &mut [T], Parallelism) + Sync + Send) {
    if n == 0 {
        return;
    }
    let chunk = out.len() / n;
    let threads = rayon::current_num_threads();
    if threads > 1 && n >= threads {
        out.par_chunks_mut(chunk).enumerate().for_each(|(b, o)| f(b, o, Parallelism::None));
    } else {
        let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        out.chunks_mut(chunk).enumerate().for_each(|(b, o)| f(b, o, par));
    }
}

/// Runs `f(channel, image)` for every channel of an NCHW tensor, in parallel over channels.
/// Returns one value per channel.
pub(crate) fn per_channel<R: Send>(c: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    (0..c).into_par_iter().map(f).collect()
}
