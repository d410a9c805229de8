//! The WIT `kv` and `clock` imports as an instance's store state answers them: each `kv` call
//! runs one operation on the space of the call's vhost ([`CallKv::run`]), or is refused
//! without touching anything (`disabled`, `not-in-call`).

use std::sync::Arc;

use super::super::bindings::{clock, kv};
use super::super::pool::State;
use super::space::Space;
use super::{CallKv, KvSettings, Refusal};
use kv::KvError;

/// Runs `op` for the current call, or refuses it.
fn with_space<T>(
    state: &mut State,
    op: impl FnOnce(&mut Space, &KvSettings, u64, &mut dyn super::space::Sink) -> Result<T, Refusal>,
) -> Result<T, KvError> {
    if !state.in_call {
        return Err(KvError::NotInCall);
    }
    let vhost: Arc<str> = state.vhost.clone();
    let kv: &mut CallKv = state.kv.as_mut().ok_or(KvError::Disabled)?;
    kv.run(&vhost, op)
}

impl kv::Host for State {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        with_space(self, |space, settings, now, sink| {
            space.get(settings, &key, now, sink)
        })
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), KvError> {
        with_space(self, |space, settings, now, sink| {
            space.set(settings, &key, value, ttl_ms, now, sink)
        })
    }

    fn delete(&mut self, key: String) -> Result<bool, KvError> {
        with_space(self, |space, settings, now, sink| {
            space.delete(settings, &key, now, sink)
        })
    }

    fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        with_space(self, |space, settings, now, sink| {
            space.increment(settings, &key, delta, ttl_ms, now, sink)
        })
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        with_space(self, |space, settings, now, sink| {
            space.compare_and_swap(
                settings,
                &key,
                expected.as_deref(),
                value,
                ttl_ms,
                now,
                sink,
            )
        })
    }

    fn keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, KvError> {
        with_space(self, |space, _, now, _| Ok(space.keys(&prefix, limit, now)))
    }
}

impl clock::Host for State {
    fn now_ms(&mut self) -> u64 {
        super::now_ms()
    }

    fn monotonic_ms(&mut self) -> u64 {
        super::monotonic_ms()
    }
}
