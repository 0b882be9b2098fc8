//! A real Prometheus (Debian's package, `scripts/prometheus.sh`) scrapes the producer and
//! the sink during an end-to-end run; its HTTP API must then agree with PostgreSQL.

use std::time::Duration;

use pipeline_tests::*;

/// The value of an instant query's single sample, once Prometheus has one.
async fn query(prometheus: &str, promql: &str) -> anyhow::Result<Option<f64>> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (code, body) = http_get(prometheus, &format!("/api/v1/query?query={encoded}")).await?;
    anyhow::ensure!(code == 200, "Prometheus answered {code}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    anyhow::ensure!(v["status"] == "success", "{body}");
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    Ok(match result.as_slice() {
        [one] => one["value"][1].as_str().and_then(|s| s.parse().ok()),
        _ => None,
    })
}

/// Waits until `promql` reads `want` (by `accept`), for up to `secs` seconds.
async fn wait_for(
    prometheus: &str,
    promql: &str,
    secs: u64,
    accept: impl Fn(f64) -> bool,
) -> anyhow::Result<f64> {
    let until = async {
        loop {
            if let Some(v) = query(prometheus, promql).await.ok().flatten()
                && accept(v)
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), until)
        .await
        .map_err(|_| anyhow::anyhow!("{promql} did not read what was expected within {secs} s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_both_binaries_and_their_counters_agree_with_postgres()
-> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("prom");
    let table = unique("sink_prom");
    let group = unique("group");
    create_topic(&stack, &topic, 3).await?;
    let db = pg(&stack).await?;

    let (mut cmd, log) = command_logged("sink", &stack, "prometheus")?;
    let sink = cmd
        .args(["--topic", &topic, "--table", &table, "--group-id", &group])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .spawn()?;
    let target = metrics_addr(&log).await?;
    let (mut cmd, producer_log) = command_logged("producer", &stack, "prometheus_producer")?;
    let producer = cmd
        .args(["--topic", &topic, "--rate", "100"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .spawn()?;
    let producer_target = metrics_addr(&producer_log).await?;

    // Prometheus scraping both every second, on a free port, with its own storage
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sink\n    static_configs:\n      - targets: ['{target}']\n  - job_name: producer\n    static_configs:\n      - targets: ['{producer_target}']\n"
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let prometheus = format!("127.0.0.1:{port}");
    let binary = std::process::Command::new(root().join("scripts/prometheus.sh")).output()?;
    anyhow::ensure!(
        binary.status.success(),
        "{}",
        String::from_utf8_lossy(&binary.stderr)
    );
    let _server = tokio::process::Command::new(String::from_utf8(binary.stdout)?.trim())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prometheus}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;

    // the producer runs until Prometheus saw it deliver 200 messages, then stops
    wait_for(&prometheus, "producer_messages_delivered_total", 90, |v| {
        v >= 200.0
    })
    .await?;
    assert_eq!(query(&prometheus, "up{job=\"producer\"}").await?, Some(1.0));
    let rtt = query(&prometheus, "max(producer_broker_rtt_avg_seconds)").await?;
    assert!(
        rtt.is_some_and(|r| r > 0.0 && r < 5.0),
        "broker round trip {rtt:?}"
    );
    assert_eq!(
        query(&prometheus, "min(producer_broker_up)").await?,
        Some(1.0)
    );
    let queued = query(&prometheus, "producer_queue_messages").await?;
    assert!(queued.is_some_and(|q| q >= 0.0), "{queued:?}");
    terminate(&producer);
    let out = wait_for_exit(producer).await?;
    assert!(
        out.status.success(),
        "{}",
        std::fs::read_to_string(&producer_log)?
    );
    let producer_lines = json_log(&std::fs::read(&producer_log)?)?;
    let report = *events(&producer_lines, "report")
        .first()
        .ok_or_else(|| anyhow::anyhow!("no producer report"))?;
    let produced = field_u64(report, "delivered")?;
    // what Prometheus last scraped from the producer: never more than it delivered, and
    // its latency histogram counted each delivery it had counted
    let scraped = query(
        &prometheus,
        "max_over_time(producer_messages_delivered_total[10m])",
    )
    .await?
    .unwrap_or(-1.0);
    assert!(
        scraped >= 200.0 && scraped <= produced as f64,
        "{scraped} of {produced}"
    );
    let latencies = query(
        &prometheus,
        "max_over_time(producer_delivery_latency_seconds_count[10m])",
    )
    .await?
    .unwrap_or(-1.0);
    assert!(
        (latencies - scraped).abs() <= 1.0,
        "{latencies} latencies for {scraped} deliveries"
    );
    assert_eq!(
        query(
            &prometheus,
            "sum(max_over_time(producer_messages_failed_total[10m]))"
        )
        .await?,
        Some(0.0)
    );
    produce_raw(&stack, &topic, 2, &[b"\xff not UTF-8".to_vec()]).await?;
    wait_for_rows(&db, &table, produced as i64, Duration::from_secs(60)).await?;
    tokio::time::timeout(Duration::from_secs(60), async {
        while db
            .query_one(&format!("SELECT count(*) FROM {table}_dead_letters"), &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
            < 1
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the message that is not UTF-8 was not parked within 60 s"))?;
    let rows = count_rows(&db, &table).await? as f64;
    let parked: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}_dead_letters"), &[])
        .await?
        .get(0);

    // what Prometheus stored agrees with the table and the dead letters
    let agreed = async {
        loop {
            let inserted = query(&prometheus, "sink_rows_inserted_total")
                .await
                .ok()
                .flatten();
            let dead = query(&prometheus, "sum(sink_dead_letters_total)")
                .await
                .ok()
                .flatten();
            if inserted == Some(rows) && dead == Some(parked as f64) {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(90), agreed)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "Prometheus did not report rows={rows} dead_letters={parked} within 90 s"
            )
        })??;
    assert_eq!(query(&prometheus, "up{job=\"sink\"}").await?, Some(1.0));
    assert_eq!(
        query(&prometheus, "sink_messages_consumed_total").await?,
        Some(rows + parked as f64)
    );
    assert_eq!(query(&prometheus, "sink_paused").await?, Some(0.0));
    assert_eq!(rows, produced as f64, "every delivered message landed");
    // each consumed message observed once, from its Kafka timestamp to its commit
    assert_eq!(
        query(&prometheus, "sink_end_to_end_latency_seconds_count").await?,
        Some(rows + parked as f64)
    );
    assert_eq!(
        query(&prometheus, "sum(sink_retries_total)").await?,
        Some(0.0)
    );
    assert_eq!(
        query(&prometheus, "sink_dead_letters_total{class=\"not_utf8\"}").await?,
        Some(parked as f64),
        "the dead letter counted under its class"
    );
    // the lag of every partition returns to 0 once the topic is drained
    let lag_query = format!("max(sink_consumer_lag_messages{{topic=\"{topic}\"}})");
    let count_query = format!("count(sink_consumer_lag_messages{{topic=\"{topic}\"}})");
    let drained = async {
        loop {
            let lag = query(&prometheus, &lag_query).await.ok().flatten();
            let partitions = query(&prometheus, &count_query).await.ok().flatten();
            if lag == Some(0.0) && partitions == Some(3.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), drained)
        .await
        .map_err(|_| anyhow::anyhow!("the lag of the 3 partitions did not read 0 within 60 s"))?;
    let seconds_query = format!("max(sink_consumer_lag_seconds{{topic=\"{topic}\"}})");
    wait_for(&prometheus, &seconds_query, 30, |s| s == 0.0).await?;
    // and rises while messages wait: a table the sink cannot write holds 30 new ones back
    let locker = lock_table(&stack, &table).await?;
    produce(&stack, &topic, 30).await?;
    let behind = async {
        loop {
            let lag = query(
                &prometheus,
                &format!("sum(sink_consumer_lag_messages{{topic=\"{topic}\"}})"),
            )
            .await
            .ok()
            .flatten();
            if lag == Some(30.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), behind)
        .await
        .map_err(|_| {
            anyhow::anyhow!("the lag did not reach the 30 held-back messages within 60 s")
        })?;
    // the oldest held-back message ages: its lag in seconds passes 3
    wait_for(&prometheus, &seconds_query, 60, |s| s > 3.0).await?;
    drop(locker);
    let total = rows as i64 + 30;
    wait_for_rows(&db, &table, total, Duration::from_secs(60)).await?;
    tokio::time::timeout(Duration::from_secs(60), async {
        while query(&prometheus, &lag_query).await.ok().flatten() != Some(0.0) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the lag did not return to 0 after the table was released"))?;
    wait_for(&prometheus, &seconds_query, 30, |s| s == 0.0).await?;
    let batches = query(&prometheus, "sink_batch_write_seconds_count").await?;
    assert!(batches.is_some_and(|b| b >= 1.0), "{batches:?}");
    report_figures(&format!(
        "FIGURES prometheus: scraped every 1 s; producer delivered {produced} (last scraped {scraped}); sink_rows_inserted_total={rows} = rows, sink_dead_letters_total={parked} = dead letters, batches={}, broker rtt {:.1} ms",
        batches.unwrap_or_default(),
        rtt.unwrap_or_default() * 1000.0
    ));

    terminate(&sink);
    let out = wait_for_exit(sink).await?;
    assert!(out.status.success(), "{}", std::fs::read_to_string(&log)?);
    drop_tables(&db, &table).await
}
