//! Store errors and their classification: "is this worth retrying?" is decided here, by
//! SQLSTATE class, and kept apart from the retry mechanism (`retry`).
//!
//! | SQLSTATE | meaning | class |
//! |---|---|---|
//! | 08xxx | connection exception | transient |
//! | 40001, 40P01 | serialization failure, deadlock | transient |
//! | 57014 | statement cancelled (`statement_timeout`, an operator) | transient |
//! | 53xxx | insufficient resources | transient |
//! | 57P01, 57P02, 57P03 | admin/crash shutdown, cannot connect now | transient |
//! | 22xxx, 23xxx | data exception, integrity violation | data (permanent for that row) |
//! | 42xxx, 28xxx, 3D000, 3F000 | syntax/privilege, auth, missing database/schema | configuration: fail fast |
//!
//! Errors without a SQLSTATE: a lost connection, a pool wait that timed out and an
//! operation past its deadline are transient; anything else is treated as fatal.

use std::fmt;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry with backoff: the database is restarting, overloaded or had a conflict.
    Transient,
    /// The data is at fault (a value the column rejects): retrying cannot help.
    Data,
    /// The set-up is at fault (missing table, privilege, credentials): fail fast.
    Config,
    /// Anything else: stop.
    Fatal,
}

/// Classifies a SQLSTATE code.
pub fn classify_sqlstate(code: &str) -> ErrorClass {
    match code {
        // 57014: a statement cancelled (statement_timeout, or an operator's cancel)
        "40001" | "40P01" | "57014" | "57P01" | "57P02" | "57P03" => ErrorClass::Transient,
        "3D000" | "3F000" => ErrorClass::Config,
        _ => match code.get(..2) {
            Some("08" | "53") => ErrorClass::Transient,
            Some("22" | "23") => ErrorClass::Data,
            Some("42" | "28") => ErrorClass::Config,
            _ => ErrorClass::Fatal,
        },
    }
}

/// An error from PostgreSQL or the connection pool.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An error from the server or the connection.
    #[error("{}", describe_db(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The pool could not hand out a connection.
    #[error("{0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A problem already described for the user (cause and fix) that the operator must
    /// resolve: at start-up (credentials, tables, keys, grants), or later (a dead letter
    /// that would overwrite an unreplayed one, a reset that matches nothing).
    #[error("{0}")]
    Startup(String),
    /// No answer within the operation's deadline: the connection was dropped (a silently
    /// dead network, a hung server), and the operation is retried on a new one.
    #[error("PostgreSQL did not answer within {} s: dropped the connection", .0.as_secs())]
    Timeout(std::time::Duration),
}

impl StoreError {
    /// How to react to this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Db(e) => classify_db(e),
            StoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => classify_db(e),
            StoreError::Pool(deadpool_postgres::PoolError::Timeout(_)) => ErrorClass::Transient,
            StoreError::Pool(_) => ErrorClass::Fatal,
            StoreError::Startup(_) => ErrorClass::Config,
            StoreError::Timeout(_) => ErrorClass::Transient,
        }
    }

    /// No answer in time: the client-side operation deadline, or the server's
    /// `statement_timeout` (SQLSTATE 57014).
    pub fn is_timeout(&self) -> bool {
        matches!(self, StoreError::Timeout(_)) || self.sqlstate() == Some("57014")
    }

    /// Shorthand for `class() == Transient`.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The column or constraint the server named, if any.
    pub fn column(&self) -> Option<&str> {
        self.db_error()
            .and_then(|db| db.column().or(db.constraint()))
    }

    /// The server's message with its SQLSTATE, constraint, column and detail, on one line.
    pub fn detail_line(&self) -> String {
        let Some(db) = self.db_error() else {
            return self.to_string();
        };
        let mut line = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(c) = db.constraint() {
            line.push_str(&format!(", constraint {c}"));
        }
        if let Some(c) = db.column() {
            line.push_str(&format!(", column {c}"));
        }
        if let Some(d) = db.detail() {
            line.push_str(&format!(": {}", d.replace('\n', " ")));
        }
        line
    }

    fn db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            StoreError::Db(e) | StoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => {
                e.as_db_error()
            }
            _ => None,
        }
    }

    /// The SQLSTATE code, when the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Db(e) | StoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => {
                e.code().map(|c| c.code())
            }
            _ => None,
        }
    }
}

fn classify_db(e: &tokio_postgres::Error) -> ErrorClass {
    match e.code() {
        Some(code) => classify_sqlstate(code.code()),
        // No SQLSTATE: the connection broke or could not be made (I/O, closed).
        None if e.is_closed() || io_error(e).is_some() => ErrorClass::Transient,
        None => ErrorClass::Fatal,
    }
}

/// The I/O error under a driver error, if any.
pub(crate) fn io_error(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

fn describe_db(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match io_error(e) {
            Some(io) => format!("{e}: {io}"),
            None => e.to_string(),
        },
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Data => "data",
            ErrorClass::Config => "configuration",
            ErrorClass::Fatal => "fatal",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        use ErrorClass::*;
        let cases = [
            ("08006", Transient), // connection failure
            ("08001", Transient),
            ("40001", Transient), // serialization failure
            ("40P01", Transient), // deadlock
            ("53300", Transient), // too many connections
            ("53100", Transient), // disk full
            ("57P01", Transient), // admin shutdown
            ("57P02", Transient),
            ("57P03", Transient), // cannot connect now
            ("22001", Data),      // string too long
            ("22003", Data),      // numeric out of range
            ("23505", Data),      // unique violation
            ("23502", Data),      // not null violation
            ("42P01", Config),    // undefined table
            ("42501", Config),    // insufficient privilege
            ("28P01", Config),    // bad password
            ("3D000", Config),    // no such database
            ("57014", Transient), // statement timeout or cancel: retried
            ("XX000", Fatal),     // internal error
            ("40002", Fatal),     // integrity constraint violation at commit: not a retry case
        ];
        for (code, class) in cases {
            assert_eq!(classify_sqlstate(code), class, "{code}");
        }
    }
}
