//! The sink's Prometheus metrics and health, served by `--metrics-addr` (see
//! `txn_runtime::ops`). The names follow Prometheus' conventions (`sink_` prefix, `_total`
//! counters, base units); the README lists each with its Kafka Connect counterpart.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use txn_runtime::ops::Health;

/// A series' labels.
pub type Labels = Vec<(&'static str, String)>;

/// Counters, gauges and histograms of one sink (clones share them).
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    /// Messages of committed batches (accepted by the planner).
    pub consumed: Counter,
    /// Rows newly inserted.
    pub inserted: Counter,
    /// Redeliveries of rows already stored with the same content.
    pub duplicates: Counter,
    /// `tx_id`s already stored with different content (also dead letters).
    pub conflicts: Counter,
    /// Messages parked in the dead-letter table, by `class` (the `error_class`).
    pub dead_letters: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Messages below the stored offset, skipped as already stored.
    pub skipped: Counter,
    /// Committed batches (database transactions).
    pub batches: Counter,
    /// Database operations retried after a transient error, by `operation` (`write`, the
    /// batch transaction; `load_offsets`, the stored positions).
    pub retries: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Outages: retries exhausted on a transient error, consumption paused.
    pub outages: Counter,
    /// 1 while consumption is paused for an outage.
    pub paused: Gauge,
    /// Messages in Kafka not yet in the table, by topic and partition (log end minus the
    /// stored next offset; 0 once drained).
    pub lag: Family<Labels, Gauge>,
    /// Age in seconds of the oldest message not yet in the table, by topic and partition
    /// (0 once drained; absent until the sink has received one of its unwritten messages).
    pub lag_seconds: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The partitions whose lag is exported now.
    lag_partitions: Arc<std::sync::Mutex<Vec<Labels>>>,
    /// Messages per committed batch.
    pub batch_size: Histogram,
    /// Seconds to write a batch (its transaction, retries included).
    pub batch_write_seconds: Histogram,
    /// Seconds from each message's Kafka timestamp to the commit of its batch.
    pub end_to_end_seconds: Histogram,
}

impl Default for SinkMetrics {
    fn default() -> Self {
        SinkMetrics {
            consumed: Counter::default(),
            inserted: Counter::default(),
            duplicates: Counter::default(),
            conflicts: Counter::default(),
            dead_letters: Family::default(),
            skipped: Counter::default(),
            batches: Counter::default(),
            retries: Family::default(),
            outages: Counter::default(),
            paused: Gauge::default(),
            lag: Family::default(),
            lag_seconds: Family::default(),
            lag_partitions: Arc::default(),
            // 1 .. 65536 messages
            batch_size: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            // 1 ms .. 65 s
            batch_write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 1 ms .. 2.3 h: a backlog drained after a stop is hours old
            end_to_end_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 24)),
        }
    }
}

impl SinkMetrics {
    /// Sets the lag of each partition of `topic` in `lags`; partitions exported before and
    /// absent now (revoked) are dropped, and so is an age not known now.
    pub fn set_lag(&self, topic: &str, lags: &[crate::consumer::Lag]) {
        let labels = |p: i32| vec![("topic", topic.to_owned()), ("partition", p.to_string())];
        let now: Vec<_> = lags.iter().map(|l| labels(l.partition)).collect();
        let mut exported = self
            .lag_partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in exported.iter().filter(|l| !now.contains(l)) {
            self.lag.remove(gone);
            self.lag_seconds.remove(gone);
        }
        for (lag, l) in lags.iter().zip(&now) {
            self.lag.get_or_create(l).set(lag.messages);
            match lag.seconds {
                Some(age) => {
                    self.lag_seconds.get_or_create(l).set(age);
                }
                None => {
                    self.lag_seconds.remove(l);
                }
            }
        }
        *exported = now;
    }

    /// Observes, for each message of a batch committed at `now_ms` (milliseconds since the
    /// epoch), the time since its Kafka timestamp (never negative: clocks differ).
    pub fn committed(&self, messages: &[crate::message::Message], now_ms: i64) {
        for ts in messages.iter().filter_map(|m| m.timestamp_ms) {
            self.end_to_end_seconds
                .observe((now_ms - ts).max(0) as f64 / 1000.0);
        }
    }

