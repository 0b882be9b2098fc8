//! Kafka settings shared by the producer and the sink: the connection flags (TLS and SASL
//! among them), the pass-through options (redacted wherever they print), and the start-up
//! check that turns librdkafka's silent reconnect loop into one clear error.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;

use crate::secret::{self, ConfigError, Secret, is_secret_option};

/// Connection flags common to both binaries (flatten into a clap `Args`).
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port, comma-separated).
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,

    /// The topic of transactions.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "transactions")]
    pub topic: String,

    /// Security protocol: plaintext, ssl, sasl_plaintext or sasl_ssl [default: sasl_ssl when
    /// a SASL user is set, ssl when a TLS file is set, else plaintext].
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", value_enum, ignore_case = true)]
    pub security_protocol: Option<SecurityProtocol>,

    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (your provider names it).
    /// GSSAPI and OAUTHBEARER: through -K (sasl.mechanism and their options).
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_enum, ignore_case = true)]
    pub sasl_mechanism: Option<SaslMechanism>,

    /// SASL user name.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// SASL password (prefer KAFKA_SASL_PASSWORD_FILE, or the environment, to the command
    /// line, where other users can read it).
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<Secret>,

    /// A file holding the SASL password.
    #[arg(long, env = "KAFKA_SASL_PASSWORD_FILE")]
    pub sasl_password_file: Option<PathBuf>,

    /// CA certificate(s) (PEM) to verify the brokers with [default: the system's trust store].
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,

    /// Client certificate (PEM), for brokers that authenticate clients by certificate (mTLS).
    #[arg(long, env = "KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<PathBuf>,

    /// The client certificate's private key (PEM; an encrypted one takes
    /// -K ssl.key.password=…, or better PRODUCER_/SINK_KAFKA_OPTIONS in the environment).
    #[arg(long, env = "KAFKA_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<PathBuf>,
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    #[value(name = "plaintext")]
    Plaintext,
    /// TLS.
    #[value(name = "ssl")]
    Ssl,
    /// SASL without TLS: the credentials of PLAIN cross the network in clear.
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    /// SASL over TLS: what managed services use.
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// Kafka's `sasl.mechanism`, of those with first-class flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    /// User name and password, as they are (use it over TLS only).
    #[value(name = "PLAIN")]
    Plain,
    /// Salted challenge-response, SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response, SHA-512.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl KafkaArgs {
    /// The librdkafka properties of the security flags (none for a plain connection).
    /// Applied before the `-K` options, which may override any of them.
    ///
    /// # Errors
    /// A combination that cannot work (SASL without a user, password or mechanism; SASL
    /// or TLS files with a protocol that does not use them; a certificate without its
    /// key), a password given twice, or a file that cannot be read: one line naming the
    /// setting to fix.
    /// `overrides` are the `-K` options that will follow: a setting they give counts as
    /// given (`-K sasl.username=… --sasl-password-file …` works), and their
    /// `security.protocol` is the protocol checked against.
    pub fn security_options(
        &self,
        overrides: &[(String, String)],
    ) -> Result<KafkaOptions, ConfigError> {
        let given = |key: &str| {
            overrides
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let password = secret::value_or_file(
            "KAFKA_SASL_PASSWORD",
            self.sasl_password.clone(),
            self.sasl_password_file.as_deref(),
        )?;
        let sasl_given =
            self.sasl_username.is_some() || password.is_some() || self.sasl_mechanism.is_some();
        let overridden_protocol = given("security.protocol")
            .and_then(|p| <SecurityProtocol as clap::ValueEnum>::from_str(&p, true).ok());
        let files = [
            (
                "KAFKA_SSL_CA_LOCATION",
                "ssl.ca.location",
                &self.ssl_ca_location,
            ),
            (
                "KAFKA_SSL_CERTIFICATE_LOCATION",
                "ssl.certificate.location",
                &self.ssl_certificate_location,
            ),
            (
                "KAFKA_SSL_KEY_LOCATION",
                "ssl.key.location",
                &self.ssl_key_location,
            ),
        ];
        let tls_given = files.iter().any(|(_, _, f)| f.is_some());
        let protocol = self
            .security_protocol
            .or(overridden_protocol)
            .unwrap_or(if sasl_given {
                SecurityProtocol::SaslSsl
            } else if tls_given {
                SecurityProtocol::Ssl
            } else {
                SecurityProtocol::Plaintext
            });
        // only what the flags say is added (what -K says, -K applies itself)
        let mut out = Vec::new();
        if protocol != SecurityProtocol::Plaintext
            && (self.security_protocol.is_some() || overridden_protocol.is_none())
        {
            out.push(("security.protocol".to_owned(), protocol.as_str().to_owned()));
        }
        if protocol.sasl() {
            let missing = |what: &str| {
                ConfigError(format!(
                    "KAFKA_SECURITY_PROTOCOL is {} but {what} is not set: set it (your provider's connection settings name it)",
                    protocol.as_str()
                ))
            };
            let from_flags = [
                (
                    "sasl.mechanism",
                    self.sasl_mechanism.map(|m| m.as_str().to_owned()),
                    "KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                ),
                (
                    "sasl.username",
                    self.sasl_username.clone(),
                    "KAFKA_SASL_USERNAME",
                ),
                (
                    "sasl.password",
                    password.map(|p| p.expose().to_owned()),
                    "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE",
                ),
            ];
            for (key, flag, name) in from_flags {
                match flag {
                    Some(v) => out.push((key.to_owned(), v)),
                    None if given(key).is_some() => {}
                    None => return Err(missing(name)),
                }
            }
        } else if sasl_given {
            return Err(ConfigError(format!(
                "KAFKA_SASL_* settings are given but KAFKA_SECURITY_PROTOCOL is {}: use sasl_ssl (or sasl_plaintext, which sends credentials unencrypted)",
                protocol.as_str()
            )));
        }
        if tls_given && !protocol.tls() {
            return Err(ConfigError(format!(
                "KAFKA_SSL_* files are given but KAFKA_SECURITY_PROTOCOL is {}: use ssl or sasl_ssl",
                protocol.as_str()
            )));
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(ConfigError(
                "a Kafka client certificate needs its key and a key its certificate: set both KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION".into(),
            ));
        }
        for (name, key, file) in files {
            if let Some(path) = file {
                readable(name, path)?;
                out.push((key.to_owned(), path.display().to_string()));
            }
        }
        Ok(KafkaOptions(out))
    }
}

fn readable(name: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path).map(drop).map_err(|e| {
        ConfigError(format!(
            "cannot read {name} {} ({e}): point it at a readable PEM file",
            path.display()
        ))
    })
}

