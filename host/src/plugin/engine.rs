//! The process-wide wasmtime `Engine`, its epoch ticker, the deny-all linker and the on-disk
//! cache of compiled components.
//!
//! One `Engine` serves every plugin (and every reloaded plugin set): compiled code is only
//! compatible within an engine's configuration. Epoch interruption is driven by one OS thread
//! that ticks every [`TICK`] while guest code runs; as a tokio task it could starve behind the
//! very guest it must stop. Every guest call holds a [`Running`] guard. The ticker parks after
//! [`IDLE`] with no guest code run, so a broker with plugins does not wake up a thousand times a
//! second while idle (measured: ~5 % of a core; the guard wakes it). And while guest calls are
//! short (a few µs: none is running when the ticker looks), it sleeps up to [`SLOW_TICK`]
//! between ticks rather than [`TICK`]: each wake-up costs the broker CPU (on this 2-core VM,
//! about 17 ms of CPU a second at 1,000 wake-ups, some 40 ns per message under load). So a
//! call that starts while the ticker sleeps may see its first tick up to `SLOW_TICK` late: its
//! deadline, and its first yield to tokio, come at most that much later.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{context, log};
use super::cache::{self, ArtifactCache, Authenticated};
use super::pool::State;

/// Epoch tick: the granularity of deadlines and of the guest's yields back to tokio.
pub const TICK: Duration = Duration::from_millis(1);

/// Longest sleep between ticks while guest calls are short (see the module docs).
pub const SLOW_TICK: Duration = Duration::from_millis(4);

/// Time without guest code after which the ticker parks.
const IDLE: Duration = Duration::from_millis(100);

/// Guards alive: guest code running or about to run.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// A guard was dropped since the ticker last looked.
static RAN: AtomicBool = AtomicBool::new(false);
/// The ticker is parked (or about to park) and must be woken before guest code runs.
static PARKED: AtomicBool = AtomicBool::new(false);
/// The ticker thread, to wake it.
static TICKER: OnceLock<std::thread::Thread> = OnceLock::new();

/// Held while guest code may run (an instance checked out, or being instantiated): the epoch
/// keeps ticking, so its deadline holds.
pub struct Running(());

/// Keeps the epoch ticking until the guard is dropped (wakes the ticker if it is parked).
pub fn running() -> Running {
    // SeqCst pairs with the ticker's store of PARKED and load of RUNNING: either the ticker sees
    // this guard and stays up, or this sees PARKED and wakes it (an unpark before the park
    // makes the park return at once).
    RUNNING.fetch_add(1, Ordering::SeqCst);
    if PARKED.load(Ordering::SeqCst) {
        if let Some(ticker) = TICKER.get() {
            ticker.unpark();
        }
    }
    Running(())
}

impl Drop for Running {
    fn drop(&mut self) {
        RAN.store(true, Ordering::Relaxed);
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The ticker's loop: one epoch increment per wake-up; every [`TICK`] while guest code is
/// running when it looks, up to [`SLOW_TICK`] apart while calls run but are short, parked after
/// [`IDLE`] without any.
fn tick(engine: wasmtime::EngineWeak) {
    let mut interval = TICK;
    let mut idle = Duration::ZERO;
    loop {
        std::thread::sleep(interval);
        match engine.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
        if RUNNING.load(Ordering::SeqCst) > 0 {
            // A call may be running long: its deadline and yields need every tick.
            (interval, idle) = (TICK, Duration::ZERO);
            continue;
        }
        if RAN.swap(false, Ordering::Relaxed) {
            // Calls, but none running now: they are short.
            (interval, idle) = ((interval * 2).min(SLOW_TICK), Duration::ZERO);
            continue;
        }
        idle += interval;
        if idle < IDLE {
            continue;
        }
        PARKED.store(true, Ordering::SeqCst);
        if RUNNING.load(Ordering::SeqCst) == 0 {
            // Spurious wake-ups only cost a tick.
            std::thread::park();
        }
        PARKED.store(false, Ordering::SeqCst);
        (interval, idle) = (TICK, Duration::ZERO);
    }
}

/// The process-wide engine; the ticker thread starts with it.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            // No component-model async in our WIT; disabling it makes each call ~3x cheaper.
            .concurrency_support(false)
            .max_wasm_stack(512 * 1024);
        let engine = Engine::new(&config).expect("the plugin engine configuration is valid");
        let weak = engine.weak();
        let ticker = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || tick(weak))
            .expect("spawning the plugin epoch thread");
        let _ = TICKER.set(ticker.thread().clone());
        engine
    })
}

