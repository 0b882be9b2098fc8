//! Consumer lag per partition, in messages and in seconds, for the metrics.
//!
//! The loop shares what only it knows (each partition's stored next offset) and the receive
//! path notes, per partition, the oldest message received and not yet written; librdkafka's
//! statistics callback brings the log end. Lag in messages is the log end minus the stored
//! next offset; lag in seconds is the age of the oldest message not yet written (its Kafka
//! timestamp to now), 0 once the partition is drained. The rules are pure functions here,
//! unit-tested; the context holds a [`LagState`] behind one lock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::message::Message;

/// What the lag gauges are computed from (behind the context's lock).
#[derive(Debug, Default)]
pub struct LagState {
    /// The stored next offset of each partition the sink holds a position for.
    stored_next: HashMap<i32, i64>,
    /// Per partition, the `(offset, timestamp in ms)` of the oldest message received at
    /// or past the stored next offset: the oldest not yet written that the sink knows of
    /// (a message without a timestamp counts, its age is just not known).
    oldest: HashMap<i32, (i64, Option<i64>)>,
    /// Log ends asked of the brokers directly, and when: librdkafka learns them only from
    /// fetches, which stop while the sink is paused or its read-ahead is full.
    fetched_ends: HashMap<i32, (i64, Instant)>,
}

/// How long a log end asked of the brokers counts.
const FETCHED_END_KEEPS: Duration = Duration::from_secs(15);

/// One partition's lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// The partition.
    pub partition: i32,
    /// Messages in Kafka not yet in the table.
    pub messages: i64,
    /// Age of the oldest of them, when the sink has received it (or 0 when there are none).
    pub seconds: Option<f64>,
}

impl LagState {
    /// Notes a received message (its Kafka timestamp, if it has one). A message below
    /// the stored offset is already written (it is skipped), so it is not lag.
    pub fn received(&mut self, partition: i32, offset: i64, timestamp_ms: Option<i64>) {
        if self
            .stored_next
            .get(&partition)
            .is_some_and(|&n| offset < n)
        {
            return;
        }
        let oldest = self
            .oldest
            .entry(partition)
            .or_insert((offset, timestamp_ms));
        // a seek back fetches lower offsets again: the lowest is the oldest
        if offset < oldest.0 {
            *oldest = (offset, timestamp_ms);
        }
    }

    /// The partitions whose lag is computed (those with a stored position).
    pub fn partitions(&self) -> Vec<i32> {
        self.stored_next.keys().copied().collect()
    }

    /// Notes a partition's log end as the brokers answered it at `at`.
    pub fn fetched_end(&mut self, partition: i32, end: i64, at: Instant) {
        self.fetched_ends.insert(partition, (end, at));
    }

    /// Sets the stored positions after a commit or a rebalance. A partition's oldest
    /// message now written is replaced by the oldest of `pending` (the messages received
    /// and not written: the read-ahead) past its new position, if any.
    pub fn stored(&mut self, next: HashMap<i32, i64>, pending: &[Message]) {
        self.oldest
            .retain(|p, (offset, _)| next.get(p).is_none_or(|&n| *offset >= n));
        for m in pending {
            if !self.oldest.contains_key(&m.partition) || self.oldest[&m.partition].0 > m.offset {
                let written = next.get(&m.partition).is_some_and(|&n| m.offset < n);
                if !written {
                    self.oldest.insert(m.partition, (m.offset, m.timestamp_ms));
                }
            }
        }
        // a partition no longer held (revoked) has no position and no lag of ours
        self.oldest.retain(|p, _| next.contains_key(p));
        self.fetched_ends.retain(|p, _| next.contains_key(p));
        self.stored_next = next;
    }

