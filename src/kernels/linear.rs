//! Evaluation of a linear layer over many rows (a transformer's tokens): `y = x W^T + b`, with
//! an optional activation, written once into the output. Through candle the same layer costs a
//! product, a transposed copy, a broadcast add and three passes for CLIP's quick GELU, each into
//! a fresh allocation on one thread; here the bias is the product's starting value and the
//! activation runs over the finished rows in parallel.
use super::{Float, MatRef, matmul};
use gemm::Parallelism;
use rayon::prelude::*;

/// What runs on the product before it is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    /// `x * sigmoid(1.702 x)`, CLIP's activation.
    QuickGelu,
}

/// `x`: m x k rows, `w`: n x k (PyTorch's layout), `b`: n. Returns m x n.
pub fn forward<T: Float>(x: &[T], w: &[T], b: Option<&[T]>, m: usize, k: usize, n: usize, act: Epilogue) -> Vec<T> {
    let mut y = vec![T::zero(); m * n];
    if let Some(b) = b {
        y.par_chunks_mut(n).for_each(|row| row.copy_from_slice(b));
    }
    let par = if rayon::current_num_threads() > 1 { Parallelism::Rayon(0) } else { Parallelism::None };
    matmul(&mut y, n, b.is_some(), MatRef::rows(x, m, k), MatRef::transposed(w, k, n), par);
    if act == Epilogue::QuickGelu {
        let c = T::from(-1.702).unwrap_or_else(T::zero);
        y.par_chunks_mut(4096).for_each(|chunk| {
            for v in chunk {
                *v = *v / (T::one() + (c * *v).exp());
            }
        });
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_with_bias_and_quick_gelu() {
        let (m, k, n) = (7, 5, 3);
        let x: Vec<f64> = (0..m * k).map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0).collect();
        let w: Vec<f64> = (0..n * k).map(|i| ((i * 17 % 7) as f64 - 3.0) / 2.0).collect();
        let b = [0.5, -1.0, 2.0];
        for act in [Epilogue::None, Epilogue::QuickGelu] {
            let y = forward(&x, &w, Some(&b), m, k, n, act);
            for r in 0..m {
                for c in 0..n {
                    let z = b[c] + (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f64>();
                    let want = if act == Epilogue::QuickGelu { z / (1.0 + (-1.702 * z).exp()) } else { z };
                    assert!((y[r * n + c] - want).abs() < 1e-12, "{act:?} ({r}, {c}): {} vs {want}", y[r * n + c]);
                }
            }
        }
        let y = forward(&x, &w, None, m, k, n, Epilogue::None);
        assert!((y[0] - (0..k).map(|i| x[i] * w[i]).sum::<f64>()).abs() < 1e-12);
    }
}
