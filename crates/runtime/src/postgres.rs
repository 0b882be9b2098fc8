//! PostgreSQL: the connection flags shared by the sink and the benchmark tools (flatten
//! into a clap `Args`; each has the environment twin the seed names), and the one
//! connection configuration built from them, used by the sink, the tests and the bench.

use std::fmt;
use std::time::Duration;

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

/// Where PostgreSQL is and how to log in.
#[derive(Clone)]
pub struct PgConfig {
    /// Host name or address (default `localhost`).
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// Database (default `kafka_sink`).
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (never logged).
    pub password: String,
    /// Longest wait for a connection (also the start-up check's limit).
    pub connect_timeout: Duration,
    /// Connections in the pool.
    pub pool_size: usize,
    /// `application_name` of the sink's sessions (shows in `pg_stat_activity`).
    pub application_name: String,
    /// The server's `statement_timeout` for the sink's sessions (default 30 s). A whole
    /// operation (a batch's transaction, a probe) is also bounded on the client side, by
    /// [`PgConfig::operation_timeout`], so a silently dead network cannot hang the sink.
    pub statement_timeout: Duration,
}

impl PgConfig {
    /// The client-side deadline of one database operation: twice the statement timeout
    /// (a batch is several statements), at least 1 s. Past it the connection is dropped
    /// and the error is transient (retried, then the outage path).
    pub fn operation_timeout(&self) -> Duration {
        (self.statement_timeout * 2).max(Duration::from_secs(1))
    }
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            host: "localhost".into(),
            port: 5432,
            database: "kafka_sink".into(),
            user: "kafka_sink".into(),
            password: "kafka_sink".into(),
            connect_timeout: Duration::from_secs(10),
            pool_size: 2,
            application_name: "txn-sink".into(),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl From<PgArgs> for PgConfig {
    fn from(a: PgArgs) -> Self {
        PgConfig {
            host: a.postgres_host,
            port: a.postgres_port,
            database: a.postgres_db,
            user: a.postgres_user,
            password: a.postgres_password,
            ..PgConfig::default()
        }
    }
}

impl PgConfig {
    /// The driver's configuration of a session: where, who, the application name, the
    /// connect timeout, the session settings and TCP keepalives.
    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .dbname(&self.database)
            .user(&self.user)
            .password(&self.password)
            .application_name(&self.application_name)
            // ingested_at (DEFAULT CURRENT_TIMESTAMP, a TIMESTAMP) is then in UTC like
            // `timestamp`; a statement the server cannot finish in time is cancelled; a
            // session whose client is gone mid-transaction (the sink gave up on it after
            // the operation timeout) ends then too, releasing its locks on the offsets
            .options(format!(
                "-c TimeZone=UTC -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
                self.statement_timeout.as_millis(),
                self.operation_timeout().as_millis()
            ))
            .connect_timeout(self.connect_timeout)
            // A network that drops packets silently (a NAT or firewall that forgot the
            // connection, a pulled cable) ends the connection in about 30 s, so it takes
            // the outage path instead of waiting on a socket for ever.
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(30));
        cfg
    }
}
