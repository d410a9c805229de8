//! The `idle` scenario: memory a broker spends per idle connected session.
//!
//! Reads the broker's VmRSS, opens `n` connections (CONNECT → CONNECTED, at most
//! `PARALLEL` handshakes at a time), holds them for `hold`, reads VmRSS again, closes them all,
//! waits `hold` once more and takes a last reading. The figure reported is
//! (VmRSS with the connections − VmRSS before) / n.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use crate::conn::{Conn, Endpoint};
use crate::stats;

/// Handshakes in flight at once.
const PARALLEL: usize = 64;

/// What the idle scenario measured (memory in KiB).
pub struct IdleReport {
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_closed_kib: u64,
    pub connect_s: f64,
}

impl IdleReport {
    pub fn kib_per_connection(&self) -> f64 {
        (self.rss_connected_kib as f64 - self.rss_before_kib as f64) / self.connections as f64
    }

    pub fn print(&self) {
        let mut line = String::new();
        let _ = write!(
            line,
            "idle c={}: opened in {:.2}s; broker VmRSS {:.1} MiB before, {:.1} MiB connected, \
             {:.1} MiB after closing => {:.1} KiB per connection",
            self.connections,
            self.connect_s,
            self.rss_before_kib as f64 / 1024.0,
            self.rss_connected_kib as f64 / 1024.0,
            self.rss_closed_kib as f64 / 1024.0,
            self.kib_per_connection(),
        );
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line} => OK");
        let _ = writeln!(
            out,
            "{{\"scenario\":\"idle\",\"connections\":{},\"connect_s\":{:.3},\
             \"broker_rss_before_kib\":{},\"broker_rss_connected_kib\":{},\
             \"broker_rss_closed_kib\":{},\"kib_per_connection\":{:.2},\"ok\":true}}",
            self.connections,
            self.connect_s,
            self.rss_before_kib,
            self.rss_connected_kib,
            self.rss_closed_kib,
            self.kib_per_connection(),
        );
    }
}

fn rss(pid: u32) -> anyhow::Result<u64> {
    Ok(stats::memory_kib(pid)
        .with_context(|| format!("reading /proc/{pid}/status"))?
        .1)
}

/// Opens `n` sessions, measures, closes them. Any failed handshake fails the scenario.
pub async fn run(ep: &Endpoint, n: usize, hold: Duration, pid: u32) -> anyhow::Result<IdleReport> {
    anyhow::ensure!(n > 0, "need at least one connection");
    let rss_before_kib = rss(pid)?;
    let start = Instant::now();
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    let mut launched = 0;
    while conns.len() < n {
        while launched < n && pending.len() < PARALLEL {
            let ep = ep.clone();
            pending.spawn(async move { Conn::connect(&ep).await });
            launched += 1;
        }
        let Some(done) = pending.join_next().await else {
            break;
        };
        let conn = done
            .context("connect task")?
            .with_context(|| format!("opening connection {} of {n}", conns.len() + 1))?;
        conns.push(conn);
    }
    let connect_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(hold).await;
    let rss_connected_kib = rss(pid)?;
    drop(conns);
    tokio::time::sleep(hold).await;
    let rss_closed_kib = rss(pid)?;
    Ok(IdleReport {
        connections: n,
        rss_before_kib,
        rss_connected_kib,
        rss_closed_kib,
        connect_s,
    })
}
