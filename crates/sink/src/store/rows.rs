//! The rows of a batch: a binary COPY of the whole batch first (as fast as PostgreSQL
//! loads); when it fails on a data error (a duplicate key, a rejected row), the
//! conflict-safe `INSERT … SELECT FROM UNNEST … ON CONFLICT DO NOTHING`, split in halves
//! under savepoints down to the single rows PostgreSQL rejects. Then the conflicting
//! duplicates are found (`conflicts`).

use std::collections::HashSet;

use chrono::NaiveDateTime;
use deadpool_postgres::Transaction as PgTransaction;
use rust_decimal::Decimal;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use txn_model::Transaction;
use uuid::fmt::Hyphenated;

use super::{Inserted, Landed, Message, Parked, Store, columns};
use crate::error::{ErrorClass, StoreError};

impl Store {
    /// Inserts the decodable messages (isolating rejected rows) and finds conflicting
    /// duplicates; returns what was inserted and what is to be parked, and why.
    pub(super) async fn land(
        &self,
        tx: &PgTransaction<'_>,
        messages: &[Message],
    ) -> Result<Landed, StoreError> {
        let mut parked: Vec<Parked> = Vec::new();
        let mut rows: Vec<usize> = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            match &m.decoded {
                Ok(_) => rows.push(i),
                Err(e) => parked.push(Parked::new(i, e.class(), e.field(), &e.to_string())),
            }
        }
        let (inserted, conflicts) = match self
            .insert_isolating(tx, messages, &rows, &mut parked)
            .await?
        {
            // the COPY took every row: no tx_id was stored before, none repeats in the batch
            Inserted::All => (rows.len() as u64, Vec::new()),
            Inserted::These(inserted) => {
                // the same content is a redelivery; different content is a conflict
                let rejected: HashSet<usize> = parked.iter().map(|p| p.index).collect();
                let conflicts = self
                    .find_conflicts(tx, messages, &rows, &rejected, &inserted)
                    .await?;
                (inserted.len() as u64, conflicts)
            }
        };
        let db_rejected = parked.iter().filter(|p| p.class == "rejected").count();
        let landed = Landed {
            inserted,
            accepted: (rows.len() - db_rejected) as u64,
            conflicts: conflicts.len() as u64,
            parked: parked.into_iter().chain(conflicts).collect(),
        };
        Ok(landed)
    }

    /// Inserts the decoded messages at `rows`; a range PostgreSQL rejects with a data error
    /// is rolled back to its savepoint and split in halves, down to the single bad rows,
    /// which are parked. Returns which rows were inserted.
    pub(super) async fn insert_isolating(
        &self,
        tx: &PgTransaction<'_>,
        messages: &[Message],
        rows: &[usize],
        parked: &mut Vec<Parked>,
    ) -> Result<Inserted, StoreError> {
        let decoded = |lo: usize, hi: usize| -> Vec<&Transaction> {
            rows[lo..hi]
                .iter()
                .filter_map(|&i| messages[i].decoded.as_ref().ok())
                .collect()
        };
        if rows.is_empty() {
            return Ok(Inserted::All);
        }
        // Fast path: binary COPY of the whole batch straight into the table, as fast as
        // PostgreSQL loads. A duplicate key or a rejected row aborts it; then the savepoint
        // is rolled back and the conflict-safe path below takes over.
        let all = decoded(0, rows.len());
        tx.batch_execute("SAVEPOINT rows").await?;
        match self.copy(tx, &all).await {
            Ok(_) => {
                tx.batch_execute("RELEASE SAVEPOINT rows").await?;
                return Ok(Inserted::All);
            }
            Err(e) if e.class() == ErrorClass::Data => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT rows").await?;
            }
            Err(e) => return Err(e),
        }

        // Conflict-safe path: INSERT … ON CONFLICT DO NOTHING; a range with a rejected row is
        // split in halves down to the single bad rows.
        let stmt = tx.prepare_cached(&self.insert_sql).await?;
        let mut inserted = HashSet::with_capacity(rows.len());
        let mut ranges = vec![(0, rows.len())];
        while let Some((lo, hi)) = ranges.pop() {
            if lo == hi {
                continue;
            }
            let part = decoded(lo, hi);
            let cols = Columns::from(part.as_slice());
            tx.batch_execute("SAVEPOINT rows").await?;
            let result = tx.query(&stmt, &cols.params()).await;
            match result {
                Ok(returned) => {
                    tx.batch_execute("RELEASE SAVEPOINT rows").await?;
                    inserted.extend(returned.iter().map(|r| r.get::<_, String>(0)));
                }
                Err(e) => {
                    let e = StoreError::Db(e);
                    if e.class() != ErrorClass::Data {
                        return Err(e);
                    }
                    tx.batch_execute("ROLLBACK TO SAVEPOINT rows").await?;
                    if hi - lo == 1 {
                        parked.push(Parked::new(
                            rows[lo],
                            "rejected",
                            e.column(),
                            &format!("rejected by PostgreSQL: {}", e.detail_line()),
                        ));
                    } else {
                        let mid = lo + (hi - lo) / 2;
                        ranges.push((mid, hi));
                        ranges.push((lo, mid));
                    }
                }
            }
        }
        Ok(Inserted::These(inserted))
    }

    /// Binary COPY of `rows` into the table; the number of rows copied.
    pub(super) async fn copy(
        &self,
        tx: &PgTransaction<'_>,
        rows: &[&Transaction],
    ) -> Result<u64, StoreError> {
        let sink = tx.copy_in(&self.copy_sql).await?;
        let writer = BinaryCopyInWriter::new(sink, &columns::copy_types());
        let mut writer = std::pin::pin!(writer);
        let mut ids = Ids::default();
        for t in rows {
            let row = Row::of(t, &mut ids);
            writer.as_mut().write(&row.values()).await?;
        }
        Ok(writer.finish().await?)
    }
}

