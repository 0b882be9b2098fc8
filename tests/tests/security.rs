//! Both binaries against servers set up as managed services are (`scripts/stack.sh --tls`):
//! PostgreSQL accepting only TLS, Kafka with a SASL_SSL listener and SCRAM users, a CA the
//! test stack made with openssl. Nothing is mocked.

use std::path::Path;
use std::time::{Duration, Instant};

use pipeline_tests::*;
use uuid::Uuid;

/// The SCRAM password `scripts/stack.sh --tls` gives the user `kafka_sink` here.
const SASL_PASSWORD: &str = "sasl-s3cret-for-tests";

async fn tls_stack() -> anyhow::Result<PrivateStack> {
    // SAN without 127.0.0.1: connecting by that address is a wrong host name
    PrivateStack::start_tls("DNS:localhost", SASL_PASSWORD).await
}

/// The first-class flags of a SASL_SSL client verifying the brokers with `ca`.
fn sasl_env(cmd: &mut tokio::process::Command, bootstrap: &str, mechanism: &str, ca: &Path) {
    cmd.env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("KAFKA_SASL_MECHANISM", mechanism)
        .env("KAFKA_SASL_USERNAME", "kafka_sink")
        .env("KAFKA_SASL_PASSWORD", SASL_PASSWORD)
        .env("KAFKA_SSL_CA_LOCATION", ca);
}

