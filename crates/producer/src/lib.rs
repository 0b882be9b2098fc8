//! Publishes realistic fake transactions to Kafka.
//!
//! Layout:
//! - [`config`]: the effective configuration ([`ProducerConfig`]);
//! - [`cli`]: command-line flags with their environment twins, turned into a config;
//! - [`pacing`]: when each message is due, live;
//! - [`source`]: what to send next (live or a backfill, anomalies merged in, users added
//!   while it runs);
//! - [`registrations`]: the consumer of user registration events;
//! - [`publisher`]: the Kafka client, its start-up check and the delivery accounting;
//! - [`stats`]: delivery counters, throughput and latency percentiles (as ProducerPerformance).
//!
//! Delivery rules: the client is idempotent with `acks=all`, so a retried send neither loses
//! nor duplicates a message; records are keyed by the `user_id` as text (the hyphenated
//! lower-case form of the message), so every client partitions a user alike. On shutdown generation stops,
//! every message in flight is waited for until it is delivered or has failed (bounded by
//! the delivery timeout), and the [`Report`] says how many of each.

pub mod cli;
pub mod config;
pub mod metrics;
pub mod pacing;
pub mod publisher;
pub mod registrations;
pub mod source;
pub mod stats;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use txn_model::{Generator, load_users};

