//! Publishes realistic fake transactions to Kafka.
//!
//! Layout:
//! - [`config`]: the effective configuration ([`ProducerConfig`]);
//! - [`cli`]: command-line flags with their environment twins, turned into a config;
//! - [`pacing`]: when each message is due;
//! - [`publisher`]: the Kafka client, its start-up check and the delivery accounting.
//!
//! Delivery rules: the client is idempotent with `acks=all`, so a retried send neither loses
//! nor duplicates a message; records are keyed by `user_id`. On shutdown generation stops,
//! every message in flight is waited for until it is delivered or has failed (bounded by
//! the delivery timeout), and the [`Report`] says how many of each.

pub mod cli;
pub mod config;
pub mod pacing;
pub mod publisher;

use std::io::Write;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use txn_model::{Generator, load_users};

pub use config::{Pace, ProducerConfig};
pub use publisher::PublishError;

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Messages generated and handed to Kafka (or printed, in a dry run).
    pub sent: u64,
    /// Messages the broker acknowledged (equal to `sent` in a dry run).
    pub delivered: u64,
    /// Messages that failed for good.
    pub failed: u64,
}

impl Report {
    /// True when every message sent was delivered.
    pub fn lost_nothing(&self) -> bool {
        self.failed == 0 && self.delivered == self.sent
    }
}

/// Why the producer could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The users CSV could not be loaded.
    #[error(transparent)]
    Users(#[from] txn_model::UsersError),
    /// Kafka could not be reached or configured.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Writing to stdout failed (dry run).
    #[error("cannot write to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    /// The generator could not be built.
    #[error(transparent)]
    Generator(#[from] txn_model::generator::GeneratorError),
}

/// Runs the producer until `count` messages are delivered or `shutdown` is cancelled.
///
/// # Errors
/// [`Error`] when the users cannot be loaded or Kafka cannot be reached at start-up.
/// Delivery failures during the run are not errors: they are counted in the [`Report`].
pub async fn run(config: ProducerConfig, shutdown: CancellationToken) -> Result<Report, Error> {
    let users = load_users(&config.users_path)?;
    if let Some(summary) = users.skipped_summary() {
        warn!("{summary}");
    }
    info!(
        users = users.ids.len(),
        files = users.files.len(),
        path = %config.users_path.display(),
        "loaded users"
    );
    let mut generator = Generator::new(users.ids, config.seed)?;
    if config.dry_run {
        return dry_run(&config, &mut generator, &shutdown).await;
    }

    let publisher = publisher::Publisher::connect(&config).await?;
    info!(servers = %config.bootstrap_servers, topic = %config.topic, pace = ?config.pace, count = ?config.count, "publishing");
    let mut pacer = pacing::Pacer::new(config.pace);
    let mut progress = Progress::new(!config.logs_each_delivery());
    let mut sent = 0u64;
    let mut payload = Vec::with_capacity(512);
    while config.count.is_none_or(|n| sent < n) {
        if let Some(due) = pacer.next_due() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        let tx = generator.next_now();
        payload.clear();
        // Invariant: a Transaction always serializes (see Transaction::to_json).
        serde_json::to_writer(&mut payload, &tx).expect("a Transaction always serializes");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = publisher.send(tx.user_id.as_bytes(), &payload) => r?,
        }
        sent += 1;
        pacer.sent();
        progress.tick(publisher.counts(), sent);
    }

    info!(
        sent,
        in_flight = publisher.in_flight(),
        "stopped generating; waiting for delivery reports"
    );
    publisher.drain().await;
    let report = Report {
        sent,
        delivered: publisher
            .counts()
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        failed: publisher
            .counts()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
    };
    Ok(report)
}

async fn dry_run(
    config: &ProducerConfig,
    generator: &mut Generator,
    shutdown: &CancellationToken,
) -> Result<Report, Error> {
    let mut pacer = pacing::Pacer::new(config.pace);
    // Not a locked handle: the future must stay Send across the pacing sleeps.
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut sent = 0u64;
    while config.count.is_none_or(|n| sent < n) && !shutdown.is_cancelled() {
        if let Some(due) = pacer.next_due() {
            out.flush()?;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        serde_json::to_writer(&mut out, &generator.next_now()).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        sent += 1;
        pacer.sent();
    }
    out.flush()?;
    Ok(Report {
        sent,
        delivered: sent,
        failed: 0,
    })
}

/// A progress line every 5 seconds at high rates (slow paces log each delivery instead).
struct Progress {
    enabled: bool,
    last: Instant,
    last_delivered: u64,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            last: Instant::now(),
            last_delivered: 0,
        }
    }

    fn tick(&mut self, counts: &publisher::Deliveries, sent: u64) {
        if !self.enabled || self.last.elapsed() < Self::EVERY {
            return;
        }
        let delivered = counts.delivered.load(std::sync::atomic::Ordering::Relaxed);
        let failed = counts.failed.load(std::sync::atomic::Ordering::Relaxed);
        let secs = self.last.elapsed().as_secs_f64();
        let rate = (delivered - self.last_delivered) as f64 / secs;
        info!(
            sent,
            delivered,
            failed,
            records_per_sec = rate.round(),
            "progress"
        );
        self.last = Instant::now();
        self.last_delivered = delivered;
    }
}
