//! How the process gives memory back. Two allocators share it: mimalloc
//! serves Rust, glibc's malloc serves librdkafka. With their defaults, the
//! load test's 30 s cut peaked at 824–837 MB; with these settings, at
//! 644–652 MB (BENCHMARKS.md, "Memory a catch-up keeps"). Each setting
//! yields to its allocator's own environment variable when that is set.
//!
//! The one module of the workspace with `unsafe`: three calls into C that
//! each set one option of the process.
#![allow(unsafe_code)]

/// How long mimalloc keeps freed memory before returning it to the OS, ms.
/// Its default, a second, keeps a catch-up's churn resident.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// `mi_option_purge_delay` in the mimalloc.h that libmimalloc-sys builds
/// (v3), which the crate does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Largest allocation glibc's malloc serves from its heaps; larger ones are
/// mapped on their own and unmapped when freed. glibc raises this bound
/// each time such a block is freed, up to 32 MB, so librdkafka's
/// decompression buffers would otherwise stay resident in its heaps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: std::ffi::c_int = 128 << 10;

/// `prctl` options, stable since Linux 3.15 (the libc crate names them on
/// Android only).
#[cfg(target_os = "linux")]
const PR_SET_THP_DISABLE: std::ffi::c_int = 41;
#[cfg(all(test, target_os = "linux"))]
const PR_GET_THP_DISABLE: std::ffi::c_int = 42;

/// Applies the settings. Called first in `main`.
pub fn tune() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    if unset("MIMALLOC_PURGE_DELAY") {
        // SAFETY: sets one integer option; mimalloc reads it when it purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    // mimalloc asks for transparent huge pages: a 2 MB page stays resident
    // while any of it is used (145 MB of the heap at a catch-up's peak).
    // This is what `MIMALLOC_ALLOW_THP=0` does, for the whole process.
    #[cfg(target_os = "linux")]
    if unset("MIMALLOC_ALLOW_THP") {
        // SAFETY: sets a flag of the process; no memory is passed.
        unsafe { libc::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if unset("MALLOC_MMAP_THRESHOLD_") {
        // SAFETY: sets one parameter of glibc's malloc.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the settings are the process's.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn tune_shortens_mimallocs_purge_delay_turns_off_huge_pages_and_fixes_glibcs_threshold() {
        /// Whether a fresh glibc allocation of `bytes` is mapped on its own.
        fn mapped_on_its_own(bytes: usize) -> bool {
            // SAFETY: a block is allocated, written once and freed.
            unsafe {
                let before = libc::mallinfo2().hblks;
                let p = libc::malloc(bytes);
                assert!(!p.is_null());
                p.cast::<u8>().write(1);
                let mapped = libc::mallinfo2().hblks > before;
                libc::free(p);
                mapped
            }
        }
        /// mimalloc's purge delay, and whether huge pages are off.
        fn settings() -> (std::ffi::c_long, bool) {
            // SAFETY: reads an option; reads a flag of the process.
            unsafe {
                (
                    libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                    libc::prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1,
                )
            }
        }
        assert_eq!(
            settings().0,
            1000,
            "option 15 is mimalloc's purge delay (1 s by default)"
        );

        tune();

        // Left to itself, glibc raises its threshold to 4 MB when the first
        // block is freed, and serves the second from its heap.
        assert!(mapped_on_its_own(4 << 20));
        assert!(mapped_on_its_own(1 << 20), "the threshold stays at 128 KB");
        assert_eq!(settings(), (PURGE_DELAY_MS, true));
    }
}
