//! Unit tests of queue and topic semantics, without sockets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::config::SlowConsumerPolicy;

fn message(seq: u64) -> Arc<Message> {
    Arc::new(Message {
        destination: Bytes::from_static(b"/queue/q"),
        headers: vec![],
        body: Bytes::from(format!("m{seq}")),
        id_prefix: Arc::from("t"),
        id_seq: seq,
        expires_at: None,
        persistent: false,
        props: Default::default(),
        charge: Default::default(),
    })
}

fn subscription(id: u64, ack_mode: AckMode, window: u32, source: Destination) -> Arc<Subscription> {
    let topic_window = matches!(source, Destination::Topic(_)).then(TopicConsumer::default);
    Arc::new(Subscription {
        key: id as u32,
        consumer_id: id,
        wire_id: Some(Bytes::from(format!("s{id}"))),
        destination: Bytes::from_static(b"/queue/q"),
        ack_mode,
        window,
        options: Default::default(),
        outbox: Arc::new(Outbox::new(64)),
        filter: DeliveryFilter::none(
            crate::plugin::Principal::anonymous(),
            crate::plugin::SubscriptionInfo {
                id: Bytes::new(),
                destination: Bytes::from_static(b"/queue/q"),
                headers: vec![],
            },
        ),
        source,
        topic_window,
        topic_rights: None,
        remote: None,
    })
}

fn new_topic(name: &'static [u8], policy: SlowConsumerPolicy) -> Arc<Topic> {
    Arc::new(Topic::new(Bytes::from_static(name), policy))
}

fn topic_subscription(id: u64, ack_mode: AckMode, window: u32) -> Arc<Subscription> {
    let topic = new_topic(b"/topic/t", SlowConsumerPolicy::Drop);
    subscription(id, ack_mode, window, Destination::Topic(topic))
}

fn delivered(sub: &Subscription) -> Vec<(u64, u64, bool)> {
    sub.outbox
        .drain()
        .into_iter()
        .filter_map(|item| match item {
            Outgoing::Delivery(d) => Some((d.message.id_seq, d.seq, d.redeliveries > 0)),
            _ => None,
        })
        .collect()
}

fn queue_pair(window: u32, mode: AckMode) -> (Arc<Queue>, Arc<Subscription>, Arc<Subscription>) {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(100),
    ));
    let a = subscription(1, mode, window, Destination::Queue(queue.clone()));
    let b = subscription(2, mode, window, Destination::Queue(queue.clone()));
    queue.subscribe(a.clone());
    queue.subscribe(b.clone());
    (queue, a, b)
}

#[tokio::test]
async fn queue_round_robins_between_consumers() {
    let (queue, a, b) = queue_pair(10, AckMode::Auto);
    for i in 0..4 {
        queue.publish(message(i)).await;
    }
    let a_ids: Vec<u64> = delivered(&a).iter().map(|d| d.0).collect();
    let b_ids: Vec<u64> = delivered(&b).iter().map(|d| d.0).collect();
    assert_eq!(a_ids, vec![0, 2]);
    assert_eq!(b_ids, vec![1, 3]);
}

#[tokio::test]
async fn window_limits_unacked_and_ack_refills_it() {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(100),
    ));
    let a = subscription(
        1,
        AckMode::ClientIndividual,
        2,
        Destination::Queue(queue.clone()),
    );
    queue.subscribe(a.clone());
    for i in 0..5 {
        queue.publish(message(i)).await;
    }
    assert_eq!(delivered(&a).len(), 2);
    assert_eq!(queue.depth(), 3);
    queue.settle(1, AckTarget::Seq(1), false).unwrap();
    let next = delivered(&a);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, 2);
    // Seq 1 is gone; acking it again is an error.
    assert!(queue.settle(1, AckTarget::Seq(1), false).is_err());
}

#[tokio::test]
async fn client_mode_ack_is_cumulative() {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(100),
    ));
    let a = subscription(1, AckMode::Client, 10, Destination::Queue(queue.clone()));
    queue.subscribe(a.clone());
    for i in 0..5 {
        queue.publish(message(i)).await;
    }
    delivered(&a);
    queue
        .settle(1, AckTarget::MessageId(b"t-2"), false)
        .unwrap();
    assert!(queue.check_pending(1, AckTarget::Seq(0)).is_err());
    assert!(queue.check_pending(1, AckTarget::Seq(2)).is_err());
    assert!(queue.check_pending(1, AckTarget::Seq(3)).is_ok());
}

