//! Cluster mode under load (docs/cluster.md, "Tests"): 3 Plugboard edges on a 3-node NATS
//! JetStream cluster (`replicas = 3`) carrying 100,000 queue messages to competing consumers on
//! every edge, none lost or duplicated; and an edge killed with SIGKILL under load and started
//! again on the same configuration, every receipted message still delivered.
//!
//! The 100k test is the longest cluster test (about two minutes in a debug build on the
//! 2-core development machine); `PLUGBOARD_CLUSTER_LOAD_MESSAGES=N` runs it with N messages
//! instead (a quick local try). Both are bounded: they fail, never hang, past their deadline.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugboard_test_support::broker::{Broker as Edge, Launch};
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};
use tokio::task::JoinHandle;

use super::cluster::{cluster_name, edge_on, plugboard, target_dir};
use crate::harness::*;

/// The messages of the load test, unless `PLUGBOARD_CLUSTER_LOAD_MESSAGES` says otherwise.
const LOAD_MESSAGES: usize = 100_000;
/// Producer connections per edge in the load test.
const PRODUCERS_PER_EDGE: usize = 2;
/// Consumer connections per edge.
const CONSUMERS_PER_EDGE: usize = 2;
/// The longest the load test may take once the edges run.
const LOAD_DEADLINE: Duration = Duration::from_secs(600);

/// How often each body was received (by every consumer together), how many in all, and how
/// many came marked `redelivered`.
#[derive(Default)]
pub(super) struct Tally {
    seen: Mutex<HashMap<String, u32>>,
    pub(super) total: AtomicUsize,
    pub(super) redelivered: AtomicUsize,
}

impl Tally {
    fn record(&self, message: &Frame) {
        let mut seen = self.seen.lock().expect("tally");
        *seen.entry(message.body_str().to_string()).or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        if message.get("redelivered") == Some("true") {
            self.redelivered.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn distinct(&self) -> usize {
        self.seen.lock().expect("tally").len()
    }

    /// Asserts that none was received twice and `expected` were received in all.
    pub(super) fn assert_each_once(&self, expected: usize, context: &str) {
        let duplicates = self.duplicates();
        assert!(
            duplicates.is_empty(),
            "delivered twice: {duplicates:?}; {context}"
        );
        assert_eq!(
            self.total.load(Ordering::SeqCst),
            expected,
            "every message once (received {} distinct); {context}",
            self.distinct()
        );
    }

    fn duplicates(&self) -> Vec<(String, u32)> {
        let seen = self.seen.lock().expect("tally");
        let mut twice: Vec<(String, u32)> = seen
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(body, &n)| (body.clone(), n))
            .collect();
        twice.sort();
        twice.truncate(10);
        twice
    }

    fn bodies(&self) -> HashSet<String> {
        self.seen.lock().expect("tally").keys().cloned().collect()
    }
}

/// A consumer on the edge at `addr`: `client-individual` with a prefetch of `prefetch`, each
/// MESSAGE recorded in `tally` and acked, until `done()` holds (and one quiet second more, in
/// which a duplicate would show), the connection closes (its edge died) or `deadline`. Returns
/// how many it received.
pub(super) fn consumer(
    addr: SocketAddr,
    dest: &'static str,
    prefetch: u32,
    tally: Arc<Tally>,
    done: impl Fn(&Tally) -> bool + Send + 'static,
    deadline: Instant,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut c = Client::connect(addr, Version::V12).await;
        let prefetch = prefetch.to_string();
        c.subscribe_with(
            "w",
            dest,
            "client-individual",
            &[("activemq.prefetchSize", &prefetch)],
        )
        .await;
        let mut got = 0;
        let mut quiet_since: Option<Instant> = None;
        while Instant::now() < deadline {
            if done(&tally) {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
            match c.try_recv(Duration::from_millis(200)).await {
                Ok(m) => {
                    assert!(m.is("MESSAGE"), "{m:?}");
                    tally.record(&m);
                    got += 1;
                    let ack = c.ack_frame("ACK", &m);
                    // The edge may die between the MESSAGE and this ACK (the restart test).
                    let bytes = ack.encode(Version::V12);
                    c.write_raw_lossy(&bytes).await;
                }
                Err(RecvError::Timeout) => {}
                Err(RecvError::Closed) => break,
                Err(e) => panic!("consumer: {e:?}"),
            }
        }
        got
    })
}

