//! Message rates for the console: a background task samples the queues' and topics' counters
//! every [`SAMPLE_EVERY`] into bounded rings covering [`SAMPLES`] intervals (10 minutes), per
//! queue and broker-wide, so a page opened now shows the last minutes at once.
//!
//! Per-queue rings are kept for the first `cap` queues in name order (`metrics.
//! max_labelled_destinations`, as `/metrics` caps its series); the broker-wide one counts them
//! all. A counter that went down (a queue removed by the sweep takes its counts with it) gives
//! a rate of 0 for that interval, never a negative one. The task runs only while the admin
//! listener does, and reads counters the router keeps anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use crate::router::message::now_ms;
use crate::router::Router;

/// How often counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: 10 minutes of history.
pub const SAMPLES: usize = 120;

/// Counters read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages in: published to queues and topics (and dead-lettered into queues).
    pub published: u64,
    /// Deliveries to consumers and topic subscribers.
    pub delivered: u64,
    /// Queue deliveries settled (ACK, or written to an auto-ack consumer).
    pub acked: u64,
}

/// Per-second rates over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    /// Messages in per second.
    pub published: f64,
    /// Deliveries per second.
    pub delivered: f64,
    /// Acknowledgements per second.
    pub acked: f64,
}

/// A ring of (time, counts) samples.
#[derive(Debug, Default)]
struct Ring(VecDeque<(u64, Counts)>);

impl Ring {
    fn push(&mut self, at: u64, counts: Counts) {
        if self.0.len() == SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back((at, counts));
    }

    /// The rates between consecutive samples, oldest first, with the time each interval ends.
    fn rates(&self) -> Vec<(u64, Rate)> {
        self.0
            .iter()
            .zip(self.0.iter().skip(1))
            .map(|((t0, a), (t1, b))| {
                let seconds = (t1.saturating_sub(*t0) as f64 / 1000.0).max(0.001);
                let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / seconds;
                (
                    *t1,
                    Rate {
                        published: per(a.published, b.published),
                        delivered: per(a.delivered, b.delivered),
                        acked: per(a.acked, b.acked),
                    },
                )
            })
            .collect()
    }
}

/// The key of a queue's ring: its vhost and name, apart by a line feed (which no vhost name
/// holds), so that queues of the same name in two vhosts keep two histories and sort by vhost.
pub fn queue_key(vhost: &str, queue: &str) -> String {
    format!("{vhost}\n{queue}")
}

/// The sampled history.
#[derive(Debug, Default)]
pub struct Rates {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    broker: Ring,
    queues: HashMap<String, Ring>,
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one sample of the counters of every vhost's router (`(vhost name, router)`) now,
    /// keeping per-queue rings for the first `cap` queues by (vhost, name).
    pub fn sample<'r>(&self, routers: impl IntoIterator<Item = (&'r str, &'r Router)>, cap: usize) {
        let mut queues: Vec<(String, Counts)> = Vec::new();
        let mut total = Counts::default();
        for (vhost, router) in routers {
            for queue in router.queues() {
                let stats = &queue.stats;
                let counts = Counts {
                    published: stats.enqueued.load(Relaxed),
                    delivered: stats.delivered.load(Relaxed),
                    acked: stats.acked.load(Relaxed),
                };
                total.published += counts.published;
                total.delivered += counts.delivered;
                total.acked += counts.acked;
                let key = queue_key(vhost, &String::from_utf8_lossy(&queue.name));
                queues.push((key, counts));
            }
            for topic in router.topics() {
                total.published += topic.stats.published.load(Relaxed);
                total.delivered += topic.stats.delivered.load(Relaxed);
            }
        }
        queues.sort_by(|a, b| a.0.cmp(&b.0));
        queues.truncate(cap);
        self.record(now_ms(), total, queues);
    }

    fn record(&self, at: u64, total: Counts, queues: Vec<(String, Counts)>) {
        let mut inner = self.lock();
        inner.broker.push(at, total);
        let mut kept = HashMap::with_capacity(queues.len());
        for (name, counts) in queues {
            let mut ring = inner.queues.remove(&name).unwrap_or_default();
            ring.push(at, counts);
            kept.insert(name, ring);
        }
        // Queues gone (or past the cap) lose their history.
        inner.queues = kept;
    }

    /// Broker-wide rates, oldest first, with the time each interval ends (unix ms).
    pub fn broker(&self) -> Vec<(u64, Rate)> {
        self.lock().broker.rates()
    }

    /// The rates of every sampled queue, oldest first.
    pub fn queues(&self) -> HashMap<String, Vec<Rate>> {
        self.lock()
            .queues
            .iter()
            .map(|(name, ring)| {
                (
                    name.clone(),
                    ring.rates().into_iter().map(|r| r.1).collect(),
                )
            })
            .collect()
    }

    /// Samples every [`SAMPLE_EVERY`] (a first one at once) until `shutdown`.
    pub async fn run(
        &self,
        vhosts: &crate::vhost::Vhosts,
        cap: usize,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.sample(
                    vhosts.iter().map(|vhost| (&*vhost.name, &vhost.router)),
                    cap,
                ),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(published: u64, delivered: u64, acked: u64) -> Counts {
        Counts {
            published,
            delivered,
            acked,
        }
    }

    #[test]
    fn rates_are_per_second_between_samples_and_never_negative() {
        let rates = Rates::default();
        rates.record(
            0,
            counts(0, 0, 0),
            vec![("/queue/a".into(), counts(0, 0, 0))],
        );
        rates.record(
            5000,
            counts(50, 10, 5),
            vec![("/queue/a".into(), counts(50, 10, 5))],
        );
        rates.record(10000, counts(40, 20, 5), vec![]);
        let broker = rates.broker();
        assert_eq!(broker.len(), 2);
        assert_eq!(broker[0].0, 5000);
        assert_eq!(
            broker[0].1,
            Rate {
                published: 10.0,
                delivered: 2.0,
                acked: 1.0
            }
        );
        assert_eq!(broker[1].1.published, 0.0, "a counter that went down");
        assert!(
            rates.queues().is_empty(),
            "a queue no longer sampled is forgotten"
        );
    }

    #[test]
    fn the_ring_keeps_ten_minutes_only() {
        let rates = Rates::default();
        for i in 0..(SAMPLES as u64 + 30) {
            rates.record(
                i * 5000,
                counts(i, i, i),
                vec![("/queue/a".into(), counts(i, 0, 0))],
            );
        }
        assert_eq!(rates.broker().len(), SAMPLES - 1);
        assert_eq!(rates.queues()["/queue/a"].len(), SAMPLES - 1);
    }

    #[test]
    fn only_the_first_queues_by_name_get_a_ring() {
        let router = Router::new(Default::default());
        for name in ["/queue/c", "/queue/a", "/queue/b"] {
            router.queue_for_admin(name.as_bytes()).unwrap();
        }
        let rates = Rates::default();
        let other = Router::new(Default::default());
        other.queue_for_admin(b"/queue/a").unwrap();
        let routers = [("/", &router), ("b", &other)];
        rates.sample(routers, 2);
        rates.sample(routers, 2);
        let mut names: Vec<_> = rates.queues().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            vec![queue_key("/", "/queue/a"), queue_key("/", "/queue/b")]
        );
    }
}
