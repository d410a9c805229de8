//! Many connections and many messages: 200 concurrent connections, and 100,000 messages
//! through one queue with 4 producers and 4 consumers, none lost and none duplicated.
//! No assertion on speed (shared machines); the rate is printed (`--nocapture`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    const N: usize = 200;
    let broker = Broker::start();
    let topic = format!("/topic/{}", unique("all"));
    let prefix = unique("conn");
    let ready = Arc::new(tokio::sync::Barrier::new(N + 1));
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let addr = broker.addr;
        let topic = topic.clone();
        let queue = format!("/queue/{prefix}-{i}");
        let ready = ready.clone();
        tasks.spawn(async move {
            let v = ALL_VERSIONS[i % 3];
            let mut c = Client::connect(addr, v).await;
            c.subscribe("t", &topic, "auto").await;
            c.subscribe("q", &queue, "client-individual").await;
            ready.wait().await;
            let mut got = Vec::new();
            for _ in 0..2 {
                got.push(c.msg().await);
            }
            got.sort_by(|a, b| a.must("subscription").cmp(b.must("subscription")));
            assert_eq!(got[0].must("subscription"), "q");
            assert_eq!(got[0].body_str(), format!("for {i}"));
            assert_eq!(got[1].must("subscription"), "t");
            assert_eq!(got[1].body_str(), "to all");
            c.ack(&got[0]).await;
            c.expect_silence(Duration::from_millis(100)).await;
            c.disconnect().await;
            i
        });
    }
    tokio::time::timeout(Duration::from_secs(60), ready.wait())
        .await
        .expect("200 clients connected and subscribed");
    let mut p = broker.client(Version::V12).await;
    p.send(&topic, "to all").await;
    for i in 0..N {
        p.send(&format!("/queue/{prefix}-{i}"), &format!("for {i}"))
            .await;
    }
    p.sync().await;
    let mut done = 0;
    let all = async {
        while let Some(r) = tasks.join_next().await {
            r.expect("client task");
            done += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every client got its messages");
    assert_eq!(done, N);
    assert_healthy(&broker).await;
}

const PRODUCERS: usize = 4;
const CONSUMERS: usize = 4;
const TOTAL: usize = 100_000;
const PER_PRODUCER: usize = TOTAL / PRODUCERS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_100k_messages_4_producers_4_consumers() {
    let broker = Broker::start();
    let dest = format!("/queue/{}", unique("load"));
    let received = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(300);

    // Consumers first (client-individual, batched ACKs).
    let mut consumers = JoinSet::new();
    for k in 0..CONSUMERS {
        let mut c = broker.client(Version::V12).await;
        c.subscribe_with(
            &format!("c{k}"),
            &dest,
            "client-individual",
            &[("prefetch-count", "500")],
        )
        .await;
        let received = received.clone();
        consumers.spawn(async move {
            let mut seen: Vec<(u8, u32)> = Vec::with_capacity(TOTAL / CONSUMERS * 2);
            let mut acks = Vec::with_capacity(64 * 1024);
            let mut last = Instant::now();
            while received.load(Ordering::Relaxed) < TOTAL {
                assert!(
                    Instant::now() < deadline,
                    "consumer {k}: load test took more than 300 s"
                );
                match c.try_recv(Duration::from_millis(200)).await {
                    Ok(m) => {
                        assert!(m.is("MESSAGE"), "consumer {k}: {m:?}");
                        let p: u8 = m.must("producer").parse().unwrap();
                        let s: u32 = m.must("seq").parse().unwrap();
                        assert_eq!(m.body.len(), 128);
                        seen.push((p, s));
                        last = Instant::now();
                        received.fetch_add(1, Ordering::Relaxed);
                        acks.extend_from_slice(b"ACK\nid:");
                        acks.extend_from_slice(m.must("ack").as_bytes());
                        acks.extend_from_slice(b"\n\n\0");
                        if acks.len() > 32 * 1024 || !c.has_buffered_frame() {
                            c.write_raw(&acks).await;
                            acks.clear();
                        }
                    }
                    Err(RecvError::Timeout) => {
                        if !acks.is_empty() {
                            c.write_raw(&acks).await;
                            acks.clear();
                        }
                    }
                    Err(e) => panic!("consumer {k}: {e:?}"),
                }
            }
            if !acks.is_empty() {
                c.write_raw(&acks).await;
            }
            // Anything arriving now is a duplicate.
            loop {
                match c.try_recv(QUIET).await {
                    Ok(m) => {
                        let p: u8 = m.must("producer").parse().unwrap();
                        let s: u32 = m.must("seq").parse().unwrap();
                        seen.push((p, s));
                    }
                    Err(RecvError::Timeout) => break,
                    Err(e) => panic!("consumer {k}: {e:?}"),
                }
            }
            c.sync().await;
            (seen, last)
        });
    }

    let start = Instant::now();
    let mut producers = JoinSet::new();
    for p in 0..PRODUCERS {
        let addr = broker.addr;
        let dest = dest.clone();
        producers.spawn(async move {
            let mut c = Client::connect(addr, Version::V12).await;
            let body = [b'x'; 128];
            let mut batch = Vec::with_capacity(64 * 1024);
            for s in 0..PER_PRODUCER {
                let f = Frame::new("SEND")
                    .h("destination", &dest)
                    .h("producer", &p.to_string())
                    .h("seq", &s.to_string())
                    .h("content-type", "application/octet-stream")
                    .body_cl(body.to_vec());
                batch.extend_from_slice(&f.encode(Version::V12));
                if batch.len() > 32 * 1024 || s == PER_PRODUCER - 1 {
                    c.write_raw(&batch).await;
                    batch.clear();
                }
            }
            c.sync().await;
            c.disconnect().await;
        });
    }
    let producers_done = async {
        while let Some(r) = producers.join_next().await {
            r.expect("producer");
        }
    };
    tokio::time::timeout(Duration::from_secs(300), producers_done)
        .await
        .expect("producers finished");
    let send_elapsed = start.elapsed();

    let mut counts = vec![vec![0u8; PER_PRODUCER]; PRODUCERS];
    let mut per_consumer = Vec::new();
    let mut last_rx = start;
    let consumers_done = async {
        while let Some(r) = consumers.join_next().await {
            let (seen, last) = r.expect("consumer");
            per_consumer.push(seen.len());
            last_rx = last_rx.max(last);
            for (p, s) in seen {
                let slot = &mut counts[p as usize][s as usize];
                *slot = slot.saturating_add(1);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), consumers_done)
        .await
        .expect("consumers finished");
    let elapsed = last_rx.duration_since(start);

    let lost: Vec<(usize, usize)> = counts
        .iter()
        .enumerate()
        .flat_map(|(p, c)| {
            c.iter()
                .enumerate()
                .filter(|(_, n)| **n == 0)
                .map(move |(s, _)| (p, s))
        })
        .collect();
    let dup: Vec<(usize, usize)> = counts
        .iter()
        .enumerate()
        .flat_map(|(p, c)| {
            c.iter()
                .enumerate()
                .filter(|(_, n)| **n > 1)
                .map(move |(s, _)| (p, s))
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        dup.is_empty(),
        "{} messages duplicated, e.g. {:?}",
        dup.len(),
        &dup[..dup.len().min(10)]
    );
    let rate = TOTAL as f64 / elapsed.as_secs_f64();
    eprintln!(
        "load: {TOTAL} messages (128 B, {PRODUCERS} producers, {CONSUMERS} client-individual consumers, one queue) \
         in {elapsed:.2?} = {rate:.0} msg/s; producers done after {send_elapsed:.2?}; per consumer {per_consumer:?}"
    );
    // Every consumer took part.
    assert!(per_consumer.iter().all(|n| *n > 0), "{per_consumer:?}");
    assert_healthy(&broker).await;
}

/// A consumer holding many unacked messages dies abruptly in the middle of a stream: every
/// message is delivered (at least once), the ones it ACKed never again, the ones it held come
/// back marked redelivered, and the survivors see no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_crash_under_load_loses_nothing() {
    const N: usize = 10_000;
    let broker = Broker::start();
    let dest = format!("/queue/{}", unique("crash"));
    let mut victim = broker.client(Version::V12).await;
    victim
        .subscribe_with(
            "v",
            &dest,
            "client-individual",
            &[("prefetch-count", "1000")],
        )
        .await;
    let mut survivors = JoinSet::new();
    let received = Arc::new(AtomicUsize::new(0));
    for k in 0..2 {
        let mut c = broker.client(Version::V12).await;
        c.subscribe_with(
            &format!("s{k}"),
            &dest,
            "client-individual",
            &[("prefetch-count", "100")],
        )
        .await;
        let received = received.clone();
        survivors.spawn(async move {
            let mut seen: Vec<(usize, bool)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                match c.try_recv(Duration::from_millis(300)).await {
                    Ok(m) => {
                        assert!(m.is("MESSAGE"), "{m:?}");
                        let seq: usize = m.must("seq").parse().unwrap();
                        seen.push((seq, m.get("redelivered") == Some("true")));
                        received.fetch_add(1, Ordering::Relaxed);
                        let ack = c.ack_frame("ACK", &m);
                        c.write(&ack).await;
                    }
                    Err(RecvError::Timeout) => {
                        if received.load(Ordering::Relaxed) >= N || Instant::now() > deadline {
                            break;
                        }
                    }
                    Err(e) => panic!("survivor {k}: {e:?}"),
                }
            }
            c.sync().await;
            seen
        });
    }
    let producer = {
        let addr = broker.addr;
        let dest = dest.clone();
        tokio::spawn(async move {
            let mut p = Client::connect(addr, Version::V12).await;
            let mut batch = Vec::new();
            for seq in 0..N {
                let f = Frame::new("SEND")
                    .h("destination", &dest)
                    .h("seq", &seq.to_string())
                    .body("x");
                batch.extend_from_slice(&f.encode(Version::V12));
                if seq % 100 == 99 {
                    p.write_raw(&batch).await;
                    batch.clear();
                }
            }
            p.write_raw(&batch).await;
            p.sync().await;
        })
    };
    // The victim acks every other message it gets, then dies holding the rest.
    let mut acked = std::collections::HashSet::new();
    let mut held = std::collections::HashSet::new();
    for _ in 0..600 {
        let m = victim.msg().await;
        let seq: usize = m.must("seq").parse().unwrap();
        if seq.is_multiple_of(2) {
            let ack = victim.ack_frame("ACK", &m);
            victim.write(&ack).await;
            acked.insert(seq);
        } else {
            held.insert(seq);
        }
    }
    victim.sync().await; // every ACK above is processed
    victim.drop_abruptly();
    received.fetch_add(acked.len(), Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(120), producer)
        .await
        .expect("producer")
        .unwrap();
    let mut counts = vec![0u32; N];
    for &s in &acked {
        counts[s] += 1;
    }
    while let Some(r) = survivors.join_next().await {
        for (seq, redelivered) in r.expect("survivor") {
            assert!(
                !acked.contains(&seq),
                "seq {seq} was ACKed by the victim and delivered again"
            );
            if held.contains(&seq) {
                assert!(
                    redelivered,
                    "seq {seq} was held by the victim: must be marked redelivered"
                );
            }
            counts[seq] += 1;
        }
    }
    let lost: Vec<usize> = (0..N).filter(|s| counts[*s] == 0).collect();
    let dup: Vec<usize> = (0..N).filter(|s| counts[*s] > 1).collect();
    assert!(
        lost.is_empty(),
        "{} lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        dup.is_empty(),
        "{} duplicated, e.g. {:?}",
        dup.len(),
        &dup[..dup.len().min(10)]
    );
}
