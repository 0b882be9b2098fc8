//! The baseline of the sink benchmark: a consumer written the way the seed's Python
//! consumer (`kafka_to_postgres.py`) works: one message at a time, one INSERT and one
//! commit per message. Reads `--count` messages from the beginning of `--topic` into
//! `--table` (created like the sink's) and prints `rows=N seconds=S rows_per_sec=R`.

use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    kafka: txn_runtime::kafka::KafkaArgs,
    #[command(flatten)]
    pg: txn_runtime::postgres::PgArgs,
    /// Table to write (created if missing).
    #[arg(long)]
    table: String,
    /// Messages to consume.
    #[arg(long)]
    count: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = bench::connect(&args.pg).await?;
    let table = &args.table;
    db.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (tx_id VARCHAR COLLATE \"C\" PRIMARY KEY, user_id VARCHAR NOT NULL, \
         amount DECIMAL(10,2) NOT NULL, currency VARCHAR(3) NOT NULL, merchant VARCHAR(255) NOT NULL, \
         category VARCHAR(100) NOT NULL, timestamp TIMESTAMP NOT NULL, ingested_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    ))
    .await?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka.bootstrap_servers)
        .set("group.id", format!("per-row-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()?;
    consumer.subscribe(&[&args.kafka.topic])?;
    let insert = format!(
        "INSERT INTO {table} (tx_id, user_id, amount, currency, merchant, category, timestamp) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tx_id) DO NOTHING"
    );
    let mut rows = 0u64;
    let mut started: Option<Instant> = None;
    while rows < args.count {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        let started = *started.get_or_insert_with(Instant::now);
        let _ = started;
        let Ok(t) = txn_model::Transaction::from_json(m.payload().unwrap_or_default()) else {
            continue;
        };
        // one statement, autocommitted: the seed's cursor.execute(...) + conn.commit()
        db.execute(
            &insert,
            &[
                &t.tx_id.to_string(),
                &t.user_id.to_string(),
                &t.amount,
                &t.currency.as_str(),
                &t.merchant,
                &t.category,
                &t.timestamp.naive_utc(),
            ],
        )
        .await?;
        rows += 1;
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!(
        "rows={rows} seconds={secs:.3} rows_per_sec={:.1}",
        rows as f64 / secs
    );
    Ok(())
}
