//! The per-channel reductions of batch norm (the batch statistics forward, the two gradient sums
//! backward) and the element-wise pieces its passes share, over values of any [`Stored`] type.
use super::ncp;
use crate::kernels::isa::with_isa;
use crate::kernels::{Float, per_channel};
use candle_core::{Result, WithDType};
use std::mem::MaybeUninit;

/// How a pass's tensors hold their values: as the arithmetic type itself (f32; f64 for the
/// parity tests), or as bf16 (computed in f32), the storage of the activations bf16 autocast
/// training keeps (see `crate::kernels::bf16`). Loading converts exactly; storing rounds.
pub trait Stored<T: Float>: WithDType + Copy + Send + Sync {
    /// Whether the stored values are bf16 values: loading gives one, storing rounds to one, so
    /// that autocast's roundings before a store or of a loaded value are already done.
    const BF16: bool = false;
    fn load(self) -> T;
    fn store(v: T) -> Self;
}

impl<T: Float> Stored<T> for T {
    #[inline(always)]
    fn load(self) -> T {
        self
    }

    #[inline(always)]
    fn store(v: T) -> T {
        v
    }
}

impl Stored<f32> for half::bf16 {
    const BF16: bool = true;

    #[inline(always)]
    fn load(self) -> f32 {
        crate::kernels::bf16::to_f32(self)
    }

    #[inline(always)]
    fn store(v: f32) -> Self {
        crate::kernels::bf16::to_bf16(v)
    }
}

pub(super) fn f<T: Float>(v: T) -> f64 {
    WithDType::to_f64(v)
}

pub(super) fn t<T: Float>(v: f64) -> T {
    T::from_f64(v)
}

/// Values summed per block in `LANES` independent accumulators of the tensor's type (which the
/// compiler vectorises), each block's sums then added in f64: as accurate as PyTorch's
/// reductions and about as fast as memory allows.
pub(super) const LANES: usize = 8;
pub(super) const BLOCK: usize = 512;

/// Not inlined: inlined, LLVM's SLP vectorizer paired each plane's two sums (`(sum, sum)`
/// tuples are adjacent in memory) and carried the pairing back into the summing loop of
/// [`blocked_sums`], which then gathered its terms two at a time into 128-bit registers: 55 %
/// of batch norm's statistics pass, 3x the time of a loop of 256-bit adds.
#[inline(never)]
pub(super) fn lanes_to_f64<T: Float>(lanes: &[T; LANES]) -> f64 {
    lanes.iter().map(|&v| f(v)).sum()
}

/// `(sum(x - k), sum((x - k)^2))`: shifted by a value near the mean, so that one pass gives the
/// variance without cancellation.
#[inline(always)]
pub(super) fn shifted_sums<T: Float, S: Stored<T>>(x: &[S], k: T) -> (f64, f64) {
    let (mut s1, mut s2) = (0.0, 0.0);
    for block in x.chunks(BLOCK) {
        let (mut a1, mut a2) = ([T::zero(); LANES], [T::zero(); LANES]);
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for j in 0..LANES {
                let d = c[j].load() - k;
                a1[j] += d;
                a2[j] += d * d;
            }
        }
        for &v in chunks.remainder() {
            let d = v.load() - k;
            a1[0] += d;
            a2[0] += d * d;
        }
        s1 += lanes_to_f64(&a1);
        s2 += lanes_to_f64(&a2);
    }
    (s1, s2)
}

/// One plane's shifted sums, what batch statistics are built from: the shift `k` (a value near
/// the plane's, such as its first), `sum(x - k)` and `sum((x - k)^2)`. Per plane rather than per
/// channel, so that a convolution can sum each plane of its output while the plane is still in
/// cache from being written ([`store_summed`]) and batch norm needs no pass over its input of
/// its own ([`stats_from_planes`]): that pass was 3 % of a bf16 training step in `perf`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlaneSums {
    pub k: f64,
    pub s1: f64,
    pub s2: f64,
}

impl PlaneSums {
    /// The sums of the plane `x` around `k`.
    #[inline(always)]
    pub fn of<T: Float, S: Stored<T>>(x: &[S], k: T) -> Self {
        let (s1, s2) = shifted_sums::<T, S>(x, k);
        Self { k: f(k), s1, s2 }
    }
}

