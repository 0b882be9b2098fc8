//! Command-line flags, each with an environment twin (`.env` is loaded first by `main`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{Arrivals, BackfillRange, Compression, Pace, ProducerConfig, TxIdKind};

/// Publishes realistic fake financial transactions to Kafka.
#[derive(Debug, Parser)]
#[command(
    name = "producer",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Instead of publishing: a tool (`producer users generate`).
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub kafka: txn_runtime::kafka::KafkaArgs,

    #[command(flatten)]
    pub log: txn_runtime::LogArgs,

    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g.
    /// 127.0.0.1:9188 [default: off].
    #[arg(long, env = "PRODUCER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// A users CSV file, or a directory of monthly *.csv files, with a user_id column.
    #[arg(long, env = "USERS_CSV_PATH", default_value = "data/users")]
    pub users: PathBuf,

    /// Seconds between two looks at the users directory for new monthly files (or files
    /// that grew), whose users then join without a restart; 0: never (live runs only).
    #[arg(long, env = "PRODUCER_USERS_RESCAN_SECS", default_value_t = 10.0, value_parser = rescan_secs)]
    pub users_rescan: f64,

    /// A topic of user registration events (JSON: user_id, registration_date, country, as
    /// the users files' columns), read from its beginning; its users join as they
    /// register (live runs only; a backfill or a dry run does not read it) [default: off].
    #[arg(long, env = "PRODUCER_REGISTRATIONS_TOPIC")]
    pub registrations_topic: Option<String>,

    /// Seconds between two messages (ignored when --rate is given).
    #[arg(long, env = "PRODUCER_INTERVAL_SECS", default_value_t = 10.0, value_parser = positive_secs)]
    pub interval: f64,

    /// Messages per second; 0 means as fast as the broker takes them. Overrides --interval.
    #[arg(long, env = "PRODUCER_RATE", value_parser = non_negative)]
    pub rate: Option<f64>,

    /// Gaps between messages, live: all equal (fixed) or exponential with the same mean
    /// (poisson, as independent customers arrive). A backfill's times are always random.
    #[arg(long, env = "PRODUCER_ARRIVALS", value_enum, default_value_t = Arrivals::Fixed)]
    pub arrivals: Arrivals,

    /// Backfill from this day (YYYY-MM-DD, 00:00 UTC): historical transactions on a
    /// simulated clock, as fast as Kafka takes them, until the end of --to. With --count N,
    /// N transactions spread over the range (anomalies add their messages to them);
    /// otherwise the pace (--rate, --interval) is the simulated clock's mean rate. Needs
    /// --to.
    #[arg(long, env = "PRODUCER_FROM", value_parser = txn_model::backfill::parse_day, requires = "to")]
    pub from: Option<chrono::NaiveDate>,

    /// Last day of a backfill (YYYY-MM-DD, included). Needs --from.
    #[arg(long, env = "PRODUCER_TO", value_parser = txn_model::backfill::parse_day, requires = "from")]
    pub to: Option<chrono::NaiveDate>,

    /// Labelled anomalies, KIND=RATE (repeatable; env: comma-separated): the chance, from
    /// 0 to 1, that a transaction starts one. Kinds: card_testing, account_takeover,
    /// velocity, late, duplicate. Labelled in Kafka headers: anomaly, anomaly_episode and
    /// anomaly_delay_ms. Off by default.
    #[arg(long = "anomaly", env = "PRODUCER_ANOMALIES", value_delimiter = ',', value_parser = anomaly)]
    pub anomalies: Vec<(txn_model::anomaly::Kind, f64)>,

    /// Stop after sending this many messages, then wait for their delivery reports (default:
    /// run until Ctrl-C). The final report says how many were delivered and how many failed.
    /// In a backfill: this many transactions over the range (see --from).
    #[arg(long, env = "PRODUCER_COUNT")]
    pub count: Option<u64>,

    /// Seed of the generator: the same seed and users give the same transactions, except
    /// timestamps (and so the time part of v7 tx_ids: use --tx-ids v4 for ids that repeat).
    #[arg(long, env = "PRODUCER_SEED")]
    pub seed: Option<u64>,

    /// Kind of UUID of the tx_ids: v7 (time-ordered: the sink's primary key stays cheap as
    /// the table grows; see docs/SCALING.md) or v4 (random).
    #[arg(long, env = "PRODUCER_TX_IDS", value_enum, default_value_t = TxIdKind::V7)]
    pub tx_ids: TxIdKind,

    /// Share (0 to 1) of a user's transactions paid in a currency other than the one of
    /// the user's country (users files with a country column; see README).
    #[arg(long, env = "PRODUCER_FOREIGN_SHARE", default_value_t = txn_model::generator::DEFAULT_FOREIGN_SHARE, value_parser = share)]
    pub foreign_share: f64,

    /// Print JSON lines to stdout instead of publishing (no Kafka needed).
    #[arg(long, env = "PRODUCER_DRY_RUN")]
    pub dry_run: bool,

    /// Seconds the broker has to acknowledge a message before it counts as failed.
    #[arg(long, env = "PRODUCER_DELIVERY_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub delivery_timeout: u64,

    /// Most messages sent but not yet acknowledged: bounds the producer's memory
    /// (about 1 KB each); sending waits while this many are in flight.
    #[arg(long, env = "PRODUCER_MAX_IN_FLIGHT", default_value_t = ProducerConfig::default().max_in_flight, value_parser = in_flight)]
    pub max_in_flight: usize,

    /// Codec of the record batches written to Kafka (every codec is built in; the sink
    /// reads them all).
    #[arg(long, env = "PRODUCER_COMPRESSION", value_enum, default_value_t = Compression::Lz4)]
    pub compression: Compression,

    /// Extra librdkafka property, KEY=VALUE (repeatable; env: comma-separated).
    #[arg(short = 'K', long = "kafka-option", env = "PRODUCER_KAFKA_OPTIONS", value_delimiter = ',', hide_env_values = true, value_parser = txn_runtime::key_value)]
    pub kafka_options: Vec<(String, String)>,
}

