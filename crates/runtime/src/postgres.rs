//! PostgreSQL connection flags shared by the sink and the benchmark tools (flatten into a
//! clap `Args`); each has the environment twin the seed names.

/// Where PostgreSQL is and how to log in.
#[derive(Debug, Clone, clap::Args)]
pub struct PgArgs {
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

    /// PostgreSQL password (prefer the environment or .env to the command line).
    #[arg(
        long,
        env = "POSTGRES_PASSWORD",
        default_value = "kafka_sink",
        hide_env_values = true
    )]
    pub postgres_password: String,
}
