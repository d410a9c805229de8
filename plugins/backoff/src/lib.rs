//! Sample redeliver plugin: back-off, then dead-lettering with the last error.
//!
//! A message NACKed (or left by its consumer) for the n-th time is redelivered after the n-th
//! delay of `delays_ms` (default 1 s, 5 s, 30 s); once they are used up it goes to its queue's
//! dead-letter queue (`dlq_prefix` + the queue's name after `/queue/`), its `dlq-reason` the
//! last error the consumer gave: the first of the NACK's `error_headers` (default `error`,
//! `reason`) that it carried. An expired message is dead-lettered at once (`expired`).
//!
//! ```toml
//! [[plugins]]
//! name = "backoff"
//! file = "backoff.wasm"
//! hooks = ["redeliver"]
//! destinations = ["/queue/orders*"]
//! [plugins.config]
//! delays_ms = [1000, 5000, 30000]
//! ```
//!
//! The plugin keeps no state: the delivery count the host passes decides the step.

use plugboard_sdk::prelude::*;

/// The plugin's config.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The delay before each redelivery, by delivery count (ms; at most 8, each at most a day).
    #[serde(default = "default_delays")]
    pub delays_ms: Vec<u32>,
    /// Where a queue's dead-letter queue is: this prefix + the queue's name after `/queue/`
    /// (the broker's `dead_letter.prefix`).
    #[serde(default = "default_prefix")]
    pub dlq_prefix: String,
    /// NACK headers that carry the consumer's error, first found wins.
    #[serde(default = "default_error_headers")]
    pub error_headers: Vec<String>,
}

fn default_delays() -> Vec<u32> {
    vec![1_000, 5_000, 30_000]
}

fn default_prefix() -> String {
    "/queue/DLQ.".to_string()
}

fn default_error_headers() -> Vec<String> {
    vec!["error".to_string(), "reason".to_string()]
}

/// Most steps of back-off.
pub const MAX_STEPS: usize = 8;
/// Longest delay of one step (the host's limit).
pub const MAX_DELAY_MS: u32 = 24 * 60 * 60 * 1000;

/// The back-off policy.
pub struct Backoff(Config);

impl Plugin for Backoff {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.delays_ms.len() > MAX_STEPS {
            return Err(format!("delays_ms: at most {MAX_STEPS} steps"));
        }
        if config.delays_ms.iter().any(|&d| d > MAX_DELAY_MS) {
            return Err("delays_ms: each at most one day (86400000)".into());
        }
        if !config.dlq_prefix.starts_with("/queue/") || config.dlq_prefix.len() <= 7 {
            return Err("dlq_prefix must start with /queue/ and name something after it".into());
        }
        Ok(Backoff(config))
    }
}

impl Backoff {
    /// The dead-letter queue of `queue`.
    fn dead_letter_queue(&self, queue: &str) -> String {
        let name = queue.strip_prefix("/queue/").unwrap_or(queue);
        format!("{}{name}", self.0.dlq_prefix)
    }

    /// The error the consumer gave with its NACK, if any.
    fn last_error<'a>(&self, event: &'a RedeliverEvent) -> Option<&'a str> {
        self.0
            .error_headers
            .iter()
            .find_map(|name| event.nack_headers.header(name))
            .filter(|text| !text.is_empty())
    }
}

impl Redeliverer for Backoff {
    fn on_redeliver(&self, event: &RedeliverEvent) -> RedeliverVerdict {
        let dlq = self.dead_letter_queue(&event.queue);
        if event.reason == RedeliverReason::Expired {
            return RedeliverVerdict::dead_letter(dlq, "expired");
        }
        let step = event.delivery_count.max(1) as usize - 1;
        if let Some(&delay) = self.0.delays_ms.get(step) {
            return RedeliverVerdict::RedeliverAfter(delay);
        }
        let reason = match self.last_error(event) {
            Some(error) => error.to_string(),
            None => format!("gave up after {} deliveries", event.delivery_count),
        };
        RedeliverVerdict::dead_letter(dlq, reason)
    }
}

plugboard_sdk::export_redeliverer!(Backoff);

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_sdk::testing::Harness;

    fn event(count: u32, reason: RedeliverReason, nack: &[(&str, &str)]) -> RedeliverEvent {
        RedeliverEvent {
            msg: Message::new("/queue/orders"),
            queue: "/queue/orders".into(),
            reason,
            delivery_count: count,
            nack_headers: nack.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
        }
    }

    #[test]
    fn backs_off_by_delivery_count_then_dead_letters_with_the_last_error() {
        let h = Harness::<Backoff>::new("{}").unwrap();
        let nacked = RedeliverReason::Nacked;
        assert_eq!(
            h.redeliver(event(1, nacked, &[])),
            RedeliverVerdict::RedeliverAfter(1_000)
        );
        assert_eq!(
            h.redeliver(event(2, nacked, &[])),
            RedeliverVerdict::RedeliverAfter(5_000)
        );
        assert_eq!(
            h.redeliver(event(3, RedeliverReason::ConsumerGone, &[])),
            RedeliverVerdict::RedeliverAfter(30_000)
        );
        assert_eq!(
            h.redeliver(event(4, nacked, &[("reason", "r"), ("error", "db down")])),
            RedeliverVerdict::dead_letter("/queue/DLQ.orders", "db down")
        );
        assert_eq!(
            h.redeliver(event(4, nacked, &[])),
            RedeliverVerdict::dead_letter("/queue/DLQ.orders", "gave up after 4 deliveries")
        );
    }

    #[test]
    fn expired_messages_are_dead_lettered_at_once() {
        let h = Harness::<Backoff>::new("{}").unwrap();
        assert_eq!(
            h.redeliver(event(0, RedeliverReason::Expired, &[])),
            RedeliverVerdict::dead_letter("/queue/DLQ.orders", "expired")
        );
    }

    #[test]
    fn delays_and_prefix_are_configurable_and_checked() {
        let h = Harness::<Backoff>::new(
            r#"{"delays_ms": [10], "dlq_prefix": "/queue/dead.", "error_headers": ["why"]}"#,
        )
        .unwrap();
        let nacked = RedeliverReason::Nacked;
        assert_eq!(
            h.redeliver(event(1, nacked, &[])),
            RedeliverVerdict::RedeliverAfter(10)
        );
        assert_eq!(
            h.redeliver(event(2, nacked, &[("why", "bad json")])),
            RedeliverVerdict::dead_letter("/queue/dead.orders", "bad json")
        );
        assert!(Harness::<Backoff>::new(r#"{"delays_ms": [1,2,3,4,5,6,7,8,9]}"#).is_err());
        assert!(Harness::<Backoff>::new(r#"{"delays_ms": [90000000]}"#).is_err());
        assert!(Harness::<Backoff>::new(r#"{"dlq_prefix": "/topic/x"}"#).is_err());
        assert!(Harness::<Backoff>::new(r#"{"delay": 1}"#).is_err());
    }
}
