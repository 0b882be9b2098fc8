//! The sink's tables, as the catalog has them: read first, create or upgrade only what is
//! missing, then check that the role holds the grants the sink needs.
//!
//! A sink whose tables are in place runs no DDL at all, so a role granted only DML
//! (`sql/grants.sql`) can run it, and a start never takes a table lock. When something is
//! missing, the statements of `sql/*.sql` that create it (and only those) run in one
//! transaction under an advisory lock (one sink at a time) and a `lock_timeout`, so an
//! upgrade behind a long-running query fails in bounded time with the fix instead of
//! blocking every reader of the table meanwhile.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deadpool_postgres::Client;

use crate::config::PgConfig;
use crate::error::StoreError;

/// The schema, as shipped in `sql/` (the table, then the sink's own state).
pub(crate) const SCHEMA_SQL: [&str; 2] = [
    include_str!("../../../sql/001_transactions_sink.sql"),
    include_str!("../../../sql/002_sink_state.sql"),
];
/// The table name used in `SCHEMA_SQL`, replaced by the configured one (it also prefixes
/// the state tables: `<table>_offsets`, `<table>_dead_letters`).
pub(crate) const DEFAULT_TABLE: &str = "transactions_sink";
/// Longest wait for a lock while creating or upgrading a table.
pub(crate) const DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// One statement of the shipped schema, and what it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ddl {
    /// `CREATE TABLE IF NOT EXISTS <table> …`
    Table { table: String, sql: String },
    /// `ALTER TABLE <table> ADD COLUMN IF NOT EXISTS <column> …`
    Column {
        table: String,
        column: String,
        sql: String,
    },
}

impl Ddl {
    pub(crate) fn sql(&self) -> &str {
        match self {
            Ddl::Table { sql, .. } | Ddl::Column { sql, .. } => sql,
        }
    }

    /// Whether the catalog lacks what this statement creates.
    pub(crate) fn needed(&self, catalog: &Catalog) -> bool {
        match self {
            Ddl::Table { table, .. } => !catalog.contains_key(table),
            Ddl::Column { table, column, .. } => catalog
                .get(table)
                .is_none_or(|columns| !columns.contains(column)),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Ddl::Table { table, .. } => format!("table {table}"),
            Ddl::Column { table, column, .. } => format!("column {table}.{column}"),
        }
    }
}

/// The shipped schema's statements for `table` (comments dropped, names substituted).
///
/// # Panics
/// On a statement of a form this module does not know (a unit test runs it on the
/// shipped files, so a new form is caught there).
pub(crate) fn statements(table: &str) -> Vec<Ddl> {
    let mut out = Vec::new();
    for file in SCHEMA_SQL {
        let code: String = file
            .lines()
            .map(|l| l.split_once("--").map_or(l, |(code, _)| code))
            .collect::<Vec<_>>()
            .join("\n");
        for stmt in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let sql = stmt.replace(DEFAULT_TABLE, table);
            let words: Vec<&str> = sql.split_whitespace().collect();
            let ddl = match words.as_slice() {
                ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name, ..] => Ddl::Table {
                    table: (*name).to_owned(),
                    sql,
                },
                [
                    "ALTER",
                    "TABLE",
                    name,
                    "ADD",
                    "COLUMN",
                    "IF",
                    "NOT",
                    "EXISTS",
                    column,
                    ..,
                ] => Ddl::Column {
                    table: (*name).to_owned(),
                    column: (*column).to_owned(),
                    sql,
                },
                _ => panic!("sql/: unsupported statement form: {sql}"),
            };
            out.push(ddl);
        }
    }
    out
}

/// The sink's tables that exist, with their columns.
pub(crate) type Catalog = HashMap<String, HashSet<String>>;

/// Reads which of `tables` exist (as resolved by `search_path`) and their columns.
pub(crate) async fn catalog(
    client: &impl tokio_postgres::GenericClient,
    tables: &[&str],
) -> Result<Catalog, StoreError> {
    let rows = client
        .query(
            "SELECT t.name, array_remove(array_agg(a.attname::text), NULL) \
             FROM unnest($1::text[]) AS t(name) \
             JOIN pg_class c ON c.oid = to_regclass(t.name) \
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             GROUP BY t.name",
            &[&tables],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let columns: Vec<String> = r.get(1);
            (r.get::<_, String>(0), columns.into_iter().collect())
        })
        .collect())
}