/// A linker for one component: the `log` and `context` imports, and every other import (WASI that the
/// guest's standard library links) defined as a trap, so the plugin has no filesystem, network,
/// environment or clock. Imports outside `wasi:` and `plugboard:` refuse the component.
pub fn linker_for(component: &Component) -> Result<Linker<State>, String> {
    let engine = engine();
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if !(name.starts_with("wasi:") || name.starts_with("plugboard:plugin/")) {
            return Err(format!(
                "imports `{name}`, which the plugin host does not provide"
            ));
        }
    }
    let mut linker = Linker::<State>::new(engine);
    log::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .map_err(|e| format!("{e:#}"))?;
    context::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .map_err(|e| format!("{e:#}"))?;
    for (name, _) in ty.imports(engine) {
        define_older_import(&mut linker, name).map_err(|e| format!("{e:#}"))?;
    }
    // Rust's std seeds `HashMap` from `wasi:random/insecure-seed`: grant that one (it is not a
    // capability, just a per-process seed against hash flooding) so ordinary guests run.
    let seed = insecure_seed();
    linker
        .instance("wasi:random/insecure-seed@0.2.6")
        .and_then(|mut i| i.func_wrap("insecure-seed", move |_, (): ()| Ok((seed,))))
        .map_err(|e| format!("{e:#}"))?;
    linker
        .define_unknown_imports_as_traps(component)
        .map_err(|e| format!("{e:#}"))?;
    Ok(linker)
}

/// The host's version of the imports it defines (`log`, `context`).
const IMPORTS_VERSION: &str = "0.1.4";

/// Defines an import of `log` or `context` that a plugin built against an older 0.1.x WIT names
/// with its own version (e.g. `plugboard:plugin/log@0.1.1`) under that exact name too.
/// Instantiation would find the host's newer version by semver, but
/// `define_unknown_imports_as_traps` looks names up exactly and would stub it as a trap first.
fn define_older_import(linker: &mut Linker<State>, name: &str) -> wasmtime::Result<()> {
    use wasmtime::StoreContextMut;
    let Some((interface, version)) = name
        .strip_prefix("plugboard:plugin/")
        .and_then(|rest| rest.split_once('@'))
    else {
        return Ok(());
    };
    if version == IMPORTS_VERSION || !version.starts_with("0.1.") {
        return Ok(());
    }
    match interface {
        "log" => {
            linker.instance(name)?.func_wrap(
                "log",
                |mut store: StoreContextMut<'_, State>, (level, message): (log::Level, String)| {
                    log::Host::log(store.data_mut(), level, message);
                    Ok(())
                },
            )?;
        }
        "context" => {
            let mut instance = linker.instance(name)?;
            instance.func_wrap("vhost", |mut store: StoreContextMut<'_, State>, (): ()| {
                Ok((context::Host::vhost(store.data_mut()),))
            })?;
            instance.func_wrap(
                "tracing",
                |mut store: StoreContextMut<'_, State>, (): ()| {
                    Ok((context::Host::tracing(store.data_mut()),))
                },
            )?;
            instance.func_wrap(
                "note",
                |mut store: StoreContextMut<'_, State>, (text,): (String,)| {
                    context::Host::note(store.data_mut(), text);
                    Ok(())
                },
            )?;
        }
        _ => {}
    }
    Ok(())
}

fn insecure_seed() -> (u64, u64) {
    use std::hash::BuildHasher;
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    *SEED.get_or_init(|| {
        let state = std::collections::hash_map::RandomState::new();
        (state.hash_one(1u8), state.hash_one(2u8))
    })
}