#[tokio::test]
async fn nack_requeues_with_redelivered_flag() {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(100),
    ));
    let a = subscription(
        1,
        AckMode::ClientIndividual,
        1,
        Destination::Queue(queue.clone()),
    );
    queue.subscribe(a.clone());
    queue.publish(message(7)).await;
    assert_eq!(delivered(&a), vec![(7, 0, false)]);
    queue.settle(1, AckTarget::Seq(0), true).unwrap();
    assert_eq!(delivered(&a), vec![(7, 1, true)]);
}

#[tokio::test]
async fn unsubscribe_hands_unacked_to_the_others_in_order() {
    let (queue, a, b) = queue_pair(10, AckMode::Client);
    for i in 0..4 {
        queue.publish(message(i)).await;
    }
    delivered(&b);
    assert_eq!(delivered(&a).len(), 2);
    queue.unsubscribe(1);
    let redelivered = delivered(&b);
    assert_eq!(redelivered, vec![(0, 2, true), (2, 3, true)]);
}

#[tokio::test]
async fn auto_ack_settles_when_written() {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(100),
    ));
    let a = subscription(1, AckMode::Auto, 1, Destination::Queue(queue.clone()));
    queue.subscribe(a.clone());
    queue.publish(message(0)).await;
    queue.publish(message(1)).await;
    assert_eq!(delivered(&a).len(), 1);
    queue.written(1, 0);
    assert_eq!(delivered(&a), vec![(1, 1, false)]);
}

#[tokio::test]
async fn a_full_queue_pauses_its_producer() {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(2),
    ));
    queue.publish(message(0)).await;
    queue.publish(message(1)).await;
    let blocked = tokio::time::timeout(Duration::from_millis(50), queue.publish(message(2))).await;
    assert!(blocked.is_err(), "third publish must wait");
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.publish(message(3)).await })
    };
    let a = subscription(1, AckMode::Auto, 10, Destination::Queue(queue.clone()));
    queue.subscribe(a.clone());
    // Delivered but not yet written: still held, the producer still waits.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !producer.is_finished(),
        "in-flight messages count against the queue"
    );
    queue.written(1, 1);
    tokio::time::timeout(Duration::from_secs(2), producer)
        .await
        .expect("producer resumes")
        .unwrap();
}

#[tokio::test]
async fn a_consumer_that_never_reads_cannot_drain_a_queue_past_its_limit() {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(3),
    ));
    let hoarder = subscription(
        1,
        AckMode::ClientIndividual,
        1000,
        Destination::Queue(queue.clone()),
    );
    queue.subscribe(hoarder.clone());
    for i in 0..3 {
        queue.publish(message(i)).await;
    }
    assert_eq!(queue.depth(), 0, "all three are out with the hoarder");
    let blocked = tokio::time::timeout(Duration::from_millis(50), queue.publish(message(3))).await;
    assert!(blocked.is_err(), "the window does not make room");
    assert_eq!(queue.held(), (3, 3 * message(0).size()));
}

#[tokio::test]
async fn a_byte_limit_pauses_producers_too() {
    let size = message(0).size();
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits {
            max_messages: 1000,
            max_bytes: 2 * size,
            overflow: Overflow::Block,
        },
    ));
    queue.publish(message(0)).await;
    queue.publish(message(1)).await;
    let blocked = tokio::time::timeout(Duration::from_millis(50), queue.publish(message(2))).await;
    assert!(blocked.is_err());
}

#[tokio::test]
async fn a_full_durable_queue_drops_its_oldest_or_the_new_message_without_waiting() {
    for (overflow, kept) in [(Overflow::DropOldest, [1, 2]), (Overflow::DropNew, [0, 1])] {
        let queue = Arc::new(Queue::new(
            Bytes::from_static(b"/queue/q"),
            QueueLimits {
                max_messages: 2,
                max_bytes: u64::MAX,
                overflow,
            },
        ));
        for i in 0..3 {
            tokio::time::timeout(Duration::from_millis(50), queue.publish(message(i)))
                .await
                .expect("never waits");
        }
        assert_eq!(
            queue
                .stats
                .overflowed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let a = subscription(1, AckMode::Auto, 10, Destination::Queue(queue.clone()));
        queue.subscribe(a.clone());
        let ids: Vec<u64> = delivered(&a).iter().map(|d| d.0).collect();
        assert_eq!(ids, kept, "{overflow:?}");
    }
}

#[tokio::test]
async fn deleted_queue_drops_publishes() {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/temp-queue/x"),
        QueueLimits::messages(2),
    ));
    queue.delete();
    queue.publish(message(0)).await;
    assert_eq!(queue.depth(), 0);
}