/// The grants the sink needs on its tables (`sql/grants.sql` gives exactly these).
pub(crate) fn required_grants(
    table: &str,
    offsets: &str,
    dead_letters: &str,
) -> Vec<(String, &'static str)> {
    let mut g = Vec::new();
    for p in ["SELECT", "INSERT"] {
        g.push((table.to_owned(), p));
    }
    for t in [offsets, dead_letters] {
        for p in ["SELECT", "INSERT", "UPDATE"] {
            g.push((t.to_owned(), p));
        }
    }
    g
}

/// Makes sure the tables exist with every column, creating only what is missing, and that
/// the role holds the grants the sink needs.
///
/// # Errors
/// [`StoreError::Startup`] naming what is missing (a table, a column, a grant) and the fix.
pub(crate) async fn prepare(
    client: &mut Client,
    pg: &PgConfig,
    table: &str,
    offsets: &str,
    dead_letters: &str,
) -> Result<(), StoreError> {
    let tables = [table, offsets, dead_letters];
    let ddl = statements(table);
    let session: &tokio_postgres::Client = client;
    let found = catalog(session, &tables).await?;
    if ddl.iter().any(|d| d.needed(&found)) {
        create_missing(client, pg, &tables, &ddl).await?;
    }
    let session: &tokio_postgres::Client = client;
    check_keys(session, table, offsets, dead_letters).await?;
    check_grants(session, pg, table, offsets, dead_letters).await
}

/// The unique keys the sink's writes rely on: `tx_id` (without it, a redelivered message
/// would land twice by COPY), a partition's position, a dead letter's place.
pub(crate) fn required_keys<'a>(
    table: &'a str,
    offsets: &'a str,
    dead_letters: &'a str,
) -> [(&'a str, &'static str); 3] {
    [
        (table, "tx_id"),
        (offsets, "group_id,topic,partition"),
        (dead_letters, "topic,partition,kafka_offset"),
    ]
}

/// Checks that each table has a unique index (or key) on exactly its columns, as
/// `ON CONFLICT` infers one: not partial, on plain columns, in any order.
pub(crate) async fn check_keys(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
    offsets: &str,
    dead_letters: &str,
) -> Result<(), StoreError> {
    let (names, keys): (Vec<&str>, Vec<&str>) = required_keys(table, offsets, dead_letters)
        .into_iter()
        .unzip();
    // the unique indexes on exactly the key's columns: ON CONFLICT needs one that is valid
    // and immediate, and refuses to run if any of them is deferrable
    let rows = client
        .query(
            "SELECT t.name, t.cols FROM unnest($1::text[], $2::text[]) AS t(name, cols) \
             CROSS JOIN LATERAL (SELECT coalesce(bool_or(i.indisvalid AND i.indisready AND i.indimmediate), false) AS usable, \
                                        coalesce(bool_or(NOT i.indimmediate), false) AS deferrable \
               FROM pg_index i \
               WHERE i.indrelid = to_regclass(t.name) AND i.indisunique AND i.indpred IS NULL \
               AND i.indnkeyatts = cardinality(string_to_array(t.cols, ',')) \
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a \
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey[0:i.indnkeyatts - 1])) \
                 = (SELECT array_agg(c ORDER BY c) FROM unnest(string_to_array(t.cols, ',')) c)) k \
             WHERE NOT k.usable OR k.deferrable",
            &[&names, &keys],
        )
        .await?;
    match rows.first() {
        None => Ok(()),
        Some(r) => {
            let (name, cols): (String, String) = (r.get(0), r.get(1));
            let cols = cols.replace(',', ", ");
            Err(StoreError::Startup(format!(
                "table {name} has no unique key on ({cols}) that the sink's writes can use (none, or only deferrable or invalid ones; without it a redelivered message lands twice): add a plain one as the table's owner, e.g. ALTER TABLE {name} ADD UNIQUE ({cols}) (sql/*.sql has the keys)"
            )))
        }
    }
}

async fn create_missing(
    client: &mut Client,
    pg: &PgConfig,
    tables: &[&str],
    ddl: &[Ddl],
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'; SELECT pg_advisory_xact_lock(hashtext('txn-sink-schema'))",
        DDL_LOCK_TIMEOUT.as_millis()
    ))
    .await
    .map_err(|e| ddl_error(pg, "the schema lock", &StoreError::Db(e)))?;
    // again under the lock: another sink may have created them meanwhile
    let found = catalog(&*tx, tables).await?;
    for d in ddl.iter().filter(|d| d.needed(&found)) {
        tx.batch_execute(d.sql())
            .await
            .map_err(|e| ddl_error(pg, &d.describe(), &StoreError::Db(e)))?;
    }
    tx.commit().await?;
    Ok(())
}

