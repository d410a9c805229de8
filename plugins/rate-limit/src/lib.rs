//! Sample send plugin: at most `rate` SENDs per second per principal per destination, with
//! bursts of up to `burst`; a SEND over the limit is rejected with the reason code `exceeded`
//! (the client's ERROR carries `error-code:plugin.<plugin-name>.exceeded`, e.g.
//! `plugin.rate-limit.exceeded`).
//!
//! ```toml
//! [[plugins]]
//! name = "rate-limit"
//! file = "rate-limit.wasm"
//! hooks = ["send"]
//! destinations = ["/queue/*", "/topic/*"]
//! kv = {}                      # the host's kv store (memory only; `persist = true` to journal)
//! [plugins.config]
//! rate = 10                    # SENDs per second, per principal and destination
//! burst = 20                   # how many may come at once after a quiet spell (default: rate)
//! destinations = ["/queue/orders*"]   # which destinations are limited (default: all)
//! ```
//!
//! State: a token bucket per (principal, destination) in the host's kv store (WIT `kv`, keyed
//! by the principal's length and name, then the destination), timed by the host's wall clock
//! (WIT `clock`). A SEND reads the bucket, refills it for the time since, takes a token and
//! writes it back with `compare-and-swap`, so two SENDs of the same principal served by two
//! instances at once never both spend the last token (a lost race is retried). An entry expires
//! once its bucket would be full again (an absent bucket is a full one), so idle pairs cost
//! nothing. The store is per vhost: counts in one vhost never limit another.
//!
//! When the store refuses (its caps reached: too many principals × destinations in the window)
//! the SEND is rejected with the code `unavailable` (`on_store_error = "accept"` lets it
//! through instead).

use plugboard_sdk::prelude::*;

/// The plugin's config.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SENDs per second per principal per destination (1 to 1,000,000).
    pub rate: u32,
    /// The bucket's size: SENDs allowed at once after a quiet spell (default: `rate`).
    pub burst: Option<u32>,
    /// Destination patterns limited (`*` matches any run of characters); default all.
    #[serde(default = "all")]
    pub destinations: Vec<String>,
    /// What a SEND gets when the kv store refuses: `reject` (default) or `accept`.
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

fn all() -> Vec<String> {
    vec!["*".to_string()]
}

/// What a SEND gets when the kv store refuses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Rejected, code `unavailable` (the limit cannot be checked: fail closed).
    #[default]
    Reject,
    /// Accepted (the limit is not enforced while the store refuses).
    Accept,
}

/// Most `compare-and-swap` attempts per SEND before it counts as over the limit.
pub const MAX_ATTEMPTS: usize = 8;
/// Thousandths of a token: the bucket's unit, so that refills of a few ms count.
const MILLI: u64 = 1000;

/// The rate limiter.
pub struct RateLimit {
    rate: u64,
    burst: u64,
    destinations: Vec<String>,
    on_store_error: OnStoreError,
}

