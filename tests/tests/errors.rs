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
