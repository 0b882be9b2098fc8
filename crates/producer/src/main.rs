//! `cargo run -p producer`: parse flags, wire Ctrl-C and SIGTERM, run, print the summary.
//! Exits 0 only when every message sent was delivered.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    txn_runtime::load_dotenv();
    let args = producer::cli::Args::parse();
    txn_runtime::init_logging();
    let shutdown = txn_runtime::shutdown_on_signal("finishing in-flight messages");

    match producer::run(args.into_config(), shutdown).await {
        Ok(r) if r.lost_nothing() => {
            tracing::info!(
                sent = r.sent,
                delivered = r.delivered,
                failed = r.failed,
                "done: every message delivered"
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            tracing::error!(
                sent = r.sent,
                delivered = r.delivered,
                failed = r.failed,
                "{} of {} messages were not delivered: see the errors above",
                r.sent - r.delivered,
                r.sent
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
