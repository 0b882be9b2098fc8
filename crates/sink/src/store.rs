//! PostgreSQL: the connection pool, the schema, and the batch write. The only module that
//! touches SQL.
//!
//! A batch is written by one `INSERT … SELECT FROM UNNEST(arrays) ON CONFLICT (tx_id) DO
//! NOTHING` in its own transaction: one round trip per batch, and a redelivered message
//! (after a restart or a rebalance) is a no-op rather than a duplicate.

use std::time::Duration;

use chrono::NaiveDateTime;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use rust_decimal::Decimal;
use tokio_postgres::NoTls;
use txn_model::Transaction;

use crate::config::PgConfig;
use crate::error::{StoreError, io_error};

/// The schema, as shipped in `sql/` (and mounted into the compose PostgreSQL).
const SCHEMA_SQL: &str = include_str!("../../../sql/001_transactions_sink.sql");
/// The table name used in `SCHEMA_SQL`, replaced by the configured one.
const DEFAULT_TABLE: &str = "transactions_sink";

/// Outcome of writing one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Rows newly inserted.
    pub inserted: u64,
    /// Rows skipped because their `tx_id` was already stored (redeliveries).
    pub duplicates: u64,
}

/// The sink's table in PostgreSQL.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    insert_sql: String,
}

impl Store {
    /// Connects, checks credentials and database, and creates or upgrades the table.
    ///
    /// # Errors
    /// [`StoreError::Startup`] with the cause and the fix when PostgreSQL is unreachable,
    /// rejects the credentials, lacks the database, or the table cannot be created.
    pub async fn connect(pg: &PgConfig, table: &str) -> Result<Store, StoreError> {
        let quoted = quote_table(table)?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&pg.host)
            .port(pg.port)
            .dbname(&pg.database)
            .user(&pg.user)
            .password(&pg.password)
            .application_name(&pg.application_name)
            .connect_timeout(pg.connect_timeout)
            .keepalives_idle(Duration::from_secs(30));
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

        let client = pool.get().await.map_err(|e| startup_error(pg, e.into()))?;
        let schema = SCHEMA_SQL.replace(DEFAULT_TABLE, &quoted);
        // One sink at a time creates the table: concurrent CREATE TABLE IF NOT EXISTS
        // can collide on the catalog otherwise.
        let ddl = format!(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext('txn-sink-schema')); {schema} COMMIT;"
        );
        client.batch_execute(&ddl).await.map_err(|e| {
            StoreError::Startup(format!(
                "cannot create or upgrade table {table} in database {}: {}: grant user {} CREATE on the schema, or create the table with sql/001_transactions_sink.sql",
                pg.database,
                StoreError::Db(e),
                pg.user
            ))
        })?;
        let insert_sql = format!(
            "INSERT INTO {quoted} (tx_id, user_id, amount, currency, merchant, category, \"timestamp\", \
             source_system, transaction_type, processing_time_ms) \
             SELECT * FROM UNNEST($1::varchar[], $2::varchar[], $3::numeric[], $4::varchar[], $5::varchar[], \
             $6::varchar[], $7::timestamp[], $8::varchar[], $9::varchar[], $10::int4[]) \
             ON CONFLICT (tx_id) DO NOTHING"
        );
        client.prepare_cached(&insert_sql).await?;
        Ok(Store { pool, insert_sql })
    }

    /// Writes `rows` in one transaction; rows whose `tx_id` is already stored are skipped.
    ///
    /// # Errors
    /// [`StoreError`], to be classified by the caller (nothing is written on error).
    ///
    /// # Cancel safety
    /// Not cancel-safe in the sense that a cancelled call may or may not have committed;
    /// either way a retry is harmless, because the insert is idempotent.
    pub async fn write(&self, rows: &[Transaction]) -> Result<Written, StoreError> {
        if rows.is_empty() {
            return Ok(Written::default());
        }
        let cols = Columns::from(rows);
        let mut client = self.pool.get().await?;
        let stmt = client.prepare_cached(&self.insert_sql).await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
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
            .await?;
        tx.commit().await?;
        Ok(Written {
            inserted,
            duplicates: rows.len() as u64 - inserted,
        })
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
    source_system: Vec<&'a str>,
    transaction_type: Vec<&'a str>,
    processing_time_ms: Vec<i32>,
}

impl<'a> From<&'a [Transaction]> for Columns<'a> {
    fn from(rows: &'a [Transaction]) -> Self {
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
            c.source_system.push(&r.source_system);
            c.transaction_type.push(&r.transaction_type);
            // Invariant: Transaction::validate checked that it fits an INTEGER.
            c.processing_time_ms
                .push(i32::try_from(r.processing_time_ms).unwrap_or(i32::MAX));
        }
        c
    }
}

/// Quotes a table name: a plain identifier, optionally schema-qualified.
fn quote_table(table: &str) -> Result<String, StoreError> {
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) {
        return Err(StoreError::Startup(format!(
            "invalid table name {table:?}: use lower-case letters, digits and underscores, optionally schema.table"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
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
    fn table_names_are_validated_and_quoted() {
        assert_eq!(
            quote_table("transactions_sink").unwrap(),
            "\"transactions_sink\""
        );
        assert_eq!(quote_table("s1.t_2").unwrap(), "\"s1\".\"t_2\"");
        for bad in ["", "Bad", "a;drop table x", "a.b.c", "1abc", "a-b", "x\"y"] {
            assert!(quote_table(bad).is_err(), "{bad}");
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
            assert!(SCHEMA_SQL.contains(col), "{col}");
        }
    }
}
