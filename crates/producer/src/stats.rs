//! Delivery statistics in the manner of Kafka's own `ProducerPerformance`: records/s, MB/s,
//! average and maximum delivery latency per window, and latency percentiles over the run.
//!
//! Latency is measured from the moment a record is handed to librdkafka to its delivery
//! report. The send time travels with the record as its delivery opaque (microseconds
//! since the producer started), so nothing is allocated per message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Counters and the latency histogram, shared with the delivery callback.
#[derive(Debug)]
pub struct Stats {
    start: Instant,
    /// Messages handed to librdkafka (enqueued).
    pub sent: AtomicU64,
    /// Messages acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Messages that failed (timed out, rejected).
    pub failed: AtomicU64,
    /// Of those, messages the broker may have written (sent, but not acknowledged).
    pub possibly_persisted: AtomicU64,
    /// Payload bytes delivered.
    pub bytes: AtomicU64,
    /// Failures by [`FailReason`] (indexed by its position in [`FailReason::ALL`]).
    failed_by: [AtomicU64; FailReason::ALL.len()],
    /// Anomaly messages sent, by kind (indexed as `txn_model::anomaly::Kind::ALL`).
    anomalies: [AtomicU64; txn_model::anomaly::Kind::ALL.len()],
    /// Users the generator draws from (those added while it runs included).
    pub users: AtomicU64,
    /// Sum of the delivery latencies, in microseconds.
    latency_sum_us: AtomicU64,
    /// librdkafka's latest statistics that matter to an operator (with `--metrics-addr`).
    pub client: Mutex<ClientStats>,
    window: Mutex<Window>,
    /// Delivery latency of the whole run, in microseconds.
    histogram: Mutex<Histogram<u64>>,
}

/// Why a message was not delivered: a metric label, so a few stable classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No acknowledgement within the delivery timeout (`--delivery-timeout`).
    TimedOut,
    /// The topic or partition does not exist.
    UnknownTopic,
    /// The message exceeds the broker's or the topic's size limit.
    TooLarge,
    /// The principal may not write to the topic.
    NotAuthorized,
    /// Anything else (a fatal idempotence error, a broker rejection).
    Other,
}

impl FailReason {
    /// Every reason, in label order.
    pub const ALL: [FailReason; 5] = [
        FailReason::TimedOut,
        FailReason::UnknownTopic,
        FailReason::TooLarge,
        FailReason::NotAuthorized,
        FailReason::Other,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            FailReason::TimedOut => "timed_out",
            FailReason::UnknownTopic => "unknown_topic",
            FailReason::TooLarge => "too_large",
            FailReason::NotAuthorized => "not_authorized",
            FailReason::Other => "other",
        }
    }

    /// The reason of a delivery error code.
    pub fn of(code: Option<rdkafka::types::RDKafkaErrorCode>) -> FailReason {
        use rdkafka::types::RDKafkaErrorCode as C;
        match code {
            Some(C::MessageTimedOut | C::RequestTimedOut) => FailReason::TimedOut,
            Some(C::UnknownTopic | C::UnknownTopicOrPartition | C::UnknownPartition) => {
                FailReason::UnknownTopic
            }
            Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge) => FailReason::TooLarge,
            Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => {
                FailReason::NotAuthorized
            }
            _ => FailReason::Other,
        }
    }

    fn index(self) -> usize {
        FailReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// What librdkafka's statistics say that an operator needs (refreshed every second with
/// `--metrics-addr`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientStats {
    /// Messages waiting in librdkafka's queues (not yet acknowledged).
    pub queue_messages: u64,
    /// Bytes of those.
    pub queue_bytes: u64,
    /// One entry per broker the client talks to.
    pub brokers: Vec<BrokerStats>,
}

/// One broker's connection, from librdkafka's statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerStats {
    /// `host:port/id`, as librdkafka names it.
    pub name: String,
    /// Whether the connection is up.
    pub up: bool,
    /// Round trip of its requests over the last window, mean and 99th percentile, seconds.
    pub rtt_avg_seconds: f64,
    /// See `rtt_avg_seconds`.
    pub rtt_p99_seconds: f64,
    /// Requests sent and awaiting a response.
    pub requests_in_flight: i64,
    /// Requests retried.
    pub retries: u64,
    /// Requests that timed out.
    pub request_timeouts: u64,
}