/// Buffers for the text form of a row's two UUIDs.
struct Ids {
    tx_id: [u8; Hyphenated::LENGTH],
    user_id: [u8; Hyphenated::LENGTH],
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            tx_id: [0; Hyphenated::LENGTH],
            user_id: [0; Hyphenated::LENGTH],
        }
    }
}

/// One transaction's values as the table stores them: what the COPY writes for it and
/// what the `UNNEST` arrays hold at its index. Fields by name; [`Row::values`] orders them.
#[derive(Debug)]
struct Row<'t, 'i> {
    tx_id: &'i str,
    user_id: &'i str,
    amount: Decimal,
    currency: &'t str,
    merchant: &'t str,
    category: &'t str,
    timestamp: NaiveDateTime,
    source_system: Option<&'t str>,
    transaction_type: Option<&'t str>,
    processing_time_ms: Option<i32>,
}

impl<'t, 'i> Row<'t, 'i> {
    fn of(t: &'t Transaction, ids: &'i mut Ids) -> Row<'t, 'i> {
        Row {
            tx_id: t.tx_id.hyphenated().encode_lower(&mut ids.tx_id),
            user_id: t.user_id.hyphenated().encode_lower(&mut ids.user_id),
            amount: t.amount,
            currency: t.currency.as_str(),
            merchant: &t.merchant,
            category: &t.category,
            timestamp: t.timestamp.naive_utc(),
            source_system: t.source_system.as_deref(),
            transaction_type: t.transaction_type.as_deref(),
            // Invariant: Transaction::validate checked that it fits an INTEGER.
            processing_time_ms: t
                .processing_time_ms
                .map(|ms| i32::try_from(ms).unwrap_or(i32::MAX)),
        }
    }

    /// The values in the order of [`columns::COLUMNS`] (checked by name in the tests).
    fn values(&self) -> [&(dyn ToSql + Sync); columns::N] {
        [
            &self.tx_id,
            &self.user_id,
            &self.amount,
            &self.currency,
            &self.merchant,
            &self.category,
            &self.timestamp,
            &self.source_system,
            &self.transaction_type,
            &self.processing_time_ms,
        ]
    }
}

/// The batch as one array per column, for `UNNEST`, in the order of [`columns::COLUMNS`].
pub(super) struct Columns<'a> {
    tx_id: Vec<String>,
    user_id: Vec<String>,
    amount: Vec<Decimal>,
    currency: Vec<&'a str>,
    merchant: Vec<&'a str>,
    category: Vec<&'a str>,
    timestamp: Vec<NaiveDateTime>,
    source_system: Vec<Option<&'a str>>,
    transaction_type: Vec<Option<&'a str>>,
    processing_time_ms: Vec<Option<i32>>,
}

