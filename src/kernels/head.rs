//! One training step of the culture head (three linear layers with ReLU between them, then
//! cross-entropy) as one CPU kernel: forward, loss and every parameter's gradient, with no
//! autograd graph.
//!
//! Transfer training runs only this head, on cached 2048-d embeddings, in batches of 16: 332
//! steps an epoch for the study's ~5,300 images. Through candle's ops each step records a graph,
//! runs its backward pass on a thread it spawns, and adds every gradient into a fresh zero
//! tensor: `perf` put 47 % of a transfer epoch in those additions and that thread, 37 % in the
//! matrix products, and the epoch at 4x PyTorch's time. Here the step is six matrix products
//! over `gemm` plus three small loops, into buffers of exactly the gradients' size.
use super::{Float, MatRef, matmul, matmul_into};
use gemm::Parallelism;
use std::borrow::Cow;

/// The head's shape: input width, the two hidden widths, the number of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadDims {
    pub input: usize,
    pub hidden: [usize; 2],
    pub classes: usize,
}

impl HeadDims {
    /// (out, in) of each layer.
    pub fn layers(&self) -> [(usize, usize); 3] {
        [(self.hidden[0], self.input), (self.hidden[1], self.hidden[0]), (self.classes, self.hidden[1])]
    }
}

/// The head's parameters, row-major as `nn.Linear` stores them: `weights[l]` is out x in.
pub struct HeadParams<'a, T> {
    pub weights: [&'a [T]; 3],
    pub biases: [&'a [T]; 3],
}

/// The step's result: the loss and the gradient of every parameter (same layout as the
/// parameters).
pub struct HeadGrads<T> {
    pub loss: T,
    pub weights: [Vec<T>; 3],
    pub biases: [Vec<T>; 3],
}

/// Errors of input that the caller passed (shapes, labels): the kernel never panics on them.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeadError {
    #[error("head step: {0}")]
    Shape(String),
    #[error("head step: label {label} of row {row} is not below the {classes} classes")]
    Label { row: usize, label: u32, classes: usize },
}

/// The loss (PyTorch's `cross_entropy`, mean or class-weighted mean) and the gradients of the
/// head's parameters for the `batch` rows of `x` (batch x input, row-major).
pub fn head_step<T: Float>(
    dims: HeadDims,
    p: &HeadParams<T>,
    x: &[T],
    labels: &[u32],
    class_weights: Option<&[T]>,
) -> Result<HeadGrads<T>, HeadError> {
    step(dims, p, x, labels, class_weights, None)
}

/// [`head_step`] as bf16 autocast runs the head (`model::linear::Linear` under
/// `model::autocast`): the input, weights and biases rounded to bf16, each layer's output
/// rounded after its bias (ReLU then keeps it so), the loss in f32; backward, the logits'
/// gradient rounded, and every weight, bias and input gradient rounded as the casts' backward
/// passes round them. The gradients are those of the autograd path (the same products, summed
/// in f32), for the f32 master weights.
pub fn head_step_bf16(
    dims: HeadDims,
    p: &HeadParams<f32>,
    x: &[f32],
    labels: &[u32],
    class_weights: Option<&[f32]>,
) -> Result<HeadGrads<f32>, HeadError> {
    let round = Rounding { in_place: super::bf16::round_slice, copy: super::bf16::rounded };
    step(dims, p, x, labels, class_weights, Some(&round))
}

