//! Memory: large blocks kept for reuse while the broker is busy, and given back to the OS
//! after a burst.
//!
//! glibc's allocator keeps freed memory in its arenas: after a burst of large messages the
//! broker's RSS stayed at 45 MiB while it needed 8 (measured; `MALLOC_ARENA_MAX` and the trim
//! threshold did not help, nor did mimalloc). A background task asks glibc to release free
//! memory every few seconds, which is cheap when there is nothing to release.
//!
//! The opposite problem while busy: a frame's read buffer (64 KiB chunks, or the whole frame
//! for a large body) is allocated, filled by the kernel, and freed when its messages have gone
//! out. glibc serves blocks that size with fresh `mmap`s or trims them off its heaps with
//! `madvise` right after the free, so every buffer's pages were faulted in (and zeroed by the
//! kernel) again: 40 % of the broker's CPU with 1 MiB messages was page faults and `madvise`.
//! [`BrokerAllocator`] keeps up to [`CACHE_BYTES`] of freed blocks of [`MIN_CACHED`] bytes or
//! more and hands the most recently freed one of the right size back first (its pages are
//! mapped and still warm in the CPU cache); every other allocation goes straight to glibc. The
//! periodic release empties the cache before trimming, so RSS still returns to idle.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// How often free memory is handed back.
const EVERY: Duration = Duration::from_secs(2);

/// Blocks at least this large are cached (sizes are rounded up to a multiple of it).
pub const MIN_CACHED: usize = 64 * 1024;
/// Blocks larger than this are never cached (the largest frame is 16 MiB by default).
const MAX_CACHED: usize = 32 * 1024 * 1024;
/// Most bytes the cache holds.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Most blocks the cache holds (a fixed array: the cache itself never allocates).
const SLOTS: usize = 256;

/// The broker binary's global allocator: glibc's, with large freed blocks kept for reuse.
pub struct BrokerAllocator;

/// Freed large blocks, most recent last.
struct Cache {
    blocks: [(usize, usize); SLOTS],
    len: usize,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    blocks: [(0, 0); SLOTS],
    len: 0,
    bytes: 0,
});

/// The size a cacheable request is served with, or `None` for requests glibc gets as they are.
fn cached_size(layout: Layout) -> Option<usize> {
    let size = layout.size();
    ((MIN_CACHED..=MAX_CACHED).contains(&size) && layout.align() <= 16)
        .then(|| size.div_ceil(MIN_CACHED) * MIN_CACHED)
}

fn lock_cache() -> std::sync::MutexGuard<'static, Cache> {
    // Nothing panics while holding it; a poisoned lock still holds a consistent cache.
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cache {
    /// Takes the most recently freed block of `size` bytes.
    fn take(&mut self, size: usize) -> Option<*mut u8> {
        let at = self.blocks[..self.len]
            .iter()
            .rposition(|&(_, s)| s == size)?;
        let (ptr, _) = self.blocks[at];
        self.blocks.copy_within(at + 1..self.len, at);
        self.len -= 1;
        self.bytes -= size;
        Some(ptr as *mut u8)
    }

    /// Keeps a freed block, if there is room.
    fn keep(&mut self, ptr: *mut u8, size: usize) -> bool {
        if self.len == SLOTS || self.bytes + size > CACHE_BYTES {
            return false;
        }
        self.blocks[self.len] = (ptr as usize, size);
        self.len += 1;
        self.bytes += size;
        true
    }
}

