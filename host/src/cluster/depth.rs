//! A cluster queue's depth for `GET /metrics`: JetStream's own count of the messages its
//! consumer has not delivered yet (`num_pending`) and of those out with consumers on any edge,
//! unacknowledged (`num_ack_pending`), read from the queue's consumer info.
//!
//! Never on the message path: a scrape asks for the depths ([`VhostLink::refresh_depths`]),
//! at most once per [`REFRESH_AFTER`] (more frequent scrapes, or one that comes while another
//! refreshes, get the last answers), for at most [`MAX_QUEUES`] queues of the vhost (in name
//! order), [`MAX_IN_FLIGHT`] requests at a time, each bounded by [`INFO_TIMEOUT`]. A queue
//! whose consumer does not exist yet (nobody subscribed to it on any edge) or whose info did
//! not come in time has no depth series. A priority queue's depth is its bands' together
//! (one request per band, [`super::bands`]).
//!
//! The same refresh lists the vhost's durable topic subscriptions in the cluster (at most
//! [`MAX_QUEUES`], one listing request, then one lease read each, as bounded), so that the
//! console shows them with their depth wherever their subscriber is.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use super::bands;
use super::durable::DurableDepth;
use super::VhostLink;

/// How long the depths read by one scrape serve the next ones.
pub const REFRESH_AFTER: Duration = Duration::from_secs(5);
/// Most queues of one vhost whose depth one refresh asks for.
pub const MAX_QUEUES: usize = 256;
/// Most consumer-info requests of one refresh at a time.
pub const MAX_IN_FLIGHT: usize = 8;
/// How long one consumer-info request may take.
pub const INFO_TIMEOUT: Duration = Duration::from_secs(2);

/// One cluster queue's depth, as JetStream counts it (every edge together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The queue's name (`/queue/...`).
    pub queue: Bytes,
    /// Messages not delivered yet.
    pub ready: u64,
    /// Messages delivered to a consumer on some edge and not acknowledged yet.
    pub unacked: u64,
}

/// The last depths read, and when.
#[derive(Debug, Default)]
pub struct Depths {
    /// When the last refresh ended; held while one runs (so only one does).
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    rows: Mutex<Vec<QueueDepth>>,
    durables: Mutex<Vec<DurableDepth>>,
}

impl VhostLink {
    /// Reads the depths of `queues` (this edge's cluster queues' names) from JetStream, unless
    /// the last read is recent or another one runs now.
    pub async fn refresh_depths(&self, mut queues: Vec<Bytes>) {
        let Ok(mut refreshed) = self.depths.refreshed.try_lock() else {
            return;
        };
        if refreshed.is_some_and(|at| at.elapsed() < REFRESH_AFTER) {
            return;
        }
        queues.sort();
        queues.truncate(MAX_QUEUES);
        let mut rows: Vec<QueueDepth> = futures_util::stream::iter(queues)
            .map(|queue| async move {
                let consumer = self.names.queue_consumer(&queue);
                let place = self.placement(&queue);
                // A priority queue's bands together (see `bands`).
                let consumers: Vec<String> = match place.banded {
                    true => bands::ORDER.map(|band| band.consumer(&consumer)).to_vec(),
                    false => vec![consumer],
                };
                let mut depth: Option<QueueDepth> = None;
                for consumer in consumers {
                    let read =
                        tokio::time::timeout(INFO_TIMEOUT, place.stream.consumer_info(consumer));
                    let Ok(Ok(info)) = read.await else {
                        continue;
                    };
                    let row = depth.get_or_insert_with(|| QueueDepth {
                        queue: queue.clone(),
                        ready: 0,
                        unacked: 0,
                    });
                    row.ready += info.num_pending;
                    row.unacked += info.num_ack_pending as u64;
                }
                depth
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .filter_map(|row| async move { row })
            .collect()
            .await;
        rows.sort_by(|a, b| a.queue.cmp(&b.queue));
        *self.depths.rows.lock().unwrap_or_else(|e| e.into_inner()) = rows;
        let durables = self
            .list_durables(MAX_QUEUES, MAX_IN_FLIGHT, INFO_TIMEOUT)
            .await;
        *self
            .depths
            .durables
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = durables;
        *refreshed = Some(Instant::now());
    }

    /// The durable subscriptions the last refresh listed (in name order).
    pub fn durable_depths(&self) -> Vec<DurableDepth> {
        self.depths
            .durables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The depths the last refresh read (in name order).
    pub fn depths(&self) -> Vec<QueueDepth> {
        self.depths
            .rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
