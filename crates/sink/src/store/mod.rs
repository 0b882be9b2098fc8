//! PostgreSQL: the connection pool, the schema, and the batch write. The only module that
//! touches SQL.
//!
//! A batch is one database transaction holding, together:
//! 1. the offset advance of each partition in the batch, conditional on the offset the sink
//!    expects (a stale owner that lost the partition in a rebalance finds another value
//!    and rolls back instead of writing);
//! 2. the rows, `INSERT … SELECT FROM UNNEST(arrays) ON CONFLICT (tx_id) DO NOTHING
//!    RETURNING tx_id`; when PostgreSQL rejects a row for good (SQLSTATE class 22 or 23)
//!    the batch is split in halves under savepoints until the bad rows are isolated, so
//!    one bad row never holds back the good ones;
//! 3. the dead letters: undecodable messages, rejected rows, and conflicting duplicates
//!    (a `tx_id` already stored with different content).
//!
//! So rows, dead letters and offsets commit or roll back as one: "written or parked" and
//! "offset advanced" can never part.
//!
//! Here: the pool, the offsets and the rows (COPY, and the isolating fallback);
//! `conflicts` compares what was not inserted with the stored rows; `dead_letters` parks;
//! `replay` replays dead letters after a fix.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::NaiveDateTime;
use deadpool_postgres::Transaction as PgTransaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use rust_decimal::Decimal;
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use txn_model::Transaction;
use uuid::fmt::Hyphenated;

use crate::config::PgConfig;
use crate::dead_letter;
use crate::error::{ErrorClass, StoreError, io_error};
use crate::schema;

pub mod columns;
mod conflicts;
mod dead_letters;
mod replay;

pub use replay::{REPLAY_PAGE_BYTES, REPLAY_PAGE_ROWS, Replayed};

pub use crate::message::{Message, weight};

/// Moving one partition's stored offset from `expected` to `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAdvance {
    /// The partition.
    pub partition: i32,
    /// The stored next offset the sink believes is current (`None`: no row yet).
    pub expected: Option<i64>,
    /// The next offset after this batch.
    pub next: i64,
}

/// What a batch write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything committed.
    Committed(Written),
    /// Another consumer advanced these partitions: nothing was written (rolled back).
    Stale(Vec<i32>),
}

/// Counts of a committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Rows newly inserted.
    pub inserted: u64,
    /// Messages whose `tx_id` was already stored with the same content.
    pub duplicates: u64,
    /// Messages whose `tx_id` was already stored with different content (dead-lettered).
    pub conflicts: u64,
    /// Dead letters written (undecodable, rejected, conflicting).
    pub dead_letters: u64,
}

/// Table names, validated.
#[derive(Debug, Clone)]
struct Names {
    table: String,
    offsets: String,
    dead_letters: String,
}

/// The sink's tables in PostgreSQL.
#[derive(Clone)]
pub struct Store {
    /// Connections (a batch's transaction holds one; the probe another).
    pool: Pool,
    /// The table and its state tables, validated.
    names: Names,
    /// Client-side deadline of one operation (see [`PgConfig::operation_timeout`]).
    op_timeout: Duration,
    /// The fallback path's `INSERT … SELECT FROM UNNEST … ON CONFLICT DO NOTHING`, built
    /// once (and prepared on each connection, cached).
    insert_sql: String,
    /// The fast path's binary `COPY`, built once.
    copy_sql: String,
}

/// What `land` did with a batch.
struct Landed {
    /// Rows newly inserted.
    inserted: u64,
    /// Decoded messages PostgreSQL accepted (inserted, duplicates and conflicts).
    accepted: u64,
    /// Conflicting duplicates among them.
    conflicts: u64,
    /// Messages to park: undecodable, rejected, conflicting.
    parked: Vec<Parked>,
}

impl Landed {
    fn written(&self) -> Written {
        Written {
            inserted: self.inserted,
            // find_conflicts never counts the inserted copy of a tx_id as a conflict, so
            // this cannot go below zero; saturating all the same: a count must never panic
            duplicates: self
                .accepted
                .saturating_sub(self.inserted)
                .saturating_sub(self.conflicts),
            conflicts: self.conflicts,
            dead_letters: self.parked.len() as u64,
        }
    }
}

