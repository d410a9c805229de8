//! Session logic without sockets: what a session hands back however it ends, ACK and NACK
//! per ack mode, ACKs inside transactions, and RECEIPT ordering behind the message store.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::Config;
use crate::plugin::PluginHost;
use crate::policy::Policy;
use crate::router::Message;

fn broker() -> Arc<Broker> {
    let policy = Policy::new(PluginHost::empty(), Vec::new(), Vec::new());
    Arc::new(Broker::new(Arc::new(Config::default()), policy))
}

/// The router of the broker's one vhost.
fn router(broker: &Broker) -> &crate::router::Router {
    &broker.vhosts.select(None).unwrap().router
}

/// A connected session whose writer never writes (its outbox just fills).
fn session(broker: &Arc<Broker>, number: u64) -> Session {
    let outbox = Arc::new(Outbox::new(broker.config.flow.outbound_queue_frames));
    let writer = tokio::spawn(async { std::future::pending::<writer::WriterExit>().await });
    let id: Arc<str> = Arc::from(format!("test-{number}"));
    Session {
        broker: broker.clone(),
        id: id.clone(),
        version: Version::V1_2,
        principal: Principal::named("tester"),
        expires: None,
        reauth_rate: super::reauth::ReauthRate::new(),
        peer: crate::listen::Peer::tcp("127.0.0.1:1".parse().unwrap()),
        negotiated: super::connect::Negotiated {
            version: Version::V1_2,
            send_every: None,
            expect_every: None,
            heartbeat_header: "0,0".into(),
        },
        outbox: outbox.clone(),
        writer: WriterTask::new(writer),
        conn: Connection::new(id),
        transactions: HashMap::new(),
        next_message: 0,
        client_id: None,
        receipts: Receipts::new(outbox, None),
        pipeline: None,
        account: broker.vhosts.budget().account("tester"),
        vhost: broker.vhosts.select(None).unwrap().clone(),
        _member: crate::vhost::Member::enter(broker.vhosts.select(None).unwrap()),
        registered: Arc::new(crate::connection_registry::ConnectionInfo::new(
            number,
            "tcp",
            "127.0.0.1:1".parse().unwrap(),
        )),
        plugin_context: crate::plugin::CallContext::detached(),
    }
}

fn subscribe(id: &str, destination: &str, extra: &[(&str, &str)]) -> Frame {
    let mut frame = Frame::new(Command::Subscribe)
        .header("id", id.to_string())
        .header("destination", destination.to_string())
        .header("ack", "client-individual");
    for (name, value) in extra {
        frame = frame.header(name.to_string(), value.to_string());
    }
    frame
}

fn message(destination: &Bytes, n: u64) -> Arc<Message> {
    Arc::new(Message {
        destination: destination.clone(),
        headers: Vec::new(),
        body: Bytes::from(format!("m{n}")),
        id_prefix: Arc::from("sender"),
        id_seq: n,
        expires_at: None,
        persistent: false,
        props: Default::default(),
        charge: Default::default(),
    })
}

/// Moves `session` into a task that panics while holding it, as a broker bug would.
async fn panic_holding(session: Session) {
    let task = tokio::spawn(async move {
        let held = session;
        tokio::task::yield_now().await;
        if !held.id.is_empty() {
            panic!("injected panic in a session task");
        }
        drop(held);
    });
    let err = task.await.expect_err("the task panicked");
    assert!(err.is_panic());
}