impl ClientStats {
    /// The figures of librdkafka's `statistics` (learned brokers only: the bootstrap
    /// entries duplicate them).
    pub fn from_statistics(statistics: &rdkafka::Statistics) -> ClientStats {
        let mut brokers: Vec<BrokerStats> = statistics
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0)
            .map(|b| {
                let rtt = b.rtt.clone().unwrap_or_default();
                BrokerStats {
                    name: b.name.clone(),
                    up: b.state == "UP",
                    rtt_avg_seconds: rtt.avg.max(0) as f64 / 1e6,
                    rtt_p99_seconds: rtt.p99.max(0) as f64 / 1e6,
                    requests_in_flight: b.waitresp_cnt,
                    retries: b.txretries,
                    request_timeouts: b.req_timeouts,
                }
            })
            .collect();
        brokers.sort_by(|a, b| a.name.cmp(&b.name));
        ClientStats {
            queue_messages: statistics.msg_cnt,
            queue_bytes: statistics.msg_size,
            brokers,
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    count: u64,
    sum_us: u64,
    max_us: u64,
}

/// Delivery latency percentiles of a run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    /// Mean, in milliseconds.
    pub avg_ms: f64,
    /// Maximum, in milliseconds.
    pub max_ms: f64,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, in milliseconds.
    pub p999_ms: f64,
}

