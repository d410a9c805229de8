//! Unit tests of the redelivery verdicts as a queue applies them (through
//! [`crate::redelivery::apply`]): a NACKed message waits in the deciding set, then is
//! redelivered, delayed through the scheduler, dead-lettered (its own DLQ, another queue only
//! with the bypass), dropped, or given the built-in policy.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::plugin::RedeliverVerdict;
use crate::policy::DeliveryFilter;
use crate::redelivery::apply;
use crate::router::props::Props;
use crate::router::queue::AckTarget;
use crate::router::{
    AckMode, ConsumerOptions, Destination, Outbox, Outgoing, Queue, Router, RouterSettings,
    Subscription,
};

fn message(body: &'static str) -> Arc<Message> {
    Arc::new(Message {
        destination: Bytes::from_static(b"/queue/q"),
        props: Props::default(),
        headers: Vec::new(),
        body: Bytes::from_static(body.as_bytes()),
        id_prefix: Arc::from("t"),
        id_seq: 1,
        expires_at: None,
        persistent: false,
        charge: Default::default(),
    })
}

fn consumer(id: u64, queue: &Arc<Queue>) -> Arc<Subscription> {
    let subscription = Arc::new(Subscription {
        key: id as u32,
        consumer_id: id,
        wire_id: Some(Bytes::from(format!("s{id}"))),
        destination: queue.name.clone(),
        ack_mode: AckMode::ClientIndividual,
        window: 10,
        options: ConsumerOptions::default(),
        outbox: Arc::new(Outbox::new(64)),
        filter: DeliveryFilter::none(
            crate::plugin::Principal::anonymous(),
            crate::plugin::SubscriptionInfo {
                id: Bytes::new(),
                destination: queue.name.clone(),
                headers: vec![],
            },
        ),
        source: Destination::Queue(queue.clone()),
        topic_rights: None,
        remote: None,
        topic_window: None,
    });
    queue.subscribe(subscription.clone());
    subscription
}

/// Deliveries `sub` was handed, as bodies.
fn bodies(sub: &Subscription) -> Vec<Bytes> {
    sub.outbox
        .drain()
        .into_iter()
        .filter_map(|item| match item {
            Outgoing::Delivery(d) => Some(d.message.body.clone()),
            _ => None,
        })
        .collect()
}

