//! Where a strided window's taps fall along a row of inputs, shared by the convolutions'
//! column buffers and max pooling's backward pass.

/// For the tap at offset `tap` of windows with stride `s` and padding `pad` over a row of `w`
/// inputs: the outputs `[lo, hi)` (of `outputs`) whose input `o * s + tap - pad` lies inside
/// the row (`lo == hi` where none does).
pub(crate) fn inside(w: usize, outputs: usize, s: usize, pad: usize, tap: usize) -> (usize, usize) {
    let lo = if tap >= pad { 0 } else { (pad - tap).div_ceil(s) };
    let hi = if w + pad > tap { ((w + pad - tap - 1) / s + 1).min(outputs) } else { 0 };
    (lo.min(hi), hi)
}

/// `row`'s values at `q, q + s, q + 2s, ...` through `f` into `out[q * stride..]` (the first
/// `row.len().div_ceil(s)` values), for each phase `q < s`: with the row split so, the inputs of
/// one tap for successive outputs are one contiguous run of a phase instead of every `s`-th
/// value. Stride 2 (every strided layer and pooling of our models) in one pass, which the
/// compiler vectorises when this is inlined under [`super::isa::with_isa`].
#[inline(always)]
pub(crate) fn split_phases<A: Copy, B>(row: &[A], s: usize, out: &mut [B], stride: usize, f: impl Fn(A) -> B) {
    let phase_w = row.len().div_ceil(s);
    if s == 2 {
        let (even, odd) = out.split_at_mut(stride);
        let (even, odd) = (&mut even[..phase_w], &mut odd[..phase_w]);
        for ((e, o), two) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
            (*e, *o) = (f(two[0]), f(two[1]));
        }
        if row.len() % 2 == 1 {
            even[phase_w - 1] = f(row[row.len() - 1]);
        }
        return;
    }
    for q in 0..s {
        let phase = &mut out[q * stride..][..phase_w];
        phase.iter_mut().zip(row.iter().skip(q).step_by(s)).for_each(|(d, &v)| *d = f(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output in `[lo, hi)` reads inside the row and every other one outside it, for
    /// strides 1-3, paddings 0-3 and each tap of windows up to 7 wide.
    #[test]
    fn inside_is_exactly_the_outputs_reading_inside_the_row() {
        for (w, s, pad, k) in [(7, 1, 1, 3), (9, 2, 3, 7), (10, 2, 1, 3), (5, 3, 2, 5), (4, 1, 0, 3), (1, 1, 1, 3)] {
            let outputs = (w + 2 * pad - k) / s + 1;
            for tap in 0..k {
                let (lo, hi) = inside(w, outputs, s, pad, tap);
                for o in 0..outputs {
                    let ix = (o * s + tap) as isize - pad as isize;
                    let reads_inside = ix >= 0 && ix < w as isize;
                    assert_eq!(
                        (lo..hi).contains(&o),
                        reads_inside,
                        "w {w}, stride {s}, pad {pad}, tap {tap}, output {o}"
                    );
                }
            }
        }
    }

    /// Each phase holds the row's values at its offset and every `s`-th after, for odd and
    /// even lengths and strides 1-3.
    #[test]
    fn phases_hold_every_sth_value() {
        for (len, s) in [(10usize, 2), (11, 2), (7, 3), (5, 1), (1, 2)] {
            let row: Vec<u32> = (0..len as u32).collect();
            let stride = len.div_ceil(s) + 1;
            let mut out = vec![u64::MAX; s * stride];
            split_phases(&row, s, &mut out, stride, |v| v as u64 * 10);
            for q in 0..s {
                let want: Vec<u64> = row.iter().skip(q).step_by(s).map(|&v| v as u64 * 10).collect();
                assert_eq!(&out[q * stride..][..want.len()], &want[..], "len {len}, stride {s}, phase {q}");
            }
        }
    }
}
