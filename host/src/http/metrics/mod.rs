//! `GET /metrics`: the broker's counters in the OpenMetrics text format (which Prometheus
//! reads), encoded with `prometheus-client`.
//!
//! Nothing here runs on the message path: a [`Collector`] reads the counters the router, the
//! sessions, the store and the plugin pools already keep, at scrape time. There is no global
//! registry: [`Metrics`] owns one registry holding that collector. Names follow RabbitMQ's
//! Prometheus names where one exists, prefixed `plugboard_`; docs/operations.md lists them.
//!
//! Per-queue and per-topic series are capped (`metrics.max_labelled_destinations`): the
//! destinations past the cap, in name order, are summed into one series labelled `other`.

mod broker;
pub(crate) mod cluster;
mod destinations;

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::histogram::Snapshot;

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry `/metrics` encodes.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Metrics of `broker`, read at each scrape.
    pub fn new(broker: Arc<Broker>) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(BrokerCollector(broker)));
        Metrics { registry }
    }

    /// Reads what a scrape shows that is not in memory: cluster mode's queue depths, from
    /// JetStream (bounded; at most once per few seconds). Nothing single-node.
    pub async fn refresh(broker: &Broker) {
        cluster::refresh(broker).await;
    }

    /// The text of one scrape.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(64 * 1024);
        // Writing into a String does not fail; the collector's own errors are formatting ones.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%err, "encoding metrics failed");
        }
        text
    }
}

/// Reads the broker at scrape time.
struct BrokerCollector(Arc<Broker>);

impl fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokerCollector")
    }
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let broker = &self.0;
        let cap = broker.config.metrics.max_labelled_destinations;
        destinations::encode_queues(&mut encoder, &broker.vhosts, cap)?;
        destinations::encode_topics(&mut encoder, &broker.vhosts, cap)?;
        broker::encode_connections(&mut encoder, broker)?;
        broker::encode_memory(&mut encoder, broker)?;
        broker::encode_store(&mut encoder, broker)?;
        broker::encode_plugins(&mut encoder, broker)?;
        broker::encode_redelivery(&mut encoder, broker)?;
        cluster::encode_cluster(&mut encoder, broker)
    }
}

/// One family's samples: what each kind of metric writes for one label set.
trait Sample {
    const TYPE: MetricType;
    fn write(&self, metric: &mut MetricEncoder<'_>) -> fmt::Result;
}

/// A counter's value.
struct Counter(u64);
/// A gauge's value.
struct Gauge(u64);
/// A histogram read from [`crate::histogram::Histogram`], its values scaled by `1 / divisor`
/// (nanoseconds to seconds).
struct Histogram<'a> {
    snapshot: &'a Snapshot,
    divisor: f64,
}

impl Sample for Counter {
    const TYPE: MetricType = MetricType::Counter;
    fn write(&self, metric: &mut MetricEncoder<'_>) -> fmt::Result {
        metric.encode_counter::<NoLabelSet, u64, u64>(&self.0, None)
    }
}

impl Sample for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
    fn write(&self, metric: &mut MetricEncoder<'_>) -> fmt::Result {
        metric.encode_gauge(&self.0)
    }
}

impl Sample for Histogram<'_> {
    const TYPE: MetricType = MetricType::Histogram;
    fn write(&self, metric: &mut MetricEncoder<'_>) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .snapshot
            .buckets
            .iter()
            .map(|&(bound, count)| {
                let bound = if bound == u64::MAX {
                    f64::INFINITY
                } else {
                    bound as f64 / self.divisor
                };
                (bound, count)
            })
            .collect();
        let sum = self.snapshot.sum as f64 / self.divisor;
        metric.encode_histogram::<NoLabelSet>(sum, self.snapshot.count, &buckets, None)
    }
}

/// Writes a family without labels. `name` is without the `_total` a counter's sample gets.
fn single<S: Sample>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    sample: S,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, S::TYPE)?;
    sample.write(&mut metric)
}

/// Writes a family with one sample per label set.
fn family<L: EncodeLabelSet, S: Sample>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, S)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, S::TYPE)?;
    for (labels, sample) in samples {
        sample.write(&mut metric.encode_family(&labels)?)?;
    }
    Ok(())
}
