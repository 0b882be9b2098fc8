//! Measures end-to-end latency at a low rate: polls `--table` every 2 ms for new rows and,
//! for each, takes the time it became visible minus the message's `timestamp` (set by the
//! producer when it generated the message). Stops after `--count` rows and prints
//! `rows=N p50_ms=… p99_ms=… max_ms=…`.

use std::collections::HashSet;
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pg: txn_runtime::postgres::PgArgs,
    /// Table the sink writes.
    #[arg(long)]
    table: String,
    /// Rows to wait for.
    #[arg(long)]
    count: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = bench::connect(&args.pg).await?;
    let poll = db
        .prepare(&format!(
            "SELECT tx_id, \"timestamp\" FROM {} WHERE \"timestamp\" >= $1",
            args.table
        ))
        .await?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let since = chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while (seen.len() as u64) < args.count {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} rows arrived",
            seen.len()
        );
        let rows = db.query(&poll, &[&since]).await?;
        let now = chrono::Utc::now().naive_utc();
        for r in rows {
            let id: String = r.get(0);
            if seen.insert(id) {
                let ts: chrono::NaiveDateTime = r.get(1);
                let us = (now - ts).num_microseconds().unwrap_or(0).max(1) as u64;
                hist.saturating_record(us);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "rows={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        seen.len(),
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    Ok(())
}