    /// Counts a retried database operation.
    pub fn retried(&self, operation: &'static str) {
        self.retries
            .get_or_create(&vec![("operation", operation)])
            .inc();
    }

    /// Counts the dead letters of a committed batch under their classes.
    pub fn dead_lettered(&self, by_class: &[u64]) {
        for (class, &n) in crate::dead_letter::CLASSES.iter().zip(by_class) {
            if n > 0 {
                self.dead_letters
                    .get_or_create(&vec![("class", *class)])
                    .inc_by(n);
            }
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "sink_messages_consumed",
            "Messages of committed batches",
            self.consumed.clone(),
        );
        r.register(
            "sink_rows_inserted",
            "Rows newly inserted",
            self.inserted.clone(),
        );
        r.register(
            "sink_duplicates",
            "Redeliveries of rows already stored with the same content",
            self.duplicates.clone(),
        );
        r.register(
            "sink_conflicting_duplicates",
            "tx_ids already stored with different content (dead-lettered)",
            self.conflicts.clone(),
        );
        r.register(
            "sink_dead_letters",
            "Messages parked in the dead-letter table, by error_class",
            self.dead_letters.clone(),
        );
        // every class present from the start, so rate() and alerts see a 0 before the first
        for class in crate::dead_letter::CLASSES {
            self.dead_letters
                .get_or_create(&vec![("class", class)])
                .inc_by(0);
        }
        r.register(
            "sink_messages_skipped",
            "Messages below the stored offset, skipped as already stored",
            self.skipped.clone(),
        );
        r.register(
            "sink_batches",
            "Committed batches (database transactions)",
            self.batches.clone(),
        );
        r.register(
            "sink_retries",
            "Database operations retried after a transient error, by operation",
            self.retries.clone(),
        );
        for operation in ["write", "load_offsets"] {
            self.retries
                .get_or_create(&vec![("operation", operation)])
                .inc_by(0);
        }
        r.register(
            "sink_outages",
            "Database outages: retries exhausted, consumption paused until it is back",
            self.outages.clone(),
        );
        r.register(
            "sink_paused",
            "1 while consumption is paused for a database outage",
            self.paused.clone(),
        );
        r.register(
            "sink_consumer_lag_messages",
            "Messages in Kafka not yet in the table, by partition (0 once drained)",
            self.lag.clone(),
        );
        r.register(
            "sink_consumer_lag_seconds",
            "Age of the oldest message not yet in the table (its Kafka timestamp to now), by partition (0 once drained)",
            self.lag_seconds.clone(),
        );
        r.register(
            "sink_batch_size_messages",
            "Messages per committed batch",
            self.batch_size.clone(),
        );
        r.register(
            "sink_batch_write_seconds",
            "Seconds to write a batch, retries included",
            self.batch_write_seconds.clone(),
        );
        r.register(
            "sink_end_to_end_latency_seconds",
            "Seconds from each message's Kafka timestamp to the commit of its batch",
            self.end_to_end_seconds.clone(),
        );
    }
}

/// What the sink reports to its operators while it runs.
#[derive(Debug, Clone)]
pub struct Ops {
    /// Its metrics.
    pub metrics: SinkMetrics,
    /// Its liveness and readiness.
    pub health: Arc<Health>,
}

impl Ops {
    /// Metrics and health for a sink whose database operations each take up to
    /// `op_timeout` and are tried `retries + 1` times: the loop is stalled only past all
    /// of those (a write or an offsets load in progress does not beat) plus a margin for
    /// the backoff and the seeks.
    pub fn new(op_timeout: Duration, retries: u32) -> Ops {
        Ops {
            metrics: SinkMetrics::default(),
            health: Health::new(op_timeout * (retries + 2) + Duration::from_secs(60)),
        }
    }

    /// [`Ops::new`] for `config`'s timeouts and retries.
    pub fn for_config(config: &crate::SinkConfig) -> Ops {
        Ops::new(config.postgres.operation_timeout(), config.retry.retries)
    }
}
