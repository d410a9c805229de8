//! The redeliver hook's driver: one task per vhost takes the decisions its queues submit
//! ([`crate::router::redelivery`]), asks the vhost's plugin chain in force for a verdict and
//! applies it ([`apply`]).
//!
//! Each decision takes the plugin set current when it starts (a hot reload swaps the chain for
//! the next ones, as for every hook) and runs as a task of its own, at most
//! [`MAX_CONCURRENT_DECISIONS`] at a time per vhost: the plugin's deadline, memory cap and
//! busy-pool wait bound each call, and the queue's lock is never held across one. A failed call
//! ([`RedeliverVerdict::Fallback`]) gets the built-in `[dead_letter]` behaviour, so a failing
//! plugin never loses a message.
//!
//! A redeliver plugin's dead-letter destination must be the queue's own dead-letter queue
//! (`dead_letter.prefix` + the queue's name) unless the plugin is configured with
//! `routes_bypass_sender_rights = true`: like a templated route, a plugin may build the name
//! from what a client wrote (the NACK's headers). A refused destination falls back too.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};

use crate::broker::Broker;
use crate::plugin::{CallContext, MessageRef, RedeliverEvent, RedeliverVerdict};
use crate::router::message::now_ms;
use crate::router::redelivery::Decision;
use crate::router::{Queue, Resolution, Router};
use crate::text::shown;
use crate::vhost::Vhost;

/// Most decisions of one vhost whose plugin calls run at once.
pub const MAX_CONCURRENT_DECISIONS: usize = 16;

/// Connects every vhost's redelivery outlet to the broker's plugin set and starts its task
/// (until `shutdown`).
pub fn start(broker: &Arc<Broker>, shutdown: &watch::Receiver<bool>) {
    for vhost in broker.vhosts.iter() {
        let outlet = vhost.router.redelivery();
        let weak = Arc::downgrade(broker);
        let index = vhost.index;
        outlet.attach(Box::new(move |queue: &[u8]| {
            weak.upgrade()
                .is_some_and(|broker| broker.policy.host_for(index).serves_redeliver(queue))
        }));
        if let Some(decisions) = outlet.take_decisions() {
            tokio::spawn(run(
                broker.clone(),
                vhost.clone(),
                decisions,
                shutdown.clone(),
            ));
        }
    }
}

async fn run(
    broker: Arc<Broker>,
    vhost: Arc<Vhost>,
    mut decisions: mpsc::Receiver<Decision>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_DECISIONS));
    loop {
        let decision = tokio::select! {
            decision = decisions.recv() => match decision {
                Some(decision) => decision,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (broker, vhost) = (broker.clone(), vhost.clone());
        tokio::spawn(async move {
            decide(&broker, &vhost, decision).await;
            drop(permit);
        });
    }
}

/// Asks the vhost's chain about one message and applies the verdict.
async fn decide(broker: &Broker, vhost: &Vhost, decision: Decision) {
    // Gone: deleted with the messages it held (a temporary queue whose owner left).
    let Some(queue) = vhost.router.existing_queue(&decision.queue) else {
        return;
    };
    let host = broker.policy.host_for(vhost.index);
    let context = CallContext::new(vhost.name.clone(), Arc::from(""));
    let message = &decision.message;
    let event = RedeliverEvent {
        message: MessageRef {
            destination: &message.destination,
            headers: &message.headers,
            body: &message.body,
            id: Some((&message.id_prefix, message.id_seq)),
        },
        queue: &decision.queue,
        cause: decision.cause,
        deliveries: decision.deliveries,
        nack_headers: &decision.nack_headers,
    };
    let verdict = host.on_redeliver(&context, event).await;
    apply(&vhost.router, &queue, decision, verdict);
}

/// Applies `verdict` to the message of `decision`, which waits in `queue`'s deciding set:
/// counted in the router's redelivery stats.
pub fn apply(router: &Router, queue: &Arc<Queue>, decision: Decision, verdict: RedeliverVerdict) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &router.redelivery().stats;
    let resolution = match verdict {
        RedeliverVerdict::Redeliver => {
            stats.redeliver.fetch_add(1, Relaxed);
            Resolution::Redeliver
        }
        RedeliverVerdict::After(delay) if delay.is_zero() => {
            stats.redeliver_after.fetch_add(1, Relaxed);
            Resolution::Redeliver
        }
        RedeliverVerdict::After(delay) if queue.remote().is_some() => {
            // A cluster queue's message waits in JetStream (`nak` with delay), not here.
            stats.redeliver_after.fetch_add(1, Relaxed);
            Resolution::RedeliverAfter(delay)
        }
        RedeliverVerdict::After(delay) => {
            stats.redeliver_after.fetch_add(1, Relaxed);
            let due = now_ms().saturating_add(millis(delay));
            router.scheduler().schedule_return(
                queue.clone(),
                decision.token,
                decision.message,
                due,
            );
            return;
        }
        RedeliverVerdict::DeadLetter {
            destination,
            reason,
            bypass,
        } => {
            let own = router.dead_letter_name(&queue.name).as_ref() == Some(&destination);
            if destination != queue.name && (own || bypass) {
                stats.dead_letter.fetch_add(1, Relaxed);
                Resolution::DeadLetter(router.dead_letter_target(&destination), reason)
            } else {
                tracing::warn!(
                    queue = %shown(&queue.name),
                    destination = %shown(&destination),
                    "redeliver plugin's dead-letter destination refused (not the queue's own \
                     dead-letter queue, and the plugin has no routes_bypass_sender_rights): \
                     built-in dead-letter policy applied"
                );
                stats.fallback.fetch_add(1, Relaxed);
                Resolution::Builtin(decision.cause)
            }
        }
        RedeliverVerdict::Drop => {
            stats.drop.fetch_add(1, Relaxed);
            Resolution::Drop
        }
        RedeliverVerdict::Fallback => {
            stats.fallback.fetch_add(1, Relaxed);
            Resolution::Builtin(decision.cause)
        }
    };
    queue.resolve(decision.token, resolution);
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}