/// The step, with `round` applied wherever bf16 autocast rounds (nowhere without it).
fn step<T: Float>(
    dims: HeadDims,
    p: &HeadParams<T>,
    x: &[T],
    labels: &[u32],
    class_weights: Option<&[T]>,
    round: Option<&Rounding<T>>,
) -> Result<HeadGrads<T>, HeadError> {
    let b = labels.len();
    check(dims, p, x, b, class_weights)?;
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= dims.classes) {
        return Err(HeadError::Label { row, label, classes: dims.classes });
    }
    let [(o1, i1), (o2, i2), (o3, i3)] = dims.layers();
    let par = if rayon::current_num_threads() > 1 { Parallelism::Rayon(0) } else { Parallelism::None };
    let round_in_place = |v: &mut [T]| {
        if let Some(round) = round {
            (round.in_place)(v)
        }
    };
    let x = rounded(x, round);
    let weights = p.weights.map(|w| rounded(w, round));
    let biases = p.biases.map(|b| rounded(b, round));
    // Forward: h1 = relu(x W1^T + b1), h2 = relu(h1 W2^T + b2), z = h2 W3^T + b3.
    // The product is taken as (W input^T), out x batch, then transposed: `gemm` reads W in place
    // that way, where for (input W^T) it repacks the whole weight matrix on every call (6.5 ms
    // against 0.65 ms for the first layer, 1024 x 2048, at batch 16 on one core).
    let linear = |input: &[T], w: &[T], bias: &[T], (o, i): (usize, usize), relu: bool| {
        let mut t = vec![T::zero(); o * b];
        matmul(&mut t, b, false, MatRef::rows(w, o, i), MatRef::transposed(input, i, b), par);
        let mut out = vec![T::zero(); b * o];
        for (r, row) in out.chunks_exact_mut(o).enumerate() {
            for (c, (v, &bv)) in row.iter_mut().zip(bias).enumerate() {
                *v = t[c * b + r] + bv;
            }
        }
        round_in_place(&mut out);
        if relu {
            out.iter_mut().filter(|v| **v <= T::zero()).for_each(|v| *v = T::zero());
        }
        out
    };
    let h1 = linear(&x, &weights[0], &biases[0], (o1, i1), true);
    let h2 = linear(&h1, &weights[1], &biases[1], (o2, i2), true);
    let mut dz = linear(&h2, &weights[2], &biases[2], (o3, i3), false);
    // Loss and its gradient in place of the logits: dz = w_y (softmax(z) - onehot(y)) / sum(w).
    let row_weight = |r: usize| class_weights.map_or(T::one(), |w| w[labels[r] as usize]);
    let total: T = (0..b).map(row_weight).fold(T::zero(), |a, v| a + v);
    let mut loss = T::zero();
    for (r, z) in dz.chunks_exact_mut(o3).enumerate() {
        let max = z.iter().fold(T::neg_infinity(), |m, &v| num_traits::Float::max(m, v));
        let sum = z.iter().fold(T::zero(), |s, &v| s + (v - max).exp());
        let y = labels[r] as usize;
        let w = row_weight(r);
        loss += w * (max + sum.ln() - z[y]);
        let scale = w / total;
        for (c, v) in z.iter_mut().enumerate() {
            let prob = (*v - max).exp() / sum;
            *v = scale * (prob - if c == y { T::one() } else { T::zero() });
        }
    }
    let loss = loss / total;
    // The logits' cast: its backward pass rounds their gradient (the layers' own gradients
    // below are rounded values then, and ReLU's mask keeps them so).
    round_in_place(&mut dz);
    // Backward, last layer first: dW = dy^T input, db = column sums of dy, dinput = dy W masked
    // by the ReLU that produced the input.
    let backward = |dy: &[T], input: &[T], w: &[T], (o, i): (usize, usize), want_input: bool| {
        let mut dw = uninit_product(o, i, MatRef::transposed(dy, o, b), MatRef::rows(input, b, i), par);
        round_in_place(&mut dw);
        let mut db = vec![T::zero(); o];
        for row in dy.chunks_exact(o) {
            for (acc, &v) in db.iter_mut().zip(row) {
                *acc += v;
            }
        }
        round_in_place(&mut db);
        let mut dinput = Vec::new();
        if want_input {
            dinput = vec![T::zero(); b * i];
            matmul(&mut dinput, i, false, MatRef::rows(dy, b, o), MatRef::rows(w, o, i), par);
            round_in_place(&mut dinput);
            for (d, &a) in dinput.iter_mut().zip(input) {
                if a <= T::zero() {
                    *d = T::zero();
                }
            }
        }
        (dw, db, dinput)
    };
    let (dw3, db3, dh2) = backward(&dz, &h2, &weights[2], (o3, i3), true);
    let (dw2, db2, dh1) = backward(&dh2, &h1, &weights[1], (o2, i2), true);
    let (dw1, db1, _) = backward(&dh1, &x, &weights[0], (o1, i1), false);
    Ok(HeadGrads { loss, weights: [dw1, dw2, dw3], biases: [db1, db2, db3] })
}

/// `v` rounded by `round`, or `v` itself without it.
fn rounded<'a, T: Float>(v: &'a [T], round: Option<&Rounding<T>>) -> Cow<'a, [T]> {
    match round {
        Some(round) => Cow::Owned((round.copy)(v)),
        None => Cow::Borrowed(v),
    }
}

/// bf16 autocast's rounding, in place and into a copy (one pass each).
struct Rounding<T> {
    in_place: fn(&mut [T]),
    copy: fn(&[T]) -> Vec<T>,
}

/// `lhs x rhs` (rows x cols) into a fresh buffer that is not zeroed first: `gemm` writes every
/// element, and zeroing the first layer's 8 MB gradient each step cost 3 % of the epoch.
fn uninit_product<T: Float>(rows: usize, cols: usize, lhs: MatRef<T>, rhs: MatRef<T>, par: Parallelism) -> Vec<T> {
    let mut v: Vec<std::mem::MaybeUninit<T>> = Vec::with_capacity(rows * cols);
    // SAFETY: MaybeUninit needs no initialisation; the length is the capacity just reserved.
    unsafe { v.set_len(rows * cols) };
    matmul_into(&mut v, cols, false, lhs, rhs, par);
    // SAFETY: `matmul_into` without accumulation wrote every element of the rows x cols view,
    // which is the whole buffer; MaybeUninit<T> has T's layout.
    unsafe {
        let mut v = std::mem::ManuallyDrop::new(v);
        Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity())
    }
}

