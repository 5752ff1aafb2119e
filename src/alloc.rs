//! Allocator tuning for training and inference on the CPU.
//!
//! Every candle op returns a fresh buffer, and a ResNet-50 training step at batch 16 allocates
//! and frees ~20 GB in tensors of 10-200 MB. glibc serves every block above 32 MB (the most its
//! mmap threshold can be raised to) with a fresh `mmap` and unmaps it on free, so each tensor
//! costs a page fault and a kernel page clear per 4 KiB on first touch: 25 % of the step's
//! cycles in `perf`, and 6.2 s instead of 4.0 s per step. Serving large blocks from the heap
//! instead (no mmap, no trimming) lets freed tensors be reused without going back to the kernel.
//! [`release_free_memory`] gives the memory back when a long job ends.
//!
//! No allocator crate was needed: two `mallopt` settings do it, and other platforms' allocators
//! (macOS's, Windows') already keep freed large blocks.
//!
//! [`LineAligned`], the process's allocator, starts every block of 4 KiB or more on a cache
//! line. glibc's blocks start 16 bytes into one (or 16, 32 or 48 from the heap), so a 64-byte
//! row that a kernel loads spans two lines. AMX tile loads (16 rows of 64 bytes) pay for that
//! with half their speed: a 2 x 2 block of `tdpbf16ps` on operands in L1 ran at 940 GFLOP/s
//! on a 16-byte-misaligned buffer and 2,410 aligned (one core of a Xeon with AMX). No crate
//! wraps the system allocator this way; `mimalloc` and `jemalloc` would replace glibc's, whose
//! settings above were measured.
use std::alloc::{GlobalAlloc, Layout, System};

/// Called once at the start of the program, before any thread exists.
pub fn tune_for_tensors() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation parameters; it is called before threads
    // start, as glibc asks.
    unsafe {
        // Large blocks from the heap (main arena via brk when a thread's arena cannot hold them).
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // Keep freed memory at the top of the heap for the next step instead of trimming it.
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // One arena for every thread. A worker thread's blocks (the weight gradients'
        // per-thread accumulators, packed operands) otherwise come from its own arena's heaps,
        // which glibc unmaps when they empty out and maps again on the next allocation: a bf16
        // training step took ~5,000 fresh-page faults (cleared pages, 1-2 % of its samples in
        // `perf`), ~300 with one arena. Small blocks still come from each thread's cache
        // (tcache) without the arena's lock; large ones are a few hundred per step.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns freed heap memory to the operating system (after training, embedding or a batch of
/// predictions), so that an idle GUI does not keep a training step's peak.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Blocks of at least this many bytes start on a cache line; smaller ones keep glibc's fast
/// paths (thread caches) and its 16-byte alignment.
const ALIGNED_FROM: usize = 4096;
/// A cache line on every x86-64 and most ARM cores.
const LINE: usize = 64;

/// The system allocator, with large blocks on cache lines (see the module's documentation).
pub struct LineAligned;

#[global_allocator]
static ALLOCATOR: LineAligned = LineAligned;

/// `layout` as the system allocator is asked for it: the same size, aligned to [`LINE`] when
/// large. The rule depends only on the layout, so a block is freed with the layout it was
/// allocated with.
fn widened(layout: Layout) -> Layout {
    if layout.size() >= ALIGNED_FROM && layout.align() < LINE {
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every call goes to `System` with the layout `widened` makes of the caller's, the same
// for a block's allocation and its release; `realloc` moves a block whose alignment rule
// changes with its size by allocating, copying and freeing, as `GlobalAlloc`'s default does.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract (non-zero size, kept by `widened`).
        unsafe { System.alloc(widened(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(widened(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout, hence from `System` with `widened`.
        unsafe { System.dealloc(ptr, widened(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widened(layout);
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new = widened(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        // SAFETY: `ptr` was allocated by `System` with `old`; a new block of `new` is written
        // for the smaller of the two sizes, then the old one freed.
        unsafe {
            if old.align() == new.align() {
                return System.realloc(ptr, old, new_size);
            }
            let moved = System.alloc(new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_start_on_a_cache_line_and_survive_growing_and_shrinking() {
        // Sizes across the threshold both ways, contents kept through every move.
        let mut v: Vec<u8> = (0..100u8).collect();
        for len in [5_000usize, 100_000, 3_000, 4_096, 10, 70_000] {
            let before: Vec<u8> = v.iter().copied().take(len.min(v.len())).collect();
            if len > v.len() {
                v.extend((v.len()..len).map(|i| i as u8));
            } else {
                v.truncate(len);
                v.shrink_to_fit();
            }
            assert_eq!(&v[..before.len()], &before[..]);
            if v.capacity() >= ALIGNED_FROM {
                assert_eq!(v.as_ptr() as usize % LINE, 0, "{len} bytes");
            }
        }
        let floats = vec![1.5f32; 50_000];
        assert_eq!(floats.as_ptr() as usize % LINE, 0);
        assert!(floats.iter().all(|&f| f == 1.5));
    }
}