/// librdkafka properties (`key=value`), in order: a later one wins. `Debug` redacts the
/// values of secret ones (`sasl.password`, `ssl.key.password`, …).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaOptions(pub Vec<(String, String)>);

impl KafkaOptions {
    /// These options, then `later` (which win).
    pub fn then(mut self, later: impl IntoIterator<Item = (String, String)>) -> Self {
        self.0.extend(later);
        self
    }
}

impl Deref for KafkaOptions {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(secret::redacted_options(&self.0))
            .finish()
    }
}

/// Kafka could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// No broker answered in time.
    #[error(
        "cannot reach Kafka at {servers} within {secs} s ({cause}): is the broker running? Start it with `scripts/stack.sh up` or `docker compose -f kafka-docker-compose.yml up -d`, or fix KAFKA_BOOTSTRAP_SERVERS"
    )]
    Timeout {
        /// The bootstrap servers tried.
        servers: String,
        /// The timeout, in seconds.
        secs: u64,
        /// What librdkafka said.
        cause: String,
    },
    /// A broker answered, and the TLS handshake or the SASL authentication failed: the
    /// cause and the fix, in one line.
    #[error("{0}")]
    Refused(String),
}

/// The last TLS or SASL failure librdkafka reported through its error callback. librdkafka
/// retries those for ever and a metadata request only times out; the start-up check
/// reads this instead, to fail at once with the cause. Kept by each binary's client
/// context.
#[derive(Debug, Default)]
pub struct SecurityFailure(std::sync::Mutex<(Option<String>, u32)>);

