//! The Kafka side of the sink: the consume loop, batching, positions and the outage state
//! machine. The only module that touches offsets.
//!
//! Delivery rules (see `docs/DESIGN.md`):
//! - The source of truth for "where to resume" is the offsets table in PostgreSQL, advanced
//!   in the same transaction as the rows and dead letters of each batch (see `store`). Right
//!   after an assignment the sink loads the assigned partitions' stored offsets and seeks
//!   there (`position_assigned`); a partition's messages below its stored offset are already
//!   stored and are skipped, and a consumer found elsewhere is sought again (`plan`).
//! - Kafka offset commits follow each database commit (asynchronously, and synchronously
//!   at shutdown) so lag tooling and Kafdrop show the group's position; they are advisory.
//!   `commit` takes the *next* offset to read, literally: we pass the stored next offset.
//! - Transient database errors are retried (`retry`); when the retries are exhausted the
//!   sink pauses its partitions, keeps its group membership by polling, probes the database
//!   with capped backoff and resumes by itself. It never dead-letters because of an outage.
//!
//! Here: the loop, the batch write and the Kafka commits; `plan` (pure) and `positions`
//! (the plan applied), `outage`, `read` and `context` hold the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::SinkConfig;
use crate::error::{ErrorClass, StoreError};
use crate::message::{self, Message};
use crate::progress::{self, Progress};
use crate::store::{Outcome, Store};
use futures_util::StreamExt as _;

mod context;
mod lag;
mod outage;
mod plan;
mod positions;
mod read;

pub use context::{SinkConsumer, SinkContext};
use context::{lock, resume_all};
pub use lag::Lag;
use plan::{Plan, Position};
use read::{UNREADABLE_LIMIT, Unreadable, is_unreadable, prefetch, receive, recv};

/// What went wrong on the Kafka side, or made the loop stop.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The client could not be created (a bad librdkafka property).
    #[error("invalid Kafka client configuration: {0}")]
    Config(String),
    /// No broker answered within the connect timeout.
    #[error(transparent)]
    Unreachable(#[from] txn_runtime::kafka::Unreachable),
    /// Subscribing failed.
    #[error("cannot subscribe to topic {topic}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// A non-retriable consumer error (authorization, fatal client state).
    #[error("Kafka consumer failed: {0}")]
    Fatal(#[source] KafkaError),
    /// A database error that retrying cannot fix (configuration, privileges).
    #[error(
        "PostgreSQL refused the sink's writes ({class} error): {source}; fix the cause and restart: nothing was committed for the batch in hand, so it is redelivered"
    )]
    Store {
        /// The error's class.
        class: ErrorClass,
        /// The error.
        source: StoreError,
    },
    /// librdkafka kept returning a batch it cannot read (an unknown codec, a corrupt or
    /// unsupported message format), so a partition made no progress.
    #[error(
        "Kafka kept returning a record batch this sink cannot read for {secs} s ({source}): its partition makes no progress. Check the producer's codec and message format (this build reads gzip, snappy, lz4 and zstd); see the README's troubleshooting section"
    )]
    Unreadable {
        /// How long the errors lasted.
        secs: u64,
        /// The last of them.
        source: KafkaError,
    },
    /// The offset stored for a partition lies beyond its log end: the topic was deleted
    /// and recreated (or truncated). Reading on would skip every message as stored.
    #[error(
        "the offset stored for topic {topic} partition {partition} (group {group}) is {stored}, beyond the partition's log end {log_end}: the topic was recreated or truncated, and nothing was read from it. To read it from its start, run `sink reset-offsets --group-id {group} --topic {topic}` (see the README), then start the sink again"
    )]
    BeyondLogEnd {
        /// The topic.
        topic: String,
        /// The consumer group.
        group: String,
        /// The partition.
        partition: i32,
        /// The stored next offset.
        stored: i64,
        /// The partition's log end (high watermark).
        log_end: i64,
    },
    /// Stopped (signal) while the batch in hand could not be written in time.
    #[error(
        "stopped before {messages} consumed messages could be written ({why}); their offsets were not advanced, so they are redelivered on restart"
    )]
    Unfinished {
        /// Messages consumed but not written: the batch in hand and the read-ahead.
        messages: usize,
        /// Why they were not written.
        why: &'static str,
    },
}

