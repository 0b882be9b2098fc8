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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::SinkConfig;
use crate::error::{ErrorClass, StoreError};
use crate::message::{self, Message};
use crate::progress::{self, Progress};
use crate::retry::retry;
use crate::store::{OffsetAdvance, Outcome, Store};

mod context;
mod plan;
mod read;

pub use context::{SinkConsumer, SinkContext};
use context::{lock, pause_all, resume_all, seek};
use plan::{Plan, Position, plan};
use read::{UNREADABLE_LIMIT, Unreadable, is_unreadable, prefetch, receive, recv};

/// What went wrong on the Kafka side, or made the loop stop.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The client could not be created (a bad librdkafka property).
    #[error("invalid Kafka client configuration: {0}")]
    Config(#[source] KafkaError),
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
        /// Messages in hand.
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
    txn_runtime::kafka::apply_options(&mut client, &config.kafka_options);
    let consumer: SinkConsumer = client
        .create_with_context(SinkContext::default())
        .map_err(ConsumeError::Config)?;
    let consumer = Arc::new(consumer);

    let probe = consumer.clone();
    let topic = config.topic.clone();
    let meta = txn_runtime::kafka::fetch_metadata(
        &config.bootstrap_servers,
        config.connect_timeout,
        move |t| probe.fetch_metadata(Some(&topic), t),
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
}

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
) -> Result<SinkReport, ConsumeError> {
    let mut sink = Sink {
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
    let result = sink.consume().await;
    if let Some(line) = sink.progress.take(Instant::now()) {
        line.log();
    }
    // Whatever happened, tell Kafka where the database stands (advisory, synchronous).
    sink.commit_kafka(CommitMode::Sync);
    sink.report.revoked = consumer.context().revocations.load(Ordering::Relaxed);
    result.map(|()| sink.report)
}

impl Sink<'_> {
    async fn consume(&mut self) -> Result<(), ConsumeError> {
        let mut pending: Vec<Message> = Vec::with_capacity(self.config.batch_size);
        loop {
            self.retry_seeks();
            if let Err(e) = self.position_assigned().await {
                self.on_store_error(e, pending.len(), &mut pending).await?;
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
                _ = &mut deadline => return Err(unfinished(in_hand)),
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
            let outcome = tokio::select! {
                r = self.write_with_retries(&accepted, &advances) => r,
                _ = &mut deadline => return Err(unfinished(in_hand)),
                never = prefetch(consumer, held, limits, &mut errors, &mut paused) => match never {},
            };
            if paused && let Err(e) = resume_all(consumer) {
                warn!(error = %e, "cannot resume partitions");
            }
            for e in errors {
                self.on_consume_error(e)?;
            }
            match outcome {
                Ok(Outcome::Committed(w)) => {
                    for a in &advances {
                        self.positions.entry(a.partition).or_default().next = Some(a.next);
                    }
                    self.report.messages += accepted.len() as u64;
                    self.report.inserted += w.inserted;
                    self.report.duplicates += w.duplicates;
                    self.report.dead_letters += w.dead_letters;
                    self.report.conflicts += w.conflicts;
                    self.report.batches += 1;
                    log_dead_letters(&accepted, &w);
                    if let Some(line) = self.progress.record(Instant::now(), &accepted, &w) {
                        line.log();
                    }
                    debug!(
                        messages = accepted.len(),
                        inserted = w.inserted,
                        duplicates = w.duplicates,
                        dead_letters = w.dead_letters,
                        "batch committed"
                    );
                    self.commit_kafka(CommitMode::Async);
                    self.batch_cap = (self.batch_cap * 2).min(self.config.batch_size.max(1));
                    return Ok(());
                }
                Ok(Outcome::Stale(parts)) => {
                    // Another sink advanced these partitions (it owned them, or owns them
                    // now): drop our view and our copy of their messages. Those of them
                    // still assigned to us go back to the stored offset: the messages we
                    // dropped may be their last ones, and nothing else would fetch them.
                    warn!(partitions = ?parts, "the stored positions of these partitions moved past this batch (another sink advanced them after a rebalance, or this sink's own commit landed though its answer was lost): dropping this sink's copy of their messages");
                    batch = plan::forget_stale_write(&mut self.positions, accepted, &parts);
                    let repositioned = tokio::select! {
                        r = self.reposition(&parts) => r,
                        _ = &mut deadline => return Err(unfinished(batch.len())),
                    };
                    if let Err(e) = repositioned {
                        self.on_store_error(e, batch.len(), held).await?;
                    }
                }
                Err(e) => {
                    let timed_out = e.is_timeout();
                    self.on_store_error(e, accepted.len(), held).await?;
                    batch = accepted;
                    if timed_out && batch.len() > 1 {
                        // the later half goes back in front of what was read meanwhile,
                        // so each partition stays in order
                        self.batch_cap = batch.len() / 2;
                        held.splice(0..0, batch.split_off(self.batch_cap));
                        warn!(
                            messages = self.batch_cap,
                            "the batch did not finish within the operation timeout: writing smaller batches"
                        );
                    }
                }
            }
        }
    }

    /// After the retries: a transient error pauses until the database is back; anything
    /// else stops the sink.
    async fn on_store_error(
        &mut self,
        e: StoreError,
        in_hand: usize,
        held: &mut Vec<Message>,
    ) -> Result<(), ConsumeError> {
        if e.is_transient() {
            self.report.outages += 1;
            return self.pause_until_healthy(&e, in_hand, held).await;
        }
        error!(error = %e, class = %e.class(), "database error that retrying cannot fix");
        Err(ConsumeError::Store {
            class: e.class(),
            source: e,
        })
    }

    /// Forgets the positions of partitions revoked since the last look (they are loaded
    /// again if they come back), and drops the messages in `batch` fetched before their
    /// partition's last revocation or seek (their owner reads them again).
    fn forget_stale(&mut self, batch: &mut Vec<Message>) {
        for p in self.consumer.context().take_revoked() {
            self.positions.remove(&p);
        }
        let dropped = self.consumer.context().drop_stale(batch);
        if dropped > 0 {
            debug!(
                dropped,
                "dropped messages fetched before a rebalance or seek: they are fetched again"
            );
        }
    }

    /// Positions the partitions assigned since the last look at their stored offsets, so
    /// the consumer reads from where the database stands even when Kafka's committed
    /// offset is ahead of it (after `sink reset-offsets`, or a database restored from a
    /// backup) and no new message would come to trigger the seek back. The position is
    /// kept unchecked against the log end (`sought` empty), so a stored offset past it
    /// still stops the sink (S2a).
    async fn position_assigned(&mut self) -> Result<(), StoreError> {
        let fresh = self.consumer.context().take_assigned();
        if fresh.is_empty() {
            return Ok(());
        }
        // revocations that came before these assignments first (a position set below
        // must not be forgotten for an older revocation)
        for p in self.consumer.context().take_revoked() {
            self.positions.remove(&p);
        }
        let assigned = self.assigned(Some(&fresh));
        if assigned.is_empty() {
            return Ok(());
        }
        let stored = match self.stored_offsets(&assigned).await {
            Ok(stored) => stored,
            Err(e) => {
                // looked at again after the outage
                lock(&self.consumer.context().assigned).extend(&assigned);
                return Err(e);
            }
        };
        self.seek_stored(&stored, false);
        Ok(())
    }

    /// Those of `parts` (every one when `None`) assigned to this sink in its topic.
    fn assigned(&self, parts: Option<&[i32]>) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .filter(|e| e.topic() == self.config.topic)
                    .map(|e| e.partition())
                    .filter(|p| parts.is_none_or(|parts| parts.contains(p)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Seeks each partition of `stored` to its stored offset and records the position.
    /// `checked`: the offset is known to lie within the log (another sink just wrote up
    /// to it); otherwise the next message below it checks it against the log end (S2a). A
    /// seek librdkafka refuses forgets the position and is tried again shortly.
    fn seek_stored(&mut self, stored: &HashMap<i32, i64>, checked: bool) {
        for (&p, &next) in stored {
            if seek(self.consumer, &self.config.topic, p, next) {
                self.reseek.remove(&p);
                self.positions.insert(
                    p,
                    Position {
                        next: Some(next),
                        sought: checked.then_some(next),
                    },
                );
            } else {
                self.positions.remove(&p);
                self.reseek.insert(p, next);
            }
        }
    }

    /// Seeks those of `parts` that are still assigned to this sink to their stored offsets
    /// (after another sink advanced them). Messages read ahead for them become stale.
    async fn reposition(&mut self, parts: &[i32]) -> Result<(), StoreError> {
        let assigned = self.assigned(Some(parts));
        if assigned.is_empty() {
            return Ok(());
        }
        let stored = self.stored_offsets(&assigned).await?;
        self.seek_stored(&stored, true);
        Ok(())
    }

    /// The stored next offsets of `parts` (absent: none stored), with retries.
    async fn stored_offsets(&self, parts: &[i32]) -> Result<HashMap<i32, i64>, StoreError> {
        let policy = &self.config.retry;
        retry(
            policy,
            StoreError::is_transient,
            |attempt, e, wait| {
                warn!(attempt, of = policy.retries, wait_ms = wait.as_millis() as u64, error = %e, "loading stored offsets failed; retrying");
            },
            || self.store.load_offsets(&self.config.group_id, &self.config.topic, parts),
        )
        .await
    }

    /// Loads the stored positions of the batch's partitions not seen since assignment.
    async fn load_positions(&mut self, batch: &[Message]) -> Result<(), StoreError> {
        let mut unknown: Vec<i32> = batch
            .iter()
            .map(|m| m.partition)
            .filter(|p| !self.positions.contains_key(p))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        let stored = self.stored_offsets(&unknown).await?;
        for p in unknown {
            let next = stored.get(&p).copied();
            debug!(partition = p, stored = ?next, "loaded the stored position");
            self.positions.insert(p, Position { next, sought: None });
        }
        Ok(())
    }

    /// Plans the batch against the stored positions (see [`plan`]), checks stored offsets
    /// the consumer is behind against the log end, and makes the seeks. A seek back that
    /// fails forgets the partition's position, so its next message reloads it and seeks
    /// again (a later message is never accepted past the gap), and is tried again every
    /// second meanwhile (a quiet partition has no next message).
    fn plan(&mut self, batch: Vec<Message>) -> Result<Plan, ConsumeError> {
        let plan = plan(&mut self.positions, batch);
        self.report.skipped += plan.skipped;
        for &(partition, stored) in &plan.behind {
            if !self.check_log_end(partition, stored)? {
                // unknown: forget the position, so the partition's next message loads it
                // and checks again (its messages below the stored offset stay filtered)
                self.positions.remove(&partition);
            }
        }
        for s in &plan.seeks {
            if seek(self.consumer, &self.config.topic, s.partition, s.offset) {
                self.reseek.remove(&s.partition);
            } else if !s.ahead {
                self.positions.remove(&s.partition);
                self.reseek.insert(s.partition, s.offset);
            }
        }
        Ok(plan)
    }

    /// Tries the failed seeks back again (at most every [`RESEEK_EVERY`]); those of
    /// partitions no longer assigned are dropped (the next owner loads its own position).
    fn retry_seeks(&mut self) {
        if self.reseek.is_empty() || self.last_reseek.elapsed() < RESEEK_EVERY {
            return;
        }
        let started = Instant::now();
        let assigned = self.assigned(None);
        self.reseek.retain(|p, _| assigned.contains(p));
        // a seek may block up to its timeout: a round stops after a second (the rest wait
        // for the next), and the next round starts a second after this one ends, so the
        // loop polls in between
        let due: Vec<(i32, i64)> = self.reseek.iter().map(|(p, o)| (*p, *o)).collect();
        for (partition, offset) in due {
            if started.elapsed() >= RESEEK_EVERY {
                break;
            }
            if seek(self.consumer, &self.config.topic, partition, offset) {
                self.reseek.remove(&partition);
            }
        }
        self.last_reseek = Instant::now();
    }

    /// Stops with [`ConsumeError::BeyondLogEnd`] when `stored` is past the partition's
    /// log end: the topic was recreated (or truncated), and every message of it would be
    /// skipped as "already stored". Returns whether the log end could be read.
    fn check_log_end(&self, partition: i32, stored: i64) -> Result<bool, ConsumeError> {
        let topic = &self.config.topic;
        // one round trip to the partition's leader, once per loaded position (as the seek)
        let high = self
            .consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .map(|(_, high)| high);
        match high {
            Ok(log_end) if log_end < stored => {
                error!(
                    topic,
                    partition,
                    stored,
                    log_end,
                    "the stored offset is beyond the partition's log end"
                );
                Err(ConsumeError::BeyondLogEnd {
                    topic: topic.clone(),
                    group: self.config.group_id.clone(),
                    partition,
                    stored,
                    log_end,
                })
            }
            Ok(_) => Ok(true),
            Err(e) => {
                warn!(topic, partition, error = %e, "cannot read the partition's log end: checking again with its next message");
                Ok(false)
            }
        }
    }

    async fn write_with_retries(
        &self,
        messages: &[Message],
        advances: &[OffsetAdvance],
    ) -> Result<Outcome, StoreError> {
        let policy = &self.config.retry;
        retry(
            policy,
            // a timeout is not retried at the same size: the outage path checks the
            // server, then the batch is halved
            |e: &StoreError| e.is_transient() && !e.is_timeout(),
            |attempt, e, wait| {
                warn!(attempt, of = policy.retries, wait_ms = wait.as_millis() as u64, error = %e, "database write failed; retrying");
            },
            || {
                self.store
                    .write_batch(&self.config.group_id, &self.config.topic, messages, advances)
            },
        )
        .await
    }

    /// The outage state machine: pause every assigned partition, keep polling (so the group
    /// membership holds), probe the database with capped backoff, resume when it answers.
    /// Messages that still arrive (from partitions assigned meanwhile) are held.
    async fn pause_until_healthy(
        &mut self,
        cause: &StoreError,
        in_hand: usize,
        held: &mut Vec<Message>,
    ) -> Result<(), ConsumeError> {
        let assignment = pause_all(self.consumer).unwrap_or_else(|e| {
            warn!(error = %e, "cannot pause partitions");
            TopicPartitionList::new()
        });
        if cause.is_timeout() {
            warn!(
                error = %cause,
                partitions = assignment.count(),
                "PostgreSQL did not answer in time: paused consumption; probing until it answers"
            );
        } else {
            warn!(
                retries = self.config.retry.retries,
                error = %cause,
                partitions = assignment.count(),
                "PostgreSQL is unavailable: paused consumption; probing until it is back"
            );
        }
        let started = Instant::now();
        let mut last_log = Instant::now();
        let mut delay = self.config.probe_min;
        let store = self.store;
        let shutdown = self.shutdown;
        loop {
            // The probe (a wait, then one bounded round trip) races the stop signal and
            // the polling: a probe hung on a dead connection never holds either up.
            let wait = delay;
            let probe = async move {
                tokio::time::sleep(wait).await;
                store.ping().await
            };
            tokio::pin!(probe);
            let probed = loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        return Err(ConsumeError::Unfinished { messages: in_hand + held.len(), why: "PostgreSQL was unavailable" });
                    }
                    r = &mut probe => break r,
                    m = recv(self.consumer) => match m {
                        Ok(m) => {
                            let mut tpl = TopicPartitionList::new();
                            tpl.add_partition(m.topic(), m.partition());
                            let _ = self.consumer.pause(&tpl);
                            held.push(receive(self.consumer, &m));
                        }
                        Err(e) => self.on_consume_error(e)?,
                    },
                }
            };
            match probed {
                Ok(()) => break,
                Err(e) => {
                    delay = (delay * 2).min(self.config.probe_max);
                    if last_log.elapsed() >= Duration::from_secs(30) {
                        info!(waited_secs = started.elapsed().as_secs(), error = %e, "still waiting for PostgreSQL");
                        last_log = Instant::now();
                    }
                }
            }
        }
        if let Err(e) = resume_all(self.consumer) {
            warn!(error = %e, "cannot resume partitions");
        }
        info!(
            down_secs = started.elapsed().as_secs(),
            "PostgreSQL is back: resumed consumption"
        );
        Ok(())
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