/// Compiles `wasm`, or loads it from `cache` where it is stored under the sha256 of the bytes
/// and a hash of the engine's configuration and version, authenticated (see [`super::cache`]).
/// An artifact that does not verify or deserialize is ignored (with a warning), and the
/// component compiled and stored again. Blocking: call it off the runtime.
pub fn load_component(
    wasm: &[u8],
    cache: Option<&ArtifactCache>,
) -> Result<(Component, bool), String> {
    let engine = engine();
    let Some(cache) = cache else {
        let component = Component::new(engine, wasm).map_err(|e| format!("compiling: {e:#}"))?;
        return Ok((component, false));
    };
    let name = cache_name(wasm);
    let path = cache.path(&name);
    match cache.read(&name) {
        Ok(Some(artifact)) => match deserialize(&artifact) {
            Ok(component) => return Ok((component, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached plugin: {e:#}")
            }
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(
            path = %path.display(),
            "ignoring cached plugin: {e}; compiling it again"
        ),
    }
    let component = Component::new(engine, wasm).map_err(|e| format!("compiling: {e:#}"))?;
    let stored = component
        .serialize()
        .map_err(std::io::Error::other)
        .and_then(|bytes| cache.write(&name, &bytes));
    if let Err(e) = stored {
        tracing::warn!(path = %path.display(), "could not cache compiled plugin: {e}");
    }
    Ok((component, false))
}

/// The cache name of `wasm` for this engine.
fn cache_name(wasm: &[u8]) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine()
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    cache::name(&Sha256::digest(wasm), engine_hash.finish())
}

#[allow(unsafe_code)]
fn deserialize(artifact: &Authenticated) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires bytes produced by `Component::serialize` with a compatible
    // engine and not tampered with since. These bytes are in memory (no file that could change
    // after the check), and `Authenticated` is only made by `ArtifactCache::read` once their
    // HMAC-SHA256 tag verified under the cache's key for exactly this cache name: so this
    // broker's user wrote them with `ArtifactCache::write`, from `Component::serialize`, for
    // these wasm bytes (the name holds their sha256) and this engine's compatibility hash
    // (wasmtime checks its own version and configuration header again). The key is 32 random
    // bytes in a file of mode 0600 that only this user can read, in a directory that only this
    // user can write (both checked when the cache is opened).
    unsafe { Component::deserialize(engine(), artifact.bytes()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component (no imports, no exports) with a custom section `tag`, so that
    /// each `tag` is a different component (and a different cache name).
    fn component(tag: &str) -> Vec<u8> {
        let mut wasm = b"\0asm\x0d\x00\x01\x00".to_vec();
        let payload_len = 1 + tag.len();
        assert!(payload_len < 0x80 && tag.len() < 0x80);
        wasm.extend([0, payload_len as u8, tag.len() as u8]);
        wasm.extend(tag.as_bytes());
        wasm
    }

    fn artifact(cache: &ArtifactCache, wasm: &[u8]) -> std::path::PathBuf {
        cache.path(&cache_name(wasm))
    }

    #[test]
    fn the_imports_version_is_the_wit_packages() {
        let wit = include_str!("../../../wit/plugin.wit");
        assert!(wit.contains(&format!("package plugboard:plugin@{IMPORTS_VERSION};")));
    }

    #[test]
    fn a_compiled_component_is_cached_and_loaded_back() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(tmp.path()).unwrap();
        let a = component("a");
        assert!(!load_component(&a, Some(&cache)).unwrap().1, "compiled");
        assert!(artifact(&cache, &a).is_file());
        assert!(
            load_component(&a, Some(&cache)).unwrap().1,
            "from the cache"
        );
        assert!(!load_component(&a, None).unwrap().1, "no cache: compiled");
    }

    #[test]
    fn a_tampered_artifact_is_not_loaded_and_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(tmp.path()).unwrap();
        let a = component("a");
        load_component(&a, Some(&cache)).unwrap();
        let path = artifact(&cache, &a);
        let good = std::fs::read(&path).unwrap();
        let mut tampered = good.clone();
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0xff;
        std::fs::write(&path, &tampered).unwrap();
        let (_, cached) = load_component(&a, Some(&cache)).unwrap();
        assert!(!cached, "the tampered artifact is not deserialized");
        assert_eq!(std::fs::read(&path).unwrap(), good, "replaced");
        assert!(load_component(&a, Some(&cache)).unwrap().1);
    }

    #[test]
    fn an_artifact_under_another_components_name_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(tmp.path()).unwrap();
        let (a, b) = (component("a"), component("b"));
        load_component(&a, Some(&cache)).unwrap();
        let a_file = std::fs::read(artifact(&cache, &a)).unwrap();
        std::fs::write(artifact(&cache, &b), &a_file).unwrap();
        let (_, cached) = load_component(&b, Some(&cache)).unwrap();
        assert!(!cached, "a's artifact is not run as b");
        let b_file = std::fs::read(artifact(&cache, &b)).unwrap();
        assert_ne!(b_file, a_file, "replaced by b's own");
        assert!(load_component(&b, Some(&cache)).unwrap().1);
    }

    #[test]
    fn an_unauthenticated_artifact_from_before_tags_is_recompiled() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(tmp.path()).unwrap();
        let a = component("a");
        let untagged = Component::new(engine(), &a).unwrap().serialize().unwrap();
        std::fs::write(artifact(&cache, &a), &untagged).unwrap();
        assert!(!load_component(&a, Some(&cache)).unwrap().1);
        assert!(load_component(&a, Some(&cache)).unwrap().1);
    }
}
