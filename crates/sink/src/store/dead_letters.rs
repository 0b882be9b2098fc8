//! Parking: dead letters written in bounded chunks, a rejected chunk row by row, a row
//! still rejected as a minimal `unstorable` one, and never over an unreplayed dead letter
//! of a different message.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction as PgTransaction;

use super::{Message, Parked, Store};
use crate::dead_letter;
use crate::error::{ErrorClass, StoreError};

/// Most dead letters written by one statement.
const PARK_CHUNK_ROWS: usize = 1000;
/// Most key and payload bytes sent by one dead-letter statement (one larger message
/// still goes alone).
const PARK_CHUNK_BYTES: usize = 8 << 20;

/// The conflict clause of a dead-letter insert. The same message parked again at its
/// place (same Kafka timestamp and key, or same bytes when it has no timestamp) takes one
/// more attempt and its new reason, and keeps the stored payload (an operator may have
/// corrected it for a replay). A different message there (the topic was recreated, or its
/// offsets reset) replaces the old dead letter only if that one was replayed; an
/// unreplayed one is its message's only copy, so it is left alone, the row is not
/// returned, and [`Store::park`] stops the sink naming it.
const PARK_AGAIN: &str = "ON CONFLICT (topic, partition, kafka_offset) DO UPDATE SET \
    attempts = CASE WHEN (SAME) THEN d.attempts + 1 ELSE 1 END, \
    first_failed_at = CASE WHEN (SAME) THEN d.first_failed_at ELSE now() END, \
    payload = CASE WHEN (SAME) THEN d.payload ELSE EXCLUDED.payload END, \
    message_key = CASE WHEN (SAME) THEN d.message_key ELSE EXCLUDED.message_key END, \
    group_id = EXCLUDED.group_id, kafka_timestamp = EXCLUDED.kafka_timestamp, \
    last_failed_at = now(), error_class = EXCLUDED.error_class, field = EXCLUDED.field, \
    reason = EXCLUDED.reason, replayed_at = NULL \
    WHERE (SAME) OR d.replayed_at IS NOT NULL \
    RETURNING partition, kafka_offset";

/// "The same message", for a full dead letter.
const SAME_FULL: &str = "(d.kafka_timestamp, d.message_key) IS NOT DISTINCT FROM \
    (EXCLUDED.kafka_timestamp, EXCLUDED.message_key) \
    AND (d.kafka_timestamp IS NOT NULL OR d.payload IS NOT DISTINCT FROM EXCLUDED.payload)";

/// "The same message", for a minimal one (no key or payload to compare).
const SAME_MINIMAL: &str = "d.kafka_timestamp IS NOT DISTINCT FROM EXCLUDED.kafka_timestamp \
    AND d.kafka_timestamp IS NOT NULL";

/// [`PARK_AGAIN`] with its notion of sameness.
fn park_again(same: &str) -> String {
    PARK_AGAIN.replace("SAME", same)
}

/// The error of a dead letter that would overwrite a different, unreplayed one.
fn occupied(dl: &str, topic: &str, partition: i32, offset: i64) -> StoreError {
    StoreError::Startup(format!(
        "the dead letter at topic {topic} partition {partition} offset {offset} in {dl} holds a different message that was never replayed (the topic was recreated, or its offsets reset, since it was parked); it is that message's only copy, so the sink stops rather than overwrite it: export it, then delete it or set its replayed_at, and restart the sink"
    ))
}

