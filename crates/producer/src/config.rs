//! The producer's effective configuration, independent of how it was given (CLI, env, tests).

use std::path::PathBuf;
use std::time::Duration;

/// How often to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// One message every so often (the default: every 10 seconds).
    Interval(Duration),
    /// A target number of messages per second.
    Rate(f64),
    /// As fast as the broker takes them.
    Unlimited,
}

/// How the gaps between messages are spread around the pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Arrivals {
    /// Every gap the same (the default).
    #[default]
    Fixed,
    /// Exponential gaps of the same mean: a Poisson stream, as independent customers make.
    Poisson,
}

/// The kind of UUID the `tx_id`s are. Time-ordered by default: the sink's primary key
/// then takes each new id at its right edge, and the drain rate stays flat as the table
/// grows, where random ids halve it by 9M rows (`bench/curve.sh`, docs/SCALING.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TxIdKind {
    /// Random (UUIDv4), like most generators make them.
    V4,
    /// Time-ordered (UUIDv7): the default.
    #[default]
    V7,
}

impl From<TxIdKind> for txn_model::TxIds {
    fn from(k: TxIdKind) -> txn_model::TxIds {
        match k {
            TxIdKind::V4 => txn_model::TxIds::V4,
            TxIdKind::V7 => txn_model::TxIds::V7,
        }
    }
}

/// A backfill: transactions of past (or future) days on a simulated clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackfillRange {
    /// First day (from 00:00 UTC).
    pub from: chrono::NaiveDate,
    /// Last day (to its end).
    pub to: chrono::NaiveDate,
    /// The simulated clock's mean rate (transactions per second) when no count is given.
    pub per_second: Option<f64>,
}

/// The codec of the record batches the producer writes (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip: small, slow.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4: fast, the default.
    #[default]
    Lz4,
    /// Zstandard: smallest at a similar speed; needs brokers 2.1 or newer.
    Zstd,
}

impl Compression {
    /// librdkafka's name of the codec.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Compression as clap::ValueEnum>::from_str(s, true)
    }
}

/// Everything `run` needs. Build it with `ProducerConfig { topic, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Topic to publish to (default `transactions`).
    pub topic: String,
    /// A CSV file or a directory of monthly `*.csv` files holding the `user_id` column.
    pub users_path: PathBuf,
    /// Publishing pace (default one every 10 s).
    pub pace: Pace,
    /// Fixed or Poisson gaps around the pace.
    pub arrivals: Arrivals,
    /// Live, how often to look for new users files in the users directory (`None`: never).
    pub users_rescan: Option<Duration>,
    /// Live, a topic of user registration events whose users join as they come.
    pub registrations_topic: Option<String>,
    /// A backfill instead of real time (then `pace` is unlimited).
    pub backfill: Option<BackfillRange>,
    /// Each kind of anomaly's rate (all 0: none).
    pub anomalies: txn_model::anomaly::Rates,
    /// Stop after sending this many messages (default: run until stopped); their delivery
    /// reports are awaited before the run ends.
    pub count: Option<u64>,
    /// Seed of the generator; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Random or time-ordered `tx_id`s.
    pub tx_ids: TxIdKind,
    /// Share of a user's transactions paid in a currency other than its country's.
    pub foreign_share: f64,
    /// Write JSON lines to stdout instead of Kafka.
    pub dry_run: bool,
    /// How long the broker has to acknowledge a message before it counts as failed.
    pub delivery_timeout: Duration,
    /// How long to wait for the broker at start-up before giving up with an error.
    pub connect_timeout: Duration,
    /// Upper bound on messages sent but not yet acknowledged.
    pub max_in_flight: usize,
    /// Codec of the record batches (default LZ4).
    pub compression: Compression,
    /// Extra librdkafka properties (`key=value`), applied last.
    pub kafka_options: txn_runtime::kafka::KafkaOptions,
    /// Where to serve /metrics, /healthz and /readyz (`None`: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Show a progress bar (delivered of `count`, rate, ETA) instead of the periodic
    /// lines: a `--count` run whose text log goes to a terminal.
    pub progress_bar: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic: "transactions".into(),
            users_path: PathBuf::from("data/users"),
            pace: Pace::Interval(Duration::from_secs(10)),
            arrivals: Arrivals::default(),
            users_rescan: Some(Duration::from_secs(10)),
            registrations_topic: None,
            backfill: None,
            anomalies: txn_model::anomaly::Rates::default(),
            count: None,
            seed: None,
            tx_ids: TxIdKind::default(),
            foreign_share: txn_model::generator::DEFAULT_FOREIGN_SHARE,
            dry_run: false,
            delivery_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            max_in_flight: 20_000,
            compression: Compression::default(),
            kafka_options: txn_runtime::kafka::KafkaOptions::default(),
            metrics_addr: None,
            progress_bar: false,
        }
    }
}

impl ProducerConfig {
    /// Longest time between two turns of the send loop while it is alive: three pauses
    /// of the pace, at least a minute (a full local queue waits for the broker).
    pub fn stall_after(&self) -> Duration {
        match self.pace {
            Pace::Interval(d) => (d * 3).max(Duration::from_secs(60)),
            _ => Duration::from_secs(60),
        }
    }

    /// The most messages to send: `count` live; none in a backfill, whose schedule makes
    /// `count` ordinary transactions and ends by itself (anomalies add messages to them).
    pub fn message_limit(&self) -> Option<u64> {
        match self.backfill {
            Some(_) => None,
            None => self.count,
        }
    }

    /// Whether each delivery is worth its own log line (slow paces) or only counted.
    pub fn logs_each_delivery(&self) -> bool {
        match self.pace {
            Pace::Interval(d) => d >= Duration::from_millis(500),
            Pace::Rate(r) => r <= 2.0,
            Pace::Unlimited => false,
        }
    }
}
