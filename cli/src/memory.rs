//! Returning freed heap memory to the system.
//!
//! glibc keeps memory a process has freed mapped for reuse. After loading a
//! large registry (parsed on a thread of its own, see `loom_config::Loader`)
//! most of the parse's memory is free but still resident, so the process
//! asks glibc to return it: after each configuration load, and once a minute
//! for whatever the roles freed meanwhile.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Asks the allocator to return free memory to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "one call into glibc; see the SAFETY comment")]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only releases free memory of this process's heaps
    // back to the kernel; it touches no live allocation and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Elsewhere the allocator manages this by itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

/// Releases free memory once a minute until `shutdown`.
pub async fn release_periodically(shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => release_free_memory(),
        }
    }
}
