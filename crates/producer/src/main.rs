//! `cargo run -p producer`: parse flags, wire Ctrl-C and SIGTERM, run, print the summary.
//! Exits 0 only when every message sent was delivered. A second signal exits at once (130).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let env_file = txn_runtime::load_dotenv();
    let args = producer::cli::Args::parse();
    txn_runtime::init_logging(args.log.log_format);
    env_file.log();
    let Some(config) = txn_runtime::effective(args.into_config()) else {
        return ExitCode::from(2);
    };
    let signals = txn_runtime::shutdown_on_signal("finishing in-flight messages");

    let result = tokio::select! {
        r = producer::run(config, signals.stop.clone()) => r,
        _ = signals.force.cancelled() => return ExitCode::from(130),
    };
    match result {
        Ok(r) if r.lost_nothing() => {
            tracing::info!(
                event = "report",
                sent = r.sent,
                delivered = r.delivered,
                failed = r.failed,
                "done: every message delivered"
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            tracing::error!(
                event = "report",
                sent = r.sent,
                delivered = r.delivered,
                failed = r.failed,
                possibly_persisted = r.possibly_persisted,
                "{} of {} messages were not delivered, {} of them possibly written (sent, but not acknowledged in time: the topic may hold them): see the errors above",
                r.sent - r.delivered,
                r.sent,
                r.possibly_persisted
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(event = "error", "{e}");
            ExitCode::FAILURE
        }
    }
}
