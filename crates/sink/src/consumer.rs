//! The Kafka side of the sink: the consume loop, batching and offsets. The only module that
//! touches offsets.
//!
//! Delivery rule: a batch's offsets are committed only after its rows are committed in
//! PostgreSQL (or, for a payload that cannot be decoded, after it was logged and skipped).
//! Auto-commit is off; after each database commit the sink commits, for every partition in
//! the batch, the offset of the last message plus one (`commit` takes the *next* offset to
//! read, literally: we add the one ourselves). If the database write fails for good, the
//! sink stops without committing, so the batch is redelivered on restart; the idempotent
//! insert makes the redelivery harmless.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use txn_model::{DecodeError, Transaction};

use crate::config::SinkConfig;
use crate::error::StoreError;
use crate::retry::retry;
use crate::store::Store;

/// What went wrong on the Kafka side.
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
    /// The database write failed for good; the batch's offsets were not committed.
    #[error(
        "writing to PostgreSQL failed after {retries} retries ({class} error): {source}; the batch's offsets were not committed, so its messages are redelivered on restart"
    )]
    Store {
        /// Retries made.
        retries: u32,
        /// The error's class.
        class: crate::error::ErrorClass,
        /// The last error.
        source: StoreError,
    },
}

/// Counts of one run of the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkReport {
    /// Messages consumed.
    pub messages: u64,
    /// Rows newly inserted.
    pub inserted: u64,
    /// Messages whose `tx_id` was already stored (redeliveries).
    pub duplicates: u64,
    /// Messages that could not be decoded, logged and skipped.
    pub undecodable: u64,
    /// Database transactions committed.
    pub batches: u64,
}

/// Logs rebalances and commit failures.
pub struct SinkContext;

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(%error, reason, "Kafka client error");
    }
}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => info!(partitions = %partitions(tpl), "partitions assigned"),
            Rebalance::Revoke(tpl) => info!(partitions = %partitions(tpl), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(offsets = %partitions(offsets), "offsets committed"),
            // The rows are in PostgreSQL; a lost commit only means a harmless redelivery.
            Err(e) => {
                warn!(error = %e, "offset commit failed; the messages will be redelivered and skipped as duplicates")
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}[{}]@{o}", e.topic(), e.partition()),
            _ => format!("{}[{}]", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates the consumer, checks that a broker answers, and subscribes.
///
/// # Errors
/// [`ConsumeError::Config`], [`ConsumeError::Unreachable`] or [`ConsumeError::Subscribe`].
pub async fn connect(
    config: &SinkConfig,
) -> Result<Arc<StreamConsumer<SinkContext>>, ConsumeError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set("client.id", "txn-sink")
        // offsets are committed by hand, after the database commit
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    txn_runtime::kafka::apply_options(&mut client, &config.kafka_options);
    let consumer: StreamConsumer<SinkContext> = client
        .create_with_context(SinkContext)
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

/// One consumed message, copied out of librdkafka's buffer and decoded.
struct Received {
    partition: i32,
    offset: i64,
    decoded: Result<Transaction, DecodeError>,
}

/// Consumes until `shutdown` is cancelled (then finishes the batch in hand, commits and
/// returns) or a database write fails for good (then returns the error, uncommitted).
///
/// # Errors
/// [`ConsumeError::Store`] after the retries of a transient error are exhausted or on a
/// permanent database error; [`ConsumeError::Fatal`] on a fatal Kafka error.
pub async fn run(
    consumer: Arc<StreamConsumer<SinkContext>>,
    store: Store,
    config: &SinkConfig,
    shutdown: CancellationToken,
) -> Result<SinkReport, ConsumeError> {
    let mut report = SinkReport::default();
    let mut batch: Vec<Received> = Vec::with_capacity(config.batch_size);
    let mut rows: Vec<Transaction> = Vec::with_capacity(config.batch_size);
    let mut missing_topic_logged = false;

    loop {
        // Wait for the first message of a batch, or for the stop signal.
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        match first {
            Ok(m) => batch.push(receive(&m)),
            Err(e) => {
                on_consume_error(e, &config.topic, &mut missing_topic_logged)?;
                continue;
            }
        }
        // Then take whatever else has already arrived, without waiting: a lone message is
        // written at once, a backlog in batches of up to batch_size.
        while batch.len() < config.batch_size {
            match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(receive(&m)),
                Ok(Err(e)) => on_consume_error(e, &config.topic, &mut missing_topic_logged)?,
                Err(_) => break, // nothing more right now
            }
        }

        // Decode failures are logged and skipped (their offsets still advance).
        rows.clear();
        for r in &batch {
            match &r.decoded {
                Ok(tx) => rows.push(tx.clone()),
                Err(e) => {
                    report.undecodable += 1;
                    warn!(partition = r.partition, offset = r.offset, error = %e, "skipping a message that is not a valid transaction");
                }
            }
        }

        let written = write_with_retries(&store, &rows, config).await?;
        report.messages += batch.len() as u64;
        report.inserted += written.inserted;
        report.duplicates += written.duplicates;
        report.batches += 1;
        debug!(
            messages = batch.len(),
            inserted = written.inserted,
            duplicates = written.duplicates,
            "batch committed"
        );

        // The rows are committed: now, and only now, the offsets.
        commit(&consumer, &config.topic, &batch, CommitMode::Async);
        batch.clear();
    }

    // Stopping: everything received has been written and its offsets committed
    // asynchronously; make the last commit synchronous so nothing is redelivered.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        // NoOffset: nothing consumed since the last commit.
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
            warn!(error = %e, "final offset commit failed; the last batch may be redelivered (and skipped as duplicates)");
        }
    }
    Ok(report)
}