#[tokio::test]
async fn a_session_that_panics_hands_its_unacked_messages_back() {
    let broker = broker();
    let name = Bytes::from_static(b"/queue/panicking");
    let mut scratch = Connection::new(Arc::from("scratch"));
    let Some(crate::router::Destination::Queue(queue)) =
        router(&broker).resolve(&mut scratch, &name).unwrap()
    else {
        unreachable!("a /queue/ name resolves to a queue")
    };
    let mut doomed = session(&broker, 1);
    doomed
        .on_subscribe(
            subscribe("s", "/queue/panicking", &[("prefetch-count", "2")]),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    for n in 0..5 {
        queue.publish(message(&name, n)).await;
    }
    assert_eq!(queue.depth(), 3, "two are out to the doomed consumer");

    panic_holding(doomed).await;
    assert_eq!(
        queue.depth(),
        5,
        "the unacked deliveries are back in the queue"
    );

    // A live consumer now gets every message, in order (before the fix it saw m3 and m5 only:
    // the dead subscription's window kept taking messages).
    let mut live = session(&broker, 2);
    live.on_subscribe(
        subscribe("s", "/queue/panicking", &[]),
        None,
        Default::default(),
    )
    .await
    .unwrap();
    let bodies: Vec<Bytes> = live
        .outbox
        .drain()
        .into_iter()
        .filter_map(|item| match item {
            Outgoing::Delivery(d) => Some(d.message.body.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<Bytes> = (0..5).map(|n| Bytes::from(format!("m{n}"))).collect();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn a_session_that_panics_releases_its_durable_subscription_and_temp_queues() {
    let broker = broker();
    let mut doomed = session(&broker, 3);
    doomed
        .on_subscribe(
            subscribe("d", "/topic/news", &[("durable", "true")]),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    doomed
        .on_subscribe(
            subscribe("t", "/temp-queue/replies", &[]),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    let global = doomed
        .conn
        .subscriptions()
        .find(|s| s.destination().as_ref() == b"/temp-queue/replies")
        .map(|_| {
            let mut name = b"/reply-queue/test-3.".to_vec();
            name.extend_from_slice(b"replies");
            Bytes::from(name)
        })
        .unwrap();
    assert!(router(&broker).existing_queue(&global).is_some());

    panic_holding(doomed).await;
    assert!(
        router(&broker).existing_queue(&global).is_none(),
        "the temp queue is removed"
    );
    // The same principal can attach to the durable subscription again at once.
    let mut again = session(&broker, 4);
    again
        .on_subscribe(
            subscribe("d", "/topic/news", &[("durable", "true")]),
            None,
            Default::default(),
        )
        .await
        .expect("the durable subscription is no longer claimed");
}

/// Runs one frame through the session as the connection loop would.
async fn handle(session: &mut Session, frame: Frame) -> Result<Flow, SessionError> {
    session.handle_one((frame, Default::default())).await
}

fn send(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination.to_string())
        .body(body.to_string())
}

/// The frames queued for the client: (command, `ack` or `receipt-id`, body).
fn sent(session: &Session) -> Vec<(Command, String, String)> {
    session
        .outbox
        .drain()
        .into_iter()
        .map(|item| match item {
            Outgoing::Frame(f) => (
                f.command,
                f.get(b"receipt-id")
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .unwrap_or_default(),
                String::new(),
            ),
            Outgoing::Delivery(d) => (
                Command::Message,
                format!("{}.{}", d.subscription.key(), d.seq),
                String::from_utf8_lossy(&d.message.body).into_owned(),
            ),
            _ => (Command::Error, String::new(), String::new()),
        })
        .collect()
}

fn subscribe_client(id: &str, destination: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .header("id", id.to_string())
        .header("destination", destination.to_string())
        .header("ack", "client")
}

fn ack(id: &str) -> Frame {
    Frame::new(Command::Ack).header("id", id.to_string())
}

#[tokio::test]
async fn a_cumulative_ack_settles_every_earlier_delivery_and_a_nack_hands_back() {
    let broker = broker();
    let mut s = session(&broker, 10);
    let q = "/queue/acks";
    handle(&mut s, subscribe_client("c", q)).await.unwrap();
    for n in 0..4 {
        handle(&mut s, send(q, &format!("m{n}"))).await.unwrap();
    }
    let acks: Vec<String> = sent(&s)
        .into_iter()
        .filter(|(c, ..)| *c == Command::Message)
        .map(|(_, ack, _)| ack)
        .collect();
    assert_eq!(acks.len(), 4);
    // `client` mode: the ACK of the third covers the first three.
    handle(&mut s, ack(&acks[2])).await.unwrap();
    let err = handle(&mut s, ack(&acks[0])).await.unwrap_err();
    assert!(
        err.to_string().contains("names no unacknowledged message"),
        "{err}"
    );
    drop(s);
    let mut s = session(&broker, 11);
    handle(&mut s, subscribe_client("c", q)).await.unwrap();
    // The fourth was still out with the first session, which is gone with its subscription:
    // it came back, redelivered.
    let got = sent(&s);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].2, "m3");
    // A NACK hands it back again, to the same (only) consumer.
    let nack = Frame::new(Command::Nack).header("id", got[0].1.clone());
    handle(&mut s, nack).await.unwrap();
    assert_eq!(sent(&s)[0].2, "m3");
}

#[tokio::test]
async fn acks_in_a_transaction_apply_at_commit_and_come_back_at_abort() {
    let broker = broker();
    let mut s = session(&broker, 12);
    let q = "/queue/tx-acks";
    handle(&mut s, subscribe("c", q, &[])).await.unwrap();
    handle(&mut s, send(q, "one")).await.unwrap();
    let (_, first, _) = sent(&s).pop().unwrap();
    let begin = |t: &str| Frame::new(Command::Begin).header("transaction", t.to_string());
    handle(&mut s, begin("t1")).await.unwrap();
    handle(&mut s, ack(&first).header("transaction", "t1"))
        .await
        .unwrap();
    // An ACK of nothing pending is refused at once, not at COMMIT.
    let err = handle(&mut s, ack("0.99").header("transaction", "t1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("names no unacknowledged"), "{err}");
    handle(
        &mut s,
        Frame::new(Command::Abort).header("transaction", "t1"),
    )
    .await
    .unwrap();
    // Aborted: the message comes back to the queue, redelivered to this consumer.
    let again = sent(&s);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].2, "one");
    handle(&mut s, begin("t2")).await.unwrap();
    handle(&mut s, ack(&again[0].1).header("transaction", "t2"))
        .await
        .unwrap();
    handle(
        &mut s,
        Frame::new(Command::Commit).header("transaction", "t2"),
    )
    .await
    .unwrap();
    assert!(sent(&s).is_empty(), "settled at COMMIT: nothing comes back");
    drop(s);
    let mut other = session(&broker, 13);
    handle(&mut other, subscribe("c", q, &[])).await.unwrap();
    assert!(sent(&other).is_empty(), "acknowledged for good");
}

#[tokio::test]
async fn receipts_wait_for_what_earlier_frames_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::store::StoreSettings {
        dir: dir.path().join("data"),
        fsync: crate::config::FsyncPolicy::Batch,
        fsync_interval: Duration::from_millis(10),
        max_bytes: 1 << 20,
        segment_bytes: 1 << 20,
    };
    let (store, _) = crate::store::Store::open(&settings).unwrap();
    let outbox = Arc::new(Outbox::new(64));
    let mut receipts = Receipts::new(outbox.clone(), Some(store.clone()));
    let receipt = |id: &str| handlers::receipt_frame(Bytes::from(id.to_string()));
    // Nothing journaled: at once.
    receipts.send(receipt("r1"));
    assert_eq!(outbox.len(), 1);
    // A frame that journaled: its RECEIPT, and every later one, waits for the store.
    let mark = receipts.mark();
    store.enqueue(
        &Bytes::from_static(b"/queue/q"),
        &message(&Bytes::from_static(b"/queue/q"), 1),
    );
    receipts.note(mark);
    receipts.send(receipt("r2"));
    receipts.send(receipt("r3"));
    let durable_now = store.durable() >= store.appended();
    assert!(durable_now || receipts.holding());
    tokio::time::timeout(
        Duration::from_secs(5),
        receipts.flush(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let ids: Vec<String> = outbox
        .drain()
        .into_iter()
        .filter_map(|item| match item {
            Outgoing::Frame(f) => f
                .get(b"receipt-id")
                .map(|r| String::from_utf8_lossy(r).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3"], "in order");
}

/// A principal that may subscribe to `patterns` only.
fn reading(patterns: &[&str]) -> Principal {
    Principal {
        may_subscribe: patterns.iter().map(|p| p.to_string()).collect(),
        ..Principal::named("tester")
    }
}

#[tokio::test]
async fn narrower_rights_end_the_subscriptions_they_do_not_cover_with_one_error_each() {
    let broker = broker();
    let mut session = session(&broker, 7);
    for (id, destination) in [
        ("named-kept", "/topic/news"),
        ("named-gone", "/topic/audit"),
        ("pattern-kept", "/topic/news.*"),
        ("pattern-gone", "/topic/*.eu"),
        ("composite", "/queue/a,/queue/b"),
    ] {
        let frame = subscribe(id, destination, &[]);
        session
            .on_subscribe(frame, None, Default::default())
            .await
            .unwrap();
    }
    drop(session.outbox.drain());
    let old = std::mem::replace(
        &mut session.principal,
        reading(&["/topic/news", "/topic/news.*", "/queue/a"]),
    );
    // Part of the composite is no longer covered: the whole SUBSCRIBE ends, once.
    assert_eq!(session.end_uncovered_subscriptions(&old), 3);
    let mut errors: Vec<(String, String)> = session
        .outbox
        .drain()
        .into_iter()
        .filter_map(|item| match item {
            Outgoing::Frame(f) if f.command == Command::Error => Some((
                String::from_utf8_lossy(f.get(b"subscription").unwrap()).into_owned(),
                String::from_utf8_lossy(f.get(b"error-code").unwrap()).into_owned(),
            )),
            _ => None,
        })
        .collect();
    errors.sort();
    let revoked = |id: &str| (id.to_string(), "permission.revoked".to_string());
    assert_eq!(
        errors,
        [
            revoked("composite"),
            revoked("named-gone"),
            revoked("pattern-gone")
        ]
    );
    let mut left: Vec<String> = session
        .conn
        .subscriptions()
        .map(|s| String::from_utf8_lossy(s.name()).into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["named-kept", "pattern-kept"]);
    // Rights that did not change end nothing (and cost no look at the subscriptions).
    let same = session.principal.clone();
    assert_eq!(session.end_uncovered_subscriptions(&same), 0);
}