/// The producer's tools.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The batch side's user-registration files.
    #[command(subcommand)]
    Users(UsersCommand),
}

/// `producer users …`.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Writes monthly user-registration CSV files (users_YYYY_MM.csv: user_id, first_name,
    /// last_name, email, registration_date, country), the files the producer reads.
    Generate(GenerateUsers),
}

/// `producer users generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateUsers {
    /// First month, YYYY-MM.
    #[arg(long, env = "USERS_FROM", value_parser = txn_model::registrations::parse_month)]
    pub from: chrono::NaiveDate,
    /// Last month, YYYY-MM (included).
    #[arg(long, env = "USERS_TO", value_parser = txn_model::registrations::parse_month)]
    pub to: chrono::NaiveDate,
    /// Users who register in each month.
    #[arg(long, env = "USERS_PER_MONTH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub per_month: u32,
    /// Directory to write the files to (created when missing).
    #[arg(long, env = "USERS_OUT", default_value = "data/users")]
    pub out: PathBuf,
    /// Seed: the same seed gives the same file for a month, whatever the range.
    #[arg(long, env = "USERS_SEED")]
    pub seed: Option<u64>,
    /// Replace files that exist already (they are refused otherwise).
    #[arg(long, env = "USERS_FORCE")]
    pub force: bool,
}

impl GenerateUsers {
    /// Writes the files; returns them with their row counts.
    ///
    /// # Errors
    /// A bad range, a file that exists (without `--force`), or a failed write.
    pub fn run(
        &self,
    ) -> Result<Vec<(PathBuf, usize)>, txn_model::registrations::RegistrationsError> {
        txn_model::registrations::write_range(
            &self.out,
            (self.from, self.to),
            self.per_month as usize,
            self.seed,
            self.force,
        )
    }
}

