//! A real Prometheus (Debian's package, `scripts/prometheus.sh`) scrapes the sink during an
//! end-to-end run; its HTTP API must then agree with PostgreSQL.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_sink_and_its_counters_agree_with_postgres() -> anyhow::Result<()> {
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
    let serving = wait_for_event(&log, "metrics", Duration::from_secs(30)).await?;
    let target = serving["addr"].as_str().unwrap_or_default().to_owned();

    // Prometheus scraping the sink every second, on a free port, with its own storage
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sink\n    static_configs:\n      - targets: ['{target}']\n"
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

    produce(&stack, &topic, 200).await?;
    produce_raw(&stack, &topic, 2, &[b"\xff not UTF-8".to_vec()]).await?;
    wait_for_rows(&db, &table, 200, Duration::from_secs(60)).await?;
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
    drop(locker);
    wait_for_rows(&db, &table, 230, Duration::from_secs(60)).await?;
    tokio::time::timeout(Duration::from_secs(60), async {
        while query(&prometheus, &lag_query).await.ok().flatten() != Some(0.0) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the lag did not return to 0 after the table was released"))?;
    let batches = query(&prometheus, "sink_batch_write_seconds_count").await?;
    assert!(batches.is_some_and(|b| b >= 1.0), "{batches:?}");
    report_figures(&format!(
        "FIGURES prometheus: scraped every 1 s; sink_rows_inserted_total={rows} = rows, sink_dead_letters_total={parked} = dead letters, batches={}",
        batches.unwrap_or_default()
    ));

    terminate(&sink);
    let out = wait_for_exit(sink).await?;
    assert!(out.status.success(), "{}", std::fs::read_to_string(&log)?);
    drop_tables(&db, &table).await
}
