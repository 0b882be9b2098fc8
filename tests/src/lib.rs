//! Helpers of the end-to-end suite: everything runs against the real Kafka broker and the
//! real PostgreSQL server of `scripts/stack.sh up` (or the compose stack), configured from
//! `.env`, else `.env.example`, with the environment winning.
//!
//! Every test gets its own topic, consumer group and table (random names), so tests run in
//! parallel without serialisation and leave nothing shared behind. Waiting is done by
//! polling with a deadline, never by fixed sleeps.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::RngExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use txn_model::Transaction;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Connection settings of the local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// PostgreSQL settings.
    pub pg: sink::PgConfig,
}

/// Reads `.env` (else `.env.example`) without touching the process environment; variables
/// set in the environment win.
pub fn env_file() -> HashMap<String, String> {
    let dir = root();
    let file = [dir.join(".env"), dir.join(".env.example")]
        .into_iter()
        .find(|p| p.exists());
    let mut vars: HashMap<String, String> = file
        .and_then(|f| dotenvy::from_path_iter(f).ok())
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default();
    for (k, v) in std::env::vars() {
        vars.insert(k, v);
    }
    vars
}

/// The stack's settings.
pub fn stack() -> Stack {
    let vars = env_file();
    let get = |k: &str, d: &str| vars.get(k).cloned().unwrap_or_else(|| d.to_owned());
    Stack {
        bootstrap: get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        pg: sink::PgConfig {
            host: get("POSTGRES_HOST", "localhost"),
            port: get("POSTGRES_PORT", "5432").parse().unwrap_or(5432),
            database: get("POSTGRES_DB", "kafka_sink"),
            user: get("POSTGRES_USER", "kafka_sink"),
            password: get("POSTGRES_PASSWORD", "kafka_sink"),
            ..sink::PgConfig::default()
        },
    }
}

/// A random name with a readable prefix: `prefix_` + 10 lower-case letters and digits.
pub fn unique(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..10)
        .map(|_| {
            let c = rng.random_range(0..36u8);
            if c < 10 {
                (b'0' + c) as char
            } else {
                (b'a' + c - 10) as char
            }
        })
        .collect();
    format!("{prefix}_{suffix}")
}

/// The sample users shipped in `data/users/`.
pub fn users_dir() -> PathBuf {
    root().join("data/users")
}

/// Creates a topic with `partitions` partitions (replication factor 1).
pub async fn create_topic(stack: &Stack, topic: &str, partitions: i32) -> Result<()> {
    create_topic_replicated(stack, topic, partitions, 1).await
}

/// Creates a topic with `partitions` partitions and `replicas` replicas of each.
pub async fn create_topic_replicated(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    replicas: i32,
) -> Result<()> {
    create_topic_with(stack, topic, partitions, replicas, &[]).await
}

/// Creates a topic with topic-level configuration (`key`, `value`).
pub async fn create_topic_with(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Deletes `topic` and creates it again with `partitions` partitions (empty, offsets from
/// 0), retrying while the broker still finishes the deletion.
pub async fn recreate_topic(stack: &Stack, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .create()?;
    for r in admin
        .delete_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot delete topic {t}: {e}"))?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match create_topic(stack, topic, partitions).await {
            Ok(()) => return Ok(()),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A producer config for `topic`, as fast as possible, `count` messages, sample users.
pub fn producer_config(stack: &Stack, topic: &str, count: u64) -> producer::ProducerConfig {
    producer::ProducerConfig {
        bootstrap_servers: stack.bootstrap.clone(),
        topic: topic.to_owned(),
        users_path: users_dir(),
        pace: producer::Pace::Unlimited,
        count: Some(count),
        ..producer::ProducerConfig::default()
    }
}

/// Runs the producer library (the code the binary runs) to completion.
pub async fn produce(stack: &Stack, topic: &str, count: u64) -> Result<producer::Report> {
    let report = producer::run(
        producer_config(stack, topic, count),
        CancellationToken::new(),
    )
    .await?;
    if !report.lost_nothing() || report.delivered != count {
        bail!("producer lost messages: {report:?}");
    }
    Ok(report)
}

/// Publishes raw payloads (valid or not) in order, keyed `key`, to one partition.
pub async fn produce_raw(
    stack: &Stack,
    topic: &str,
    partition: i32,
    payloads: &[Vec<u8>],
) -> Result<()> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .set("enable.idempotence", "true")
        .create()?;
    for payload in payloads {
        p.send(
            FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    }
    Ok(())
}

/// One record as another client may write it: any key, payload, timestamp and headers.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The key (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// The payload (`None`: a null payload, a tombstone).
    pub payload: Option<Vec<u8>>,
    /// The CreateTime in milliseconds (`None`: the producer's clock).
    pub timestamp: Option<i64>,
    /// Headers (a `None` value is a null header).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// A record with this payload and nothing else set.
    pub fn payload(payload: impl Into<Vec<u8>>) -> Record {
        Record {
            payload: Some(payload.into()),
            ..Record::default()
        }
    }
}

/// Publishes `records` in order to one partition; each must be acknowledged.
pub async fn produce_records(
    stack: &Stack,
    topic: &str,
    partition: i32,
    records: &[Record],
) -> Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .set("enable.idempotence", "true")
        .create()?;
    for (i, r) in records.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.payload {
            record = record.payload(v.as_slice());
        }
        if let Some(ts) = r.timestamp {
            record = record.timestamp(ts);
        }
        p.send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce of record {i} ({r:?}) failed: {e}"))?;
    }
    Ok(())
}

