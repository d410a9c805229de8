//! The redeliver hook (WIT `redeliver`, since 0.1.3): what becomes of a queue's message that
//! came back undelivered (NACKed, left by its consumer, expired).
//!
//! The first plugin in config order that serves `redeliver` for the queue's name decides. Its
//! verdict is checked here (a dead-letter destination must be a valid `/queue/` name, a delay
//! at most [`MAX_REDELIVER_DELAY`]); a failed call (trap, timeout, busy pool, invalid answer)
//! becomes [`RedeliverVerdict::Fallback`], whatever the plugin's failure policy: the queue then
//! applies its built-in `[dead_letter]` behaviour, so a failing plugin never loses a message.
//! The router calls this from its redelivery task, never under a queue lock.

use std::time::Duration;

use bytes::Bytes;

use super::super::bindings::redeliver::{
    DeadLetterTarget, RedeliverEvent as WitEvent, RedeliverReason, RedeliverVerdict as WitVerdict,
};
use super::super::convert;
use super::super::pool::{Failure, FailureKind};
use super::{check_size, CallContext, Hook, MessageRef, Plugin, PluginHost, Scope};

/// Longest delay a `redeliver-after` verdict may ask for (longer ones are invalid output).
pub const MAX_REDELIVER_DELAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Most NACK headers passed to the plugin (the first ones; the rest are left out).
pub const MAX_NACK_HEADERS: usize = 16;

/// Why a message came back to its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeliverCause {
    /// A consumer sent NACK for it.
    Nacked,
    /// Its consumer left before acknowledging it.
    ConsumerGone,
    /// It expired while waiting.
    Expired,
}

impl RedeliverCause {
    /// Its name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RedeliverCause::Nacked => "nacked",
            RedeliverCause::ConsumerGone => "consumer-gone",
            RedeliverCause::Expired => "expired",
        }
    }
}

/// A message that needs a redelivery decision.
#[derive(Debug, Clone, Copy)]
pub struct RedeliverEvent<'a> {
    /// The message.
    pub message: MessageRef<'a>,
    /// Its queue.
    pub queue: &'a [u8],
    /// Why it came back.
    pub cause: RedeliverCause,
    /// Deliveries so far.
    pub deliveries: u32,
    /// The NACK frame's headers (empty unless NACKed).
    pub nack_headers: &'a [(Bytes, Bytes)],
}

/// A checked redelivery decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeliverVerdict {
    /// Back to its place now.
    Redeliver,
    /// Back to its place after this long.
    After(Duration),
    /// To this `/queue/` destination, with this `dlq-reason`, as plugin `plugin` decided
    /// (`bypass`: its `routes_bypass_sender_rights`).
    DeadLetter {
        /// The dead-letter queue's name.
        destination: Bytes,
        /// The `dlq-reason` header's value.
        reason: String,
        /// Whether the plugin may name any queue (else only the queue's own DLQ).
        bypass: bool,
    },
    /// Discard it.
    Drop,
    /// No plugin decided (none serves the queue, or the call failed): the built-in
    /// `[dead_letter]` behaviour applies.
    Fallback,
}

impl PluginHost {
    /// Whether a plugin serves the redeliver hook for queue `queue`.
    pub fn serves_redeliver(&self, queue: &[u8]) -> bool {
        self.plugins
            .iter()
            .any(|p| p.applies_to(Hook::Redeliver, queue))
    }

    /// Asks the first plugin serving the redeliver hook for `event.queue` what becomes of the
    /// message; [`RedeliverVerdict::Fallback`] when none does or its call fails.
    pub async fn on_redeliver(
        &self,
        context: &CallContext,
        event: RedeliverEvent<'_>,
    ) -> RedeliverVerdict {
        let Some(plugin) = self
            .plugins
            .iter()
            .find(|p| p.applies_to(Hook::Redeliver, event.queue))
        else {
            return RedeliverVerdict::Fallback;
        };
        call_one(plugin, context, event)
            .await
            .unwrap_or(RedeliverVerdict::Fallback)
    }
}

async fn call_one(
    plugin: &Plugin,
    context: &CallContext,
    event: RedeliverEvent<'_>,
) -> Result<RedeliverVerdict, Failure> {
    let hook = Hook::Redeliver;
    let needs = &plugin.manifest.deliver;
    let nack_headers = &event.nack_headers[..event.nack_headers.len().min(MAX_NACK_HEADERS)];
    let size = convert::input_size(event.message, needs)
        + event.queue.len()
        + nack_headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 16)
            .sum::<usize>();
    check_size(plugin, hook, size)?;
    let wit_event = WitEvent {
        msg: convert::project(event.message, needs),
        queue: convert::text(event.queue),
        reason: match event.cause {
            RedeliverCause::Nacked => RedeliverReason::Nacked,
            RedeliverCause::ConsumerGone => RedeliverReason::ConsumerGone,
            RedeliverCause::Expired => RedeliverReason::Expired,
        },
        delivery_count: event.deliveries,
        nack_headers: convert::wit_headers(nack_headers),
    };
    let mut scope = Scope::new(context, plugin.trace.sample(1).is(0));
    let result = call!(
        plugin,
        hook,
        &mut scope,
        redeliver,
        |g, s| g.call_on_redeliver(s, &wit_event),
        |answer| check_verdict(plugin, answer)
    );
    if let Some(call) = scope.traced {
        super::traces::redelivery(plugin, context, event, &result, call);
    }
    result
}

/// The host's form of a plugin's verdict, or why it is refused (invalid output).
fn check_verdict(plugin: &Plugin, verdict: WitVerdict) -> Result<RedeliverVerdict, String> {
    Ok(match verdict {
        WitVerdict::Redeliver => RedeliverVerdict::Redeliver,
        WitVerdict::RedeliverAfter(ms) => {
            let delay = Duration::from_millis(u64::from(ms));
            if delay > MAX_REDELIVER_DELAY {
                return Err(format!("redeliver-after({ms}) exceeds one day"));
            }
            RedeliverVerdict::After(delay)
        }
        WitVerdict::DeadLetter(DeadLetterTarget {
            destination,
            reason,
        }) => {
            convert::check_destination(&destination)?;
            if !destination
                .as_bytes()
                .starts_with(crate::router::QUEUE_PREFIX)
            {
                return Err(format!(
                    "dead-letter destination {destination:?} is not a /queue/"
                ));
            }
            RedeliverVerdict::DeadLetter {
                destination: Bytes::from(destination),
                reason: convert::reason(reason),
                bypass: plugin.routes_bypass_sender_rights,
            }
        }
        WitVerdict::Drop => RedeliverVerdict::Drop,
    })
}
