//! The Kafka side of the producer: client configuration, start-up check and delivery reports.
//!
//! Every message sent takes one permit of a semaphore sized `max_in_flight`; its delivery
//! report (success or failure, always exactly one per message from librdkafka) returns it.
//! So "all permits back" means "every message accounted for", which is how shutdown waits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use txn_model::anomaly::Label;

use crate::config::ProducerConfig;
use crate::stats::Stats;

/// Why publishing could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The client could not be created (a bad librdkafka property).
    #[error("invalid Kafka client configuration: {0}")]
    Config(String),
    /// No broker answered within the connect timeout.
    #[error(transparent)]
    Unreachable(#[from] txn_runtime::kafka::Unreachable),
    /// The local queue refused a message for a reason other than being full.
    #[error("cannot enqueue a message: {0}")]
    Enqueue(#[source] KafkaError),
}

/// The producer context: accounts for every delivery report.
pub struct DeliveryContext {
    stats: Arc<Stats>,
    permits: Arc<Semaphore>,
    log_each: bool,
    servers: String,
    /// The last TLS or SASL failure, for the start-up check.
    security: txn_runtime::kafka::SecurityFailure,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.security.note(&error, reason);
        // Transport errors are retried by librdkafka; a fatal one ends delivery for good,
        // which the delivery reports then show.
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Fatal) => error!(%error, reason, "fatal Kafka producer error"),
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                warn!(servers = %self.servers, reason, "all Kafka brokers are down; retrying")
            }
            _ => warn!(%error, reason, "Kafka client error"),
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.security.note_text(message);
        txn_runtime::kafka::forward_log(level, fac, message);
    }

    /// librdkafka's statistics (every second with `--metrics-addr`): the queue depth and
    /// each broker's round trip, for the metrics endpoint.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let figures = crate::stats::ClientStats::from_statistics(&statistics);
        *self.stats.client.lock().unwrap_or_else(|e| e.into_inner()) = figures;
    }
}

impl ProducerContext for DeliveryContext {
    /// When the record was sent, from `Stats::stamp`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at: usize) {
        match result {
            Ok(msg) => {
                self.stats.delivered(sent_at, msg.payload_len());
                if self.log_each {
                    let tx_id = msg
                        .payload()
                        .and_then(|p| txn_model::Transaction::from_json(p).ok())
                        .map(|t| t.tx_id.to_string())
                        .unwrap_or_default();
                    info!(
                        event = "delivered",
                        tx_id,
                        partition = msg.partition(),
                        offset = msg.offset(),
                        "delivered"
                    );
                }
            }
            Err((err, msg)) => {
                let possibly_persisted = possibly_persisted(msg);
                let reason = crate::stats::FailReason::of(err.rdkafka_error_code());
                self.stats.failed(reason, possibly_persisted);
                error!(error = %describe_delivery_error(err, msg.topic()), partition = msg.partition(), possibly_persisted, "message not delivered");
            }
        }
        self.permits.add_permits(1);
    }
}

/// Whether the broker may have written a failed message: librdkafka knows whether it was
/// sent without an acknowledgement coming back (a timeout after the request went out), as
/// opposed to never sent or rejected. rdkafka does not wrap this status.
fn possibly_persisted(msg: &rdkafka::message::BorrowedMessage<'_>) -> bool {
    // SAFETY: `msg` borrows a live librdkafka message for the duration of the delivery
    // callback; rd_kafka_message_status only reads it.
    let status = unsafe { rdkafka::bindings::rd_kafka_message_status(msg.ptr()) };
    status == rdkafka::bindings::rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED
}

fn describe_delivery_error(err: &KafkaError, topic: &str) -> String {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition) => {
            format!(
                "topic {topic} does not exist and the broker does not create topics on demand: create it (kafka-topics --create --topic {topic}) or set auto.create.topics.enable=true"
            )
        }
        Some(RDKafkaErrorCode::MessageTimedOut) => {
            format!("{err}: no broker acknowledged it within the delivery timeout")
        }
        _ => err.to_string(),
    }
}

/// A connected producer with its delivery accounting.
pub struct Publisher {
    /// librdkafka's producer; its context counts every delivery report.
    producer: ThreadedProducer<DeliveryContext>,
    /// One permit per message in flight, returned by its delivery report: bounds memory,
    /// and "all permits back" is how shutdown knows every message is accounted for.
    permits: Arc<Semaphore>,
    /// The number of permits (`--max-in-flight`).
    max_in_flight: usize,
    /// Delivery counters and latencies, shared with the context and the progress task.
    stats: Arc<Stats>,
    /// The topic every record goes to.
    topic: String,
}

