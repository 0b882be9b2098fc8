//! The consumer's client context: rebalance and commit callbacks, the revocation and seek
//! cut-offs that make buffered messages stale, and the pause, resume and seek helpers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::message::Message;

/// Logs rebalances and commit failures, tells the loop which partitions were revoked,
/// and stamps each received message with its order of receipt.
///
/// Messages are buffered (the batch in hand, the read-ahead) while partitions are revoked
/// and reassigned, or sought back. A message of a partition received before that
/// partition's last revocation or seek is stale: it was fetched for the previous
/// assignment or position, and the next one fetches it again. `cutoffs` holds, per
/// partition, the receipt count at that moment; the loop drops buffered messages below it.
#[derive(Default)]
pub struct SinkContext {
    pub(super) revoked: Mutex<Vec<i32>>,
    pub(super) revocations: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) cutoffs: Mutex<HashMap<i32, u64>>,
    /// The sink paused its whole assignment (an outage, a full read-ahead): a partition
    /// assigned meanwhile is paused by the loop as its first message arrives, and resumed
    /// with the rest.
    pub(super) paused: AtomicBool,
    /// Partitions assigned since the loop last looked: it positions them at their stored
    /// offsets (Kafka's committed offset is advisory and may be ahead: a reset, a restored
    /// database), and `assigned_wake` wakes it for that even when no message comes.
    pub(super) assigned: Mutex<Vec<i32>>,
    pub(super) assigned_wake: tokio::sync::Notify,
    /// The last TLS or SASL failure, for the start-up check.
    pub(super) security: txn_runtime::kafka::SecurityFailure,
    /// What the lag gauges are computed from: the stored positions (a copy the loop
    /// refreshes) and the oldest unwritten message received per partition.
    pub(super) lag_state: Mutex<super::lag::LagState>,
    /// Where the lag goes: the sink's topic and metrics (set when the loop starts, and
    /// only with `--metrics-addr`: no bookkeeping per message otherwise).
    pub(super) lag: std::sync::OnceLock<(String, crate::metrics::SinkMetrics)>,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.security.note(&error, reason);
        warn!(%error, reason, "Kafka client error");
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.security.note_text(message);
        txn_runtime::kafka::forward_log(level, fac, message);
    }

    /// librdkafka's statistics (every second with `--metrics-addr`), served by any poll of
    /// the loop, also while a write is blocked or the sink is paused: the lag of each
    /// assigned partition is its log end (last stable offset) minus its stored next offset.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some((topic, metrics)) = self.lag.get() else {
            return;
        };
        let Some(t) = statistics.topics.get(topic) else {
            metrics.set_lag(topic, &[]);
            return;
        };
        let ends: Vec<(i32, i64, i64)> = t
            .partitions
            .values()
            // -1 is librdkafka's internal partition; a negative offset is not known yet
            .filter(|part| part.partition >= 0 && part.desired)
            .filter_map(|part| {
                let end = if part.ls_offset >= 0 {
                    part.ls_offset
                } else {
                    part.hi_offset
                };
                (end >= 0).then_some((part.partition, end, part.app_offset))
            })
            .collect();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let lags = lock(&self.lag_state).lags(&ends, now_ms);
        metrics.set_lag(topic, &lags);
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            // The callback runs inside the poll that returns the next message: every
            // message received so far predates the revocation.
            self.cut(&parts);
            self.revocations
                .fetch_add(parts.len() as u64, Ordering::Relaxed);
            lock(&self.revoked).extend(parts);
        }
    }

    fn post_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(partitions = %partitions(tpl), "partitions assigned");
                lock(&self.assigned).extend(tpl.elements().iter().map(|e| e.partition()));
                self.assigned_wake.notify_one();
                // A partition paused, revoked and assigned again may keep its pause
                // (librdkafka keeps it with the partition's state): unless the sink is
                // paused as a whole, what is assigned consumes.
                if !self.paused.load(Ordering::SeqCst)
                    && let Err(e) = consumer.resume(tpl)
                {
                    warn!(error = %e, "cannot resume assigned partitions");
                }
            }
            Rebalance::Revoke(tpl) => info!(partitions = %partitions(tpl), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(offsets = %partitions(offsets), "Kafka offsets committed"),
            // The database holds the real position; a lost Kafka commit only delays lag tooling.
            Err(e) => {
                debug!(error = %e, "Kafka offset commit failed (advisory: the database holds the position)")
            }
        }
    }
}