/// Counts of one run of the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkReport {
    /// Messages consumed and accounted for (written, duplicate, or dead-lettered).
    pub messages: u64,
    /// Rows newly inserted.
    pub inserted: u64,
    /// Messages whose `tx_id` was already stored with the same content (redeliveries).
    pub duplicates: u64,
    /// Messages below the stored offset, skipped without a write (already stored).
    pub skipped: u64,
    /// Messages parked in the dead-letter table.
    pub dead_letters: u64,
    /// Of those, duplicates of a stored `tx_id` with different content.
    pub conflicts: u64,
    /// Database transactions committed.
    pub batches: u64,
    /// Times the sink paused for a database outage.
    pub outages: u64,
    /// Partitions revoked from this sink (rebalances; the group evicting a sink that did
    /// not poll in time shows here too).
    pub revoked: u64,
}

/// Creates the consumer, checks that a broker answers, and subscribes.
///
/// # Errors
/// [`ConsumeError::Config`], [`ConsumeError::Unreachable`] or [`ConsumeError::Subscribe`].
pub async fn connect(config: &SinkConfig) -> Result<Arc<SinkConsumer>, ConsumeError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set("client.id", "txn-sink")
        // positions live in PostgreSQL; Kafka commits are made by hand after each batch
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Bound the prefetch (default: a 64 MiB queue, 50 MiB fetches): 2 MiB still holds
        // several batches, so the batches stay full and the memory small...
        .set("queued.max.messages.kbytes", "2048")
        .set("fetch.max.bytes", "2097152")
        // ...but then the queue is often "full", and librdkafka waits fetch.queue.backoff.ms
        // (1 s by default) before fetching again: the sink starved for ~300 ms each second.
        .set("fetch.queue.backoff.ms", "10");
    if config.metrics_addr.is_some() {
        // the partitions' log ends, for the lag gauges
        client.set("statistics.interval.ms", "1000");
    }
    txn_runtime::kafka::apply_options(&mut client, &config.kafka_options);
    let consumer: SinkConsumer = client
        .create_with_context(SinkContext::default())
        .map_err(|e| ConsumeError::Config(txn_runtime::kafka::config_error(&e)))?;
    let consumer = Arc::new(consumer);

    let probe = consumer.clone();
    let topic = config.topic.clone();
    let meta = txn_runtime::kafka::fetch_metadata(
        &config.bootstrap_servers,
        config.connect_timeout,
        &config.kafka_options,
        move |t| probe.fetch_metadata(Some(&topic), t),
        // librdkafka's logs and errors are queued until the consumer is polled: a short
        // poll serves them (not subscribed yet, so no message can come)
        || {
            let consumer = consumer.clone();
            async move {
                let _ = tokio::time::timeout(Duration::from_millis(20), consumer.recv()).await;
                consumer.context().security.take()
            }
        },
    )
    .await?;
    let exists = meta
        .topics()
        .iter()
        .any(|t| t.name() == config.topic && t.error().is_none() && !t.partitions().is_empty());
    if !exists {
        warn!(topic = %config.topic, "topic does not exist yet: waiting for it (the producer creates it on its first message)");
    }
    consumer
        .subscribe(&[&config.topic])
        .map_err(|source| ConsumeError::Subscribe {
            topic: config.topic.clone(),
            source,
        })?;
    info!(servers = %config.bootstrap_servers, topic = %config.topic, group = %config.group_id, "subscribed");
    Ok(consumer)
}

/// The consume loop and its state.
struct Sink<'a> {
    /// The Kafka consumer (its context carries revocations, assignments and cut-offs).
    consumer: &'a SinkConsumer,
    /// Where batches, offsets and dead letters are written.
    store: &'a Store,
    /// The effective configuration: topic, group, batch size and byte budget, retries,
    /// probe and drain timings.
    config: &'a SinkConfig,
    /// Cancelled on the stop signal: the loop finishes the batch in hand and returns.
    shutdown: &'a CancellationToken,
    /// Positions of the partitions seen since their assignment (loaded from the offsets
    /// table; the planner's input).
    positions: HashMap<i32, Position>,
    /// Counts returned by `run` (and asserted by the tests).
    report: SinkReport,
    /// The periodic progress line.
    progress: Progress,
    /// The "topic does not exist yet" warning is logged once, not per poll.
    missing_topic_logged: bool,
    /// Errors of batches librdkafka cannot read, which it fetches again and again.
    unreadable: Unreadable,
    /// Most messages per batch: `batch_size`, halved when a batch cannot be written within
    /// the operation timeout (a slow trigger, a server under load), doubled back after
    /// each committed batch. A batch the server cannot finish in time is never retried
    /// whole for ever.
    batch_cap: usize,
    /// Seeks back that failed: retried every [`RESEEK_EVERY`] while their partition stays
    /// assigned, since a quiet partition has no next message to trigger one (its dropped
    /// messages would wait for the next one produced).
    reseek: HashMap<i32, i64>,
    /// When the failed seeks were last tried.
    last_reseek: Instant,
    /// Metrics and health for the operators' endpoint (`--metrics-addr`).
    ops: crate::metrics::Ops,
    /// When the assignment was last looked at for readiness.
    last_ready_check: Instant,
}

