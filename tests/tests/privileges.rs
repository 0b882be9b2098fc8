//! Least privilege: with its tables in place, the sink runs as a role a DBA granted only
//! DML (`sql/grants.sql`), runs no DDL, and takes no table lock at start-up; when it must
//! create or upgrade something, it waits at most its `lock_timeout` and says why.

use std::time::{Duration, Instant};

use pipeline_tests::*;
use txn_model::Transaction;

/// Waits until the stored offsets of `table` add up to `total` messages.
async fn wait_offsets(
    db: &tokio_postgres::Client,
    table: &str,
    total: i64,
    sink: &RunningSink,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let sum: Option<i64> = db
            .query_one(
                &format!("SELECT sum(next_offset)::int8 FROM {table}_offsets"),
                &[],
            )
            .await?
            .get(0);
        if sum == Some(total) {
            return Ok(());
        }
        anyhow::ensure!(!sink.handle.is_finished(), "the sink stopped");
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "stored offsets add up to {sum:?}, not {total}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_granted_only_dml_starts_drains_parks_and_replays() -> anyhow::Result<()> {
    init_logs();
    let stack = stack();
    let topic = unique("priv_dml");
    let table = unique("sink_priv");
    let db = pg(&stack).await?;
    create_topic(&stack, &topic, 3).await?;
    // the owner (a DBA, here the stack's user) creates the tables ...
    drop(sink::store::Store::connect(&stack.pg, &table).await?);
    // ... and grants a role exactly sql/grants.sql (which fails, not quietly succeeds,
    // when the role is not named)
    let role = TestRole::create("sink_dml").await?;
    let err = superuser_psql(&[], &std::fs::read(root().join("sql/grants.sql"))?)
        .await
        .expect_err("grants.sql without sink_role must fail")
        .to_string();
    assert!(err.contains("psql -v sink_role=NAME"), "{err}");
    role.grant_sink_privileges(&table).await?;

    produce(&stack, &topic, 300).await?;
    let poison: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("not json {i}").into_bytes())
        .collect();
    produce_raw(&stack, &topic, 1, &poison).await?;

    let mut config = sink_config(&stack, &topic, &table);
    config.postgres = role.pg(&stack);
    let sink = start_sink(config.clone());
    wait_offsets(&db, &table, 305, &sink).await?;
    let report = sink.stop().await?;
    assert_eq!(
        (report.inserted, report.dead_letters),
        (300, 5),
        "{report:?}"
    );

    let produced: Vec<Transaction> = read_topic(&stack, &topic)
        .await?
        .iter()
        .filter_map(|p| Transaction::from_json(p).ok())
        .collect();
    assert_eq!(produced.len(), 300);
    assert_same(&produced, &table_rows(&db, &table).await?);

    // the doctor, run as the role: every check it can make passes (the shape is compared
    // in a temporary table, which PUBLIC may create), the parked messages are a warning
    let checks = sink::doctor::doctor(&config).await;
    let status = |checks: &[sink::doctor::Check], name: &str| {
        checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| (c.status, format!("{}: {:?}", c.detail, c.fix)))
            .unwrap_or((sink::doctor::Status::Skip, "absent".into()))
    };
    for name in ["postgres", "table", "keys", "privileges", "group"] {
        assert_eq!(
            status(&checks, name).0,
            sink::doctor::Status::Ok,
            "{name}: {checks:?}"
        );
    }
    assert_eq!(
        status(&checks, "dead_letters").0,
        sink::doctor::Status::Warn
    );
    assert!(sink::doctor::healthy(&checks), "{checks:?}");

    // replay needs UPDATE on the dead letters, which the grants include
    let replayed = sink::replay_dead_letters(&config, &[], None).await?;
    assert_eq!((replayed.replayed, replayed.still_failing), (0, 5));
    let attempts: i64 = db
        .query_one(
            &format!("SELECT sum(attempts)::int8 FROM {table}_dead_letters"),
            &[],
        )
        .await?
        .get(0);
    assert_eq!(attempts, 10);

    // one grant short: the start-up line names it
    superuser_psql(
        &[
            "-c",
            &format!("REVOKE UPDATE ON {table}_offsets FROM {}", role.name),
        ],
        b"",
    )
    .await?;
    let err = sink::run(config.clone(), tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("a start without UPDATE on the offsets must fail")
        .to_string();
    assert!(
        err.contains(&format!("lacks UPDATE on {table}_offsets")) && err.contains("sql/grants.sql"),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
    let checks = sink::doctor::doctor(&config).await;
    let (privileges, line) = status(&checks, "privileges");
    assert_eq!(privileges, sink::doctor::Status::Fail, "{checks:?}");
    assert!(
        line.contains(&format!("lacks UPDATE on {table}_offsets")),
        "{line}"
    );
    assert!(!sink::doctor::healthy(&checks));

    // tables missing: the role may not create them, and is told how to get them
    let mut missing = config.clone();
    missing.table = unique("sink_priv_missing");
    let checks = sink::doctor::doctor(&missing).await;
    let (table_status, line) = status(&checks, "table");
    assert_eq!(table_status, sink::doctor::Status::Fail, "{checks:?}");
    assert!(
        line.contains("may not create tables in schema public") && line.contains("sql/grants.sql"),
        "{line}"
    );
    let err = sink::run(missing, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("a role without CREATE cannot make the tables")
        .to_string();
    assert!(
        err.contains("may not create it") && err.contains("sql/*.sql"),
        "{err}"
    );

    drop_tables(&db, &table).await?;
    role.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_takes_no_lock_and_an_upgrade_waits_at_most_its_lock_timeout() -> anyhow::Result<()>
{
    init_logs();
    let stack = stack();
    let table = unique("sink_lock");
    let db = pg(&stack).await?;
    drop(sink::store::Store::connect(&stack.pg, &table).await?);

    // a long read holds ACCESS SHARE on the table
    let mut reader = pg(&stack).await?;
    let read = reader.transaction().await?;
    read.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?;
    // with every column in place a start runs no DDL, so it does not queue behind the read
    // (and block every later reader) as an ALTER TABLE would
    tokio::time::timeout(
        Duration::from_secs(15),
        sink::store::Store::connect(&stack.pg, &table),
    )
    .await
    .map_err(|_| anyhow::anyhow!("start-up waited on the reader's lock"))??;
    read.rollback().await?;

    // a column missing: the upgrade needs ACCESS EXCLUSIVE, and waits only lock_timeout
    db.batch_execute(&format!(
        "ALTER TABLE {table} DROP COLUMN processing_time_ms"
    ))
    .await?;
    let read = reader.transaction().await?;
    read.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?;
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        sink::store::Store::connect(&stack.pg, &table),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the upgrade waited more than 30 s"))?
    .err()
    .expect("the upgrade cannot get its lock")
    .to_string();
    let waited = started.elapsed();
    report_figures(&format!(
        "privileges: upgrade behind a long read gave up after {:.1} s",
        waited.as_secs_f64()
    ));
    assert!(
        err.contains(&format!("column {table}.processing_time_ms"))
            && err.contains("held a lock for more than 10 s"),
        "{err}"
    );
    read.rollback().await?;
    // once the reader is gone the same start upgrades the table
    drop(sink::store::Store::connect(&stack.pg, &table).await?);
    let columns: i64 = db
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = $1 AND column_name = 'processing_time_ms'",
            &[&table],
        )
        .await?
        .get(0);
    assert_eq!(columns, 1);
    drop_tables(&db, &table).await
}