impl Args {
    /// The effective configuration.
    ///
    /// # Errors
    /// Kafka security settings that cannot work (see
    /// [`txn_runtime::kafka::KafkaArgs::security_options`]).
    pub fn into_config(self) -> Result<ProducerConfig, txn_runtime::secret::ConfigError> {
        let mut pace = match self.rate {
            Some(0.0) => Pace::Unlimited,
            Some(r) => Pace::Rate(r),
            None => Pace::Interval(Duration::from_secs_f64(self.interval)),
        };
        let backfill = self.from.zip(self.to).map(|(from, to)| {
            let per_second = match std::mem::replace(&mut pace, Pace::Unlimited) {
                Pace::Interval(d) => Some(1.0 / d.as_secs_f64()),
                Pace::Rate(r) => Some(r),
                Pace::Unlimited => None,
            };
            BackfillRange {
                from,
                to,
                per_second,
            }
        });
        let mut anomalies = txn_model::anomaly::Rates::default();
        for (kind, rate) in self.anomalies {
            anomalies.set(kind, rate);
        }
        let security = self.kafka.security_options(&self.kafka_options)?;
        Ok(ProducerConfig {
            bootstrap_servers: self.kafka.bootstrap_servers,
            topic: self.kafka.topic,
            users_path: self.users,
            pace,
            arrivals: self.arrivals,
            backfill,
            anomalies,
            users_rescan: (self.users_rescan > 0.0)
                .then(|| Duration::from_secs_f64(self.users_rescan)),
            registrations_topic: self.registrations_topic.filter(|t| !t.is_empty()),
            count: self.count,
            seed: self.seed,
            tx_ids: self.tx_ids,
            foreign_share: self.foreign_share,
            dry_run: self.dry_run,
            delivery_timeout: Duration::from_secs(self.delivery_timeout),
            max_in_flight: self.max_in_flight,
            compression: self.compression,
            kafka_options: security.then(self.kafka_options),
            metrics_addr: self.metrics_addr,
            progress_bar: self.count.is_some()
                && !self.dry_run
                && self.log.log_format == txn_runtime::LogFormat::Text
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            ..ProducerConfig::default()
        })
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn rescan_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v == 0.0 || (v >= 0.1 && v.is_finite()) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds from 0.1 (or 0 for never)"
        )),
    }
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share: a number from 0 to 1")),
    }
}

fn anomaly(s: &str) -> Result<(txn_model::anomaly::Kind, f64), String> {
    let (kind, rate) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KIND=RATE, e.g. card_testing=0.001"))?;
    Ok((kind.parse()?, share(rate.trim())?))
}