    /// The lag of each `(partition, log end, consumer position)` whose stored position is
    /// known, at `now_ms` (milliseconds since the epoch). The consumer position is
    /// librdkafka's next offset for the application, which also moves past what it never
    /// hands over (a transaction's commit marker, aborted records): when it has reached the
    /// log end and no message past the stored offset is waiting, the offsets in between
    /// hold nothing to write, and the lag is 0.
    pub fn lags(&self, partitions: &[(i32, i64, i64)], now_ms: i64) -> Vec<Lag> {
        partitions
            .iter()
            .filter_map(|&(partition, end, position)| {
                let next = *self.stored_next.get(&partition)?;
                // the later of librdkafka's (from its last fetch) and a recent answer
                let end = match self.fetched_ends.get(&partition) {
                    Some(&(fetched, at)) if at.elapsed() < FETCHED_END_KEEPS => end.max(fetched),
                    _ => end,
                };
                let nothing_to_write = position >= end && !self.oldest.contains_key(&partition);
                let messages = if nothing_to_write {
                    0
                } else {
                    (end - next).max(0)
                };
                let seconds = if messages == 0 {
                    Some(0.0)
                } else {
                    self.oldest
                        .get(&partition)
                        .and_then(|&(_, ts)| ts)
                        .map(|ts| (now_ms - ts).max(0) as f64 / 1000.0)
                };
                Some(Lag {
                    partition,
                    messages,
                    seconds,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64, ts: i64) -> Message {
        Message::at(partition, offset, Some(ts))
    }

    #[test]
    fn lag_in_seconds_is_the_age_of_the_oldest_unwritten_message_and_0_when_drained() {
        let mut s = LagState::default();
        // no stored position yet: no lag series
        assert_eq!(s.lags(&[(0, 10, -1)], 5_000), vec![]);
        s.stored(HashMap::from([(0, 4), (1, 7)]), &[]);
        // nothing received yet: the age is not known
        assert_eq!(
            s.lags(&[(0, 10, -1), (1, 7, -1)], 5_000),
            vec![
                Lag {
                    partition: 0,
                    messages: 6,
                    seconds: None
                },
                Lag {
                    partition: 1,
                    messages: 0,
                    seconds: Some(0.0)
                },
            ]
        );
        // below the stored offset: already written, not lag
        s.received(0, 3, Some(1_000));
        s.received(0, 4, Some(2_000));
        s.received(0, 5, Some(2_500));
        assert_eq!(s.lags(&[(0, 10, -1)], 5_000)[0].seconds, Some(3.0));
        // a seek back refetches a lower offset: it is the oldest
        s.stored(HashMap::from([(0, 2)]), &[]);
        s.received(0, 2, Some(500));
        assert_eq!(s.lags(&[(0, 10, -1)], 5_000)[0].seconds, Some(4.5));
        // a commit up to 5: the oldest pending past it is the read-ahead's offset 6
        let pending = [
            message(0, 7, 4_000),
            message(0, 6, 3_000),
            message(0, 4, 100),
        ];
        s.stored(HashMap::from([(0, 6)]), &pending);
        assert_eq!(
            s.lags(&[(0, 10, -1)], 5_000),
            vec![Lag {
                partition: 0,
                messages: 4,
                seconds: Some(2.0)
            }]
        );
        // everything written: 0, however old the last message
        s.stored(HashMap::from([(0, 10)]), &[]);
        assert_eq!(s.lags(&[(0, 10, -1)], 9_000)[0].seconds, Some(0.0));
        // a clock behind the producer's never gives a negative age
        s.received(0, 10, Some(20_000));
        assert_eq!(s.lags(&[(0, 11, -1)], 9_000)[0].seconds, Some(0.0));
        // revoked: no position, no oldest
        s.stored(HashMap::new(), &[]);
        assert_eq!(s.lags(&[(0, 11, -1)], 9_000), vec![]);
        s.received(0, 11, Some(1));
        s.stored(HashMap::from([(0, 12)]), &[]);
        assert!(s.oldest.is_empty());
        // a transactional producer's commit marker at 12: the log ends at 13, the consumer
        // moved past the marker, nothing waits: drained
        assert_eq!(
            s.lags(&[(0, 13, 13)], 9_000),
            vec![Lag {
                partition: 0,
                messages: 0,
                seconds: Some(0.0)
            }]
        );
        // but a message received and not written is lag, wherever the consumer is
        s.received(0, 12, Some(8_000));
        assert_eq!(
            s.lags(&[(0, 13, 13)], 9_000),
            vec![Lag {
                partition: 0,
                messages: 1,
                seconds: Some(1.0)
            }]
        );
        // and messages not received yet are lag too
        s.stored(HashMap::from([(0, 13)]), &[]);
        assert_eq!(s.lags(&[(0, 20, 13)], 9_000)[0].messages, 7);
        // a message without a timestamp waits too: lag, of an age not known
        s.received(0, 13, None);
        assert_eq!(
            s.lags(&[(0, 14, 14)], 9_000),
            vec![Lag {
                partition: 0,
                messages: 1,
                seconds: None
            }]
        );
        // paused, librdkafka's log end stands still: the brokers' answer counts while
        // recent, and never lowers it
        assert_eq!(s.partitions(), vec![0]);
        s.fetched_end(0, 30, Instant::now());
        assert_eq!(s.lags(&[(0, 14, 14)], 9_000)[0].messages, 17);
        assert_eq!(s.lags(&[(0, 40, 14)], 9_000)[0].messages, 27);
        s.fetched_end(0, 30, Instant::now() - FETCHED_END_KEEPS);
        assert_eq!(s.lags(&[(0, 14, 14)], 9_000)[0].messages, 1);
    }
}