/// A router whose redeliver hook serves every queue; queue `/queue/q` with one consumer that
/// was handed `poison` and NACKed it with an `error` header: the decision it submitted.
async fn nacked() -> (Router, Arc<Queue>, Arc<Subscription>, Decision) {
    let router = Router::new(RouterSettings::default());
    router.redelivery().attach(Box::new(|_| true));
    let mut decisions = router.redelivery().take_decisions().expect("first take");
    let queue = router.queue(&Bytes::from_static(b"/queue/q"));
    let sub = consumer(1, &queue);
    queue.publish(message("poison")).await;
    assert_eq!(bodies(&sub), ["poison"]);
    let error = [(Bytes::from_static(b"error"), Bytes::from_static(b"db down"))];
    queue
        .settle_with(1, AckTarget::Seq(0), true, &error)
        .expect("pending");
    let decision = decisions.try_recv().expect("a decision was submitted");
    assert_eq!(decision.cause, RedeliverCause::Nacked);
    assert_eq!(decision.deliveries, 1);
    assert_eq!(decision.nack_headers, error);
    // Out of the delivery order, still held.
    assert_eq!(queue.deciding(), 1);
    assert_eq!(queue.depth(), 0);
    assert_eq!(queue.held().0, 1);
    assert!(
        bodies(&sub).is_empty(),
        "not redelivered before the verdict"
    );
    (router, queue, sub, decision)
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[tokio::test]
async fn redeliver_puts_it_back_at_once() {
    let (router, queue, sub, decision) = nacked().await;
    apply(&router, &queue, decision, RedeliverVerdict::Redeliver);
    assert_eq!(bodies(&sub), ["poison"]);
    assert_eq!(queue.deciding(), 0);
    assert_eq!(count(&router.redelivery().stats.redeliver), 1);
}

#[tokio::test]
async fn redeliver_after_waits_in_the_scheduler_heap() {
    let (router, queue, sub, decision) = nacked().await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let driver = tokio::spawn(
        router
            .scheduler()
            .clone()
            .run(Duration::from_secs(1), shutdown),
    );
    apply(
        &router,
        &queue,
        decision,
        RedeliverVerdict::After(Duration::from_millis(50)),
    );
    assert_eq!(router.scheduler().len(), 1, "one entry in the heap");
    assert!(bodies(&sub).is_empty(), "not yet");
    let mut got = Vec::new();
    for _ in 0..200 {
        got = bodies(&sub);
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, ["poison"]);
    assert_eq!(queue.deciding(), 0);
    assert!(router.scheduler().is_empty());
    assert_eq!(count(&router.redelivery().stats.redeliver_after), 1);
    stop.send(true).unwrap();
    driver.await.unwrap();
}

#[tokio::test]
async fn dead_letter_to_the_queues_own_dlq_carries_the_reason() {
    let (router, queue, sub, decision) = nacked().await;
    let verdict = RedeliverVerdict::DeadLetter {
        destination: Bytes::from_static(b"/queue/DLQ.q"),
        reason: "db down".into(),
        bypass: false,
    };
    apply(&router, &queue, decision, verdict);
    assert_eq!(queue.held().0, 0, "left the queue");
    let dlq = router
        .existing_queue(b"/queue/DLQ.q")
        .expect("the DLQ was made");
    let waiting = dlq.waiting_messages(10);
    assert_eq!(waiting.len(), 1);
    let reason = waiting[0]
        .headers
        .iter()
        .find(|(n, _)| &n[..] == b"dlq-reason")
        .map(|(_, v)| v.clone());
    assert_eq!(reason.as_deref(), Some(&b"db down"[..]));
    assert!(bodies(&sub).is_empty());
    assert_eq!(count(&router.redelivery().stats.dead_letter), 1);
    assert_eq!(
        queue.stats.dead_letter_reasons.read().nth(4),
        Some(("plugin", 1))
    );
}

#[tokio::test]
async fn another_dead_letter_queue_needs_the_bypass_else_the_built_in_policy_applies() {
    let (router, queue, sub, decision) = nacked().await;
    let elsewhere = RedeliverVerdict::DeadLetter {
        destination: Bytes::from_static(b"/queue/elsewhere"),
        reason: "x".into(),
        bypass: false,
    };
    apply(&router, &queue, decision, elsewhere);
    // Refused: the built-in policy (no max_deliveries: back in the queue).
    assert_eq!(bodies(&sub), ["poison"]);
    assert!(router.existing_queue(b"/queue/elsewhere").is_none());
    assert_eq!(count(&router.redelivery().stats.fallback), 1);

    let (router, queue, _sub, decision) = nacked().await;
    let bypassing = RedeliverVerdict::DeadLetter {
        destination: Bytes::from_static(b"/queue/elsewhere"),
        reason: "x".into(),
        bypass: true,
    };
    apply(&router, &queue, decision, bypassing);
    let target = router.existing_queue(b"/queue/elsewhere").expect("made");
    assert_eq!(target.depth(), 1);
}

#[tokio::test]
async fn drop_discards_it_and_a_failed_call_gets_the_built_in_policy() {
    let (router, queue, sub, decision) = nacked().await;
    apply(&router, &queue, decision, RedeliverVerdict::Drop);
    assert_eq!(queue.held(), (0, 0));
    assert!(bodies(&sub).is_empty());
    assert_eq!(count(&router.redelivery().stats.drop), 1);

    let (router, queue, sub, decision) = nacked().await;
    apply(&router, &queue, decision, RedeliverVerdict::Fallback);
    assert_eq!(bodies(&sub), ["poison"], "never lost");
    assert_eq!(count(&router.redelivery().stats.fallback), 1);
}

#[tokio::test]
async fn a_verdict_for_a_deleted_queues_message_is_ignored() {
    let (router, queue, _sub, decision) = nacked().await;
    queue.delete();
    assert_eq!(queue.deciding(), 0, "dropped with the queue");
    apply(&router, &queue, decision, RedeliverVerdict::Redeliver);
    assert_eq!(queue.held().0, 0);
}

#[tokio::test]
async fn without_an_attached_plugin_set_a_nack_redelivers_at_once() {
    let router = Router::new(RouterSettings::default());
    let mut decisions = router.redelivery().take_decisions().expect("first take");
    let queue = router.queue(&Bytes::from_static(b"/queue/q"));
    let sub = consumer(1, &queue);
    queue.publish(message("m")).await;
    assert_eq!(bodies(&sub), ["m"]);
    queue.settle(1, AckTarget::Seq(0), true).expect("pending");
    assert_eq!(bodies(&sub), ["m"]);
    assert!(decisions.try_recv().is_err(), "no decision asked");
}