/// Every message of `topic`, read from the beginning up to the current end.
pub async fn read_topic(stack: &Stack, topic: &str) -> Result<Vec<Vec<u8>>> {
    let messages = read_topic_with_headers(stack, topic).await?;
    Ok(messages.into_iter().map(|(payload, _)| payload).collect())
}

/// A message's headers, as text.
pub type Headers = Vec<(String, String)>;

/// Every message of `topic` with its headers, partition by partition.
pub async fn read_topic_with_headers(
    stack: &Stack,
    topic: &str,
) -> Result<Vec<(Vec<u8>, Headers)>> {
    let stack = stack.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&stack, &topic)).await?
}

fn read_topic_blocking(stack: &Stack, topic: &str) -> Result<Vec<(Vec<u8>, Headers)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(30);
    let meta = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
        if high > low {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            bail!("timed out reading {topic}: still waiting on partitions {ends:?}");
        }
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((m.payload().unwrap_or_default().to_vec(), headers));
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(out)
}

/// A sink config writing `topic` into `table`, with its own group.
pub fn sink_config(stack: &Stack, topic: &str, table: &str) -> sink::SinkConfig {
    sink::SinkConfig {
        bootstrap_servers: stack.bootstrap.clone(),
        topic: topic.to_owned(),
        group_id: unique("group"),
        table: table.to_owned(),
        postgres: stack.pg.clone(),
        ..sink::SinkConfig::default()
    }
}

/// A sink running in the background.
pub struct RunningSink {
    /// Cancel to stop it cleanly.
    pub stop: CancellationToken,
    /// Its result.
    pub handle: JoinHandle<Result<sink::SinkReport, sink::Error>>,
}

impl RunningSink {
    /// Stops it cleanly and returns its report.
    pub async fn stop(self) -> Result<sink::SinkReport> {
        self.stop.cancel();
        let report = tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .context("the sink did not stop within 60 s")???;
        Ok(report)
    }
}

/// Sends the libraries' logs to the test's captured output (shown when a test fails);
/// `RUST_LOG` filters them (default `info`).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_test_writer()
            .try_init();
    });
}

/// Starts the sink library (the code the binary runs) in the background.
pub fn start_sink(config: sink::SinkConfig) -> RunningSink {
    init_logs();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(sink::run(config, stop.clone()));
    RunningSink { stop, handle }
}

/// A PostgreSQL client of the stack.
pub async fn pg(stack: &Stack) -> Result<tokio_postgres::Client> {
    let pg = &stack.pg;
    pg.connect()
        .await
        .context("cannot connect to the stack's PostgreSQL: run scripts/stack.sh up")
}

/// Rows in `table` (0 when it does not exist yet).
pub async fn count_rows(client: &tokio_postgres::Client, table: &str) -> Result<i64> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0))
}

