//! Reading from librdkafka: the polling receive, the read-ahead while a batch is written,
//! turning a Kafka message into a [`Message`], and the errors of batches it cannot read.

use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use tokio::time::Instant;
use tracing::warn;
use txn_model::Transaction;

use super::context::{SinkConsumer, pause_all};
use crate::message::{self, Message};

/// How long a run of unreadable-batch errors may last before the sink stops.
pub(super) const UNREADABLE_LIMIT: Duration = Duration::from_secs(60);

/// Errors of a record batch librdkafka cannot read: it reports the error and fetches the
/// same batch again, for ever, so its partition stalls. (rdkafka's error does not say
/// which partition, so the batch cannot be parked.)
pub(super) fn is_unreadable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotImplemented
            | RDKafkaErrorCode::BadCompression
            | RDKafkaErrorCode::BadMessage
            | RDKafkaErrorCode::UnsupportedCompressionType
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
    )
}

/// Tells a passing unreadable-batch error from a stall: errors that keep coming (none
/// more than `QUIET` apart) for longer than `limit` are a stall, and the sink stops with a
/// clear error rather than loop silently.
#[derive(Debug)]
pub(super) struct Unreadable {
    limit: Duration,
    /// Start and latest error of the current run.
    run: Option<(Instant, Instant)>,
}

impl Unreadable {
    /// A gap this long between two errors ends a run.
    const QUIET: Duration = Duration::from_secs(30);

    pub(super) fn new(limit: Duration) -> Unreadable {
        Unreadable { limit, run: None }
    }

    /// Records an error at `now`; returns how long the run lasted once it exceeds `limit`.
    pub(super) fn record(&mut self, now: Instant) -> Option<Duration> {
        let start = match self.run {
            Some((start, last)) if now.saturating_duration_since(last) < Self::QUIET => start,
            _ => now,
        };
        self.run = Some((start, now));
        let lasted = now.saturating_duration_since(start);
        (lasted > self.limit).then_some(lasted)
    }
}

/// Receives messages into `next` while a database write runs (it is raced against the
/// write and dropped when the write ends; `recv` is cancellation safe, so nothing is lost).
/// Once `next` holds `limits.0` messages or `limits.1` bytes it stops receiving; if the
/// write still runs [`PAUSE_AFTER`] later, it pauses the assigned partitions (`paused`
/// says so: the caller resumes them) and goes on polling, so the group keeps the sink
/// however long the write takes. (Not at once: a resume makes librdkafka fetch again
/// what its queue held, a waste for the usual write of milliseconds.) A message that
/// still arrives while paused (of a partition assigned since) is kept, and its partition
/// paused.
pub(super) async fn prefetch(
    consumer: &SinkConsumer,
    next: &mut Vec<Message>,
    (limit, limit_bytes): (usize, usize),
    errors: &mut Vec<KafkaError>,
    paused: &mut bool,
) -> std::convert::Infallible {
    const MAX_ERRORS: usize = 16;
    let mut bytes = message::weight(next);
    loop {
        if (next.len() >= limit || bytes >= limit_bytes) && !*paused {
            tokio::time::sleep(PAUSE_AFTER).await;
            if let Err(e) = pause_all(consumer) {
                warn!(error = %e, "cannot pause partitions while the read-ahead is full");
            }
            *paused = true;
        }
        match recv(consumer).await {
            Ok(m) => {
                if *paused {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(m.topic(), m.partition());
                    let _ = consumer.pause(&tpl);
                }
                let m = receive(consumer, &m);
                bytes += m.weight();
                next.push(m);
            }
            // errors of a partition librdkafka keeps refetching would fill this: they are
            // looked at when the write ends, and the polling goes on regardless
            Err(e) if errors.len() < MAX_ERRORS => errors.push(e),
            Err(_) => {}
        }
        // `recv` is ready at once while messages are queued, so without this the whole
        // batch would be decoded in one poll while the write waits for its turn.
        if next.len().is_multiple_of(32) {
            tokio::task::yield_now().await;
        }
    }
}

/// How long a write may run with the read-ahead full before the partitions are paused.
pub(super) const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// How often the sink polls librdkafka while nothing arrives.
pub(super) const POLL_EVERY: Duration = Duration::from_secs(1);

/// `recv`, polling librdkafka at least every [`POLL_EVERY`] while nothing arrives. The
/// stream polls librdkafka only when woken by a new event, and each poll is what tells
/// librdkafka the application is alive: without these, a long write (or a quiet topic)
/// would exceed `max.poll.interval.ms` and the group would evict the sink. Cancellation
/// safe, as `recv` is.
pub(super) async fn recv(
    consumer: &SinkConsumer,
) -> KafkaResult<rdkafka::message::BorrowedMessage<'_>> {
    loop {
        let next = consumer.recv();
        tokio::pin!(next);
        // A message already queued is taken without arming a timer (the drain path).
        let ready = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match next.as_mut().poll(cx) {
                std::task::Poll::Ready(r) => Some(r),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        if let Some(r) = ready {
            return r;
        }
        if let Ok(r) = tokio::time::timeout(POLL_EVERY, next).await {
            return r;
        }
    }
}

pub(super) fn receive(
    consumer: &SinkConsumer,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> Message {
    let payload = m.payload().unwrap_or_default();
    let timestamp_ms = m.timestamp().to_millis();
    consumer
        .context()
        .note_received(m.partition(), m.offset(), timestamp_ms);
    Message {
        received: consumer.context().stamp(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        decoded: Transaction::from_json(payload),
        payload: payload.to_vec(),
        timestamp_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_batch_errors_stop_the_sink_only_when_they_keep_coming() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut u = Unreadable::new(Duration::from_secs(60));
        // librdkafka retries every few seconds: a stall
        for s in (0..=60).step_by(5) {
            assert_eq!(u.record(at(s)), None, "{s}");
        }
        assert_eq!(u.record(at(61)), Some(Duration::from_secs(61)));
        // errors 30 s or more apart are separate incidents, however many
        let mut u = Unreadable::new(Duration::from_secs(60));
        for s in (0..600).step_by(30) {
            assert_eq!(u.record(at(s)), None, "{s}");
        }
        // a run that ends, then a new one, counts from its own start
        let mut u = Unreadable::new(Duration::from_secs(60));
        for s in (0..=50).step_by(5) {
            assert_eq!(u.record(at(s)), None);
        }
        for s in (100..=160).step_by(5) {
            assert_eq!(u.record(at(s)), None, "{s}");
        }
        assert!(u.record(at(165)).is_some());
        assert!(is_unreadable(RDKafkaErrorCode::NotImplemented));
        assert!(is_unreadable(RDKafkaErrorCode::BadCompression));
        assert!(!is_unreadable(RDKafkaErrorCode::BrokerTransportFailure));
        assert!(!is_unreadable(RDKafkaErrorCode::AllBrokersDown));
    }
}
