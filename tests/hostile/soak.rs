//! A bounded soak: honest producers and consumers exchange messages while hostile clients
//! attack the same broker the ways the rest of this suite tries one at a time. The honest
//! ones must lose nothing and see nothing twice, the broker must stay up and within its
//! memory budget, and every attack must end in an ERROR or a close, never a hang.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::*;

/// How long the attacks go on.
const SOAK: Duration = Duration::from_secs(15);
const MIB: u64 = 1024 * 1024;
const BUDGET: u64 = 64 * MIB;

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// A client logged in as `login` (its password is its name).
async fn as_user(addr: std::net::SocketAddr, login: &str) -> Client {
    let connect = Client::connect_frame(Version::V12)
        .h("login", login)
        .h("passcode", login);
    let (client, reply) = Client::connect_with(addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    client
}

/// One kind of attack, run in a loop until `stop`; returns how many rounds it made. The
/// attacker logs in as `mallory` when it logs in at all.
async fn attack(addr: std::net::SocketAddr, kind: usize, stop: Arc<AtomicBool>) -> u64 {
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        rounds += 1;
        match kind {
            // The frame that aborted the broker, and its panicking cousins.
            0 => {
                let mut c = as_user(addr, "mallory").await;
                let length = ["4611686018427387904", "18446744073709551615"][rounds as usize % 2];
                c.write_raw_lossy(format!("ACK\nid:0.0\ncontent-length:{length}\n\n").as_bytes())
                    .await;
                let _ = c.try_recv(T).await;
            }
            // Garbage before and after CONNECT.
            1 => {
                let mut c = Client::open(addr).await;
                c.write_raw_lossy(&[0xff, b'\n', 0, b':', 0x80, b'X'].repeat(100))
                    .await;
                let _ = c.try_recv(T).await;
            }
            // Slowloris: half a CONNECT, then silence (the connect timeout ends it).
            2 => {
                if let Ok(mut stream) = TcpStream::connect(addr).await {
                    let _ = stream.write_all(b"CONNECT\naccept-version:1.2\nlog").await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            // Temp queue and destination floods through reply-to and SUBSCRIBE churn.
            3 => {
                let mut c = as_user(addr, "mallory").await;
                for n in 0..300 {
                    let frame = send_frame(
                        &format!("/queue/flood.{}", unique("q")),
                        &[("reply-to", &format!("/temp-queue/t{n}"))],
                        "x",
                    );
                    c.write_raw_lossy(&frame.encode(Version::V12)).await;
                }
                let _ = c.try_recv(Duration::from_millis(200)).await;
            }
            // Big messages to nobody (paused by the budget) on a connection then dropped.
            4 => {
                let mut c = as_user(addr, "mallory").await;
                let body = "b".repeat(4 * MIB as usize);
                for _ in 0..4 {
                    let frame = send_frame(&format!("/queue/{}", unique("nobody")), &[], &body);
                    c.write_raw_lossy(&frame.encode(Version::V12)).await;
                }
                c.drop_abruptly();
            }
            // SUBSCRIBEs with junk headers, a consumer that never acks.
            _ => {
                let mut c = as_user(addr, "mallory").await;
                let junk = "j".repeat(12_000);
                let frame = Frame::new("SUBSCRIBE")
                    .h("id", "hoard")
                    .h("destination", "/queue/soak.honest")
                    .h("ack", "client")
                    .h("x-junk", &junk)
                    .h("prefetch-count", "50");
                c.write_raw_lossy(&frame.encode(Version::V12)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                c.drop_abruptly();
            }
        }
    }
    rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_clients_lose_nothing_while_hostile_ones_attack() {
    // Honest and hostile clients are different principals: the attacker's messages to nobody
    // fill its own share of the budget (half of it), not the honest producers'.
    let mut broker = Broker::with_config(&format!(
        "[limits]\nmax_memory_bytes = {BUDGET}\nconnect_timeout_ms = 1000\n\n\
         [[users]]\nlogin = \"honest\"\npasscode = \"honest\"\n\n\
         [[users]]\nlogin = \"mallory\"\npasscode = \"mallory\"\n"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..6)
        .map(|kind| tokio::spawn(attack(broker.addr, kind, stop.clone())))
        .collect();

    // Honest traffic on one queue: producers with receipts, consumers with acks.
    let queue = "/queue/soak.honest";
    let sent = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (stop, sent, addr) = (stop.clone(), sent.clone(), broker.addr);
            tokio::spawn(async move {
                let mut c = as_user(addr, "honest").await;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    c.send_r(queue, &format!("{p}-{n}")).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                c.disconnect().await;
                n
            })
        })
        .collect();
    let mut consumer = as_user(broker.addr, "honest").await;
    consumer
        .subscribe_with(
            "honest",
            queue,
            "client-individual",
            &[("prefetch-count", "100")],
        )
        .await;
    let mut received = BTreeSet::new();
    let mut peak = 0;
    let started = Instant::now();
    let mut producers = Some(producers);
    let mut expected: Option<u64> = None;
    loop {
        // The consumer keeps reading throughout (a producer paused by the budget needs it).
        if let Ok(m) = consumer.try_recv(Duration::from_millis(200)).await {
            assert!(m.is("MESSAGE"), "{m:?}");
            let body = m.body_str().to_string();
            consumer.ack(&m).await;
            assert!(received.insert(body.clone()), "duplicate {body}");
        }
        peak = peak.max(rss(broker.pid()));
        if started.elapsed() >= SOAK {
            stop.store(true, Ordering::Relaxed);
        }
        if expected.is_none()
            && producers
                .as_ref()
                .is_some_and(|p| stop.load(Ordering::Relaxed) && p.iter().all(|t| t.is_finished()))
        {
            let mut total = 0;
            for producer in producers.take().unwrap() {
                total += producer.await.unwrap();
            }
            assert_eq!(total, sent.load(Ordering::Relaxed));
            expected = Some(total);
        }
        if expected == Some(received.len() as u64) {
            break;
        }
        assert!(
            started.elapsed() < SOAK + Duration::from_secs(60),
            "{} of {expected:?} received",
            received.len()
        );
    }
    let mut rounds = Vec::new();
    for attacker in attackers {
        rounds.push(attacker.await.unwrap());
    }
    assert!(
        rounds.iter().all(|&r| r > 0),
        "every attack ran: {rounds:?}"
    );
    assert!(
        received.len() > 100,
        "only {} honest messages",
        received.len()
    );
    assert!(broker.is_running());
    // The budget, plus the broker's own footprint, the allocator's cache and read buffers.
    assert!(
        peak < BUDGET + 128 * MIB,
        "RSS peaked at {} MiB",
        peak / MIB
    );
    let mut check = as_user(broker.addr, "honest").await;
    check.send_r("/queue/soak.after", "fine").await;
    eprintln!(
        "soak: {} honest messages, attack rounds {rounds:?}, peak RSS {} MiB",
        received.len(),
        peak / MIB
    );
}