fn in_flight(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of messages")),
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!(
            "{s:?} is not a rate (messages per second, 0 for unlimited)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_generate_parses_alone_and_refuses_the_publishing_flags() {
        let generate = ["users", "generate", "--from", "2025-01", "--to", "2025-03"];
        let args = Args::try_parse_from(std::iter::once("producer").chain(generate)).unwrap();
        let Some(Command::Users(UsersCommand::Generate(g))) = args.command else {
            panic!("no subcommand");
        };
        assert_eq!((g.per_month, g.force), (100, false));
        assert_eq!(g.out, PathBuf::from("data/users"));
        // a publishing flag would be silently ignored (an unseeded run for --seed): refused
        let with_seed = ["producer", "--seed", "5"].into_iter().chain(generate);
        assert!(Args::try_parse_from(with_seed).is_err());
        for bad in [
            ["--per-month", "0"],
            ["--per-month", "1000001"],
            ["--from", "2025-1"],
        ] {
            assert!(
                Args::try_parse_from(std::iter::once("producer").chain(generate).chain(bad))
                    .is_err(),
                "{bad:?}"
            );
        }
        assert!(share("1.5").is_err() && share("-0.1").is_err() && share("0.25") == Ok(0.25));
    }

    fn parse(args: &[&str]) -> Result<ProducerConfig, clap::Error> {
        Args::try_parse_from(std::iter::once("producer").chain(args.iter().copied()))
            .map(|a| a.into_config().expect("a usable configuration"))
    }

    #[test]
    fn pace_from_flags() {
        assert_eq!(
            parse(&[]).unwrap().pace,
            Pace::Interval(Duration::from_secs(10))
        );
        assert_eq!(
            parse(&["--interval", "0.5"]).unwrap().pace,
            Pace::Interval(Duration::from_millis(500))
        );
        assert_eq!(parse(&["--rate", "0"]).unwrap().pace, Pace::Unlimited);
        assert_eq!(
            parse(&["--rate", "250", "--interval", "3"]).unwrap().pace,
            Pace::Rate(250.0)
        );
        assert!(parse(&["--rate", "-1"]).is_err());
        assert!(parse(&["--interval", "0"]).is_err());
    }

    #[test]
    fn backfill_and_anomalies_from_flags() {
        let day = |s| txn_model::backfill::parse_day(s).unwrap();
        assert_eq!(parse(&[]).unwrap().backfill, None);
        let c = parse(&["--from", "2025-01-01", "--to", "2025-01-31"]).unwrap();
        // the default pace is the simulated clock's mean rate; the real one is unlimited
        assert_eq!(
            c.backfill,
            Some(BackfillRange {
                from: day("2025-01-01"),
                to: day("2025-01-31"),
                per_second: Some(0.1)
            })
        );
        assert_eq!(c.pace, Pace::Unlimited);
        let c = parse(&["--from", "2025-01-01", "--to", "2025-01-02", "--rate", "0"]).unwrap();
        assert_eq!(c.backfill.unwrap().per_second, None);
        let c = parse(&["--from", "2025-01-01", "--to", "2025-01-02", "--rate", "3"]).unwrap();
        assert_eq!(c.backfill.unwrap().per_second, Some(3.0));
        assert!(
            parse(&["--from", "2025-01-01"]).is_err(),
            "--from needs --to"
        );
        assert!(parse(&["--to", "2025-01-01"]).is_err(), "--to needs --from");
        assert!(parse(&["--from", "2025-1-01", "--to", "2025-01-02"]).is_err());

        use txn_model::anomaly::Kind;
        assert!(!parse(&[]).unwrap().anomalies.any());
        let c = parse(&["--anomaly", "card_testing=0.01", "--anomaly", "late=0.5"]).unwrap();
        assert_eq!(c.anomalies.get(Kind::CardTesting), 0.01);
        assert_eq!(c.anomalies.get(Kind::Late), 0.5);
        assert_eq!(c.anomalies.get(Kind::Duplicate), 0.0);
        for bad in ["card_testing", "fraud=0.1", "late=2", "late=x"] {
            let e = parse(&["--anomaly", bad]).unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{e}");
        }
    }

    #[test]
    fn compression_defaults_to_lz4_and_takes_every_codec() {
        assert_eq!(parse(&[]).unwrap().compression, Compression::Lz4);
        for (name, codec) in [
            ("none", Compression::None),
            ("gzip", Compression::Gzip),
            ("snappy", Compression::Snappy),
            ("lz4", Compression::Lz4),
            ("zstd", Compression::Zstd),
        ] {
            let c = parse(&["--compression", name]).unwrap().compression;
            assert_eq!((c, c.as_str()), (codec, name));
        }
        assert!(parse(&["--compression", "brotli"]).is_err());
    }

    #[test]
    fn kafka_options_and_count() {
        let c = parse(&[
            "-K",
            "linger.ms=20",
            "--kafka-option",
            "batch.size = 1000",
            "--count",
            "5",
        ])
        .unwrap();
        assert_eq!(
            c.kafka_options.0,
            vec![
                ("linger.ms".into(), "20".into()),
                ("batch.size".into(), "1000".into())
            ]
        );
        assert_eq!(c.count, Some(5));
        assert!(parse(&["-K", "novalue"]).is_err());
        assert_eq!(
            parse(&["--max-in-flight", "1000"]).unwrap().max_in_flight,
            1000
        );
        assert_eq!(
            parse(&[]).unwrap().max_in_flight,
            ProducerConfig::default().max_in_flight
        );
        assert!(parse(&["--max-in-flight", "0"]).is_err());
    }
}