/// `count` SENDs on the edge at `addr`, bodies `{tag}-{i}`, written in batches without
/// receipts and a last one with a receipt: once it comes back, every earlier one is stored.
/// With `priorities`, SEND `i` has the `priority` `priorities[i % len]`.
pub(super) fn batch_producer(
    addr: SocketAddr,
    dest: &'static str,
    tag: String,
    count: usize,
    priorities: &'static [&'static str],
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut p = Client::connect(addr, Version::V12).await;
        let mut batch = Vec::new();
        for i in 0..count {
            let priority = priorities
                .get(i % priorities.len().max(1))
                .map(|priority| ("priority", *priority));
            let headers: Vec<(&str, &str)> = priority.into_iter().collect();
            batch.push(send_frame(dest, &headers, &format!("{tag}-{i}")));
            if batch.len() == 100 {
                p.write_all(&batch).await;
                batch.clear();
            }
        }
        p.write_all(&batch).await;
        // The receipt comes once every SEND before it is stored: allow for the whole load.
        let last = send_frame(dest, &[], &format!("{tag}-end")).h("receipt", "last");
        p.write(&last).await;
        let receipt = p
            .try_recv(LOAD_DEADLINE)
            .await
            .expect("the last SEND's RECEIPT");
        assert!(receipt.is("RECEIPT"), "{receipt:?}");
    })
}

#[tokio::test]
async fn cluster_three_edges_on_three_nats_nodes_carry_100k_messages_none_lost_or_duplicated() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_three_edges_100k") else {
        return;
    };
    let messages: usize = std::env::var("PLUGBOARD_CLUSTER_LOAD_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(LOAD_MESSAGES);
    let nats = NatsCluster::start(&bin, 3);
    let name = cluster_name();
    // Each edge knows one node only: publishes, pulls and acks cross the NATS cluster.
    let edges: Vec<Edge> = (0..3)
        .map(|i| edge_on(&[nats.nodes[i].url()], &name, "replicas = 3"))
        .collect();
    let dest = "/queue/load";
    let started = Instant::now();
    let deadline = started + LOAD_DEADLINE;
    let per_producer = messages / (3 * PRODUCERS_PER_EDGE);
    let expected = 3 * PRODUCERS_PER_EDGE * (per_producer + 1);

    let tally = Arc::new(Tally::default());
    let mut consumers = Vec::new();
    for edge in &edges {
        for _ in 0..CONSUMERS_PER_EDGE {
            let done = move |t: &Tally| t.total.load(Ordering::SeqCst) >= expected;
            consumers.push(consumer(
                edge.addr,
                dest,
                200,
                tally.clone(),
                done,
                deadline,
            ));
        }
    }
    let mut producers = Vec::new();
    for (e, edge) in edges.iter().enumerate() {
        for p in 0..PRODUCERS_PER_EDGE {
            producers.push(batch_producer(
                edge.addr,
                dest,
                format!("e{e}p{p}"),
                per_producer,
                &[],
            ));
        }
    }
    for p in producers {
        tokio::time::timeout_at(deadline.into(), p)
            .await
            .expect("producers done in time")
            .expect("producer");
    }
    let sent_in = started.elapsed();
    let mut shares = Vec::new();
    for c in consumers {
        let got = tokio::time::timeout_at((deadline + Duration::from_secs(5)).into(), c)
            .await
            .expect("consumers done in time")
            .expect("consumer");
        shares.push(got);
    }
    let took = started.elapsed();
    eprintln!(
        "3 edges, 3 NATS nodes (replicas 3): {expected} messages stored in {sent_in:?}, all received in {took:?}; per consumer {shares:?}"
    );
    tally.assert_each_once(expected, &format!("per consumer {shares:?}"));
    let want: HashSet<String> = (0..3)
        .flat_map(|e| {
            (0..PRODUCERS_PER_EDGE).flat_map(move |p| {
                (0..per_producer)
                    .map(move |i| format!("e{e}p{p}-{i}"))
                    .chain([format!("e{e}p{p}-end")])
            })
        })
        .collect();
    assert_eq!(tally.bodies(), want, "exactly the messages sent");
    for e in 0..3 {
        let on_edge: usize = shares[e * CONSUMERS_PER_EDGE..(e + 1) * CONSUMERS_PER_EDGE]
            .iter()
            .sum();
        assert!(
            on_edge > 0,
            "the consumers of edge {e} got a share: {shares:?}"
        );
    }
}

/// An edge that can be killed and started again on the same configuration file and data
/// directory (its STOMP port is chosen anew at each start).
struct RestartableEdge {
    config: PathBuf,
    data: PathBuf,
    edge: Edge,
    _dir: tempfile::TempDir,
}

impl RestartableEdge {
    fn start(nats: &NatsCluster, name: &str, extra: &str) -> RestartableEdge {
        let dir = tempfile::tempdir().expect("tempdir");
        let urls: Vec<String> = nats
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        let config = dir.path().join("edge.toml");
        let toml = format!(
            "[cluster]\nnats = [{}]\nname = \"{name}\"\n{extra}\n",
            urls.join(", ")
        );
        std::fs::write(&config, toml).expect("write config");
        let data = dir.path().join("data");
        let edge = Self::launch(&config, &data);
        RestartableEdge {
            config,
            data,
            edge,
            _dir: dir,
        }
    }