#[tokio::test]
async fn topic_fans_out_and_holds_copies_while_the_window_is_full() {
    let topic = new_topic(b"/topic/t", SlowConsumerPolicy::Drop);
    let a = topic_subscription(1, AckMode::Auto, 10);
    let b = topic_subscription(2, AckMode::Client, 1);
    topic.subscribe(a.clone());
    topic.subscribe(b.clone());
    topic.publish(&message(0), PATIENCE).await;
    topic.publish(&message(1), PATIENCE).await;
    assert_eq!(delivered(&a).len(), 2);
    // b's window of 1 is full: the second copy waits for b's ACK.
    assert_eq!(delivered(&b), vec![(0, 0, false)]);
    b.settle(AckTarget::Seq(0), false).unwrap();
    assert_eq!(delivered(&b), vec![(1, 1, false)]);
    assert_eq!(
        b.outbox.dropped.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(topic.unsubscribe(1), 1);
}

const PATIENCE: Duration = Duration::from_millis(20);

#[tokio::test]
async fn a_topic_subscriber_that_stays_stuck_meets_the_policy() {
    let topic = new_topic(b"/topic/t", SlowConsumerPolicy::Drop);
    let b = topic_subscription(2, AckMode::ClientIndividual, 1);
    topic.subscribe(b.clone());
    for i in 0..70 {
        topic.publish(&message(i), PATIENCE).await;
    }
    // One in the window, 64 (the outbox limit) waiting, 5 dropped: the publisher waited for
    // the first of those only, then not again while the subscriber stayed stuck.
    assert_eq!(delivered(&b).len(), 1);
    assert_eq!(
        b.outbox.dropped.load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    let auto = topic_subscription(3, AckMode::Auto, 1);
    let topic = new_topic(b"/topic/u", SlowConsumerPolicy::Disconnect);
    topic.subscribe(auto.clone());
    for i in 0..65 {
        topic.publish(&message(i), PATIENCE).await;
    }
    assert_eq!(auto.outbox.len(), 64);
    tokio::time::timeout(Duration::from_secs(1), auto.outbox.slow_consumer())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_topic_publisher_waits_for_a_subscriber_that_drains() {
    let topic = new_topic(b"/topic/w", SlowConsumerPolicy::Drop);
    let sub = topic_subscription(4, AckMode::Auto, 1);
    topic.subscribe(sub.clone());
    for i in 0..64 {
        topic.publish(&message(i), PATIENCE).await;
    }
    // Full: the next publish waits until a writer drains the outbox.
    let drainer = {
        let sub = sub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut out = Vec::new();
            sub.outbox.take(&mut out, None).await;
            out.len()
        })
    };
    topic.publish(&message(64), Duration::from_secs(5)).await;
    assert_eq!(drainer.await.unwrap(), 64);
    assert_eq!(delivered(&sub).len(), 1, "the waiting copy went through");
    assert_eq!(
        sub.outbox
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn destinations_are_classified_by_prefix() {
    assert_eq!(classify(b"/queue/a"), Ok(Kind::Queue));
    assert_eq!(classify(b"/topic/a.b"), Ok(Kind::Topic));
    assert_eq!(classify(b"/temp-queue/r"), Ok(Kind::TempQueue));
    assert_eq!(classify(b"/reply-queue/x.r"), Ok(Kind::ReplyQueue));
    assert!(matches!(
        classify(b"/exchange/x"),
        Err(RouteError::UnknownPrefix(_))
    ));
    assert!(matches!(
        classify(b"queue"),
        Err(RouteError::UnknownPrefix(_))
    ));
    assert!(matches!(
        classify(b"/queue/"),
        Err(RouteError::EmptyName(_))
    ));
}

#[tokio::test]
async fn a_declined_message_goes_to_another_consumer_or_waits() {
    let (queue, a, b) = queue_pair(10, AckMode::ClientIndividual);
    queue.publish(message(0)).await;
    assert_eq!(delivered(&a), vec![(0, 0, false)]);
    queue.decline(1, 0);
    assert_eq!(delivered(&b), vec![(0, 0, false)]);
    queue.decline(2, 0);
    // Both declined it: it waits, and later messages are not held up behind it.
    assert_eq!(queue.depth(), 1);
    queue.publish(message(1)).await;
    let got: Vec<u64> = delivered(&a)
        .iter()
        .chain(delivered(&b).iter())
        .map(|d| d.0)
        .collect();
    assert_eq!(got, vec![1]);
    let c = subscription(3, AckMode::Auto, 10, Destination::Queue(queue.clone()));
    queue.subscribe(c.clone());
    assert_eq!(delivered(&c), vec![(0, 0, false)]);
}

#[tokio::test]
async fn handed_back_messages_keep_their_arrival_order() {
    let queue = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/q"),
        QueueLimits::messages(100),
    ));
    let a = subscription(
        1,
        AckMode::ClientIndividual,
        1,
        Destination::Queue(queue.clone()),
    );
    queue.subscribe(a.clone());
    for i in 0..5 {
        queue.publish(message(i)).await;
    }
    // a declines m0, then m1 (each time the next waiting message is dispatched to it).
    assert_eq!(delivered(&a), vec![(0, 0, false)]);
    queue.decline(1, 0);
    assert_eq!(delivered(&a), vec![(1, 1, false)]);
    queue.decline(1, 1);
    assert_eq!(delivered(&a), vec![(2, 2, false)]);
    queue.unsubscribe(1);
    let b = subscription(2, AckMode::Auto, 10, Destination::Queue(queue.clone()));
    queue.subscribe(b.clone());
    let order: Vec<u64> = delivered(&b).iter().map(|d| d.0).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
}

fn dead_letter_pair(max_deliveries: u32, expired: bool) -> (Arc<Queue>, Arc<Queue>) {
    let dlq = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/DLQ.q"),
        QueueLimits::messages(100),
    ));
    let queue = Arc::new(
        Queue::new(Bytes::from_static(b"/queue/q"), QueueLimits::messages(100)).with_dead_letter(
            DeadLetter {
                queue: dlq.clone(),
                max_deliveries,
                expired,
            },
        ),
    );
    (queue, dlq)
}

