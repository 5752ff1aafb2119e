//! `x Wᵀ` for a few rows of `x` (evaluation of one image, or a handful): a matrix-vector product
//! that reads each row of `W` once, the rows split between every core.
//!
//! At batch 1 a linear layer is bound by reading its weights: VGG-16's classifier is 470 MB,
//! AlexNet's 220 MB, read once per image. `gemm` treats the product as a general one with one
//! column and ran it on one core; here every core streams its own share of the rows and computes
//! the (at most [`MAX_ROWS`]) dot products of each weight row while it is in cache.
use super::Float;
use rayon::prelude::*;

/// Inputs with more rows than this go to `gemm`, where the weights are reused across rows.
pub const MAX_ROWS: usize = 4;
/// Weight rows per task: enough to amortise scheduling, few enough to balance the cores.
const ROWS_PER_TASK: usize = 32;
/// Independent partial sums per dot product, so that the additions vectorise.
const LANES: usize = 16;

/// `y (n x out) = x (n x in) Wᵀ` with `W` row-major `out x in`.
pub fn forward<T: Float>(w: &[T], x: &[T], n: usize, in_dim: usize) -> Vec<T> {
    assert!(n <= MAX_ROWS && x.len() == n * in_dim && in_dim > 0 && w.len().is_multiple_of(in_dim), "gemv: shapes");
    let out_dim = w.len() / in_dim;
    // Computed output-major (one row of W, all its dot products), transposed at the end.
    let mut yt = vec![T::zero(); out_dim * n];
    yt.par_chunks_mut(ROWS_PER_TASK * n).zip(w.par_chunks(ROWS_PER_TASK * in_dim)).for_each(|(yt, w)| {
        super::isa::with_isa(
            #[inline(always)]
            || {
                for (y, row) in yt.chunks_exact_mut(n).zip(w.chunks_exact(in_dim)) {
                    for (y, xb) in y.iter_mut().zip(x.chunks_exact(in_dim)) {
                        *y = dot(row, xb);
                    }
                }
            },
        )
    });
    let mut y = vec![T::zero(); n * out_dim];
    for (o, v) in yt.chunks_exact(n).enumerate() {
        for (b, v) in v.iter().enumerate() {
            y[b * out_dim + o] = *v;
        }
    }
    y
}

#[inline(always)]
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: T = ac.remainder().iter().zip(bc.remainder()).map(|(a, b)| *a * *b).fold(T::zero(), |s, v| s + v);
    for (a, b) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    acc.iter().fold(tail, |s, v| s + *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_for_every_small_batch() {
        let (in_dim, out_dim) = (37, 70);
        let w: Vec<f64> = (0..in_dim * out_dim).map(|i| ((i * 7919) % 1009) as f64 / 500.0 - 1.0).collect();
        for n in 1..=MAX_ROWS {
            let x: Vec<f64> = (0..n * in_dim).map(|i| ((i * 104729) % 997) as f64 / 400.0 - 1.2).collect();
            let got = forward(&w, &x, n, in_dim);
            for b in 0..n {
                for o in 0..out_dim {
                    let want: f64 = (0..in_dim).map(|k| x[b * in_dim + k] * w[o * in_dim + k]).sum();
                    assert!((got[b * out_dim + o] - want).abs() < 1e-12, "n {n}, row {b}, output {o}");
                }
            }
        }
    }
}
