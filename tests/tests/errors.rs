//! Bad configuration against the real stack: one clear error naming cause and fix, no hang.

use std::time::Duration;

use pipeline_tests::*;
use tokio_util::sync::CancellationToken;

/// Runs the sink and returns its start-up error as text (it must fail, and quickly).
async fn sink_error(config: sink::SinkConfig) -> String {
    let run = sink::run(config, CancellationToken::new());
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(r)) => panic!("the sink ran ({r:?}) instead of failing"),
        Err(_) => panic!("the sink hung instead of failing"),
    }
}

#[tokio::test]
async fn wrong_postgres_password_names_the_credentials() {
    let stack = stack();
    let mut config = sink_config(&stack, &unique("t"), &unique("sink_err"));
    config.postgres.password = "definitely-wrong".into();
    let err = sink_error(config).await;
    assert!(err.contains("rejected user"), "{err}");
    assert!(err.contains("POSTGRES_PASSWORD"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[tokio::test]
async fn missing_database_says_how_to_create_it() {
    let stack = stack();
    let mut config = sink_config(&stack, &unique("t"), &unique("sink_err"));
    config.postgres.database = unique("no_such_db");
    let err = sink_error(config).await;
    assert!(err.contains("does not exist"), "{err}");
    assert!(err.contains("POSTGRES_DB"), "{err}");
}

#[tokio::test]
async fn unreachable_postgres_names_host_and_port() {
    let stack = stack();
    let mut config = sink_config(&stack, &unique("t"), &unique("sink_err"));
    config.postgres.port = 1; // nothing listens there
    let err = sink_error(config).await;
    assert!(err.contains("cannot connect to PostgreSQL at"), "{err}");
    assert!(err.contains(":1 "), "{err}");
    assert!(err.contains("POSTGRES_HOST"), "{err}");
}

#[tokio::test]
async fn unreachable_kafka_fails_the_sink_with_the_bootstrap_servers() {
    let stack = stack();
    let table = unique("sink_err");
    let mut config = sink_config(&stack, &unique("t"), &table);
    config.bootstrap_servers = "127.0.0.1:1".into();
    config.connect_timeout = Duration::from_secs(3);
    let err = sink_error(config).await;
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
    assert!(err.contains("KAFKA_BOOTSTRAP_SERVERS"), "{err}");
    drop_tables(&pg(&stack).await.unwrap(), &table)
        .await
        .unwrap();
}

#[tokio::test]
async fn unreachable_kafka_fails_the_producer_with_the_bootstrap_servers() {
    let stack = stack();
    let mut config = producer_config(&stack, &unique("t"), 1);
    config.bootstrap_servers = "127.0.0.1:1".into();
    config.connect_timeout = Duration::from_secs(3);
    let run = producer::run(config, CancellationToken::new());
    let err = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Err(e)) => e.to_string(),
        other => panic!("expected a start-up error, got {other:?}"),
    };
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn bad_users_path_fails_the_producer_clearly() {
    let stack = stack();
    let mut config = producer_config(&stack, &unique("t"), 1);
    config.users_path = root().join("no/such/users");
    let err = producer::run(config, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert!(err.contains("USERS_CSV_PATH"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_privilege_fails_fast_with_a_configuration_error() {
    let stack = stack();
    let topic = unique("t_priv");
    let table = unique("sink_priv");
    create_topic(&stack, &topic, 1).await.unwrap();
    let db = pg(&stack).await.unwrap();
    // the sink creates its table; then the operator takes INSERT away: start-up says so
    let store = sink::store::Store::connect(&stack.pg, &table)
        .await
        .unwrap();
    drop(store);
    db.batch_execute(&format!("REVOKE INSERT ON {table} FROM CURRENT_USER"))
        .await
        .unwrap();
    produce(&stack, &topic, 5).await.unwrap();
    let err = sink_error(sink_config(&stack, &topic, &table)).await;
    assert!(
        err.contains(&format!("lacks INSERT on {table}")) && err.contains("sql/grants.sql"),
        "{err}"
    );
    db.batch_execute(&format!("GRANT INSERT ON {table} TO CURRENT_USER"))
        .await
        .unwrap();

    // taken away while the sink runs: the write fails fast as a configuration error
    let config = sink_config(&stack, &topic, &table);
    let running = start_sink(config);
    wait_for_rows(&db, &table, 5, Duration::from_secs(60))
        .await
        .unwrap();
    db.batch_execute(&format!("REVOKE INSERT ON {table} FROM CURRENT_USER"))
        .await
        .unwrap();
    produce(&stack, &topic, 5).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), running.handle)
        .await
        .expect("the sink hung instead of failing")
        .unwrap()
        .expect_err("the write must fail")
        .to_string();
    assert!(err.contains("configuration error"), "{err}");
    assert!(err.contains("42501"), "{err}");
    db.batch_execute(&format!("GRANT INSERT ON {table} TO CURRENT_USER"))
        .await
        .unwrap();
    drop_tables(&db, &table).await.unwrap();
}

#[tokio::test]
async fn a_table_without_the_unique_keys_the_writes_rely_on_is_refused_at_start() {
    let stack = stack();
    let table = unique("sink_nokey");
    let db = pg(&stack).await.unwrap();
    drop(
        sink::store::Store::connect(&stack.pg, &table)
            .await
            .unwrap(),
    );
    let config = sink_config(&stack, &unique("t"), &table);
    // a DBA's table: tx_id is there, its key is not (COPY would land a redelivery twice)
    db.batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT {table}_pkey"))
        .await
        .unwrap();
    let err = sink_error(config.clone()).await;
    assert!(
        err.contains(&format!("table {table} has no unique key on (tx_id)")),
        "{err}"
    );
    assert!(
        err.contains(&format!("ALTER TABLE {table} ADD UNIQUE (tx_id)")),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
    // a partial unique index does not count (ON CONFLICT cannot infer it); a full one does
    db.batch_execute(&format!(
        "CREATE UNIQUE INDEX {table}_partial ON {table} (tx_id) WHERE amount > 0"
    ))
    .await
    .unwrap();
    assert!(
        sink_error(config.clone())
            .await
            .contains("no unique key on (tx_id)")
    );
    db.batch_execute(&format!(
        "CREATE UNIQUE INDEX {table}_tx ON {table} (tx_id)"
    ))
    .await
    .unwrap();
    // a deferrable one beside it breaks ON CONFLICT (it refuses it as an arbiter)
    db.batch_execute(&format!(
        "ALTER TABLE {table} ADD CONSTRAINT {table}_deferred UNIQUE (tx_id) DEFERRABLE"
    ))
    .await
    .unwrap();
    assert!(
        sink_error(config.clone())
            .await
            .contains("no unique key on (tx_id)")
    );
    db.batch_execute(&format!(
        "ALTER TABLE {table} DROP CONSTRAINT {table}_deferred"
    ))
    .await
    .unwrap();
    // the dead letters' place, in another order, is accepted; dropped, it is named
    db.batch_execute(&format!(
        "DO $$ DECLARE c text; BEGIN \
           SELECT conname INTO c FROM pg_constraint WHERE conrelid = '{table}_dead_letters'::regclass AND contype = 'u'; \
           EXECUTE format('ALTER TABLE {table}_dead_letters DROP CONSTRAINT %I', c); END $$; \
         CREATE UNIQUE INDEX {table}_dl ON {table}_dead_letters (kafka_offset, partition, topic)"
    ))
    .await
    .unwrap();
    drop(
        sink::store::Store::connect(&stack.pg, &table)
            .await
            .unwrap(),
    );
    db.batch_execute(&format!("DROP INDEX {table}_dl"))
        .await
        .unwrap();
    let err = sink_error(config).await;
    assert!(
        err.contains("no unique key on (topic, partition, kafka_offset)"),
        "{err}"
    );
    drop_tables(&db, &table).await.unwrap();
}
