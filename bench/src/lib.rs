//! Helpers of `bench/run.sh`. Not part of the pipeline: the binaries here are the
//! benchmark's baseline (a consumer written the way the seed's Python consumer works) and
//! its latency probe.

use txn_runtime::postgres::{PgArgs, PgConfig};

/// Connects (in UTC, like the sink).
///
/// # Errors
/// The driver's error.
pub async fn connect(pg: &PgArgs) -> anyhow::Result<tokio_postgres::Client> {
    let config = PgConfig {
        application_name: "txn-bench".into(),
        // the bench's own statements are not bounded like the sink's
        statement_timeout: std::time::Duration::from_secs(3600),
        ..pg.clone().resolve()?
    };
    Ok(config.connect().await?)
}
