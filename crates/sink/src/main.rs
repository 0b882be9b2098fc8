//! `cargo run -p sink`: parse flags, wire Ctrl-C and SIGTERM, run until stopped.
//! Exits 0 after a clean stop (batch in hand written, offsets committed), 1 on error.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    txn_runtime::load_dotenv();
    let args = sink::cli::Args::parse();
    txn_runtime::init_logging();
    let shutdown =
        txn_runtime::shutdown_on_signal("writing the batch in hand and committing its offsets");

    match sink::run(args.into_config(), shutdown).await {
        Ok(r) => {
            tracing::info!(
                messages = r.messages,
                inserted = r.inserted,
                duplicates = r.duplicates,
                undecodable = r.undecodable,
                batches = r.batches,
                "sink stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
