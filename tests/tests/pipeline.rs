//! End to end on the real stack: producer → Kafka → sink → PostgreSQL.
//! Each test has its own topic, group and table.

use std::collections::HashSet;
use std::time::Duration;

use pipeline_tests::*;
use txn_model::{Transaction, load_users};

fn decode_all(payloads: &[Vec<u8>]) -> Vec<Transaction> {
    payloads
        .iter()
        .map(|p| Transaction::from_json(p).expect("the producer writes valid messages"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_transactions_land_exactly_once_with_equal_fields() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("e2e_thousand");
    let table = unique("sink_thousand");
    create_topic(&stack, &topic, 3).await?;

    let report = produce(&stack, &topic, 1000).await?;
    assert_eq!(
        (report.sent, report.delivered, report.failed),
        (1000, 1000, 0)
    );

    let db = pg(&stack).await?;
    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_rows(&db, &table, 1000, Duration::from_secs(60)).await?;
    let sink_report = sink.stop().await?;

    let produced = decode_all(&read_topic(&stack, &topic).await?);
    assert_eq!(
        produced.len(),
        1000,
        "the topic holds what the producer reported"
    );
    let stored = table_rows(&db, &table).await?;
    assert_same(&produced, &stored);
    assert_eq!(sink_report.inserted, 1000);
    assert_eq!(sink_report.dead_letters, 0);

    // every user id in the table comes from the CSV files
    let users: HashSet<_> = load_users(&users_dir())?.ids.into_iter().collect();
    let strangers: Vec<_> = stored
        .iter()
        .filter(|t| !users.contains(&t.user_id))
        .collect();
    assert!(
        strangers.is_empty(),
        "{} rows with a user not in the CSVs",
        strangers.len()
    );

    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_the_sink_mid_stream_loses_and_duplicates_nothing()
-> anyhow::Result<()> {
    // enough small batches that both stops land mid-stream however fast the machine
    const MESSAGES: i64 = 20_000;
    let stack = stack();
    let topic = unique("e2e_restart");
    let table = unique("sink_restart");
    create_topic(&stack, &topic, 3).await?;
    produce(&stack, &topic, MESSAGES as u64).await?;
    let db = pg(&stack).await?;

    let mut config = sink_config(&stack, &topic, &table);
    config.batch_size = 20; // many small batches, so the stops land mid-stream

    // 1. a clean stop part-way through
    let first = start_sink(config.clone());
    let seen = wait_for_rows(&db, &table, 1000, Duration::from_secs(60)).await?;
    let r1 = first.stop().await?;
    let after_stop = count_rows(&db, &table).await?;
    assert!(
        after_stop < MESSAGES,
        "stopped mid-stream ({seen} rows seen)"
    );
    assert_eq!(
        r1.inserted as i64, after_stop,
        "clean stop: every batch consumed was written"
    );

    // 2. an abrupt stop (task aborted mid-batch: nothing drained, nothing committed on the way out)
    let second = start_sink(config.clone());
    wait_for_rows(&db, &table, after_stop + 1000, Duration::from_secs(60)).await?;
    second.handle.abort();
    let _ = second.handle.await;

    // 3. a restart drains the rest; redelivered messages are skipped, not duplicated
    let third = start_sink(config.clone());
    wait_for_rows(&db, &table, MESSAGES, Duration::from_secs(90)).await?;
    let r3 = third.stop().await?;

    let produced = decode_all(&read_topic(&stack, &topic).await?);
    let stored = table_rows(&db, &table).await?;
    assert_same(&produced, &stored);
    assert_eq!(stored.len() as i64, MESSAGES);
    let dup_free: i64 = db
        .query_one(&format!("SELECT count(DISTINCT tx_id) FROM {table}"), &[])
        .await?
        .get(0);
    assert_eq!(dup_free, MESSAGES);
    eprintln!(
        "restart test: first run inserted {}, final run inserted {} and skipped {} redelivered",
        r1.inserted, r3.inserted, r3.duplicates
    );

    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_skipped_and_the_sink_keeps_running() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("e2e_malformed");
    let table = unique("sink_malformed");
    create_topic(&stack, &topic, 1).await?;

    let mut generator = txn_model::Generator::new(load_users(&users_dir())?.ids, Some(5))?;
    let valid: Vec<Transaction> = (0..6).map(|_| generator.next_now()).collect();
    let mut missing_amount: serde_json::Value = serde_json::from_slice(&valid[0].to_json())?;
    missing_amount.as_object_mut().unwrap().remove("amount");
    missing_amount["tx_id"] = uuid::Uuid::new_v4().to_string().into();
    let bad: Vec<Vec<u8>> = vec![
        b"this is not json".to_vec(),
        {
            let full = valid[1].to_json();
            full[..full.len() / 2].to_vec() // truncated
        },
        serde_json::to_vec(&missing_amount)?,
        b"\xff\xfe\x00garbage".to_vec(),
        Vec::new(),
    ];
    // valid, bad, valid, bad, … on one partition, so the bad ones sit between valid ones
    let mut payloads = Vec::new();
    for (i, b) in bad.iter().enumerate() {
        payloads.push(valid[i].to_json());
        payloads.push(b.clone());
    }
    payloads.push(valid[5].to_json());
    produce_raw(&stack, &topic, 0, &payloads).await?;

    let db = pg(&stack).await?;
    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_rows(&db, &table, 6, Duration::from_secs(60)).await?;
    assert!(
        !sink.handle.is_finished(),
        "the sink is still running after the malformed messages"
    );

    // it keeps consuming: more valid messages still land
    let later: Vec<Transaction> = (0..3).map(|_| generator.next_now()).collect();
    produce_raw(
        &stack,
        &topic,
        0,
        &later.iter().map(Transaction::to_json).collect::<Vec<_>>(),
    )
    .await?;
    wait_for_rows(&db, &table, 9, Duration::from_secs(60)).await?;
    let report = sink.stop().await?;

    let stored = table_rows(&db, &table).await?;
    let expected: Vec<Transaction> = valid.into_iter().chain(later).collect();
    assert_same(&expected, &stored);
    assert_eq!(report.dead_letters, 5);
    assert_eq!(report.messages, 14);
    // each malformed message is parked with its bytes, position and reason
    let parked = db
        .query(
            &format!("SELECT kafka_offset, payload, error_class, reason FROM {table}_dead_letters ORDER BY kafka_offset"),
            &[],
        )
        .await?;
    let offsets: Vec<i64> = parked.iter().map(|r| r.get(0)).collect();
    assert_eq!(offsets, vec![1, 3, 5, 7, 9]);
    for (row, payload) in parked.iter().zip(&bad) {
        assert_eq!(&row.get::<_, Vec<u8>>(1), payload);
    }
    let classes: Vec<String> = parked.iter().map(|r| r.get(2)).collect();
    assert_eq!(
        classes,
        [
            "invalid_json",
            "invalid_json",
            "schema",
            "not_utf8",
            "invalid_json"
        ]
    );
    assert!(parked[2].get::<_, String>(3).contains("`amount`"));

    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_clean_stop_reads_nothing_twice() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("e2e_commit");
    let table = unique("sink_commit");
    create_topic(&stack, &topic, 2).await?;
    produce(&stack, &topic, 500).await?;
    let db = pg(&stack).await?;
    let config = sink_config(&stack, &topic, &table);

    let first = start_sink(config.clone());
    wait_for_rows(&db, &table, 500, Duration::from_secs(60)).await?;
    assert_eq!(first.stop().await?.inserted, 500);

    // same group: the committed offsets are at the end, so nothing is redelivered
    produce(&stack, &topic, 50).await?;
    let second = start_sink(config);
    wait_for_rows(&db, &table, 550, Duration::from_secs(60)).await?;
    let r = second.stop().await?;
    assert_eq!((r.messages, r.inserted, r.duplicates), (50, 50, 0));

    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivering_a_whole_topic_adds_no_row() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("e2e_redeliver");
    let table = unique("sink_redeliver");
    create_topic(&stack, &topic, 3).await?;
    produce(&stack, &topic, 400).await?;
    let db = pg(&stack).await?;

    let first = start_sink(sink_config(&stack, &topic, &table));
    wait_for_rows(&db, &table, 400, Duration::from_secs(60)).await?;
    first.stop().await?;

    // a fresh group reads everything again, as after a lost offset commit
    let config = sink_config(&stack, &topic, &table);
    let group = config.group_id.clone();
    let again = start_sink(config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // stop once the redelivered messages have all been consumed
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the second sink did not finish within 60 s");
        }
        let ends = end_offsets(&stack, &topic).await?;
        if committed_offsets(&stack, &topic, &group).await? == ends {
            break again.stop().await?;
        }
    };
    assert_eq!(
        (report.messages, report.inserted, report.duplicates),
        (400, 0, 400)
    );
    assert_eq!(count_rows(&db, &table).await?, 400);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_beyond_the_retries_pauses_the_sink_until_it_is_back()
-> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("e2e_outage");
    let table = unique("sink_outage");
    create_topic(&stack, &topic, 2).await?;
    let db = pg(&stack).await?;
    let mut config = sink_config(&stack, &topic, &table);
    config.postgres.application_name = unique("sink_app");

    // the sink creates its table and waits on the empty topic
    let sink = start_sink(config.clone());
    wait_for_table(&db, &table).await?;

    // hold the table so no insert can finish, and keep killing the sink's sessions for 6 s:
    // every attempt fails with a lost connection (transient) and the retries run out
    let mut locker = pg(&stack).await?;
    let lock = locker.transaction().await?;
    lock.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await?;
    produce(&stack, &topic, 500).await?;
    let killer = pg(&stack).await?;
    let app = config.postgres.application_name.clone();
    let outage_end = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < outage_end {
        killer
            .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&app])
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !sink.handle.is_finished(),
        "the sink stays up through the outage"
    );
    lock.commit().await?; // (the table cannot even be counted while it is locked)

    // the database is back: the sink resumes by itself
    wait_for_rows(&db, &table, 500, Duration::from_secs(60)).await?;
    let report = sink.stop().await?;
    assert!(report.outages >= 1, "{report:?}");
    assert_eq!(report.dead_letters, 0, "an outage parks nothing");
    let produced = decode_all(&read_topic(&stack, &topic).await?);
    assert_same(&produced, &table_rows(&db, &table).await?);
    drop_tables(&db, &table).await
}