impl Plugin for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if !(1..=1_000_000).contains(&config.rate) {
            return Err("rate must be between 1 and 1000000 (SENDs per second)".into());
        }
        let burst = config.burst.unwrap_or(config.rate);
        if !(1..=1_000_000).contains(&burst) {
            return Err("burst must be between 1 and 1000000".into());
        }
        if config.destinations.is_empty() || config.destinations.len() > 256 {
            return Err("destinations: between 1 and 256 patterns".into());
        }
        Ok(RateLimit {
            rate: u64::from(config.rate),
            burst: u64::from(burst),
            destinations: config.destinations,
            on_store_error: config.on_store_error,
        })
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (linear in
/// practice, never exponential: one backtrack point).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// A bucket as stored: thousandths of tokens left, and when it was last refilled (unix ms).
fn encode(tokens: u64, at: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&tokens.to_le_bytes());
    out[8..].copy_from_slice(&at.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let tokens = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let at = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((tokens, at))
}

/// The kv key of `principal`'s bucket for `destination` (the length first: no two pairs meet).
pub fn bucket_key(principal: &str, destination: &str) -> String {
    format!("{}:{principal}{destination}", principal.len())
}

impl RateLimit {
    /// Takes a token from the bucket at `key`: whether there was one.
    fn take(&self, key: &str) -> Result<bool, kv::KvError> {
        let full = self.burst * MILLI;
        for _ in 0..MAX_ATTEMPTS {
            let now = clock::now_ms();
            let current = kv::get(key)?;
            let (tokens, at) = current.as_deref().and_then(decode).unwrap_or((full, now));
            // A clock that stepped back refills nothing (and never underflows).
            let refill = now.saturating_sub(at).saturating_mul(self.rate);
            let tokens = tokens.saturating_add(refill).min(full);
            if tokens < MILLI {
                return Ok(false);
            }
            let left = tokens - MILLI;
            // Absent means full: the entry may go once the bucket would have refilled.
            let ttl = (full - left).div_ceil(self.rate).max(1);
            if kv::compare_and_swap(key, current.as_deref(), &encode(left, now), Some(ttl))? {
                return Ok(true);
            }
        }
        // Lost every race: as many SENDs of this pair at once as there are attempts.
        Ok(false)
    }
}

impl Router for RateLimit {
    fn on_send(&self, sender: &Principal, msg: &Message) -> SendVerdict {
        let destination = msg.destination.as_str();
        if !self.destinations.iter().any(|p| glob(p, destination)) {
            return SendVerdict::Keep;
        }
        match self.take(&bucket_key(&sender.name, destination)) {
            Ok(true) => SendVerdict::Keep,
            Ok(false) => {
                trace_note!("{} over {}/s on {destination}", sender.name, self.rate);
                SendVerdict::Reject(coded_reason(
                    "exceeded",
                    &format!(
                        "rate limit of {} messages per second to {destination} exceeded",
                        self.rate
                    ),
                ))
            }
            Err(error) => match self.on_store_error {
                OnStoreError::Accept => SendVerdict::Keep,
                OnStoreError::Reject => SendVerdict::Reject(coded_reason(
                    "unavailable",
                    &format!(
                        "rate limit cannot be checked: kv store refused ({})",
                        error.name()
                    ),
                )),
            },
        }
    }
}

plugboard_sdk::export_router!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_sdk::testing::{clock as test_clock, kv as test_kv, Harness};

    fn harness(config: &str) -> Harness<RateLimit> {
        test_kv::reset();
        test_clock::set(1_000_000);
        Harness::new(config).unwrap()
    }

    fn send(h: &Harness<RateLimit>, who: &str, dest: &str) -> SendVerdict {
        h.send(&Principal::named(who), Message::new(dest))
    }

    fn rejected(v: &SendVerdict, code: &str) -> bool {
        matches!(v, SendVerdict::Reject(r) if r.starts_with(&format!("[{code}] ")))
    }

    #[test]
    fn the_burst_passes_then_the_next_is_rejected_until_a_token_refills() {
        let h = harness(r#"{"rate": 2, "burst": 3}"#);
        for _ in 0..3 {
            assert_eq!(send(&h, "alice", "/queue/a"), SendVerdict::Keep);
        }
        let over = send(&h, "alice", "/queue/a");
        assert!(rejected(&over, "exceeded"), "{over:?}");
        test_clock::advance(499);
        assert!(rejected(&send(&h, "alice", "/queue/a"), "exceeded"));
        test_clock::advance(1);
        assert_eq!(
            send(&h, "alice", "/queue/a"),
            SendVerdict::Keep,
            "one token in 500 ms"
        );
        assert!(rejected(&send(&h, "alice", "/queue/a"), "exceeded"));
    }

    #[test]
    fn principals_and_destinations_have_their_own_buckets() {
        let h = harness(r#"{"rate": 1}"#);
        assert_eq!(send(&h, "alice", "/queue/a"), SendVerdict::Keep);
        assert!(rejected(&send(&h, "alice", "/queue/a"), "exceeded"));
        assert_eq!(send(&h, "bob", "/queue/a"), SendVerdict::Keep);
        assert_eq!(send(&h, "alice", "/queue/b"), SendVerdict::Keep);
        // Names that would meet if joined without the length do not.
        assert_ne!(bucket_key("a", "b/queue"), bucket_key("ab", "/queue"));
    }

    #[test]
    fn only_the_configured_destinations_are_limited() {
        let h = harness(r#"{"rate": 1, "destinations": ["/queue/orders*"]}"#);
        for _ in 0..5 {
            assert_eq!(send(&h, "alice", "/queue/other"), SendVerdict::Keep);
        }
        assert_eq!(send(&h, "alice", "/queue/orders.eu"), SendVerdict::Keep);
        assert!(rejected(&send(&h, "alice", "/queue/orders.eu"), "exceeded"));
    }

    #[test]
    fn a_full_bucket_leaves_no_entry_behind_its_refill() {
        let h = harness(r#"{"rate": 10, "burst": 10}"#);
        assert_eq!(send(&h, "alice", "/queue/a"), SendVerdict::Keep);
        let key = bucket_key("alice", "/queue/a");
        assert!(kv::get(&key).unwrap().is_some());
        test_clock::advance(100);
        assert!(kv::get(&key).unwrap().is_none(), "expired once refilled");
    }

    #[test]
    fn a_store_that_refuses_rejects_unless_told_to_accept() {
        let long = "x".repeat(300); // beyond the key cap
        let h = harness(r#"{"rate": 1}"#);
        assert!(rejected(&send(&h, &long, "/queue/a"), "unavailable"));
        let h = harness(r#"{"rate": 1, "on_store_error": "accept"}"#);
        assert_eq!(send(&h, &long, "/queue/a"), SendVerdict::Keep);
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{"rate": 0}"#,
            r#"{"rate": 1, "burst": 0}"#,
            r#"{"rate": 1, "destinations": []}"#,
            r#"{"rate": 1, "rat": 2}"#,
            r#"{}"#,
        ] {
            assert!(Harness::<RateLimit>::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glob_matches_stars_and_literals() {
        assert!(glob("*", "/queue/a"));
        assert!(glob("/queue/orders*", "/queue/orders.eu"));
        assert!(!glob("/queue/orders*", "/queue/order"));
        assert!(glob("/queue/*.eu", "/queue/a.b.eu"));
        assert!(glob("/queue/a", "/queue/a") && !glob("/queue/a", "/queue/ab"));
        assert!(glob(&"*a".repeat(20), &"a".repeat(40)));
        assert!(!glob(&"*a".repeat(20), &"a".repeat(19)));
    }
}
