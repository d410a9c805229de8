//! Memory is bounded in bytes: big messages to nobody pause their producer within the budget
//! (and resume it, nothing lost), a consumer that never reads cannot drain a queue past its
//! limit, and what a connection can make the broker keep (destinations, temp queues,
//! SUBSCRIBE headers, transaction contents) has a cap.

use std::time::{Duration, Instant};

use plugboard_test_support::broker::{fetch_status, Launch};
use plugboard_test_support::BrokerBinary;

use crate::harness::*;
use crate::Plugboard;

/// The broker's resident set, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const MIB: u64 = 1024 * 1024;
/// What the broker may hold beyond its budget in these tests: its idle footprint (~10 MiB in
/// a debug build), the allocator's cache of freed blocks (up to 64 MiB, see `memory.rs`), and
/// a read buffer of one frame per connection.
const OVERHEAD: u64 = 100 * MIB;

#[tokio::test]
async fn big_sends_to_nobody_pause_their_producer_within_the_budget() {
    let budget = 32 * MIB;
    let broker = Broker::with_config(&format!(
        "[limits]\nmax_memory_bytes = {budget}\nmax_memory_bytes_per_principal = {budget}\n\
         max_body_bytes = 8388608\nmax_frame_bytes = 8650752\n"
    ));
    let dest = format!("/queue/{}", unique("big"));
    let body = "b".repeat(8 * MIB as usize);
    let mut producer = broker.client(Version::V12).await;
    // One at a time, each with a receipt: once the broker is over its budget the next SEND
    // waits before it is published, and its RECEIPT does not come.
    let mut receipted = 0;
    let paused = loop {
        let id = producer.next_receipt();
        let frame = send_frame(
            &dest,
            &[("n", &receipted.to_string()), ("receipt", &id)],
            &body,
        );
        producer.write_raw_lossy(&frame.encode(Version::V12)).await;
        match producer.try_recv(Duration::from_secs(3)).await {
            Ok(reply) => {
                assert!(reply.is("RECEIPT"), "{reply:?}");
                receipted += 1;
            }
            Err(_) => break id,
        }
        assert!(receipted < 30, "never paused");
    };
    assert!(
        (2..=6).contains(&receipted),
        "{receipted} messages of 8 MiB admitted against a 32 MiB budget"
    );
    let held = rss(broker.pid());
    assert!(held < budget + OVERHEAD, "RSS {} MiB", held / MIB);

    // A consumer drains: the producer resumes and nothing is lost.
    let mut consumer = broker.client(Version::V12).await;
    consumer.subscribe("s", &dest, "client-individual").await;
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < receipted + 1 {
        let m = consumer.recv_within(Duration::from_secs(20)).await;
        assert!(m.is("MESSAGE"), "{m:?}");
        assert_eq!(m.must("n"), seen.to_string(), "in order, none lost");
        assert_eq!(m.body.len(), body.len());
        consumer.ack(&m).await;
        seen += 1;
        assert!(Instant::now() < deadline);
    }
    // The paused SEND went through once room was made.
    let reply = producer.recv_within(Duration::from_secs(20)).await;
    assert_eq!(reply.get("receipt-id"), Some(paused.as_str()), "{reply:?}");
}

#[tokio::test]
async fn a_consumer_that_never_reads_cannot_drain_a_queue_past_its_limit() {
    let broker = Broker::with_config("[flow]\nqueue_max_messages = 10\nmax_prefetch = 1000\n");
    let dest = format!("/queue/{}", unique("hoard"));
    let mut hoarder = broker.client(Version::V12).await;
    hoarder
        .subscribe_with(
            "h",
            &dest,
            "client-individual",
            &[("prefetch-count", "1000")],
        )
        .await;
    let mut producer = broker.client(Version::V12).await;
    for n in 0..10 {
        producer.send_r(&dest, &format!("m{n}")).await;
    }
    // Ten are out with the hoarder: the eleventh waits (before, the window took 1000).
    let id = producer.next_receipt();
    producer
        .write(&send_frame(&dest, &[("receipt", &id)], "m10"))
        .await;
    producer.expect_silence(Duration::from_millis(500)).await;
    // The hoarder goes away: its ten go back to the queue (still full), and a consumer that
    // reads them makes room: the producer goes on, nothing lost.
    hoarder.drop_abruptly();
    let mut reader = broker.client(Version::V12).await;
    reader.subscribe("r", &dest, "auto").await;
    let bodies: Vec<String> = reader
        .msgs(11)
        .await
        .iter()
        .map(|m| m.body_str().to_string())
        .collect();
    let expected: Vec<String> = (0..11).map(|n| format!("m{n}")).collect();
    assert_eq!(bodies, expected);
    let reply = producer.recv_within(Duration::from_secs(5)).await;
    assert!(reply.is("RECEIPT"), "{reply:?}");
}

