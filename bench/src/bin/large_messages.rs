//! Publishes `--count` valid transactions of about `--size` bytes each to `--topic`
//! (partition 0): a generated transaction with an extra field the sink ignores, as a
//! client that sends more than the schema does. For the memory measure of `bench/run.sh`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Parser)]
struct Args {
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    count: u64,
    /// Bytes of each message, about.
    #[arg(long, default_value_t = 900_000)]
    size: usize,
    #[arg(long, env = "USERS_CSV_PATH", default_value = "data/users")]
    users: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let users = txn_model::load_users(&args.users)?.ids;
    let mut g = txn_model::Generator::new(users, Some(7))?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("message.max.bytes", "1000000")
        .set("linger.ms", "5")
        .create()?;
    let padding = "x".repeat(args.size.saturating_sub(400));
    for _ in 0..args.count {
        let mut v: serde_json::Value = serde_json::from_slice(&g.next_now().to_json())?;
        v["note"] = serde_json::Value::String(padding.clone());
        let payload = serde_json::to_vec(&v)?;
        producer
            .send(
                FutureRecord::<(), _>::to(&args.topic)
                    .partition(0)
                    .payload(&payload),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    }
    println!("messages={} bytes_each={}", args.count, args.size);
    Ok(())
}
