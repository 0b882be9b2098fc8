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
    /// Outages: retries exhausted on a transient error, consumption paused.
    pub outages: Counter,
    /// 1 while consumption is paused for an outage.
    pub paused: Gauge,
    /// Messages in Kafka not yet in the table, by topic and partition (log end minus the
    /// stored next offset; 0 once drained).
    pub lag: Family<Labels, Gauge>,
    /// The partitions whose lag is exported now.
    lag_partitions: Arc<std::sync::Mutex<Vec<Labels>>>,
    /// Messages per committed batch.
    pub batch_size: Histogram,
    /// Seconds to write a batch (its transaction, retries included).
    pub batch_write_seconds: Histogram,
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
            outages: Counter::default(),
            paused: Gauge::default(),
            lag: Family::default(),
            lag_partitions: Arc::default(),
            // 1 .. 65536 messages
            batch_size: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            // 1 ms .. 65 s
            batch_write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        }
    }
}

impl SinkMetrics {
    /// Sets the lag of each `(partition, messages)` of `topic`; partitions exported before
    /// and absent now (revoked) are dropped.
    pub fn set_lag(&self, topic: &str, lags: &[(i32, i64)]) {
        let labels = |p: i32| vec![("topic", topic.to_owned()), ("partition", p.to_string())];
        let now: Vec<_> = lags.iter().map(|(p, _)| labels(*p)).collect();
        let mut exported = self
            .lag_partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in exported.iter().filter(|l| !now.contains(l)) {
            self.lag.remove(gone);
        }
        for (&(_, n), l) in lags.iter().zip(&now) {
            self.lag.get_or_create(l).set(n);
        }
        *exported = now;
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
            "sink_batch_size_messages",
            "Messages per committed batch",
            self.batch_size.clone(),
        );
        r.register(
            "sink_batch_write_seconds",
            "Seconds to write a batch, retries included",
            self.batch_write_seconds.clone(),
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