fn receive(m: &rdkafka::message::BorrowedMessage<'_>) -> Received {
    Received {
        partition: m.partition(),
        offset: m.offset(),
        decoded: Transaction::from_json(m.payload().unwrap_or_default()),
    }
}

async fn write_with_retries(
    store: &Store,
    rows: &[Transaction],
    config: &SinkConfig,
) -> Result<crate::store::Written, ConsumeError> {
    let policy = &config.retry;
    retry(
        policy,
        StoreError::is_transient,
        |attempt, e, wait| {
            warn!(attempt, of = policy.retries, wait_ms = wait.as_millis() as u64, error = %e, "database write failed; retrying");
        },
        || store.write(rows),
    )
    .await
    .map_err(|source| ConsumeError::Store {
        retries: if source.is_transient() { policy.retries } else { 0 },
        class: source.class(),
        source,
    })
}

/// Commits, per partition, the offset after the last message of the batch.
fn commit(
    consumer: &StreamConsumer<SinkContext>,
    topic: &str,
    batch: &[Received],
    mode: CommitMode,
) {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for r in batch {
        let e = next.entry(r.partition).or_insert(r.offset + 1);
        *e = (*e).max(r.offset + 1);
    }
    let mut tpl = TopicPartitionList::with_capacity(next.len());
    for (partition, offset) in next {
        // Invariant: a partition appears once and the offset is a plain number.
        if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            warn!(partition, offset, error = %e, "cannot record offset");
        }
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        warn!(error = %e, "offset commit failed; the batch will be redelivered and skipped as duplicates");
    }
}

/// Logs a consumer error; returns an error only for fatal ones.
fn on_consume_error(
    e: KafkaError,
    topic: &str,
    missing_topic_logged: &mut bool,
) -> Result<(), ConsumeError> {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            if !*missing_topic_logged {
                warn!(
                    topic,
                    "topic does not exist yet: waiting for it (start the producer, or create the topic)"
                );
                *missing_topic_logged = true;
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
        _ => {
            warn!(error = %e, "Kafka consumer error; librdkafka retries");
            Ok(())
        }
    }
}