/// `out[i] = S::store(v[i])`, returning the [`PlaneSums`] of the stored plane around its first
/// stored value `k` (the bits of [`PlaneSums::of`]`(out, k)`), without a second pass over it.
/// Call it under [`with_isa`] for vector code.
#[inline(always)]
pub fn store_summed<T: Float, S: Stored<T>>(v: &[T], out: &mut [MaybeUninit<S>]) -> PlaneSums {
    assert_eq!(v.len(), out.len(), "store_summed: {} values into {}", v.len(), out.len());
    let k = v.first().map_or(T::zero(), |&v| S::store(v).load());
    // In [`blocked_sums`]' two loops per block (the one-plane order): storing and summing in
    // one loop kept the compiler from vectorising either (the stores' rounding and the lanes'
    // chains together: scalar code, 5 % of a bf16 training step).
    let [(s1, s2)] = blocked_sums::<T, 1>(
        v.len(),
        #[inline(always)]
        |start, n, [t1], [t2]| {
            let (v, out) = (&v[start..][..n], &mut out[start..][..n]);
            for (((v, out), t1), t2) in v.iter().zip(out).zip(&mut t1[..n]).zip(&mut t2[..n]) {
                let s = S::store(*v);
                out.write(s);
                let d = s.load() - k;
                t1.write(d);
                t2.write(d * d);
            }
        },
    );
    PlaneSums { k: f(k), s1, s2 }
}

/// The mean and the biased variance of `m` values from their sums around `k`.
fn mean_var(k: f64, s1: f64, s2: f64, m: f64) -> (f64, f64) {
    let d = s1 / m;
    (k + d, (s2 / m - d * d).max(0.0))
}

/// Per channel, the mean and the biased variance from every plane's [`PlaneSums`] (`sums[b * c +
/// ch]` for an `(n, c, h, w)` tensor), each plane summed around a shift of its own (its first
/// value, as `conv::stored::forward_summing` sums them, so that no image waits for another's
/// first value): what [`plane_stats`] gives for the same tensor, bit for bit, and what
/// [`channel_stats`] gives where every plane of a channel shares the channel's first value.
pub fn stats_from_planes(sums: &[PlaneSums], dims: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
    let (n, c, p) = ncp(dims)?;
    if sums.len() != n * c {
        candle_core::bail!("batch statistics: {} planes' sums for an input of {dims:?}", sums.len());
    }
    Ok((0..c).map(|ch| combined((0..n).map(|b| sums[b * c + ch]), n, p)).unzip())
}

/// The mean and the biased variance of `n` planes of `p` values from their [`PlaneSums`], in
/// order: each plane's sums moved to the first plane's shift `K` and added in f64. With `d = k
/// - K`, `sum(x - K) = s1 + p d` and `sum((x - K)^2) = s2 + 2 d s1 + p d^2` are identities, and
/// f64's rounding is far below that of the planes' f32 terms; planes sharing `K` (`d = 0`) add
/// exactly as [`channel_stats`] adds them.
fn combined(planes: impl Iterator<Item = PlaneSums>, n: usize, p: usize) -> (f64, f64) {
    let m = p as f64;
    let (mut k, mut s1, mut s2) = (None, 0.0, 0.0);
    for plane in planes {
        let d = plane.k - *k.get_or_insert(plane.k);
        s1 += plane.s1 + m * d;
        s2 += plane.s2 + 2.0 * d * plane.s1 + m * d * d;
    }
    mean_var(k.unwrap_or(0.0), s1, s2, (n * p) as f64)
}

/// The block-and-lane order of [`shifted_sums`] and [`grad_sums`] for `M` planes of length `len`
/// at once: per block of [`BLOCK`] values, `terms(start, n, t1, t2)` writes the two terms of
/// values `start..start + n` of every plane (`t1[m][..n]`, `t2[m][..n]`, all of them: the
/// summing loop reads them), which are then added into `LANES` accumulators per plane (a
/// block's remainder into lane 0). Each plane's sums come out in exactly the order of the
/// one-plane functions (the same bits). The terms are computed in a loop of their own: masking
/// and rounding inside the summing loop kept the compiler from vectorising it (batch norm's
/// backward ran one value at a time, its accumulators on the stack, ~10 % of a bf16 training
/// step in `perf`); interleaving independent planes in the summing loop keeps the adders busy
/// (one plane's 8-lane chain waits on its own additions: 6.7 % of a training step when it was
/// latency-bound). The term buffers start uninitialised: zeroing their 16 KiB per call cost
/// more than the sums of a 7 x 7 or 14 x 14 map's planes (1 % of a bf16 training step).
#[inline(always)]
pub(super) fn blocked_sums<T: Float, const M: usize>(
    len: usize,
    mut terms: impl FnMut(usize, usize, &mut Terms<T, M>, &mut Terms<T, M>),
) -> [(f64, f64); M] {
    let mut out = [(0.0, 0.0); M];
    let (mut t1, mut t2): (Terms<T, M>, Terms<T, M>) =
        ([[MaybeUninit::uninit(); BLOCK]; M], [[MaybeUninit::uninit(); BLOCK]; M]);
    for start in (0..len).step_by(BLOCK) {
        let n = BLOCK.min(len - start);
        terms(start, n, &mut t1, &mut t2);
        // SAFETY: `terms` wrote `t1[m][..n]` and `t2[m][..n]` of every plane (its contract,
        // kept by the two closures of this module), and only those are read below.
        let written = |t: &[MaybeUninit<T>]| unsafe { &*(t as *const [MaybeUninit<T>] as *const [T]) };
        let (mut a1, mut a2) = ([[T::zero(); LANES]; M], [[T::zero(); LANES]; M]);
        let full = n / LANES * LANES;
        for i in (0..full).step_by(LANES) {
            for (a, t) in a1.iter_mut().zip(t1.iter()) {
                add_lanes(a, written(&t[i..][..LANES]));
            }
            for (a, t) in a2.iter_mut().zip(t2.iter()) {
                add_lanes(a, written(&t[i..][..LANES]));
            }
        }
        for i in full..n {
            for m in 0..M {
                a1[m][0] += written(&t1[m][i..=i])[0];
                a2[m][0] += written(&t2[m][i..=i])[0];
            }
        }
        for m in 0..M {
            out[m].0 += lanes_to_f64(&a1[m]);
            out[m].1 += lanes_to_f64(&a2[m]);
        }
    }
    out
}

