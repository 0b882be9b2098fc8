//! The sink's effective configuration, independent of how it was given (CLI, env, tests).

use std::fmt;
use std::time::Duration;

use crate::retry::RetryPolicy;

/// Where PostgreSQL is and how to log in.
#[derive(Clone)]
pub struct PgConfig {
    /// Host name or address (default `localhost`).
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// Database (default `kafka_sink`).
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (never logged).
    pub password: String,
    /// Longest wait for a connection (also the start-up check's limit).
    pub connect_timeout: Duration,
    /// Connections in the pool.
    pub pool_size: usize,
    /// `application_name` of the sink's sessions (shows in `pg_stat_activity`).
    pub application_name: String,
    /// The server's `statement_timeout` for the sink's sessions (default 30 s). A whole
    /// operation (a batch's transaction, a probe) is also bounded on the client side, by
    /// [`PgConfig::operation_timeout`], so a silently dead network cannot hang the sink.
    pub statement_timeout: Duration,
}

impl PgConfig {
    /// The client-side deadline of one database operation: twice the statement timeout
    /// (a batch is several statements), at least 1 s. Past it the connection is dropped
    /// and the error is transient (retried, then the outage path).
    pub fn operation_timeout(&self) -> Duration {
        (self.statement_timeout * 2).max(Duration::from_secs(1))
    }
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            host: "localhost".into(),
            port: 5432,
            database: "kafka_sink".into(),
            user: "kafka_sink".into(),
            password: "kafka_sink".into(),
            connect_timeout: Duration::from_secs(10),
            pool_size: 2,
            application_name: "txn-sink".into(),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

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
    pub kafka_options: Vec<(String, String)>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic: "transactions".into(),
            group_id: "transactions-sink".into(),
            batch_size: 5000,
            buffer_bytes: 64 << 20,
            table: "transactions_sink".into(),
            postgres: PgConfig::default(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(20),
            probe_min: Duration::from_millis(500),
            probe_max: Duration::from_secs(2),
            kafka_options: Vec::new(),
        }
    }
}
