//! `cargo run -p sink`: parse flags, wire Ctrl-C and SIGTERM, run until stopped.
//! Exits 0 after a clean stop (batch in hand written, offsets committed), 1 on error, 130
//! on a second signal (at once; nothing is lost: unwritten messages are redelivered).

use std::process::ExitCode;

use clap::Parser;
use sink::cli::Command;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let env_file = txn_runtime::load_dotenv();
    let mut args = sink::cli::Args::parse();
    txn_runtime::init_logging(args.log.log_format);
    env_file.log();
    let command = args.command.take();
    let Some(config) = txn_runtime::effective(args.into_config()) else {
        return ExitCode::from(2);
    };

    if let Some(Command::ReplayDeadLetters { ids, error_class }) = command {
        return match sink::replay_dead_letters(&config, &ids, error_class.as_deref()).await {
            Ok(r) => {
                tracing::info!(
                    event = "report",
                    replayed = r.replayed,
                    inserted = r.inserted,
                    still_failing = r.still_failing,
                    without_payload = r.without_payload,
                    "dead letters replayed"
                );
                if r.without_payload > 0 {
                    tracing::warn!(
                        skipped = r.without_payload,
                        "skipped dead letters without a payload (class unstorable): their messages are in Kafka at their offsets; after the fix, sink reset-offsets reads them again"
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }

    if let Some(Command::Reconcile { details }) = command {
        return match sink::reconcile::reconcile(&config).await {
            Ok(a) => {
                if details {
                    for f in &a.findings {
                        tracing::warn!(
                            event = "finding",
                            kind = f.kind,
                            partition = f.partition,
                            offset = f.offset,
                            tx_id = f.tx_id.as_deref().unwrap_or("-"),
                            "{}",
                            f.detail
                        );
                    }
                }
                let line = format!(
                    "topic {} against table {}: {} messages checked, {} stored, {} parked; {} missing, {} conflicting, {} not parked; {} extra rows; {} offsets not consumed yet",
                    config.topic,
                    config.table,
                    a.checked,
                    a.stored,
                    a.parked,
                    a.count("missing"),
                    a.count("conflicting"),
                    a.count("not_parked"),
                    a.extra,
                    a.pending
                );
                tracing::info!(
                    event = "reconcile",
                    agrees = a.agrees(),
                    partitions = a.partitions,
                    checked = a.checked,
                    stored = a.stored,
                    parked = a.parked,
                    missing = a.count("missing"),
                    conflicting = a.count("conflicting"),
                    not_parked = a.count("not_parked"),
                    extra = a.extra,
                    pending = a.pending,
                    "{line}"
                );
                if a.agrees() {
                    ExitCode::SUCCESS
                } else {
                    tracing::error!(
                        event = "error",
                        "topic {} and table {} differ{}",
                        config.topic,
                        config.table,
                        if details {
                            ""
                        } else {
                            " (--details lists the messages)"
                        }
                    );
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                // 2: the audit could not run (1 is for a difference)
                tracing::error!(event = "error", "{e}");
                ExitCode::from(2)
            }
        };
    }

    if let Some(Command::Doctor) = command {
        let checks = sink::doctor::doctor(&config).await;
        for c in &checks {
            let line = match &c.fix {
                Some(fix) => format!("{} {}: {}: {fix}", c.status.as_str(), c.name, c.detail),
                None => format!("{} {}: {}", c.status.as_str(), c.name, c.detail),
            };
            let status = c.status.as_str();
            match c.status {
                sink::doctor::Status::Fail => {
                    tracing::error!(event = "check", check = c.name, status, "{line}")
                }
                sink::doctor::Status::Warn => {
                    tracing::warn!(event = "check", check = c.name, status, "{line}")
                }
                _ => tracing::info!(event = "check", check = c.name, status, "{line}"),
            }
        }
        return if sink::doctor::healthy(&checks) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    if let Some(Command::ResetOffsets {
        partitions,
        to_offset,
    }) = command
    {
        return match sink::reset_offsets(&config, &partitions, to_offset).await {
            Ok(n) => {
                tracing::info!(
                    event = "report",
                    group = %config.group_id,
                    topic = %config.topic,
                    partitions = n,
                    next_offset = to_offset,
                    "stored positions reset"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }

    let signals =
        txn_runtime::shutdown_on_signal("writing the batch in hand and committing its offsets");
    let ops = sink::metrics::Ops::for_config(&config);
    if let Some(addr) = config.metrics_addr {
        let mut registry = prometheus_client::registry::Registry::default();
        ops.metrics.register(&mut registry);
        let served = txn_runtime::ops::serve(
            addr,
            "SINK_METRICS_ADDR (--metrics-addr)",
            std::sync::Arc::new(registry),
            ops.health.clone(),
            signals.force.clone(),
        )
        .await;
        if let Err(e) = served {
            tracing::error!(event = "error", "{e}");
            return ExitCode::from(2);
        }
    }
    let result = tokio::select! {
        r = sink::run_with(config, signals.stop.clone(), ops) => r,
        _ = signals.force.cancelled() => return ExitCode::from(130),
    };
    match result {
        Ok(r) => {
            tracing::info!(
                event = "report",
                messages = r.messages,
                inserted = r.inserted,
                duplicates = r.duplicates,
                skipped = r.skipped,
                dead_letters = r.dead_letters,
                conflicts = r.conflicts,
                batches = r.batches,
                outages = r.outages,
                revoked = r.revoked,
                "sink stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(event = "error", unwritten = e.unwritten(), "{e}");
            ExitCode::FAILURE
        }
    }
}
