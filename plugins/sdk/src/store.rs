//! The host's key-value store and clock (WIT `kv` and `clock`, since 0.1.4), with in-memory
//! stand-ins for native tests (see [`crate::testing::kv`]).

pub mod kv {
    //! The host's key-value store for this plugin in the call's virtual host (WIT `kv`).
    //!
    //! Enabled by a `[plugins.kv]` table in the broker's config (caps, `persist`); without it every
    //! call returns [`KvError::Disabled`], and in `init` [`KvError::NotInCall`]. Every call is one
    //! atomic operation: [`increment`] and [`compare_and_swap`] read and write in one step, so
    //! pooled instances serving many connections at once never lose an update.
    //!
    //! ```ignore
    //! // A counter per principal and second: over 10, reject.
    //! let window = clock::now_ms() / 1000;
    //! let n = kv::increment(&format!("{}/{window}", sender.name), 1, Some(2000))?;
    //! ```
    //!
    //! In native tests the store is a map per test thread, with the caps' defaults on key and
    //! value lengths only; [`crate::testing::kv::reset`] empties it.

    pub use crate::bindings::plugboard::plugin::kv::KvError;

    /// The value of `key` (`None`: absent or expired).
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::kv::get(key);
        #[cfg(not(target_arch = "wasm32"))]
        native::get(key)
    }

    /// Sets `key` to `value`, expiring `ttl_ms` from now (never without one).
    pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::kv::set(key, value, ttl_ms);
        #[cfg(not(target_arch = "wasm32"))]
        native::set(key, value, ttl_ms)
    }

    /// Removes `key`; whether it was there.
    pub fn delete(key: &str) -> Result<bool, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::kv::delete(key);
        #[cfg(not(target_arch = "wasm32"))]
        native::delete(key)
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0) and returns the sum; `ttl_ms`
    /// applies only when this call creates the entry.
    pub fn increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::kv::increment(key, delta, ttl_ms);
        #[cfg(not(target_arch = "wasm32"))]
        native::increment(key, delta, ttl_ms)
    }

    /// Sets `key` to `value` only if it holds `expected` (`None`: only if absent); whether it
    /// did.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::kv::compare_and_swap(
            key, expected, value, ttl_ms,
        );
        #[cfg(not(target_arch = "wasm32"))]
        native::compare_and_swap(key, expected, value, ttl_ms)
    }

    /// Up to `limit` (at most 1000) keys starting with `prefix`, in byte order.
    pub fn keys(prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::kv::keys(prefix, limit);
        #[cfg(not(target_arch = "wasm32"))]
        native::keys(prefix, limit)
    }

    /// The native stand-in: a map per thread, expiry by [`super::clock::now_ms`].
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) mod native {
        use super::KvError;
        use std::cell::RefCell;
        use std::collections::BTreeMap;

        thread_local! {
            static MAP: RefCell<BTreeMap<String, (Vec<u8>, u64)>> = const { RefCell::new(BTreeMap::new()) };
        }

        const MAX_KEY: usize = 256;
        const MAX_VALUE: usize = 4096;

        pub fn reset() {
            MAP.with(|m| m.borrow_mut().clear());
        }

        fn checked(key: &str) -> Result<u64, KvError> {
            if key.is_empty() || key.len() > MAX_KEY {
                return Err(KvError::KeyTooLong);
            }
            let now = crate::clock::now_ms();
            MAP.with(|m| {
                let mut m = m.borrow_mut();
                if m.get(key).is_some_and(|(_, at)| *at != 0 && *at <= now) {
                    m.remove(key);
                }
            });
            Ok(now)
        }

        fn expiry(now: u64, ttl: Option<u64>) -> u64 {
            ttl.map_or(0, |t| now.saturating_add(t).max(1))
        }

        pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
            checked(key)?;
            Ok(MAP.with(|m| m.borrow().get(key).map(|(v, _)| v.clone())))
        }

        pub fn set(key: &str, value: &[u8], ttl: Option<u64>) -> Result<(), KvError> {
            let now = checked(key)?;
            if value.len() > MAX_VALUE {
                return Err(KvError::ValueTooLarge);
            }
            MAP.with(|m| {
                m.borrow_mut()
                    .insert(key.to_string(), (value.to_vec(), expiry(now, ttl)))
            });
            Ok(())
        }

        pub fn delete(key: &str) -> Result<bool, KvError> {
            checked(key)?;
            Ok(MAP.with(|m| m.borrow_mut().remove(key).is_some()))
        }

        pub fn increment(key: &str, delta: i64, ttl: Option<u64>) -> Result<i64, KvError> {
            let now = checked(key)?;
            MAP.with(|m| {
                let mut m = m.borrow_mut();
                let (current, at) = match m.get(key) {
                    None => (0, expiry(now, ttl)),
                    Some((v, at)) => {
                        let n = std::str::from_utf8(v)
                            .ok()
                            .and_then(|t| t.parse::<i64>().ok())
                            .ok_or(KvError::NotANumber)?;
                        (n, *at)
                    }
                };
                let next = current.checked_add(delta).ok_or(KvError::Overflow)?;
                m.insert(key.to_string(), (next.to_string().into_bytes(), at));
                Ok(next)
            })
        }

        pub fn compare_and_swap(
            key: &str,
            expected: Option<&[u8]>,
            value: &[u8],
            ttl: Option<u64>,
        ) -> Result<bool, KvError> {
            let now = checked(key)?;
            if value.len() > MAX_VALUE {
                return Err(KvError::ValueTooLarge);
            }
            MAP.with(|m| {
                let mut m = m.borrow_mut();
                if m.get(key).map(|(v, _)| v.as_slice()) != expected {
                    return Ok(false);
                }
                m.insert(key.to_string(), (value.to_vec(), expiry(now, ttl)));
                Ok(true)
            })
        }

        pub fn keys(prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
            let now = crate::clock::now_ms();
            Ok(MAP.with(|m| {
                m.borrow()
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .filter(|(_, (_, at))| *at == 0 || *at > now)
                    .take(limit.min(1000) as usize)
                    .map(|(k, _)| k.clone())
                    .collect()
            }))
        }
    }
}

pub mod clock {
    //! The host's clocks (WIT `clock`).
    //!
    //! In native tests the wall clock reads the system's until [`crate::testing::clock::set`]
    //! fixes it for the test thread (then [`crate::testing::clock::advance`] moves it).

    /// Wall-clock time, milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::clock::now_ms();
        #[cfg(not(target_arch = "wasm32"))]
        native::now_ms()
    }

    /// Milliseconds since a point fixed when the broker started; never goes backwards.
    pub fn monotonic_ms() -> u64 {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::clock::monotonic_ms();
        #[cfg(not(target_arch = "wasm32"))]
        native::now_ms()
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) mod native {
        use std::cell::Cell;

        thread_local! {
            /// A fixed time for tests (unix ms), when set.
            pub static FIXED: Cell<Option<u64>> = const { Cell::new(None) };
        }

        pub fn now_ms() -> u64 {
            FIXED.with(Cell::get).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            })
        }
    }
}