fn ddl_error(pg: &PgConfig, what: &str, e: &StoreError) -> StoreError {
    let fix = match e.sqlstate() {
        Some("55P03") => format!(
            "another session held a lock for more than {} s (a long-running query or open transaction): end it, or apply sql/*.sql yourself at a quiet moment",
            DDL_LOCK_TIMEOUT.as_secs()
        ),
        Some("42501") => format!(
            "user {} may not create it: create the tables as their owner with sql/*.sql, then grant the sink's role what sql/grants.sql lists",
            pg.user
        ),
        _ => "create the tables with sql/*.sql".to_owned(),
    };
    StoreError::Startup(format!(
        "cannot create {what} in database {}: {}: {fix}",
        pg.database,
        e.detail_line()
    ))
}

pub(crate) async fn check_grants(
    client: &impl tokio_postgres::GenericClient,
    pg: &PgConfig,
    table: &str,
    offsets: &str,
    dead_letters: &str,
) -> Result<(), StoreError> {
    let (names, privileges): (Vec<String>, Vec<&str>) =
        required_grants(table, offsets, dead_letters)
            .into_iter()
            .unzip();
    let rows = client
        .query(
            "SELECT g.name, g.privilege FROM unnest($1::text[], $2::text[]) AS g(name, privilege) \
             WHERE NOT has_table_privilege(g.name, g.privilege) \
             UNION ALL \
             SELECT s.seq, 'USAGE' FROM (SELECT pg_get_serial_sequence($3, 'id') AS seq) s \
             WHERE s.seq IS NOT NULL AND NOT has_sequence_privilege(s.seq, 'USAGE')",
            &[&names, &privileges, &dead_letters],
        )
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut missing: Vec<(String, Vec<String>)> = Vec::new();
    for r in &rows {
        let (name, privilege): (String, String) = (r.get(0), r.get(1));
        match missing.iter_mut().find(|(n, _)| *n == name) {
            Some((_, ps)) => ps.push(privilege),
            None => missing.push((name, vec![privilege])),
        }
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(n, ps)| format!("{} on {n}", ps.join(", ")))
        .collect();
    Err(StoreError::Startup(format!(
        "user {} lacks {} in database {}: grant them (sql/grants.sql lists what the sink needs)",
        pg.user,
        list.join("; "),
        pg.database
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_statement_is_understood_and_renamed() {
        let ddl = statements("s.t");
        let tables: Vec<&str> = ddl
            .iter()
            .filter_map(|d| match d {
                Ddl::Table { table, .. } => Some(table.as_str()),
                Ddl::Column { .. } => None,
            })
            .collect();
        assert_eq!(tables, ["s.t", "s.t_offsets", "s.t_dead_letters"]);
        let columns: Vec<&str> = ddl
            .iter()
            .filter_map(|d| match d {
                Ddl::Column { table, column, .. } if table == "s.t" => Some(column.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            columns,
            ["source_system", "transaction_type", "processing_time_ms"]
        );
        assert!(ddl.iter().all(|d| !d.sql().contains(DEFAULT_TABLE)));
    }

    #[test]
    fn only_what_the_catalog_lacks_is_created() {
        let ddl = statements("t");
        let mut catalog = Catalog::new();
        let all = |c: &Catalog| ddl.iter().filter(|d| d.needed(c)).count();
        assert_eq!(all(&catalog), ddl.len());
        let seed_columns = [
            "tx_id",
            "user_id",
            "amount",
            "currency",
            "merchant",
            "category",
            "timestamp",
            "ingested_at",
        ];
        catalog.insert(
            "t".into(),
            seed_columns.iter().map(|c| c.to_string()).collect(),
        );
        catalog.insert("t_offsets".into(), HashSet::new());
        catalog.insert("t_dead_letters".into(), HashSet::new());
        // the seed's own table: only the three extra columns
        let needed: Vec<String> = ddl
            .iter()
            .filter(|d| d.needed(&catalog))
            .map(Ddl::describe)
            .collect();
        assert_eq!(
            needed,
            [
                "column t.source_system",
                "column t.transaction_type",
                "column t.processing_time_ms"
            ]
        );
        for c in ["source_system", "transaction_type", "processing_time_ms"] {
            catalog.get_mut("t").unwrap().insert(c.into());
        }
        assert_eq!(all(&catalog), 0);
    }
}
