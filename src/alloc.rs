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
//! on a 16-byte-misaligned buffer and 2,410 aligned (one core of a Xeon with AMX). Why by hand:
//! `mimalloc` and `jemalloc` would replace glibc's allocator, whose settings above were
//! measured; `alloc-align` (nightly's `allocator_api` only) widens each layout's alignment,
//! which with glibc is `posix_memalign` and its fragmentation (see [`LineAligned`]).
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
///
/// A large block is a `malloc` block [`LINE`] bytes longer, handed out from the first cache
/// line boundary with room for the offset before it (16 to 64 bytes in), the offset kept in the
/// 8 bytes before that boundary. `posix_memalign` would
/// do the same in one call, but it splits the heap's free blocks around every aligned one: the
/// leftovers kept large freed tensors from merging, and a bf16 training step's peak memory went
/// from 1.2 to 2.0 GB.
pub struct LineAligned;

#[global_allocator]
static ALLOCATOR: LineAligned = LineAligned;

/// Whether `layout` is served as a large block, on a cache line by [`LineAligned`] itself
/// (otherwise as `System` serves it). Depends on the layout alone, so a block is always freed
/// the way it was allocated.
fn shifted(layout: Layout) -> bool {
    layout.size() >= ALIGNED_FROM && layout.align() <= 16 && layout.size() <= isize::MAX as usize - LINE
}

/// How far past `raw` (a 16-byte aligned `malloc` block) its first cache line boundary with
/// room for the offset before it lies: 16, 32, 48 or 64 bytes.
fn offset_past(raw: *mut u8) -> usize {
    LINE - raw as usize % LINE
}

/// The cache line boundary past `raw` ([`offset_past`]), with the offset written in the 8 bytes
/// before it.
///
/// # Safety
/// `raw` is a 16-byte aligned block of at least `LINE` bytes more than the caller will use
/// past the boundary.
unsafe fn align_past(raw: *mut u8) -> *mut u8 {
    let offset = offset_past(raw);
    // SAFETY: `offset` is 16 to 64 bytes, within the block; the 8 bytes before the boundary
    // are past `raw`, and 8-byte aligned.
    unsafe {
        let aligned = raw.add(offset);
        (aligned as *mut usize).sub(1).write(offset);
        aligned
    }
}

/// The `malloc` block behind a pointer [`align_past`] returned, and its offset.
///
/// # Safety
/// `aligned` came from [`align_past`].
unsafe fn block_of(aligned: *mut u8) -> (*mut u8, usize) {
    // SAFETY: `align_past` wrote the offset there.
    unsafe {
        let offset = (aligned as *const usize).sub(1).read();
        (aligned.sub(offset), offset)
    }
}

// SAFETY: small blocks and over-aligned ones go to `System` unchanged. A large block is a
// `malloc` block of `size + LINE` bytes (16-byte aligned, as glibc and every 64-bit `malloc`
// guarantee), of which the caller gets `size` bytes from a cache line boundary 16 to 64 bytes
// in; `dealloc` and `realloc` find the block from the offset stored just before the boundary.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !shifted(layout) {
            // SAFETY: as the caller's contract.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: a plain allocation; `align_past` stays within its `size + LINE` bytes.
        unsafe {
            let raw = libc::malloc(layout.size() + LINE) as *mut u8;
            if raw.is_null() { raw } else { align_past(raw) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !shifted(layout) {
            // SAFETY: as the caller's contract.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: as `alloc`; `calloc` skips clearing memory fresh from the system.
        unsafe {
            let raw = libc::calloc(layout.size() + LINE, 1) as *mut u8;
            if raw.is_null() { raw } else { align_past(raw) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout (the caller's contract), so from
        // `System` or from `align_past` on a `malloc` block.
        unsafe {
            if shifted(layout) {
                libc::free(block_of(ptr).0 as *mut libc::c_void);
            } else {
                System.dealloc(ptr, layout);
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `ptr` came from this allocator with `layout` (see `dealloc`).
        unsafe {
            match (shifted(layout), shifted(new)) {
                (false, false) => System.realloc(ptr, layout, new_size),
                (true, true) => {
                    // `realloc` keeps the block's first `new_size + LINE` bytes, which hold the
                    // data at its old offset (at most `LINE`); moved, the data then shifts to
                    // the new block's own boundary.
                    let (raw, old_offset) = block_of(ptr);
                    let moved = libc::realloc(raw as *mut libc::c_void, new_size + LINE) as *mut u8;
                    if moved.is_null() {
                        return moved;
                    }
                    let offset = offset_past(moved);
                    if offset != old_offset {
                        // Before the offset is written: it may lie within the data's old place.
                        std::ptr::copy(moved.add(old_offset), moved.add(offset), layout.size().min(new_size));
                    }
                    align_past(moved)
                }
                _ => {
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
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

    /// Large blocks grown one push at a time between other allocations, so that `realloc`
    /// moves them to blocks whose first line lies at other offsets (the data shifted after the
    /// move), keep every value and their alignment; freeing them all leaves the heap usable.
    #[test]
    fn large_blocks_moved_by_realloc_keep_their_values() {
        let mut grown: Vec<Vec<u32>> = (0..8).map(|_| Vec::with_capacity(1100)).collect();
        let mut others = Vec::new();
        for i in 0..20_000u32 {
            let v = &mut grown[i as usize % 8];
            v.push(i);
            assert_eq!(v.as_ptr() as usize % LINE, 0);
            if i % 97 == 0 {
                others.push(vec![i as u8; 4096 + (i as usize % 5) * 48]);
            }
        }
        for (j, v) in grown.iter().enumerate() {
            assert!(v.iter().enumerate().all(|(n, &x)| x as usize == n * 8 + j), "block {j}");
        }
        assert!(others.iter().all(|o| o.iter().all(|&b| b == o[0])));
    }
}
