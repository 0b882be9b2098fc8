//! Conflict detection: the messages whose `tx_id` was not inserted, compared with the
//! stored rows; a copy that differs is a `conflicting_duplicate`.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use deadpool_postgres::Transaction as PgTransaction;
use rust_decimal::Decimal;
use txn_model::Transaction;

use super::columns::{self, COLUMNS};
use super::{Message, Parked, Store};
use crate::error::StoreError;

impl Store {
    /// Compares the messages that were not inserted with the stored rows of the same
    /// `tx_id`; those that differ are conflicting duplicates.
    pub(super) async fn find_conflicts(
        &self,
        tx: &PgTransaction<'_>,
        messages: &[Message],
        rows: &[usize],
        rejected: &HashSet<usize>,
        inserted: &HashSet<String>,
    ) -> Result<Vec<Parked>, StoreError> {
        // Candidates: accepted rows not inserted, and every row whose tx_id occurs twice in
        // the batch (only one of them can be the inserted one).
        let mut seen: HashMap<String, u32> = HashMap::new();
        let accepted: Vec<(usize, &Transaction, String)> = rows
            .iter()
            .filter(|i| !rejected.contains(i))
            .filter_map(|&i| {
                messages[i]
                    .decoded
                    .as_ref()
                    .ok()
                    .map(|t| (i, t, t.tx_id.to_string()))
            })
            .collect();
        for (_, _, id) in &accepted {
            *seen.entry(id.clone()).or_default() += 1;
        }
        let candidates: Vec<&(usize, &Transaction, String)> = accepted
            .iter()
            .filter(|(_, _, id)| !inserted.contains(id) || seen[id] > 1)
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = candidates.iter().map(|(_, _, id)| id.as_str()).collect();
        let stored = tx
            .query(
                &format!(
                    "SELECT {} FROM {} WHERE tx_id = ANY($1)",
                    columns::list(),
                    self.names.table
                ),
                &[&ids],
            )
            .await?;
        // a row this sink cannot read (written by something else: an infinite timestamp, a
        // NaN amount) differs from every message
        let stored: HashMap<String, Option<StoredRow>> = stored
            .iter()
            .map(|r| (r.get::<_, String>(0), StoredRow::read(r).ok()))
            .collect();
        let compared: Vec<(usize, &str, Vec<&'static str>)> = candidates
            .iter()
            .filter_map(|(i, t, id)| {
                stored.get(id).map(|row| {
                    let diff = match row {
                        Some(row) => row.differences(t),
                        None => vec!["row (it cannot be read back)"],
                    };
                    (*i, id.as_str(), diff)
                })
            })
            .collect();
        // Of the copies of a tx_id this batch inserted, one is the inserted row: the first
        // copy equal to the stored row, or the first copy if none is (a trigger or a column
        // type changed it on the way in). That one is neither a duplicate nor a conflict,
        // so conflicts never outnumber the copies that were not inserted.
        let mut the_inserted: HashMap<&str, (usize, bool)> = HashMap::new();
        for (i, id, diff) in &compared {
            if inserted.contains(*id) {
                let e = the_inserted.entry(id).or_insert((*i, diff.is_empty()));
                if !e.1 && diff.is_empty() {
                    *e = (*i, true);
                }
            }
        }
        let conflicts = compared
            .into_iter()
            .filter(|(i, id, diff)| {
                !diff.is_empty() && the_inserted.get(id).is_none_or(|(first, _)| first != i)
            })
            .map(|(i, id, diff)| {
                Parked::new(
                    i,
                    "conflicting_duplicate",
                    diff.first().copied(),
                    &format!(
                        "tx_id {id} is already stored with a different {}",
                        diff.join(", ")
                    ),
                )
            })
            .collect();
        Ok(conflicts)
    }
}

/// A stored row, for comparison with a message of the same `tx_id`.
pub(crate) struct StoredRow {
    user_id: String,
    amount: Decimal,
    currency: String,
    merchant: String,
    category: String,
    timestamp: NaiveDateTime,
    source_system: Option<String>,
    transaction_type: Option<String>,
    processing_time_ms: Option<i32>,
}

impl StoredRow {
    /// Reads a row of the comparison query by column name; fails on values the Rust types
    /// cannot hold.
    pub(crate) fn read(r: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(StoredRow {
            user_id: r.try_get("user_id")?,
            amount: r.try_get("amount")?,
            currency: r.try_get("currency")?,
            merchant: r.try_get("merchant")?,
            category: r.try_get("category")?,
            timestamp: r.try_get("timestamp")?,
            source_system: r.try_get("source_system")?,
            transaction_type: r.try_get("transaction_type")?,
            processing_time_ms: r.try_get("processing_time_ms")?,
        })
    }

