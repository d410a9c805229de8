//! What `plugin_bench.rs` and `language_bench.rs` share (not part of the broker): loading
//! plugins from `target/plugins`, building messages, and timing calls by this thread's CPU time
//! (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`, the one piece of FFI, which lives here rather than
//! in the broker's library).

#![allow(dead_code)] // each example uses a different part of this module

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plugboard::plugin::{PluginHost, PluginMessage, PluginSpec};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate lives in the workspace")
        .to_path_buf()
}

/// Where the benchmarks keep compiled plugins: `target/plugin-bench-cache`.
pub fn cache() -> PathBuf {
    root().join("target").join("plugin-bench-cache")
}

/// The `[[plugins]]` entries of a TOML text.
pub fn specs(toml_text: &str) -> Result<Vec<PluginSpec>, toml::de::Error> {
    #[derive(serde::Deserialize)]
    struct Doc {
        plugins: Vec<PluginSpec>,
    }
    toml::from_str::<Doc>(toml_text).map(|doc| doc.plugins)
}

/// Loads the `[[plugins]]` of `toml_text` from `target/plugins`, with [`cache`].
pub async fn try_load(toml_text: &str) -> Result<Arc<PluginHost>, String> {
    let specs = specs(toml_text).expect("bench config");
    let dir = root().join("target").join("plugins");
    PluginHost::load(&specs, &dir, &cache())
        .await
        .map_err(|e| e.to_string())
}

/// [`try_load`], panicking with a hint when it fails.
pub async fn load(toml_text: &str) -> Arc<PluginHost> {
    try_load(toml_text)
        .await
        .unwrap_or_else(|e| panic!("{e} (run `cargo xtask plugins` first)"))
}

/// A message to `destination` with these headers and body.
pub fn msg(destination: &str, headers: &[(&str, &str)], body: &[u8]) -> PluginMessage {
    PluginMessage {
        destination: Bytes::copy_from_slice(destination.as_bytes()),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::copy_from_slice(n.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect(),
        body: Bytes::copy_from_slice(body),
    }
}

/// Median of 5 runs of `n` calls of `f`, in µs per call, after `min(n, max_warmup)` calls not
/// timed.
pub async fn time<F, Fut>(max_warmup: u32, n: u32, f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    median_per_call(max_warmup, n, f, false).await
}

/// This thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`), or `None` where unavailable.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn thread_cpu() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` (libc, which std links) writes one `struct timespec`, whose
    // layout on 64-bit Linux is two 64-bit integers, into `ts`, and nothing else.
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    (ok && cfg!(target_pointer_width = "64"))
        .then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// This thread's CPU time so far, or `None` where unavailable.
#[cfg(not(target_os = "linux"))]
pub fn thread_cpu() -> Option<Duration> {
    None
}

/// Like [`time`], but the median of 5 runs in µs of this thread's CPU time per call (robust on a
/// busy machine: time the thread spends descheduled does not count); wall time when the CPU
/// time is unavailable. For single-threaded runtimes, where the calls run on this thread.
pub async fn time_cpu<F, Fut>(max_warmup: u32, n: u32, f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    median_per_call(max_warmup, n, f, true).await
}

/// What [`time`] and [`time_cpu`] measure: warm-up, then the median of 5 timed runs, by this
/// thread's CPU time when `thread_time` (and available), else by the wall clock.
async fn median_per_call<F, Fut>(max_warmup: u32, n: u32, mut f: F, thread_time: bool) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    for _ in 0..n.min(max_warmup) {
        std::hint::black_box(f().await);
    }
    let mut runs = Vec::new();
    for _ in 0..5 {
        let cpu = thread_time.then(thread_cpu).flatten();
        let wall = Instant::now();
        for _ in 0..n {
            std::hint::black_box(f().await);
        }
        let spent = cpu
            .and_then(|a| thread_cpu().map(|b| b.saturating_sub(a)))
            .unwrap_or_else(|| wall.elapsed());
        runs.push(spent.as_secs_f64() * 1e6 / f64::from(n));
    }
    runs.sort_by(f64::total_cmp);
    runs[2]
}
