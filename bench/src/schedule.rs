//! The `schedule` scenario: scheduled delivery at scale, read from the broker's `/proc`.
//!
//! 1. *Background*: `--background` messages are scheduled (`x-delay`, far ahead: never due
//!    during the run) by `--producers` pipelining connections, each SEND receipted in windows.
//!    The broker's VmRSS growth over them is the memory per scheduled message.
//! 2. *Idle*: for `--idle` seconds nothing is due; the broker's CPU time over them is what
//!    the scheduler costs per second while it holds the background (its per-tick cost).
//! 3. *Due burst*: `--due` messages are scheduled for one instant (`deliver-at`, a moment after
//!    the sending is done) on another queue, a consumer subscribes, and the broker's CPU time
//!    from the end of the sending until the last one arrived, divided by `--due`, is the
//!    broker CPU per delivered scheduled message.
//!
//! Run it on fresh brokers with `--background` 0, 100000 and 1000000: what grows with the
//! background is memory; the per-tick cost and the CPU per delivered message should not.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::conn::{subscribe, Conn, Endpoint};
use crate::stats;

/// What the scenario is asked to do.
#[derive(Debug, Clone)]
pub struct SchedulePlan {
    pub endpoint: Endpoint,
    pub background: u64,
    pub due: u64,
    pub producers: usize,
    pub size: usize,
    pub idle: Duration,
    pub broker_pid: u32,
}

/// Receipts are asked for every this many SENDs.
const RECEIPT_EVERY: u64 = 500;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    Ok(stats::memory_kib(pid)?.1)
}

/// Sends `count` messages to `destination` with the scheduling header `(name, value)` from
/// `producers` connections; returns once every one is receipted.
async fn schedule_many(
    plan: &SchedulePlan,
    destination: &str,
    count: u64,
    header: (&'static str, String),
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let per = count.div_ceil(plan.producers as u64);
    for p in 0..plan.producers as u64 {
        let n = per.min(count.saturating_sub(p * per));
        let (endpoint, destination, header) = (
            plan.endpoint.clone(),
            destination.to_string(),
            header.clone(),
        );
        let body = vec![b'x'; plan.size];
        tasks.spawn(async move {
            let mut conn = Conn::connect(&endpoint).await?;
            let mut i = 0;
            while i < n {
                let batch = RECEIPT_EVERY.min(n - i);
                for k in 0..batch {
                    let receipt = format!("r{}", i + k);
                    let mut headers = vec![
                        ("destination", destination.as_str()),
                        (header.0, header.1.as_str()),
                    ];
                    if k + 1 == batch {
                        headers.push(("receipt", &receipt));
                    }
                    conn.send("SEND", &headers, &body).await?;
                }
                conn.flush().await?;
                let last = format!("r{}", i + batch - 1);
                if let Err(e) = conn.await_receipt(&last, |_| {}).await {
                    let why = conn.find_error().await.unwrap_or_default();
                    bail!("{e:#} {why}");
                }
                i += batch;
            }
            conn.disconnect().await;
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("producer task")??;
    }
    Ok(())
}

/// Runs the scenario and prints its report (a line, then a JSON line).
pub async fn run(plan: SchedulePlan) -> anyhow::Result<()> {
    anyhow::ensure!(plan.producers > 0, "need at least one producer");
    let pid = plan.broker_pid;
    let tick = stats::clock_ticks() as f64;
    let tag = now_ms();
    let rss_before = rss_kib(pid)?;
    let started = Instant::now();
    // Ten hours ahead: never due during the run.
    let far = ("x-delay", (10 * 3600 * 1000u64).to_string());
    schedule_many(
        &plan,
        &format!("/queue/sched.bg.{tag}"),
        plan.background,
        far,
    )
    .await?;
    let load_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = rss_kib(pid)?;
    let bytes_per_scheduled = if plan.background > 0 {
        (rss_loaded.saturating_sub(rss_before) * 1024) as f64 / plan.background as f64
    } else {
        0.0
    };

    let cpu0 = stats::cpu_ticks(pid)?;
    tokio::time::sleep(plan.idle).await;
    let idle_cpu_ms_per_s =
        (stats::cpu_ticks(pid)? - cpu0) as f64 / tick * 1000.0 / plan.idle.as_secs_f64();

    // The due burst: all due at one instant, a little after they are all scheduled.
    let due_queue = format!("/queue/sched.due.{tag}");
    let mut consumer = Conn::connect(&plan.endpoint).await?;
    subscribe(&mut consumer, &due_queue, "auto", 1000, &[]).await?;
    let lead_ms = 3000 + plan.due / 20;
    let due_at = now_ms() + lead_ms;
    schedule_many(
        &plan,
        &due_queue,
        plan.due,
        ("deliver-at", due_at.to_string()),
    )
    .await?;
    if now_ms() >= due_at {
        bail!("the due burst was still being scheduled when it fell due: raise the lead");
    }
    let cpu_before_burst = stats::cpu_ticks(pid)?;
    let mut received = 0;
    let deadline = Duration::from_secs(120 + plan.due / 1000);
    tokio::time::timeout(deadline, async {
        while received < plan.due {
            let frame = consumer.read_frame().await?;
            if frame.command == "MESSAGE" {
                received += 1;
            }
        }
        anyhow::Ok(())
    })
    .await
    .context("the due burst did not arrive in time")??;
    let burst_ms = now_ms().saturating_sub(due_at);
    let burst_ticks = stats::cpu_ticks(pid)? - cpu_before_burst;
    // The idle rate over the wait for the due time is taken out.
    let waited_s = lead_ms as f64 / 1000.0;
    let idle_ticks = idle_cpu_ms_per_s * waited_s / 1000.0 * tick;
    let burst_cpu_us = ((burst_ticks as f64 - idle_ticks).max(0.0)) / tick * 1e6;
    let cpu_us_per_delivered = burst_cpu_us / plan.due.max(1) as f64;
    consumer.disconnect().await;
    let (hwm, rss_end) = stats::memory_kib(pid)?;

    println!(
        "schedule: {} scheduled in {load_s:.1} s, {:.0} B RSS per scheduled message, \
         idle {idle_cpu_ms_per_s:.2} ms CPU/s; {} due at once delivered in {burst_ms} ms, \
         {cpu_us_per_delivered:.2} us broker CPU per delivered message",
        plan.background, bytes_per_scheduled, plan.due
    );
    println!(
        "{{\"scenario\":\"schedule\",\"background\":{},\"due\":{},\"size\":{},\
         \"load_s\":{load_s:.2},\"rss_before_kib\":{rss_before},\"rss_loaded_kib\":{rss_loaded},\
         \"bytes_per_scheduled\":{bytes_per_scheduled:.1},\"idle_cpu_ms_per_s\":{idle_cpu_ms_per_s:.3},\
         \"burst_ms\":{burst_ms},\"cpu_us_per_delivered\":{cpu_us_per_delivered:.3},\
         \"vm_hwm_kib\":{hwm},\"rss_end_kib\":{rss_end},\"ok\":true}}",
        plan.background, plan.due, plan.size
    );
    Ok(())
}
