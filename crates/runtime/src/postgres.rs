//! PostgreSQL: the connection flags shared by the sink and the benchmark tools (flatten
//! into a clap `Args`; each has the environment twin the seed names, and `DATABASE_URL`),
//! and the one connection configuration built from them, used by the sink, the tests and
//! the bench: where, who, and TLS with libpq's `sslmode` over OpenSSL.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use postgres_openssl::MakeTlsConnector;

use crate::secret::{self, ConfigError, Secret};

/// Where PostgreSQL is, how to log in and how to protect the connection. Every flag has an
/// environment twin; the TLS ones also take libpq's names (`PGSSLMODE`, `PGSSLROOTCERT`,
/// `PGSSLCERT`, `PGSSLKEY`). `DATABASE_URL`, when set, wins over the `POSTGRES_*` values
/// for what it names; the rest comes from them, then from the defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PgArgs {
    /// A libpq connection URI: postgres://user:password@host:port/database?sslmode=verify-full&sslrootcert=/path/ca.crt
    /// (also sslcert, sslkey, connect_timeout, application_name). Wins over POSTGRES_*.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// PostgreSQL host [default: localhost].
    #[arg(long, env = "POSTGRES_HOST")]
    pub postgres_host: Option<String>,

    /// PostgreSQL port [default: 5432].
    #[arg(long, env = "POSTGRES_PORT")]
    pub postgres_port: Option<u16>,

    /// PostgreSQL database [default: kafka_sink].
    #[arg(long, env = "POSTGRES_DB")]
    pub postgres_db: Option<String>,

    /// PostgreSQL user [default: kafka_sink].
    #[arg(long, env = "POSTGRES_USER")]
    pub postgres_user: Option<String>,

    /// PostgreSQL password [default: kafka_sink, the local stack's]. Prefer the environment,
    /// .env or POSTGRES_PASSWORD_FILE to the command line, where other users can read it.
    #[arg(long, env = "POSTGRES_PASSWORD", hide_env_values = true)]
    pub postgres_password: Option<Secret>,

    /// A file holding the PostgreSQL password (the official images' _FILE convention).
    #[arg(long, env = "POSTGRES_PASSWORD_FILE")]
    pub postgres_password_file: Option<PathBuf>,

    /// TLS to PostgreSQL, as libpq means it: disable, prefer (TLS when the server offers
    /// it, unverified), require (TLS, verified against --postgres-sslrootcert only when
    /// given), verify-ca (the server's certificate chains to the CA), verify-full (and names
    /// the host) [default: prefer; env twin also PGSSLMODE].
    #[arg(long, env = "POSTGRES_SSLMODE", value_enum)]
    pub postgres_sslmode: Option<SslMode>,

    /// CA certificate(s) (PEM) to verify the server with; "system" for the system's trust
    /// store [default: ~/.postgresql/root.crt when it exists, else the system's; env twin
    /// also PGSSLROOTCERT].
    #[arg(long, env = "POSTGRES_SSLROOTCERT")]
    pub postgres_sslrootcert: Option<PathBuf>,

    /// Client certificate (PEM), for servers that authenticate clients by certificate
    /// [env twin also PGSSLCERT].
    #[arg(long, env = "POSTGRES_SSLCERT")]
    pub postgres_sslcert: Option<PathBuf>,

    /// The client certificate's private key (PEM, unencrypted) [env twin also PGSSLKEY].
    #[arg(long, env = "POSTGRES_SSLKEY")]
    pub postgres_sslkey: Option<PathBuf>,
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without verification; plain text otherwise.
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is verified only when a root certificate is given.
    Require,
    /// TLS, and the server's certificate must chain to a trusted CA.
    #[value(name = "verify-ca")]
    VerifyCa,
    /// As verify-ca, and the certificate must name the host connected to.
    #[value(name = "verify-full")]
    VerifyFull,
}

impl SslMode {
    /// libpq's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str, from: &str) -> Result<SslMode, ConfigError> {
        <SslMode as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            ConfigError(format!(
                "{from}: unknown sslmode {s:?}: use disable, prefer, require, verify-ca or verify-full"
            ))
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    /// libpq's `sslmode`.
    pub mode: SslMode,
    /// CA file (`~/.postgresql/root.crt` when none is given and it exists); `None` or the
    /// path `system`: the system's trust store, allowed with verify-full only.
    pub root_cert: Option<PathBuf>,
    /// Client certificate.
    pub cert: Option<PathBuf>,
    /// Client key.
    pub key: Option<PathBuf>,
}

