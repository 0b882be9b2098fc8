//! Users who register while the producer runs: the events of a `user_registrations` topic
//! (the seed's "production alternative" to the monthly files), read from the beginning on
//! every start (the producer keeps no state). The consumer takes every partition itself
//! (it joins no group, commits nothing, and no rebalance makes it read the topic twice);
//! partitions added while it runs are not read until a restart.
//!
//! An event is a JSON object with the users files' columns: `user_id` (a UUID, required),
//! `registration_date` (`YYYY-MM-DD`, or a timestamp starting with one) and `country` (a
//! two-letter code) as in the CSV contract; other fields are ignored. An event that is not
//! such an object is skipped with a warning naming its partition and offset.

use std::task::Poll;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use txn_model::{UserAttributes, Users};

use crate::config::ProducerConfig;
use crate::publisher::PublishError;

/// One registration event.
#[derive(Debug, serde::Deserialize)]
struct Event<'a> {
    user_id: uuid::Uuid,
    #[serde(borrow, default)]
    registration_date: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    country: Option<std::borrow::Cow<'a, str>>,
}

/// The users of one event, or why it is not one.
pub fn parse(payload: &[u8]) -> Result<Users, String> {
    let e: Event<'_> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    Ok(Users {
        ids: vec![e.user_id],
        attributes: vec![UserAttributes::from_fields(
            e.country.as_deref(),
            e.registration_date.as_deref(),
        )],
        files: Vec::new(),
        skipped: Vec::new(),
        duplicates: 0,
    })
}

/// Logs the consumer's client errors and librdkafka's log lines like the rest.
struct Context;

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        txn_runtime::kafka::forward_log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!(%error, reason, "registrations consumer: Kafka client error");
    }
}

impl ConsumerContext for Context {}

/// Starts reading `topic` from its beginning; the users of its events arrive on the
/// returned channel until `stop` is cancelled.
///
/// # Errors
/// [`PublishError::Config`] when the consumer cannot be created.
pub fn spawn(
    config: &ProducerConfig,
    topic: &str,
    stop: CancellationToken,
) -> Result<mpsc::Receiver<Users>, PublishError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", "txn-producer-registrations")
        // librdkafka's consumer needs a group, though with its partitions assigned it never
        // joins it, and it commits nothing: a fixed name an ACL can allow
        .set("group.id", "txn-producer-registrations")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    // the same security settings as the producer (the -K options that a consumer takes)
    let options: Vec<(String, String)> = config
        .kafka_options
        .iter()
        .filter(|(k, _)| !PRODUCER_ONLY.contains(&k.as_str()))
        .cloned()
        .collect();
    txn_runtime::kafka::apply_options(&mut client, &options);
    let consumer: StreamConsumer<Context> = client
        .create_with_context(Context)
        .map_err(|e| PublishError::Config(txn_runtime::kafka::config_error(&e)))?;
    let consumer = std::sync::Arc::new(consumer);
    let (tx, rx) = mpsc::channel(1024);
    let topic = topic.to_owned();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => return,
            () = assign_all(&consumer, &topic) => {}
        }
        info!(topic = %topic, "reading user registrations");
        let (mut events, mut skipped) = (0u64, 0u64);
        let mut backoff = Duration::from_secs(1);
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => break,
                m = consumer.recv() => m,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, topic = %topic, "cannot read user registrations; retrying in {backoff:?}");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            // this event and those already fetched, as one batch
            let mut batch = Users::default();
            let mut add = |m: &rdkafka::message::BorrowedMessage<'_>| match parse(
                m.payload().unwrap_or_default(),
            ) {
                Ok(users) => {
                    events += 1;
                    batch.ids.extend(users.ids);
                    batch.attributes.extend(users.attributes);
                }
                Err(reason) => {
                    skipped += 1;
                    warn!(
                        topic = %topic,
                        partition = m.partition(),
                        offset = m.offset(),
                        skipped,
                        "skipped a registration event: {reason} (expected a JSON object with a user_id UUID, optionally registration_date YYYY-MM-DD and country)"
                    );
                }
            };
            add(&m);
            drop(m);
            for _ in 1..BATCH {
                let mut more = std::pin::pin!(consumer.recv());
                // only what is fetched already (recv is cancel-safe)
                match std::future::poll_fn(|cx| Poll::Ready(more.as_mut().poll(cx))).await {
                    Poll::Ready(Ok(m)) => add(&m),
                    Poll::Ready(Err(_)) | Poll::Pending => break,
                }
            }
            if !batch.ids.is_empty() && tx.send(batch).await.is_err() {
                break;
            }
        }
        info!(events, skipped, "stopped reading user registrations");
    });
    Ok(rx)
}

