//! The outage state machine: a batch write with its retries, and when they are exhausted
//! on a transient error, a pause of every assigned partition while the database is
//! probed with capped backoff (the group membership is kept by polling). It never
//! dead-letters because of an outage.

use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message as _;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::context::{pause_all, resume_all};
use super::read::{receive, recv};
use super::{ConsumeError, Sink};
use crate::error::StoreError;
use crate::message::Message;
use crate::retry::retry;
use crate::store::{OffsetAdvance, Outcome};

impl Sink<'_> {
    /// After the retries: a transient error pauses until the database is back; anything
    /// else stops the sink.
    pub(super) async fn on_store_error(
        &mut self,
        e: StoreError,
        in_hand: usize,
        held: &mut Vec<Message>,
    ) -> Result<(), ConsumeError> {
        if e.is_transient() {
            self.report.outages += 1;
            self.ops.metrics.outages.inc();
            return self.pause_until_healthy(&e, in_hand, held).await;
        }
        error!(error = %e, class = %e.class(), "database error that retrying cannot fix");
        Err(ConsumeError::Store {
            class: e.class(),
            source: e,
        })
    }

    pub(super) async fn write_with_retries(
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
                self.ops.metrics.retried("write");
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
    pub(super) async fn pause_until_healthy(
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
        self.ops.metrics.paused.set(1);
        self.ops.health.set(
            "postgres",
            Some(format!("PostgreSQL unavailable ({cause}): paused")),
        );
        let started = Instant::now();
        let mut last_log = Instant::now();
        let mut delay = self.config.probe_min;
        let store = self.store;
        let shutdown = self.shutdown;
        loop {
            // alive (paused, not stalled): /healthz stays ok, /readyz says why not
            self.ops.health.beat();
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
        self.ops.metrics.paused.set(0);
        self.ops.health.set("postgres", None);
        info!(
            down_secs = started.elapsed().as_secs(),
            "PostgreSQL is back: resumed consumption"
        );
        Ok(())
    }
}
