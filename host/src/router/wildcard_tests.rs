//! Unit tests of wildcard subscriptions in the router: pattern topics made, fed, filtered by
//! rights and swept, without sockets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::plugin::{Principal, SubscriptionInfo};

fn name(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn message(destination: &str) -> Arc<Message> {
    Arc::new(Message {
        destination: name(destination),
        headers: vec![],
        body: Bytes::from_static(b"m"),
        id_prefix: Arc::from("t"),
        id_seq: 0,
        expires_at: None,
        persistent: false,
        charge: Default::default(),
        props: Default::default(),
    })
}

fn subscribe(
    router: &Router,
    conn: &mut Connection,
    principal: &Principal,
    destination: &str,
) -> Arc<Outbox> {
    let outbox = Arc::new(Outbox::new(64));
    let request = SubscribeRequest {
        wire_id: Some(name(destination)),
        destination: name(destination),
        ack_mode: AckMode::Auto,
        window: 10,
        options: Default::default(),
        durable: None,
        principal,
        outbox: outbox.clone(),
        filter: DeliveryFilter::none(
            principal.clone(),
            SubscriptionInfo {
                id: Bytes::new(),
                destination: name(destination),
                headers: vec![],
            },
        ),
    };
    let prepared = router.prepare_subscription(conn, request).unwrap();
    router.attach(conn, prepared);
    outbox
}

/// Publishes as a SEND does: resolve, then publish when something receives it.
async fn send(router: &Router, conn: &mut Connection, destination: &str) -> bool {
    match router.resolve(conn, &name(destination)).unwrap() {
        Some(target) => {
            publish(&target, message(destination), Duration::from_secs(1)).await;
            true
        }
        None => false,
    }
}

fn delivered_to(outbox: &Outbox) -> Vec<String> {
    outbox
        .drain()
        .into_iter()
        .filter_map(|out| match out {
            Outgoing::Delivery(d) => {
                Some(String::from_utf8_lossy(&d.message.destination).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn topics_nobody_names_reach_wildcard_subscribers_and_nothing_else_is_made() {
    let router = Router::new(RouterSettings::default());
    let mut conn = Connection::new(Arc::from("c"));
    let anyone = Principal::anonymous();
    assert!(
        !send(&router, &mut conn, "/topic/prices.eu").await,
        "no subscriber at all"
    );
    let outbox = subscribe(&router, &mut conn, &anyone, "/topic/prices.*");
    assert_eq!(router.pattern_count(), 1);
    assert!(send(&router, &mut conn, "/topic/prices.eu").await);
    assert!(
        !send(&router, &mut conn, "/topic/news.eu").await,
        "no pattern matches"
    );
    assert_eq!(delivered_to(&outbox), ["/topic/prices.eu"]);
    assert_eq!(router.counts().1, 1, "only the pattern topic exists");
}

#[tokio::test]
async fn unmatched_rights_filter_each_delivered_topic() {
    let router = Router::new(RouterSettings::default());
    let mut conn = Connection::new(Arc::from("c"));
    let mut reader = Principal::named("reader");
    reader.may_subscribe = vec!["/topic/public.*".into()];
    let outbox = subscribe(&router, &mut conn, &reader, "/topic/#");
    let covered = subscribe(&router, &mut conn, &reader, "/topic/public.*.x");
    for topic in ["/topic/public.a.x", "/topic/secret.a.x", "/topic/public"] {
        send(&router, &mut conn, topic).await;
    }
    assert_eq!(delivered_to(&outbox), ["/topic/public.a.x"]);
    assert_eq!(delivered_to(&covered), ["/topic/public.a.x"]);
    let subscriptions: Vec<_> = conn.subscriptions().cloned().collect();
    let rights: Vec<bool> = ["/topic/#", "/topic/public.*.x"]
        .iter()
        .map(|d| {
            subscriptions
                .iter()
                .find(|s| s.destination() == d.as_bytes())
                .unwrap()
                .topic_rights
                .is_some()
        })
        .collect();
    assert_eq!(
        rights,
        [true, false],
        "a covered pattern carries no per-message check"
    );
}

#[tokio::test]
async fn the_sweep_removes_unused_pattern_topics_from_the_index() {
    let router = Router::new(RouterSettings::default());
    let mut conn = Connection::new(Arc::from("c"));
    let anyone = Principal::anonymous();
    subscribe(&router, &mut conn, &anyone, "/topic/a.>");
    subscribe(&router, &mut conn, &anyone, "/topic/b.#");
    router.sweep();
    assert_eq!(router.pattern_count(), 2, "in use");
    router.disconnect(&mut conn);
    router.sweep();
    assert_eq!(router.pattern_count(), 0);
    assert_eq!(router.counts(), (0, 0));
    assert!(!send(&router, &mut conn, "/topic/a.x").await);
}