impl Publisher {
    /// Creates the client and checks that a broker answers within `connect_timeout`.
    ///
    /// # Errors
    /// [`PublishError::Config`] for a bad property, [`PublishError::Unreachable`] when no
    /// broker answers in time.
    pub async fn connect(
        config: &ProducerConfig,
        stats: Arc<Stats>,
    ) -> Result<Publisher, PublishError> {
        let permits = Arc::new(Semaphore::new(config.max_in_flight));
        let context = DeliveryContext {
            stats: stats.clone(),
            permits: permits.clone(),
            log_each: config.logs_each_delivery(),
            servers: config.bootstrap_servers.clone(),
            security: txn_runtime::kafka::SecurityFailure::default(),
        };
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("client.id", "txn-producer")
            // no loss, no duplicates from retries, order kept per partition
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // the Java client's partitioner: a key lands on the same partition from any client
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", millis(config.delivery_timeout))
            .set("linger.ms", "5")
            .set("compression.type", config.compression.as_str());
        if config.metrics_addr.is_some() {
            // the queue depth and broker round trips of the metrics endpoint
            client.set("statistics.interval.ms", "1000");
        }
        txn_runtime::kafka::apply_options(&mut client, &config.kafka_options);
        let producer: ThreadedProducer<DeliveryContext> = client
            .create_with_context(context)
            .map_err(|e| PublishError::Config(txn_runtime::kafka::config_error(&e)))?;
        let producer = check_reachable(producer, config).await?;
        Ok(Publisher {
            producer,
            permits,
            max_in_flight: config.max_in_flight,
            stats,
            topic: config.topic.clone(),
        })
    }

    /// Enqueues one record, waiting while `max_in_flight` messages are unacknowledged.
    ///
    /// # Errors
    /// [`PublishError::Enqueue`] when librdkafka refuses the message outright.
    ///
    /// # Cancel safety
    /// Cancel-safe: if cancelled while waiting for room (a permit or librdkafka's queue),
    /// nothing was sent and the permit is returned.
    pub async fn send(
        &self,
        key: &[u8],
        payload: &[u8],
        label: Option<&Label>,
    ) -> Result<(), PublishError> {
        // Invariant: the semaphore is never closed.
        let permit = self.permits.acquire().await.expect("semaphore open");
        let mut record = BaseRecord::with_opaque_to(&self.topic, self.stats.stamp())
            .key(key)
            .payload(payload);
        if let Some(label) = label {
            record = record.headers(headers(label));
        }
        // counted before the enqueue, so a delivery report never precedes its count
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    // enqueued: its delivery report returns the permit
                    permit.forget();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Cancelled here (a stop signal while the local queue is full), the
                    // permit is dropped and returned: nothing was enqueued, and `drain`
                    // must not wait for a delivery report that never comes.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    self.stats.sent.fetch_sub(1, Ordering::Relaxed);
                    return Err(PublishError::Enqueue(e));
                }
            }
        }
    }

    /// Messages sent and not yet accounted for by a delivery report.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }

    /// The delivery statistics.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Waits until every message sent has its delivery report: each is then either
    /// delivered or failed. Bounded by the delivery timeout, after which librdkafka fails
    /// whatever is left. Flushes explicitly: nothing relies on drop.
    pub async fn drain(&self) {
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        // Invariant: the semaphore is never closed.
        let permits = self
            .permits
            .acquire_many(all)
            .await
            .expect("semaphore open");
        drop(permits);
        let producer = self.producer.clone();
        // Everything is acknowledged; the flush only settles librdkafka's own state.
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
    }
}

async fn check_reachable(
    producer: ThreadedProducer<DeliveryContext>,
    config: &ProducerConfig,
) -> Result<ThreadedProducer<DeliveryContext>, PublishError> {
    let probe = producer.clone();
    let meta = txn_runtime::kafka::fetch_metadata(
        &config.bootstrap_servers,
        config.connect_timeout,
        &config.kafka_options,
        move |t| probe.client().fetch_metadata(None, t),
        || std::future::ready(producer.context().security.take()),
    )
    .await?;
    if !meta.topics().iter().any(|t| t.name() == config.topic) {
        info!(topic = %config.topic, "topic does not exist yet; the broker creates it on the first message if auto.create.topics.enable is on");
    }
    Ok(producer)
}

/// An anomaly's label as Kafka headers: `anomaly` (the kind), `anomaly_episode` (shared by
/// the episode's messages) and, for late and duplicate messages, `anomaly_delay_ms`.
pub fn headers(label: &Label) -> OwnedHeaders {
    let episode = label.episode.hyphenated().to_string();
    let headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "anomaly",
            value: Some(label.kind.as_str()),
        })
        .insert(Header {
            key: "anomaly_episode",
            value: Some(&episode),
        });
    match label.delay_ms {
        Some(ms) => headers.insert(Header {
            key: "anomaly_delay_ms",
            value: Some(&ms.to_string()),
        }),
        None => headers,
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}
