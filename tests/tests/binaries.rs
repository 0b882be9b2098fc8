//! The real executables: signals, exit codes and what they print.

use std::collections::HashMap;
use std::time::Duration;

use pipeline_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_sigterm_drains_in_flight_messages_and_exits_zero() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_producer");
    create_topic(&stack, &topic, 3).await?;
    let child = command("producer", &stack)
        .args(["--topic", &topic, "--rate", "500"])
        .spawn()?;
    // let it publish for a while, then stop it as a service manager would
    wait_for_published(&stack, &topic, 200, Duration::from_secs(60)).await?;
    terminate(&child);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {text}", out.status);
    let log = json_log(&out.stderr)?;
    let reports = events(&log, "report");
    assert_eq!(reports.len(), 1, "one final report: {text}");
    let report = reports[0];
    assert_eq!(report["level"], "INFO", "{report}");
    let delivered = field_u64(report, "delivered")?;
    let in_topic = read_topic(&stack, &topic).await?.len() as u64;
    assert_eq!(
        delivered, in_topic,
        "the report counts exactly what reached the topic"
    );
    assert_eq!(field_u64(report, "sent")?, delivered, "{report}");
    assert_eq!(field_u64(report, "failed")?, 0, "{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_sigterm_commits_offsets_and_exits_zero() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_sink");
    let table = unique("sink_bin");
    let group = unique("group");
    create_topic(&stack, &topic, 3).await?;
    produce(&stack, &topic, 300).await?;
    let db = pg(&stack).await?;

    let child = command("sink", &stack)
        .args(["--topic", &topic, "--table", &table, "--group-id", &group])
        .spawn()?;
    wait_for_rows(&db, &table, 300, Duration::from_secs(60)).await?;
    // after a quiet spell (the burst's summary is written), a lone message gets its own line
    tokio::time::sleep(sink::progress::EVERY + Duration::from_secs(1)).await;
    let users = txn_model::load_users(&users_dir())?;
    let lone = txn_model::Generator::new(users.ids, None)?.next_now();
    produce_raw(&stack, &topic, 1, &[lone.to_json()]).await?;
    wait_for_rows(&db, &table, 301, Duration::from_secs(60)).await?;
    terminate(&child);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {text}", out.status);
    let log = json_log(&out.stderr)?;
    let reports = events(&log, "report");
    assert_eq!(reports.len(), 1, "one final report: {text}");
    assert_eq!(field_u64(reports[0], "inserted")?, 301, "{}", reports[0]);
    assert_eq!(field_u64(reports[0], "messages")?, 301, "{}", reports[0]);
    // the burst is summed up: the summaries account for all 300 messages
    let summed = events(&log, "progress")
        .into_iter()
        .map(|l| field_u64(l, "messages"))
        .sum::<anyhow::Result<u64>>()?;
    assert_eq!(summed, 300, "{text}");
    let lone_id = lone.tx_id.to_string();
    let stored = events(&log, "outcome")
        .into_iter()
        .find(|l| l["tx_id"] == lone_id.as_str())
        .unwrap_or_else(|| panic!("no line for the lone message {lone_id}: {text}"));
    assert_eq!(stored["outcome"], "stored", "{stored}");
    assert_eq!(stored["partition"], 1, "{stored}");

    // the group's committed offsets are exactly at the end of every partition
    assert_eq!(
        committed_offsets(&stack, &topic, &group).await?,
        end_offsets(&stack, &topic).await?
    );
    assert_eq!(count_rows(&db, &table).await?, 301);
    drop_tables(&db, &table).await
}

#[tokio::test]
async fn sink_with_a_wrong_password_exits_nonzero_with_one_clear_line() -> anyhow::Result<()> {
    let stack = stack();
    // the human format: the line a person reads
    let out = command("sink", &stack)
        .args(["--topic", &unique("t"), "--log-format", "text"])
        .env("POSTGRES_PASSWORD", "wrong")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await??;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes when not on a terminal"
    );
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("ERROR"), "{last}");
    assert!(
        last.contains("rejected user") && last.contains("POSTGRES_PASSWORD"),
        "{last}"
    );
    Ok(())
}

#[tokio::test]
async fn producer_dry_run_prints_json_lines_without_kafka() -> anyhow::Result<()> {
    let mut stack = stack();
    stack.bootstrap = "127.0.0.1:1".into(); // proves no broker is needed
    let out = command("producer", &stack)
        .args(["--dry-run", "--count", "5", "--rate", "0", "--seed", "9"])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<_> = String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        txn_model::Transaction::from_json(l.as_bytes())?;
    }

    // a seeded backfill repeats byte for byte, timestamps and v7 ids included, in order
    let backfill = |seed: &'static str| {
        let mut cmd = command("producer", &stack);
        cmd.args(["--dry-run", "--from", "2025-03-01", "--to", "2025-03-07"])
            .args(["--count", "500", "--seed", seed]);
        run_ok(cmd, Duration::from_secs(60))
    };
    let first = backfill("3").await?;
    assert_eq!(first, backfill("3").await?);
    assert_ne!(first, backfill("4").await?);
    let txs: Vec<_> = String::from_utf8(first)?
        .lines()
        .map(|l| txn_model::Transaction::from_json(l.as_bytes()))
        .collect::<Result<_, _>>()?;
    assert_eq!(txs.len(), 500);
    assert!(txs.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    let range =
        chrono::NaiveDate::from_ymd_opt(2025, 3, 1)..chrono::NaiveDate::from_ymd_opt(2025, 3, 8);
    assert!(
        txs.iter()
            .all(|t| range.contains(&Some(t.timestamp.date_naive())))
    );
    Ok(())
}

