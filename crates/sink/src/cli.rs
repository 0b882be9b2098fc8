//! Command-line flags, each with an environment twin (`.env` is loaded first by `main`).

use std::time::Duration;

use clap::Parser;

use crate::config::{PgConfig, SinkConfig};

/// Consumes transactions from Kafka into PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "sink", version, about)]
pub struct Args {
    /// What to do (default: consume).
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub kafka: txn_runtime::kafka::KafkaArgs,

    #[command(flatten)]
    pub log: txn_runtime::LogArgs,

    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g.
    /// 127.0.0.1:9187 [default: off].
    #[arg(long, env = "SINK_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Consumer group; its committed offsets are where a restart resumes.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "transactions-sink")]
    pub group_id: String,

    /// Most messages written in one database transaction.
    #[arg(long, env = "SINK_BATCH_SIZE", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// Database connections a batch is written over at once, each committing the rows
    /// and offsets of some partitions in its own transaction (0: one per core, at most
    /// 8; never more than the batch's partitions).
    #[arg(long, env = "SINK_WRITERS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub writers: u16,

    /// MiB the sink's own buffers may hold: half for the batch in hand, half for the
    /// messages read ahead meanwhile (librdkafka's fetch queue comes on top).
    #[arg(long, env = "SINK_BUFFER_MB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=1_048_576))]
    pub buffer_mb: u32,

    /// Table to write (schema.table allowed); created when missing.
    #[arg(long, env = "SINK_TABLE", default_value = "transactions_sink")]
    pub table: String,

    #[command(flatten)]
    pub postgres: txn_runtime::postgres::PgArgs,

    /// Retries of a transient database error before the sink stops (with backoff).
    #[arg(long, env = "SINK_RETRIES", default_value_t = 3)]
    pub retries: u32,

    /// Seconds the batch in hand may take to be written after a stop signal (keep it
    /// below the consumer session timeout, 45 s by default).
    #[arg(long, env = "SINK_DRAIN_TIMEOUT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub drain_timeout: u64,

    /// PostgreSQL statement_timeout of the sink's sessions, in seconds; a batch's whole
    /// transaction is also bounded client-side by twice this, so a dead network or a hung
    /// server becomes a retry (then the outage path) in bounded time.
    #[arg(long, env = "SINK_STATEMENT_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub statement_timeout: u64,

    /// Extra librdkafka property, KEY=VALUE (repeatable; env: comma-separated).
    #[arg(short = 'K', long = "kafka-option", env = "SINK_KAFKA_OPTIONS", value_delimiter = ',', hide_env_values = true, value_parser = txn_runtime::key_value)]
    pub kafka_options: Vec<(String, String)>,
}

/// Subcommands of the sink.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Re-decodes and inserts dead letters after a fix (a relaxed constraint, a corrected
    /// payload); those that land are marked replayed, the others get one more attempt.
    ReplayDeadLetters {
        /// Replay only these dead-letter ids (repeatable; default: every one not replayed).
        #[arg(long = "id")]
        ids: Vec<i64>,
        /// Replay only dead letters of this error class (`rejected`, `schema`, …).
        #[arg(long)]
        error_class: Option<String>,
    },
    /// Audits the topic against the table: every message the group consumed (below its
    /// stored offsets) must have its row with the same content, or be parked in the dead
    /// letters; rows no message accounts for count as extra. Read-only; exits 1 when
    /// topic and table differ.
    Reconcile {
        /// Also print each message the table does not account for.
        #[arg(long)]
        details: bool,
    },
    /// Checks Kafka (reachable, the topic, the group and its lag) and PostgreSQL
    /// (reachable, TLS, the tables' columns, keys and privileges, pending dead letters)
    /// with the sink's settings: one line per check with the fix for any failure. Exits 1
    /// when a check fails (warnings do not), so scripts can gate on it. Read-only.
    Doctor,
    /// Sets the group's stored positions in the topic (every partition stored, or those
    /// given) to an offset, the start by default: after the topic was deleted and
    /// recreated, or to read it again. Stop the sinks of the group first. Rows already
    /// stored are not written twice (`tx_id` is the key); needs UPDATE on the offsets table.
    ResetOffsets {
        /// Reset only these partitions (repeatable; default: every one stored).
        #[arg(long = "partition")]
        partitions: Vec<i32>,
        /// The next offset to read.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        to_offset: i64,
    },
}

impl Args {
    /// The effective configuration.
    ///
    /// # Errors
    /// PostgreSQL settings that cannot be used (see [`txn_runtime::postgres::PgArgs::resolve`]),
    /// Kafka security settings that cannot work.
    pub fn into_config(self) -> Result<SinkConfig, txn_runtime::secret::ConfigError> {
        // the subcommand is read before the conversion
        let defaults = SinkConfig::default();
        let postgres = self.postgres.resolve()?;
        let security = self.kafka.security_options(&self.kafka_options)?;
        Ok(SinkConfig {
            bootstrap_servers: self.kafka.bootstrap_servers,
            topic: self.kafka.topic,
            group_id: self.group_id,
            batch_size: self.batch_size as usize,
            writers: match self.writers {
                0 => crate::config::default_writers(),
                n => usize::from(n),
            },
            buffer_bytes: (self.buffer_mb as usize) << 20,
            table: self.table,
            postgres: PgConfig {
                statement_timeout: Duration::from_secs(self.statement_timeout),
                ..postgres
            },
            retry: crate::retry::RetryPolicy {
                retries: self.retries,
                ..defaults.retry
            },
            drain_timeout: Duration::from_secs(self.drain_timeout),
            kafka_options: security.then(self.kafka_options),
            metrics_addr: self.metrics_addr,
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_config_and_password_is_redacted() {
        let args = Args::try_parse_from([
            "sink",
            "--topic",
            "t1",
            "--batch-size",
            "50",
            "--postgres-password",
            "s3cret",
            "-K",
            "fetch.min.bytes=1",
        ])
        .unwrap();
        let c = args.into_config().unwrap();
        assert_eq!(c.topic, "t1");
        assert_eq!(c.batch_size, 50);
        assert_eq!(c.retry.retries, 3);
        assert_eq!(
            c.kafka_options.0,
            vec![("fetch.min.bytes".into(), "1".into())]
        );
        assert_eq!(c.postgres.password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Args::try_parse_from(["sink", "--batch-size", "0"]).is_err());
        let reset = Args::try_parse_from([
            "sink",
            "--group-id",
            "g",
            "reset-offsets",
            "--partition",
            "2",
            "--partition",
            "0",
            "--to-offset",
            "5",
        ])
        .unwrap();
        assert!(matches!(
            reset.command,
            Some(Command::ResetOffsets { ref partitions, to_offset: 5 }) if partitions == &[2, 0]
        ));
        assert!(Args::try_parse_from(["sink", "reset-offsets", "--to-offset", "-1"]).is_err());
    }
}