/// PostgreSQL with verify-full against `ca`, by the name the certificate holds.
fn verify_full_env(cmd: &mut tokio::process::Command, ca: &Path) {
    cmd.env("POSTGRES_HOST", "localhost")
        .env("POSTGRES_SSLMODE", "verify-full")
        .env("POSTGRES_SSLROOTCERT", ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_sink_land_every_message_over_sasl_ssl_and_verify_full() -> anyhow::Result<()>
{
    let private = tls_stack().await?;
    let stack = &private.stack;
    let ca = private.ca_file();
    let secrets = tempfile::tempdir()?;
    let topic = unique("tls");
    let table = unique("tls_sink");
    let group = unique("group");
    create_topic(stack, &topic, 3).await?;

    // the producer: every security setting through the -K twin (PRODUCER_KAFKA_OPTIONS),
    // SCRAM-SHA-512; its log must not show the password
    let mut producer = command("producer", stack);
    producer
        .env("KAFKA_BOOTSTRAP_SERVERS", private.tls_bootstrap())
        .env(
            "PRODUCER_KAFKA_OPTIONS",
            format!(
                "security.protocol=sasl_ssl,sasl.mechanism=SCRAM-SHA-512,sasl.username=kafka_sink,sasl.password={SASL_PASSWORD},ssl.ca.location={}",
                ca.display()
            ),
        )
        .args(["--topic", &topic, "--count", "300", "--rate", "0"]);
    let out = tokio::time::timeout(Duration::from_secs(120), producer.output()).await??;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains(SASL_PASSWORD),
        "the producer logged the password: {text}"
    );
    let log = json_log(&out.stderr)?;
    assert_eq!(field_u64(events(&log, "report")[0], "delivered")?, 300);

    // the sink: first-class Kafka flags with SCRAM-SHA-256, DATABASE_URL with verify-full,
    // both passwords from files; run where no .env is (only the working directory's is read)
    let kafka_pw = secrets.path().join("kafka");
    std::fs::write(&kafka_pw, format!("{SASL_PASSWORD}\n"))?;
    let pg_pw = secrets.path().join("pg");
    std::fs::write(&pg_pw, &stack.pg.password)?;
    let mut sink = command("sink", stack);
    sasl_env(&mut sink, &private.tls_bootstrap(), "SCRAM-SHA-256", &ca);
    sink.current_dir(secrets.path())
        .env_remove("KAFKA_SASL_PASSWORD")
        .env("KAFKA_SASL_PASSWORD_FILE", &kafka_pw)
        .env_remove("POSTGRES_PASSWORD")
        .env("POSTGRES_PASSWORD_FILE", &pg_pw)
        .env(
            "DATABASE_URL",
            format!(
                "postgresql://kafka_sink@localhost:{}/{}?sslmode=verify-full&sslrootcert={}&application_name=tls-sink",
                stack.pg.port,
                stack.pg.database,
                ca.display()
            ),
        )
        .args(["--topic", &topic, "--table", &table, "--group-id", &group]);
    let child = sink.spawn()?;
    let db = pg(stack).await?;
    wait_for_rows(&db, &table, 300, Duration::from_secs(120)).await?;
    // every session of the sink is encrypted
    let sessions = db
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'tls-sink'",
            &[],
        )
        .await?;
    assert!(
        !sessions.is_empty(),
        "the sink's sessions carry the DATABASE_URL's application_name"
    );
    assert!(
        sessions.iter().all(|r| r.get::<_, bool>(0)),
        "every sink session uses TLS"
    );
    terminate(&child);
    let out = wait_for_exit(child).await?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains(SASL_PASSWORD),
        "the sink logged the password: {text}"
    );
    assert!(
        !text.contains(&stack.pg.password),
        "the sink logged PostgreSQL's password: {text}"
    );
    let log = json_log(&out.stderr)?;
    let config = events(&log, "config");
    assert_eq!(
        config.len(),
        1,
        "one start-up line with the configuration: {text}"
    );
    let shown = config[0]["config"].as_str().unwrap_or_default();
    assert!(
        shown.contains("VerifyFull") && shown.contains("sasl.password=<redacted>"),
        "{shown}"
    );

    // the exact set
    let produced = decode_all(&read_topic(stack, &topic).await?);
    let expected: Vec<Uuid> = produced.iter().map(|t| t.tx_id).collect();
    let stored = table_rows(&db, &table).await?;
    let (missing, extra, dups) = figures(&expected, &stored);
    assert_eq!((expected.len(), missing, extra, dups), (300, 0, 0, 0));
    report_figures(&format!(
        "FIGURES tls: producer SASL_SSL/SCRAM-SHA-512 (-K), sink SASL_SSL/SCRAM-SHA-256 + DATABASE_URL verify-full (password files): messages=300 rows={} missing={missing} extra={extra} duplicates={dups} sink_sessions_tls={}",
        stored.len(),
        sessions.len()
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tls_or_credential_mistake_ends_in_one_line_naming_it_within_15_s()
-> anyhow::Result<()> {
    let private = tls_stack().await?;
    let stack = &private.stack;
    let ca = private.ca_file();
    // a CA of our own that signed nothing the servers hold
    let other = tempfile::tempdir()?;
    let other_ca = other.path().join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=another CA",
            "-keyout",
        ])
        .arg(other.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()?;
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let topic = unique("tls_mistakes");
    let wrong_host = format!("127.0.0.1:{}", private.tls_port());

    struct Case {
        what: &'static str,
        binary: &'static str,
        says: &'static str,
        tls: bool,
        cmd: tokio::process::Command,
    }
    let mut cases = Vec::new();
    let mut case =
        |what, binary: &'static str, says, tls, set: &dyn Fn(&mut tokio::process::Command)| {
            let mut cmd = command(binary, stack);
            sasl_env(&mut cmd, &private.tls_bootstrap(), "SCRAM-SHA-512", &ca);
            verify_full_env(&mut cmd, &ca);
            cmd.args(["--topic", &topic]);
            if binary == "producer" {
                cmd.args(["--count", "1"]);
            }
            set(&mut cmd);
            cases.push(Case {
                what,
                binary,
                says,
                tls,
                cmd,
            });
        };
    case(
        "PostgreSQL, another CA",
        "sink",
        "does not verify against",
        true,
        &|c| {
            c.env("POSTGRES_SSLROOTCERT", &other_ca);
        },
    );
    case(
        "PostgreSQL, a host name the certificate lacks",
        "sink",
        "certificate for another name",
        true,
        &|c| {
            c.env("POSTGRES_HOST", "127.0.0.1");
        },
    );
    case(
        "PostgreSQL, a wrong password",
        "sink",
        "rejected user",
        false,
        &|c| {
            c.env("POSTGRES_PASSWORD", "wrong");
        },
    );
    case(
        "PostgreSQL, sslmode=disable against hostssl",
        "sink",
        "accepts only TLS",
        true,
        &|c| {
            c.env("POSTGRES_SSLMODE", "disable");
        },
    );
    case(
        "Kafka, another CA",
        "producer",
        "does not verify against",
        true,
        &|c| {
            c.env("KAFKA_SSL_CA_LOCATION", &other_ca);
        },
    );
    case(
        "Kafka, a host name the certificate lacks",
        "producer",
        "certificate for another name",
        true,
        &|c| {
            c.env("KAFKA_BOOTSTRAP_SERVERS", &wrong_host);
        },
    );
    case(
        "Kafka, a wrong SASL password (producer)",
        "producer",
        "rejected the SASL credentials",
        false,
        &|c| {
            c.env("KAFKA_SASL_PASSWORD", "wrong");
        },
    );
    case(
        "Kafka, a wrong SASL password (sink)",
        "sink",
        "rejected the SASL credentials",
        false,
        &|c| {
            c.env("KAFKA_SASL_PASSWORD", "wrong");
        },
    );
    case(
        "Kafka, another CA (sink)",
        "sink",
        "does not verify against",
        true,
        &|c| {
            c.env("KAFKA_SSL_CA_LOCATION", &other_ca);
        },
    );
    case(
        "PostgreSQL, sslmode=disable in DATABASE_URL",
        "sink",
        "accepts only TLS",
        true,
        &|c| {
            c.env(
                "DATABASE_URL",
                "postgres://kafka_sink@localhost/kafka_sink?sslmode=disable",
            );
        },
    );

    let mut figures = Vec::new();
    for mut c in cases {
        let started = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(60), c.cmd.output()).await??;
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{}: {} exited 0: {text}",
            c.what,
            c.binary
        );
        let log = json_log(&out.stderr)?;
        let errors = events(&log, "error");
        assert_eq!(errors.len(), 1, "{}: one error line: {text}", c.what);
        let line = errors[0]["message"].as_str().unwrap_or_default();
        assert!(line.contains(c.says), "{}: {line}", c.what);
        assert!(
            !line.contains("is the broker running"),
            "{}: {line}",
            c.what
        );
        if c.tls {
            assert!(
                !line.contains("authentication failed"),
                "{}: a TLS problem is not a password: {line}",
                c.what
            );
        }
        assert!(!line.contains(SASL_PASSWORD), "{}: {line}", c.what);
        assert!(
            !text.contains(&stack.pg.password),
            "{}: a password in the log: {text}",
            c.what
        );
        assert!(took < Duration::from_secs(15), "{}: took {took:?}", c.what);
        figures.push(format!("{} {:.1} s", c.what, took.as_secs_f64()));
    }
    report_figures(&format!("FIGURES tls mistakes: {}", figures.join("; ")));
    Ok(())
}
