//! The sink's effective configuration, independent of how it was given (CLI, env, tests).

use std::time::Duration;

use crate::retry::RetryPolicy;

pub use txn_runtime::postgres::PgConfig;

/// Everything `run` needs. Build it with `SinkConfig { topic, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Topic to consume (default `transactions`).
    pub topic: String,
    /// Consumer group (default `transactions-sink`); offsets are committed under it.
    pub group_id: String,
    /// Most messages written in one database transaction (default 5000). A batch is
    /// whatever has arrived, up to this size: a lone message is written at once.
    pub batch_size: usize,
    /// Connections a batch is written over at once (by partition; see `--writers`).
    pub writers: usize,
    /// Bytes the sink's own buffers may hold (default 64 MiB): half for the batch in hand,
    /// half for the messages read ahead while it is written. Whichever of this and
    /// `batch_size` is reached first ends a batch (a single larger message goes alone).
    /// librdkafka's fetch queue (`queued.max.messages.kbytes`) comes on top.
    pub buffer_bytes: usize,
    /// Table to write (default `transactions_sink`; `schema.table` allowed).
    pub table: String,
    /// PostgreSQL connection.
    pub postgres: PgConfig,
    /// Retries of transient database errors.
    pub retry: RetryPolicy,
    /// How long to wait for the broker at start-up before giving up with an error.
    pub connect_timeout: Duration,
    /// After a stop signal, how long the batch in hand may take to be written (default
    /// 20 s: below the consumer session timeout of 45 s, so the group does not evict us).
    pub drain_timeout: Duration,
    /// First wait between database probes during an outage (default 500 ms); doubles.
    pub probe_min: Duration,
    /// Longest wait between database probes during an outage (default 2 s: a probe is
    /// one `SELECT 1`, and the sink resumes at most this long after PostgreSQL is back).
    pub probe_max: Duration,
    /// Extra librdkafka properties (`key=value`), applied last.
    pub kafka_options: txn_runtime::kafka::KafkaOptions,
    /// Where to serve /metrics, /healthz and /readyz (`None`: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic: "transactions".into(),
            group_id: "transactions-sink".into(),
            batch_size: 5000,
            writers: default_writers(),
            buffer_bytes: 64 << 20,
            table: "transactions_sink".into(),
            postgres: PgConfig::default(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(20),
            probe_min: Duration::from_millis(500),
            probe_max: Duration::from_secs(2),
            kafka_options: txn_runtime::kafka::KafkaOptions::default(),
            metrics_addr: None,
        }
    }
}

/// One writer per core, at most 8: past the cores, more connections only queue on them.
pub fn default_writers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(8)
}
