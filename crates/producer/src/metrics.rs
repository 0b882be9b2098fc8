//! The producer's Prometheus metrics, served by `--metrics-addr`: read from the delivery
//! statistics at scrape time (a collector), so the hot path pays nothing for them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
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
        counter(
            &mut e,
            "producer_messages_failed",
            "Messages whose delivery failed (timed out, rejected)",
            failed,
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
        let in_flight = ConstGauge::new(sent.saturating_sub(delivered + failed) as i64);
        let m = e.encode_descriptor(
            "producer_messages_in_flight",
            "Messages sent and not yet acknowledged or failed",
            None,
            in_flight.metric_type(),
        )?;
        in_flight.encode(m)
    }
}