impl SecurityFailure {
    /// Keeps `reason` (of the error callback) when it is a TLS or SASL failure.
    pub fn note(&self, error: &rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode;
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) {
            self.keep(reason);
        } else {
            self.note_text(reason);
        }
    }

    /// Keeps `text` (an error reason or a log line) when it tells of a TLS or SASL failure:
    /// a certificate that does not verify or rejected credentials at once, another
    /// handshake failure once it has repeated (a broker restarting mid-handshake is not a
    /// configuration problem). A consumer's logs and errors are queued until it is polled:
    /// the start-up check polls it.
    pub fn note_text(&self, text: &str) {
        if text.contains("certificate verify failed")
            || text.contains("SASL authentication error")
            || text.contains("incorrect security.protocol")
        {
            self.keep(text);
        } else if text.contains("SSL handshake failed") {
            let mut kept = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            kept.1 += 1;
            if kept.1 >= 3 {
                kept.0 = Some(text.to_owned());
            }
        }
    }

    fn keep(&self, text: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0 = Some(text.to_owned());
    }

    /// The failure kept, if any.
    pub fn take(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .take()
    }
}

/// A librdkafka log line, logged as rust-rdkafka's default `ClientContext::log` does (target
/// `librdkafka`), for contexts that also look at it.
pub fn forward_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}");
        }
        L::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}"),
        L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
    }
}

/// One line with the cause and the fix of a TLS or SASL failure `reason` (librdkafka's
/// words) against `servers`. A certificate that does not verify is diagnosed with a
/// handshake of our own (librdkafka says only "certificate verify failed"): another host
/// name, or another CA.
fn explain_refusal(servers: &str, reason: &str, options: &[(String, String)]) -> String {
    let option = |k: &str| {
        options
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if reason.contains("SASL authentication error") || reason.contains("Authentication failed") {
        return format!(
            "Kafka at {servers} rejected the SASL credentials of user {:?} with {} ({}): check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE) and KAFKA_SASL_MECHANISM",
            option("sasl.username").unwrap_or_default(),
            option("sasl.mechanism").unwrap_or_else(|| "GSSAPI".into()),
            trim_reason(reason)
        );
    }
    if reason.contains("incorrect security.protocol") {
        return format!(
            "Kafka at {servers} closed the connection before answering ({}): the listener expects TLS or SASL; set KAFKA_SECURITY_PROTOCOL (ssl or sasl_ssl) as the provider says",
            trim_reason(reason)
        );
    }
    let ca = option("ssl.ca.location");
    let inline_ca = option("ssl.ca.pem").is_some();
    let shown_ca = match (&ca, inline_ca) {
        (_, true) => "the CA of ssl.ca.pem".to_owned(),
        (Some(ca), false) => ca.clone(),
        (None, false) => "the system's trust store".to_owned(),
    };
    let first = servers.split(',').next().unwrap_or(servers).trim();
    // (a CA given inline is not re-read here: the reason stays librdkafka's)
    let diagnosis = if inline_ca {
        None
    } else {
        diagnose_certificate(first, ca.as_deref().map(Path::new))
    };
    match diagnosis {
        Some(why) if why.contains("mismatch") => format!(
            "Kafka at {first} presents a certificate for another name ({why}): connect by a name the certificate holds (KAFKA_BOOTSTRAP_SERVERS), or pass -K ssl.endpoint.identification.algorithm=none to skip the name check"
        ),
        Some(why) => format!(
            "Kafka at {first} presents a certificate that does not verify against {shown_ca} ({why}): point KAFKA_SSL_CA_LOCATION at the CA that signed the broker's certificate"
        ),
        None => format!(
            "TLS with Kafka at {servers} failed ({}): check KAFKA_SECURITY_PROTOCOL and KAFKA_SSL_CA_LOCATION",
            trim_reason(reason)
        ),
    }
}

/// librdkafka's reason without its `[thrd:…]`/`sasl_ssl://host:port/bootstrap:` prefix.
fn trim_reason(reason: &str) -> &str {
    reason
        .rsplit_once("/bootstrap: ")
        .map_or(reason, |(_, r)| r)
        .trim()
}

/// Why `server`'s certificate does not verify against `ca` (the system's trust store
/// without one), from a TLS handshake of our own with the host name checked, as
/// librdkafka does by default; `None` when it verifies or the handshake cannot tell.
pub fn diagnose_certificate(server: &str, ca: Option<&Path>) -> Option<String> {
    use openssl::ssl::{HandshakeError, SslConnector, SslMethod};
    use openssl::x509::X509VerifyResult;
    use std::net::{TcpStream, ToSocketAddrs};
    let (host, _) = server.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = server.to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .ok()?;
    let mut b = SslConnector::builder(SslMethod::tls_client()).ok()?;
    if let Some(ca) = ca {
        b.set_cert_store(crate::postgres::ca_store(ca, "KAFKA_SSL_CA_LOCATION").ok()?);
    }
    match b.build().connect(host, stream) {
        Err(HandshakeError::Failure(mid)) => {
            let v = mid.ssl().verify_result();
            (v != X509VerifyResult::OK).then(|| v.error_string().to_owned())
        }
        _ => None,
    }
}

/// A client-creation error in words that never include an option's value (librdkafka's
/// own message for a bad value quotes it, and the value may be a password).
pub fn config_error(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, _) => {
            let desc = if is_secret_option(key) {
                "invalid value"
            } else {
                desc.as_str()
            };
            format!(
                "{key}: {desc} (check the -K / *_KAFKA_OPTIONS property and librdkafka's CONFIGURATION.md)"
            )
        }
        other => other.to_string(),
    }
}

