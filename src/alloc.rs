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
