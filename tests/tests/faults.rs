//! Fault tests: things break for real (processes killed with SIGKILL, PostgreSQL and Kafka
//! restarted, a broker of a three-node cluster killed, poison messages), and each test
//! compares the exact set of tx_ids produced with the rows in the table: nothing missing,
//! nothing extra, no duplicates, field values equal. Each prints its figures.
//!
//! Tests that restart servers run on a private stack of their own (`PrivateStack`); the
//! others use the shared stack with their own topic, group and table. The heavy ones take
//! turns (`heavy_test_slot`): a two-core machine cannot run them all at once.

use std::collections::HashSet;
use std::time::Duration;

use pipeline_tests::*;
use rand::RngExt;
use txn_model::Transaction;
use uuid::Uuid;

async fn dead_letter_count(db: &tokio_postgres::Client, table: &str) -> anyhow::Result<i64> {
    Ok(db
        .query_one(&format!("SELECT count(*) FROM {table}_dead_letters"), &[])
        .await?
        .get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_sink_three_times_while_it_drains_100k() -> anyhow::Result<()> {
    let _slot = heavy_test_slot().await;
    let stack = stack();
    let topic = unique("fault_kill9");
    let table = unique("sink_kill9");
    let group = unique("group");
    const N: u64 = 100_000;
    create_topic(&stack, &topic, 3).await?;
    produce(&stack, &topic, N).await?;
    let db = pg(&stack).await?;
    let sink_args = [
        "--topic",
        &topic,
        "--table",
        &table,
        "--group-id",
        &group,
        "--batch-size",
        "500",
    ];

    // three runs killed with SIGKILL at random points of the drain
    let mut rng = rand::rng();
    let mut kill_points = Vec::new();
    for round in 0..3u64 {
        let at = round * 25_000 + rng.random_range(10_000..20_000);
        let mut child = command("sink", &stack).args(sink_args).spawn()?;
        wait_for_rows(&db, &table, at as i64, Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        child.start_kill()?; // SIGKILL
        child.wait().await?;
        kill_points.push(count_rows(&db, &table).await?);
    }
    assert!(
        kill_points.iter().all(|&n| n < N as i64),
        "every kill landed mid-drain: {kill_points:?}"
    );

    // a last run drains the rest and stops cleanly
    let child = command("sink", &stack).args(sink_args).spawn()?;
    wait_for_rows(&db, &table, N as i64, Duration::from_secs(180)).await?;
    terminate(&child);
    let out = wait_for_exit(child).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let produced = decode_all(&read_topic(&stack, &topic).await?);
    let stored = table_rows(&db, &table).await?;
    let expected: Vec<Uuid> = produced.iter().map(|t| t.tx_id).collect();
    let (missing, extra, dups) = figures(&expected, &stored);
    let dead = dead_letter_count(&db, &table).await?;
    report_figures(&format!(
        "FIGURES kill-9: messages={N} kills=3 (at rows {kill_points:?}) missing={missing} extra={extra} duplicates={dups} dead_letters={dead}"
    ));
    assert_same(&produced, &stored);
    assert_eq!(dead, 0);
    // Kafka's committed offsets follow the database's
    assert_eq!(
        committed_offsets(&stack, &topic, &group).await?,
        end_offsets(&stack, &topic).await?
    );
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_postgres_twice_during_ingest_loses_nothing_and_parks_nothing()
-> anyhow::Result<()> {
    let _slot = heavy_test_slot().await;
    let private = PrivateStack::start(1).await?;
    let stack = private.stack.clone();
    let topic = unique("fault_pg");
    let table = unique("sink_pg");
    const N: u64 = 20_000;
    const SEED: u64 = 2;
    create_topic(&stack, &topic, 3).await?;
    let db_rows = |s: Stack, t: String| async move {
        // a fresh connection each time: the server restarts under us
        let db = pg(&s).await?;
        count_rows(&db, &t).await
    };

    let sink = start_sink(sink_config(&stack, &topic, &table));
    let mut producer_config = producer_config(&stack, &topic, N);
    producer_config.pace = producer::Pace::Rate(2_000.0);
    producer_config.seed = Some(SEED);
    // ids that a seed repeats whole (v7 ids hold the time of generation)
    producer_config.tx_ids = producer::TxIdKind::V4;
    let producing = tokio::spawn(producer::run(
        producer_config,
        tokio_util::sync::CancellationToken::new(),
    ));

    let mut restarts = 0;
    for threshold in [3_000, 10_000] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while db_rows(stack.clone(), table.clone()).await.unwrap_or(0) < threshold {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ingest stalled below {threshold}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // down long enough for the sink's three retries to run out: it must pause and resume
        private.restart_postgres(Duration::from_secs(4)).await?;
        restarts += 1;
        assert!(
            !sink.handle.is_finished(),
            "the sink stays up through the restart"
        );
    }
    let report = producing.await??;
    assert!(report.lost_nothing(), "{report:?}");

    let db = pg(&stack).await?;
    wait_for_rows(&db, &table, N as i64, Duration::from_secs(120)).await?;
    let sink_report = sink.stop().await?;
    let stored = table_rows(&db, &table).await?;
    let expected = seeded_tx_ids(SEED, N)?;
    let (missing, extra, dups) = figures(&expected, &stored);
    let dead = dead_letter_count(&db, &table).await?;
    report_figures(&format!(
        "FIGURES postgres-restart: messages={N} restarts={restarts} missing={missing} extra={extra} duplicates={dups} dead_letters={dead} sink_outages={} sink_duplicates={}",
        sink_report.outages, sink_report.duplicates
    ));
    assert_eq!((missing, extra, dups, dead), (0, 0, 0, 0));
    // each restart outlasts the retries; two that come close together make one pause
    assert!(
        sink_report.outages >= 1,
        "the sink paused and resumed: {sink_report:?}"
    );
    assert_same(&decode_all(&read_topic(&stack, &topic).await?), &stored);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_broker_while_the_producer_runs_flat_out_loses_and_duplicates_nothing()
-> anyhow::Result<()> {
    let _slot = heavy_test_slot().await;
    let private = PrivateStack::start(1).await?;
    let stack = private.stack.clone();
    let topic = unique("fault_broker");
    let table = unique("sink_broker");
    const N: u64 = 150_000;
    const SEED: u64 = 3;
    create_topic(&stack, &topic, 3).await?;

    // --rate 0: as fast as the broker takes them; the restart lands mid-stream
    let mut config = producer_config(&stack, &topic, N);
    config.seed = Some(SEED);
    // ids that a seed repeats whole (v7 ids hold the time of generation)
    config.tx_ids = producer::TxIdKind::V4;
    let producing = tokio::spawn(producer::run(
        config,
        tokio_util::sync::CancellationToken::new(),
    ));
    wait_for_published(&stack, &topic, 10_000, Duration::from_secs(60)).await?;
    let before = end_offsets(&stack, &topic).await?.values().sum::<i64>();
    assert!(
        before < N as i64,
        "the restart lands mid-stream ({before} of {N} published)"
    );
    private.restart_kafka().await?;
    let report = tokio::time::timeout(Duration::from_secs(180), producing).await???;

    let produced = decode_all(&read_topic(&stack, &topic).await?);
    let in_topic: Vec<Uuid> = produced.iter().map(|t| t.tx_id).collect();
    let expected = seeded_tx_ids(SEED, N)?;
    let topic_set: HashSet<_> = in_topic.iter().collect();
    let topic_dups = in_topic.len() - topic_set.len();

    let db = pg(&stack).await?;
    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_rows(&db, &table, N as i64, Duration::from_secs(120)).await?;
    sink.stop().await?;
    let stored = table_rows(&db, &table).await?;
    let (missing, extra, dups) = figures(&expected, &stored);
    report_figures(&format!(
        "FIGURES broker-restart: messages={N} restarts=1 delivered={} failed={} topic_duplicates={topic_dups} missing={missing} extra={extra} duplicates={dups} dead_letters={}",
        report.delivered,
        report.failed,
        dead_letter_count(&db, &table).await?
    ));
    assert_eq!((report.delivered, report.failed), (N, 0));
    assert_eq!(topic_dups, 0, "the idempotent producer wrote no duplicate");
    assert_eq!(topic_set, expected.iter().collect::<HashSet<_>>());
    assert_eq!((missing, extra, dups), (0, 0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_scale_out_and_in_under_load_without_loss_or_duplicates() -> anyhow::Result<()> {
    let _slot = heavy_test_slot().await;
    let stack = stack();
    let topic = unique("fault_scale");
    let table = unique("sink_scale");
    let group = unique("group");
    const N: u64 = 45_000;
    create_topic(&stack, &topic, 6).await?;
    let db = pg(&stack).await?;
    let args = [
        "--topic",
        &topic,
        "--table",
        &table,
        "--group-id",
        &group,
        "--batch-size",
        "300",
        // a killed member's partitions move after the session timeout: keep it short here
        "-K",
        "session.timeout.ms=6000",
        "-K",
        "heartbeat.interval.ms=1000",
    ];
    let (mut cmd_a, log_a) = command_logged("sink", &stack, "scale_a")?;
    let (mut cmd_b, log_b) = command_logged("sink", &stack, "scale_b")?;
    let (mut cmd_c, log_c) = command_logged("sink", &stack, "scale_c")?;
    eprintln!("sink logs: {log_a:?} {log_b:?} {log_c:?}");
    let a = cmd_a.args(args).spawn()?;
    let b = cmd_b.args(args).spawn()?;

    let mut config = producer_config(&stack, &topic, N);
    config.pace = producer::Pace::Rate(3_000.0);
    let producing = tokio::spawn(producer::run(
        config,
        tokio_util::sync::CancellationToken::new(),
    ));

    wait_for_rows(&db, &table, 8_000, Duration::from_secs(120)).await?;
    let c = cmd_c.args(args).spawn()?; // a third joins
    wait_for_rows(&db, &table, 22_000, Duration::from_secs(120)).await?;
    let mut a = a;
    a.start_kill()?; // one is killed mid-stream
    a.wait().await?;

    let report = producing.await??;
    assert!(report.lost_nothing() && report.delivered == N, "{report:?}");
    wait_for_rows(&db, &table, N as i64, Duration::from_secs(120)).await?;
    terminate(&b);
    terminate(&c);
    let (ob, oc) = (wait_for_exit(b).await?, wait_for_exit(c).await?);
    for (o, log) in [(ob, &log_b), (oc, &log_c)] {
        assert!(
            o.status.success(),
            "{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    let produced = decode_all(&read_topic(&stack, &topic).await?);
    let stored = table_rows(&db, &table).await?;
    let expected: Vec<Uuid> = produced.iter().map(|t| t.tx_id).collect();
    let (missing, extra, dups) = figures(&expected, &stored);
    let dead = dead_letter_count(&db, &table).await?;
    report_figures(&format!(
        "FIGURES scale-out: messages={N} partitions=6 sinks=2+1 joined, 1 killed missing={missing} extra={extra} duplicates={dups} dead_letters={dead}"
    ));
    assert_same(&produced, &stored);
    assert_eq!(dead, 0);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_moving_back_and_forth_while_a_sink_reads_ahead_lose_and_stall_nothing()
-> anyhow::Result<()> {
    // A sink buffers a batch in hand and as much read ahead. Each time a second sink joins
    // or leaves, every partition is revoked and assigned again, and the buffered messages
    // of a partition are partly from before (stale: fetched again) and partly from after
    // (to keep). Dropping the wrong ones loses them until a later message of the partition
    // triggers a seek, and forever at the end of the stream: the sink then stalls short.
    // Twelve rebalances under a live stream; the next test forces the race itself.
    let _slot = heavy_test_slot().await;
    let stack = stack();
    let topic = unique("fault_moves");
    let table = unique("sink_moves");
    const N: u64 = 40_000;
    create_topic(&stack, &topic, 4).await?;
    let db = pg(&stack).await?;
    let mut config = sink_config(&stack, &topic, &table);
    config.batch_size = 200;
    let a = start_sink(config.clone());

    let mut producer = producer_config(&stack, &topic, N);
    producer.pace = producer::Pace::Rate(4_000.0);
    let producing = tokio::spawn(producer::run(
        producer,
        tokio_util::sync::CancellationToken::new(),
    ));
    // a second sink joins and leaves until the producer is done, and once more after
    let mut moves = 0;
    loop {
        let done = producing.is_finished();
        let b = start_sink(config.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        b.stop().await?;
        moves += 2;
        tokio::time::sleep(Duration::from_millis(700)).await;
        if done {
            break;
        }
    }
    let report = producing.await??;
    assert!(report.lost_nothing() && report.delivered == N, "{report:?}");
    wait_for_rows(&db, &table, N as i64, Duration::from_secs(60)).await?;
    a.stop().await?;

    let produced = decode_all(&read_topic(&stack, &topic).await?);
    let stored = table_rows(&db, &table).await?;
    let expected: Vec<Uuid> = produced.iter().map(|t| t.tx_id).collect();
    let (missing, extra, dups) = figures(&expected, &stored);
    report_figures(&format!(
        "FIGURES partition-moves: messages={N} partitions=4 rebalances={moves} missing={missing} extra={extra} duplicates={dups}"
    ));
    assert_same(&produced, &stored);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_a_write_is_blocked_keeps_the_messages_fetched_after_it()
-> anyhow::Result<()> {
    // The race above, forced. Sink A's first write is held on a row lock
    // of its offsets; meanwhile it reads ahead the rest of the stream. Sink B joins: A's
    // partitions are revoked and one comes back, and librdkafka fetches it again from the
    // start. When the lock goes, A must keep those re-fetched messages (they are the
    // partition's last ones: nothing else would come to trigger a seek).
    let _slot = heavy_test_slot().await;
    let stack = stack();
    let topic = unique("fault_blocked_move");
    let table = unique("sink_blocked_move");
    let offsets = format!("{table}_offsets");
    create_topic(&stack, &topic, 2).await?;
    let db = pg(&stack).await?;
    let mut config = sink_config(&stack, &topic, &table);
    config.batch_size = 5_000; // the read-ahead holds everything that comes
    let a = start_sink(config.clone());
    wait_for_table(&db, &offsets).await?;
    db.execute(
        &format!(
            "INSERT INTO {offsets} (group_id, topic, partition, next_offset) VALUES ($1, $2, 0, 0), ($1, $2, 1, 0)"
        ),
        &[&config.group_id, &topic],
    )
    .await?;
    let locker = pg(&stack).await?;
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM {offsets} WHERE group_id = '{}' FOR UPDATE",
            config.group_id
        ))
        .await?;

    produce(&stack, &topic, 1_000).await?; // A's first batch: its write waits for the lock
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE %'",
            &[],
        )
        .await?
        .get::<_, i64>(0)
        == 0
    {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "A's write never blocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&stack, &topic, 1_000).await?; // read ahead by A
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = start_sink(config.clone()); // a rebalance while A's write is blocked
    tokio::time::sleep(Duration::from_secs(6)).await;
    locker.batch_execute("ROLLBACK").await?;

    wait_for_rows(&db, &table, 2_000, Duration::from_secs(60)).await?;
    let (ra, rb) = (a.stop().await?, b.stop().await?);
    let produced = decode_all(&read_topic(&stack, &topic).await?);
    let stored = table_rows(&db, &table).await?;
    assert_same(&produced, &stored);
    eprintln!("blocked-move test: sink A {ra:?}, sink B {rb:?}");
    drop_tables(&db, &table).await
}

/// One kind of malformed payload: its name, bytes, and what its dead letter must say.
struct Poison {
    name: &'static str,
    payload: Vec<u8>,
    class: &'static str,
    reason_contains: &'static str,
}

fn poison_corpus(valid: &Transaction) -> Vec<Poison> {
    let base: serde_json::Value = serde_json::from_slice(&valid.to_json()).unwrap();
    let with = |field: &str, value: serde_json::Value| {
        let mut v = base.clone();
        v["tx_id"] = Uuid::new_v4().to_string().into();
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    };
    let without = |field: &str| {
        let mut v = base.clone();
        v["tx_id"] = Uuid::new_v4().to_string().into();
        v.as_object_mut().unwrap().remove(field);
        serde_json::to_vec(&v).unwrap()
    };
    let raw_number = |field: &str, number: &str| {
        let mut v = base.clone();
        v["tx_id"] = Uuid::new_v4().to_string().into();
        v[field] = "@@".into();
        serde_json::to_string(&v)
            .unwrap()
            .replace("\"@@\"", number)
            .into_bytes()
    };
    let full = valid.to_json();
    let p = |name, payload, class, reason_contains| Poison {
        name,
        payload,
        class,
        reason_contains,
    };
    use serde_json::json;
    vec![
        p("empty", Vec::new(), "invalid_json", "EOF"),
        p(
            "not json",
            b"hello, world".to_vec(),
            "invalid_json",
            "expected",
        ),
        p(
            "truncated",
            full[..full.len() / 2].to_vec(),
            "invalid_json",
            "EOF",
        ),
        p("not utf-8", b"\xff\xfe\xfd{}".to_vec(), "not_utf8", "UTF-8"),
        p(
            "latin-1 text",
            b"{\"merchant\":\"Caf\xe9\"}".to_vec(),
            "not_utf8",
            "UTF-8",
        ),
        p("json array", b"[1,2,3]".to_vec(), "schema", "field"),
        p(
            "json string",
            b"\"a transaction\"".to_vec(),
            "schema",
            "invalid type",
        ),
        p("json null", b"null".to_vec(), "schema", "invalid type"),
        p(
            "trailing garbage",
            [full.clone(), b"}}".to_vec()].concat(),
            "invalid_json",
            "trailing",
        ),
        p("missing tx_id", without("tx_id"), "schema", "`tx_id`"),
        p("missing user_id", without("user_id"), "schema", "`user_id`"),
        p("missing amount", without("amount"), "schema", "`amount`"),
        p(
            "missing currency",
            without("currency"),
            "schema",
            "`currency`",
        ),
        p(
            "missing timestamp",
            without("timestamp"),
            "schema",
            "`timestamp`",
        ),
        p(
            "tx_id not a uuid",
            with("tx_id", json!("tx-42")),
            "schema",
            "`tx_id`",
        ),
        p(
            "user_id a number",
            with("user_id", json!(42)),
            "schema",
            "`user_id`",
        ),
        p(
            "amount a string",
            with("amount", json!("12.50")),
            "schema",
            "`amount`",
        ),
        p(
            "amount too large",
            raw_number("amount", "123456789.00"),
            "schema",
            "DECIMAL(10,2)",
        ),
        p(
            "amount three decimals",
            raw_number("amount", "1.005"),
            "schema",
            "DECIMAL(10,2)",
        ),
        p(
            "currency lower case",
            with("currency", json!("usd")),
            "schema",
            "`currency`",
        ),
        p(
            "currency four letters",
            with("currency", json!("EURO")),
            "schema",
            "`currency`",
        ),
        p(
            "merchant too long",
            with("merchant", json!("m".repeat(300))),
            "schema",
            "`merchant`",
        ),
        p(
            "merchant empty",
            with("merchant", json!("")),
            "schema",
            "`merchant`",
        ),
        p(
            "category too long",
            with("category", json!("c".repeat(101))),
            "schema",
            "`category`",
        ),
        p(
            "timestamp unparseable",
            with("timestamp", json!("15/08/2025 10:30")),
            "schema",
            "`timestamp`",
        ),
        p(
            "timestamp a number",
            with("timestamp", json!(1755253800)),
            "schema",
            "`timestamp`",
        ),
        p(
            "processing_time negative",
            with("processing_time_ms", json!(-5)),
            "schema",
            "`processing_time_ms`",
        ),
        p(
            "processing_time a float",
            raw_number("processing_time_ms", "1.5"),
            "schema",
            "`processing_time_ms`",
        ),
        p(
            "NUL in merchant",
            with("merchant", json!("Ama\u{0}zon")),
            "schema",
            "NUL",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_corpus_is_parked_with_reasons_and_the_valid_messages_land() -> anyhow::Result<()>
{
    let stack = stack();
    let topic = unique("fault_poison");
    let table = unique("sink_poison");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;

    let users = txn_model::load_users(&users_dir())?.ids;
    let mut generator = txn_model::Generator::new(users, Some(25))?;
    let valid: Vec<Transaction> = (0..40).map(|_| generator.next_now()).collect();
    let corpus = poison_corpus(&valid[0]);
    let kinds: HashSet<&str> = corpus.iter().map(|p| p.name).collect();
    assert!(kinds.len() >= 25, "{} kinds", kinds.len());

    // Two more that only PostgreSQL or the table's content can reject: a row that breaks a
    // CHECK constraint the operator added, and a conflicting duplicate of a stored tx_id.
    let mut check_breaker = generator.next_now();
    check_breaker.merchant = "BLOCKED MERCHANT".into();
    let mut conflicting = valid[0].clone();
    conflicting.amount += rust_decimal::Decimal::ONE;

    // The sink creates the table; the operator adds a constraint; then the data arrives.
    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_table(&db, &table).await?;
    db.batch_execute(&format!(
        "ALTER TABLE {table} ADD CONSTRAINT merchant_not_blocked CHECK (merchant <> 'BLOCKED MERCHANT')"
    ))
    .await?;

    // valid, poison, valid, poison, … on one partition, then the two late ones among valid ones
    let mut payloads = Vec::new();
    let mut v = valid.iter();
    for poison in &corpus {
        payloads.push(v.next().unwrap().to_json());
        payloads.push(poison.payload.clone());
    }
    payloads.extend(v.by_ref().take(3).map(Transaction::to_json));
    payloads.push(check_breaker.to_json());
    payloads.extend(v.by_ref().take(3).map(Transaction::to_json));
    payloads.push(conflicting.to_json());
    payloads.extend(v.map(Transaction::to_json));
    produce_raw(&stack, &topic, 0, &payloads).await?;

    wait_for_rows(&db, &table, valid.len() as i64, Duration::from_secs(60)).await?;
    let parked_expected = corpus.len() + 2;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while dead_letter_count(&db, &table).await? < parked_expected as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every poison message was parked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!sink.handle.is_finished(), "the sink never exits");
    let report = sink.stop().await?;

    // every valid message is a row, with equal fields
    assert_same(&valid, &table_rows(&db, &table).await?);
    // every poison message is parked, in order, with its bytes and a reason naming its problem
    let parked = db
        .query(
            &format!("SELECT payload, error_class, reason FROM {table}_dead_letters ORDER BY kafka_offset"),
            &[],
        )
        .await?;
    assert_eq!(parked.len(), parked_expected);
    for (row, poison) in parked.iter().zip(&corpus) {
        let (payload, class, reason): (Vec<u8>, String, String) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(payload, poison.payload, "{}", poison.name);
        assert_eq!(class, poison.class, "{}: {reason}", poison.name);
        assert!(
            reason.contains(poison.reason_contains),
            "{}: {reason}",
            poison.name
        );
    }
    let rejected = &parked[corpus.len()];
    assert_eq!(rejected.get::<_, String>(1), "rejected");
    assert!(
        rejected
            .get::<_, String>(2)
            .contains("merchant_not_blocked"),
        "{}",
        rejected.get::<_, String>(2)
    );
    let conflict = &parked[corpus.len() + 1];
    assert_eq!(conflict.get::<_, String>(1), "conflicting_duplicate");
    assert!(
        conflict.get::<_, String>(2).contains("amount"),
        "{}",
        conflict.get::<_, String>(2)
    );
    report_figures(&format!(
        "FIGURES poison: kinds={} (+1 rejected by a CHECK constraint, +1 conflicting duplicate) valid={} rows={} dead_letters={} sink_dead_letters={} missing=0 extra=0",
        kinds.len(),
        valid.len(),
        count_rows(&db, &table).await?,
        parked.len(),
        report.dead_letters
    ));

    // after a fix (the constraint dropped), the rejected row replays into the table
    db.batch_execute(&format!(
        "ALTER TABLE {table} DROP CONSTRAINT merchant_not_blocked"
    ))
    .await?;
    let mut config = sink_config(&stack, &topic, &table);
    config.group_id = unique("replay");
    let replayed = sink::replay_dead_letters(&config, &[], Some("rejected")).await?;
    assert_eq!(
        (replayed.replayed, replayed.inserted, replayed.still_failing),
        (1, 1, 0)
    );
    let merchant: String = db
        .query_one(
            &format!("SELECT merchant FROM {table} WHERE tx_id = $1"),
            &[&check_breaker.tx_id.to_string()],
        )
        .await?
        .get(0);
    assert_eq!(merchant, "BLOCKED MERCHANT");
    // a schema violation still fails on replay and stays parked, one attempt more
    let again = sink::replay_dead_letters(&config, &[], Some("schema")).await?;
    assert_eq!(again.replayed, 0);
    assert!(again.still_failing > 20);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_broker_of_a_three_node_cluster_loses_nothing() -> anyhow::Result<()> {
    let _slot = heavy_test_slot().await;
    let private = PrivateStack::start(3).await?;
    let stack = private.stack.clone();
    let topic = unique("fault_cluster");
    let table = unique("sink_cluster");
    const N: u64 = 40_000;
    const SEED: u64 = 6;
    create_topic_replicated(&stack, &topic, 3, 3).await?;

    let mut config = producer_config(&stack, &topic, N);
    config.seed = Some(SEED);
    // ids that a seed repeats whole (v7 ids hold the time of generation)
    config.tx_ids = producer::TxIdKind::V4;
    config.pace = producer::Pace::Rate(4_000.0);
    let producing = tokio::spawn(producer::run(
        config,
        tokio_util::sync::CancellationToken::new(),
    ));
    let db = pg(&stack).await?;
    let sink = start_sink(sink_config(&stack, &topic, &table));

    wait_for_published(&stack, &topic, 8_000, Duration::from_secs(60)).await?;
    private.kill_broker(2)?;
    let report = tokio::time::timeout(Duration::from_secs(180), producing).await???;
    wait_for_rows(&db, &table, N as i64, Duration::from_secs(180)).await?;
    let sink_report = sink.stop().await?;

    let stored = table_rows(&db, &table).await?;
    let expected = seeded_tx_ids(SEED, N)?;
    let (missing, extra, dups) = figures(&expected, &stored);
    report_figures(&format!(
        "FIGURES three-brokers: messages={N} brokers_killed=1 delivered={} failed={} missing={missing} extra={extra} duplicates={dups} dead_letters={}",
        report.delivered, report.failed, sink_report.dead_letters
    ));
    assert_eq!((report.delivered, report.failed), (N, 0));
    assert_eq!((missing, extra, dups), (0, 0, 0));
    assert_eq!(sink_report.dead_letters, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_messages_make_the_producer_exit_nonzero_saying_how_many()
-> anyhow::Result<()> {
    let _slot = heavy_test_slot().await;
    let private = PrivateStack::start(1).await?;
    let stack = private.stack.clone();
    let topic = unique("fault_undeliverable");
    create_topic(&stack, &topic, 1).await?;
    let child = command("producer", &stack)
        .args([
            "--topic",
            &topic,
            "--rate",
            "500",
            "--delivery-timeout",
            "3",
        ])
        .spawn()?;
    wait_for_published(&stack, &topic, 200, Duration::from_secs(60)).await?;
    // the broker goes away for longer than the delivery timeout
    private.script(&["down", "kafka"]).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    terminate(&child);
    let out = wait_for_exit(child).await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let log = json_log(&out.stderr)?;
    let line = *events(&log, "report")
        .first()
        .unwrap_or_else(|| panic!("no report: {text}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    let field = |name: &str| field_u64(line, name);
    let (sent, delivered, failed) = (field("sent")?, field("delivered")?, field("failed")?);
    let possibly = field("possibly_persisted")?;
    assert!(failed > 0 && possibly <= failed, "{line}");
    assert_eq!(
        sent,
        delivered + failed,
        "every message is accounted for: {line}"
    );
    private.script(&["up", "kafka"]).await?;
    let payloads = read_topic(&stack, &topic).await?;
    let in_topic = payloads.len() as u64;
    let distinct: std::collections::HashSet<_> = payloads.iter().collect();
    report_figures(&format!(
        "FIGURES undeliverable: sent={sent} delivered={delivered} failed={failed} (possibly persisted {possibly}) in_topic={in_topic} exit=1"
    ));
    // every message reported delivered is in the topic, none twice; a failed one may be
    // too: sent without an answer (librdkafka's "possibly persisted"), or appended by the
    // stopping broker, which then answered "not leader" (librdkafka's "not persisted": so
    // `delivered + possibly` is no upper bound, `sent` is; docs/DESIGN.md P1)
    assert_eq!(
        distinct.len() as u64,
        in_topic,
        "no message twice in the topic"
    );
    // which failures the producer saw, so a mismatch names the error behind it
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    for failure in log
        .iter()
        .filter(|l| l["message"] == "message not delivered")
    {
        let kind = failure["error"].as_str().unwrap_or("?").to_string();
        let persisted = failure["possibly_persisted"].as_bool().unwrap_or(false);
        *kinds
            .entry(format!("{kind} (possibly persisted: {persisted})"))
            .or_default() += 1;
    }
    assert!(
        in_topic >= delivered && in_topic <= sent,
        "{in_topic} in the topic for {line}; failures: {kinds:?}"
    );
    Ok(())
}