// SAFETY (for the impl): every block handed out comes from `System` with the layout
// `(cached_size(layout), layout.align())` when `cached_size` is `Some`, else with `layout`
// itself; `dealloc` computes the same rounded size from the same layout, so a block always goes
// back to `System` (or into the cache) with the layout it was allocated with. Cached blocks are
// owned by nobody else: one is handed out to a single caller and removed from the cache first.
// The cache lock never allocates (fixed array), so the allocator does not re-enter itself.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for BrokerAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(size) = cached_size(layout) else {
            return unsafe { System.alloc(layout) };
        };
        if let Some(ptr) = lock_cache().take(size) {
            return ptr;
        }
        unsafe { System.alloc(Layout::from_size_align_unchecked(size, layout.align())) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if cached_size(layout).is_none() {
            return unsafe { System.alloc_zeroed(layout) };
        }
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(size) = cached_size(layout) else {
            return unsafe { System.dealloc(ptr, layout) };
        };
        if lock_cache().keep(ptr, size) {
            return;
        }
        unsafe { System.dealloc(ptr, Layout::from_size_align_unchecked(size, layout.align())) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if cached_size(layout).is_none() && cached_size(new_layout).is_none() {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Either side is a cached size: move the bytes between blocks of our own sizes.
        if cached_size(layout).is_some() && cached_size(layout) == cached_size(new_layout) {
            return ptr;
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Frees every cached block (back to glibc); returns the bytes freed.
#[allow(unsafe_code)]
pub fn drain_cache() -> usize {
    // Take the blocks and free them after the lock is released: freeing large blocks means
    // `munmap`s, which other threads' large allocations should not wait behind.
    let (blocks, len, freed) = {
        let mut cache = lock_cache();
        let taken = (cache.blocks, cache.len, cache.bytes);
        cache.len = 0;
        cache.bytes = 0;
        taken
    };
    for &(ptr, size) in &blocks[..len] {
        // SAFETY: cached blocks were allocated by `System` with this size and an alignment of
        // at most 16, which is what `System` gives any such size (align 16 is glibc's minimum).
        unsafe { System.dealloc(ptr as *mut u8, Layout::from_size_align_unchecked(size, 16)) };
    }
    freed
}

/// Releases free heap memory periodically until shutdown (a no-op where glibc is not the
/// allocator).
pub async fn release_periodically(mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
        // A trim walks the arenas under their locks: off the async workers.
        let _ = tokio::task::spawn_blocking(release).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    drain_cache();
    // SAFETY: malloc_trim only returns free pages of glibc's own heap to the kernel; it takes
    // the allocator's locks itself and is safe to call from any thread at any time.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {
    drain_cache();
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// One test (the cache is process-wide; the test binary's own allocator is `System`, so
    /// only this test touches it).
    #[test]
    fn large_blocks_are_reused_most_recent_first_and_drained() {
        let a = BrokerAllocator;
        let big = Layout::from_size_align(1_050_000, 8).unwrap();
        let small = Layout::from_size_align(1000, 8).unwrap();
        unsafe {
            let p1 = a.alloc(big);
            let p2 = a.alloc(big);
            assert!(!p1.is_null() && !p2.is_null());
            p1.write_bytes(7, big.size());
            a.dealloc(p1, big);
            a.dealloc(p2, big);
            // The most recently freed block of that (rounded) size comes back first.
            let q = a.alloc(Layout::from_size_align(1_100_000, 8).unwrap());
            assert_eq!(q, p2);
            // Zeroed requests are zeroed even when served from the cache.
            let z = a.alloc_zeroed(big);
            assert_eq!(z, p1);
            assert!(std::slice::from_raw_parts(z, big.size())
                .iter()
                .all(|&b| b == 0));
            // Growing within the same rounded size keeps the block; across sizes it moves.
            let same = a.realloc(z, big, 1_060_000);
            assert_eq!(same, z);
            let moved = a.realloc(
                same,
                Layout::from_size_align(1_060_000, 8).unwrap(),
                2_000_000,
            );
            assert!(!moved.is_null());
            // What was zeroed moves with the block (the bytes the first realloc added were
            // never zeroed: realloc does not promise that, and a block malloc reused holds
            // whatever it held).
            assert!(std::slice::from_raw_parts(moved, big.size())
                .iter()
                .all(|&b| b == 0));
            a.dealloc(moved, Layout::from_size_align(2_000_000, 8).unwrap());
            a.dealloc(q, Layout::from_size_align(1_100_000, 8).unwrap());
            // Small blocks are never cached.
            let s = a.alloc(small);
            a.dealloc(s, small);
            assert!(lock_cache().bytes >= 2 * 1_048_576);
            // The cache is bounded.
            let many: Vec<*mut u8> = (0..80).map(|_| a.alloc(big)).collect();
            for p in many {
                a.dealloc(p, big);
            }
            assert!(lock_cache().bytes <= CACHE_BYTES);
            assert!(drain_cache() > 0);
            assert_eq!(lock_cache().len, 0);
            assert_eq!(drain_cache(), 0);
        }
    }
}