/// Live, held anomaly messages go out among the ordinary ones once their time comes: a
/// duplicate (up to 30 s after its original) follows the original, later in the output.
#[tokio::test]
async fn live_anomalies_are_sent_when_their_time_comes() -> anyhow::Result<()> {
    let mut stack = stack();
    stack.bootstrap = "127.0.0.1:1".into(); // a dry run: no broker needed
    let mut cmd = command("producer", &stack);
    cmd.args([
        "--dry-run",
        "--count",
        "1000",
        "--rate",
        "200",
        "--seed",
        "9",
    ])
    .args(["--anomaly", "duplicate=0.5"]);
    let stdout = run_ok(cmd, Duration::from_secs(60)).await?;
    let mut first_seen = HashMap::new();
    let mut repeats = 0;
    for (i, line) in String::from_utf8(stdout)?.lines().enumerate() {
        let t = txn_model::Transaction::from_json(line.as_bytes())?;
        if let Some(first) = first_seen.insert(t.tx_id, i) {
            assert!(first < i);
            repeats += 1;
        }
    }
    assert_eq!(first_seen.len() + repeats, 1000);
    // a duplicate made at s seconds into the 5 s run, sent up to 30 s later, is in it with
    // chance (5 - s) / 30: one in twelve of the ~490 made, about 40 (sd ~6)
    assert!((12..=80).contains(&repeats), "{repeats} duplicates sent");
    Ok(())
}

#[tokio::test]
async fn users_generate_writes_monthly_files_the_producer_reads_and_never_overwrites()
-> anyhow::Result<()> {
    let mut stack = stack();
    stack.bootstrap = "127.0.0.1:1".into(); // no Kafka needed
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("users");
    let generate = |extra: &[&str]| {
        let mut cmd = command("producer", &stack);
        cmd.args(["users", "generate", "--from", "2025-01", "--to", "2025-03"])
            .args(["--per-month", "40", "--seed", "5", "--out"])
            .arg(&out_dir)
            .args(extra);
        async move { anyhow::Ok(tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??) }
    };
    let out = generate(&[]).await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let log = json_log(&out.stderr)?;
    assert_eq!(events(&log, "written").len(), 3, "{text}");
    let users = txn_model::load_users(&out_dir)?;
    assert_eq!(users.ids.len(), 120);
    assert_eq!(users.files.len(), 3);
    let first = std::fs::read(out_dir.join("users_2025_02.csv"))?;

    // again without --force: refused, one line naming the file and the fix, nothing written
    std::fs::remove_file(out_dir.join("users_2025_03.csv"))?;
    let out = generate(&[]).await?;
    assert_eq!(out.status.code(), Some(1));
    let log = json_log(&out.stderr)?;
    let errors = events(&log, "error");
    assert_eq!(errors.len(), 1, "{log:?}");
    let message = errors[0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("users_2025_01.csv exists already") && message.contains("--force"),
        "{message}"
    );
    assert!(
        !out_dir.join("users_2025_03.csv").exists(),
        "all or nothing"
    );
    // with --force: the same seed writes the same files
    let out = generate(&["--force"]).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(out_dir.join("users_2025_02.csv"))?, first);

    // the producer's transactions come from exactly those users
    let out = command("producer", &stack)
        .args(["--dry-run", "--count", "200", "--rate", "0", "--users"])
        .arg(&out_dir)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let known: std::collections::HashSet<_> = users.ids.into_iter().collect();
    for line in String::from_utf8(out.stdout)?.lines() {
        let t = txn_model::Transaction::from_json(line.as_bytes())?;
        assert!(known.contains(&t.user_id), "{line}");
    }
    Ok(())
}

/// Waits until a session of the sink waits on a lock (its write is blocked).
async fn wait_for_blocked_write(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let blocked: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND (query LIKE 'INSERT INTO %' OR query LIKE 'COPY %')",
                &[],
            )
            .await?
            .get(0);
        if blocked > 0 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the sink's write never blocked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_stop_signals_the_drain_deadline_and_a_second_signal_lose_nothing()
-> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_signals");
    let table = unique("sink_signals");
    let group = unique("group");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let args = ["--topic", &topic, "--table", &table, "--group-id", &group];

    // 1. one signal while the batch in hand cannot be written: the sink waits for the drain
    //    deadline, then exits 1 saying the messages will be redelivered
    let child = command("sink", &stack)
        .args(args)
        .args(["--drain-timeout", "2"])
        .spawn()?;
    wait_for_table(&db, &table).await?;
    let locker = lock_table(&stack, &table).await?;
    produce(&stack, &topic, 50).await?;
    wait_for_blocked_write(&db).await?;
    let stopped_at = tokio::time::Instant::now();
    terminate(&child);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
    let waited = stopped_at.elapsed();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let log = json_log(&out.stderr)?;
    let error = *events(&log, "error")
        .last()
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert_eq!(error["level"], "ERROR", "{error}");
    assert_eq!(field_u64(error, "unwritten")?, 50, "{error}");
    assert!(
        waited >= Duration::from_secs(2),
        "it waited for the drain deadline ({waited:?})"
    );
    drop(locker);

    // 2. a second signal exits at once (130): a new run writes the 50 redelivered messages,
    //    then holds a new batch it cannot write
    let child = command("sink", &stack)
        .args(args)
        .args(["--drain-timeout", "60"])
        .spawn()?;
    wait_for_rows(&db, &table, 50, Duration::from_secs(60)).await?;
    let locker = lock_table(&stack, &table).await?;
    produce(&stack, &topic, 20).await?;
    wait_for_blocked_write(&db).await?;
    terminate(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second_at = tokio::time::Instant::now();
    terminate(&child);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        second_at.elapsed() < Duration::from_secs(10),
        "exited at once"
    );
    drop(locker);

    // 3. nothing was lost: a clean run writes the 70 messages exactly once
    let child = command("sink", &stack).args(args).spawn()?;
    wait_for_rows(&db, &table, 70, Duration::from_secs(60)).await?;
    terminate(&child);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let produced: Vec<txn_model::Transaction> = read_topic(&stack, &topic)
        .await?
        .iter()
        .map(|p| txn_model::Transaction::from_json(p).unwrap())
        .collect();
    assert_same(&produced, &table_rows(&db, &table).await?);
    drop_tables(&db, &table).await
}

