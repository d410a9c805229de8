//! The outcome of a run: a human-readable summary and one JSON line for scripts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::run::Plan;
use crate::tracker::Tracker;

/// Results of one run (see [`Report::print`] for the output format).
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: &'static str,
    pub producers: usize,
    pub consumers: usize,
    pub messages: u64,
    pub size: usize,
    pub ack: String,
    pub window: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub lost_examples: Vec<(usize, usize, u64)>,
    /// Not delivered, but not judged as lost: sent without a receipt covering it yet, or
    /// still on its way when the overall timeout struck.
    pub undelivered: u64,
    pub unsent: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub stale: u64,
    pub corrupt: u64,
    /// From the producers' start to the last first delivery.
    pub elapsed: Duration,
    pub broker_cpu_s: Option<f64>,
    /// Broker (VmHWM, VmRSS) in KiB, right after the last delivery.
    pub broker_mem_kib: Option<(u64, u64)>,
    /// Broker VmRSS (KiB) before the run's first connection.
    pub broker_rss_before_kib: Option<u64>,
    /// Broker VmRSS (KiB) `rss_settle` after the run's connections closed.
    pub broker_rss_settled_kib: Option<u64>,
    /// End-to-end latency percentiles (p50, p99, p99.9, max) in µs and the sample count.
    pub latency_us: Option<([f64; 4], usize)>,
    pub stalled: bool,
    pub timed_out: bool,
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(plan: &Plan) -> Report {
        Report {
            scenario: plan.scenario,
            producers: plan.producers,
            consumers: plan.consumers,
            messages: plan.messages,
            size: plan.size,
            ack: plan.ack.clone(),
            window: plan.window,
            ..Report::default()
        }
    }

    pub fn fill_from(&mut self, t: &Tracker) {
        self.expected = t.expected();
        self.delivered = t.unique.load(Ordering::Relaxed);
        (self.lost, self.undelivered, self.lost_examples) = t.undelivered();
        if self.timed_out {
            // Messages may still have been on their way: no verdict on them.
            self.undelivered += std::mem::take(&mut self.lost);
            self.lost_examples.clear();
        }
        self.unsent = t.unsent();
        self.duplicates = t.duplicates.load(Ordering::Relaxed);
        self.reordered = t.reordered.load(Ordering::Relaxed);
        self.stale = t.stale.load(Ordering::Relaxed);
        self.corrupt = t.corrupt.load(Ordering::Relaxed);
        self.errors.extend(t.errors.lock().unwrap().iter().cloned());
        let mut lat = std::mem::take(&mut *t.latencies.lock().unwrap());
        if !lat.is_empty() {
            lat.sort_unstable();
            let q = |f: f64| {
                let i = ((lat.len() as f64 * f).ceil() as usize).clamp(1, lat.len()) - 1;
                lat[i] as f64 / 1000.0
            };
            self.latency_us = Some(([q(0.5), q(0.99), q(0.999), q(1.0)], lat.len()));
        }
    }

    /// Loss or duplication: exit status 1.
    pub fn lost_or_duplicated(&self) -> bool {
        self.lost > 0 || self.duplicates > 0
    }

    /// Anything else that makes the run a failure: exit status 2.
    pub fn failed(&self) -> bool {
        self.timed_out
            || self.stalled
            || self.unsent > 0
            || self.undelivered > 0
            || self.corrupt > 0
            || self.delivered < self.expected
            || !self.errors.is_empty()
    }

    fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.delivered as f64 / secs
        } else {
            0.0
        }
    }

    fn cpu_us_per_msg(&self) -> Option<f64> {
        let cpu = self.broker_cpu_s?;
        (self.delivered > 0).then(|| cpu * 1e6 / self.delivered as f64)
    }

    /// Human summary on stdout (errors and loss examples on stderr), then the JSON line;
    /// `json_only` (`--json`): the JSON line alone on stdout (errors still on stderr).
    pub fn print(&self, json_only: bool) {
        for e in &self.errors {
            eprintln!("error: {e}");
        }
        for (g, p, s) in &self.lost_examples {
            eprintln!("lost: group {g} producer {p} sequence {s}");
        }
        let rate = self.rate();
        let mb = rate * self.size as f64 / 1e6;
        let mut line = format!(
            "{} p={} c={} size={}B ack={}: {}/{} delivered in {:.3}s = {:.0} msg/s, {:.2} MB/s; \
             lost={} dup={} reordered={} unsent={}",
            self.scenario,
            self.producers,
            self.consumers,
            self.size,
            self.ack,
            self.delivered,
            self.expected,
            self.elapsed.as_secs_f64(),
            rate,
            mb,
            self.lost,
            self.duplicates,
            self.reordered,
            self.unsent,
        );
        if self.stale > 0 || self.corrupt > 0 {
            let _ = write!(line, " stale={} corrupt={}", self.stale, self.corrupt);
        }
        if let (Some(cpu), Some(per)) = (self.broker_cpu_s, self.cpu_us_per_msg()) {
            let _ = write!(line, "; broker cpu {cpu:.2}s = {per:.1} us/msg");
        }
        if let Some(([p50, p99, p999, max], n)) = self.latency_us {
            let _ = write!(
                line,
                "; latency us p50 {p50:.0} p99 {p99:.0} p99.9 {p999:.0} max {max:.0} (n={n})"
            );
        }
        if let Some((hwm, rss)) = self.broker_mem_kib {
            let mib = |k: u64| k as f64 / 1024.0;
            let _ = write!(line, ", VmHWM {:.1} MiB, VmRSS", mib(hwm));
            if let Some(before) = self.broker_rss_before_kib {
                let _ = write!(line, " {:.1} before,", mib(before));
            }
            let _ = write!(line, " {:.1} right after", mib(rss));
            if let Some(settled) = self.broker_rss_settled_kib {
                let _ = write!(line, ", {:.1} settled", mib(settled));
            }
            line.push_str(" MiB");
        }
        if self.undelivered > 0 {
            let _ = write!(line, " undelivered={}", self.undelivered);
        }
        if self.timed_out {
            line.push_str(" [TIMED OUT]");
        } else if self.stalled {
            line.push_str(" [STALLED]");
        }
        let verdict = if self.lost_or_duplicated() || self.failed() {
            "FAIL"
        } else {
            "OK"
        };
        // Ignore a closed stdout (e.g. piped into `head`).
        let mut out = std::io::stdout().lock();
        if !json_only {
            let _ = writeln!(out, "{line} => {verdict}");
        }
        let _ = writeln!(out, "{}", self.json(rate, mb));
    }

    fn json(&self, rate: f64, mb: f64) -> String {
        let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
        let mem = |i: usize| {
            self.broker_mem_kib.map_or("null".to_string(), |m| {
                if i == 0 { m.0 } else { m.1 }.to_string()
            })
        };
        let int = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        let errors: Vec<String> = self.errors.iter().map(|e| json_str(e)).collect();
        format!(
            "{{\"scenario\":{},\"producers\":{},\"consumers\":{},\"messages\":{},\"size\":{},\
             \"ack\":{},\"window\":{},\"expected\":{},\"delivered\":{},\"lost\":{},\
             \"undelivered\":{},\"duplicates\":{},\"reordered\":{},\"unsent\":{},\"stale\":{},\"corrupt\":{},\
             \"elapsed_s\":{:.3},\"msgs_per_s\":{:.1},\"mb_per_s\":{:.3},\"broker_cpu_s\":{},\
             \"cpu_us_per_msg\":{},\"broker_vm_hwm_kib\":{},\"broker_vm_rss_kib\":{},\
             \"broker_rss_before_kib\":{},\"broker_rss_settled_kib\":{},\
             \"latency_p50_us\":{},\"latency_p99_us\":{},\"latency_p999_us\":{},\
             \"latency_max_us\":{},\
             \"stalled\":{},\"timed_out\":{},\"ok\":{},\"errors\":[{}]}}",
            json_str(self.scenario),
            self.producers,
            self.consumers,
            self.messages,
            self.size,
            json_str(&self.ack),
            self.window,
            self.expected,
            self.delivered,
            self.lost,
            self.undelivered,
            self.duplicates,
            self.reordered,
            self.unsent,
            self.stale,
            self.corrupt,
            self.elapsed.as_secs_f64(),
            rate,
            mb,
            opt(self.broker_cpu_s),
            opt(self.cpu_us_per_msg()),
            mem(0),
            mem(1),
            int(self.broker_rss_before_kib),
            int(self.broker_rss_settled_kib),
            opt(self.latency_us.map(|l| l.0[0])),
            opt(self.latency_us.map(|l| l.0[1])),
            opt(self.latency_us.map(|l| l.0[2])),
            opt(self.latency_us.map(|l| l.0[3])),
            self.stalled,
            self.timed_out,
            !(self.lost_or_duplicated() || self.failed()),
            errors.join(","),
        )
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_escapes() {
        assert_eq!(
            super::json_str("a\"b\\c\n\u{1}"),
            "\"a\\\"b\\\\c\\n\\u0001\""
        );
    }
}