/// `s` as printable ASCII on one line, at most 500 characters (others become `?`).
fn ascii_line(s: &str) -> String {
    s.chars()
        .take(500)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl Store {
    /// Writes dead letters, in chunks bounded in rows and bytes; a message parked again
    /// (after a redelivery) counts one more attempt. A chunk PostgreSQL rejects is written
    /// again one row at a time, and a row it still rejects becomes a minimal `unstorable`
    /// dead letter (where it came from, and the rejection), so parking never fails
    /// because of the message. Returns the original classes of those stored so.
    pub(super) async fn park(
        &self,
        tx: &PgTransaction<'_>,
        group: &str,
        topic: &str,
        messages: &[Message],
        parked: &[Parked],
    ) -> Result<Vec<&'static str>, StoreError> {
        // the classes of the dead letters stored as minimal `unstorable` ones instead
        let mut unstorable = Vec::new();
        let mut rest = parked;
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take(PARK_CHUNK_ROWS)
                .take_while(|p| {
                    let m = &messages[p.index];
                    bytes += m.payload.len() + m.key.as_ref().map_or(0, Vec::len);
                    bytes <= PARK_CHUNK_BYTES
                })
                .count()
                .max(1);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            match self
                .in_savepoint(
                    tx,
                    self.insert_dead_letters(tx, group, topic, messages, chunk),
                )
                .await
            {
                Ok(()) => continue,
                Err(e) if e.class() == ErrorClass::Data => {}
                Err(e) => return Err(e),
            }
            for p in chunk {
                let one = std::slice::from_ref(p);
                let rejection = match self
                    .in_savepoint(
                        tx,
                        self.insert_dead_letters(tx, group, topic, messages, one),
                    )
                    .await
                {
                    Ok(()) => continue,
                    Err(e) if e.class() == ErrorClass::Data => e,
                    Err(e) => return Err(e),
                };
                let m = &messages[p.index];
                tracing::warn!(partition = m.partition, offset = m.offset, error = %rejection, "PostgreSQL rejected a dead letter: storing a minimal one");
                // no text of the message (it may be what PostgreSQL refused) and ASCII only,
                // so the database's encoding cannot refuse it either
                let reason = ascii_line(&format!(
                    "PostgreSQL rejected the dead letter of this {} error: {}",
                    p.class,
                    rejection.sqlstate().unwrap_or("no SQLSTATE")
                ));
                let ts = dead_letter::kafka_timestamp(m.timestamp_ms);
                let minimal = async {
                    let written = tx
                        .query(
                            &format!(
                                "INSERT INTO {dl} AS d (group_id, topic, partition, kafka_offset, kafka_timestamp, error_class, reason) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7) {again}",
                                dl = self.names.dead_letters,
                                again = park_again(SAME_MINIMAL)
                            ),
                            &[&group, &topic, &m.partition, &m.offset, &ts, &dead_letter::UNSTORABLE, &reason],
                        )
                        .await?;
                    if written.is_empty() {
                        return Err(occupied(
                            &self.names.dead_letters,
                            topic,
                            m.partition,
                            m.offset,
                        ));
                    }
                    Ok::<(), StoreError>(())
                };
                if let Err(e) = self.in_savepoint(tx, minimal).await {
                    if e.class() != ErrorClass::Data {
                        return Err(e);
                    }
                    // not the message: the table refuses rows (a trigger, a constraint)
                    return Err(StoreError::Startup(format!(
                        "PostgreSQL refused even a minimal dead letter (partition {} offset {}): {}: fix what refuses rows of {} (a trigger or constraint), then restart the sink",
                        m.partition,
                        m.offset,
                        e.detail_line(),
                        self.names.dead_letters
                    )));
                }
                unstorable.push(p.class);
            }
        }
        Ok(unstorable)
    }

    /// Runs `work` under a savepoint: released when it succeeds, rolled back to when it
    /// fails (the transaction stays usable).
    async fn in_savepoint(
        &self,
        tx: &PgTransaction<'_>,
        work: impl std::future::Future<Output = Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        tx.batch_execute("SAVEPOINT dead_letters").await?;
        match work.await {
            Ok(()) => {
                tx.batch_execute("RELEASE SAVEPOINT dead_letters").await?;
                Ok(())
            }
            Err(e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT dead_letters")
                    .await?;
                Err(e)
            }
        }
    }

    /// One statement inserting the dead letters of `parked`.
    async fn insert_dead_letters(
        &self,
        tx: &PgTransaction<'_>,
        group: &str,
        topic: &str,
        messages: &[Message],
        parked: &[Parked],
    ) -> Result<(), StoreError> {
        let n = parked.len();
        let mut partition = Vec::with_capacity(n);
        let mut offset = Vec::with_capacity(n);
        let mut ts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
        let mut key: Vec<Option<&[u8]>> = Vec::with_capacity(n);
        let mut payload: Vec<&[u8]> = Vec::with_capacity(n);
        let mut class = Vec::with_capacity(n);
        let mut field: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut reason = Vec::with_capacity(n);
        for p in parked {
            let m = &messages[p.index];
            partition.push(m.partition);
            offset.push(m.offset);
            ts.push(dead_letter::kafka_timestamp(m.timestamp_ms));
            key.push(m.key.as_deref());
            payload.push(&m.payload);
            class.push(p.class);
            field.push(p.field.as_deref());
            reason.push(p.reason.as_str());
        }
        let written = tx
            .query(
                &format!(
                    "INSERT INTO {dl} AS d (group_id, topic, partition, kafka_offset, kafka_timestamp, message_key, payload, \
                     error_class, field, reason) \
                     SELECT $1, $2, * FROM UNNEST($3::int4[], $4::int8[], $5::timestamptz[], $6::bytea[], $7::bytea[], \
                     $8::varchar[], $9::varchar[], $10::text[]) \
                     {again}",
                    dl = self.names.dead_letters,
                    again = park_again(SAME_FULL)
                ),
                &[&group, &topic, &partition, &offset, &ts, &key, &payload, &class, &field, &reason],
            )
            .await?;
        if written.len() < n {
            let written: std::collections::HashSet<(i32, i64)> =
                written.iter().map(|r| (r.get(0), r.get(1))).collect();
            if let Some((p, o)) = partition
                .iter()
                .zip(&offset)
                .find(|(p, o)| !written.contains(&(**p, **o)))
            {
                return Err(occupied(&self.names.dead_letters, topic, *p, *o));
            }
        }
        Ok(())
    }
}