/// Polls until `table` holds at least `n` rows; fails after `limit`.
pub async fn wait_for_rows(
    client: &tokio_postgres::Client,
    table: &str,
    n: i64,
    limit: Duration,
) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let have = count_rows(client, table).await?;
        if have >= n {
            return Ok(have);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{table} holds {have} rows after {limit:?}, expected {n}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every row of `table`, as transactions (the extra columns included).
pub async fn table_rows(client: &tokio_postgres::Client, table: &str) -> Result<Vec<Transaction>> {
    let rows = client
        .query(
            &format!("SELECT {} FROM {table}", sink::store::columns::list()),
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let ts: chrono::NaiveDateTime = r.get("timestamp");
            let ms: Option<i32> = r.get("processing_time_ms");
            Ok(Transaction {
                tx_id: r.get::<_, String>("tx_id").parse()?,
                user_id: r.get::<_, String>("user_id").parse()?,
                amount: r.get("amount"),
                currency: r
                    .get::<_, String>("currency")
                    .parse()
                    .map_err(anyhow::Error::msg)?,
                merchant: r.get("merchant"),
                category: r.get("category"),
                timestamp: ts.and_utc(),
                source_system: r.get("source_system"),
                transaction_type: r.get("transaction_type"),
                processing_time_ms: ms.map(u32::try_from).transpose()?,
            })
        })
        .collect()
}

/// Drops a test table and the sink's state tables beside it.
pub async fn drop_tables(client: &tokio_postgres::Client, table: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}, {table}_offsets, {table}_dead_letters"
        ))
        .await?;
    Ok(())
}

/// Compares the messages of a topic with the rows of a table: the same tx_ids (no missing,
/// no extra, no duplicate) and, for each, equal field values.
pub fn assert_same(produced: &[Transaction], stored: &[Transaction]) {
    let by_id: HashMap<_, _> = produced.iter().map(|t| (t.tx_id, t)).collect();
    assert_eq!(
        by_id.len(),
        produced.len(),
        "the topic itself holds duplicate tx_ids"
    );
    let stored_ids: HashMap<_, _> = stored.iter().map(|t| (t.tx_id, t)).collect();
    assert_eq!(
        stored_ids.len(),
        stored.len(),
        "duplicate tx_ids in the table"
    );
    let missing: Vec<_> = by_id
        .keys()
        .filter(|id| !stored_ids.contains_key(id))
        .collect();
    let extra: Vec<_> = stored_ids
        .keys()
        .filter(|id| !by_id.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} produced tx_ids missing from the table, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(
        extra.is_empty(),
        "{} rows not produced, e.g. {:?}",
        extra.len(),
        extra.first()
    );
    for (id, row) in &stored_ids {
        assert_eq!(*row, by_id[id], "row {id} differs from its message");
    }
}

/// Builds a workspace binary (`producer` or `sink`) once and returns its path, so tests can
/// run the real executables (signals, exit codes, log lines).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", name, "--bin", name])
            .current_dir(root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_owned());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("debug").join(name)
}

/// A [`command`] whose stderr goes to a fresh file under `target/test-logs/` (its path is
/// returned), for long runs: a pipe nobody reads fills up at 64 KiB, and the program then
/// blocks on its next log line.
pub fn command_logged(
    name: &str,
    stack: &Stack,
    label: &str,
) -> Result<(tokio::process::Command, PathBuf)> {
    let dir = root().join("target/test-logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.log", unique(label)));
    let file = std::fs::File::create(&path)?;
    let mut cmd = command(name, stack);
    cmd.stdout(std::process::Stdio::null()).stderr(file);
    Ok((cmd, path))
}

/// A command for a workspace binary, run from the workspace root with the stack's settings
/// and JSON logs (read them with [`json_log`]).
pub fn command(name: &str, stack: &Stack) -> tokio::process::Command {
    program(binary(name), stack)
}