impl PgTls {
    /// Whether the server's certificate is checked against a CA.
    pub fn verifies(&self) -> bool {
        match self.mode {
            SslMode::Disable | SslMode::Prefer => false,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::VerifyCa | SslMode::VerifyFull => true,
        }
    }
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
    /// TLS.
    pub tls: PgTls,
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
            tls: PgTls::default(),
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
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl PgArgs {
    /// The connection configuration: `DATABASE_URL`'s parts, then the `POSTGRES_*`
    /// values, then libpq's `PG*` TLS names, then the defaults.
    ///
    /// # Errors
    /// A malformed `DATABASE_URL`, a password given twice or an unreadable password file,
    /// a client certificate without its key, an unknown `PGSSLMODE`.
    pub fn resolve(self) -> Result<PgConfig, ConfigError> {
        let d = PgConfig::default();
        let password = secret::value_or_file(
            "POSTGRES_PASSWORD",
            self.postgres_password,
            self.postgres_password_file.as_deref(),
        )?;
        let libpq = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let mode = match self.postgres_sslmode {
            Some(m) => m,
            None => match libpq("PGSSLMODE") {
                Some(v) => SslMode::parse(&v.to_string_lossy(), "PGSSLMODE")?,
                None => SslMode::default(),
            },
        };
        let mut c = PgConfig {
            host: self.postgres_host.unwrap_or(d.host),
            port: self.postgres_port.unwrap_or(d.port),
            database: self.postgres_db.unwrap_or(d.database),
            user: self.postgres_user.unwrap_or(d.user),
            password: password.map_or(d.password, |p| p.expose().to_owned()),
            tls: PgTls {
                mode,
                root_cert: self
                    .postgres_sslrootcert
                    .or_else(|| libpq("PGSSLROOTCERT").map(PathBuf::from)),
                cert: self
                    .postgres_sslcert
                    .or_else(|| libpq("PGSSLCERT").map(PathBuf::from)),
                key: self
                    .postgres_sslkey
                    .or_else(|| libpq("PGSSLKEY").map(PathBuf::from)),
            },
            ..d
        };
        if let Some(url) = &self.database_url {
            apply_url(url.expose(), &mut c)?;
        }
        // libpq's default root certificate: with it, require verifies too
        if c.tls.root_cert.is_none() {
            c.tls.root_cert = std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                .filter(|p| p.is_file());
        }
        let system = c
            .tls
            .root_cert
            .as_ref()
            .is_none_or(|p| p.as_os_str() == "system");
        if system && matches!(c.tls.mode, SslMode::VerifyCa)
            || c.tls
                .root_cert
                .as_ref()
                .is_some_and(|p| p.as_os_str() == "system")
                && c.tls.mode == SslMode::Require
        {
            // any certificate a public CA issued would pass a chain check without the name
            return Err(ConfigError(format!(
                "sslmode={} with the system's trust store would accept any publicly issued certificate: use verify-full (the host name is checked), or give the server's own CA in POSTGRES_SSLROOTCERT",
                c.tls.mode
            )));
        }
        if c.tls.cert.is_some() != c.tls.key.is_some() {
            return Err(ConfigError(
                "a PostgreSQL client certificate needs its key and a key its certificate: set both POSTGRES_SSLCERT and POSTGRES_SSLKEY (or sslcert and sslkey in DATABASE_URL)".into(),
            ));
        }
        Ok(c)
    }
}

/// Applies the parts a `postgres://` URI names (libpq's URI form) to `c`. Messages never
/// quote the URI: it may hold a password.
fn apply_url(raw: &str, c: &mut PgConfig) -> Result<(), ConfigError> {
    const FORM: &str = "use postgres://user:password@host:port/database?sslmode=verify-full&sslrootcert=/path/ca.crt";
    let bad = |what: String| ConfigError(format!("DATABASE_URL {what}: {FORM}"));
    let url = url::Url::parse(raw).map_err(|e| bad(format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(bad(format!(
            "has the scheme {:?}, not postgres or postgresql",
            url.scheme()
        )));
    }
    let decode = |s: &str, what: &str| -> Result<String, ConfigError> {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|v| v.into_owned())
            .map_err(|_| bad(format!("has a {what} that is not UTF-8 once decoded")))
    };
    if !url.username().is_empty() {
        c.user = decode(url.username(), "user name")?;
    }
    if let Some(p) = url.password() {
        c.password = decode(p, "password")?;
    }
    if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
        let host = decode(host, "host")?;
        if host.contains(',') {
            return Err(bad(
                "names several hosts, which the sink does not support".into()
            ));
        }
        c.host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
    }
    if let Some(port) = url.port() {
        c.port = port;
    }
    let db = decode(url.path().trim_start_matches('/'), "database")?;
    if !db.is_empty() {
        c.database = db;
    }
    // libpq's URI parameters: percent-decoded, '+' is a plus (not form encoding), an empty
    // value is no value
    let params = url
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty());
    for pair in params {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k, "parameter name")?;
        let v = decode(v, "parameter value")?;
        if v.is_empty() {
            continue;
        }
        match &*k {
            "sslmode" => c.tls.mode = SslMode::parse(&v, "DATABASE_URL")?,
            "sslrootcert" => c.tls.root_cert = Some(PathBuf::from(v)),
            "sslcert" => c.tls.cert = Some(PathBuf::from(v)),
            "sslkey" => c.tls.key = Some(PathBuf::from(v)),
            "connect_timeout" => {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| bad(format!("has connect_timeout={v:?}, not whole seconds")))?;
                // libpq: 0 waits for ever, and less than 2 s counts as 2 s
                c.connect_timeout = Duration::from_secs(if secs == 0 { 3600 } else { secs.max(2) });
            }
            "application_name" => c.application_name = v,
            "host" => c.host = v,
            "port" => {
                c.port = v
                    .parse()
                    .map_err(|_| bad(format!("has port={v:?}, not a port number")))?;
            }
            "dbname" => c.database = v,
            "user" => c.user = v,
            "password" => c.password = v,
            other => {
                return Err(bad(format!(
                    "has the parameter {other:?}, which the sink does not know (it knows sslmode, sslrootcert, sslcert, sslkey, connect_timeout, application_name, host, port, dbname, user, password)"
                )));
            }
        }
    }
    Ok(())
}

