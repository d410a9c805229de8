//! Session state handed back however the session ends.

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
        outbox: outbox.clone(),
        writer: WriterTask::new(writer),
        conn: Connection::new(id),
        transactions: HashMap::new(),
        next_message: 0,
        client_id: None,
        receipts: Receipts::new(outbox, None),
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
        broker.router.resolve(&mut scratch, &name).unwrap()
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
    assert!(broker.router.existing_queue(&global).is_some());

    panic_holding(doomed).await;
    assert!(
        broker.router.existing_queue(&global).is_none(),
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
