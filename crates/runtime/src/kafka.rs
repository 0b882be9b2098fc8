//! Kafka settings shared by the producer and the sink: the connection flags (where future
//! TLS and SASL flags will live too), the pass-through options, and the start-up check that
//! turns librdkafka's silent reconnect loop into one clear error.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;

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
