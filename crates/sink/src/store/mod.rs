//! PostgreSQL: the connection pool and the batch write. With `schema` (catalog checks and
//! DDL at start-up), the only module that runs SQL.
//!
//! A batch is one database transaction holding, together:
//! 1. the offset advance of each partition in the batch, conditional on the offset the sink
//!    expects (a stale owner that lost the partition in a rebalance finds another value
//!    and rolls back instead of writing);
//! 2. the rows: a binary COPY of the whole batch under a savepoint; when it fails on a
//!    data error (a redelivered `tx_id`, a rejected row), `INSERT … SELECT FROM
//!    UNNEST(arrays) ON CONFLICT (tx_id) DO NOTHING RETURNING tx_id`; when PostgreSQL
//!    rejects a row for good (SQLSTATE class 22 or 23) the batch is split in halves under
//!    savepoints until the bad rows are isolated, so one bad row never holds back the
//!    good ones;
//! 3. the dead letters: undecodable messages, rejected rows, and conflicting duplicates
//!    (a `tx_id` already stored with different content).
//!
//! So rows, dead letters and offsets commit or roll back as one: "written or parked" and
//! "offset advanced" can never part.
//!
//! Here: the pool and the batch transaction; `columns` is the one list of written columns;
//! `rows` inserts (COPY, and the isolating fallback); `conflicts` compares what was not inserted with the stored rows;
//! `dead_letters` parks; `offsets` loads and resets stored offsets outside a batch;
//! `replay` replays dead letters after a fix.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};

use crate::config::PgConfig;
use crate::dead_letter;
use crate::error::{StoreError, io_error};
use crate::schema;

pub mod columns;
pub(crate) mod conflicts;
mod dead_letters;
mod offsets;
mod replay;
mod rows;

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
    /// Of those, how many of each class, indexed as [`dead_letter::CLASSES`].
    pub dead_letters_by_class: [u64; dead_letter::CLASSES.len()],
}

/// Table names, validated.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) table: String,
    pub(crate) offsets: String,
    pub(crate) dead_letters: String,
}

/// The validated names of `table` and its state tables (see [`Store::connect`]).
///
/// # Errors
/// [`StoreError::Startup`] for a name that is not a plain identifier.
pub(crate) fn table_names(table: &str) -> Result<Names, StoreError> {
    names(table)
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
            dead_letters_by_class: self.parked.iter().fold(
                [0; dead_letter::CLASSES.len()],
                |mut by, p| {
                    by[dead_letter::class_index(p.class)] += 1;
                    by
                },
            ),
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
        let tls = pg
            .tls_connector()
            .map_err(|e| StoreError::Startup(e.to_string()))?;
        let manager = Manager::from_config(
            cfg,
            tls,
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
        let unstorable = self
            .park(&tx, group, topic, messages, &landed.parked)
            .await?;
        tx.commit().await?;
        let mut written = landed.written();
        // counted under the class the table holds
        for class in unstorable {
            let original = &mut written.dead_letters_by_class[dead_letter::class_index(class)];
            *original = original.saturating_sub(1);
            written.dead_letters_by_class[dead_letter::class_index(dead_letter::UNSTORABLE)] += 1;
        }
        Ok(Outcome::Committed(written))
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

/// Opens one session (the tools: `reconcile`, `doctor`), failing with the same one-line
/// cause and fix as the sink's start.
///
/// # Errors
/// [`StoreError::Startup`] naming the cause and the fix.
pub(crate) async fn open_session(pg: &PgConfig) -> Result<tokio_postgres::Client, StoreError> {
    match pg.connect().await {
        Ok(client) => Ok(client),
        Err(txn_runtime::postgres::ConnectError::Config(e)) => {
            Err(StoreError::Startup(e.to_string()))
        }
        Err(txn_runtime::postgres::ConnectError::Db(e)) => {
            Err(startup_error(pg, StoreError::Db(e)))
        }
    }
}

/// Turns a failed first connection into one line with the cause and the fix.
fn startup_error(pg: &PgConfig, e: StoreError) -> StoreError {
    let at = format!("{}:{}", pg.host, pg.port);
    // a TLS problem first: "no pg_hba.conf entry … no encryption" is not a wrong password
    let driver = match &e {
        StoreError::Db(db) | StoreError::Pool(deadpool_postgres::PoolError::Backend(db)) => {
            Some(db)
        }
        _ => None,
    };
    if let Some(line) = driver.and_then(|db| pg.explain_tls(db)) {
        return StoreError::Startup(line);
    }
    let msg = match e.sqlstate() {
        Some("28P01" | "28000") => format!(
            "PostgreSQL at {at} rejected user {:?} (authentication failed): check POSTGRES_USER and POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE, or DATABASE_URL)",
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
            "tx_id VARCHAR COLLATE \"C\" PRIMARY KEY",
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