fn check<T>(dims: HeadDims, p: &HeadParams<T>, x: &[T], b: usize, cw: Option<&[T]>) -> Result<(), HeadError> {
    let shape = |what: String| Err(HeadError::Shape(what));
    if b == 0 {
        return shape("an empty batch".into());
    }
    if x.len() != b * dims.input {
        return shape(format!("input has {} values, expected {b} x {}", x.len(), dims.input));
    }
    for (l, (o, i)) in dims.layers().into_iter().enumerate() {
        if p.weights[l].len() != o * i || p.biases[l].len() != o {
            return shape(format!(
                "layer {l} has {} weights and {} biases, expected {o} x {i} and {o}",
                p.weights[l].len(),
                p.biases[l].len()
            ));
        }
    }
    if let Some(w) = cw
        && w.len() != dims.classes
    {
        return shape(format!("{} class weights for {} classes", w.len(), dims.classes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss by its definition, in f64, for finite differences.
    fn loss_of(
        dims: HeadDims,
        w: &[Vec<f64>; 3],
        bias: &[Vec<f64>; 3],
        x: &[f64],
        y: &[u32],
        cw: Option<&[f64]>,
    ) -> f64 {
        let p = HeadParams { weights: [&w[0], &w[1], &w[2]], biases: [&bias[0], &bias[1], &bias[2]] };
        head_step(dims, &p, x, y, cw).unwrap().loss
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dims = HeadDims { input: 7, hidden: [6, 5], classes: 4 };
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let mut w: [Vec<f64>; 3] = dims.layers().map(|(o, i)| (0..o * i).map(|_| 0.0).collect());
        for v in w.iter_mut().flatten() {
            *v = next();
        }
        let mut bias: [Vec<f64>; 3] = dims.layers().map(|(o, _)| vec![0.0; o]);
        for v in bias.iter_mut().flatten() {
            *v = 0.3 * next();
        }
        let x: Vec<f64> = (0..3 * dims.input).map(|_| next()).collect();
        let y = [0u32, 3, 1];
        let cw = [1.0, 2.0, 0.5, 3.0];
        for cw in [None, Some(&cw[..])] {
            let p = HeadParams { weights: [&w[0], &w[1], &w[2]], biases: [&bias[0], &bias[1], &bias[2]] };
            let g = head_step(dims, &p, &x, &y, cw).unwrap();
            let eps = 1e-6;
            for l in 0..3 {
                for k in 0..w[l].len() {
                    let mut wp = w.clone();
                    wp[l][k] += eps;
                    let mut wm = w.clone();
                    wm[l][k] -= eps;
                    let fd =
                        (loss_of(dims, &wp, &bias, &x, &y, cw) - loss_of(dims, &wm, &bias, &x, &y, cw)) / (2.0 * eps);
                    assert!((fd - g.weights[l][k]).abs() < 1e-7, "layer {l} weight {k}: {fd} vs {}", g.weights[l][k]);
                }
                for k in 0..bias[l].len() {
                    let mut bp = bias.clone();
                    bp[l][k] += eps;
                    let mut bm = bias.clone();
                    bm[l][k] -= eps;
                    let fd = (loss_of(dims, &w, &bp, &x, &y, cw) - loss_of(dims, &w, &bm, &x, &y, cw)) / (2.0 * eps);
                    assert!((fd - g.biases[l][k]).abs() < 1e-7, "layer {l} bias {k}: {fd} vs {}", g.biases[l][k]);
                }
            }
        }
    }

    #[test]
    fn bad_labels_and_shapes_are_errors() {
        let dims = HeadDims { input: 2, hidden: [2, 2], classes: 2 };
        let w = [vec![0f32; 4], vec![0f32; 4], vec![0f32; 4]];
        let bias = [vec![0f32; 2], vec![0f32; 2], vec![0f32; 2]];
        let p = HeadParams { weights: [&w[0], &w[1], &w[2]], biases: [&bias[0], &bias[1], &bias[2]] };
        let e = head_step(dims, &p, &[0.0; 4], &[0, 2], None).err();
        assert_eq!(e, Some(HeadError::Label { row: 1, label: 2, classes: 2 }));
        assert!(matches!(head_step(dims, &p, &[0.0; 3], &[0, 1], None), Err(HeadError::Shape(_))));
        assert!(matches!(head_step(dims, &p, &[0.0; 4], &[0, 1], Some(&[1.0])), Err(HeadError::Shape(_))));
        // Equal logits: the loss is ln(classes).
        let g = head_step(dims, &p, &[0.0; 4], &[0, 1], None).unwrap();
        assert!((g.loss - 2f32.ln()).abs() < 1e-6);
    }
}