pub use config::{Arrivals, BackfillRange, Compression, Pace, ProducerConfig, TxIdKind};
pub use publisher::PublishError;
pub use stats::Latency;

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Report {
    /// Messages generated and handed to Kafka (or printed, in a dry run).
    pub sent: u64,
    /// Messages the broker acknowledged (equal to `sent` in a dry run).
    pub delivered: u64,
    /// Messages that failed for good.
    pub failed: u64,
    /// Of those, messages the broker may have written anyway: they were sent, but the
    /// acknowledgement did not come back in time (the topic may hold them).
    pub possibly_persisted: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// From the first send to the last delivery report.
    pub elapsed: Duration,
    /// Delivery latency over the run.
    pub latency: Latency,
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
    /// The backfill cannot be scheduled.
    #[error(transparent)]
    Backfill(#[from] txn_model::backfill::BackfillError),
}

/// Runs the producer until `count` messages are sent (then awaits their delivery reports)
/// or `shutdown` is cancelled.
///
/// # Errors
/// [`Error`] when the users cannot be loaded or Kafka cannot be reached at start-up.
/// Delivery failures during the run are not errors: they are counted in the [`Report`].
pub async fn run(config: ProducerConfig, shutdown: CancellationToken) -> Result<Report, Error> {
    run_with(config, shutdown, Arc::new(stats::Stats::new()), None).await
}

/// [`run`], counting into `stats` (what a `--metrics-addr` endpoint reads; latencies are
/// measured from its creation).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    config: ProducerConfig,
    shutdown: CancellationToken,
    stats: Arc<stats::Stats>,
    health: Option<Arc<txn_runtime::ops::Health>>,
) -> Result<Report, Error> {
    let beat = || {
        if let Some(h) = &health {
            h.beat();
        }
    };
    beat();
    // live, the users directory is watched from before it is read
    let watcher =
        (config.backfill.is_none() && config.users_rescan.is_some() && config.users_path.is_dir())
            .then(|| txn_model::users::Watcher::new(&config.users_path));
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
    let generator = match &config.backfill {
        // users registered by the backfill's last day will do
        Some(b) => Generator::for_users_on(&users, config.seed, b.to)?,
        None => Generator::for_users(&users, config.seed)?,
    }
    .with_tx_ids(config.tx_ids.into())
    .with_foreign_share(config.foreign_share);
    let watcher = watcher.map(|w| w.knowing(&users));
    let mut source = source(&config, generator, watcher, &shutdown)?;
    // the generator holds what it needs of them
    drop(users);
    if config.dry_run {
        return dry_run(&config, &mut source, &shutdown).await;
    }

    let publisher = publisher::Publisher::connect(&config, stats).await?;
    // the pace starts now: connecting is not owed as a burst
    source.resume();
    publisher
        .stats()
        .users
        .store(source.users() as u64, Ordering::Relaxed);
    if let Some(h) = &health {
        h.set("kafka", None);
    }
    info!(servers = %config.bootstrap_servers, topic = %config.topic, pace = ?config.pace, count = ?config.count, "publishing");
    // A bar on a terminal for a --count run; otherwise each delivery is logged at slow
    // paces, and at high rates a progress line every 5 s.
    let bar = match (config.progress_bar, config.count) {
        (true, Some(count)) => Some(progress_bar(count)),
        _ => None,
    };
    let progress = match &bar {
        Some(bar) => Some(tokio::spawn(update_bar(
            publisher.stats().clone(),
            bar.clone(),
        ))),
        None => (!config.logs_each_delivery())
            .then(|| tokio::spawn(progress(publisher.stats().clone()))),
    };
    let mut sent = 0u64;
    // One payload buffer for the whole run: serialising allocates nothing per message.
    let mut payload = Vec::with_capacity(512);
    // The key is the user_id as text, as the message has it: every client that keys by
    // user_id (kcat, a Python producer, Kafka's console producer) picks the same partition.
    let mut key = [0u8; uuid::fmt::Hyphenated::LENGTH];
    // An enqueue error ends generation, but the messages already in flight are still
    // drained below before the error is returned: none is left to `Drop`.
    let mut enqueue_error = None;
    while config.message_limit().is_none_or(|n| sent < n) {
        beat();
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = source.next_alive(&beat) => next,
        };
        // users added while it runs show at once, before a send that may wait
        publisher
            .stats()
            .users
            .store(source.users() as u64, Ordering::Relaxed);
        // a backfill that is done
        let Some(out) = next else { break };
        if shutdown.is_cancelled() {
            break;
        }
        let tx = &out.tx;
        payload.clear();
        // Invariant: a Transaction always serializes (see Transaction::to_json).
        serde_json::to_writer(&mut payload, tx).expect("a Transaction always serializes");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = publisher.send(tx.user_id.hyphenated().encode_lower(&mut key).as_bytes(), &payload, out.label.as_ref()) => if let Err(e) = r {
                enqueue_error = Some(e);
                break;
            },
        }
        sent += 1;
        if let Some(label) = &out.label {
            publisher.stats().anomaly(label.kind);
        }
    }

    info!(
        sent,
        in_flight = publisher.in_flight(),
        "stopped generating; waiting for delivery reports"
    );
    publisher.drain().await;
    if let Some(p) = progress {
        p.abort();
    }
    if let Some(bar) = bar {
        // its final state stays on the terminal, the report goes below it
        let stats = publisher.stats();
        bar.set_length(sent.max(bar.length().unwrap_or(0)));
        bar.set_position(
            stats.delivered.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed),
        );
        bar.abandon();
        txn_runtime::progress::hide();
        // the bar leaves the cursor at its end
        eprintln!();
    }
    if let Some(e) = enqueue_error {
        return Err(e.into());
    }
    let stats = publisher.stats();
    let report = Report {
        sent,
        delivered: stats.delivered.load(Ordering::Relaxed),
        failed: stats.failed.load(Ordering::Relaxed),
        possibly_persisted: stats.possibly_persisted.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        elapsed: stats.elapsed(),
        latency: stats.latency(),
    };
    if !config.logs_each_delivery() {
        let secs = report.elapsed.as_secs_f64().max(1e-9);
        info!(
            event = "summary",
            records = report.delivered,
            records_per_sec = report.delivered as f64 / secs,
            p99_ms = report.latency.p99_ms,
            "{}",
            report.summary()
        );
    }
    Ok(report)
}

impl Report {
    /// The run in one line, as Kafka's `ProducerPerformance` prints it.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let l = &self.latency;
        format!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.0} ms 50th, {:.0} ms 95th, {:.0} ms 99th, {:.0} ms 99.9th",
            self.delivered,
            self.delivered as f64 / secs,
            self.bytes as f64 / secs / 1_048_576.0,
            l.avg_ms,
            l.max_ms,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.p999_ms
        )
    }
}

/// The bar of a `--count` run on a terminal: messages accounted for (delivered or failed)
/// of `count`, the delivery rate and the time left. Log lines step around it.
fn progress_bar(count: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(count);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {human_pos}/{human_len} delivered ({rate}, ETA {eta}) {msg}",
        )
        // Invariant: a constant, valid template.
        .expect("valid progress template")
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} records/s", state.per_sec());
        })
        .progress_chars("=> "),
    );
    txn_runtime::progress::show(&bar);
    bar
}