/// [`command`] for any program (one that runs a workspace binary, e.g. under a
/// pseudo-terminal).
pub fn program(path: impl AsRef<std::ffi::OsStr>, stack: &Stack) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(path);
    cmd.current_dir(root())
        .env("KAFKA_BOOTSTRAP_SERVERS", &stack.bootstrap)
        .env("POSTGRES_HOST", &stack.pg.host)
        .env("POSTGRES_PORT", stack.pg.port.to_string())
        .env("POSTGRES_DB", &stack.pg.database)
        .env("POSTGRES_USER", &stack.pg.user)
        .env("POSTGRES_PASSWORD", &stack.pg.password)
        .env("RUST_LOG", "info")
        // tests read fields, never wording (a test about the text format passes --log-format)
        .env("LOG_FORMAT", "json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Decodes every payload (a test producer wrote them all valid).
pub fn decode_all(payloads: &[Vec<u8>]) -> Vec<Transaction> {
    payloads
        .iter()
        .map(|p| Transaction::from_json(p).expect("valid message"))
        .collect()
}

/// Counts what the figures lines report: missing, extra and duplicate ids.
pub fn figures(expected: &[uuid::Uuid], stored: &[Transaction]) -> (usize, usize, usize) {
    let want: std::collections::HashSet<_> = expected.iter().collect();
    let ids: Vec<_> = stored.iter().map(|t| t.tx_id).collect();
    let have: std::collections::HashSet<_> = ids.iter().collect();
    let missing = want.difference(&have).count();
    let extra = have.difference(&want).count();
    (missing, extra, ids.len() - have.len())
}

/// Waits up to 60 s for a child to exit, with its output.
/// Runs `cmd` to its end (within `limit`) and returns its stdout; an error holding its
/// stderr unless it exited 0.
pub async fn run_ok(mut cmd: tokio::process::Command, limit: Duration) -> Result<Vec<u8>> {
    let out = tokio::time::timeout(limit, cmd.output()).await??;
    anyhow::ensure!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// `producer users generate` of the months `from` to `to` (`YYYY-MM`), `per_month` users
/// each, seeded, into `out`.
pub async fn generate_users(
    stack: &Stack,
    out: &Path,
    (from, to): (&str, &str),
    per_month: u32,
    seed: u64,
) -> Result<()> {
    let mut cmd = command("producer", stack);
    cmd.args(["users", "generate", "--from", from, "--to", to])
        .args([
            "--per-month",
            &per_month.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .arg("--out")
        .arg(out);
    run_ok(cmd, Duration::from_secs(60)).await.map(drop)
}

pub async fn wait_for_exit(child: tokio::process::Child) -> anyhow::Result<std::process::Output> {
    Ok(tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??)
}

/// A GET of `path` on `addr` (the binaries' metrics endpoint): status and body. HTTP/1.0,
/// so the server closes the connection after its answer.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await??;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP answer: {answer:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The value of the sample `name` (with its labels, if any) in a `/metrics` body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every series of the metric `name` (labelled or not) in a metrics `body`.
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = body
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The address a [`command_logged`] binary serves its metrics on (`--metrics-addr`), once
/// its log says so.
pub async fn metrics_addr(log: &Path) -> Result<String> {
    let serving = wait_for_event(log, "metrics", Duration::from_secs(30)).await?;
    Ok(serving["addr"].as_str().unwrap_or_default().to_owned())
}

/// Waits until the JSON log file of a [`command_logged`] binary has a line with `event`.
pub async fn wait_for_event(
    log: &Path,
    event: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        let lines = json_log(&text).unwrap_or_default();
        if let Some(line) = events(&lines, event).first() {
            return Ok((*line).clone());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no {event} line in {} within {timeout:?}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Holds an ACCESS EXCLUSIVE lock on `table` so that the sink's insert blocks: the sink
/// then has a batch in hand that it cannot write.
pub async fn lock_table(stack: &Stack, table: &str) -> anyhow::Result<tokio_postgres::Client> {
    let locker = pg(stack).await?;
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .await?;
    Ok(locker)
}

/// The log lines of a binary run by [`command`] (JSON, one object per line). A line that is
/// not a JSON object is an error: everything a binary writes to stderr goes through its
/// logger.
pub fn json_log(stderr: &[u8]) -> Result<Vec<serde_json::Value>> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).with_context(|| format!("not a JSON log line: {l:?}"))?;
            anyhow::ensure!(v.is_object(), "not a JSON object: {l:?}");
            Ok(v)
        })
        .collect()
}

/// The log lines whose `event` field is `event`.
pub fn events<'a>(log: &'a [serde_json::Value], event: &str) -> Vec<&'a serde_json::Value> {
    log.iter().filter(|l| l["event"] == event).collect()
}

/// The unsigned integer field `name` of a log line.
pub fn field_u64(line: &serde_json::Value, name: &str) -> Result<u64> {
    line[name]
        .as_u64()
        .with_context(|| format!("no unsigned field {name:?} in {line}"))
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

/// The committed offsets of `group` on `topic`, per partition.
pub async fn committed_offsets(
    stack: &Stack,
    topic: &str,
    group: &str,
) -> Result<BTreeMap<i32, i64>> {
    let stack = stack.clone();
    let (topic, group) = (topic.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || -> Result<BTreeMap<i32, i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stack.bootstrap)
            .set("group.id", &group)
            .create()?;
        let timeout = Duration::from_secs(30);
        let meta = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut tpl = TopicPartitionList::new();
        for t in meta.topics() {
            for p in t.partitions() {
                tpl.add_partition(&topic, p.id());
            }
        }
        let committed = consumer.committed_offsets(tpl, timeout)?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
            .collect())
    })
    .await?
}

