//! Benchmark support for `host/examples/plugin_bench.rs` (hidden, not API): the raw cost of one
//! call into a warm instance, made synchronously (`call`) and asynchronously (`call_async`, as the
//! host does), without the host's pooling, projection and validation around it.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::send::{self, SendVerdict};
use super::bindings::types::{Header, Message, Principal};
use super::engine;
use super::pool::State;

/// Nanoseconds per call, synchronous and asynchronous.
#[derive(Debug, Clone, Copy)]
pub struct RawCosts {
    pub sync_ns: f64,
    pub async_ns: f64,
}

/// Times `on-send` of `wasm` (which must accept `config`) with a message of `headers` headers and
/// a `body_len`-byte body, `iterations` times each way. Call from a tokio runtime.
pub async fn raw_send_costs(
    wasm: &Path,
    cache_dir: &Path,
    config: &str,
    headers: usize,
    body_len: usize,
    iterations: u32,
) -> Result<RawCosts, String> {
    let bytes = std::fs::read(wasm).map_err(|e| e.to_string())?;
    let (component, _) = engine::load_component(&bytes, cache_dir)?;
    let linker = engine::linker_for(&component)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| format!("{e:#}"))?;
    let lifecycle =
        super::bindings::lifecycle::GuestIndices::new(&pre).map_err(|e| format!("{e:#}"))?;
    let indices = send::GuestIndices::new(&pre).map_err(|e| format!("{e:#}"))?;
    let mut store = Store::new(engine::engine(), State::for_bench());
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let init = lifecycle
        .load(&mut store, &instance)
        .map_err(|e| format!("{e:#}"))?;
    init.call_init(&mut store, config)
        .await
        .map_err(|e| format!("{e:#}"))??;
    let guest = indices
        .load(&mut store, &instance)
        .map_err(|e| format!("{e:#}"))?;
    let principal = Principal {
        name: "bench".into(),
        groups: vec![],
        may_send: vec![],
        may_subscribe: vec![],
    };
    let msg = Message {
        destination: "/queue/bench".into(),
        headers: (0..headers)
            .map(|i| Header {
                name: format!("header-{i}"),
                value: format!("value-{i}"),
            })
            .collect(),
        content_type: None,
        body_len: body_len as u64,
        body: Some(vec![b'x'; body_len]),
    };
    let func = guest.func_on_send();
    let start = Instant::now();
    for _ in 0..iterations {
        let (verdict,) = func
            .call(&mut store, (&principal, &msg))
            .map_err(|e| format!("{e:#}"))?;
        std::hint::black_box(matches!(verdict, SendVerdict::Keep));
    }
    let sync = start.elapsed();
    let start = Instant::now();
    for _ in 0..iterations {
        let verdict = guest
            .call_on_send(&mut store, &principal, &msg)
            .await
            .map_err(|e| format!("{e:#}"))?;
        std::hint::black_box(matches!(verdict, SendVerdict::Keep));
    }
    let asynchronous = start.elapsed();
    let per = |d: Duration| d.as_nanos() as f64 / f64::from(iterations);
    Ok(RawCosts {
        sync_ns: per(sync),
        async_ns: per(asynchronous),
    })
}
