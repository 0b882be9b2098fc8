//! Bounded waits: a network that dies silently becomes the outage path in bounded time, a
//! probe hung on it never holds up the stop signal, and a write that outlasts
//! `max.poll.interval.ms` does not cost the sink its partitions.

use std::time::{Duration, Instant};

use pipeline_tests::*;
use txn_model::Transaction;

/// A sink config whose PostgreSQL connections go through `proxy`, with short deadlines.
fn through(stack: &Stack, proxy: &Blackhole, topic: &str, table: &str) -> sink::SinkConfig {
    let mut config = sink_config(stack, topic, table);
    config.postgres.host = "127.0.0.1".into();
    config.postgres.port = proxy.port;
    config.postgres.connect_timeout = Duration::from_secs(3);
    config.postgres.statement_timeout = Duration::from_secs(2);
    config
}

async fn produced(stack: &Stack, topic: &str) -> anyhow::Result<Vec<Transaction>> {
    Ok(read_topic(stack, topic)
        .await?
        .iter()
        .map(|p| Transaction::from_json(p))
        .collect::<Result<_, _>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_network_becomes_an_outage_and_the_sink_resumes() -> anyhow::Result<()> {
    init_logs();
    let stack = stack();
    let topic = unique("wait_dead_net");
    let table = unique("sink_dead_net");
    create_topic(&stack, &topic, 2).await?;
    let db = pg(&stack).await?;
    let proxy = Blackhole::start(stack.pg.port).await?;
    let sink = start_sink(through(&stack, &proxy, &topic, &table));
    produce(&stack, &topic, 100).await?;
    wait_for_rows(&db, &table, 100, Duration::from_secs(60)).await?;

    // the network dies while the sink has work: every write hangs on a silent socket
    proxy.cut();
    produce(&stack, &topic, 100).await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(count_rows(&db, &table).await?, 100);
    assert!(!sink.handle.is_finished(), "the sink must wait, not exit");
    proxy.heal();
    let healed = Instant::now();
    wait_for_rows(&db, &table, 200, Duration::from_secs(60)).await?;
    report_figures(&format!(
        "waits: after a silent network death of 12 s, rows landed {:.1} s after the network came back",
        healed.elapsed().as_secs_f64()
    ));
    let report = sink.stop().await?;
    assert_eq!(report.inserted, 200, "{report:?}");
    assert_same(
        &produced(&stack, &topic).await?,
        &table_rows(&db, &table).await?,
    );
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_outage_probes_returns_at_once() -> anyhow::Result<()> {
    init_logs();
    let stack = stack();
    let topic = unique("wait_probe_stop");
    let table = unique("sink_probe_stop");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let proxy = Blackhole::start(stack.pg.port).await?;
    let mut config = through(&stack, &proxy, &topic, &table);
    config.retry.retries = 0;
    // a write gives up after 2 s; then each probe hangs for up to 2 s (its deadline) or
    // for the connect timeout (10 s) on new connections
    config.postgres.statement_timeout = Duration::from_secs(1);
    config.postgres.connect_timeout = Duration::from_secs(10);
    let sink = start_sink(config);
    produce(&stack, &topic, 10).await?;
    wait_for_rows(&db, &table, 10, Duration::from_secs(60)).await?;
    proxy.cut();
    produce(&stack, &topic, 10).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stopping = Instant::now();
    sink.stop.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), sink.handle)
        .await
        .map_err(|_| anyhow::anyhow!("the sink ignored the stop signal for 30 s"))??;
    let took = stopping.elapsed();
    let err = result.expect_err("the outage was not over").to_string();
    assert!(err.contains("PostgreSQL was unavailable"), "{err}");
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    report_figures(&format!(
        "waits: a stop during hung outage probes returned in {:.2} s",
        took.as_secs_f64()
    ));
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_longer_than_max_poll_interval_keeps_the_partitions() -> anyhow::Result<()> {
    init_logs();
    let stack = stack();
    let topic = unique("wait_max_poll");
    let table = unique("sink_max_poll");
    create_topic(&stack, &topic, 2).await?;
    let db = pg(&stack).await?;
    let mut config = sink_config(&stack, &topic, &table);
    config.batch_size = 10;
    config.kafka_options = txn_runtime::kafka::KafkaOptions(vec![
        ("max.poll.interval.ms".into(), "7000".into()),
        ("session.timeout.ms".into(), "6000".into()),
    ]);
    let sink = start_sink(config);
    produce(&stack, &topic, 5).await?;
    wait_for_rows(&db, &table, 5, Duration::from_secs(60)).await?;

    // a DBA's long transaction blocks the sink's inserts for 12 s, with a backlog waiting
    let mut locker = pg(&stack).await?;
    let lock = locker.transaction().await?;
    lock.batch_execute(&format!("LOCK TABLE {table} IN SHARE MODE"))
        .await?;
    produce(&stack, &topic, 200).await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    lock.commit().await?;

    wait_for_rows(&db, &table, 205, Duration::from_secs(60)).await?;
    let report = sink.stop().await?;
    assert_eq!(
        report.revoked, 0,
        "the group evicted the sink during the write: {report:?}"
    );
    assert_eq!(report.inserted, 205, "{report:?}");
    assert_same(
        &produced(&stack, &topic).await?,
        &table_rows(&db, &table).await?,
    );
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_server_cannot_write_in_time_is_written_in_halves() -> anyhow::Result<()> {
    init_logs();
    let stack = stack();
    let topic = unique("wait_slow_batch");
    let table = unique("sink_slow_batch");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    drop(sink::store::Store::connect(&stack.pg, &table).await?);
    // an operator's trigger costs 20 ms a row: a batch of 400 needs 8 s, past the 1 s
    // statement timeout (and the 2 s operation timeout) every time it is tried whole
    db.batch_execute(&format!(
        "CREATE FUNCTION {table}_slow() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$; \
         CREATE TRIGGER slow BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_slow()"
    ))
    .await?;
    produce(&stack, &topic, 400).await?;
    let mut config = sink_config(&stack, &topic, &table);
    config.batch_size = 400;
    config.postgres.statement_timeout = Duration::from_secs(1);
    let sink = start_sink(config);
    wait_for_rows(&db, &table, 400, Duration::from_secs(120)).await?;
    let report = sink.stop().await?;
    assert!(report.outages >= 1, "{report:?}");
    assert!(
        report.batches >= 8,
        "400 rows at most ~40 per batch: {report:?}"
    );
    assert_eq!(report.inserted, 400, "{report:?}");
    assert_same(
        &produced(&stack, &topic).await?,
        &table_rows(&db, &table).await?,
    );
    db.batch_execute(&format!("DROP FUNCTION {table}_slow() CASCADE"))
        .await?;
    drop_tables(&db, &table).await
}
