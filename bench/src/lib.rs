//! Helpers of `bench/run.sh`. Not part of the pipeline: the binaries here are the
//! benchmark's baseline (a consumer written the way the seed's Python consumer works) and
//! its latency probe.

use txn_runtime::postgres::PgArgs;

/// Connects (in UTC, like the sink).
///
/// # Errors
/// The driver's error.
pub async fn connect(pg: &PgArgs) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(&pg.postgres_host)
        .port(pg.postgres_port)
        .dbname(&pg.postgres_db)
        .user(&pg.postgres_user)
        .password(&pg.postgres_password)
        .options("-c TimeZone=UTC")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}