    fn launch(config: &std::path::Path, data: &std::path::Path) -> Edge {
        Launch::config_file(plugboard(), config)
            .args(&[std::ffi::OsStr::new("--data-dir"), data.as_os_str()])
            .start_within(Duration::from_secs(60))
            .start()
    }

    fn kill_and_start_again(&mut self) {
        self.edge.kill_hard();
        self.edge = Self::launch(&self.config, &self.data);
    }
}

/// SENDs with a receipt each, bodies `{tag}-{i}`, one at a time for `run_for` (or until the
/// edge closes the connection); returns the bodies whose RECEIPT came back.
fn receipted_producer(
    addr: SocketAddr,
    dest: &'static str,
    tag: String,
    run_for: Duration,
) -> JoinHandle<HashSet<String>> {
    tokio::spawn(async move {
        let mut receipted = HashSet::new();
        let mut p = Client::connect(addr, Version::V12).await;
        let until = Instant::now() + run_for;
        let mut i = 0;
        while Instant::now() < until {
            let body = format!("{tag}-{i}");
            i += 1;
            let frame = send_frame(dest, &[], &body).h("receipt", &body);
            p.write_raw_lossy(&frame.encode(Version::V12)).await;
            match p.try_recv(Duration::from_secs(10)).await {
                Ok(f) if f.is("RECEIPT") => {
                    assert_eq!(f.get("receipt-id"), Some(body.as_str()), "{f:?}");
                    receipted.insert(body);
                }
                // The edge died (or failed the SEND): this one may or may not be stored.
                Ok(f) => {
                    assert!(f.is("ERROR"), "{f:?}");
                    break;
                }
                Err(_) => break,
            }
        }
        receipted
    })
}

#[tokio::test]
async fn cluster_edge_killed_and_restarted_under_load_loses_no_receipted_message() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_edge_restart_under_load") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 3);
    let name = cluster_name();
    // A killed edge's unacked messages come back after 2 s.
    let settings = "replicas = 3\nack_wait_ms = 2000";
    let mut a = RestartableEdge::start(&nats, &name, settings);
    let b = edge_on(&[nats.nodes[1].url()], &name, settings);
    let dest = "/queue/restart";
    let deadline = Instant::now() + Duration::from_secs(180);
    let tally = Arc::new(Tally::default());
    // Stopped by the test (`stop`) once every receipted message was received.
    let stop = Arc::new(AtomicUsize::new(0));
    let done = {
        let stop = stop.clone();
        move |_: &Tally| stop.load(Ordering::SeqCst) == 1
    };

    let load = Duration::from_secs(4);
    let on_b = consumer(b.addr, dest, 50, tally.clone(), done.clone(), deadline);
    let on_a = consumer(a.edge.addr, dest, 50, tally.clone(), done.clone(), deadline);
    let from_a = receipted_producer(a.edge.addr, dest, "a1".into(), load * 2);
    let from_b = receipted_producer(b.addr, dest, "b".into(), load * 2 + load);
    tokio::time::sleep(load).await;

    // SIGKILL in the middle of the load: A's producer and consumer lose their connections.
    a.kill_and_start_again();
    let from_a_again = receipted_producer(a.edge.addr, dest, "a2".into(), load);
    let on_a_again = consumer(a.edge.addr, dest, 50, tally.clone(), done, deadline);

    let mut receipted = HashSet::new();
    for p in [from_a, from_b, from_a_again] {
        receipted.extend(p.await.expect("producer"));
    }
    assert!(
        receipted.iter().any(|b| b.starts_with("a1-"))
            && receipted.iter().any(|b| b.starts_with("a2-")),
        "A took SENDs before and after its restart"
    );
    // Every receipted message arrives (A's unacked ones after ack_wait), bounded.
    loop {
        let missing = receipted.difference(&tally.bodies()).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} receipted messages never arrived",
            receipted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(1, Ordering::SeqCst);
    let mut counts = Vec::new();
    for c in [on_a, on_b, on_a_again] {
        counts.push(c.await.expect("consumer"));
    }
    // At least once: a message delivered on A just before the kill may come again.
    eprintln!(
        "edge restart: {} receipted, {} deliveries of {} distinct bodies (per consumer {counts:?})",
        receipted.len(),
        tally.total.load(Ordering::SeqCst),
        tally.distinct()
    );
    assert!(
        counts[1] > 0 && counts[2] > 0,
        "B and the restarted A consumed: {counts:?}"
    );
}