impl SinkContext {
    pub(super) fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *lock(&self.revoked))
    }

    pub(super) fn take_assigned(&self) -> Vec<i32> {
        std::mem::take(&mut *lock(&self.assigned))
    }

    /// Marks the messages of `parts` received until now as stale.
    pub(super) fn cut(&self, parts: &[i32]) {
        let now = self.received.load(Ordering::SeqCst);
        let mut cutoffs = lock(&self.cutoffs);
        for p in parts {
            cutoffs.insert(*p, now);
        }
    }

    /// Notes a received message for the lag in seconds (with `--metrics-addr`).
    pub(super) fn note_received(&self, partition: i32, offset: i64, timestamp_ms: Option<i64>) {
        if self.lag.get().is_some() {
            lock(&self.lag_state).received(partition, offset, timestamp_ms);
        }
    }

    /// The next receipt number.
    pub(super) fn stamp(&self) -> u64 {
        self.received.fetch_add(1, Ordering::SeqCst)
    }

    /// Drops the messages received before their partition's last revocation or seek.
    pub(super) fn drop_stale(&self, messages: &mut Vec<Message>) -> usize {
        let cutoffs = lock(&self.cutoffs);
        let before = messages.len();
        messages.retain(|m| cutoffs.get(&m.partition).is_none_or(|c| m.received >= *c));
        before - messages.len()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn partitions(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}[{}]@{o}", e.topic(), e.partition()),
            _ => format!("{}[{}]", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The consumer type of the sink.
pub type SinkConsumer = StreamConsumer<SinkContext>;

/// Pauses every assigned partition (and says so to the rebalance callback).
pub(super) fn pause_all(consumer: &SinkConsumer) -> KafkaResult<TopicPartitionList> {
    consumer.context().paused.store(true, Ordering::SeqCst);
    let assignment = consumer.assignment()?;
    consumer.pause(&assignment)?;
    Ok(assignment)
}

/// Resumes every assigned partition.
pub(super) fn resume_all(consumer: &SinkConsumer) -> KafkaResult<()> {
    consumer.context().paused.store(false, Ordering::SeqCst);
    consumer.resume(&consumer.assignment()?)
}

/// Seeks `partition` to `offset`; false when librdkafka refused.
pub(super) fn seek(consumer: &SinkConsumer, topic: &str, partition: i32, offset: i64) -> bool {
    // what was received of the partition before the seek is fetched again after it
    consumer.context().cut(&[partition]);
    match consumer.seek(
        topic,
        partition,
        Offset::Offset(offset),
        Duration::from_secs(5),
    ) {
        Ok(()) => {
            info!(
                partition,
                offset, "positioned at the offset stored in PostgreSQL"
            );
            true
        }
        Err(e) => {
            warn!(partition, offset, error = %e, "cannot seek; the position is loaded and sought again with the partition's next message");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use txn_model::Transaction;

    fn received(ctx: &SinkContext, partition: i32, offset: i64) -> Message {
        Message {
            received: ctx.stamp(),
            partition,
            offset,
            key: None,
            payload: Vec::new(),
            timestamp_ms: None,
            decoded: Transaction::from_json(b"{}"),
        }
    }

    fn offsets(messages: &[Message]) -> Vec<(i32, i64)> {
        messages.iter().map(|m| (m.partition, m.offset)).collect()
    }

    #[test]
    fn messages_fetched_before_a_revocation_are_stale_and_those_after_it_are_kept() {
        let ctx = SinkContext::default();
        // the batch in hand and the read-ahead hold messages of partitions 0 and 1
        let mut buffered: Vec<Message> = (0..3)
            .flat_map(|o| [received(&ctx, 0, 100 + o), received(&ctx, 1, 200 + o)])
            .collect();
        // partition 0 is revoked and assigned again: librdkafka fetches it again from the
        // committed offset, and those messages arrive after the revocation
        ctx.cut(&[0]);
        buffered.push(received(&ctx, 0, 90));
        buffered.push(received(&ctx, 1, 203));
        assert_eq!(ctx.drop_stale(&mut buffered), 3);
        assert_eq!(
            offsets(&buffered),
            [(1, 200), (1, 201), (1, 202), (0, 90), (1, 203)]
        );
        // nothing more to drop until the next revocation or seek
        assert_eq!(ctx.drop_stale(&mut buffered), 0);
        ctx.cut(&[1]);
        assert_eq!(ctx.drop_stale(&mut buffered), 4);
        assert_eq!(offsets(&buffered), [(0, 90)]);
    }
}