#[tokio::test]
async fn a_message_handed_back_too_often_is_dead_lettered() {
    let (queue, dlq) = dead_letter_pair(2, false);
    let a = subscription(
        1,
        AckMode::ClientIndividual,
        1,
        Destination::Queue(queue.clone()),
    );
    queue.subscribe(a.clone());
    queue.publish(message(0)).await;
    let first = a.outbox.drain();
    let Outgoing::Delivery(first) = &first[0] else {
        panic!()
    };
    assert_eq!(first.redeliveries, 0);
    queue.settle(1, AckTarget::Seq(0), true).unwrap();
    let second = a.outbox.drain();
    let Outgoing::Delivery(second) = &second[0] else {
        panic!()
    };
    assert_eq!(second.redeliveries, 1);
    queue.settle(1, AckTarget::Seq(1), true).unwrap();
    assert!(
        a.outbox.is_empty(),
        "delivered twice: not redelivered again"
    );
    assert_eq!(queue.depth(), 0);
    assert_eq!(dlq.depth(), 1);
    let d = subscription(2, AckMode::Auto, 10, Destination::Queue(dlq.clone()));
    dlq.subscribe(d.clone());
    let dead = d.outbox.drain();
    let Outgoing::Delivery(dead) = &dead[0] else {
        panic!()
    };
    let header = |name: &[u8]| dead.message.header(name).map(|v| v.to_vec());
    assert_eq!(header(b"dlq-reason").unwrap(), b"max-deliveries");
    assert_eq!(header(b"dlq-original-destination").unwrap(), b"/queue/q");
    assert_eq!(header(b"dlq-delivery-count").unwrap(), b"2");
    assert_eq!(dead.message.destination.as_ref(), b"/queue/DLQ.q");
    assert_eq!(dead.message.body, message(0).body);
}