/// Which rows `insert_isolating` inserted.
enum Inserted {
    /// All of them (the COPY fast path).
    All,
    /// The rows of these `tx_id`s (the others were stored before, or rejected).
    These(HashSet<String>),
}

/// A message that becomes a dead letter, and why (text already made storable).
struct Parked {
    index: usize,
    class: &'static str,
    field: Option<String>,
    reason: String,
}

impl Parked {
    /// Sanitizes what comes from the message (see [`dead_letter`]).
    fn new(index: usize, class: &'static str, field: Option<&str>, reason: &str) -> Parked {
        Parked {
            index,
            class,
            field: field.map(dead_letter::field),
            reason: dead_letter::reason(reason),
        }
    }
}

impl Store {
    /// Connects, checks credentials and database, creates or upgrades the tables where
    /// something is missing (see [`schema`]), and checks the role's grants.
    ///
    /// # Errors
    /// [`StoreError::Startup`] with the cause and the fix when PostgreSQL is unreachable,
    /// rejects the credentials, lacks the database, or the tables cannot be created.
    pub async fn connect(pg: &PgConfig, table: &str) -> Result<Store, StoreError> {
        let names = names(table)?;
        let cfg = pg.tokio_config();
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pg.pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(pg.connect_timeout),
                create: Some(pg.connect_timeout),
                recycle: Some(pg.connect_timeout),
            })
            .build()
            .map_err(|e| StoreError::Startup(format!("cannot build the PostgreSQL pool: {e}")))?;

        let op_timeout = pg.operation_timeout();
        let mut client = pool.get().await.map_err(|e| startup_error(pg, e.into()))?;
        let prepared = tokio::time::timeout(
            op_timeout + schema::DDL_LOCK_TIMEOUT,
            schema::prepare(
                &mut client,
                pg,
                &names.table,
                &names.offsets,
                &names.dead_letters,
            ),
        )
        .await;
        match prepared {
            Ok(r) => r?,
            Err(_) => {
                return Err(StoreError::Startup(format!(
                    "PostgreSQL at {}:{} stopped answering while the sink checked its tables: check the server and the network",
                    pg.host, pg.port
                )));
            }
        }
        let insert_sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM UNNEST({}) ON CONFLICT (tx_id) DO NOTHING RETURNING tx_id",
            names.table,
            columns::list(),
            columns::unnest_args()
        );
        client.prepare_cached(&insert_sql).await?;
        let copy_sql = format!(
            "COPY {} ({}) FROM STDIN BINARY",
            names.table,
            columns::list()
        );
        Ok(Store {
            pool,
            names,
            op_timeout,
            insert_sql,
            copy_sql,
        })
    }

    /// A cheap round trip, to tell whether the database is back after an outage.
    ///
    /// # Errors
    /// The [`StoreError`] of the attempt.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async |client| {
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    /// Runs `op` on a pooled connection within the operation deadline. Past it the
    /// connection is taken out of the pool and dropped (it may be stuck on a dead network
    /// or mid-transaction), and the error is [`StoreError::Timeout`], which is transient.
    async fn bounded<T>(
        &self,
        op: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.pool.get().await?;
        match tokio::time::timeout(self.op_timeout, op(&mut client)).await {
            Ok(r) => r,
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                Err(StoreError::Timeout(self.op_timeout))
            }
        }
    }

    /// The stored next offsets of `partitions` for `group` and `topic` (absent: none stored).
    ///
    /// # Errors
    /// [`StoreError`] of the query.
    pub async fn load_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, StoreError> {
        let sql = format!(
            "SELECT partition, next_offset FROM {} WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)",
            self.names.offsets
        );
        self.bounded(async |client| {
            let rows = client.query(&sql, &[&group, &topic, &partitions]).await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await
    }

    /// Sets the stored next offset of `group`'s `partitions` of `topic` (every one stored
    /// when empty) to `to`; returns how many rows changed.
    ///
    /// # Errors
    /// [`StoreError`] of the update.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
        to: i64,
    ) -> Result<Vec<i32>, StoreError> {
        let sql = format!(
            "UPDATE {} SET next_offset = $4, updated_at = now() \
             WHERE group_id = $1 AND topic = $2 AND (cardinality($3::int4[]) = 0 OR partition = ANY($3)) \
             RETURNING partition",
            self.names.offsets
        );
        self.bounded(async |client| {
            let tx = client.transaction().await?;
            let reset: Vec<i32> = tx
                .query(&sql, &[&group, &topic, &partitions, &to])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // all or nothing: a partition asked for and not stored undoes the rest
            if partitions.iter().all(|p| reset.contains(p)) {
                tx.commit().await?;
            }
            Ok(reset)
        })
        .await
    }

    /// Writes a batch: offsets, rows and dead letters in one transaction (see the module docs).
    ///
    /// # Errors
    /// [`StoreError`] for a transient or configuration error (nothing is written then).
    ///
    /// # Cancel safety
    /// A cancelled call may or may not have committed; either way the offsets and the rows
    /// agree, and a retry is harmless.
    pub async fn write_batch(
        &self,
        group: &str,
        topic: &str,
        messages: &[Message],
        advances: &[OffsetAdvance],
    ) -> Result<Outcome, StoreError> {
        self.bounded(async |client| {
            self.write_batch_on(client, group, topic, messages, advances)
                .await
        })
        .await
    }

    async fn write_batch_on(
        &self,
        client: &mut deadpool_postgres::Client,
        group: &str,
        topic: &str,
        messages: &[Message],
        advances: &[OffsetAdvance],
    ) -> Result<Outcome, StoreError> {
        let tx = client.transaction().await?;

        // 1. offsets, conditionally: a stale owner rolls back here
        let mut stale = Vec::new();
        for a in advances {
            let n = match a.expected {
                Some(expected) => {
                    tx.execute(
                        &format!(
                            "UPDATE {} SET next_offset = $4, updated_at = now() \
                             WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
                            self.names.offsets
                        ),
                        &[&group, &topic, &a.partition, &a.next, &expected],
                    )
                    .await?
                }
                None => {
                    tx.execute(
                        &format!(
                            "INSERT INTO {} (group_id, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (group_id, topic, partition) DO NOTHING",
                            self.names.offsets
                        ),
                        &[&group, &topic, &a.partition, &a.next],
                    )
                    .await?
                }
            };
            if n != 1 {
                stale.push(a.partition);
            }
        }
        if !stale.is_empty() {
            tx.rollback().await?;
            return Ok(Outcome::Stale(stale));
        }

        // 2. rows, isolating the ones PostgreSQL rejects, and 3. conflicting duplicates
        let landed = self.land(&tx, messages).await?;

        // 4. dead letters
        self.park(&tx, group, topic, messages, &landed.parked)
            .await?;
        tx.commit().await?;
        Ok(Outcome::Committed(landed.written()))
    }

    /// Inserts the decodable messages (isolating rejected rows) and finds conflicting
    /// duplicates; returns what was inserted and what is to be parked, and why.
    async fn land(
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
    async fn insert_isolating(
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
            let result = tx
                .query(
                    &stmt,
                    &[
                        &cols.tx_id,
                        &cols.user_id,
                        &cols.amount,
                        &cols.currency,
                        &cols.merchant,
                        &cols.category,
                        &cols.timestamp,
                        &cols.source_system,
                        &cols.transaction_type,
                        &cols.processing_time_ms,
                    ],
                )
                .await;
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
    async fn copy(&self, tx: &PgTransaction<'_>, rows: &[&Transaction]) -> Result<u64, StoreError> {
        let sink = tx.copy_in(&self.copy_sql).await?;
        let writer = BinaryCopyInWriter::new(sink, &columns::copy_types());
        let mut writer = std::pin::pin!(writer);
        let (mut tx_buf, mut user_buf) = ([0u8; Hyphenated::LENGTH], [0u8; Hyphenated::LENGTH]);
        for t in rows {
            let tx_id: &str = t.tx_id.hyphenated().encode_lower(&mut tx_buf);
            let user_id: &str = t.user_id.hyphenated().encode_lower(&mut user_buf);
            // Invariant: Transaction::validate checked that it fits an INTEGER.
            let ms = t
                .processing_time_ms
                .map(|ms| i32::try_from(ms).unwrap_or(i32::MAX));
            writer
                .as_mut()
                .write(&[
                    &tx_id,
                    &user_id,
                    &t.amount,
                    &t.currency.as_str(),
                    &t.merchant,
                    &t.category,
                    &t.timestamp.naive_utc(),
                    &t.source_system.as_deref(),
                    &t.transaction_type.as_deref(),
                    &ms,
                ])
                .await?;
        }
        Ok(writer.finish().await?)
    }
}

/// The batch as one array per column, for `UNNEST`.
struct Columns<'a> {
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
        for r in rows {
            c.tx_id.push(r.tx_id.to_string());
            c.user_id.push(r.user_id.to_string());
            c.amount.push(r.amount);
            c.currency.push(r.currency.as_str());
            c.merchant.push(&r.merchant);
            c.category.push(&r.category);
            c.timestamp.push(r.timestamp.naive_utc());
            c.source_system.push(r.source_system.as_deref());
            c.transaction_type.push(r.transaction_type.as_deref());
            // Invariant: Transaction::validate checked that it fits an INTEGER.
            c.processing_time_ms.push(
                r.processing_time_ms
                    .map(|ms| i32::try_from(ms).unwrap_or(i32::MAX)),
            );
        }
        c
    }
}

