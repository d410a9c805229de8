//! Per-queue and per-topic families: each destination's gauges and counters read once per
//! scrape, labelled with its vhost and name; the first `cap` destinations by (vhost, name) have
//! series of their own, the rest are summed into one `other` series per vhost.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::DescriptorEncoder;

use super::{family, single, Counter, Gauge};
use crate::router::DEAD_LETTER_REASONS;
use crate::vhost::Vhosts;

/// The label of the series that sums the destinations past the cap (a destination name always
/// starts with `/`, so no destination is called this).
pub const OTHER: &str = "other";

/// Reasons in [`crate::router::DeadLetterReasons::read`] order.
const REASONS: usize = DEAD_LETTER_REASONS.len() + 1;

/// A family drawn from rows: its name, help, and the value it takes from a row.
type Column<R> = (&'static str, &'static str, fn(&R) -> u64);

/// One queue's numbers at the scrape.
#[derive(Debug, Default)]
struct QueueRow {
    vhost: String,
    name: String,
    ready: u64,
    unacked: u64,
    bytes: u64,
    consumers: u64,
    published: u64,
    delivered: u64,
    acked: u64,
    redelivered: u64,
    expired: u64,
    dead_lettered: [(&'static str, u64); REASONS],
}

impl QueueRow {
    fn add_counts(&mut self, other: &QueueRow) {
        self.ready += other.ready;
        self.unacked += other.unacked;
        self.bytes += other.bytes;
        self.consumers += other.consumers;
        self.published += other.published;
        self.delivered += other.delivered;
        self.acked += other.acked;
        self.redelivered += other.redelivered;
        self.expired += other.expired;
        for (mine, theirs) in self.dead_lettered.iter_mut().zip(&other.dead_lettered) {
            *mine = (theirs.0, mine.1 + theirs.1);
        }
    }
}

/// One topic's numbers at the scrape.
#[derive(Debug, Default)]
struct TopicRow {
    vhost: String,
    name: String,
    subscribers: u64,
    published: u64,
    delivered: u64,
    dropped: u64,
    disconnected: u64,
}

impl TopicRow {
    fn add_counts(&mut self, other: &TopicRow) {
        self.subscribers += other.subscribers;
        self.published += other.published;
        self.delivered += other.delivered;
        self.dropped += other.dropped;
        self.disconnected += other.disconnected;
    }
}

/// A destination's numbers, summable.
trait Row: Default {
    fn vhost(&self) -> &str;
    fn name(&self) -> &str;
    fn named(self, vhost: &str, name: &str) -> Self;
    fn add(&mut self, other: &Self);
}

impl Row for QueueRow {
    fn vhost(&self) -> &str {
        &self.vhost
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn named(self, vhost: &str, name: &str) -> Self {
        QueueRow {
            vhost: vhost.to_string(),
            name: name.to_string(),
            ..self
        }
    }
    fn add(&mut self, other: &Self) {
        self.add_counts(other)
    }
}

impl Row for TopicRow {
    fn vhost(&self) -> &str {
        &self.vhost
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn named(self, vhost: &str, name: &str) -> Self {
        TopicRow {
            vhost: vhost.to_string(),
            name: name.to_string(),
            ..self
        }
    }
    fn add(&mut self, other: &Self) {
        self.add_counts(other)
    }
}

/// Sorts `rows` by vhost and name, merges rows of one name in one vhost (two names that are
/// not UTF-8 can read the same), keeps the first `cap` and sums the rest into one row named
/// [`OTHER`] per vhost.
fn capped<R: Row>(mut rows: Vec<R>, cap: usize) -> Vec<R> {
    rows.sort_by(|a, b| (a.vhost(), a.name()).cmp(&(b.vhost(), b.name())));
    rows.dedup_by(|later, kept| {
        let same = later.vhost() == kept.vhost() && later.name() == kept.name();
        if same {
            kept.add(later);
        }
        same
    });
    if rows.len() <= cap {
        return rows;
    }
    let mut others: Vec<R> = Vec::new();
    for row in &rows[cap..] {
        match others.last_mut() {
            Some(other) if other.vhost() == row.vhost() => other.add(row),
            _ => {
                let mut other = R::default().named(row.vhost(), OTHER);
                other.add(row);
                others.push(other);
            }
        }
    }
    rows.truncate(cap);
    rows.extend(others);
    rows
}

/// Writes the per-queue families.
pub fn encode_queues(encoder: &mut DescriptorEncoder, vhosts: &Vhosts, cap: usize) -> fmt::Result {
    let rows: Vec<QueueRow> = vhosts
        .iter()
        .flat_map(|vhost| {
            let queues = vhost.router.queues();
            queues
                .into_iter()
                .map(move |queue| (vhost.name.clone(), queue))
        })
        .map(|(vhost, queue)| {
            let ready = queue.depth() as u64;
            let (held, bytes) = queue.held();
            let stats = &queue.stats;
            let mut dead_lettered = [("", 0); REASONS];
            for (slot, read) in dead_lettered
                .iter_mut()
                .zip(stats.dead_letter_reasons.read())
            {
                *slot = read;
            }
            QueueRow {
                vhost: vhost.to_string(),
                name: String::from_utf8_lossy(&queue.name).into_owned(),
                ready,
                unacked: (held as u64).saturating_sub(ready),
                bytes,
                consumers: queue.consumer_count() as u64,
                published: stats.enqueued.load(Relaxed),
                delivered: stats.delivered.load(Relaxed),
                acked: stats.acked.load(Relaxed),
                redelivered: stats.redelivered.load(Relaxed),
                expired: stats.expired.load(Relaxed),
                dead_lettered,
            }
        })
        .collect();
    let count = rows.len() as u64;
    let rows = capped(rows, cap);
    single(
        encoder,
        "plugboard_queues",
        "Queues that exist.",
        Gauge(count),
    )?;
    let labels = |row: &QueueRow| [("vhost", row.vhost.clone()), ("queue", row.name.clone())];
    let gauges: [Column<QueueRow>; 4] = [
        (
            "plugboard_queue_messages_ready",
            "Messages waiting to be delivered.",
            |r| r.ready,
        ),
        (
            "plugboard_queue_messages_unacked",
            "Messages delivered and not yet acknowledged.",
            |r| r.unacked,
        ),
        (
            "plugboard_queue_messages_bytes",
            "Bytes of the messages held (ready and unacknowledged).",
            |r| r.bytes,
        ),
        ("plugboard_queue_consumers", "Consumers attached.", |r| {
            r.consumers
        }),
    ];
    for (name, help, value) in gauges {
        family(
            encoder,
            name,
            help,
            rows.iter().map(|row| (labels(row), Gauge(value(row)))),
        )?;
    }
    let counters: [Column<QueueRow>; 5] = [
        (
            "plugboard_queue_messages_published",
            "Messages that entered the queue (published, or dead-lettered into it).",
            |r| r.published,
        ),
        (
            "plugboard_queue_messages_delivered",
            "Deliveries to consumers, redeliveries included.",
            |r| r.delivered,
        ),
        (
            "plugboard_queue_messages_acked",
            "Deliveries settled by an ACK (or written to an auto-ack consumer).",
            |r| r.acked,
        ),
        (
            "plugboard_queue_messages_redelivered",
            "Deliveries of messages delivered before.",
            |r| r.redelivered,
        ),
        (
            "plugboard_queue_messages_expired",
            "Messages found expired (dropped or dead-lettered).",
            |r| r.expired,
        ),
    ];
    for (name, help, value) in counters {
        family(
            encoder,
            name,
            help,
            rows.iter().map(|row| (labels(row), Counter(value(row)))),
        )?;
    }
    family(
        encoder,
        "plugboard_queue_messages_dead_lettered",
        "Messages dead-lettered (or dropped for want of a dead-letter queue), by reason.",
        rows.iter().flat_map(|row| {
            row.dead_lettered.iter().map(move |&(reason, count)| {
                (
                    [
                        ("vhost", row.vhost.clone()),
                        ("queue", row.name.clone()),
                        ("reason", reason.to_string()),
                    ],
                    Counter(count),
                )
            })
        }),
    )
}

/// Writes the per-topic families.
pub fn encode_topics(encoder: &mut DescriptorEncoder, vhosts: &Vhosts, cap: usize) -> fmt::Result {
    let rows: Vec<TopicRow> = vhosts
        .iter()
        .flat_map(|vhost| {
            let topics = vhost.router.topics();
            topics
                .into_iter()
                .map(move |topic| (vhost.name.clone(), topic))
        })
        .map(|(vhost, topic)| TopicRow {
            vhost: vhost.to_string(),
            name: String::from_utf8_lossy(&topic.name).into_owned(),
            subscribers: topic.subscriber_count() as u64,
            published: topic.stats.published.load(Relaxed),
            delivered: topic.stats.delivered.load(Relaxed),
            dropped: topic.stats.slow_consumer_drops.load(Relaxed),
            disconnected: topic.stats.slow_consumer_disconnects.load(Relaxed),
        })
        .collect();
    let count = rows.len() as u64;
    let rows = capped(rows, cap);
    single(
        encoder,
        "plugboard_topics",
        "Topics that exist.",
        Gauge(count),
    )?;
    let labels = |row: &TopicRow| [("vhost", row.vhost.clone()), ("topic", row.name.clone())];
    family(
        encoder,
        "plugboard_topic_subscribers",
        "Subscribers (durable subscriptions' queues not included).",
        rows.iter().map(|row| (labels(row), Gauge(row.subscribers))),
    )?;
    let counters: [Column<TopicRow>; 4] = [
        (
            "plugboard_topic_messages_published",
            "Messages published to the topic.",
            |r| r.published,
        ),
        (
            "plugboard_topic_messages_delivered",
            "Copies handed to subscribers.",
            |r| r.delivered,
        ),
        (
            "plugboard_topic_messages_dropped",
            "Copies dropped for subscribers that could not keep up (the drop policy).",
            |r| r.dropped,
        ),
        (
            "plugboard_topic_slow_consumers_disconnected",
            "Subscribers disconnected for not keeping up (the disconnect policy).",
            |r| r.disconnected,
        ),
    ];
    for (name, help, value) in counters {
        family(
            encoder,
            name,
            help,
            rows.iter().map(|row| (labels(row), Counter(value(row)))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, published: u64) -> TopicRow {
        in_vhost("/", name, published)
    }

    fn in_vhost(vhost: &str, name: &str, published: u64) -> TopicRow {
        TopicRow {
            vhost: vhost.to_string(),
            name: name.to_string(),
            published,
            ..TopicRow::default()
        }
    }

    #[test]
    fn past_the_cap_destinations_are_summed_into_other_in_name_order() {
        let rows = vec![
            topic("/topic/c", 3),
            topic("/topic/a", 1),
            topic("/topic/b", 2),
        ];
        let rows = capped(rows, 1);
        let shown: Vec<_> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.published))
            .collect();
        assert_eq!(shown, vec![("/topic/a", 1), (OTHER, 5)]);
        let rows = capped(vec![topic("/topic/a", 1)], 1);
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn past_the_cap_each_vhost_gets_its_own_other() {
        let rows = vec![
            in_vhost("b", "/topic/a", 4),
            in_vhost("a", "/topic/z", 1),
            in_vhost("a", "/topic/y", 2),
            in_vhost("b", "/topic/b", 8),
        ];
        let rows = capped(rows, 1);
        let shown: Vec<_> = rows
            .iter()
            .map(|r| (r.vhost.as_str(), r.name.as_str(), r.published))
            .collect();
        assert_eq!(
            shown,
            vec![("a", "/topic/y", 2), ("a", OTHER, 1), ("b", OTHER, 12)]
        );
        // The same name in two vhosts is two series.
        let rows = capped(
            vec![in_vhost("a", "/topic/t", 1), in_vhost("b", "/topic/t", 1)],
            9,
        );
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn names_that_read_the_same_are_merged() {
        let rows = capped(
            vec![topic("/topic/\u{fffd}", 1), topic("/topic/\u{fffd}", 2)],
            10,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].published, 3);
    }
}