#[tokio::test]
async fn declines_do_not_count_as_deliveries() {
    let (queue, dlq) = dead_letter_pair(1, false);
    let a = subscription(
        1,
        AckMode::ClientIndividual,
        1,
        Destination::Queue(queue.clone()),
    );
    queue.subscribe(a.clone());
    queue.publish(message(0)).await;
    delivered(&a);
    queue.decline(1, 0);
    let b = subscription(
        2,
        AckMode::ClientIndividual,
        1,
        Destination::Queue(queue.clone()),
    );
    queue.subscribe(b.clone());
    assert_eq!(delivered(&b), vec![(0, 0, false)]);
    assert_eq!(dlq.depth(), 0);
}

fn expiring(seq: u64, expires_at: u64) -> Arc<Message> {
    let mut m = Arc::try_unwrap(message(seq)).unwrap();
    m.expires_at = Some(expires_at);
    Arc::new(m)
}

#[tokio::test]
async fn expired_messages_are_dropped_or_dead_lettered() {
    let now = crate::router::message::now_ms();
    let (queue, dlq) = dead_letter_pair(0, false);
    queue.publish(expiring(0, now - 1)).await;
    queue.publish(expiring(1, now + 60_000)).await;
    let a = subscription(1, AckMode::Auto, 10, Destination::Queue(queue.clone()));
    queue.subscribe(a.clone());
    assert_eq!(
        delivered(&a),
        vec![(1, 0, false)],
        "the expired one is gone"
    );
    assert_eq!(dlq.depth(), 0, "dropped, not dead-lettered");

    let (queue, dlq) = dead_letter_pair(0, true);
    queue.publish(expiring(2, now - 1)).await;
    let a = subscription(1, AckMode::Auto, 10, Destination::Queue(queue.clone()));
    queue.subscribe(a.clone());
    assert!(delivered(&a).is_empty());
    assert_eq!(dlq.depth(), 1, "dead-lettered with reason expired");
}

fn reader_key(name: &str) -> DurableKey {
    DurableKey {
        owner: "app".to_string(),
        client_id: Bytes::new(),
        name: Bytes::copy_from_slice(name.as_bytes()),
    }
}

#[tokio::test]
async fn a_durable_subscription_is_taken_by_one_subscriber_at_a_time() {
    let router = Router::new(RouterSettings::default());
    let topic = router.topic(&Bytes::from_static(b"/topic/news"));
    let key = reader_key("reader");
    let principal = crate::plugin::Principal::named("app");
    let queue = router.claim_durable(&key, &topic, &principal).unwrap();
    // Claimed (its subscriber is about to attach): a second one is refused.
    assert_eq!(
        router.claim_durable(&key, &topic, &principal).unwrap_err(),
        SubscribeError::DurableActive(key.describe())
    );
    let first = subscription(1, AckMode::Auto, 10, Destination::Queue(queue.clone()));
    queue.subscribe(first);
    queue.unsubscribe(1);
    // Detached: the same queue, still bound to the topic, can be taken again.
    let again = router.claim_durable(&key, &topic, &principal).unwrap();
    assert!(Arc::ptr_eq(&queue, &again));
    topic.publish(&message(1), Duration::from_millis(10)).await;
    assert_eq!(queue.depth(), 1, "messages collect while detached");
}