/// Why the last TLS handshake failed its certificate check (OpenSSL's verify error, such
/// as "hostname mismatch"), kept by the verify callback: the handshake error itself says
/// only "certificate verify failed".
static LAST_VERIFY_FAILURE: Mutex<Option<String>> = Mutex::new(None);

fn note_verify_failure(reason: Option<String>) {
    *LAST_VERIFY_FAILURE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
}

fn last_verify_failure() -> Option<String> {
    LAST_VERIFY_FAILURE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// A session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS settings cannot be used (a CA or key file that does not load).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The driver's error.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

impl PgConfig {
    /// The TLS connector for [`PgConfig::tls`] (OpenSSL, the library librdkafka uses too).
    /// Used in every mode; with `disable` it is never asked to connect.
    ///
    /// # Errors
    /// A CA, certificate or key file that cannot be loaded, named with the setting to fix.
    pub fn tls_connector(&self) -> Result<MakeTlsConnector, ConfigError> {
        let t = &self.tls;
        let tls_err = |e: openssl::error::ErrorStack| {
            ConfigError(format!("cannot set up TLS for PostgreSQL ({e})"))
        };
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls_err)?;
        if t.verifies() {
            match t.root_cert.as_ref() {
                // the system's trust store, which the builder loads by default
                Some(p) if p.as_os_str() == "system" => {}
                None => {}
                // only the given CAs, as libpq (the system's are not trusted then)
                Some(p) => b.set_cert_store(ca_store(p, "POSTGRES_SSLROOTCERT (sslrootcert)")?),
            }
            b.set_verify_callback(SslVerifyMode::PEER, |ok, ctx| {
                if !ok {
                    note_verify_failure(Some(ctx.error().error_string().to_owned()));
                }
                ok
            });
        } else {
            b.set_verify(SslVerifyMode::NONE);
        }
        if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
            b.set_certificate_chain_file(cert).map_err(|e| {
                ConfigError(format!(
                    "cannot load the PostgreSQL client certificate {} ({e}): POSTGRES_SSLCERT must be a PEM certificate",
                    cert.display()
                ))
            })?;
            b.set_private_key_file(key, SslFiletype::PEM).map_err(|e| {
                ConfigError(format!(
                    "cannot load the PostgreSQL client key {} ({e}): POSTGRES_SSLKEY must be an unencrypted PEM key",
                    key.display()
                ))
            })?;
            b.check_private_key().map_err(|_| {
                ConfigError(format!(
                    "the PostgreSQL client key {} does not belong to the certificate {}: fix POSTGRES_SSLKEY or POSTGRES_SSLCERT",
                    key.display(),
                    cert.display()
                ))
            })?;
        }
        let mut connector = MakeTlsConnector::new(b.build());
        let full = t.mode == SslMode::VerifyFull;
        connector.set_callback(move |cfg, _host| {
            note_verify_failure(None);
            cfg.set_verify_hostname(full);
            Ok(())
        });
        Ok(connector)
    }

    /// Opens one session (tests, tools; the sink uses a pool) and drives its connection
    /// in the background.
    ///
    /// # Errors
    /// [`ConnectError`]; [`PgConfig::explain`] turns it into a line with the fix.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ConnectError> {
        let (client, conn) = self.tokio_config().connect(self.tls_connector()?).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// One line with the cause and the fix when `e` is a TLS problem: the server requires
    /// TLS and sslmode is disable, the server offers no TLS, or its certificate does not
    /// verify (the wrong CA, another host name). `None` for other errors.
    pub fn explain_tls(&self, e: &tokio_postgres::Error) -> Option<String> {
        let at = format!("{}:{}", self.host, self.port);
        if let Some(db) = e.as_db_error()
            && db.code().code() == "28000"
            && (db.message().contains("no encryption") || db.message().contains("SSL off"))
        {
            return Some(format!(
                "PostgreSQL at {at} accepts only TLS connections, and sslmode is {}: set POSTGRES_SSLMODE=verify-full (or require) with POSTGRES_SSLROOTCERT, or sslmode= in DATABASE_URL",
                self.tls.mode
            ));
        }
        if let Some(db) = e.as_db_error()
            && db.code().code() == "28000"
            && db.message().contains("certificate")
        {
            return Some(format!(
                "PostgreSQL at {at} refused the client certificate ({}): check POSTGRES_SSLCERT and POSTGRES_SSLKEY, and that the certificate's CN is the user",
                db.message()
            ));
        }
        let text = e.to_string();
        if !text.contains("TLS") {
            return None;
        }
        let source = std::error::Error::source(e).map_or_else(|| text.clone(), ToString::to_string);
        if source.contains("server does not support TLS") {
            return Some(format!(
                "PostgreSQL at {at} does not offer TLS, and sslmode is {}: enable ssl on the server, or set POSTGRES_SSLMODE=prefer or disable",
                self.tls.mode
            ));
        }
        let ca = self.tls.root_cert.as_ref().map_or_else(
            || "the system's trust store".to_owned(),
            |p| p.display().to_string(),
        );
        Some(match last_verify_failure() {
            Some(reason) if reason.contains("mismatch") => format!(
                "PostgreSQL at {at} presents a certificate for another name ({reason}): connect by a name the certificate holds (POSTGRES_HOST), or use sslmode=verify-ca to skip the name check"
            ),
            Some(reason) => format!(
                "PostgreSQL at {at} presents a certificate that does not verify against {ca} ({reason}): point POSTGRES_SSLROOTCERT at the CA that signed the server's certificate"
            ),
            None => format!(
                "TLS with PostgreSQL at {at} failed ({source}): check sslmode ({}) and the server's TLS settings",
                self.tls.mode
            ),
        })
    }

    /// The driver's configuration of a session: where, who, the application name, the
    /// connect timeout, the session settings and TCP keepalives.
    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.ssl_mode(match self.tls.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
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

/// A certificate store holding only the CA certificates of `path` (named by `setting` in
/// the error).
pub(crate) fn ca_store(
    path: &std::path::Path,
    setting: &str,
) -> Result<openssl::x509::store::X509Store, ConfigError> {
    let bad = |why: String| {
        ConfigError(format!(
            "cannot load the CA file {} ({why}): {setting} must be a PEM file of CA certificates",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let mut store = X509StoreBuilder::new().map_err(|e| bad(e.to_string()))?;
    for c in certs {
        store.add_cert(c).map_err(|e| bad(e.to_string()))?;
    }
    Ok(store.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        pg: PgArgs,
    }

    fn resolve(args: &[&str]) -> Result<PgConfig, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| ConfigError(e.to_string()))?;
        cli.pg.resolve()
    }

    #[test]
    fn database_url_wins_over_the_postgres_variables_for_what_it_names() {
        let c = resolve(&[
            "--postgres-host",
            "ignored",
            "--postgres-db",
            "kept_db",
            "--database-url",
            "postgresql://us%40er:p%40ss%3Aw@[::1]:6543/?sslmode=verify-full&sslrootcert=/ca.crt&sslcert=/c.crt&sslkey=/c.key&connect_timeout=1&application_name=app",
        ])
        .unwrap();
        assert_eq!(c.user, "us@er");
        assert_eq!(c.password, "p@ss:w");
        assert_eq!(c.host, "::1");
        assert_eq!(c.port, 6543);
        assert_eq!(c.database, "kept_db", "an empty path keeps POSTGRES_DB");
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            c.tls.root_cert.as_deref(),
            Some(std::path::Path::new("/ca.crt"))
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(2), "libpq's minimum");
        assert_eq!(c.application_name, "app");
        let shown = format!("{c:?}");
        assert!(!shown.contains("p@ss"), "{shown}");
    }

    #[test]
    fn bad_urls_and_settings_are_refused_without_echoing_the_password() {
        let err = |args: &[&str]| resolve(args).unwrap_err().0;
        let e = err(&["--database-url", "mysql://u:hunter2@h/db"]);
        assert!(e.contains("scheme") && !e.contains("hunter2"), "{e}");
        let e = err(&["--database-url", "postgres://u:hunter2@h/db?sslmode=always"]);
        assert!(e.contains("verify-full") && !e.contains("hunter2"), "{e}");
        let e = err(&[
            "--database-url",
            "postgres://u:hunter2@h/db?sslcompression=1",
        ]);
        assert!(
            e.contains("sslcompression") && !e.contains("hunter2"),
            "{e}"
        );
        let e = err(&["--database-url", "postgres://u:hunter2@h1,h2/db"]);
        assert!(e.contains("several hosts"), "{e}");
        let e = err(&["--postgres-sslcert", "/c.crt"]);
        assert!(e.contains("POSTGRES_SSLKEY"), "{e}");
        let e = err(&["--postgres-password", "a", "--postgres-password-file", "/x"]);
        assert!(e.contains("POSTGRES_PASSWORD_FILE"), "{e}");
    }

    #[test]
    fn the_flags_never_print_a_password() {
        let cli = Cli::try_parse_from([
            "t",
            "--postgres-password",
            "hunter2",
            "--database-url",
            "postgres://u:hunter3@h/db",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
    }

    #[test]
    fn a_chain_check_against_public_cas_is_refused() {
        let refused = |args: &[&str]| resolve(args).unwrap_err().0;
        let sys = ["--postgres-sslrootcert", "system"];
        assert!(
            refused(&["--postgres-sslmode", "verify-ca", sys[0], sys[1]]).contains("verify-full")
        );
        assert!(
            refused(&["--postgres-sslmode", "require", sys[0], sys[1]]).contains("verify-full")
        );
        assert!(resolve(&["--postgres-sslmode", "verify-full"]).is_ok());
        assert!(
            resolve(&[
                "--postgres-sslmode",
                "verify-ca",
                "--postgres-sslrootcert",
                "/ca.crt"
            ])
            .is_ok()
        );
        // libpq's URI parameters: '+' is a plus, an empty value is no value
        let c = resolve(&[
            "--database-url",
            "postgres://h/db?password=a+b&sslrootcert=&application_name=x%20y",
        ])
        .unwrap();
        assert_eq!(c.password, "a+b");
        assert_eq!(c.application_name, "x y");
    }

    #[test]
    fn tls_modes_map_to_libpq_meanings() {
        let mut t = PgTls::default();
        assert_eq!(t.mode, SslMode::Prefer, "libpq's default");
        assert!(!t.verifies());
        t.mode = SslMode::Require;
        assert!(!t.verifies(), "require alone does not verify");
        t.root_cert = Some("/ca.crt".into());
        assert!(
            t.verifies(),
            "require with a root certificate verifies, as libpq"
        );
        t.mode = SslMode::VerifyCa;
        t.root_cert = None;
        assert!(t.verifies());
    }
}
