//! `Y (Cout x P) = W (Cout x Cin) x X (Cin x P)`, a 1x1 convolution of one image, three ways:
//!
//! 1. `own`: a 6-channel x 64-pixel AVX-512 microkernel over weights packed once (as a loaded
//!    model could keep them) and a 64-pixel panel of `X` packed per `kc` block (without that
//!    packing the strided rows of `X` miss the TLB), for `kc` = 128, 256, 512;
//! 2. `gemm`: the `gemm` crate, single-threaded, as `src/kernels` calls it;
//! 3. with 2 threads: `gemm`'s own `Parallelism::Rayon(2)` against one single-threaded `gemm`
//!    per thread on half the output channels (`split-oc`) or half the pixels (`split-p`).
use std::arch::x86_64::*;
use std::time::Instant;

const MR: usize = 6;
const NV: usize = 4;
const TILE: usize = NV * 16;

/// `W` packed as `[Cout / MR][Cin][MR]`, zero rows past `Cout`.
fn pack_weights(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let blocks = cout.div_ceil(MR);
    let mut p = vec![0.0; blocks * cin * MR];
    for b in 0..blocks {
        for k in 0..cin {
            for r in 0..MR.min(cout - b * MR) {
                p[(b * cin + k) * MR + r] = w[(b * MR + r) * cin + k];
            }
        }
    }
    p
}

/// Lanes of vector `v` inside a tile of `n` pixels.
fn lanes(n: usize, v: usize) -> __mmask16 {
    let valid = n.saturating_sub(v * 16).min(16);
    ((1u32 << valid) - 1) as u16
}

/// `rows` (<= MR) output channels x `n` (<= TILE) pixels over `kc` inputs.
///
/// # Safety
/// AVX-512F; `wp` holds `kc * MR` values, `x` `kc` rows of `TILE` (stride `TILE`), `y` `rows`
/// rows of `n` at stride `ys`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    kc: usize,
    wp: *const f32,
    x: *const f32,
    y: *mut f32,
    ys: usize,
    rows: usize,
    n: usize,
    acc_in: bool,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        if acc_in {
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_maskz_loadu_ps(lanes(n, v), y.add(r * ys + v * 16));
                }
            }
        }
        let (mut xp, mut wpp) = (x, wp);
        for _ in 0..kc {
            let b: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(xp.add(v * 16)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*wpp.add(r));
                for v in 0..NV {
                    acc[v] = _mm512_fmadd_ps(a, b[v], acc[v]);
                }
            }
            xp = xp.add(TILE);
            wpp = wpp.add(MR);
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            for (v, a) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(y.add(r * ys + v * 16), lanes(n, v), *a);
            }
        }
    }
}

fn own(wp: &[f32], cout: usize, cin: usize, x: &[f32], p: usize, y: &mut [f32], kc_max: usize) {
    let mut panel = vec![0.0f32; kc_max * TILE];
    for k0 in (0..cin).step_by(kc_max) {
        let kc = kc_max.min(cin - k0);
        for p0 in (0..p).step_by(TILE) {
            let n = TILE.min(p - p0);
            for k in 0..kc {
                // A narrow tail runs the whole kernel on zero padding (the cost of one kernel size).
                panel[k * TILE..k * TILE + n].copy_from_slice(&x[(k0 + k) * p + p0..][..n]);
                panel[k * TILE + n..(k + 1) * TILE].fill(0.0);
            }
            for b in 0..cout.div_ceil(MR) {
                let rows = MR.min(cout - b * MR);
                // SAFETY: the pointers cover the sizes `kernel` documents; AVX-512 checked in main.
                unsafe {
                    kernel(
                        kc,
                        wp.as_ptr().add((b * cin + k0) * MR),
                        panel.as_ptr(),
                        y.as_mut_ptr().add(b * MR * p + p0),
                        p,
                        rows,
                        n,
                        k0 > 0,
                    )
                }
            }
        }
    }
}

/// `gemm` on rows `r0..r0+rows` and columns `c0..c0+cols` of the product.
#[allow(clippy::too_many_arguments)]
fn gemm_part(
    cout: usize,
    cin: usize,
    p: usize,
    y: usize,
    w: usize,
    x: usize,
    (r0, rows, c0, cols): (usize, usize, usize, usize),
    par: gemm::Parallelism,
) {
    let (y, w, x) = (y as *mut f32, w as *const f32, x as *const f32);
    assert!(r0 + rows <= cout && c0 + cols <= p);
    // SAFETY: the views stay inside `y` (cout x p), `w` (cout x cin) and `x` (cin x p).
    unsafe {
        gemm::gemm(
            rows,
            cols,
            cin,
            y.add(r0 * p + c0),
            1,
            p as isize,
            false,
            w.add(r0 * cin),
            1,
            cin as isize,
            x.add(c0),
            1,
            p as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

fn main() {
    assert!(std::arch::is_x86_feature_detected!("avx512f"), "this probe needs AVX-512F");
    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().unwrap();
    let shapes = [
        (64, 256, 3136),
        (256, 64, 3136),
        (64, 64, 3136),
        (128, 512, 784),
        (512, 128, 784),
        (256, 1024, 196),
        (1024, 256, 196),
        (512, 2048, 49),
        (2048, 512, 49),
    ];
    println!("GFLOP/s, one image, Cin x P -> Cout");
    for &(cin, cout, p) in &shapes {
        let w: Vec<f32> = (0..cin * cout).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let x: Vec<f32> = (0..cin * p).map(|i| ((i * 104_729) % 1000) as f32 * 1e-3 - 0.5).collect();
        let wp = pack_weights(&w, cout, cin);
        let (mut y, mut y_ref) = (vec![0.0f32; cout * p], vec![0.0f32; cout * p]);
        let flops = 2.0 * (cin * cout * p) as f64;
        let reps = (4e9 / flops).max(3.0) as usize;
        let rate = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        let (yr, wr, xr) = (y_ref.as_mut_ptr() as usize, w.as_ptr() as usize, x.as_ptr() as usize);
        let whole = (0, cout, 0, p);
        let gemm1 = rate(&mut || gemm_part(cout, cin, p, yr, wr, xr, whole, gemm::Parallelism::None));
        let mut line = format!("{cin:>4}x{p:<4} -> {cout:<4} gemm {gemm1:>4.0}");
        {
            for kc in [128, 256, 512] {
                let r = rate(&mut || own(&wp, cout, cin, &x, p, &mut y, kc));
                let err = y.iter().zip(&y_ref).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0f32, f32::max);
                assert!(err < 1e-4, "own kernel differs from gemm by {err}");
                line += &format!(" | own kc{kc} {r:>4.0}");
            }
        }
        let two = rate(&mut || gemm_part(cout, cin, p, yr, wr, xr, whole, gemm::Parallelism::Rayon(2)));
        let h = cout / 2;
        let split_oc = rate(&mut || {
            let part = |r0, rows| gemm_part(cout, cin, p, yr, wr, xr, (r0, rows, 0, p), gemm::Parallelism::None);
            rayon::join(|| part(0, h), || part(h, cout - h));
        });
        let hp = (p / 2).div_ceil(16) * 16;
        let split_p = rate(&mut || {
            let part = |c0, cols| gemm_part(cout, cin, p, yr, wr, xr, (0, cout, c0, cols), gemm::Parallelism::None);
            rayon::join(|| part(0, hp), || part(hp, p - hp));
        });
        println!("{line} || 2 threads: gemm Rayon(2) {two:>4.0} | split-oc {split_oc:>4.0} | split-p {split_p:>4.0}");
    }
}
