//! Consumes the `transactions` topic into the PostgreSQL table `transactions_sink`.
//!
//! Layout:
//! - [`config`]: the effective configuration ([`SinkConfig`]);
//! - [`cli`]: command-line flags with their environment twins, turned into a config;
//! - [`consumer`]: the consume loop, batching and offsets (the only module touching offsets):
//!   its `plan` (which messages to write, how far offsets advance, where to seek: pure, unit
//!   tested), `positions` (the plan applied: stored offsets, seeks, log-end checks),
//!   `outage` (retries, pause and probe), `read` (polling, read-ahead, decoding) and
//!   `context` (rebalance callbacks, stale-message cut-offs, pause and seek);
//! - [`store`]: the pool and the batch transaction (with `schema`, the only modules running
//!   SQL), with `columns` (the written columns, in one list), `rows` (COPY and the
//!   isolating fallback), `conflicts`, `dead_letters` (parking), `offsets` (loading and
//!   resetting) and `replay`;
//! - [`schema`]: the tables as the catalog has them; DDL only for what is missing;
//! - [`reconcile`]: `sink reconcile`, the audit of a topic against the table;
//! - [`doctor`]: `sink doctor`, every check the sink needs, one line each with its fix;
//! - [`metrics`]: Prometheus metrics and health (`--metrics-addr`);
//! - [`progress`]: what the sink says it stored (a line per message at low rates, a
//!   summary under load);
//! - [`message`]: a consumed message, its bytes and its decoding;
//! - [`dead_letter`]: what a dead letter holds, made storable whatever the message was;
//! - [`retry`]: capped, jittered exponential backoff;
//! - [`error`]: store errors and their transient / data / configuration classification.
//!
//! Delivery: at-least-once from Kafka with idempotent writes. A batch's offsets are
//! committed only after its rows are committed in PostgreSQL, and rows are inserted with
//! `ON CONFLICT (tx_id) DO NOTHING`, so a restart or a rebalance never duplicates a row.
//! See `docs/DESIGN.md`.

pub mod cli;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod doctor;
pub mod error;
pub mod message;
pub mod metrics;
pub mod progress;
pub mod reconcile;
pub mod retry;
pub mod schema;
pub mod store;

use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{PgConfig, SinkConfig};
pub use consumer::{ConsumeError, SinkReport};
pub use error::{ErrorClass, StoreError};
pub use store::Replayed;

/// Why the sink stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL could not be used (start-up) or failed for good (run).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Kafka could not be used, or a write failed for good while consuming.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
}

impl Error {
    /// Consumed messages left unwritten by a stop (Kafka delivers them again), if that is
    /// why the sink stopped.
    pub fn unwritten(&self) -> Option<usize> {
        match self {
            Error::Consume(ConsumeError::Unfinished { messages, .. }) => Some(*messages),
            _ => None,
        }
    }
}

/// Runs the sink until `shutdown` is cancelled.
///
/// Start-up checks PostgreSQL (credentials, database, table) and then Kafka, each failing
/// fast with a message naming the cause and the fix.
///
/// # Errors
/// [`Error`] on a start-up failure, or when a database write fails after its retries (the
/// batch's offsets are then left uncommitted).
pub async fn run(config: SinkConfig, shutdown: CancellationToken) -> Result<SinkReport, Error> {
    let ops = metrics::Ops::for_config(&config);
    run_with(config, shutdown, ops).await
}

/// [`run`], reporting to `ops` (the metrics and health a `--metrics-addr` endpoint serves).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    config: SinkConfig,
    shutdown: CancellationToken,
    ops: metrics::Ops,
) -> Result<SinkReport, Error> {
    ops.health.beat();
    ops.health
        .set("postgres", Some("connecting to PostgreSQL".into()));
    ops.health
        .set("partitions", Some("no partition assigned yet".into()));
    info!(
        postgres = %format!("{}:{}/{}", config.postgres.host, config.postgres.port, config.postgres.database),
        user = %config.postgres.user,
        table = %config.table,
        batch_size = config.batch_size,
        writers = config.writers,
        "starting sink"
    );
    // a connection per writer, and one for the probe and the positions
    let mut pg = config.postgres.clone();
    pg.pool_size = pg.pool_size.max(config.writers + 1);
    let store = store::Store::connect(&pg, &config.table).await?;
    ops.health.set("postgres", None);
    let consumer = consumer::connect(&config).await?;
    let report = consumer::run(consumer, store, &config, shutdown, ops).await?;
    Ok(report)
}

/// Sets the stored positions of `config.group_id` in `config.topic` (the given
/// partitions, or every one stored) to `to_offset`; returns how many were reset.
///
/// # Errors
/// [`Error::Store`] when PostgreSQL cannot be used, or when no stored position matches or
/// a partition asked for has none (then nothing is reset: a mistyped group, topic or
/// partition would otherwise look done).
pub async fn reset_offsets(
    config: &SinkConfig,
    partitions: &[i32],
    to_offset: i64,
) -> Result<u64, Error> {
    // a connection per writer, and one for the probe and the positions
    let mut pg = config.postgres.clone();
    pg.pool_size = pg.pool_size.max(config.writers + 1);
    let store = store::Store::connect(&pg, &config.table).await?;
    let reset = store
        .reset_offsets(&config.group_id, &config.topic, partitions, to_offset)
        .await?;
    let missing: Vec<i32> = partitions
        .iter()
        .filter(|p| !reset.contains(p))
        .copied()
        .collect();
    if reset.is_empty() || !missing.is_empty() {
        let which = if missing.is_empty() {
            String::new()
        } else {
            format!(" partition {missing:?}")
        };
        return Err(StoreError::Startup(format!(
            "no stored position of group {} in topic {}{which} (table {}_offsets): nothing reset; check --group-id, --topic and --partition against that table",
            config.group_id, config.topic, config.table
        ))
        .into());
    }
    Ok(reset.len() as u64)
}

/// Replays dead letters (see [`store::Store::replay_dead_letters`]).
///
/// # Errors
/// [`Error::Store`] when PostgreSQL cannot be used.
pub async fn replay_dead_letters(
    config: &SinkConfig,
    ids: &[i64],
    error_class: Option<&str>,
) -> Result<Replayed, Error> {
    // a connection per writer, and one for the probe and the positions
    let mut pg = config.postgres.clone();
    pg.pool_size = pg.pool_size.max(config.writers + 1);
    let store = store::Store::connect(&pg, &config.table).await?;
    Ok(store.replay_dead_letters(ids, error_class).await?)
}
