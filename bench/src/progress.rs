//! Live progress of a run on a terminal: one line on stderr, rewritten about four times a
//! second, with the messages sent and received so far, the receive rate over the last interval
//! and the time since the producers started.
//!
//! It costs the measured path nothing: the run's wait loop (which polls the tracker every
//! 10 ms anyway) hands it the counters the producers and consumers already keep (relaxed
//! atomics in [`Tracker`]); nothing is added per message. It stays off with `--json` and when
//! stderr is not a terminal (a script reading the output never sees it), and the line is
//! erased before the summary is printed.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::tracker::Tracker;

/// How often the line is rewritten.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Moves to the start of the line; the line then ends with "erase to the end of the line", so
/// a shorter line leaves nothing of a longer one behind.
const REWRITE: &str = "\r";
const ERASE_REST: &str = "\x1b[K";

/// The counters one line shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Messages the producers handed to their sockets.
    pub sent: u64,
    /// Messages the producers are to send in all.
    pub to_send: u64,
    /// Deliveries seen by the consumers (duplicates included).
    pub received: u64,
    /// Deliveries a complete run has (every message once per subscriber group).
    pub expected: u64,
    /// Since the producers started.
    pub elapsed: Duration,
}

impl Snapshot {
    /// Reads the tracker's counters (relaxed loads, a handful per call).
    pub fn read(tracker: &Tracker, elapsed: Duration) -> Snapshot {
        Snapshot {
            sent: tracker.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum(),
            to_send: tracker.per_producer.iter().sum(),
            received: tracker.unique.load(Ordering::Relaxed)
                + tracker.duplicates.load(Ordering::Relaxed),
            expected: tracker.expected(),
            elapsed,
        }
    }
}

/// Whether to show progress: only for a person watching a terminal.
pub fn wanted(json_only: bool, stderr_is_terminal: bool) -> bool {
    !json_only && stderr_is_terminal
}

/// The progress line of one run, written to `out` (stderr in the bench, a buffer in tests).
pub struct Progress<W: Write> {
    scenario: &'static str,
    out: W,
    /// When the line was last written, and the received count then (for the rate).
    last: Option<(Instant, u64)>,
    /// Something is on the line that [`Progress::finish`] must erase.
    shown: bool,
}

impl Progress<std::io::Stderr> {
    /// Progress on stderr if [`wanted`], else `None`.
    pub fn on_stderr(scenario: &'static str, json_only: bool) -> Option<Self> {
        let stderr = std::io::stderr();
        wanted(json_only, stderr.is_terminal()).then(|| Progress::new(scenario, stderr))
    }
}

impl<W: Write> Progress<W> {
    pub fn new(scenario: &'static str, out: W) -> Self {
        Progress {
            scenario,
            out,
            last: None,
            shown: false,
        }
    }

    /// Called from the run's wait loop: rewrites the line if [`INTERVAL`] has passed since
    /// the last time (the first call writes at once). `now` is passed in for the tests.
    pub fn tick(&mut self, now: Instant, snapshot: impl FnOnce() -> Snapshot) {
        if let Some((at, _)) = self.last {
            if now.saturating_duration_since(at) < INTERVAL {
                return;
            }
        }
        let snap = snapshot();
        let rate = self.last.map(|(at, before)| {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            snap.received.saturating_sub(before) as f64 / secs
        });
        self.write(&snap, rate, now);
    }

    fn write(&mut self, snap: &Snapshot, rate: Option<f64>, now: Instant) {
        let line = line(self.scenario, snap, rate);
        // A closed or failing stderr must not disturb the run.
        let _ = write!(self.out, "{REWRITE}{line}{ERASE_REST}");
        let _ = self.out.flush();
        self.last = Some((now, snap.received));
        self.shown = true;
    }

