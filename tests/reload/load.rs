//! Ten swaps of the router's rules under continuous load: nothing lost, duplicated or
//! misrouted, no connection dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use plugboard_test_support::stomp::{Client, Frame, RecvError};

const IN: &str = "/queue/rl.in";
const A: &str = "/queue/rl.a";
const B: &str = "/queue/rl.b";
const PRODUCERS: u32 = 3;
const CONSUMERS: usize = 3;
const SWAPS: u64 = 10;

/// One received message.
struct Got {
    producer: u32,
    seq: u64,
    region: String,
    destination: String,
}

async fn produce(
    mut client: Client,
    id: u32,
    stop: Arc<AtomicBool>,
    sent_total: Arc<AtomicU64>,
) -> (Client, u64) {
    let mut seq = 0u64;
    let mut batches = 0u64;
    // At least a few hundred each, and on until the swaps are over.
    while !stop.load(SeqCst) || seq < 600 {
        let frames: Vec<Frame> = (0..5)
            .map(|k| {
                let s = seq + k;
                let region = if s.is_multiple_of(2) { "eu" } else { "us" };
                send_frame(
                    IN,
                    &[
                        ("producer", &id.to_string()),
                        ("seq", &s.to_string()),
                        ("region", region),
                    ],
                    &format!("p{id}-{s}"),
                )
            })
            .collect();
        client.write_all(&frames).await;
        seq += 5;
        sent_total.fetch_add(5, SeqCst);
        batches += 1;
        if batches.is_multiple_of(40) {
            // A receipt now and then: any ERROR shows up here, and the pace stays honest.
            client.sync().await;
        }
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    client.sync().await;
    (client, seq)
}

async fn consume(
    mut client: Client,
    received: Arc<AtomicU64>,
    expected: Arc<AtomicU64>,
    deadline: Arc<std::sync::Mutex<Option<Instant>>>,
) -> (Client, Vec<Got>, Vec<String>) {
    let mut got = Vec::new();
    let mut problems = Vec::new();
    loop {
        match client.try_recv(Duration::from_millis(300)).await {
            Ok(m) if m.is("MESSAGE") => {
                let field = |n: &str| m.get(n).unwrap_or("").to_string();
                got.push(Got {
                    producer: field("producer").parse().unwrap_or(u32::MAX),
                    seq: field("seq").parse().unwrap_or(u64::MAX),
                    region: field("region"),
                    destination: field("destination"),
                });
                received.fetch_add(1, SeqCst);
            }
            Ok(other) => problems.push(format!("unexpected frame {other:?}")),
            Err(RecvError::Timeout) => {
                // Everything arrived and 300 ms passed without more (a duplicate would show).
                if received.load(SeqCst) >= expected.load(SeqCst) {
                    break;
                }
                let past = deadline.lock().unwrap().is_some_and(|d| Instant::now() > d);
                if past {
                    problems.push("gave up waiting for the rest of the messages".into());
                    break;
                }
            }
            Err(e) => {
                problems.push(format!("consumer connection failed: {e:?}"));
                break;
            }
        }
    }
    (client, got, problems)
}

fn rules(version: char) -> &'static str {
    match version {
        'A' => A,
        _ => B,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_rule_swaps_under_load_lose_nothing() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let version = |v: char| router(&wasm, IN, &[("eu", rules(v))]);
    let broker = setup.start(&version('A'));
    assert_eq!(broker.generation().await, 1);

    let received = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let deadline = Arc::new(std::sync::Mutex::new(None));
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let mut c = broker.client().await;
        subscribe_all(&mut c, &[IN, A, B]).await;
        consumers.push(tokio::spawn(consume(
            c,
            received.clone(),
            expected.clone(),
            deadline.clone(),
        )));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for id in 0..PRODUCERS {
        let c = broker.client().await;
        producers.push(tokio::spawn(produce(
            c,
            id,
            stop.clone(),
            sent_total.clone(),
        )));
    }

    // Let the load run on version A, then alternate B, A, B, ... ten times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut swap_ms = Vec::new();
    for i in 1..=SWAPS {
        let generation = i; // before this swap
        let v = if i % 2 == 1 { 'B' } else { 'A' };
        let before = sent_total.load(SeqCst);
        let t0 = Instant::now();
        setup.write(&version(v));
        let status = broker.wait_generation_change(generation, RELOAD_T).await;
        swap_ms.push(t0.elapsed().as_millis());
        assert_eq!(
            crate::support::generation(&status),
            generation + 1,
            "one write, one reload"
        );
        // Some traffic under the new version before the next swap.
        let wait = Instant::now() + Duration::from_secs(5);
        while sent_total.load(SeqCst) < before + 150 && Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, SeqCst);

    let mut sent = HashMap::new();
    let mut producer_clients = Vec::new();
    for (id, p) in producers.into_iter().enumerate() {
        let (client, n) = p
            .await
            .expect("producer task (a panic means an ERROR or close)");
        sent.insert(id as u32, n);
        producer_clients.push(client);
    }
    let total: u64 = sent.values().sum();
    expected.store(total, SeqCst);
    *deadline.lock().unwrap() = Some(Instant::now() + Duration::from_secs(30));

    let mut all = Vec::new();
    let mut problems = Vec::new();
    let mut consumer_clients = Vec::new();
    for c in consumers {
        let (client, got, p) = c.await.expect("consumer task");
        all.extend(got);
        problems.extend(p);
        consumer_clients.push(client);
    }
    assert!(problems.is_empty(), "client problems: {problems:?}");

    // Exactly once each.
    let mut seen: HashMap<(u32, u64), usize> = HashMap::new();
    for g in &all {
        *seen.entry((g.producer, g.seq)).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    let mut lost = Vec::new();
    for (&p, &n) in &sent {
        for s in 0..n {
            if !seen.contains_key(&(p, s)) {
                lost.push((p, s));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {total} lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(all.len() as u64, total, "received count");

    // Routed by one of the two versions.
    let mut by_a = 0;
    let mut by_b = 0;
    for g in &all {
        let ok = match g.region.as_str() {
            "eu" if g.destination == A => {
                by_a += 1;
                true
            }
            "eu" if g.destination == B => {
                by_b += 1;
                true
            }
            "us" => g.destination == IN,
            _ => false,
        };
        assert!(
            ok,
            "p{}-{} region {} arrived on {}: neither version routes it there",
            g.producer, g.seq, g.region, g.destination
        );
    }
    assert!(
        by_a > 0 && by_b > 0,
        "both versions must have routed: A {by_a}, B {by_b}"
    );

    // No connection dropped: every client still answers.
    for c in producer_clients
        .iter_mut()
        .chain(consumer_clients.iter_mut())
    {
        c.sync().await;
    }
    let status = broker.status().await;
    assert_eq!(crate::support::generation(&status), 1 + SWAPS);
    assert_eq!(status["plugins"]["reloads"], SWAPS);
    assert_eq!(status["plugins"]["reload_failures"], 0);
    assert_eq!(
        status["connections"]["open"].as_u64(),
        Some((PRODUCERS as usize + CONSUMERS) as u64),
        "connections: {}",
        status["connections"]
    );
    eprintln!(
        "load: {total} messages ({by_a} eu via A, {by_b} eu via B), {SWAPS} swaps, file change → new generation visible in /status (ms): {swap_ms:?}"
    );
}