/// One block's terms of `M` planes, as [`blocked_sums`] hands them to be written.
pub(super) type Terms<T, const M: usize> = [[MaybeUninit<T>; BLOCK]; M];

/// `acc[j] += x[j]`.
#[inline(always)]
fn add_lanes<T: Float>(acc: &mut [T; LANES], x: &[T]) {
    for (a, &x) in acc.iter_mut().zip(x) {
        *a += x;
    }
}

/// [`shifted_sums`] of `M` planes of equal length at once, plane `m` around `ks[m]` (see
/// [`blocked_sums`]).
#[inline(always)]
pub(super) fn shifted_sums_many<T: Float, S: Stored<T>, const M: usize>(xs: [&[S]; M], ks: [T; M]) -> [(f64, f64); M] {
    let len = xs[0].len();
    debug_assert!(xs.iter().all(|x| x.len() == len));
    blocked_sums::<T, M>(
        len,
        #[inline(always)]
        |start, n, t1, t2| {
            for (m, (x, &k)) in xs.iter().zip(&ks).enumerate() {
                for ((d, d2), x) in t1[m][..n].iter_mut().zip(&mut t2[m][..n]).zip(&x[start..][..n]) {
                    let v = x.load() - k;
                    d.write(v);
                    d2.write(v * v);
                }
            }
        },
    )
}

/// `v` as f32 and back: the identity where `T` is f32, the only type the bf16 paths run in.
#[inline(always)]
pub(super) fn as_f32<T: Float>(v: T) -> f32 {
    num_traits::ToPrimitive::to_f32(&v).unwrap_or(f32::NAN)
}

#[inline(always)]
pub(super) fn from_f32<T: Float>(v: f32) -> T {
    <T as num_traits::NumCast>::from(v).unwrap_or_else(T::nan)
}

/// `v` rounded to bf16's precision (f32 only reaches here; see [`as_f32`]).
#[inline(always)]
pub(super) fn round_bf16<T: Float>(v: T) -> T {
    from_f32(crate::kernels::bf16::round(as_f32(v)))
}

/// The gradient reaching batch norm's output: `dy`, masked by `y > 0` when the ReLU is fused.
#[inline(always)]
pub(super) fn masked<T: Float>(relu: bool, y: T, dy: T) -> T {
    if relu && y <= T::zero() { T::zero() } else { dy }
}

/// [`masked`], rounded to bf16 under autocast (`BF16`, f32 only): the gradient autocast hands
/// batch norm. A const parameter, so that f32's loops carry no rounding test; from bf16
/// storage the gradient is a bf16 value already, and masking keeps it one.
#[inline(always)]
pub(super) fn out_grad<T: Float, S: Stored<T>, const BF16: bool>(relu: bool, y: S, dy: S) -> T {
    let g = masked(relu, y.load(), dy.load());
    if BF16 && !S::BF16 { round_bf16(g) } else { g }
}

/// `v` stored as autocast stores it (`BF16`): rounded to bf16, by the store itself where the
/// storage is bf16.
#[inline(always)]
pub(super) fn store_rounded<T: Float, S: Stored<T>, const BF16: bool>(v: T) -> S {
    S::store(if BF16 && !S::BF16 { round_bf16(v) } else { v })
}

