//! Positions: where each partition stands against the offsets table, and the seeks that
//! keep the consumer there. The rules are the pure planner's (`plan`); here they meet
//! the consumer (seeks, log-end checks) and the store (stored offsets, with retries).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::context::{lock, seek};
use super::plan::{Plan, Position, log_end_checked, plan, sought};
use super::{ConsumeError, RESEEK_EVERY, Sink};
use crate::error::StoreError;
use crate::message::Message;
use crate::retry::retry;

impl Sink<'_> {
    /// Forgets the positions of partitions revoked since the last look (they are loaded
    /// again if they come back), and drops the messages in `batch` fetched before their
    /// partition's last revocation or seek (their owner reads them again).
    pub(super) fn forget_stale(&mut self, batch: &mut Vec<Message>) {
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
    pub(super) async fn position_assigned(&mut self) -> Result<(), StoreError> {
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
    pub(super) fn assigned(&self, parts: Option<&[i32]>) -> Vec<i32> {
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
    pub(super) fn seek_stored(&mut self, stored: &HashMap<i32, i64>, checked: bool) {
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
    pub(super) async fn reposition(&mut self, parts: &[i32]) -> Result<(), StoreError> {
        let assigned = self.assigned(Some(parts));
        if assigned.is_empty() {
            return Ok(());
        }
        let stored = self.stored_offsets(&assigned).await?;
        self.seek_stored(&stored, true);
        Ok(())
    }

    /// The stored next offsets of `parts` (absent: none stored), with retries.
    pub(super) async fn stored_offsets(
        &self,
        parts: &[i32],
    ) -> Result<HashMap<i32, i64>, StoreError> {
        let policy = &self.config.retry;
        retry(
            policy,
            StoreError::is_transient,
            |attempt, e, wait| {
                self.ops.metrics.retried("load_offsets");
                warn!(attempt, of = policy.retries, wait_ms = wait.as_millis() as u64, error = %e, "loading stored offsets failed; retrying");
            },
            || self.store.load_offsets(&self.config.group_id, &self.config.topic, parts),
        )
        .await
    }

    /// Loads the stored positions of the batch's partitions not seen since assignment.
    pub(super) async fn load_positions(&mut self, batch: &[Message]) -> Result<(), StoreError> {
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
    pub(super) fn plan(&mut self, batch: Vec<Message>) -> Result<Plan, ConsumeError> {
        let plan = plan(&mut self.positions, batch);
        self.report.skipped += plan.skipped;
        self.ops.metrics.skipped.inc_by(plan.skipped);
        for &(partition, stored) in &plan.behind {
            let known = self.check_log_end(partition, stored)?;
            log_end_checked(&mut self.positions, partition, known);
        }
        for s in &plan.seeks {
            let done = seek(self.consumer, &self.config.topic, s.partition, s.offset);
            sought(&mut self.positions, &mut self.reseek, s, done);
        }
        Ok(plan)
    }

    /// Tries the failed seeks back again (at most every [`RESEEK_EVERY`]); those of
    /// partitions no longer assigned are dropped (the next owner loads its own position).
    pub(super) fn retry_seeks(&mut self) {
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
    pub(super) fn check_log_end(&self, partition: i32, stored: i64) -> Result<bool, ConsumeError> {
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
}