/// How often the loop looks at its assignment for `/readyz`.
const READY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Longest quiet wait of the loop: it beats at least this often (`/healthz`).
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// How often failed seeks back are tried again.
const RESEEK_EVERY: Duration = Duration::from_secs(1);

/// Consumes until `shutdown` is cancelled: then finishes the batch in hand (within the
/// drain timeout), commits and returns.
///
/// # Errors
/// [`ConsumeError::Store`] on a database error that retrying cannot fix,
/// [`ConsumeError::Fatal`] on a fatal Kafka error, [`ConsumeError::Unfinished`] when stopped
/// with a batch that could not be written in time.
pub async fn run(
    consumer: Arc<SinkConsumer>,
    store: Store,
    config: &SinkConfig,
    shutdown: CancellationToken,
    ops: crate::metrics::Ops,
) -> Result<SinkReport, ConsumeError> {
    let mut sink = Sink {
        ops,
        last_ready_check: Instant::now() - READY_CHECK_EVERY,
        consumer: &consumer,
        store: &store,
        config,
        shutdown: &shutdown,
        positions: HashMap::new(),
        report: SinkReport::default(),
        progress: Progress::new(progress::EVERY, Instant::now()),
        missing_topic_logged: false,
        unreadable: Unreadable::new(UNREADABLE_LIMIT),
        batch_cap: config.batch_size.max(1),
        reseek: HashMap::new(),
        last_reseek: Instant::now(),
    };
    let refresher = config.metrics_addr.is_some().then(|| {
        let _ = consumer
            .context()
            .lag
            .set((config.topic.clone(), sink.ops.metrics.clone()));
        tokio::spawn(refresh_log_ends(consumer.clone(), config.topic.clone()))
    });
    let result = sink.consume().await;
    if let Some(r) = refresher {
        r.abort();
    }
    if let Some(line) = sink.progress.take(Instant::now()) {
        line.log();
    }
    // Whatever happened, tell Kafka where the database stands (advisory, synchronous).
    sink.commit_kafka(CommitMode::Sync);
    sink.report.revoked = consumer.context().revocations.load(Ordering::Relaxed);
    result.map(|()| sink.report)
}

