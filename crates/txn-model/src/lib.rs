//! The domain of the pipeline, free of Kafka, tokio and clap:
//!
//! - [`transaction`]: the [`Transaction`] message, its JSON form (the seed's, field for field)
//!   and strict decoding with errors that name the offending field;
//! - [`users`]: the loader of user ids from the batch side's registration CSV files, and
//!   the watcher of a users directory for files added while the producer runs;
//! - [`registrations`]: the writer of those files (`producer users generate`);
//! - [`profile`]: each user's behaviour, from its id and country;
//! - [`generator`]: the realistic, seedable fake-transaction generator;
//! - [`backfill`]: the simulated clock of a backfill (hour of day, day of week,
//!   registrations) and its stream;
//! - [`anomaly`]: labelled anomalies mixed into a stream.

pub mod anomaly;
pub mod backfill;
pub mod generator;
pub mod profile;
pub mod registrations;
pub mod transaction;
pub mod users;

pub use generator::{Generator, TxIds};
pub use transaction::{Currency, DecodeError, Transaction};
pub use users::{UserAttributes, Users, UsersError, load_users};

/// Whether `s` is `len` bytes of ASCII digits with a dash at each of `dashes` (the shape
/// of `YYYY-MM` and `YYYY-MM-DD`, which chrono alone would take with one-digit fields).
pub(crate) fn digits_and_dashes(s: &str, len: usize, dashes: &[usize]) -> bool {
    s.len() == len
        && s.bytes().enumerate().all(|(i, c)| {
            if dashes.contains(&i) {
                c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}
