//! Flow control: slow topic subscribers (disconnect / drop policies) and producers paused by a
//! full queue (TCP backpressure, never an error, nothing lost).

use std::time::{Duration, Instant};

use crate::harness::*;

const BODY: usize = 16 * 1024;
const FLOOD: usize = 1500;

/// Publishes `FLOOD` messages of `BODY` bytes to `topic` in batches of `BATCH`; after each
/// batch the fast subscriber reads it (in order, nothing lost), so the fast subscriber never
/// has more than `BATCH` frames pending while the slow one, which never reads, falls behind.
async fn flood(broker: &Broker, topic: &str, fast: &mut Client) {
    const BATCH: usize = 8;
    let mut p = broker.client(Version::V12).await;
    let body = vec![b'f'; BODY];
    let mut i = 0;
    while i < FLOOD {
        let n = BATCH.min(FLOOD - i);
        let frames: Vec<Frame> = (i..i + n)
            .map(|k| {
                Frame::new("SEND")
                    .h("destination", topic)
                    .h("n", &k.to_string())
                    .body_cl(body.clone())
            })
            .collect();
        p.write_all(&frames).await;
        for k in i..i + n {
            let m = match fast.try_recv(Duration::from_secs(20)).await {
                Ok(m) => m,
                Err(e) => panic!("fast subscriber, message {k}: {e:?}"),
            };
            assert!(m.is("MESSAGE"), "{m:?}");
            assert_eq!(
                m.get("n"),
                Some(k.to_string().as_str()),
                "fast subscriber loses nothing"
            );
        }
        i += n;
    }
    p.sync().await;
}