/// One progress window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReport {
    /// Deliveries in the window.
    pub count: u64,
    /// Mean latency in the window, in milliseconds.
    pub avg_ms: f64,
    /// Maximum latency in the window, in milliseconds.
    pub max_ms: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Empty statistics; latencies are measured from now on.
    pub fn new() -> Stats {
        Stats::starting_at(Instant::now())
    }

    fn starting_at(start: Instant) -> Stats {
        Stats {
            sent: AtomicU64::new(0),
            start,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            possibly_persisted: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed_by: Default::default(),
            anomalies: Default::default(),
            users: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            client: Mutex::new(ClientStats::default()),
            window: Mutex::new(Window::default()),
            // 1 µs to 1 hour at three significant digits: a few tens of kilobytes
            histogram: Mutex::new(
                // Invariant: constant, valid bounds.
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
        }
    }

    /// The opaque to send with a record: now, in microseconds since start.
    pub fn stamp(&self) -> usize {
        self.start.elapsed().as_micros() as usize
    }

    /// Records a delivery of `bytes` sent at `stamp`.
    pub fn delivered(&self, stamp: usize, bytes: usize) {
        let latency_us = (self.start.elapsed().as_micros() as u64)
            .saturating_sub(stamp as u64)
            .max(1);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(latency_us, Ordering::Relaxed);
        {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            w.count += 1;
            w.sum_us += latency_us;
            w.max_us = w.max_us.max(latency_us);
        }
        let mut h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(latency_us);
    }

    /// Records a failure for `reason`; `possibly_persisted` when the broker may have
    /// written it.
    pub fn failed(&self, reason: FailReason, possibly_persisted: bool) {
        self.failed_by[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        if possibly_persisted {
            self.possibly_persisted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the current window (and starts a new one).
    pub fn take_window(&self) -> WindowReport {
        let w = std::mem::take(&mut *self.window.lock().unwrap_or_else(|e| e.into_inner()));
        WindowReport {
            count: w.count,
            avg_ms: if w.count == 0 {
                0.0
            } else {
                w.sum_us as f64 / w.count as f64 / 1000.0
            },
            max_ms: w.max_us as f64 / 1000.0,
        }
    }

    /// Counts one anomaly message sent.
    pub fn anomaly(&self, kind: txn_model::anomaly::Kind) {
        self.anomalies[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Anomaly messages sent so far by kind, every kind listed.
    pub fn anomalies(&self) -> Vec<(txn_model::anomaly::Kind, u64)> {
        txn_model::anomaly::Kind::ALL
            .iter()
            .map(|k| (*k, self.anomalies[*k as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// Failures so far by reason, every reason listed.
    pub fn failed_by_reason(&self) -> Vec<(FailReason, u64)> {
        FailReason::ALL
            .iter()
            .map(|r| (*r, self.failed_by[r.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// The delivery latency histogram in Prometheus' form for the upper `bounds` (seconds,
    /// ascending): the sum in seconds, the count, and the count of each bucket (not
    /// cumulative; the last bucket is +Inf). Exact to the histogram's three significant
    /// digits.
    pub fn latency_buckets(&self, bounds: &[f64]) -> (f64, u64, Vec<(f64, u64)>) {
        let h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        let mut buckets: Vec<(f64, u64)> = bounds
            .iter()
            .map(|b| (*b, 0))
            .chain([(f64::INFINITY, 0)])
            .collect();
        for v in h.iter_recorded() {
            let seconds = v.value_iterated_to() as f64 / 1e6;
            let i = buckets
                .iter()
                .position(|(bound, _)| seconds <= *bound)
                .unwrap_or(buckets.len() - 1);
            buckets[i].1 += v.count_at_value();
        }
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, h.len(), buckets)
    }

    /// Latency over the whole run.
    pub fn latency(&self) -> Latency {
        let h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            avg_ms: h.mean() / 1000.0,
            max_ms: ms(h.max()),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
        }
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_percentiles() {
        // started 10 s ago, so that stamps up to 1 s in the past exist
        let s = Stats::starting_at(Instant::now() - Duration::from_secs(10));
        let now = s.stamp();
        // fake send stamps 1..=1000 ms in the past
        for ms in 1..=1000usize {
            s.delivered(now.saturating_sub(ms * 1000), 100);
        }
        s.failed(FailReason::TimedOut, true);
        s.failed(FailReason::UnknownTopic, false);
        let w = s.take_window();
        assert_eq!(w.count, 1000);
        assert!((w.avg_ms - 500.5).abs() < 5.0, "{w:?}");
        assert!((w.max_ms - 1000.0).abs() < 5.0, "{w:?}");
        assert_eq!(s.take_window().count, 0, "a new window starts empty");
        let l = s.latency();
        assert!((l.p50_ms - 500.0).abs() < 5.0, "{l:?}");
        assert!((l.p99_ms - 990.0).abs() < 5.0, "{l:?}");
        assert!(l.p999_ms >= l.p99_ms && l.p99_ms >= l.p95_ms && l.p95_ms >= l.p50_ms);
        assert_eq!(s.delivered.load(Ordering::Relaxed), 1000);
        assert_eq!(s.failed.load(Ordering::Relaxed), 2);
        assert_eq!(s.possibly_persisted.load(Ordering::Relaxed), 1);
        assert_eq!(s.bytes.load(Ordering::Relaxed), 100_000);
        let by = s.failed_by_reason();
        assert_eq!(by.len(), FailReason::ALL.len());
        assert_eq!(by[0], (FailReason::TimedOut, 1));
        assert_eq!(by[1], (FailReason::UnknownTopic, 1));
        assert!(by[2..].iter().all(|(_, n)| *n == 0), "{by:?}");
        // 1000 latencies of 1..=1000 ms: half at or below 0.5 s, all at or below 1.024 s
        let (sum, count, buckets) = s.latency_buckets(&[0.25, 0.5, 1.024]);
        assert_eq!(count, 1000);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 1000);
        assert!((sum - 500.5).abs() < 5.0, "{sum}");
        assert!((buckets[0].1 as i64 - 250).abs() <= 2, "{buckets:?}");
        assert!((buckets[1].1 as i64 - 250).abs() <= 2, "{buckets:?}");
        assert_eq!(buckets[3], (f64::INFINITY, 0));
    }

    #[test]
    fn failure_reasons_from_librdkafka_codes() {
        use rdkafka::types::RDKafkaErrorCode as C;
        assert_eq!(
            FailReason::of(Some(C::MessageTimedOut)),
            FailReason::TimedOut
        );
        assert_eq!(
            FailReason::of(Some(C::UnknownTopicOrPartition)),
            FailReason::UnknownTopic
        );
        assert_eq!(
            FailReason::of(Some(C::MessageSizeTooLarge)),
            FailReason::TooLarge
        );
        assert_eq!(
            FailReason::of(Some(C::TopicAuthorizationFailed)),
            FailReason::NotAuthorized
        );
        assert_eq!(FailReason::of(Some(C::Fatal)), FailReason::Other);
        assert_eq!(FailReason::of(None), FailReason::Other);
        let labels: std::collections::HashSet<_> =
            FailReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), FailReason::ALL.len());
    }
}
