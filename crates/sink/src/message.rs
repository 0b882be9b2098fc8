//! A consumed message: where it came from, its raw bytes and its decoding. Shared by the
//! consumer (which makes it), the planner, the store (which writes or parks it) and the
//! progress lines.

use txn_model::{DecodeError, Transaction};

/// One consumed message, copied out of librdkafka's buffer, with its decoding.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its order of receipt in this process (0 for a dead letter being replayed: it did not come
    /// from the consumer).
    pub received: u64,
    /// Partition it came from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its payload bytes (empty when it had none).
    pub payload: Vec<u8>,
    /// The broker's timestamp, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The decoded transaction, or why it is not one.
    pub decoded: Result<Transaction, DecodeError>,
}

impl Message {
    /// Roughly the bytes it holds: key and payload, the decoded fields (a copy of parts of
    /// the payload, so at most as large) and the struct itself. What the byte budget counts.
    pub fn weight(&self) -> usize {
        2 * self.payload.len() + self.key.as_ref().map_or(0, Vec::len) + 256
    }
}

/// Total [`Message::weight`] of `messages`.
pub fn weight(messages: &[Message]) -> usize {
    messages.iter().map(Message::weight).sum()
}

#[cfg(test)]
impl Message {
    /// A message of `partition` at `offset` with an empty payload, for unit tests.
    pub(crate) fn at(partition: i32, offset: i64, timestamp_ms: Option<i64>) -> Message {
        Message {
            received: 0,
            partition,
            offset,
            key: None,
            payload: Vec::new(),
            timestamp_ms,
            decoded: Transaction::from_json(b""),
        }
    }
}
