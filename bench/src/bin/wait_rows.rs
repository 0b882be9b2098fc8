//! Waits until the sink has committed `--count` messages of a fresh topic into `--table`,
//! polling the sink's offsets table (`<table>_offsets`, advanced in the same transaction
//! as the rows) every 10 ms over one connection: cheap for the database, unlike a
//! `count(*)` of a growing table or a new `psql` process per poll, which both steal CPU
//! from the run being measured. Prints `messages=N secs=S` (seconds since its own start).

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pg: txn_runtime::postgres::PgArgs,
    /// Table the sink writes.
    #[arg(long)]
    table: String,
    /// Messages to wait for (the topic's offsets start at 0).
    #[arg(long)]
    count: i64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let db = bench::connect(&args.pg).await?;
    let sql = format!(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM {}_offsets",
        args.table
    );
    let mut committed = 0;
    while committed < args.count {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(args.timeout_secs),
            "only {committed} of {} messages committed after {} s",
            args.count,
            args.timeout_secs
        );
        // the table appears when the sink has started
        if let Ok(row) = db.query_one(&sql, &[]).await {
            committed = row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "messages={committed} secs={:.2}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
