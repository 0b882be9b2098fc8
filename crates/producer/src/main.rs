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
    if let Some(producer::cli::Command::Users(producer::cli::UsersCommand::Generate(g))) =
        &args.command
    {
        return match g.run() {
            Ok(files) => {
                for (path, rows) in &files {
                    tracing::info!(event = "written", file = %path.display(), rows, "wrote user registrations");
                }
                tracing::info!(
                    event = "report",
                    files = files.len(),
                    "done: point --users / USERS_CSV_PATH at {}",
                    g.out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(event = "error", "{e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(config) = txn_runtime::effective(args.into_config()) else {
        return ExitCode::from(2);
    };
    let signals = txn_runtime::shutdown_on_signal("finishing in-flight messages");
    let stats = std::sync::Arc::new(producer::stats::Stats::new());
    let health = txn_runtime::ops::Health::new(config.stall_after());
    health.set("kafka", Some("connecting to Kafka".into()));
    if let Some(addr) = config.metrics_addr {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(producer::metrics::ProducerCollector::new(
            stats.clone(),
        )));
        let served = txn_runtime::ops::serve(
            addr,
            "PRODUCER_METRICS_ADDR (--metrics-addr)",
            std::sync::Arc::new(registry),
            health.clone(),
            signals.force.clone(),
        )
        .await;
        if let Err(e) = served {
            tracing::error!(event = "error", "{e}");
            return ExitCode::from(2);
        }
    }

    // idempotence (the default) keeps retries from writing a message twice; -K may turn it off
    let once = if config
        .kafka_options
        .iter()
        .rev()
        .find(|(k, _)| k == "enable.idempotence")
        .is_some_and(|(_, v)| v.eq_ignore_ascii_case("false"))
    {
        ", some perhaps twice (enable.idempotence=false)"
    } else {
        ", each at most once"
    };
    let result = tokio::select! {
        r = producer::run_with(config, signals.stop.clone(), stats, Some(health)) => r,
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
                "{} of {} messages were not delivered (see the errors above); {} of them were sent without an answer, and a broker that stopped or lost leadership may have written others before refusing them: the topic holds between {} and {} of the messages{once}",
                r.sent - r.delivered,
                r.sent,
                r.possibly_persisted,
                r.delivered,
                r.sent
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(event = "error", "{e}");
            ExitCode::FAILURE
        }
    }
}
