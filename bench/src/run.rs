//! One benchmark run: connect and subscribe the consumers, start the producers, wait for every
//! delivery (or a stall / the overall deadline), then collect the results.
//!
//! Producers pace themselves by receipts: every `RECEIPT_EVERY`-th message (and the last one)
//! asks for a receipt, and a producer never has more than `window` messages unconfirmed. A
//! receipt confirms every earlier frame of its connection, since a STOMP broker handles a
//! connection's frames in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::codec::Frame;
use crate::conn::{self, Conn, Endpoint};
use crate::progress::{Progress, Snapshot};
use crate::report::Report;
use crate::stats;
use crate::tracker::{ConsumerView, Tracker};

/// At most this many messages between two receipt requests (fewer if the window is smaller).
const RECEIPT_EVERY: u64 = 100;
/// After the producers finish, give up when no new message arrived for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last expected delivery, keep listening this long to catch duplicates.
const SETTLE: Duration = Duration::from_millis(200);

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: &'static str,
    pub endpoint: Endpoint,
    /// Where the consumers connect (normally `endpoint`).
    pub consume_endpoint: Endpoint,
    /// Where the producers send.
    pub destination: String,
    /// Where the consumers subscribe (normally `destination`).
    pub consume_from: String,
    pub producers: usize,
    pub consumers: usize,
    /// Topic: every consumer must see every message; queue: the consumers share them.
    pub fan_out: bool,
    pub messages: u64,
    pub size: usize,
    pub ack: String,
    pub window: u64,
    /// Subscription window, sent as `prefetch-count` and `activemq.prefetchSize` (0: neither).
    pub prefetch: u64,
    /// Extra headers on every SEND.
    pub send_headers: Vec<(String, String)>,
    /// Extra headers on every SUBSCRIBE.
    pub subscribe_headers: Vec<(String, String)>,
    /// Non-matching wildcard subscriptions held open during the run.
    pub idle_patterns: usize,
    /// Message groups per producer (`JMSXGroupID` `pP-gN`, N the sequence modulo this; 0:
    /// none).
    pub groups: u64,
    /// Whether each SEND carries `priority` its sequence modulo 10.
    pub priorities: bool,
    /// Fixed sending rate (messages/s) of the latency scenario; `None`: as fast as the window
    /// allows.
    pub rate: Option<u64>,
    pub broker_pid: Option<u32>,
    /// After the connections closed, wait this long before the "settled" VmRSS reading.
    pub rss_settle: Duration,
    pub timeout: Duration,
    /// `--json`: only the JSON line on stdout, no live progress on stderr.
    pub json_only: bool,
}