    /// The fields in which `t` differs (the extra columns only when stored), named as in
    /// [`COLUMNS`]: one comparison per written column, in their order (a column added there
    /// and not here does not compile).
    pub(crate) fn differences(&self, t: &Transaction) -> Vec<&'static str> {
        // The optional columns differ only when both sides have a value: a message in the
        // seed table's shape (without them) redelivers a row written by our producer.
        fn differ<A: PartialEq<B>, B>(stored: Option<&A>, sent: Option<&B>) -> bool {
            matches!((stored, sent), (Some(a), Some(b)) if a != b)
        }
        let differs: [bool; columns::N] = [
            false, // tx_id: the row was found by it
            self.user_id != t.user_id.to_string(),
            self.amount != t.amount,
            self.currency != t.currency.as_str(),
            self.merchant != t.merchant,
            self.category != t.category,
            self.timestamp != t.timestamp.naive_utc(),
            differ(self.source_system.as_ref(), t.source_system.as_ref()),
            differ(self.transaction_type.as_ref(), t.transaction_type.as_ref()),
            differ(
                self.processing_time_ms.map(i64::from).as_ref(),
                t.processing_time_ms.map(i64::from).as_ref(),
            ),
        ];
        COLUMNS
            .iter()
            .zip(differs)
            .filter_map(|(c, differs)| differs.then_some(c.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transaction {
        Transaction::from_json(
            br#"{"tx_id":"11111111-1111-4111-8111-111111111111","user_id":"22222222-2222-4222-8222-222222222222","amount":12.34,"currency":"EUR","merchant":"M","category":"C","timestamp":"2026-01-02T03:04:05.678901Z","source_system":"s","transaction_type":"t","processing_time_ms":150}"#,
        )
        .expect("a valid transaction")
    }

    fn stored(t: &Transaction) -> StoredRow {
        StoredRow {
            user_id: t.user_id.to_string(),
            amount: t.amount,
            currency: t.currency.as_str().to_owned(),
            merchant: t.merchant.clone(),
            category: t.category.clone(),
            timestamp: t.timestamp.naive_utc(),
            source_system: t.source_system.clone(),
            transaction_type: t.transaction_type.clone(),
            processing_time_ms: t.processing_time_ms.map(|v| v as i32),
        }
    }

    /// Each field changed alone is reported under its column's name; the optional ones
    /// only when both sides have a value.
    #[test]
    fn a_difference_is_named_after_its_column() {
        let row = stored(&sample());
        assert!(row.differences(&sample()).is_empty());
        type Change = fn(&mut Transaction);
        let cases: [(&str, Change); 9] = [
            ("user_id", |t| t.user_id = uuid::Uuid::nil()),
            ("amount", |t| t.amount += Decimal::ONE),
            ("currency", |t| t.currency = "USD".parse().expect("USD")),
            ("merchant", |t| t.merchant.push('x')),
            ("category", |t| t.category.push('x')),
            ("timestamp", |t| {
                t.timestamp += chrono::Duration::microseconds(1)
            }),
            ("source_system", |t| t.source_system = Some("other".into())),
            ("transaction_type", |t| {
                t.transaction_type = Some("other".into())
            }),
            ("processing_time_ms", |t| t.processing_time_ms = Some(151)),
        ];
        for (name, change) in cases {
            let mut t = sample();
            change(&mut t);
            assert_eq!(row.differences(&t), [name], "{name} changed alone");
        }
        // a copy in the seed table's shape (no optional fields) is the same row
        let mut seed_shape = sample();
        seed_shape.source_system = None;
        seed_shape.transaction_type = None;
        seed_shape.processing_time_ms = None;
        assert!(row.differences(&seed_shape).is_empty());
    }
}
