//! The domain of the pipeline, free of Kafka, tokio and clap:
//!
//! - [`transaction`]: the [`Transaction`] message, its JSON form (the seed's, field for field)
//!   and strict decoding with errors that name the offending field;
//! - [`users`]: the loader of user ids from the batch side's registration CSV files;
//! - [`generator`]: the realistic, seedable fake-transaction generator.

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