/// Validates a table name (a plain lower-case identifier, optionally schema-qualified) and
/// derives the names of the state tables. Validated names need no quoting.
fn names(table: &str) -> Result<Names, StoreError> {
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 48
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) {
        return Err(StoreError::Startup(format!(
            "invalid table name {table:?}: use lower-case letters, digits and underscores (at most 48), optionally schema.table"
        )));
    }
    Ok(Names {
        table: table.to_owned(),
        offsets: format!("{table}_offsets"),
        dead_letters: format!("{table}_dead_letters"),
    })
}

/// Turns a failed first connection into one line with the cause and the fix.
fn startup_error(pg: &PgConfig, e: StoreError) -> StoreError {
    let at = format!("{}:{}", pg.host, pg.port);
    let msg = match e.sqlstate() {
        Some("28P01" | "28000") => format!(
            "PostgreSQL at {at} rejected user {:?} (authentication failed): check POSTGRES_USER and POSTGRES_PASSWORD in .env",
            pg.user
        ),
        Some("3D000") => format!(
            "database {:?} does not exist on PostgreSQL at {at}: create it (`scripts/stack.sh up` does) or set POSTGRES_DB",
            pg.database
        ),
        Some("53300") => format!(
            "PostgreSQL at {at} has no free connection slot: raise max_connections or stop idle clients"
        ),
        _ => {
            let cause = match &e {
                StoreError::Db(db)
                | StoreError::Pool(deadpool_postgres::PoolError::Backend(db)) => {
                    io_error(db).map_or_else(|| e.to_string(), ToString::to_string)
                }
                StoreError::Pool(deadpool_postgres::PoolError::Timeout(_)) => {
                    format!("no answer within {} s", pg.connect_timeout.as_secs())
                }
                other => other.to_string(),
            };
            format!(
                "cannot connect to PostgreSQL at {at} ({cause}): is it running? Start it with `scripts/stack.sh up` or `docker compose -f kafka-docker-compose.yml up -d`, or fix POSTGRES_HOST and POSTGRES_PORT"
            )
        }
    };
    StoreError::Startup(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated_and_state_tables_derived() {
        let n = names("transactions_sink").unwrap();
        assert_eq!(n.offsets, "transactions_sink_offsets");
        assert_eq!(n.dead_letters, "transactions_sink_dead_letters");
        assert_eq!(names("s1.t_2").unwrap().dead_letters, "s1.t_2_dead_letters");
        for bad in [
            "",
            "Bad",
            "a;drop table x",
            "a.b.c",
            "1abc",
            "a-b",
            "x\"y",
            &"a".repeat(49),
        ] {
            assert!(names(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shipped_schema_has_the_seed_columns() {
        for col in [
            "tx_id VARCHAR PRIMARY KEY",
            "user_id VARCHAR NOT NULL",
            "amount DECIMAL(10,2) NOT NULL",
            "currency VARCHAR(3) NOT NULL",
            "merchant VARCHAR(255) NOT NULL",
            "category VARCHAR(100) NOT NULL",
            "timestamp TIMESTAMP NOT NULL",
            "ingested_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP",
        ] {
            assert!(schema::SCHEMA_SQL[0].contains(col), "{col}");
        }
        for table in [
            "transactions_sink_offsets",
            "transactions_sink_dead_letters",
        ] {
            assert!(schema::SCHEMA_SQL[1].contains(&format!("CREATE TABLE IF NOT EXISTS {table}")));
        }
    }
}