impl<'a> From<&[&'a Transaction]> for Columns<'a> {
    fn from(rows: &[&'a Transaction]) -> Self {
        let n = rows.len();
        let mut c = Columns {
            tx_id: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            amount: Vec::with_capacity(n),
            currency: Vec::with_capacity(n),
            merchant: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            timestamp: Vec::with_capacity(n),
            source_system: Vec::with_capacity(n),
            transaction_type: Vec::with_capacity(n),
            processing_time_ms: Vec::with_capacity(n),
        };
        let mut ids = Ids::default();
        for t in rows {
            let r = Row::of(t, &mut ids);
            c.tx_id.push(r.tx_id.to_owned());
            c.user_id.push(r.user_id.to_owned());
            c.amount.push(r.amount);
            c.currency.push(r.currency);
            c.merchant.push(r.merchant);
            c.category.push(r.category);
            c.timestamp.push(r.timestamp);
            c.source_system.push(r.source_system);
            c.transaction_type.push(r.transaction_type);
            c.processing_time_ms.push(r.processing_time_ms);
        }
        c
    }
}

impl Columns<'_> {
    /// The `UNNEST` parameters, one array per written column, in the order of
    /// [`columns::COLUMNS`] (checked against [`Row::values`] in the tests).
    fn params(&self) -> [&(dyn ToSql + Sync); columns::N] {
        [
            &self.tx_id,
            &self.user_id,
            &self.amount,
            &self.currency,
            &self.merchant,
            &self.category,
            &self.timestamp,
            &self.source_system,
            &self.transaction_type,
            &self.processing_time_ms,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The positional lists (a COPY row, the UNNEST parameters) hold each column's value
    /// at the column's index in COLUMNS, with a type the column takes: a swap of two
    /// columns of the same type fails here, not in a table.
    #[test]
    fn copy_values_and_unnest_parameters_follow_the_columns_by_name() {
        let t = Transaction::from_json(
            br#"{"tx_id":"11111111-1111-4111-8111-111111111111","user_id":"22222222-2222-4222-8222-222222222222","amount":12.34,"currency":"EUR","merchant":"The Merchant","category":"The Category","timestamp":"2026-01-02T03:04:05.678901Z","source_system":"the_source","transaction_type":"the_type","processing_time_ms":150}"#,
        )
        .expect("a valid transaction");
        let expected = |name: &str| -> String {
            match name {
                "tx_id" => format!("{:?}", t.tx_id.to_string()),
                "user_id" => format!("{:?}", t.user_id.to_string()),
                "amount" => format!("{:?}", t.amount),
                "currency" => format!("{:?}", t.currency.as_str()),
                "merchant" => format!("{:?}", t.merchant.as_str()),
                "category" => format!("{:?}", t.category.as_str()),
                "timestamp" => format!("{:?}", t.timestamp.naive_utc()),
                "source_system" => format!("{:?}", t.source_system.as_deref()),
                "transaction_type" => format!("{:?}", t.transaction_type.as_deref()),
                "processing_time_ms" => format!("{:?}", t.processing_time_ms.map(|v| v as i32)),
                other => panic!("a column the test does not know: {other}"),
            }
        };
        let mut ids = Ids::default();
        let row = Row::of(&t, &mut ids);
        let values = row.values();
        let one = [&t];
        let cols = Columns::from(&one[..]);
        let params = cols.params();
        for (i, c) in columns::COLUMNS.iter().enumerate() {
            assert_eq!(
                format!("{:?}", values[i]),
                expected(c.name),
                "COPY value of {}",
                c.name
            );
            assert_eq!(
                format!("{:?}", params[i]),
                format!("[{}]", expected(c.name)),
                "UNNEST parameter of {}",
                c.name
            );
            let mut buf = bytes::BytesMut::new();
            assert!(
                values[i].to_sql_checked(&c.pg_type, &mut buf).is_ok(),
                "{} takes its value",
                c.name
            );
        }
        // the values are distinct, so a swap cannot go unnoticed
        let mut shown: Vec<String> = columns::COLUMNS.iter().map(|c| expected(c.name)).collect();
        shown.sort();
        shown.dedup();
        assert_eq!(shown.len(), columns::N);
    }
}
