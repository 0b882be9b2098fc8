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

use crate::secret::{self, ConfigError, Secret};

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
    pub fn security_options(&self) -> Result<KafkaOptions, ConfigError> {
        let password = secret::value_or_file(
            "KAFKA_SASL_PASSWORD",
            self.sasl_password.clone(),
            self.sasl_password_file.as_deref(),
        )?;
        let sasl_given =
            self.sasl_username.is_some() || password.is_some() || self.sasl_mechanism.is_some();
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
        let protocol = self.security_protocol.unwrap_or(if sasl_given {
            SecurityProtocol::SaslSsl
        } else if tls_given {
            SecurityProtocol::Ssl
        } else {
            SecurityProtocol::Plaintext
        });
        let mut out = Vec::new();
        if protocol != SecurityProtocol::Plaintext {
            out.push(("security.protocol".to_owned(), protocol.as_str().to_owned()));
        }
        if protocol.sasl() {
            let missing = |what: &str| {
                ConfigError(format!(
                    "KAFKA_SECURITY_PROTOCOL is {} but {what} is not set: set it (your provider's connection settings name it)",
                    protocol.as_str()
                ))
            };
            let mechanism = self.sasl_mechanism.ok_or_else(|| {
                missing("KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
            })?;
            let user = self
                .sasl_username
                .as_ref()
                .ok_or_else(|| missing("KAFKA_SASL_USERNAME"))?;
            let password = password
                .ok_or_else(|| missing("KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE"))?;
            out.push(("sasl.mechanism".into(), mechanism.as_str().into()));
            out.push(("sasl.username".into(), user.clone()));
            out.push(("sasl.password".into(), password.expose().to_owned()));
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

/// No broker answered at start-up.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach Kafka at {servers} within {secs} s ({cause}): is the broker running? Start it with `scripts/stack.sh up` or `docker compose -f kafka-docker-compose.yml up -d`, or fix KAFKA_BOOTSTRAP_SERVERS"
)]
pub struct Unreachable {
    /// The bootstrap servers tried.
    pub servers: String,
    /// The timeout, in seconds.
    pub secs: u64,
    /// What librdkafka said.
    pub cause: String,
}

/// Applies `key=value` pass-through properties (after the defaults, so they win).
pub fn apply_options(config: &mut ClientConfig, options: &[(String, String)]) {
    for (k, v) in options {
        config.set(k, v);
    }
}

/// Runs a (blocking) metadata request off the async runtime; fails with [`Unreachable`]
/// when no broker answers within `timeout`.
///
/// # Errors
/// [`Unreachable`], naming `servers` and librdkafka's cause.
pub async fn fetch_metadata<F>(
    servers: &str,
    timeout: Duration,
    fetch: F,
) -> Result<Metadata, Unreachable>
where
    F: FnOnce(Duration) -> KafkaResult<Metadata> + Send + 'static,
{
    let unreachable = |cause: String| Unreachable {
        servers: servers.to_owned(),
        secs: timeout.as_secs(),
        cause,
    };
    tokio::task::spawn_blocking(move || fetch(timeout))
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .map_err(|e| unreachable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn options(args: &[&str]) -> Result<KafkaOptions, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| ConfigError(e.to_string()))?;
        cli.kafka.security_options()
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