/// Moves `bar` with the delivery reports, five times a second.
async fn update_bar(stats: Arc<stats::Stats>, bar: indicatif::ProgressBar) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let failed = stats.failed.load(Ordering::Relaxed);
        // a backfill's anomalies add messages to its --count
        let sent = stats.sent.load(Ordering::Relaxed);
        if sent > bar.length().unwrap_or(0) {
            bar.set_length(sent);
        }
        bar.set_position(stats.delivered.load(Ordering::Relaxed) + failed);
        if failed > 0 {
            bar.set_message(format!("{failed} failed"));
        }
    }
}

/// A progress line every 5 seconds: records/s, MB/s, average and maximum latency.
async fn progress(stats: Arc<stats::Stats>) {
    const EVERY: Duration = Duration::from_secs(5);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    let mut last_bytes = 0;
    loop {
        tick.tick().await;
        let w = stats.take_window();
        let bytes = stats.bytes.load(Ordering::Relaxed);
        let secs = EVERY.as_secs_f64();
        info!(
            event = "progress",
            records = w.count,
            "{} records delivered, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency; {} delivered, {} failed in all",
            w.count,
            w.count as f64 / secs,
            (bytes - last_bytes) as f64 / secs / 1_048_576.0,
            w.avg_ms,
            w.max_ms,
            stats.delivered.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed)
        );
        last_bytes = bytes;
    }
}

/// The messages to send: live, or the backfill of `config.backfill`.
fn source(
    config: &ProducerConfig,
    generator: Generator,
    watcher: Option<txn_model::users::Watcher>,
    shutdown: &CancellationToken,
) -> Result<source::Source, Error> {
    let injector =
        txn_model::anomaly::Injector::new(config.anomalies, config.tx_ids.into(), config.seed);
    let Some(b) = &config.backfill else {
        let watch = watcher
            .zip(config.users_rescan)
            .map(|(watcher, every)| source::Watch {
                watcher,
                every,
                next: tokio::time::Instant::now() + every,
            });
        let registrations = match &config.registrations_topic {
            Some(topic) if config.dry_run => {
                info!(topic = %topic, "a dry run reads no Kafka topic: the registrations topic is not read");
                None
            }
            Some(topic) => Some(registrations::spawn(config, topic, shutdown.clone())?),
            None => None,
        };
        let mut live = source::Live::new(
            generator,
            injector,
            pacing::Pacer::new(config.pace, config.arrivals, config.seed),
        );
        live.watch = watch;
        live.registrations = registrations;
        return Ok(source::Source::Live(Box::new(live)));
    };
    if let Some(topic) = &config.registrations_topic {
        info!(topic = %topic, "a backfill takes its users from the users files: the registrations topic is not read");
    }
    let schedule = txn_model::backfill::Schedule::new(
        (b.from, b.to),
        b.per_second,
        config.count,
        generator.hourly_weight(),
        config.seed,
    )?;
    info!(
        from = %b.from,
        to = %b.to,
        expected = schedule.expected().round(),
        "backfill: transactions on a simulated clock, as fast as Kafka takes them"
    );
    Ok(source::Source::Backfill(Box::new(
        txn_model::backfill::Backfill::new(schedule, generator, injector),
    )))
}

async fn dry_run(
    config: &ProducerConfig,
    source: &mut source::Source,
    shutdown: &CancellationToken,
) -> Result<Report, Error> {
    // Not a locked handle: the future must stay Send across the pacing sleeps.
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut sent = 0u64;
    // paced lines appear as they are made; unpaced ones (and a backfill's) are buffered
    let flush_each = config.pace != Pace::Unlimited;
    while config.message_limit().is_none_or(|n| sent < n) {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = source.next() => n,
        };
        let Some(o) = next else { break };
        serde_json::to_writer(&mut out, &o.tx).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        if flush_each {
            out.flush()?;
        }
        sent += 1;
    }
    out.flush()?;
    Ok(Report {
        sent,
        delivered: sent,
        ..Report::default()
    })
}
