//! Unit tests of the queue's delivery order: message priority with declines, consumer
//! priority, exclusive mode and message groups, and priorities recovered from the journal.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::policy::DeliveryFilter;
use crate::router::props::Props;
use crate::router::{ConsumerOptions, Destination, Outbox, Router, RouterSettings};
use crate::store::record::Enqueue;

fn message(seq: u64, headers: &[(&'static str, &'static str)]) -> Arc<Message> {
    let headers: Vec<_> = headers
        .iter()
        .map(|(n, v)| {
            (
                Bytes::from_static(n.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            )
        })
        .collect();
    Arc::new(Message {
        destination: Bytes::from_static(b"/queue/q"),
        props: Props::read(&headers).expect("valid headers"),
        headers,
        body: Bytes::new(),
        id_prefix: Arc::from("t"),
        id_seq: seq,
        expires_at: None,
        persistent: false,
        charge: Default::default(),
    })
}

fn consumer(
    id: u64,
    window: u32,
    options: ConsumerOptions,
    queue: &Arc<Queue>,
) -> Arc<Subscription> {
    let subscription = Arc::new(Subscription {
        key: id as u32,
        consumer_id: id,
        wire_id: Some(Bytes::from(format!("s{id}"))),
        destination: queue.name.clone(),
        ack_mode: AckMode::ClientIndividual,
        window,
        options,
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

fn plain() -> ConsumerOptions {
    ConsumerOptions::default()
}

fn new_queue() -> Arc<Queue> {
    Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(1000),
    ))
}

/// (message number, delivery seq, first of its group) of what `sub` was handed.
fn delivered(sub: &Subscription) -> Vec<(u64, u64, bool)> {
    sub.outbox
        .drain()
        .into_iter()
        .filter_map(|item| match item {
            Outgoing::Delivery(d) => Some((d.message.id_seq, d.seq, d.first_in_group)),
            _ => None,
        })
        .collect()
}

fn numbers(sub: &Subscription) -> Vec<u64> {
    delivered(sub).into_iter().map(|(n, _, _)| n).collect()
}

#[tokio::test]
async fn a_declined_high_priority_message_goes_to_the_next_consumer_first() {
    let queue = new_queue();
    for (n, p) in [(0, "2"), (1, "9"), (2, "5")] {
        queue.publish(message(n, &[("priority", p)])).await;
    }
    let a = consumer(1, 1, plain(), &queue);
    let first = delivered(&a);
    assert_eq!(first.iter().map(|d| d.0).collect::<Vec<_>>(), [1]);
    let b = consumer(2, 1, plain(), &queue);
    assert_eq!(numbers(&b), [2]);
    // a's filter declines the priority-9 message: b is full, so it waits (at the head).
    queue.decline(1, first[0].1);
    assert_eq!(numbers(&a), [0], "a gets the next one it has not declined");
    queue.settle(2, AckTarget::Seq(0), false).unwrap();
    assert_eq!(
        numbers(&b),
        [1],
        "the declined priority-9 message, before anything else"
    );
}

#[tokio::test]
async fn consumer_priority_fills_the_highest_first_then_round_robin_among_equals() {
    let queue = new_queue();
    let ranked = |priority| ConsumerOptions {
        priority,
        exclusive: false,
    };
    let low = consumer(1, 10, ranked(0), &queue);
    let high_a = consumer(2, 2, ranked(5), &queue);
    let high_b = consumer(3, 2, ranked(5), &queue);
    for n in 0..6 {
        queue.publish(message(n, &[])).await;
    }
    let (a, b) = (numbers(&high_a), numbers(&high_b));
    assert_eq!((a.len(), b.len()), (2, 2), "{a:?} {b:?}");
    let mut both = [a, b].concat();
    both.sort();
    assert_eq!(both, [0, 1, 2, 3]);
    assert_eq!(numbers(&low), [4, 5]);
}

#[tokio::test]
async fn exclusive_mode_takes_groups_pinned_elsewhere() {
    let queue = new_queue();
    let plain_consumer = consumer(1, 100, plain(), &queue);
    queue.publish(message(0, &[("JMSXGroupID", "g")])).await;
    assert_eq!(delivered(&plain_consumer), [(0, 0, true)]);
    let exclusive = consumer(
        2,
        100,
        ConsumerOptions {
            priority: 0,
            exclusive: true,
        },
        &queue,
    );
    queue.publish(message(1, &[("JMSXGroupID", "g")])).await;
    queue.publish(message(2, &[("JMSXGroupID", "g")])).await;
    assert_eq!(delivered(&exclusive), [(1, 0, true), (2, 1, false)]);
    assert!(delivered(&plain_consumer).is_empty());
    queue.unsubscribe(2);
    assert!(queue.lock().active.is_none(), "no exclusive consumer left");
    // The exclusive consumer's unacked messages come back, in order, with the group.
    assert_eq!(delivered(&plain_consumer), [(1, 1, true), (2, 2, false)]);
}

#[tokio::test]
async fn a_leaving_consumer_frees_its_groups_and_a_full_group_waits() {
    let queue = new_queue();
    let a = consumer(1, 1, plain(), &queue);
    let b = consumer(2, 10, plain(), &queue);
    queue.publish(message(0, &[("JMSXGroupID", "x")])).await;
    queue.publish(message(1, &[("JMSXGroupID", "x")])).await;
    queue.publish(message(2, &[("JMSXGroupID", "y")])).await;
    // x went to a (its turn), whose window is then full: x's second message waits for it,
    // y's goes on to b.
    assert_eq!(numbers(&a), [0]);
    assert_eq!(delivered(&b), [(2, 0, true)]);
    assert_eq!(queue.lock().groups.owner(b"x"), Some(1));
    queue.unsubscribe(1);
    assert_eq!(
        queue.lock().groups.owner(b"x"),
        Some(2),
        "freed, and taken by b"
    );
    assert_eq!(delivered(&b), [(0, 1, true), (1, 2, false)]);
    queue.unsubscribe(2);
    assert!(queue.lock().groups.is_empty());
}

#[test]
fn priorities_come_back_from_journaled_headers() {
    let router = Router::new(RouterSettings::default());
    let enqueue = |id: u64, priority: Option<&'static str>| Enqueue {
        id,
        vhost: Bytes::new(),
        queue: Bytes::from_static(b"/queue/restored"),
        destination: Bytes::from_static(b"/queue/restored"),
        headers: priority
            .map(|p| {
                vec![(
                    Bytes::from_static(b"priority"),
                    Bytes::from_static(p.as_bytes()),
                )]
            })
            .unwrap_or_default(),
        body: Bytes::new(),
        id_prefix: Bytes::from_static(b"old"),
        id_seq: id,
        expires_at: 0,
        schedule: None,
    };
    // As an older broker journaled them: no priority field, the header among the others (one
    // of them a value that broker did not check).
    for (id, priority) in [
        (1, Some("1")),
        (2, None),
        (3, Some("8")),
        (4, Some("urgent")),
    ] {
        router.restore_message(enqueue(id, priority));
    }
    let queue = router.existing_queue(b"/queue/restored").expect("restored");
    let sub = consumer(9, 10, plain(), &queue);
    assert_eq!(numbers(&sub), [3, 2, 4, 1]);
}