/// `(sum g, sum g * (x - mean))` over one plane.
#[inline(always)]
pub(super) fn grad_sums<T: Float, S: Stored<T>, const BF16: bool>(
    x: &[S],
    y: &[S],
    dy: &[S],
    mean: T,
    relu: bool,
) -> (f64, f64) {
    let (mut s1, mut s2) = (0.0, 0.0);
    for ((x, y), dy) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).zip(dy.chunks(BLOCK)) {
        let (mut a1, mut a2) = ([T::zero(); LANES], [T::zero(); LANES]);
        let n = x.len() / LANES * LANES;
        for ((x, y), dy) in x[..n].chunks_exact(LANES).zip(y[..n].chunks_exact(LANES)).zip(dy[..n].chunks_exact(LANES))
        {
            for j in 0..LANES {
                let g = out_grad::<T, S, BF16>(relu, y[j], dy[j]);
                a1[j] += g;
                a2[j] += g * (x[j].load() - mean);
            }
        }
        for i in n..x.len() {
            let g = out_grad::<T, S, BF16>(relu, y[i], dy[i]);
            a1[0] += g;
            a2[0] += g * (x[i].load() - mean);
        }
        s1 += lanes_to_f64(&a1);
        s2 += lanes_to_f64(&a2);
    }
    (s1, s2)
}

/// [`grad_sums`] of `M` planes at once (see [`blocked_sums`]).
#[inline(always)]
pub(super) fn grad_sums_many<T: Float, S: Stored<T>, const BF16: bool, const M: usize>(
    planes: [(&[S], &[S], &[S]); M],
    mean: T,
    relu: bool,
) -> [(f64, f64); M] {
    let len = planes[0].0.len();
    debug_assert!(planes.iter().all(|(x, y, dy)| x.len() == len && y.len() == len && dy.len() == len));
    blocked_sums::<T, M>(
        len,
        #[inline(always)]
        |start, n, g, gx| {
            for (m, &(x, y, dy)) in planes.iter().enumerate() {
                let (x, y, dy) = (&x[start..][..n], &y[start..][..n], &dy[start..][..n]);
                for ((g, gx), ((x, y), dy)) in g[m][..n].iter_mut().zip(&mut gx[m][..n]).zip(x.iter().zip(y).zip(dy)) {
                    let v = out_grad::<T, S, BF16>(relu, *y, *dy);
                    g.write(v);
                    gx.write(v * (x.load() - mean));
                }
            }
        },
    )
}

/// Per channel: the mean and the biased variance, every plane of a channel summed around the
/// channel's first value (f32 and f64 training's statistics).
pub fn channel_stats<T: Float, S: Stored<T>>(x: &[S], dims: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
    stats_around(x, dims, false)
}

/// Per channel, the mean and the biased variance, each plane summed around its own first value
/// and the planes combined in image order ([`stats_from_planes`]' bits without a convolution
/// to sum the planes as it writes them): the statistics bf16 autocast training takes.
pub fn plane_stats<T: Float, S: Stored<T>>(x: &[S], dims: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
    stats_around(x, dims, true)
}

/// [`channel_stats`] (each plane around the channel's first value) or, with `own`,
/// [`plane_stats`] (around its own first value): the planes' [`PlaneSums`], four images at a
/// time, [`combined`] in image order. Planes sharing the channel's shift add as plain sums.
fn stats_around<T: Float, S: Stored<T>>(x: &[S], dims: &[usize], own: bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let (n, c, p) = ncp(dims)?;
    let plane = |b: usize, ch: usize| &x[(b * c + ch) * p..][..p];
    let shift = |b: usize, ch: usize| plane(if own { b } else { 0 }, ch).first().map_or(T::zero(), |v| v.load());
    let stats = per_channel(c, |ch| {
        with_isa(
            #[inline(always)]
            || {
                let mut sums = Vec::with_capacity(n);
                let mut b = 0;
                while b + 4 <= n {
                    let four = [plane(b, ch), plane(b + 1, ch), plane(b + 2, ch), plane(b + 3, ch)];
                    let ks = [b, b + 1, b + 2, b + 3].map(|b| shift(b, ch));
                    for ((s1, s2), k) in shifted_sums_many::<T, S, 4>(four, ks).into_iter().zip(ks) {
                        sums.push(PlaneSums { k: f(k), s1, s2 });
                    }
                    b += 4;
                }
                sums.extend((b..n).map(|b| PlaneSums::of::<T, S>(plane(b, ch), shift(b, ch))));
                combined(sums.into_iter(), n, p)
            },
        )
    });
    Ok(stats.into_iter().unzip())
}