/// Runs the plan; never fails as such: problems end up in the report's errors.
pub async fn run(plan: Plan) -> Report {
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let run_id = format!(
        "{:x}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let groups = if plan.fan_out { plan.consumers } else { 1 };
    let tracker = Arc::new(Tracker::new(
        run_id,
        plan.producers,
        plan.messages,
        groups,
        plan.size,
    ));
    let mut report = Report::new(&plan);
    if let Some(pid) = plan.broker_pid {
        report.broker_rss_before_kib = stats::memory_kib(pid).ok().map(|m| m.1);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // Live consumers per group: a group without any can never complete.
    let live: Arc<Vec<AtomicUsize>> = Arc::new((0..groups).map(|_| AtomicUsize::new(0)).collect());

    // Consumers first: all subscribed (receipt seen) before any producer connects.
    let setup = async {
        let patterns =
            crate::patterns::hold(&plan.endpoint, &plan.destination, plan.idle_patterns).await?;
        let mut consumers = Vec::new();
        for c in 0..plan.consumers {
            let mut conn = Conn::connect(&plan.consume_endpoint).await?;
            let early = conn::subscribe(
                &mut conn,
                &plan.consume_from,
                &plan.ack,
                plan.prefetch,
                &plan.subscribe_headers,
            )
            .await?;
            let group = if plan.fan_out { c } else { 0 };
            let view = tracker.view(group);
            let (tracker, stop, live) = (tracker.clone(), stop_rx.clone(), live.clone());
            live[group].fetch_add(1, Ordering::SeqCst);
            let client_ack = plan.ack != "auto";
            consumers.push(tokio::spawn(async move {
                let result = consume(conn, view, client_ack, early, &tracker, stop).await;
                if let Err(e) = result {
                    tracker.error(format!("consumer {c}: {e:#}"));
                }
                live[group].fetch_sub(1, Ordering::SeqCst);
            }));
        }
        let mut producers = Vec::new();
        for _ in 0..plan.producers {
            producers.push(Conn::connect(&plan.endpoint).await?);
        }
        anyhow::Ok((consumers, producers, patterns))
    };
    let (consumers, producer_conns, patterns) = match tokio::time::timeout_at(deadline, setup).await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            report.errors.push(format!("setup: {e:#}"));
            return report;
        }
        Err(_) => {
            report.errors.push("setup: overall timeout".into());
            report.timed_out = true;
            return report;
        }
    };

    let ticks = stats::clock_ticks();
    let cpu_before = plan.broker_pid.and_then(|pid| stats::cpu_ticks(pid).ok());
    let start = Instant::now();
    let _ = tracker.start.set(start);
    let finished = Arc::new(AtomicUsize::new(0));
    let producers: Vec<JoinHandle<()>> = producer_conns
        .into_iter()
        .enumerate()
        .map(|(p, conn)| {
            let (tracker, finished, plan) = (tracker.clone(), finished.clone(), plan.clone());
            tokio::spawn(async move {
                if let Err(e) = produce(conn, p, &plan, &tracker).await {
                    tracker.error(format!("producer {p}: {e:#}"));
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();

    // Wait for completion, a stall after the producers are done, or the deadline.
    let expected = tracker.expected();
    let mut last_unique = 0;
    let mut last_progress = Instant::now();
    let mut producers_done_at: Option<Instant> = None;
    // On a terminal: the counters above, on one line, 4 times a second (see progress.rs).
    let mut progress = Progress::on_stderr(plan.scenario, plan.json_only);
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Some(progress) = progress.as_mut() {
            let now = Instant::now();
            progress.tick(now, || Snapshot::read(&tracker, now - start));
        }
        let unique = tracker.unique.load(Ordering::Relaxed);
        if unique >= expected {
            break;
        }
        if unique != last_unique {
            last_unique = unique;
            last_progress = Instant::now();
        }
        let settled = |g: usize| tracker.group_complete(g) || live[g].load(Ordering::SeqCst) == 0;
        if (0..groups).all(settled) {
            break; // some group lost all its consumers: their errors tell why
        }
        if producers_done_at.is_none() && finished.load(Ordering::SeqCst) == plan.producers {
            producers_done_at = Some(Instant::now());
        }
        if let Some(done) = producers_done_at {
            if last_progress.max(done).elapsed() >= STALL_TIMEOUT {
                report.stalled = true;
                break;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            report.timed_out = true;
            break;
        }
    }
    let wall = start.elapsed();
    if let Some(progress) = progress.as_mut() {
        progress.finish();
    }
    let cpu_after = plan.broker_pid.and_then(|pid| stats::cpu_ticks(pid).ok());
    if let Some(pid) = plan.broker_pid {
        match stats::memory_kib(pid) {
            Ok((hwm, rss)) => report.broker_mem_kib = Some((hwm, rss)),
            Err(e) => report.errors.push(format!("reading broker memory: {e:#}")),
        }
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report.broker_cpu_s = Some(after.saturating_sub(before) as f64 / ticks as f64);
    } else if plan.broker_pid.is_some() {
        report.errors.push("could not read broker CPU time".into());
    }

    tokio::time::sleep(SETTLE).await;
    let _ = stop_tx.send(true);
    // Held open until the measured part is over.
    drop(patterns);
    for handle in producers.into_iter().chain(consumers) {
        let abort = handle.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), handle)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    if let Some(pid) = plan.broker_pid {
        tokio::time::sleep(plan.rss_settle).await;
        report.broker_rss_settled_kib = stats::memory_kib(pid).ok().map(|m| m.1);
    }

    let last_new = Duration::from_nanos(tracker.last_new_nanos.load(Ordering::Relaxed));
    report.elapsed = if last_new.is_zero() { wall } else { last_new };
    report.fill_from(&tracker);
    report
}

/// Sends this producer's share, then disconnects; on failure, looks for the broker's ERROR.
async fn produce(mut conn: Conn, p: usize, plan: &Plan, tracker: &Tracker) -> anyhow::Result<()> {
    let sent = match plan.rate {
        Some(rate) => send_paced(&mut conn, p, plan, tracker, rate).await,
        None => send_all(&mut conn, p, plan, tracker).await,
    };
    match sent {
        Ok(()) => {
            conn.disconnect().await;
            Ok(())
        }
        Err(e) if e.to_string().starts_with("expected RECEIPT") => Err(e),
        Err(e) => match conn.find_error().await {
            Some(error) => Err(e.context(format!("broker sent {error}"))),
            None => Err(e),
        },
    }
}

/// The sending loop; see the module comment for the pacing.
async fn send_all(conn: &mut Conn, p: usize, plan: &Plan, tracker: &Tracker) -> anyhow::Result<()> {
    let count = tracker.per_producer[p];
    let window = plan.window.max(1);
    let every = RECEIPT_EVERY.min(window);
    let body: Vec<u8> = (0..plan.size).map(|i| b'a' + (i % 26) as u8).collect();
    let (p_str, run) = (p.to_string(), tracker.run_id.clone());
    let mut confirmed = 0u64;
    for s in 0..count {
        while s - confirmed >= window {
            if conn.unflushed > 0 {
                conn.flush().await?;
            }
            confirmed = confirmed.max(read_receipt(conn).await?);
            tracker.confirmed[p].store(confirmed, Ordering::Relaxed);
        }
        let s_str = s.to_string();
        let receipt = format!("r{s}");
        let group = (plan.groups > 0).then(|| format!("p{p}-g{}", s % plan.groups));
        let priority = plan.priorities.then(|| (s % 10).to_string());
        let mut headers = vec![
            ("destination", plan.destination.as_str()),
            ("p", p_str.as_str()),
            ("s", s_str.as_str()),
            ("run", run.as_str()),
        ];
        headers.extend(
            plan.send_headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if let Some(group) = &group {
            headers.push(("JMSXGroupID", group.as_str()));
        }
        if let Some(priority) = &priority {
            headers.push(("priority", priority.as_str()));
        }
        if (s + 1) % every == 0 || s + 1 == count {
            headers.push(("receipt", receipt.as_str()));
        }
        conn.send("SEND", &headers, &body).await?;
        tracker.sent[p].store(s + 1, Ordering::Relaxed);
    }
    conn.flush().await?;
    while confirmed < count {
        confirmed = confirmed.max(read_receipt(conn).await?);
        tracker.confirmed[p].store(confirmed, Ordering::Relaxed);
    }
    Ok(())
}

/// The latency scenario's sending loop: message `s` is due at `start + s / rate`; each one
/// carries `t` (its write time in ns since the run's start) and is flushed on its own.
/// Receipts (every `RECEIPT_EVERY`) are read while waiting for the next slot. A producer that
/// falls behind (the broker or this machine stalls) sends the late messages at once rather
/// than skipping them, so such stalls show in the tail.
async fn send_paced(
    conn: &mut Conn,
    p: usize,
    plan: &Plan,
    tracker: &Tracker,
    rate: u64,
) -> anyhow::Result<()> {
    let count = tracker.per_producer[p];
    let every = RECEIPT_EVERY.min(plan.window.max(1));
    let body: Vec<u8> = (0..plan.size).map(|i| b'a' + (i % 26) as u8).collect();
    let (p_str, run) = (p.to_string(), tracker.run_id.clone());
    let start = *tracker
        .start
        .get()
        .expect("start is set before the producers");
    let t0 = tokio::time::Instant::from_std(start);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut confirmed = 0u64;
    for s in 0..count {
        let due = t0 + period.mul_f64(s as f64);
        loop {
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(due) => break,
                seq = read_receipt(conn) => {
                    confirmed = confirmed.max(seq?);
                    tracker.confirmed[p].store(confirmed, Ordering::Relaxed);
                }
            }
        }
        while s - confirmed >= plan.window.max(1) {
            confirmed = confirmed.max(read_receipt(conn).await?);
            tracker.confirmed[p].store(confirmed, Ordering::Relaxed);
        }
        let s_str = s.to_string();
        let receipt = format!("r{s}");
        let t_str = (start.elapsed().as_nanos() as u64).to_string();
        let mut headers = vec![
            ("destination", plan.destination.as_str()),
            ("p", p_str.as_str()),
            ("s", s_str.as_str()),
            ("run", run.as_str()),
            ("t", t_str.as_str()),
        ];
        headers.extend(
            plan.send_headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if (s + 1) % every == 0 || s + 1 == count {
            headers.push(("receipt", receipt.as_str()));
        }
        conn.send("SEND", &headers, &body).await?;
        conn.flush().await?;
        tracker.sent[p].store(s + 1, Ordering::Relaxed);
    }
    while confirmed < count {
        confirmed = confirmed.max(read_receipt(conn).await?);
        tracker.confirmed[p].store(confirmed, Ordering::Relaxed);
    }
    Ok(())
}

/// Reads the next frame, which must be a RECEIPT `r<seq>`; returns how many messages it
/// confirms (`seq + 1`).
async fn read_receipt(conn: &mut Conn) -> anyhow::Result<u64> {
    let frame = conn.read_frame().await?;
    if frame.command != "RECEIPT" {
        bail!("expected RECEIPT, got {}", frame.describe());
    }
    let id = frame.header("receipt-id").unwrap_or("");
    match id.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()) {
        Some(seq) => Ok(seq + 1),
        None => bail!("RECEIPT with unexpected receipt-id {id:?}"),
    }
}

/// Receives until told to stop, ACKing each message in client modes. ACKs are batched: they
/// are flushed whenever the already-read frames are all handled, before waiting for more.
async fn consume(
    mut conn: Conn,
    mut view: ConsumerView,
    client_ack: bool,
    early: Vec<Frame>,
    tracker: &Tracker,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let receive = async {
        for frame in early {
            handle(&mut conn, &mut view, client_ack, tracker, frame).await?;
        }
        loop {
            while let Some(frame) = conn.buffered_frame()? {
                handle(&mut conn, &mut view, client_ack, tracker, frame).await?;
            }
            if conn.unflushed > 0 {
                conn.flush().await?;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return anyhow::Ok(()),
                frame = conn.read_frame() => {
                    handle(&mut conn, &mut view, client_ack, tracker, frame?).await?;
                }
            }
        }
    };
    match receive.await {
        Ok(()) => {
            conn.disconnect().await;
            Ok(())
        }
        Err(e) if e.to_string().starts_with("expected MESSAGE") => Err(e),
        Err(e) => match conn.find_error().await {
            Some(error) => Err(e.context(format!("broker sent {error}"))),
            None => Err(e),
        },
    }
}

async fn handle(
    conn: &mut Conn,
    view: &mut ConsumerView,
    client_ack: bool,
    tracker: &Tracker,
    frame: Frame,
) -> anyhow::Result<()> {
    if frame.command != "MESSAGE" {
        bail!("expected MESSAGE, got {}", frame.describe());
    }
    if let (Some(t), Some(start)) = (frame.header("t"), tracker.start.get()) {
        if frame.header("run") == Some(tracker.run_id.as_str()) {
            if let Ok(sent) = t.parse::<u64>() {
                let now = start.elapsed().as_nanos() as u64;
                tracker.record_latency(now.saturating_sub(sent));
            }
        }
    }
    tracker.record(
        view,
        frame.header("run"),
        frame.header("p"),
        frame.header("s"),
        frame.body.len(),
    );
    if client_ack {
        let Some(id) = frame.header("ack").or(frame.header("message-id")) else {
            bail!("MESSAGE without ack or message-id header");
        };
        conn.send("ACK", &[("id", id)], b"").await?;
    }
    Ok(())
}