#[test]
fn racing_subscribers_make_one_durable_subscription() {
    let router = Arc::new(Router::new(RouterSettings::default()));
    let topic = router.topic(&Bytes::from_static(b"/topic/race"));
    let key = reader_key("race");
    let winners: usize = (0..8)
        .map(|_| {
            let (router, topic, key) = (router.clone(), topic.clone(), key.clone());
            std::thread::spawn(move || {
                let principal = crate::plugin::Principal::named("app");
                router.claim_durable(&key, &topic, &principal).is_ok()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| usize::from(t.join().unwrap()))
        .sum();
    assert_eq!(winners, 1);
    assert_eq!(
        router.counts().0,
        1,
        "one queue, no orphan bound to the topic"
    );
}

#[test]
fn a_durable_subscription_is_removed_only_by_a_reader_of_its_topic_and_only_detached() {
    let router = Router::new(RouterSettings::default());
    let topic = router.topic(&Bytes::from_static(b"/topic/secret"));
    let key = reader_key("sub");
    let owner = crate::plugin::Principal::named("app");
    let queue = router.claim_durable(&key, &topic, &owner).unwrap();
    assert_eq!(
        router.remove_durable(&key, &owner).unwrap_err(),
        DurableError::Active(key.describe()),
        "claimed by a subscriber"
    );
    queue.release_claim();
    let mut blind = crate::plugin::Principal::named("app");
    blind.may_subscribe = vec!["/topic/public.*".to_string()];
    assert!(matches!(
        router.remove_durable(&key, &blind),
        Err(DurableError::NotPermitted(..))
    ));
    router.remove_durable(&key, &owner).unwrap();
    assert_eq!(
        router.remove_durable(&key, &owner).unwrap_err(),
        DurableError::Unknown(key.describe())
    );
}

fn subscribe_request(destination: &str, outbox: &Arc<Outbox>) -> SubscribeRequest<'static> {
    static PRINCIPAL: std::sync::OnceLock<crate::plugin::Principal> = std::sync::OnceLock::new();
    SubscribeRequest {
        wire_id: None,
        destination: Bytes::copy_from_slice(destination.as_bytes()),
        ack_mode: AckMode::Auto,
        window: 10,
        options: Default::default(),
        durable: None,
        principal: PRINCIPAL.get_or_init(crate::plugin::Principal::anonymous),
        outbox: outbox.clone(),
        filter: DeliveryFilter::none(
            crate::plugin::Principal::anonymous(),
            crate::plugin::SubscriptionInfo {
                id: Bytes::new(),
                destination: Bytes::new(),
                headers: vec![],
            },
        ),
    }
}

/// Consumer ids are unique across connections whatever their keys (they were
/// `(connection << 24) ^ key`, which collided after ~16.8M SUBSCRIBEs on one connection), and a
/// connection's keys skip the ones still in use when they wrap around.
#[test]
fn consumer_ids_never_collide_and_keys_skip_those_in_use() {
    let router = Router::new(RouterSettings::default());
    let outbox = Arc::new(Outbox::new(64));
    let mut ids = std::collections::HashSet::new();
    for c in 0..3 {
        let mut conn = Connection::new(Arc::from(format!("c{c}")));
        for n in 0..50 {
            let request = subscribe_request(&format!("/queue/ids.{n}"), &outbox);
            let prepared = router.prepare_subscription(&mut conn, request).unwrap();
            let sub = router.attach(&mut conn, prepared);
            assert!(ids.insert(sub.consumer_id), "consumer id reused");
        }
    }
    let mut conn = Connection::new(Arc::from("wrap"));
    let first = {
        let prepared = router
            .prepare_subscription(&mut conn, subscribe_request("/queue/keep", &outbox))
            .unwrap();
        router.attach(&mut conn, prepared)
    };
    assert_eq!(first.key(), 0);
    conn.next_key = u32::MAX;
    for destination in ["/queue/w1", "/queue/w2"] {
        let prepared = router
            .prepare_subscription(&mut conn, subscribe_request(destination, &outbox))
            .unwrap();
        let sub = router.attach(&mut conn, prepared);
        assert_ne!(sub.key(), 0, "key 0 is still in use");
    }
}

#[tokio::test]
async fn the_sweep_removes_only_destinations_nobody_uses() {
    let router = Router::new(RouterSettings::default());
    let outbox = Arc::new(Outbox::new(64));
    let mut conn = Connection::new(Arc::from("sweep"));
    let name = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    // Resolved (cached by the connection), one with a message in it, one with a consumer.
    for q in ["/queue/empty", "/queue/full", "/queue/consumed"] {
        router.resolve(&mut conn, &name(q)).unwrap();
    }
    let Some(Destination::Queue(full)) = router.resolve(&mut conn, &name("/queue/full")).unwrap()
    else {
        unreachable!()
    };
    full.publish(message(1)).await;
    drop(full);
    let prepared = router
        .prepare_subscription(&mut conn, subscribe_request("/queue/consumed", &outbox))
        .unwrap();
    router.attach(&mut conn, prepared);
    router.sweep();
    assert_eq!(
        router.counts().0,
        3,
        "the connection's cache still refers to them"
    );
    // The connection goes: its cache and subscription with it.
    router.disconnect(&mut conn);
    drop(conn);
    router.sweep();
    assert!(
        router.existing_queue(b"/queue/empty").is_none(),
        "empty and unused"
    );
    assert!(
        router.existing_queue(b"/queue/consumed").is_none(),
        "its consumer left"
    );
    assert!(
        router.existing_queue(b"/queue/full").is_some(),
        "it holds a message"
    );
}