/// Applies `key=value` pass-through properties (after the defaults, so they win).
pub fn apply_options(config: &mut ClientConfig, options: &[(String, String)]) {
    for (k, v) in options {
        config.set(k, v);
    }
}

/// Runs (blocking) metadata requests off the async runtime until one succeeds; fails with
/// [`Unreachable::Timeout`] when no broker answers within `timeout`, and at once with
/// [`Unreachable::Refused`] when `failure` (the client context's [`SecurityFailure`],
/// after serving the client's queued callbacks where that takes a poll) reports a TLS or
/// SASL failure.
///
/// # Errors
/// [`Unreachable`], naming `servers`, the cause and the fix.
pub async fn fetch_metadata<F, S, SF>(
    servers: &str,
    timeout: Duration,
    options: &[(String, String)],
    fetch: F,
    failure: S,
) -> Result<Metadata, Unreachable>
where
    F: Fn(Duration) -> KafkaResult<Metadata> + Send + Sync + 'static,
    S: Fn() -> SF,
    SF: Future<Output = Option<String>>,
{
    let unreachable = |cause: String| Unreachable::Timeout {
        servers: servers.to_owned(),
        secs: timeout.as_secs(),
        cause,
    };
    let fetch = std::sync::Arc::new(fetch);
    let started = tokio::time::Instant::now();
    loop {
        // in slices of a second, so a TLS or SASL failure ends the wait at once
        let slice = timeout
            .saturating_sub(started.elapsed())
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(100));
        let f = fetch.clone();
        let result = tokio::task::spawn_blocking(move || f(slice))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        match result {
            Ok(meta) => return Ok(meta),
            Err(e) => {
                if let Some(reason) = failure().await {
                    let servers = servers.to_owned();
                    let options = options.to_vec();
                    let line = tokio::task::spawn_blocking(move || {
                        explain_refusal(&servers, &reason, &options)
                    })
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                    return Err(Unreachable::Refused(line));
                }
                if started.elapsed() >= timeout {
                    return Err(unreachable(e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(short = 'K', value_parser = crate::key_value)]
        options: Vec<(String, String)>,
    }

    fn options(args: &[&str]) -> Result<KafkaOptions, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| ConfigError(e.to_string()))?;
        cli.kafka.security_options(&cli.options)
    }

    #[test]
    fn security_flags_become_librdkafka_options_and_never_print_the_password() {
        assert!(options(&[]).unwrap().is_empty(), "plaintext adds nothing");
        let o = options(&[
            "--sasl-mechanism",
            "scram-sha-512",
            "--sasl-username",
            "u",
            "--sasl-password",
            "hunter2",
        ])
        .unwrap();
        let get = |k: &str| o.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("security.protocol"),
            Some("sasl_ssl"),
            "SASL implies TLS"
        );
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.password"), Some("hunter2"));
        assert!(!format!("{o:?}").contains("hunter2"), "{o:?}");
        let later = o.then([("sasl.password".to_owned(), "other".to_owned())]);
        assert!(!format!("{later:?}").contains("other"));
        // a protocol given explicitly wins; -K options come after and override
        let o = options(&["--security-protocol", "SSL", "--ssl-ca-location", "/"]).unwrap();
        assert_eq!(o[0], ("security.protocol".into(), "ssl".into()));
    }

    #[test]
    fn settings_given_with_k_count_as_given() {
        // every SASL setting through -K: nothing added, -K carries it all
        let all_k = options(&[
            "-K",
            "security.protocol=sasl_ssl",
            "-K",
            "sasl.mechanism=PLAIN",
            "-K",
            "sasl.username=u",
            "-K",
            "sasl.password=p",
        ])
        .unwrap();
        assert!(all_k.is_empty(), "{all_k:?}");
        // mixed: the user and mechanism from -K, the password from a flag
        let mixed = options(&[
            "-K",
            "sasl.username=u",
            "-K",
            "sasl.mechanism=PLAIN",
            "--sasl-password",
            "p",
        ])
        .unwrap();
        let keys: Vec<&str> = mixed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["security.protocol", "sasl.password"],
            "-K adds the rest"
        );
        // -K's protocol is the one checked: SASL flags with -K security.protocol=ssl
        let e = options(&["-K", "security.protocol=ssl", "--sasl-username", "u"]);
        assert!(e.unwrap_err().0.contains("KAFKA_SECURITY_PROTOCOL is ssl"));
    }

    #[test]
    fn security_flags_that_cannot_work_are_refused_with_the_setting_to_fix() {
        let err = |args: &[&str]| options(args).unwrap_err().0;
        assert!(
            err(&["--sasl-username", "u", "--sasl-password", "p"]).contains("KAFKA_SASL_MECHANISM")
        );
        assert!(
            err(&["--sasl-mechanism", "PLAIN", "--sasl-username", "u"])
                .contains("KAFKA_SASL_PASSWORD")
        );
        assert!(
            err(&["--security-protocol", "plaintext", "--sasl-username", "u"])
                .contains("KAFKA_SECURITY_PROTOCOL is plaintext")
        );
        assert!(
            err(&["--security-protocol", "plaintext", "--ssl-ca-location", "/"])
                .contains("use ssl or sasl_ssl")
        );
        assert!(err(&["--ssl-certificate-location", "/"]).contains("KAFKA_SSL_KEY_LOCATION"));
        assert!(
            err(&["--ssl-ca-location", "/no/such/ca.pem"])
                .contains("cannot read KAFKA_SSL_CA_LOCATION")
        );
    }

    /// The build has what other clients and managed services use: every compression codec
    /// (a batch in a codec we lack stalls its partition) and TLS with SASL/SCRAM.
    #[test]
    fn librdkafka_is_built_with_every_codec_and_tls() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        for feature in [
            "gzip",
            "snappy",
            "lz4",
            "zstd",
            "ssl",
            "sasl_scram",
            "sasl_plain",
        ] {
            assert!(
                features.split(',').any(|f| f == feature),
                "{feature} missing from {features}"
            );
        }
    }
}