    /// Erases the line (the summary follows on a clean line).
    pub fn finish(&mut self) {
        if self.shown {
            let _ = write!(self.out, "{REWRITE}{ERASE_REST}");
            let _ = self.out.flush();
            self.shown = false;
        }
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

/// `queue: sent 120,000/200,000  received 118,500/200,000 (59%)  412,345 msg/s  3.2 s`;
/// the rate is over the last interval (`…` before there is one).
pub fn line(scenario: &str, s: &Snapshot, rate: Option<f64>) -> String {
    let percent = (u128::from(s.received.min(s.expected)) * 100)
        .checked_div(u128::from(s.expected))
        .map_or("–".to_string(), |p| p.to_string());
    let rate = rate.map_or("…".to_string(), |r| thousands(r.max(0.0).round() as u64));
    format!(
        "{scenario}: sent {}/{}  received {}/{} ({percent}%)  {rate} msg/s  {}",
        thousands(s.sent),
        thousands(s.to_send),
        thousands(s.received),
        thousands(s.expected),
        elapsed(s.elapsed),
    )
}

/// 1234567 → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `3.2 s` under a minute, `2 min 05 s` above.
pub fn elapsed(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(sent: u64, received: u64, elapsed_ms: u64) -> Snapshot {
        Snapshot {
            sent,
            to_send: 200_000,
            received,
            expected: 200_000,
            elapsed: Duration::from_millis(elapsed_ms),
        }
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(200_000), "200,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn elapsed_switches_to_minutes() {
        assert_eq!(elapsed(Duration::from_millis(0)), "0.0 s");
        assert_eq!(elapsed(Duration::from_millis(3_249)), "3.2 s");
        assert_eq!(elapsed(Duration::from_millis(59_940)), "59.9 s");
        assert_eq!(elapsed(Duration::from_secs(65)), "1 min 05 s");
        assert_eq!(elapsed(Duration::from_secs(3_725)), "62 min 05 s");
    }

    #[test]
    fn line_shows_counts_share_rate_and_time() {
        assert_eq!(
            line("queue", &snap(120_000, 118_500, 3_200), Some(412_345.4)),
            "queue: sent 120,000/200,000  received 118,500/200,000 (59%)  412,345 msg/s  3.2 s"
        );
        // No interval yet: no rate.
        assert_eq!(
            line("topic", &snap(0, 0, 0), None),
            "topic: sent 0/200,000  received 0/200,000 (0%)  … msg/s  0.0 s"
        );
        // Duplicates can push the count past the expected: the share stops at 100 %.
        assert!(line("queue", &snap(200_000, 200_100, 1_000), Some(0.0))
            .contains("received 200,100/200,000 (100%)  0 msg/s"));
        let empty = Snapshot {
            expected: 0,
            ..snap(0, 0, 0)
        };
        assert!(line("queue", &empty, None).contains("(–%)"));
    }

    #[test]
    fn only_a_terminal_without_json_gets_progress() {
        assert!(wanted(false, true));
        assert!(!wanted(true, true));
        assert!(!wanted(false, false));
        assert!(!wanted(true, false));
    }

    #[test]
    fn the_line_is_rewritten_at_most_every_interval_and_erased_at_the_end() {
        let t0 = Instant::now();
        let mut p = Progress::new("queue", Vec::new());
        p.tick(t0, || snap(1_000, 0, 0));
        // 10 ms later (the wait loop's period): nothing, and no counters read.
        p.tick(t0 + Duration::from_millis(10), || {
            panic!("read before the interval")
        });
        // A quarter second later: 50,000 more received = 200,000 msg/s.
        p.tick(t0 + INTERVAL, || snap(60_000, 50_000, 250));
        p.finish();
        p.finish(); // erases once
        let out = String::from_utf8(p.into_inner()).unwrap();
        assert_eq!(
            out,
            "\rqueue: sent 1,000/200,000  received 0/200,000 (0%)  … msg/s  0.0 s\x1b[K\
             \rqueue: sent 60,000/200,000  received 50,000/200,000 (25%)  200,000 msg/s  0.2 s\x1b[K\
             \r\x1b[K"
        );
    }

    #[test]
    fn nothing_shown_means_nothing_to_erase() {
        let mut p = Progress::new("queue", Vec::new());
        p.finish();
        assert!(p.into_inner().is_empty());
    }

    #[test]
    fn snapshot_reads_the_trackers_counters() {
        let t = Tracker::new("run".into(), 2, 10, 3, 4);
        t.sent[0].store(4, Ordering::Relaxed);
        t.sent[1].store(5, Ordering::Relaxed);
        t.unique.store(20, Ordering::Relaxed);
        t.duplicates.store(2, Ordering::Relaxed);
        let s = Snapshot::read(&t, Duration::from_secs(1));
        assert_eq!(
            s,
            Snapshot {
                sent: 9,
                to_send: 10,
                received: 22,
                expected: 30,
                elapsed: Duration::from_secs(1),
            }
        );
    }
}
