//! The producer's Prometheus metrics, served by `--metrics-addr`: read from the delivery
//! statistics at scrape time (a collector), so the hot path pays nothing for them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::stats::Stats;

/// Encodes the producer's counters from its [`Stats`].
#[derive(Debug)]
pub struct ProducerCollector {
    stats: Arc<Stats>,
}

impl ProducerCollector {
    /// A collector of `stats`.
    pub fn new(stats: Arc<Stats>) -> Self {
        ProducerCollector { stats }
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    let m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    let m = e.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// One metric with a series per label set.
fn family<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        value.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram computed at scrape time (sum, count, per-bucket counts).
struct ConstHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Upper bounds of the delivery latency buckets: 0.5 ms .. 65 s.
fn latency_bounds() -> Vec<f64> {
    (0..18).map(|i| 0.0005 * 2f64.powi(i)).collect()
}

impl Collector for ProducerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.stats;
        // outcomes first: a message is counted as sent before its outcome, so read in this
        // order sent >= delivered + failed holds in every scrape
        let delivered = s.delivered.load(Ordering::Acquire);
        let failed = s.failed.load(Ordering::Acquire);
        let sent = s.sent.load(Ordering::Acquire);
        counter(
            &mut e,
            "producer_messages_sent",
            "Messages handed to librdkafka",
            sent,
        )?;
        counter(
            &mut e,
            "producer_messages_delivered",
            "Messages the broker acknowledged",
            delivered,
        )?;
        // by reason, read after `sent`: they may count a failure newer than `failed`
        // above, never one whose message is not in `sent`
        family(
            &mut e,
            "producer_messages_failed",
            "Messages whose delivery failed, by reason (timed_out, unknown_topic, too_large, not_authorized, other)",
            MetricType::Counter,
            s.failed_by_reason()
                .into_iter()
                .map(|(r, n)| (vec![("reason", r.label().to_owned())], ConstCounter::new(n))),
        )?;
        counter(
            &mut e,
            "producer_messages_possibly_persisted",
            "Failed messages the broker may have written (sent, acknowledgement lost)",
            s.possibly_persisted.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "producer_bytes_delivered",
            "Payload bytes the broker acknowledged",
            s.bytes.load(Ordering::Relaxed),
        )?;
        family(
            &mut e,
            "producer_anomaly_messages_sent",
            "Labelled anomaly messages handed to librdkafka, by kind (--anomaly)",
            MetricType::Counter,
            s.anomalies()
                .into_iter()
                .map(|(k, n)| (vec![("kind", k.as_str().to_owned())], ConstCounter::new(n))),
        )?;
        gauge(
            &mut e,
            "producer_users",
            "Users the producer knows (those registering later included), those added while it runs too",
            s.users.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "producer_messages_in_flight",
            "Messages sent and not yet acknowledged or failed",
            sent.saturating_sub(delivered + failed) as i64,
        )?;
        let (sum, count, buckets) = s.latency_buckets(&latency_bounds());
        let h = ConstHistogram {
            sum,
            count,
            buckets,
        };
        let m = e.encode_descriptor(
            "producer_delivery_latency_seconds",
            "Seconds from handing a message to librdkafka to its acknowledgement",
            None,
            MetricType::Histogram,
        )?;
        h.encode(m)?;
        // librdkafka's own statistics (refreshed every second)
        let client = s.client.lock().unwrap_or_else(|e| e.into_inner()).clone();
        gauge(
            &mut e,
            "producer_queue_messages",
            "Messages in librdkafka's queues, not yet acknowledged (librdkafka msg_cnt)",
            client.queue_messages as i64,
        )?;
        gauge(
            &mut e,
            "producer_queue_bytes",
            "Bytes of the messages in librdkafka's queues (librdkafka msg_size)",
            client.queue_bytes as i64,
        )?;
        type Figure = fn(&crate::stats::BrokerStats) -> f64;
        let gauges: [(&str, &str, Figure); 4] = [
            (
                "producer_broker_up",
                "1 while the connection to the broker is up",
                |b| if b.up { 1.0 } else { 0.0 },
            ),
            (
                "producer_broker_rtt_avg_seconds",
                "Mean request round trip to the broker over librdkafka's last statistics window",
                |b| b.rtt_avg_seconds,
            ),
            (
                "producer_broker_rtt_p99_seconds",
                "99th percentile request round trip to the broker over the last window",
                |b| b.rtt_p99_seconds,
            ),
            (
                "producer_broker_requests_in_flight",
                "Requests sent to the broker and awaiting a response",
                |b| b.requests_in_flight as f64,
            ),
        ];
        let broker = |b: &crate::stats::BrokerStats| vec![("broker", b.name.clone())];
        for (name, help, figure) in gauges {
            let series = client
                .brokers
                .iter()
                .map(|b| (broker(b), ConstGauge::new(figure(b))));
            family(&mut e, name, help, MetricType::Gauge, series)?;
        }
        type Count = fn(&crate::stats::BrokerStats) -> u64;
        let counters: [(&str, &str, Count); 2] = [
            (
                "producer_broker_request_retries",
                "Requests to the broker that librdkafka retried",
                |b| b.retries,
            ),
            (
                "producer_broker_request_timeouts",
                "Requests to the broker that timed out",
                |b| b.request_timeouts,
            ),
        ];
        for (name, help, count) in counters {
            let series = client
                .brokers
                .iter()
                .map(|b| (broker(b), ConstCounter::new(count(b))));
            family(&mut e, name, help, MetricType::Counter, series)?;
        }
        Ok(())
    }
}