#[tokio::test]
async fn unused_destinations_are_removed_and_creating_them_is_rate_limited() {
    let broker = Launch::config_text(
        Plugboard::PATH,
        "admin_listen = \"127.0.0.1:0\"\n[limits]\ndestinations_created_per_second = 100\n",
    )
    .status_line()
    .start();
    let mut c = Client::connect(broker.addr, Version::V12).await;
    // A burst of ten seconds' worth (1000) is allowed, then the connection must slow down
    // (the allowance refills at 100 per second while the test runs: on a loaded machine the
    // loop may take seconds, so the bound grows with the time it took).
    let started = Instant::now();
    let allowed = |started: Instant| 1000 + (100.0 * started.elapsed().as_secs_f64()) as usize + 1;
    let mut created = 0;
    let refusal = loop {
        let dest = format!("/queue/many.{created}");
        let id = c.next_receipt();
        c.write(
            &Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", &dest)
                .h("receipt", &id),
        )
        .await;
        let reply = c.recv().await;
        if reply.is("ERROR") {
            break reply;
        }
        c.unsubscribe("s").await;
        created += 1;
        assert!(created <= allowed(started), "never limited");
    };
    assert!(refusal.must("message").contains("too fast"), "{refusal:?}");
    assert!(
        (1000..=allowed(started)).contains(&created),
        "{created} created in {:?}",
        started.elapsed()
    );
    // Gone with the connection: the sweep removes the empty queues nobody refers to.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = fetch_status(broker.admin()).await;
        let queues = status["destinations"]["queues"].as_u64().unwrap();
        if queues < 10 {
            break;
        }
        assert!(Instant::now() < deadline, "{queues} queues left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn temp_queues_subscribe_headers_and_transactions_have_caps() {
    let broker = Broker::with_config(
        "[limits]\nmax_temp_queues_per_connection = 8\nmax_transaction_bytes_per_connection = 1048576\n",
    );
    let mut by = Bystander::new(&broker).await;

    // reply-to makes a temp queue per name.
    let mut c = broker.client(Version::V12).await;
    let dest = format!("/queue/{}", unique("replies"));
    for n in 0..8 {
        c.roundtrip(send_frame(
            &dest,
            &[("reply-to", &format!("/temp-queue/r{n}"))],
            "x",
        ))
        .await;
    }
    let err = expect_refused(
        &mut c,
        send_frame(&dest, &[("reply-to", "/temp-queue/one-too-many")], "x"),
        "r-temp",
        "temp queues",
    )
    .await;
    assert!(err.must("message").contains("temporary queues"), "{err:?}");

    // SUBSCRIBE headers are kept as long as the subscription: 16 KiB at most.
    let mut c = broker.client(Version::V12).await;
    let junk = "j".repeat(9000);
    let err = expect_refused(
        &mut c,
        Frame::new("SUBSCRIBE")
            .h("id", "s")
            .h("destination", &dest)
            .h("x-a", &junk)
            .h("x-b", &junk),
        "r-sub",
        "subscribe headers",
    )
    .await;
    assert!(err.must("message").contains("SUBSCRIBE headers"), "{err:?}");

    // Transaction contents: 1 MiB per connection here.
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(Frame::new("BEGIN").h("transaction", "t")).await;
    let body = "t".repeat(300_000);
    for _ in 0..3 {
        c.roundtrip(send_frame(&dest, &[("transaction", "t")], &body))
            .await;
    }
    let err = expect_refused(
        &mut c,
        send_frame(&dest, &[("transaction", "t")], &body),
        "r-tx",
        "transaction bytes",
    )
    .await;
    assert!(err.must("message").contains("per connection"), "{err:?}");
    by.check().await;
}

/// The budget's counters are batched per broker thread (see `budget.rs`), and a release may
/// reach them before the addition it undoes: once every message is consumed and every
/// connection gone, the count is back to zero (nothing leaked, nothing left negative), on a
/// budget large enough for every change of this traffic to have gone through the batches.
#[tokio::test]
async fn the_budgets_count_is_back_to_zero_once_every_message_is_gone() {
    const PER_PRODUCER: usize = 1000;
    const PRODUCERS: usize = 4;
    let broker = Launch::config_text(
        Plugboard::PATH,
        "admin_listen = \"127.0.0.1:0\"\n[limits]\nmax_memory_bytes = 4294967296\n",
    )
    .status_line()
    .start();
    let dest = format!("/queue/{}", unique("zero"));
    let body = "m".repeat(1024);
    let consumed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for n in 0..4 {
        let mut c = Client::connect(broker.addr, Version::V12).await;
        c.subscribe(&format!("s{n}"), &dest, "client-individual")
            .await;
        let (consumed, body_len) = (consumed.clone(), body.len());
        consumers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while consumed.load(std::sync::atomic::Ordering::Relaxed) < PRODUCERS * PER_PRODUCER {
                assert!(Instant::now() < deadline, "not all consumed");
                if let Ok(m) = c.try_recv(Duration::from_millis(200)).await {
                    assert!(m.is("MESSAGE"), "{m:?}");
                    assert_eq!(m.body.len(), body_len);
                    c.ack(&m).await;
                    consumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            c.disconnect().await;
        }));
    }
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let mut c = Client::connect(broker.addr, Version::V12).await;
        let (dest, body) = (dest.clone(), body.clone());
        producers.push(tokio::spawn(async move {
            for _ in 0..PER_PRODUCER {
                c.send(&dest, &body).await;
            }
            c.disconnect().await;
        }));
    }
    for task in producers.into_iter().chain(consumers) {
        task.await.unwrap();
    }
    assert_eq!(
        consumed.load(std::sync::atomic::Ordering::Relaxed),
        PRODUCERS * PER_PRODUCER
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = plugboard_test_support::metrics::scrape(broker.admin(), None).await;
        let used = scrape.samples["plugboard_memory_used_bytes"][0].1;
        if used == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{used} bytes still counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