/// Takes every partition of `topic` from its beginning, once the topic is there (looked for
/// every 10 s, a missing topic or a failed look reported once each).
async fn assign_all(consumer: &std::sync::Arc<StreamConsumer<Context>>, topic: &str) {
    let mut reported = None;
    loop {
        let probe = consumer.clone();
        let name = topic.to_owned();
        let looked = tokio::task::spawn_blocking(move || {
            // short: a stop waits for this look to end
            let meta = probe.fetch_metadata(Some(&name), Duration::from_secs(5))?;
            let mut partitions = TopicPartitionList::new();
            let mut refused = None;
            for t in meta.topics().iter().filter(|t| t.name() == name) {
                match t.error() {
                    Some(e) => refused = Some(RDKafkaErrorCode::from(e)),
                    None => {
                        for p in t.partitions() {
                            partitions.add_partition_offset(&name, p.id(), Offset::Beginning)?;
                        }
                    }
                }
            }
            Ok::<_, rdkafka::error::KafkaError>((partitions, refused))
        })
        .await;
        let problem = match looked {
            Ok(Ok((partitions, _))) if partitions.count() > 0 => {
                match consumer.assign(&partitions) {
                    Ok(()) => return,
                    Err(e) => format!("cannot read the registrations topic {topic}: {e}"),
                }
            }
            Ok(Ok((_, Some(code)))) if code != RDKafkaErrorCode::UnknownTopicOrPartition => {
                format!(
                    "cannot read the registrations topic {topic}: {code}; looking again every 10 s (an ACL must allow describing and reading it)"
                )
            }
            Ok(Ok(_)) => format!(
                "registrations topic {topic} does not exist (yet): looking again every 10 s; create it or fix --registrations-topic"
            ),
            Ok(Err(e)) => format!(
                "cannot look up the registrations topic {topic}: {e}; looking again every 10 s"
            ),
            Err(e) => format!("cannot look up the registrations topic {topic}: {e}"),
        };
        if reported.as_ref() != Some(&problem) {
            warn!("{problem}");
            reported = Some(problem);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Most events in one batch handed to the generator.
const BATCH: usize = 10_000;

/// Producer properties a consumer refuses or does not need.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "enable.idempotence",
    "linger.ms",
    "compression.type",
    "batch.size",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "partitioner",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "batch.num.messages",
    "retries",
    "message.send.max.retries",
    "retry.backoff.ms",
    "transactional.id",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_csv_columns() {
        let u = parse(
            br#"{"user_id":"5f0c8a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6","first_name":"Ana","registration_date":"2025-08-03T10:00:00Z","country":"es"}"#,
        )
        .unwrap();
        assert_eq!(u.ids[0].to_string(), "5f0c8a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6");
        assert_eq!(u.attributes[0].country.as_deref(), Some("ES"));
        assert_eq!(
            u.attributes[0].registered,
            chrono::NaiveDate::from_ymd_opt(2025, 8, 3)
        );
        let bare = parse(br#"{"user_id":"5f0c8a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6"}"#).unwrap();
        assert_eq!(bare.attributes[0], UserAttributes::default());
        for bad in [&b"{}"[..], b"not json", br#"{"user_id":"x"}"#, b"[1]", b""] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // a bad date or country counts as absent, as in the CSV files
        let odd = parse(
            br#"{"user_id":"5f0c8a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6","registration_date":"2025-08-03xyz","country":"Spain"}"#,
        )
        .unwrap();
        assert_eq!(odd.attributes[0], UserAttributes::default());
    }
}