/// A topic of 3 partitions holding `n` transactions and one message that is not one,
/// drained by a sink into a new table (the message parked): topic, table, group, session.
async fn drained_with_one_dead_letter(
    stack: &Stack,
    name: &str,
    n: u64,
) -> anyhow::Result<(String, String, String, tokio_postgres::Client)> {
    let topic = unique(&format!("bin_{name}"));
    let table = unique(&format!("sink_{name}"));
    create_topic(stack, &topic, 3).await?;
    produce(stack, &topic, n).await?;
    produce_raw(stack, &topic, 1, &[b"not a transaction".to_vec()]).await?;
    let db = pg(stack).await?;
    let config = sink_config(stack, &topic, &table);
    let group = config.group_id.clone();
    let sink = start_sink(config);
    wait_for_rows(&db, &table, n as i64, Duration::from_secs(60)).await?;
    let report = sink.stop().await?;
    assert_eq!(report.dead_letters, 1, "{report:?}");
    Ok((topic, table, group, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_accounts_for_every_consumed_message_and_names_what_is_not() -> anyhow::Result<()>
{
    let stack = stack();
    let (topic, table, group, db) = drained_with_one_dead_letter(&stack, "reconcile", 200).await?;
    // produced after the stop: not consumed, so pending, never missing
    produce(&stack, &topic, 10).await?;
    let reconcile = |details: bool| {
        let mut cmd = command("sink", &stack);
        cmd.args([
            "--topic",
            &topic,
            "--table",
            &table,
            "--group-id",
            &group,
            "reconcile",
        ]);
        if details {
            cmd.arg("--details");
        }
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
    };

    let out = reconcile(false).await??;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let log = json_log(&out.stderr)?;
    let audit = events(&log, "reconcile")[0];
    let n = |f: &str| field_u64(audit, f);
    assert_eq!(
        (n("checked")?, n("stored")?, n("parked")?),
        (201, 200, 1),
        "{audit}"
    );
    assert_eq!(
        (n("missing")?, n("conflicting")?, n("not_parked")?),
        (0, 0, 0)
    );
    assert_eq!(
        (audit["extra"].as_i64(), audit["pending"].as_i64()),
        (Some(0), Some(10))
    );

    // break the table: 3 rows gone, 1 changed, 1 that no message accounts for
    let ids: Vec<String> = db
        .query(
            &format!("SELECT tx_id FROM {table} ORDER BY tx_id LIMIT 4"),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.execute(
        &format!("DELETE FROM {table} WHERE tx_id = ANY($1)"),
        &[&&ids[..3]],
    )
    .await?;
    db.execute(
        &format!("UPDATE {table} SET amount = amount + 1 WHERE tx_id = $1"),
        &[&ids[3]],
    )
    .await?;
    db.execute(
        &format!(
            "INSERT INTO {table} ({cols}) SELECT '00000000-0000-4000-8000-000000000001', {rest} FROM {table} LIMIT 1",
            cols = sink::store::columns::list(),
            rest = sink::store::columns::COLUMNS[1..]
                .iter()
                .map(|c| format!("\"{}\"", c.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &[],
    )
    .await?;

    let out = reconcile(true).await??;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let log = json_log(&out.stderr)?;
    let audit = events(&log, "reconcile")[0];
    let n = |f: &str| field_u64(audit, f);
    assert_eq!(
        (n("missing")?, n("conflicting")?, n("extra")?),
        (3, 1, 1),
        "{audit}"
    );
    let findings = events(&log, "finding");
    let named: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap_or(""),
                f["tx_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for id in &ids[..3] {
        assert!(named.contains(&("missing", id.as_str())), "{id}: {named:?}");
    }
    assert!(
        named.contains(&("conflicting", ids[3].as_str())),
        "{named:?}"
    );
    let conflict = findings
        .iter()
        .find(|f| f["kind"] == "conflicting")
        .unwrap();
    assert!(
        conflict["message"]
            .as_str()
            .unwrap_or("")
            .contains("amount"),
        "{conflict}"
    );

    // a group that consumed nothing cannot be audited: exit 2 naming the setting
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        command("sink", &stack)
            .args(["--topic", &topic, "--table", &table])
            .args(["--group-id", "no_such_group", "reconcile"])
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let log = json_log(&out.stderr)?;
    let error = events(&log, "error")[0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        error.contains("no stored offsets") && error.contains("--group-id"),
        "{error}"
    );
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_serves_metrics_that_agree_with_the_table_and_health() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_metrics");
    let table = unique("sink_metrics");
    let group = unique("group");
    create_topic(&stack, &topic, 3).await?;
    let db = pg(&stack).await?;
    let (mut cmd, log) = command_logged("sink", &stack, "metrics")?;
    let child = cmd
        .args(["--topic", &topic, "--table", &table, "--group-id", &group])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .spawn()?;
    let addr = metrics_addr(&log).await?;
    // alive at once; ready once PostgreSQL is checked and partitions are assigned
    let (code, body) = http_get(&addr, "/healthz").await?;
    assert_eq!(code, 200, "{body}");
    let ready = async {
        loop {
            let (code, body) = http_get(&addr, "/readyz").await?;
            if code == 200 {
                return anyhow::Ok(body);
            }
            assert_eq!(code, 503, "{body}");
            assert!(body.contains("not_ready"), "{body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(60), ready).await??;
    assert!(body.contains("\"ready\":true"), "{body}");

    produce(&stack, &topic, 120).await?;
    produce_raw(
        &stack,
        &topic,
        0,
        &[b"{\"not\": \"a transaction\"}".to_vec()],
    )
    .await?;
    wait_for_rows(&db, &table, 120, Duration::from_secs(60)).await?;
    // the counters agree with the table and the dead letters once the batch is counted
    let agree = async {
        loop {
            let (code, body) = http_get(&addr, "/metrics").await?;
            assert_eq!(code, 200, "{body}");
            let m = |name| metric(&body, name).unwrap_or(-1.0);
            if m("sink_dead_letters_total{class=\"schema\"}") == 1.0 {
                return anyhow::Ok(body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(60), agree).await??;
    let m = |name| metric(&body, name).unwrap_or(-1.0);
    let rows = count_rows(&db, &table).await? as f64;
    assert_eq!(m("sink_rows_inserted_total"), rows, "{body}");
    assert_eq!(m("sink_messages_consumed_total"), rows + 1.0, "{body}");
    assert_eq!(m("sink_paused"), 0.0, "{body}");
    // every class is there from the start; only the schema one counted
    assert_eq!(
        m("sink_dead_letters_total{class=\"not_utf8\"}"),
        0.0,
        "{body}"
    );
    assert_eq!(
        m("sink_dead_letters_total{class=\"unstorable\"}"),
        0.0,
        "{body}"
    );
    assert!(m("sink_batches_total") >= 1.0, "{body}");
    assert_eq!(m("sink_batch_size_messages_sum"), rows + 1.0, "{body}");
    assert!(
        body.contains("# TYPE sink_batch_write_seconds histogram"),
        "{body}"
    );
    terminate(&child);
    let out = wait_for_exit(child).await?;
    assert!(out.status.success(), "{}", std::fs::read_to_string(&log)?);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_serves_metrics_that_never_run_ahead_of_the_topic() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_producer_metrics");
    create_topic(&stack, &topic, 3).await?;
    let (mut cmd, log) = command_logged("producer", &stack, "producer_metrics")?;
    let child = cmd
        .args([
            "--topic",
            &topic,
            "--rate",
            "200",
            "--metrics-addr",
            "127.0.0.1:0",
            "--anomaly",
            "duplicate=0.3",
        ])
        .spawn()?;
    let addr = metrics_addr(&log).await?;
    let duplicates = |body: &str| {
        body.lines()
            .find(|l| l.starts_with(r#"producer_anomaly_messages_sent_total{kind="duplicate"}"#))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let delivered = async {
        loop {
            let (code, body) = http_get(&addr, "/metrics").await?;
            assert_eq!(code, 200, "{body}");
            if metric(&body, "producer_messages_delivered_total").unwrap_or(0.0) >= 200.0
                && duplicates(&body) >= 5.0
            {
                return anyhow::Ok(body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(60), delivered).await??;
    let m = |name| metric(&body, name).unwrap_or(-1.0);
    let (sent, delivered, failed) = (
        m("producer_messages_sent_total"),
        m("producer_messages_delivered_total"),
        metric_sum(&body, "producer_messages_failed_total").unwrap_or(-1.0),
    );
    assert_eq!(failed, 0.0, "{body}");
    let users = txn_model::load_users(&users_dir())?.ids.len() as f64;
    assert_eq!(m("producer_users"), users, "{body}");
    let duplicates_sent = duplicates(&body);
    assert_eq!(
        metric_sum(&body, "producer_anomaly_messages_sent_total"),
        Some(duplicates_sent),
        "only duplicates: {body}"
    );
    assert_eq!(
        m("producer_messages_in_flight"),
        sent - delivered - failed,
        "{body}"
    );
    // every message counted as delivered is in the topic already
    let in_topic = read_topic(&stack, &topic).await?.len() as f64;
    assert!(
        in_topic >= delivered,
        "{in_topic} in the topic, {delivered} delivered"
    );
    let (code, body) = http_get(&addr, "/readyz").await?;
    assert_eq!(code, 200, "{body}");
    terminate(&child);
    let out = wait_for_exit(child).await?;
    assert!(out.status.success(), "{}", std::fs::read_to_string(&log)?);
    let log = json_log(&std::fs::read(&log)?)?;
    let report = events(&log, "report")[0];
    assert!(
        field_u64(report, "delivered")? as f64 >= delivered,
        "{report}"
    );
    // every duplicate counted was sent, so (the run lost nothing) it is in the topic
    let labelled = read_topic_with_headers(&stack, &topic)
        .await?
        .iter()
        .filter(|(_, h)| h.iter().any(|(k, v)| k == "anomaly" && v == "duplicate"))
        .count() as f64;
    assert!(
        labelled >= duplicates_sent,
        "{labelled} in the topic, {duplicates_sent} counted"
    );
    Ok(())
}

/// The `check` lines of a `sink doctor` run: name → (status, line).
fn doctor_checks(stderr: &[u8]) -> anyhow::Result<HashMap<String, (String, String)>> {
    let log = json_log(stderr)?;
    Ok(events(&log, "check")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("check"), (s("status"), s("message")))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_working_sink_and_names_each_broken_part_with_its_fix() -> anyhow::Result<()>
{
    let stack = stack();
    let (topic, table, group, db) = drained_with_one_dead_letter(&stack, "doctor", 20).await?;
    let doctor = |password: &str| {
        let mut cmd = command("sink", &stack);
        cmd.env("POSTGRES_PASSWORD", password).args([
            "--topic",
            &topic,
            "--table",
            &table,
            "--group-id",
            &group,
            "doctor",
        ]);
        async move { anyhow::Ok(tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??) }
    };

    // 1. everything in place: exit 0; plain text connections and the parked message are
    //    warnings, each with its fix
    let out = doctor(&stack.pg.password).await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let checks = doctor_checks(&out.stderr)?;
    let status = |name: &str| checks.get(name).map(|c| c.0.as_str()).unwrap_or("absent");
    let line = |name: &str| checks.get(name).map(|c| c.1.clone()).unwrap_or_default();
    for name in ["topic", "postgres", "table", "keys", "privileges", "group"] {
        assert_eq!(status(name), "ok", "{name}: {text}");
    }
    assert_eq!(status("kafka"), "warn", "plaintext: {text}");
    assert_eq!(status("tls"), "warn", "not encrypted: {text}");
    assert!(
        line("topic").contains("3 partitions, 21 messages"),
        "{text}"
    );
    assert!(line("group").contains("lag 0 messages"), "{text}");
    assert_eq!(status("dead_letters"), "warn", "{text}");
    assert!(
        line("dead_letters").contains("1 pending")
            && line("dead_letters").contains("replay-dead-letters"),
        "{text}"
    );

    // 1b. tx_id in a linguistic collation (a table made by the seed's DDL in an en_US
    //     database): it works, so a warning that names the collation and the ALTER
    db.batch_execute(&format!(
        "ALTER TABLE {table} ALTER COLUMN tx_id TYPE VARCHAR COLLATE \"en-US-x-icu\""
    ))
    .await?;
    let out = doctor(&stack.pg.password).await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let checks = doctor_checks(&out.stderr)?;
    let (status, line) = checks.get("table").cloned().unwrap_or_default();
    assert_eq!(status, "warn", "{text}");
    assert!(
        line.contains(&format!("{table}.tx_id uses collation ICU en-US"))
            && line.contains("COLLATE \"C\""),
        "{line}"
    );
    db.batch_execute(&format!(
        "ALTER TABLE {table} ALTER COLUMN tx_id TYPE VARCHAR COLLATE \"C\""
    ))
    .await?;

    // 2. a column of another type: the table check fails, naming it and the fix; exit 1
    db.batch_execute(&format!(
        "ALTER TABLE {table} ALTER COLUMN amount TYPE text"
    ))
    .await?;
    produce(&stack, &topic, 5).await?;
    let out = doctor(&stack.pg.password).await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let checks = doctor_checks(&out.stderr)?;
    let (status, line) = checks.get("table").cloned().unwrap_or_default();
    assert_eq!(status, "fail", "{text}");
    assert!(
        line.contains(&format!("{table}.amount is text, expected numeric(10,2)"))
            && line.contains("sql/*.sql"),
        "{line}"
    );
    // the 5 new messages are lag, and no sink runs: a warning (the stopped sink's
    // consumer left the group as it closed)
    let (status, line) = checks.get("group").cloned().unwrap_or_default();
    assert!(line.contains("lag 5 messages"), "{line}");
    assert_eq!(status, "warn", "{line}");

    // 3. a wrong password: PostgreSQL fails with the fix, what depends on it is skipped
    let out = doctor("not the password").await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let checks = doctor_checks(&out.stderr)?;
    let (status, line) = checks.get("postgres").cloned().unwrap_or_default();
    assert_eq!(status, "fail", "{text}");
    assert!(line.contains("POSTGRES_PASSWORD"), "{line}");
    for name in ["tls", "table", "privileges", "dead_letters", "group"] {
        assert_eq!(
            checks.get(name).map(|c| c.0.as_str()),
            Some("skip"),
            "{name}: {text}"
        );
    }
    assert_eq!(
        checks.get("topic").map(|c| c.0.as_str()),
        Some("ok"),
        "{text}"
    );
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_run_on_a_terminal_shows_a_progress_bar_and_a_pipe_gets_plain_lines()
-> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_bar");
    create_topic(&stack, &topic, 1).await?;
    let producer = binary("producer");
    let args = format!(
        "{} --topic {topic} --count 300 --rate 300",
        producer.display()
    );
    // on a terminal (a pseudo-terminal from util-linux's script), text logs: the bar
    let out = program("script", &stack)
        .env("LOG_FORMAT", "text")
        .args(["-qfec", &args, "/dev/null"])
        .output()
        .await?;
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("300/300 delivered (") && screen.contains("ETA"),
        "{screen}"
    );
    // the report still follows, on a line of its own
    assert!(
        screen
            .lines()
            .any(|l| l.contains("done: every message delivered") && !l.contains("ETA")),
        "{screen}"
    );
    // through a pipe: no bar, the same report
    let out = command("producer", &stack)
        .env("LOG_FORMAT", "text")
        .args(["--topic", &topic, "--count", "100", "--rate", "300"])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("ETA") && !text.contains('\r'), "{text}");
    assert!(text.contains("done: every message delivered"), "{text}");
    assert_eq!(read_topic(&stack, &topic).await?.len(), 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_reads_0_after_a_transactional_producers_markers_and_aborted_records()
-> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_txn_lag");
    let table = unique("sink_txn_lag");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let (mut cmd, log) = command_logged("sink", &stack, "txn_lag")?;
    let group = unique("group");
    let args = ["--topic", &topic, "--table", &table, "--group-id", &group];
    let child = cmd
        .args(args)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .spawn()?;
    let addr = metrics_addr(&log).await?;

    // as a Java or Python client with exactly-once writes: 20 messages committed, then 5
    // in a transaction that is aborted; the log also holds both markers
    let users = txn_model::load_users(&users_dir())?.ids;
    let mut generator = txn_model::Generator::new(users, Some(7))?;
    let bootstrap = stack.bootstrap.clone();
    let topic_for_producer = topic.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use rdkafka::producer::{BaseRecord, Producer};
        let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", unique("txn"))
            .create()?;
        let timeout = Duration::from_secs(30);
        p.init_transactions(timeout)?;
        for (count, commit) in [(20, true), (5, false)] {
            p.begin_transaction()?;
            for _ in 0..count {
                let payload = generator.next_now().to_json();
                p.send(BaseRecord::<(), _>::to(&topic_for_producer).payload(&payload))
                    .map_err(|(e, _)| e)?;
            }
            p.flush(timeout)?;
            if commit {
                p.commit_transaction(timeout)?;
            } else {
                p.abort_transaction(timeout)?;
            }
        }
        Ok(())
    })
    .await??;
    wait_for_rows(&db, &table, 20, Duration::from_secs(60)).await?;
    // 20 data records and 27 offsets: once drained, the lag of both gauges is 0
    let drained = async {
        loop {
            let (_, body) = http_get(&addr, "/metrics").await?;
            let lag = metric_sum(&body, "sink_consumer_lag_messages");
            let seconds = metric_sum(&body, "sink_consumer_lag_seconds");
            if lag == Some(0.0) && seconds == Some(0.0) {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .map_err(|_| anyhow::anyhow!("the lag did not read 0 within 30 s after the drain"))??;
    assert_eq!(
        count_rows(&db, &table).await?,
        20,
        "the aborted records are not written"
    );
    terminate(&child);
    let out = wait_for_exit(child).await?;
    assert!(out.status.success(), "{}", std::fs::read_to_string(&log)?);
    // the doctor agrees once no sink runs: the offsets past the stored position are
    // markers and aborted records, not messages waiting for a sink
    let out = command("sink", &stack)
        .args(args)
        .arg("doctor")
        .output()
        .await?;
    let checks = doctor_checks(&out.stderr)?;
    let (status, line) = checks.get("group").cloned().unwrap_or_default();
    assert_eq!(status, "ok", "{line}");
    assert!(line.contains("lag 0 messages"), "{line}");
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_keeps_counting_while_the_sink_is_paused() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_paused_lag");
    let table = unique("sink_paused_lag");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let (mut cmd, log) = command_logged("sink", &stack, "paused_lag")?;
    let child = cmd
        .args(["--topic", &topic, "--table", &table])
        .args(["--group-id", &unique("group"), "--batch-size", "100"])
        // the blocked write must not time out (and resume fetching) during the test
        .args(["--statement-timeout", "120"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .spawn()?;
    let addr = metrics_addr(&log).await?;
    let lag_reads = |want: f64, secs: u64| {
        let addr = addr.clone();
        async move {
            let reached = async {
                loop {
                    let (_, body) = http_get(&addr, "/metrics").await?;
                    if metric_sum(&body, "sink_consumer_lag_messages") == Some(want) {
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(secs), reached)
                .await
                .map_err(|_| anyhow::anyhow!("the lag did not read {want} within {secs} s"))?
        }
    };
    // a stored position first (the lag of a partition is known from then on)
    produce(&stack, &topic, 50).await?;
    wait_for_rows(&db, &table, 50, Duration::from_secs(60)).await?;
    lag_reads(0.0, 30).await?;
    // the table held: the write blocks, the read-ahead (100) fills, the sink pauses its
    // partitions and librdkafka stops fetching; the lag must still see what comes next
    let locker = lock_table(&stack, &table).await?;
    produce(&stack, &topic, 3_000).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    produce(&stack, &topic, 2_000).await?;
    lag_reads(5_000.0, 20).await?;
    drop(locker);
    wait_for_rows(&db, &table, 5_050, Duration::from_secs(60)).await?;
    lag_reads(0.0, 30).await?;
    terminate(&child);
    let out = wait_for_exit(child).await?;
    assert!(out.status.success(), "{}", std::fs::read_to_string(&log)?);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_counts_only_what_no_share_committed_and_a_restart_writes_the_rest_once()
-> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("bin_shares");
    let table = unique("sink_shares");
    let group = unique("group");
    create_topic(&stack, &topic, 2).await?;
    let db = pg(&stack).await?;
    let args = ["--topic", &topic, "--table", &table, "--group-id", &group];
    // both partitions get a stored position
    let config = {
        let mut c = sink_config(&stack, &topic, &table);
        c.group_id = group.clone();
        c
    };
    let sink = start_sink(config);
    produce(&stack, &topic, 40).await?;
    wait_for_rows(&db, &table, 40, Duration::from_secs(60)).await?;
    sink.stop().await?;
    let positions: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM {table}_offsets WHERE group_id = $1"),
            &[&group],
        )
        .await?
        .get(0);
    assert_eq!(positions, 2, "both partitions have a position");
    // partition 1's position is held by another session: the share writing partition 1
    // blocks on it (no statement timeout to end it), the share of partition 0 commits
    let locker = pg(&stack).await?;
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM {table}_offsets WHERE group_id = '{group}' AND partition = 1 FOR UPDATE"
        ))
        .await?;
    produce(&stack, &topic, 2_000).await?;
    let total: i64 = end_offsets(&stack, &topic).await?.values().sum();
    let child = command("sink", &stack)
        .args(args)
        .args(["--writers", "2", "--drain-timeout", "2"])
        .args(["--statement-timeout", "300"])
        .spawn()?;
    let committed = async {
        loop {
            let rows = count_rows(&db, &table).await?;
            if rows > 40 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), committed).await??;
    // everything is received meanwhile (the read-ahead goes on during the blocked write)
    tokio::time::sleep(Duration::from_secs(2)).await;
    // stopped while partition 1's share waits: exit 1 after the drain deadline, and the
    // unwritten count is what is not in the table, not the whole batch
    terminate(&child);
    let out = wait_for_exit(child).await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let log = json_log(&out.stderr)?;
    let error = *events(&log, "error")
        .last()
        .unwrap_or_else(|| panic!("no error line: {text}"));
    let rows = count_rows(&db, &table).await?;
    assert!(
        rows > 40 && rows < total,
        "a share committed, not all: {rows}"
    );
    assert_eq!(
        field_u64(error, "unwritten")? as i64,
        total - rows,
        "{error}"
    );
    drop(locker);
    // a new run writes the rest, each message once
    let child = command("sink", &stack).args(args).spawn()?;
    wait_for_rows(&db, &table, total, Duration::from_secs(60)).await?;
    terminate(&child);
    let out = wait_for_exit(child).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let produced = decode_all(&read_topic(&stack, &topic).await?);
    assert_same(&produced, &table_rows(&db, &table).await?);
    drop_tables(&db, &table).await
}

/// A backfill with every kind of anomaly, through the real binaries: the messages are the
/// count asked for, in send order (timestamp plus the label's delay), none before its
/// user's registration, each anomaly labelled in the headers; the sink lands every
/// distinct transaction exactly once (duplicates are the same tx_id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_with_labelled_anomalies_lands_each_transaction_once() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("backfill");
    let table = topic.clone();
    create_topic(&stack, &topic, 3).await?;
    let dir = tempfile::tempdir()?;
    let users_dir = dir.path().join("users");
    generate_users(&stack, &users_dir, ("2025-01", "2025-02"), 30, 2).await?;
    let users = txn_model::load_users(&users_dir)?;
    let registered: HashMap<_, _> = users
        .ids
        .iter()
        .zip(&users.attributes)
        .map(|(id, a)| (*id, a.registered.expect("a registration date")))
        .collect();

    const COUNT: usize = 3_000;
    let mut cmd = command("producer", &stack);
    cmd.args([
        "--topic",
        &topic,
        "--from",
        "2025-01-01",
        "--to",
        "2025-02-28",
    ])
    .args(["--count", &COUNT.to_string(), "--seed", "4", "--users"])
    .arg(&users_dir)
    .args([
        "--anomaly",
        "card_testing=0.01,account_takeover=0.01,velocity=0.005",
    ])
    .args(["--anomaly", "late=0.02", "--anomaly", "duplicate=0.02"]);
    run_ok(cmd, Duration::from_secs(120)).await?;

    let messages = read_topic_with_headers(&stack, &topic).await?;
    // COUNT ordinary transactions over the whole range (late ones among them), the
    // anomalies' messages on top
    assert!(messages.len() > COUNT, "{}", messages.len());
    let end = chrono::NaiveDate::from_ymd_opt(2025, 3, 1).expect("a day");
    let mut by_partition: HashMap<uuid::Uuid, Vec<(i64, &str)>> = HashMap::new();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut distinct = std::collections::HashSet::new();
    let mut produced = Vec::new();
    let mut ordinary = 0;
    for (payload, headers) in &messages {
        let tx = txn_model::Transaction::from_json(payload)?;
        assert!(
            registered[&tx.user_id] <= tx.timestamp.date_naive(),
            "before registering: {tx:?}"
        );
        let header = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let kind = header("anomaly");
        assert!(tx.timestamp.date_naive() < end, "after --to: {tx:?}");
        if kind.is_none_or(|k| k == "late") {
            ordinary += 1;
        }
        if let Some(kind) = kind {
            *kinds.entry(kind.to_owned()).or_default() += 1;
            header("anomaly_episode")
                .expect("an episode id")
                .parse::<uuid::Uuid>()?;
        } else {
            assert!(headers.is_empty(), "{headers:?}");
        }
        let delay: i64 = header("anomaly_delay_ms")
            .map(str::parse)
            .transpose()?
            .unwrap_or(0);
        assert_eq!(
            header("anomaly_delay_ms").is_some(),
            matches!(kind, Some("late" | "duplicate")),
            "{headers:?}"
        );
        // the user's messages, in partition order (a user is one key, one partition)
        by_partition
            .entry(tx.user_id)
            .or_default()
            .push((tx.timestamp.timestamp_millis() + delay, kind.unwrap_or("")));
        let first = distinct.insert(tx.tx_id);
        assert_eq!(!first, kind == Some("duplicate"), "{tx:?} {headers:?}");
        if first {
            produced.push(tx);
        }
    }
    assert_eq!(ordinary, COUNT);
    // the last days of the range are there too
    assert!(
        produced
            .iter()
            .any(|t| t.timestamp.date_naive() == end.pred_opt().expect("a day"))
    );
    for kind in [
        "card_testing",
        "account_takeover",
        "velocity",
        "late",
        "duplicate",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {kinds:?}"
        );
    }
    // each user's messages were sent in time order
    for sends in by_partition.values() {
        assert!(sends.windows(2).all(|w| w[0].0 <= w[1].0), "{sends:?}");
    }

    let db = pg(&stack).await?;
    drop_tables(&db, &table).await?;
    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_rows(&db, &table, produced.len() as i64, Duration::from_secs(120)).await?;
    let report = sink.stop().await?;
    let stored = table_rows(&db, &table).await?;
    assert_same(&produced, &stored);
    assert_eq!(
        (
            report.messages,
            report.inserted,
            report.duplicates,
            report.dead_letters
        ),
        (
            messages.len() as u64,
            produced.len() as u64,
            kinds["duplicate"] as u64,
            0
        ),
        "{report:?}"
    );
    drop_tables(&db, &table).await?;
    Ok(())
}

/// Users who come while the producer runs transact without a restart: a new monthly file
/// dropped into the users directory, and events of a registrations topic (a malformed
/// event is skipped with one warning naming its offset); a user whose registration is in
/// the future does not transact yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_added_while_running_transact_without_a_restart() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("new_users");
    let registrations = unique("registrations");
    create_topic(&stack, &topic, 3).await?;
    let dir = tempfile::tempdir()?;
    let users_dir = dir.path().join("users");
    let generate = |month, seed| generate_users(&stack, &users_dir, (month, month), 20, seed);
    generate("2025-01", 1).await?;
    let child = command("producer", &stack)
        .args(["--topic", &topic, "--rate", "200", "--users-rescan", "0.5"])
        .args(["--registrations-topic", &registrations, "--users"])
        .arg(&users_dir)
        .spawn()?;
    wait_for_published(&stack, &topic, 100, Duration::from_secs(60)).await?;
    // the registrations topic comes after the producer (it looks for it every 10 s)
    create_topic(&stack, &registrations, 2).await?;

    // a new month's file, and registration events (one malformed, one in the future)
    generate("2025-02", 2).await?;
    let from_file: std::collections::HashSet<_> =
        txn_model::load_users(&users_dir.join("users_2025_02.csv"))?
            .ids
            .into_iter()
            .collect();
    let registered: Vec<uuid::Uuid> = (0..10).map(|_| uuid::Uuid::new_v4()).collect();
    let future = uuid::Uuid::new_v4();
    let mut events: Vec<Record> = registered
        .iter()
        .map(|id| {
            Record::payload(format!(
                r#"{{"user_id":"{id}","first_name":"Ana","registration_date":"2025-06-01","country":"JP"}}"#
            ))
        })
        .collect();
    events.insert(3, Record::payload("not an event"));
    events.push(Record::payload(format!(
        r#"{{"user_id":"{future}","registration_date":"2999-01-01"}}"#
    )));
    produce_records(&stack, &registrations, 0, &events).await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (mut seen_file, mut seen_events) = (0, 0);
    while (seen_file == 0 || seen_events == 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let txs = decode_all(&read_topic(&stack, &topic).await?);
        assert!(
            txs.iter().all(|t| t.user_id != future),
            "a user before registering"
        );
        seen_file = txs
            .iter()
            .filter(|t| from_file.contains(&t.user_id))
            .count();
        let from_events: Vec<_> = txs
            .iter()
            .filter(|t| registered.contains(&t.user_id))
            .collect();
        seen_events = from_events.len();
        // their country came with them: Japanese users pay in yen but for the foreign share
        if seen_events >= 20 {
            let yen = from_events
                .iter()
                .filter(|t| t.currency.as_str() == "JPY")
                .count();
            assert!(yen * 2 > seen_events, "{yen} of {seen_events} in JPY");
        }
    }
    terminate(&child);
    let out = wait_for_exit(child).await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        seen_file > 0 && seen_events > 0,
        "{seen_file} from the file, {seen_events} from events: {text}"
    );
    let log = json_log(&out.stderr)?;
    let skipped: Vec<_> = log
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("skipped a registration event"))
        })
        .collect();
    assert_eq!(skipped.len(), 1, "{text}");
    assert_eq!(skipped[0]["offset"], 3, "{}", skipped[0]);
    let missing = log
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("does not exist (yet)"))
        })
        .count();
    assert_eq!(missing, 1, "the missing topic is said once: {text}");
    Ok(())
}