async fn slow_subscriber(broker: &Broker, topic: &str) -> Client {
    let mut slow = Client::open_small_rcvbuf(broker.addr, 4096).await;
    slow.write(&Client::connect_frame(Version::V12)).await;
    slow.expect("CONNECTED").await;
    slow.version = Version::V12;
    slow.subscribe("slow", topic, "auto").await;
    slow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_topic_subscriber_is_disconnected() {
    let broker = Broker::with_config(
        "[flow]\noutbound_queue_frames = 16\nslow_consumer_policy = \"disconnect\"\n",
    );
    let topic = format!("/topic/{}", unique("slow"));
    let mut slow = slow_subscriber(&broker, &topic).await;
    let mut fast = broker.client(Version::V12).await;
    fast.subscribe("fast", &topic, "auto").await;
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), flood(&broker, &topic, &mut fast))
        .await
        .expect("producer was blocked");
    eprintln!("flood of {FLOOD} x {BODY} B took {:?}", start.elapsed());
    // The slow subscriber was cut off: reading now drains what was buffered, then EOF.
    let mut got = 0usize;
    let mut error = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "slow subscriber still connected after {got} messages"
        );
        match slow.try_recv(Duration::from_secs(5)).await {
            Ok(f) if f.is("MESSAGE") => got += 1,
            Ok(f) => {
                assert!(f.is("ERROR"), "{f:?}");
                error = Some(f);
            }
            Err(RecvError::Closed) => break,
            // Cut off in the middle of a MESSAGE: acceptable for a dropped slow consumer.
            Err(RecvError::Protocol(e)) if e.starts_with(CLOSED_INSIDE_FRAME) => break,
            Err(RecvError::Protocol(e)) => panic!("{e}"),
            Err(RecvError::Timeout) => {
                panic!("slow subscriber not disconnected (read {got} messages)")
            }
        }
    }
    assert!(
        got < FLOOD,
        "slow subscriber received everything ({got}); was it ever slow?"
    );
    if let Some(e) = error {
        assert!(e.must("message").to_lowercase().contains("slow"), "{e:?}");
    }
    // Everyone else carries on.
    fast.send_r(&topic, "after").await;
    assert_eq!(fast.msg().await.body_str(), "after");
    assert_healthy(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_topic_subscriber_loses_messages_with_drop_policy() {
    let broker = Broker::with_config(
        "[flow]\noutbound_queue_frames = 16\nslow_consumer_policy = \"drop\"\n",
    );
    let topic = format!("/topic/{}", unique("slowdrop"));
    let mut slow = slow_subscriber(&broker, &topic).await;
    let mut fast = broker.client(Version::V12).await;
    fast.subscribe("fast", &topic, "auto").await;
    tokio::time::timeout(Duration::from_secs(120), flood(&broker, &topic, &mut fast))
        .await
        .expect("producer was blocked");
    // Still connected: drain what it was sent, in order, then it answers a receipt.
    let mut got = 0usize;
    let mut last: Option<usize> = None;
    loop {
        match slow.try_recv(Duration::from_millis(500)).await {
            Ok(f) => {
                assert!(f.is("MESSAGE"), "drop policy keeps the connection: {f:?}");
                let n: usize = f.must("n").parse().unwrap();
                assert!(last.is_none_or(|l| n > l), "order kept, no duplicates");
                last = Some(n);
                got += 1;
            }
            Err(RecvError::Timeout) => break,
            Err(e) => panic!("slow subscriber after {got} messages: {e:?}"),
        }
    }
    assert!(
        got < FLOOD,
        "nothing was dropped ({got}); was the subscriber ever slow?"
    );
    slow.sync().await;
    // And it gets new messages again.
    fast.send_r(&topic, "after").await;
    assert_eq!(fast.msg().await.body_str(), "after");
    let m = slow.msg().await;
    assert_eq!(m.body_str(), "after");
}

#[tokio::test]
async fn full_queue_pauses_the_producer() {
    let broker = Broker::with_config("[flow]\nqueue_max_messages = 10\n");
    let dest = format!("/queue/{}", unique("full"));
    let mut p = broker.client(Version::V12).await;
    let frames: Vec<Frame> = (0..60)
        .map(|i| {
            Frame::new("SEND")
                .h("destination", &dest)
                .h("receipt", &format!("r{i}"))
                .body(format!("m{i}"))
        })
        .collect();
    p.write_all(&frames).await;
    let mut receipts = Vec::new();
    loop {
        match p.try_recv(Duration::from_millis(700)).await {
            Ok(f) => {
                assert!(f.is("RECEIPT"), "no error for a full queue: {f:?}");
                receipts.push(f.must("receipt-id").to_string());
            }
            Err(RecvError::Timeout) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        receipts.len() < 60,
        "the producer was not paused: {} receipts",
        receipts.len()
    );
    assert!(
        receipts.len() >= 10,
        "the queue takes its 10 messages: {} receipts",
        receipts.len()
    );
    // A consumer drains the queue: everything flows, nothing lost, in order.
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &dest, "auto").await;
    for (i, m) in c.msgs(60).await.iter().enumerate() {
        assert_eq!(m.body_str(), format!("m{i}"));
    }
    while receipts.len() < 60 {
        let f = p.recv().await;
        assert!(f.is("RECEIPT"), "{f:?}");
        receipts.push(f.must("receipt-id").to_string());
    }
    let expected: Vec<String> = (0..60).map(|i| format!("r{i}")).collect();
    assert_eq!(receipts, expected, "receipts in order");
    c.expect_silence(QUIET).await;
}

/// The paused producer's connection is not blocking others: other queues keep flowing.
#[tokio::test]
async fn full_queue_does_not_block_other_queues() {
    let broker = Broker::with_config("[flow]\nqueue_max_messages = 5\n");
    let full = format!("/queue/{}", unique("full"));
    let mut p = broker.client(Version::V12).await;
    let frames: Vec<Frame> = (0..30)
        .map(|i| {
            Frame::new("SEND")
                .h("destination", &full)
                .body(format!("m{i}"))
        })
        .collect();
    p.write_all(&frames).await;
    let mut other = broker.client(Version::V12).await;
    let dest = format!("/queue/{}", unique("free"));
    other.subscribe("s", &dest, "auto").await;
    for i in 0..20 {
        other.send_r(&dest, &i.to_string()).await;
    }
    assert_eq!(other.msgs(20).await.len(), 20);
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", &full, "auto").await;
    assert_eq!(c.msgs(30).await.len(), 30);
}

/// `write_timeout_ms`: a subscriber whose socket takes no bytes for that long is closed, and
/// the queue messages it held unacked go to another consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_reader_is_closed_by_write_timeout() {
    let broker = Broker::with_config("[limits]\nwrite_timeout_ms = 300\n");
    let dest = format!("/queue/{}", unique("stuck"));
    let mut stuck = Client::open_small_rcvbuf(broker.addr, 4096).await;
    stuck.write(&Client::connect_frame(Version::V12)).await;
    stuck.expect("CONNECTED").await;
    stuck.version = Version::V12;
    stuck.subscribe("s", &dest, "client-individual").await;
    let mut p = broker.client(Version::V12).await;
    let body = vec![b's'; BODY];
    for i in 0..600 {
        p.write(
            &Frame::new("SEND")
                .h("destination", &dest)
                .h("n", &i.to_string())
                .body_cl(body.clone()),
        )
        .await;
    }
    p.sync().await;
    // Without reading, wait for the broker to give up on the stuck connection: a second
    // consumer then receives the messages (redelivered).
    let mut other = broker.client(Version::V12).await;
    other.subscribe("o", &dest, "auto").await;
    let start = Instant::now();
    let first = match other.try_recv(Duration::from_secs(10)).await {
        Ok(f) => f,
        Err(e) => panic!("no message reached the second consumer within 10 s: {e:?}"),
    };
    assert!(first.is("MESSAGE"), "{first:?}");
    assert_eq!(
        first.get("redelivered"),
        Some("true"),
        "the stuck consumer's messages: {first:?}"
    );
    eprintln!(
        "stuck reader released its messages after {:?}",
        start.elapsed()
    );
    let mut seen = std::collections::HashSet::new();
    seen.insert(first.must("n").to_string());
    while seen.len() < 600 {
        let m = other.recv().await;
        assert!(m.is("MESSAGE"), "{m:?}");
        seen.insert(m.must("n").to_string());
    }
    // The stuck connection is closed: reading drains whatever was in flight, then EOF.
    loop {
        match stuck.try_recv(Duration::from_secs(5)).await {
            Ok(_) => {}
            Err(RecvError::Closed) => break,
            Err(RecvError::Protocol(e)) if e.starts_with(CLOSED_INSIDE_FRAME) => break,
            Err(e) => panic!("stuck connection not closed: {e:?}"),
        }
    }
}