/// Asks the brokers for the log end of each partition with a stored position every few
/// seconds (off the loop's thread), for the lag gauges: librdkafka learns it only from its
/// fetches, which stop while the sink is paused (an outage, a full read-ahead).
async fn refresh_log_ends(consumer: Arc<SinkConsumer>, topic: String) {
    const EVERY: Duration = Duration::from_secs(5);
    loop {
        tokio::time::sleep(EVERY).await;
        let partitions = lock(&consumer.context().lag_state).partitions();
        let c = consumer.clone();
        let t = topic.clone();
        let ends = tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .filter_map(|p| {
                    let (_, high) = c.fetch_watermarks(&t, p, Duration::from_secs(2)).ok()?;
                    Some((p, high, std::time::Instant::now()))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut state = lock(&consumer.context().lag_state);
        for (p, end, at) in ends {
            state.fetched_end(p, end, at);
        }
    }
}

impl Sink<'_> {
    async fn consume(&mut self) -> Result<(), ConsumeError> {
        let mut pending: Vec<Message> = Vec::with_capacity(self.config.batch_size);
        loop {
            self.beat(&pending);
            self.retry_seeks();
            if let Err(e) = self.position_assigned().await {
                // nothing in hand: the read-ahead is `pending` itself (counted as held)
                self.on_store_error(e, 0, &mut pending).await?;
            }
            if self.shutdown.is_cancelled() {
                // What was read ahead is not written, and its offsets are not advanced:
                // a restart reads it again.
                debug!(
                    read_ahead = pending.len(),
                    "stopping: leaving the read-ahead messages to the next run"
                );
                return Ok(());
            }
            if pending.is_empty() {
                // Wait for the first message of a batch, or for the stop signal (and write
                // out the progress of a burst that nothing followed).
                let due = self.progress.due();
                let first = tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return Ok(()),
                    m = recv(self.consumer) => m,
                    _ = self.consumer.context().assigned_wake.notified() => continue,
                    _ = tokio::time::sleep(RESEEK_EVERY), if !self.reseek.is_empty() => continue,
                    _ = tokio::time::sleep(BEAT_EVERY) => continue,
                    _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                        if let Some(line) = self.progress.take(Instant::now()) {
                            line.log();
                        }
                        continue;
                    }
                };
                match first {
                    Ok(m) => pending.push(receive(self.consumer, &m)),
                    Err(e) => {
                        self.on_consume_error(e)?;
                        continue;
                    }
                }
            }
            // Then whatever else has already arrived, without waiting: a lone message is
            // written at once, a backlog in batches of up to batch_size messages or half
            // the byte budget.
            let cap = self.batch_cap;
            let mut bytes = message::weight(&pending);
            while pending.len() < cap && bytes < self.half_budget() {
                match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                    Ok(Ok(m)) => {
                        let m = receive(self.consumer, &m);
                        bytes += m.weight();
                        pending.push(m);
                    }
                    Ok(Err(e)) => self.on_consume_error(e)?,
                    Err(_) => break,
                }
            }
            let batch = if pending.len() > cap {
                let rest = pending.split_off(cap);
                std::mem::replace(&mut pending, rest)
            } else {
                std::mem::take(&mut pending)
            };
            self.write(batch, &mut pending).await?;
        }
    }

    /// Tells `/healthz` the loop is alive, and `/readyz` (at most every
    /// [`READY_CHECK_EVERY`]) whether partitions are assigned.
    fn beat(&mut self, pending: &[Message]) {
        self.ops.health.beat();
        if self.last_ready_check.elapsed() >= READY_CHECK_EVERY {
            self.last_ready_check = Instant::now();
            let assigned = self.assigned(None);
            self.ops.health.set(
                "partitions",
                assigned
                    .is_empty()
                    .then(|| format!("no partition of {} assigned", self.config.topic)),
            );
            self.share_positions(pending);
        }
    }

    /// Shares the stored positions with the context, whose statistics callback computes
    /// the lag gauges from them; `pending` holds the messages received and not written.
    fn share_positions(&self, pending: &[Message]) {
        let context = self.consumer.context();
        if context.lag.get().is_none() {
            return;
        }
        let next: HashMap<i32, i64> = self
            .positions
            .iter()
            .filter_map(|(p, pos)| pos.next.map(|n| (*p, n)))
            .collect();
        lock(&context.lag_state).stored(next, pending);
    }

    /// Bytes the batch in hand, and the read-ahead, may each hold.
    fn half_budget(&self) -> usize {
        (self.config.buffer_bytes / 2).max(1)
    }

    /// Writes one batch: positions, filtering, the transaction, and the outage loop.
    /// Messages received meanwhile (the next batch, fetched while this one is written, and
    /// during an outage) are added to `held`.
    async fn write(
        &mut self,
        mut batch: Vec<Message>,
        held: &mut Vec<Message>,
    ) -> Result<(), ConsumeError> {
        let deadline = drain_deadline(self.shutdown, self.config.drain_timeout);
        tokio::pin!(deadline);
        let unfinished = |messages| ConsumeError::Unfinished {
            messages,
            why: "the drain timeout passed",
        };
        loop {
            self.forget_stale(&mut batch);
            if batch.is_empty() {
                return Ok(());
            }
            let in_hand = batch.len();
            let loaded = tokio::select! {
                r = self.load_positions(&batch) => r,
                _ = &mut deadline => return Err(unfinished(in_hand + held.len())),
            };
            if let Err(e) = loaded {
                self.on_store_error(e, in_hand, held).await?;
                continue;
            }
            let Plan {
                accepted, advances, ..
            } = self.plan(std::mem::take(&mut batch))?;
            if accepted.is_empty() {
                return Ok(());
            }
            // While the database writes this batch, the next one is fetched and decoded:
            // the sink's CPU work overlaps PostgreSQL's instead of alternating with it.
            let consumer = self.consumer;
            let mut errors = Vec::new();
            let mut paused = false;
            let limits = (self.config.batch_size, self.half_budget());
            // Partitions are shared out among the writers, each share one transaction of
            // its own (its partitions' rows and offsets), committed concurrently.
            let shares = plan::split(accepted, advances, self.config.writers);
            let (results, stopped) = {
                let prefetching = prefetch(consumer, held, limits, &mut errors, &mut paused);
                tokio::pin!(prefetching);
                let mut writes = self.write_shares(shares);
                let mut results = Vec::new();
                let stopped = loop {
                    tokio::select! {
                        r = writes.next() => match r {
                            Some(r) => results.push(r),
                            None => break false,
                        },
                        // the shares not done are dropped (rolled back): redelivered
                        _ = &mut deadline => break true,
                        never = &mut prefetching => match never {},
                    }
                };
                (results, stopped)
            };
            if stopped {
                // the shares that did commit are taken in; the rest, and the read-ahead
                // fetched so far, are left for redelivery
                let mut written = 0;
                for (share, outcome, took) in &results {
                    if let Ok(Outcome::Committed(w)) = outcome {
                        self.committed(share, w, *took);
                        written += share.messages.len();
                    }
                }
                self.share_positions(held);
                self.commit_kafka(CommitMode::Async);
                return Err(unfinished(in_hand - written + held.len()));
            }
            if paused && let Err(e) = resume_all(consumer) {
                warn!(error = %e, "cannot resume partitions");
            }
            for e in errors {
                self.on_consume_error(e)?;
            }
            let mut again: Vec<Message> = Vec::new();
            let mut stale_parts = Vec::new();
            let mut stale_messages = Vec::new();
            let mut failure: Option<StoreError> = None;
            // the largest share that did not finish within the operation timeout
            let mut timed_out = 0;
            for (share, outcome, took) in results {
                match outcome {
                    Ok(Outcome::Committed(w)) => self.committed(&share, &w, took),
                    Ok(Outcome::Stale(parts)) => {
                        stale_parts.extend(parts);
                        stale_messages.extend(share.messages);
                    }
                    Err(e) => {
                        if e.is_timeout() {
                            timed_out = timed_out.max(share.messages.len());
                        }
                        again.extend(share.messages);
                        match &failure {
                            None => failure = Some(e),
                            // one outage path for all: the others are logged
                            Some(_) => warn!(error = %e, "another share of the batch failed too"),
                        }
                    }
                }
            }
            self.share_positions(held);
            if stale_parts.is_empty() && failure.is_none() {
                self.commit_kafka(CommitMode::Async);
                self.batch_cap = (self.batch_cap * 2).min(self.config.batch_size.max(1));
                return Ok(());
            }
            if !stale_parts.is_empty() {
                // Another sink advanced these partitions (it owned them, or owns them
                // now): drop our view and our copy of their messages. Those of them
                // still assigned to us go back to the stored offset: the messages we
                // dropped may be their last ones, and nothing else would fetch them.
                warn!(partitions = ?stale_parts, "the stored positions of these partitions moved past this batch (another sink advanced them after a rebalance, or this sink's own commit landed though its answer was lost): dropping this sink's copy of their messages");
                batch = plan::forget_stale_write(&mut self.positions, stale_messages, &stale_parts);
                self.share_positions(held);
                let repositioned = tokio::select! {
                    r = self.reposition(&stale_parts) => r,
                    _ = &mut deadline => return Err(unfinished(batch.len() + again.len() + held.len())),
                };
                if let Err(e) = repositioned {
                    failure.get_or_insert(e);
                }
            }
            // the partitions of the shares that committed (never the stale ones, whose
            // positions are forgotten by now: another sink owns their Kafka offsets)
            self.commit_kafka(CommitMode::Async);
            if let Some(e) = failure {
                self.on_store_error(e, batch.len() + again.len(), held)
                    .await?;
                if timed_out > 1 {
                    // smaller than the share that timed out; the later part goes back
                    // in front of what was read meanwhile, so each partition stays in
                    // order
                    self.batch_cap = timed_out / 2;
                    held.splice(0..0, again.split_off(self.batch_cap));
                    warn!(
                        messages = self.batch_cap,
                        "the batch did not finish within the operation timeout: writing smaller batches"
                    );
                }
                batch.extend(again);
            }
        }
    }

    /// The concurrent writes of a batch's shares, each with its retries: each yields its
    /// share, its outcome and how long it took, as it finishes.
    fn write_shares(
        &self,
        shares: Vec<plan::Share>,
    ) -> futures_util::stream::FuturesUnordered<
        impl std::future::Future<Output = (plan::Share, Result<Outcome, StoreError>, Duration)> + '_,
    > {
        shares
            .into_iter()
            .map(|share| async move {
                let started = Instant::now();
                let outcome = self
                    .write_with_retries(&share.messages, &share.advances)
                    .await;
                (share, outcome, started.elapsed())
            })
            .collect()
    }

    /// Takes a committed share into the positions, the report, the metrics and the
    /// progress line.
    fn committed(&mut self, share: &plan::Share, w: &crate::store::Written, took: Duration) {
        let messages = &share.messages;
        for a in &share.advances {
            self.positions.entry(a.partition).or_default().next = Some(a.next);
        }
        self.report.messages += messages.len() as u64;
        self.report.inserted += w.inserted;
        self.report.duplicates += w.duplicates;
        self.report.dead_letters += w.dead_letters;
        self.report.conflicts += w.conflicts;
        self.report.batches += 1;
        let m = &self.ops.metrics;
        m.consumed.inc_by(messages.len() as u64);
        m.inserted.inc_by(w.inserted);
        m.duplicates.inc_by(w.duplicates);
        m.dead_lettered(&w.dead_letters_by_class);
        m.conflicts.inc_by(w.conflicts);
        m.batches.inc();
        if self.config.metrics_addr.is_some() {
            // one observation per message: only when someone can scrape it
            m.committed(messages, chrono::Utc::now().timestamp_millis());
        }
        m.batch_size.observe(messages.len() as f64);
        m.batch_write_seconds.observe(took.as_secs_f64());
        log_dead_letters(messages, w);
        if let Some(line) = self.progress.record(Instant::now(), messages, w) {
            line.log();
        }
        debug!(
            messages = messages.len(),
            inserted = w.inserted,
            duplicates = w.duplicates,
            dead_letters = w.dead_letters,
            "batch committed"
        );
    }

    /// Commits the stored positions of the partitions this sink holds to Kafka (advisory).
    fn commit_kafka(&self, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        for (p, pos) in &self.positions {
            if let Some(next) = pos.next {
                // commit takes the next offset to read, as stored
                let _ = tpl.add_partition_offset(&self.config.topic, *p, Offset::Offset(next));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            debug!(error = %e, "Kafka offset commit failed (advisory: the database holds the position)");
        }
    }

    /// Logs a consumer error; returns an error only for fatal ones.
    fn on_consume_error(&mut self, e: KafkaError) -> Result<(), ConsumeError> {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                if !self.missing_topic_logged {
                    warn!(topic = %self.config.topic, "topic does not exist yet: waiting for it (start the producer, or create the topic)");
                    self.missing_topic_logged = true;
                }
                Ok(())
            }
            Some(
                RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed,
            ) => {
                error!(error = %e, "fatal Kafka consumer error");
                Err(ConsumeError::Fatal(e))
            }
            Some(code) if is_unreadable(code) => {
                warn!(error = %e, "Kafka returned a record batch this sink cannot read; librdkafka fetches it again");
                match self.unreadable.record(Instant::now()) {
                    Some(lasted) => Err(ConsumeError::Unreadable {
                        secs: lasted.as_secs(),
                        source: e,
                    }),
                    None => Ok(()),
                }
            }
            _ => {
                warn!(error = %e, "Kafka consumer error; librdkafka retries");
                Ok(())
            }
        }
    }
}

/// Completes `drain_timeout` after `shutdown` is cancelled; never before.
async fn drain_deadline(shutdown: &CancellationToken, drain_timeout: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(drain_timeout).await;
}

fn log_dead_letters(messages: &[Message], w: &crate::store::Written) {
    if w.dead_letters == 0 {
        return;
    }
    for m in messages {
        if let Err(e) = &m.decoded {
            // the error quotes the message: escaped and capped like the stored reason
            let error = crate::dead_letter::reason(&e.to_string());
            warn!(
                partition = m.partition,
                offset = m.offset,
                error,
                "parked a message that is not a valid transaction"
            );
        }
    }
    if w.dead_letters > messages.iter().filter(|m| m.decoded.is_err()).count() as u64 {
        warn!(
            dead_letters = w.dead_letters,
            conflicts = w.conflicts,
            "parked rows PostgreSQL rejected or conflicting duplicates: see the dead-letter table"
        );
    }
}