/// The end offsets (high watermarks) of `topic`, per partition.
pub async fn end_offsets(stack: &Stack, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let stack = stack.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> Result<BTreeMap<i32, i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stack.bootstrap)
            .create()?;
        let timeout = Duration::from_secs(30);
        let meta = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut out = BTreeMap::new();
        for t in meta.topics() {
            for p in t.partitions() {
                // a topic just created may not have its leader yet: ask again for a while
                let deadline = std::time::Instant::now() + timeout;
                let end = loop {
                    match consumer.fetch_watermarks(&topic, p.id(), timeout) {
                        Ok((_, high)) => break high,
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                out.insert(p.id(), end);
            }
        }
        Ok(out)
    })
    .await?
}

/// A private stack for fault tests: its own PostgreSQL and Kafka (one or three nodes) on
/// free ports, in a folder under `.stack/private/`, started by `scripts/stack.sh` and
/// removed on drop. Tests may stop, kill and restart its servers without disturbing the
/// shared stack or each other.
pub struct PrivateStack {
    dir: tempfile::TempDir,
    brokers: usize,
    kafka_port: u16,
    /// Started with `scripts/stack.sh --tls`, with these subject alternative names and
    /// this SCRAM password.
    tls: Option<(String, String)>,
    /// Its settings.
    pub stack: Stack,
}

impl PrivateStack {
    /// Starts a private stack with `brokers` Kafka nodes (1 or 3).
    pub async fn start(brokers: usize) -> Result<PrivateStack> {
        Self::start_with(brokers, None).await
    }

    /// Starts a private stack as a managed service is (`scripts/stack.sh --tls`): its
    /// PostgreSQL accepts only TLS, its Kafka node has a SASL_SSL listener
    /// ([`PrivateStack::tls_bootstrap`]) with the SCRAM user `kafka_sink` /
    /// `sasl_password`, and the server certificate names `san` only (e.g.
    /// `DNS:localhost`). [`Self::stack`] reaches PostgreSQL as `localhost` with
    /// `verify-full`, and Kafka over PLAINTEXT.
    pub async fn start_tls(san: &str, sasl_password: &str) -> Result<PrivateStack> {
        Self::start_with(1, Some((san.to_owned(), sasl_password.to_owned()))).await
    }

