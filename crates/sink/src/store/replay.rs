//! Replay of dead letters after a fix, in bounded pages, one transaction each.

use std::collections::HashMap;

use txn_model::Transaction;

use super::{Message, Parked, Store};
use crate::error::StoreError;

impl Store {
    /// Replays dead letters after a fix: each selected dead letter not yet replayed is
    /// decoded again and inserted; those that now land are marked replayed, the others
    /// get one more attempt and their new reason. In pages (by id) of at most
    /// [`REPLAY_PAGE_ROWS`] dead letters and [`REPLAY_PAGE_BYTES`] bytes, one transaction
    /// each, so memory and transactions stay bounded however many are parked; a page
    /// committed stays committed if a later one fails.
    ///
    /// # Errors
    /// [`StoreError`] of the queries.
    pub async fn replay_dead_letters(
        &self,
        ids: &[i64],
        class: Option<&str>,
    ) -> Result<Replayed, StoreError> {
        let dl = &self.names.dead_letters;
        let sizes_sql = format!(
            "SELECT id, coalesce(octet_length(payload), 0)::int8 + coalesce(octet_length(message_key), 0)::int8 \
             FROM {dl} WHERE replayed_at IS NULL AND payload IS NOT NULL AND id > $3 AND (cardinality($1::int8[]) = 0 OR id = ANY($1)) \
             AND ($2::text IS NULL OR error_class = $2) ORDER BY id LIMIT $4"
        );
        let rows_sql = format!(
            "SELECT id, partition, kafka_offset, message_key, payload FROM {dl} \
             WHERE id = ANY($1) AND replayed_at IS NULL AND payload IS NOT NULL ORDER BY id FOR UPDATE"
        );
        // dead letters without a payload (class unstorable) have nothing to replay: counted
        let without_payload = self
            .bounded(async |client| {
                let n: i64 = client
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM {dl} WHERE replayed_at IS NULL AND payload IS NULL \
                             AND (cardinality($1::int8[]) = 0 OR id = ANY($1)) AND ($2::text IS NULL OR error_class = $2)"
                        ),
                        &[&ids, &class],
                    )
                    .await?
                    .get(0);
                Ok(n as u64)
            })
            .await?;
        let mut report = Replayed {
            without_payload,
            ..Replayed::default()
        };
        let mut after = i64::MIN;
        loop {
            let page: Vec<i64> = self
                .bounded(async |client| {
                    let sizes = client
                        .query(
                            &sizes_sql,
                            &[&ids, &class, &after, &(REPLAY_PAGE_ROWS as i64)],
                        )
                        .await?;
                    let mut page = Vec::new();
                    let mut bytes = 0usize;
                    for r in &sizes {
                        let size = usize::try_from(r.get::<_, i64>(1)).unwrap_or(usize::MAX);
                        if !page.is_empty() && bytes.saturating_add(size) > REPLAY_PAGE_BYTES {
                            break;
                        }
                        bytes = bytes.saturating_add(size);
                        page.push(r.get::<_, i64>(0));
                    }
                    Ok(page)
                })
                .await?;
            let Some(&last) = page.last() else {
                return Ok(report);
            };
            after = last;
            let r = self
                .bounded(async |client| self.replay_page(client, &rows_sql, &page).await)
                .await?;
            report.replayed += r.replayed;
            report.inserted += r.inserted;
            report.still_failing += r.still_failing;
        }
    }

    /// Replays the dead letters `ids` in one transaction.
    async fn replay_page(
        &self,
        client: &mut deadpool_postgres::Client,
        rows_sql: &str,
        ids: &[i64],
    ) -> Result<Replayed, StoreError> {
        let tx = client.transaction().await?;
        let rows = tx.query(rows_sql, &[&ids]).await?;
        let (letter_ids, messages): (Vec<i64>, Vec<Message>) = rows
            .iter()
            .map(|r| {
                let payload: Option<Vec<u8>> = r.get(4);
                let payload = payload.unwrap_or_default();
                (
                    r.get::<_, i64>(0),
                    Message {
                        received: 0,
                        partition: r.get(1),
                        offset: r.get(2),
                        key: r.get(3),
                        decoded: Transaction::from_json(&payload),
                        payload,
                        timestamp_ms: None,
                    },
                )
            })
            .unzip();
        let landed = self.land(&tx, &messages).await?;
        let parked: HashMap<usize, &Parked> = landed.parked.iter().map(|p| (p.index, p)).collect();
        let mut report = Replayed::default();
        let dl = &self.names.dead_letters;
        let failed_sql = format!(
            "UPDATE {dl} SET attempts = attempts + 1, last_failed_at = now(), error_class = $2, field = $3, reason = $4 WHERE id = $1"
        );
        let mut replayed = Vec::new();
        for (i, id) in letter_ids.iter().enumerate() {
            match parked.get(&i) {
                Some(p) => {
                    report.still_failing += 1;
                    tx.execute(&failed_sql, &[id, &p.class, &p.field, &p.reason])
                        .await?;
                }
                None => replayed.push(*id),
            }
        }
        report.replayed = replayed.len() as u64;
        tx.execute(
            &format!("UPDATE {dl} SET replayed_at = now() WHERE id = ANY($1)"),
            &[&replayed],
        )
        .await?;
        report.inserted = landed.inserted;
        tx.commit().await?;
        Ok(report)
    }
}

/// Most dead letters replayed in one transaction.
pub const REPLAY_PAGE_ROWS: usize = 500;
/// Most key and payload bytes replayed in one transaction (a larger dead letter goes alone).
pub const REPLAY_PAGE_BYTES: usize = 16 << 20;

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replayed {
    /// Dead letters that now landed (or were already stored identically): marked replayed.
    pub replayed: u64,
    /// Rows newly inserted by the replay.
    pub inserted: u64,
    /// Dead letters that still fail: kept, with one more attempt.
    pub still_failing: u64,
    /// Selected dead letters without a payload (class `unstorable`): skipped, since they
    /// hold nothing to decode (their messages are in Kafka at their offsets).
    pub without_payload: u64,
}
