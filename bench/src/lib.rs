//! Helpers of `bench/run.sh`. Not part of the pipeline: the binaries here are the
//! benchmark's baseline (a consumer written the way the seed's Python consumer works) and
//! its latency probe.

use clap::Args;

/// PostgreSQL connection flags (environment twins as for the sink).
#[derive(Debug, Clone, Args)]
pub struct Pg {
    /// PostgreSQL host.
    #[arg(long, env = "POSTGRES_HOST", default_value = "localhost")]
    pub postgres_host: String,
    /// PostgreSQL port.
    #[arg(long, env = "POSTGRES_PORT", default_value_t = 5432)]
    pub postgres_port: u16,
    /// PostgreSQL database.
    #[arg(long, env = "POSTGRES_DB", default_value = "kafka_sink")]
    pub postgres_db: String,
    /// PostgreSQL user.
    #[arg(long, env = "POSTGRES_USER", default_value = "kafka_sink")]
    pub postgres_user: String,
    /// PostgreSQL password.
    #[arg(
        long,
        env = "POSTGRES_PASSWORD",
        default_value = "kafka_sink",
        hide_env_values = true
    )]
    pub postgres_password: String,
}

impl Pg {
    /// Connects (in UTC, like the sink).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::Config::new()
            .host(&self.postgres_host)
            .port(self.postgres_port)
            .dbname(&self.postgres_db)
            .user(&self.postgres_user)
            .password(&self.postgres_password)
            .options("-c TimeZone=UTC")
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(conn);
        Ok(client)
    }
}
