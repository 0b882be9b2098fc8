//! The columns the sink writes, in one place: their order drives the binary COPY, the
//! `UNNEST` insert of the fallback path, the comparison of conflicting duplicates and the
//! tests' reading of rows. `ingested_at` is left to its default.

use tokio_postgres::types::Type;

/// One written column.
pub struct Column {
    /// Its name in the table.
    pub name: &'static str,
    /// Its type, as the driver sends it.
    pub pg_type: Type,
    /// Its array type, for `UNNEST($n::…)`.
    pub array: &'static str,
}

/// How many columns the sink writes. The per-row value arrays of the COPY, the `UNNEST`
/// parameters and the conflict comparison are `[_; N]`: a column added to [`COLUMNS`]
/// and not to one of them does not compile.
pub const N: usize = 10;

/// The written columns, in the order of every statement and value list (`rows`, `conflicts`).
pub const COLUMNS: [Column; N] = [
    col("tx_id", Type::VARCHAR, "varchar[]"),
    col("user_id", Type::VARCHAR, "varchar[]"),
    col("amount", Type::NUMERIC, "numeric[]"),
    col("currency", Type::VARCHAR, "varchar[]"),
    col("merchant", Type::VARCHAR, "varchar[]"),
    col("category", Type::VARCHAR, "varchar[]"),
    col("timestamp", Type::TIMESTAMP, "timestamp[]"),
    col("source_system", Type::VARCHAR, "varchar[]"),
    col("transaction_type", Type::VARCHAR, "varchar[]"),
    col("processing_time_ms", Type::INT4, "int4[]"),
];

const fn col(name: &'static str, pg_type: Type, array: &'static str) -> Column {
    Column {
        name,
        pg_type,
        array,
    }
}

/// The column names, quoted, comma-separated: `"tx_id", "user_id", …`.
pub fn list() -> String {
    COLUMNS
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The arguments of `UNNEST` for one array parameter per column: `$1::varchar[], …`.
pub fn unnest_args() -> String {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.array))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The types of the binary COPY.
pub fn copy_types() -> Vec<Type> {
    COLUMNS.iter().map(|c| c.pg_type.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The written columns are the shipped table's, but for `ingested_at` (its default).
    #[test]
    fn the_written_columns_are_the_shipped_tables() {
        let ddl = crate::schema::SCHEMA_SQL[0];
        let mut shipped: Vec<&str> = ddl
            .lines()
            .map(str::trim)
            .filter_map(|l| {
                l.strip_prefix("ALTER TABLE transactions_sink ADD COLUMN IF NOT EXISTS ")
                    .or_else(|| (!l.starts_with("--") && !l.starts_with("CREATE")).then_some(l))
            })
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .filter(|w| *w != "ingested_at")
            .collect();
        shipped.sort_unstable();
        let mut written: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        written.sort_unstable();
        assert_eq!(written, shipped);
        assert!(list().starts_with("\"tx_id\", \"user_id\", \"amount\""));
        assert!(unnest_args().ends_with("$10::int4[]"));
    }
}