    /// The CA that signed the servers' certificate (`--tls`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.crt")
    }

    /// The SASL_SSL listener (`--tls`), by the name its certificate holds.
    pub fn tls_bootstrap(&self) -> String {
        format!("localhost:{}", self.kafka_port + 200)
    }

    /// The SASL_SSL listener's port (`--tls`).
    pub fn tls_port(&self) -> u16 {
        self.kafka_port + 200
    }

    async fn start_with(brokers: usize, tls: Option<(String, String)>) -> Result<PrivateStack> {
        let parent = root().join(".stack/private");
        std::fs::create_dir_all(&parent)?;
        let dir = tempfile::Builder::new()
            .prefix("fault")
            .tempdir_in(&parent)?;
        // PostgreSQL runs as the postgres user when we are root: it must reach the folder.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let kafka_port = free_port_block(brokers)?;
        let pg_port = free_port_block(1)?;
        let base = stack();
        let bootstrap = (0..brokers)
            .map(|i| format!("127.0.0.1:{}", kafka_port + i as u16))
            .collect::<Vec<_>>()
            .join(",");
        let mut stack = Stack {
            bootstrap,
            pg: sink::PgConfig {
                host: "127.0.0.1".into(),
                port: pg_port,
                ..base.pg
            },
        };
        if tls.is_some() {
            stack.pg.host = "localhost".into();
            // a password of its own, so tests can look for it in logs
            stack.pg.password = "pg-s3cret-for-tests".into();
            stack.pg.tls = txn_runtime::postgres::PgTls {
                mode: txn_runtime::postgres::SslMode::VerifyFull,
                root_cert: Some(dir.path().join("tls/ca.crt")),
                cert: None,
                key: None,
            };
        }
        let me = PrivateStack {
            dir,
            brokers,
            kafka_port,
            tls,
            stack,
        };
        me.script(&["up"]).await?;
        Ok(me)
    }

    /// Runs `scripts/stack.sh` on this stack.
    pub async fn script(&self, args: &[&str]) -> Result<()> {
        let out = self.script_command(args).output().await?;
        if !out.status.success() {
            bail!(
                "scripts/stack.sh {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn script_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(root().join("scripts/stack.sh"));
        cmd.arg("--brokers")
            .arg(self.brokers.to_string())
            .arg("--state")
            .arg(self.dir.path());
        if let Some((san, password)) = &self.tls {
            cmd.arg("--tls")
                .env("STACK_TLS_SAN", san)
                .env("KAFKA_SASL_USERNAME", "kafka_sink")
                .env("KAFKA_SASL_PASSWORD", password);
        }
        cmd.args(args)
            .env(
                "KAFKA_BOOTSTRAP_SERVERS",
                format!("127.0.0.1:{}", self.kafka_port),
            )
            .env("POSTGRES_PORT", self.stack.pg.port.to_string())
            .env("POSTGRES_USER", &self.stack.pg.user)
            .env("POSTGRES_PASSWORD", &self.stack.pg.password)
            .env("POSTGRES_DB", &self.stack.pg.database)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Restarts PostgreSQL: a fast shutdown (active sessions are terminated), `down_for`
    /// without a server, then a start.
    pub async fn restart_postgres(&self, down_for: Duration) -> Result<()> {
        self.script(&["down", "postgres"]).await?;
        tokio::time::sleep(down_for).await;
        self.script(&["up", "postgres"]).await
    }

    /// Stops Kafka gracefully (every node), then starts it again.
    pub async fn restart_kafka(&self) -> Result<()> {
        self.script(&["down", "kafka"]).await?;
        self.script(&["up", "kafka"]).await
    }

    /// Kills Kafka node `node` (1-based) with SIGKILL.
    pub fn kill_broker(&self, node: usize) -> Result<()> {
        let pidfile = self.dir.path().join(format!("kafka/node{node}/kafka.pid"));
        let pid = std::fs::read_to_string(&pidfile)?.trim().to_owned();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()?;
        if !status.success() {
            bail!("kill -9 {pid} failed");
        }
        Ok(())
    }

    /// Starts whatever Kafka node is not running (after `kill_broker`).
    pub async fn start_missing_brokers(&self) -> Result<()> {
        self.script(&["up", "kafka"]).await
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        // Synchronous on purpose: the servers must be gone before the folder is.
        let _ = std::process::Command::new(root().join("scripts/stack.sh"))
            .arg("--brokers")
            .arg(self.brokers.to_string())
            .arg("--state")
            .arg(self.dir.path())
            .arg("clean")
            .env(
                "KAFKA_BOOTSTRAP_SERVERS",
                format!("127.0.0.1:{}", self.kafka_port),
            )
            .env("POSTGRES_PORT", self.stack.pg.port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A base port such that `base..base+n`, the controllers' `base+100..base+100+n` and the
/// SASL_SSL listeners' `base+200..base+200+n` are free.
fn free_port_block(n: usize) -> Result<u16> {
    let mut rng = rand::rng();
    for _ in 0..200 {
        let base: u16 = rng.random_range(20_000..40_000);
        let ports = (0..n as u16).flat_map(|i| [base + i, base + 100 + i, base + 200 + i]);
        if ports
            .clone()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return Ok(base);
        }
    }
    bail!("no free block of {n} ports found")
}

/// Serialises the heavy fault tests of one test binary: a private Kafka takes half a
/// gigabyte and much of a core while it starts, and this machine has two cores. (A resource
/// limit, not a correctness one: each test has its own servers, topic, group and table.)
pub async fn heavy_test_slot() -> tokio::sync::MutexGuard<'static, ()> {
    static SLOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SLOT.lock().await
}

/// The `tx_id`s a seeded producer run of `count` messages with v4 ids generates, computed
/// by running the same generator with the same seed and users.
pub fn seeded_tx_ids(seed: u64, count: u64) -> Result<Vec<uuid::Uuid>> {
    let users = txn_model::load_users(&users_dir())?;
    // as the producer builds it: the users' countries set their profiles' currencies
    let mut generator = txn_model::Generator::for_users(&users, Some(seed))?;
    let now = chrono::Utc::now();
    Ok((0..count).map(|_| generator.next_at(now).tx_id).collect())
}

/// Prints a test's figures and appends them to `target/test-figures.txt`, which
/// `scripts/test.sh` shows at the end (passing tests' output is otherwise hidden).
pub fn report_figures(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target.join("test-figures.txt"))
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Polls until `topic` holds at least `n` messages; fails after `limit`.
pub async fn wait_for_published(stack: &Stack, topic: &str, n: i64, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let have: i64 = end_offsets(stack, topic).await?.values().sum();
        if have >= n {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{topic} holds {have} messages after {limit:?}, expected {n}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until `table` exists (the sink creates it at start-up); fails after a minute.
pub async fn wait_for_table(db: &tokio_postgres::Client, table: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db
        .query_one("SELECT to_regclass($1) IS NULL", &[&table])
        .await?
        .get::<_, bool>(0)
    {
        if tokio::time::Instant::now() > deadline {
            bail!("{table} was not created within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Runs one of Kafka's own command-line tools (the Java clients, from the jars that
/// `scripts/stack.sh` fetched) with `args`, feeding it `stdin`; fails unless it exits 0.
pub async fn kafka_tool(class: &str, args: &[&str], stdin: &[u8]) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let libs = root().join(".stack/kafka/libs");
    anyhow::ensure!(
        libs.is_dir(),
        "Kafka's jars are missing: run scripts/stack.sh up"
    );
    let mut child = tokio::process::Command::new("java")
        .arg("-Xmx256m")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            root()
                .join("scripts/kafka/tools-log4j2.properties")
                .display()
        ))
        .arg(class)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run java: Kafka's tools need Java 17+")?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin).await?;
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .with_context(|| format!("{class} did not finish within 120 s"))??;
    anyhow::ensure!(
        out.status.success(),
        "{class} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Reads `n` records of `topic` from the beginning with Kafka's console consumer (the Java
/// client): `(partition, key, value)` as it prints them.
pub async fn console_consume(
    stack: &Stack,
    topic: &str,
    n: usize,
) -> Result<Vec<(i32, String, String)>> {
    let out = kafka_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        &[
            "--bootstrap-server",
            &stack.bootstrap,
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            &n.to_string(),
            "--timeout-ms",
            "60000",
            "--property",
            "print.key=true",
            "--property",
            "print.partition=true",
        ],
        b"",
    )
    .await?;
    out.lines()
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            let (Some(p), Some(k), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
                bail!("unexpected console consumer line {l:?}");
            };
            let p = p
                .strip_prefix("Partition:")
                .with_context(|| format!("no partition in {l:?}"))?
                .parse()?;
            Ok((p, k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Publishes `lines` (`key<TAB>value`) with Kafka's console producer (the Java client),
/// compressed with `codec` (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
pub async fn console_produce(
    stack: &Stack,
    topic: &str,
    codec: &str,
    lines: &[String],
) -> Result<()> {
    let mut input = lines.join("\n");
    input.push('\n');
    kafka_tool(
        "org.apache.kafka.tools.ConsoleProducer",
        &[
            "--bootstrap-server",
            &stack.bootstrap,
            "--topic",
            topic,
            "--compression-codec",
            codec,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=\t",
            "--producer-property",
            "acks=all",
        ],
        input.as_bytes(),
    )
    .await?;
    Ok(())
}

/// Runs psql as the stack's PostgreSQL superuser in the pipeline's database
/// (`scripts/stack.sh psql`), feeding it `stdin`; fails unless it exits 0.
pub async fn superuser_psql(args: &[&str], stdin: &[u8]) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(root().join("scripts/stack.sh"))
        .arg("psql")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run scripts/stack.sh psql")?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin).await?;
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("psql did not finish within 60 s")??;
    anyhow::ensure!(
        out.status.success(),
        "psql {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A login role made for one test (dropped with everything it owns by `drop`).
pub struct TestRole {
    /// Its name.
    pub name: String,
    /// Its password.
    pub password: String,
}

impl TestRole {
    /// Creates a login role with no privileges beyond PUBLIC's.
    pub async fn create(prefix: &str) -> Result<TestRole> {
        let role = TestRole {
            name: unique(prefix),
            password: unique("pw"),
        };
        superuser_psql(
            &[
                "-c",
                &format!(
                    "CREATE ROLE {} LOGIN PASSWORD '{}'",
                    role.name, role.password
                ),
            ],
            b"",
        )
        .await?;
        Ok(role)
    }

    /// Grants it what `sql/grants.sql` lists for `table`, by running that file.
    pub async fn grant_sink_privileges(&self, table: &str) -> Result<()> {
        let sql = std::fs::read(root().join("sql/grants.sql"))?;
        superuser_psql(
            &[
                "-v",
                &format!("sink_role={}", self.name),
                "-v",
                &format!("table={table}"),
            ],
            &sql,
        )
        .await?;
        Ok(())
    }

    /// The stack's PostgreSQL settings, logging in as this role.
    pub fn pg(&self, stack: &Stack) -> sink::PgConfig {
        sink::PgConfig {
            user: self.name.clone(),
            password: self.password.clone(),
            ..stack.pg.clone()
        }
    }

    /// Drops the role and what it owns.
    pub async fn drop(self) -> Result<()> {
        superuser_psql(
            &[
                "-c",
                &format!("DROP OWNED BY {0}", self.name),
                "-c",
                &format!("DROP ROLE {0}", self.name),
            ],
            b"",
        )
        .await?;
        Ok(())
    }
}

/// A TCP proxy to `127.0.0.1:<target>` whose network can be made to "die" silently, as a
/// NAT or firewall that forgets its connections does: after [`Blackhole::cut`] every
/// connection open at that moment, and every one opened until [`Blackhole::heal`], swallows
/// what is sent in either direction without ever closing. Connections opened after `heal`
/// work normally; the dead ones stay dead.
pub struct Blackhole {
    /// The port to connect to instead of the target.
    pub port: u16,
    state: std::sync::Arc<BlackholeState>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct BlackholeState {
    /// Bumped by each cut: a connection lives only in the epoch it was opened in.
    epoch: std::sync::atomic::AtomicU64,
    cut: std::sync::atomic::AtomicBool,
}

impl BlackholeState {
    fn alive(&self, epoch: u64) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        !self.cut.load(SeqCst) && self.epoch.load(SeqCst) == epoch
    }
}

impl Blackhole {
    /// Listens on a free loopback port, forwarding to `target`.
    pub async fn start(target: u16) -> Result<Blackhole> {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = std::sync::Arc::new(BlackholeState::default());
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let epoch = st.epoch.load(SeqCst);
                let born_dead = st.cut.load(SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    if born_dead {
                        // accepted, and then nothing: hold the socket, read and drop
                        let _w = cw;
                        swallow(cr).await;
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (sr, sw) = server.into_split();
                    let a = tokio::spawn(pipe(cr, sw, st.clone(), epoch));
                    let b = tokio::spawn(pipe(sr, cw, st, epoch));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Ok(Blackhole {
            port,
            state,
            accept,
        })
    }

    /// The network dies: open connections and new ones go silent.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.epoch.fetch_add(1, SeqCst);
        self.state.cut.store(true, SeqCst);
    }

    /// New connections work again (the dead ones stay dead).
    pub fn heal(&self) {
        self.state
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn swallow(mut from: tokio::net::tcp::OwnedReadHalf) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 << 10];
    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: std::sync::Arc<BlackholeState>,
    epoch: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !state.alive(epoch) {
            // the peer's writes vanish, and the other side is not closed while it lives
            let _keep_open = to;
            swallow(from).await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod suites {
    /// Without the `e2e` feature, cargo builds none of `tests/tests/*.rs`: this line says so
    /// in the test report, with the command that runs them.
    #[test]
    #[cfg_attr(
        not(feature = "e2e"),
        ignore = "skipped: the end-to-end suites need Kafka and PostgreSQL; run scripts/test.sh"
    )]
    fn every_end_to_end_suite_is_behind_the_e2e_feature() {
        // a suite missing from Cargo.toml would be built by a plain `cargo test` and fail
        // there for want of a stack
        let manifest = std::fs::read_to_string(super::root().join("tests/Cargo.toml")).unwrap();
        let suites = std::fs::read_dir(super::root().join("tests/tests")).unwrap();
        for entry in suites {
            let path = entry.unwrap().path();
            let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                continue;
            };
            let entry = format!("[[test]]\nname = \"{name}\"\nrequired-features = [\"e2e\"]");
            assert!(
                manifest.contains(&entry),
                "tests/Cargo.toml lacks:\n{entry}"
            );
        }
    }
}
