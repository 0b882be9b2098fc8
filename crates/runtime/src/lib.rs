//! What the `producer` and `sink` binaries share, so each `main.rs` stays thin:
//! `.env` loading, logging set-up (text or JSON), signal handling, small configuration
//! parsers, and the connection settings of Kafka ([`kafka`]) and PostgreSQL ([`postgres`]).
//! Future operational concerns (metrics, health endpoints) belong here too.

pub mod kafka;
pub mod ops;
pub mod postgres;
pub mod progress;
pub mod secret;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Loads `.env` from the working directory, if there is one (never from a parent: a stray
/// file above the checkout must not configure the binaries). Variables already in the
/// environment win. Call before parsing flags, so `.env` values serve as their
/// environment twins. Returns the file loaded, or why it could not be, for the start-up
/// line.
pub fn load_dotenv() -> EnvFile {
    let path = std::path::Path::new(".env");
    if !path.exists() {
        return EnvFile::None;
    }
    let shown = std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    match dotenvy::from_path(path) {
        Ok(()) => EnvFile::Loaded(shown),
        // the parse error quotes the line, which may hold a password
        Err(dotenvy::Error::LineParse(_, at)) => EnvFile::Unreadable(
            shown,
            format!(
                "a line cannot be parsed (at character {at}; a value with spaces needs quotes)"
            ),
        ),
        Err(e) => EnvFile::Unreadable(shown, e.to_string()),
    }
}

/// What [`load_dotenv`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvFile {
    /// No `.env` in the working directory.
    None,
    /// This file was loaded.
    Loaded(std::path::PathBuf),
    /// This file exists but could not be read or parsed (why).
    Unreadable(std::path::PathBuf, String),
}

impl EnvFile {
    /// Logs it: where the settings came from (a warning when the file could not be used).
    pub fn log(&self) {
        match self {
            EnvFile::None => tracing::info!(
                env_file = "none",
                "no .env in the working directory: settings from the environment and flags"
            ),
            EnvFile::Loaded(p) => tracing::info!(env_file = %p.display(), "loaded .env"),
            EnvFile::Unreadable(p, e) => {
                tracing::warn!(env_file = %p.display(), error = %e, "cannot use .env: fix or remove it; settings from the environment and flags")
            }
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level, for log shippers and for the tests. Field names are the
    /// stable part; `message` wording is not.
    Json,
}

/// The logging flag common to both binaries (flatten into a clap `Args`).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on stderr: text (for people) or json (one object per line).
    #[arg(long, env = "LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`); colours only on a
/// terminal. In JSON, a panic is logged as an `event = "panic"` line. Usage errors come
/// from the flag parser before logging starts: they stay text (exit code 2).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(progress::Stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .init();
            // a panic is a log line too, so stderr stays one JSON object per line
            std::panic::set_hook(Box::new(|info| {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(event = "panic", at, "panicked: {payload}");
            }));
        }
    }
}

/// Logs the effective configuration in one line (`event = "config"`; secrets are redacted
/// by the types' `Debug`), or the reason it cannot be used (`event = "error"`): `None`
/// then, and the binary exits 2.
pub fn effective<T: std::fmt::Debug>(config: Result<T, secret::ConfigError>) -> Option<T> {
    match config {
        Ok(c) => {
            tracing::info!(event = "config", config = ?c, "configuration");
            Some(c)
        }
        Err(e) => {
            tracing::error!(event = "error", "{e}");
            None
        }
    }
}

/// The stop signals of a binary: `stop` is cancelled on the first Ctrl-C or SIGTERM (finish
/// cleanly), `force` on the second (exit at once).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Cancelled on the first signal.
    pub stop: CancellationToken,
    /// Cancelled on the second signal.
    pub force: CancellationToken,
}

/// Listens for Ctrl-C and SIGTERM; `what` says what stopping cleanly means, for the log.
pub fn shutdown_on_signal(what: &'static str) -> Signals {
    let signals = Signals::default();
    let s = signals.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested: {what} (a second signal exits at once)");
        s.stop.cancel();
        wait_for_signal().await;
        tracing::warn!("second stop signal: exiting at once");
        s.force.cancel();
    });
    signals
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still works");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Parses `KEY=VALUE` (librdkafka pass-through options).
///
/// # Errors
/// A message naming the input when there is no `=` or no key.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_parses_and_rejects() {
        assert_eq!(key_value(" a.b = c=d "), Ok(("a.b".into(), "c=d".into())));
        assert!(key_value("novalue").is_err());
        assert!(key_value("=x").is_err());
    }
}
