//! `sink doctor`: checks, with the sink's own settings, everything it needs before (or
//! while) it runs, one line per check with the fix for any failure. Read-only on both
//! sides: the Kafka client joins no group and commits nothing; the expected table shape is
//! built in a temporary schema inside a transaction that is rolled back.
//!
//! Checks: Kafka reachable (and over what), the topic and its partitions, the group (its
//! members in Kafka, its stored positions in PostgreSQL, the lag), PostgreSQL reachable
//! (server version), TLS of the PostgreSQL session, the tables' columns and types against
//! the shipped schema, their unique keys, the privileges the sink needs, and pending dead
//! letters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

use crate::config::SinkConfig;
use crate::error::StoreError;
use crate::schema;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// As the sink needs it.
    Ok,
    /// Works, but deserves a look (the fix says what).
    Warn,
    /// The sink cannot work this way (the fix says what to do).
    Fail,
    /// Not checked: what it depends on failed.
    Skip,
}

impl Status {
    /// The word printed for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`kafka`, `topic`, `group`, `postgres`, `tls`, `table`, `keys`,
    /// `privileges`, `dead_letters`).
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, for a warning or a failure.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: Option<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix,
        }
    }

    fn skip(name: &'static str, why: &str) -> Check {
        Check {
            name,
            status: Status::Skip,
            detail: format!("not checked: {why}"),
            fix: None,
        }
    }
}

/// Whether every check passed (warnings allowed): the exit code of `sink doctor`.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// What Kafka says about the topic and the group.
#[derive(Debug, Default)]
struct KafkaView {
    /// Per partition: its log start and end.
    watermarks: HashMap<i32, (i64, i64)>,
    /// The group's state and member count, when Kafka knows the group.
    group: Option<(String, usize)>,
}

/// Runs every check.
pub async fn doctor(config: &SinkConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    let kafka = kafka_checks(config, &mut checks).await;
    let stored = postgres_checks(config, &mut checks).await;
    checks.push(match (kafka, stored) {
        (Some(view), Some(stored)) => group_check(config, &view, &stored),
        (None, _) => Check::skip("group", "the topic cannot be read"),
        (_, None) => Check::skip("group", "the offsets table cannot be read"),
    });
    checks
}

/// Notes TLS and SASL failures for the reachability check.
#[derive(Default)]
struct DoctorContext {
    security: txn_runtime::kafka::SecurityFailure,
}

impl ClientContext for DoctorContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.security.note(&error, reason);
    }

    /// Not forwarded: the checks' lines say what failed, with the fix.
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, message: &str) {
        self.security.note_text(message);
    }
}

impl ConsumerContext for DoctorContext {}

async fn kafka_checks(config: &SinkConfig, checks: &mut Vec<Check>) -> Option<KafkaView> {
    let servers = &config.bootstrap_servers;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", servers)
        // the group's id, to ask about it; never subscribed, so it joins nothing
        .set("group.id", &config.group_id)
        .set("client.id", "txn-sink-doctor")
        .set("enable.auto.commit", "false");
    txn_runtime::kafka::apply_options(&mut client, &config.kafka_options);
    let consumer: BaseConsumer<DoctorContext> =
        match client.create_with_context(DoctorContext::default()) {
            Ok(c) => c,
            Err(e) => {
                checks.push(Check::fail(
                    "kafka",
                    txn_runtime::kafka::config_error(&e),
                    Some("fix the -K / SINK_KAFKA_OPTIONS property it names".into()),
                ));
                checks.push(Check::skip("topic", "the Kafka client cannot be created"));
                return None;
            }
        };
    let consumer = std::sync::Arc::new(consumer);
    let protocol = config
        .kafka_options
        .iter()
        .rev()
        .find(|(k, _)| k == "security.protocol")
        .map_or("plaintext", |(_, v)| v.as_str())
        .to_ascii_lowercase();
    let started = Instant::now();
    let probe = consumer.clone();
    let topic = config.topic.clone();
    let poller = consumer.clone();
    let meta = txn_runtime::kafka::fetch_metadata(
        servers,
        config.connect_timeout,
        &config.kafka_options,
        move |t| probe.fetch_metadata(Some(&topic), t),
        || {
            let consumer = poller.clone();
            async move {
                let c = consumer.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = c.poll(Duration::ZERO);
                })
                .await;
                consumer.context().security.take()
            }
        },
    )
    .await;
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            checks.push(Check::fail("kafka", e.to_string(), None));
            checks.push(Check::skip("topic", "Kafka is not reachable"));
            return None;
        }
    };
    let brokers = meta.brokers().len();
    let detail = format!(
        "{servers} answered in {} ms ({brokers} broker{}, {protocol})",
        started.elapsed().as_millis(),
        if brokers == 1 { "" } else { "s" }
    );
    checks.push(if protocol.starts_with("sasl_ssl") || protocol == "ssl" {
        Check::ok("kafka", detail)
    } else {
        // plaintext is what a local stack uses: worth knowing, not a failure
        Check::warn(
            "kafka",
            detail,
            "the connection is not encrypted: use --kafka-security-protocol sasl_ssl (or ssl) off a trusted network",
        )
    });

    let topic = meta.topics().iter().find(|t| t.name() == config.topic);
    let partitions: Vec<(i32, i32)> = topic
        .filter(|t| t.error().is_none())
        .map(|t| {
            t.partitions()
                .iter()
                .map(|p| (p.id(), p.leader()))
                .collect()
        })
        .unwrap_or_default();
    if partitions.is_empty() {
        checks.push(Check::fail(
            "topic",
            format!("topic {} does not exist at {servers}", config.topic),
            Some(format!(
                "create it (kafka-topics.sh --create --topic {} --partitions 6), or start the producer if the brokers create topics on demand",
                config.topic
            )),
        ));
        return None;
    }
    let leaderless: Vec<i32> = partitions
        .iter()
        .filter(|(_, leader)| *leader < 0)
        .map(|(p, _)| *p)
        .collect();
    let consumer_for_reads = consumer.clone();
    let topic_name = config.topic.clone();
    let group_id = config.group_id.clone();
    let ids: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
    let reads = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let mut watermarks = HashMap::new();
        for p in ids {
            match consumer_for_reads.fetch_watermarks(&topic_name, p, timeout) {
                Ok(w) => {
                    watermarks.insert(p, w);
                }
                Err(e) => return Err(format!("partition {p}: {e}")),
            }
        }
        let group = consumer_for_reads
            .fetch_group_list(Some(&group_id), timeout)
            .ok()
            .and_then(|list| {
                list.groups()
                    .iter()
                    .find(|g| g.name() == group_id)
                    .map(|g| (g.state().to_owned(), g.members().len()))
            });
        Ok((watermarks, group))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let (watermarks, group) = match reads {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::fail(
                "topic",
                format!("cannot read the log ends of {}: {e}", config.topic),
                Some("check the brokers' health (kafka-topics.sh --describe)".into()),
            ));
            return None;
        }
    };
    let messages: i64 = watermarks.values().map(|(low, high)| high - low).sum();
    let detail = format!(
        "topic {}: {} partitions, {messages} messages held",
        config.topic,
        partitions.len()
    );
    checks.push(if leaderless.is_empty() {
        Check::ok("topic", detail)
    } else {
        Check::fail(
            "topic",
            format!("{detail}; partitions {leaderless:?} have no leader"),
            Some("bring their brokers back (kafka-topics.sh --describe shows which)".into()),
        )
    });
    Some(KafkaView { watermarks, group })
}

/// The PostgreSQL checks; returns the group's stored positions when they can be read.
async fn postgres_checks(
    config: &SinkConfig,
    checks: &mut Vec<Check>,
) -> Option<HashMap<i32, i64>> {
    let pg = &config.postgres;
    let names = match crate::store::table_names(&config.table) {
        Ok(n) => n,
        Err(e) => {
            checks.push(Check::fail("postgres", e.to_string(), None));
            return None;
        }
    };
    let started = Instant::now();
    let db = match crate::store::open_session(pg).await {
        Ok(db) => db,
        Err(e) => {
            checks.push(Check::fail("postgres", e.to_string(), None));
            for name in ["tls", "table", "keys", "privileges", "dead_letters"] {
                checks.push(Check::skip(name, "PostgreSQL is not reachable"));
            }
            return None;
        }
    };
    let took = started.elapsed().as_millis();
    let version = db
        .query_one("SHOW server_version", &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_else(|_| "unknown".into());
    checks.push(Check::ok(
        "postgres",
        format!(
            "{}:{}/{} answered in {took} ms as user {} (PostgreSQL {version})",
            pg.host, pg.port, pg.database, pg.user
        ),
    ));
    checks.push(tls_check(&db, pg).await);

    let tables = [
        names.table.as_str(),
        names.offsets.as_str(),
        names.dead_letters.as_str(),
    ];
    let catalog = match schema::catalog(&db, &tables).await {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::fail("table", e.to_string(), None));
            return None;
        }
    };
    // a missing table, or the columns missing from a table that exists
    let missing: Vec<String> = schema::statements(&names.table)
        .iter()
        .filter(|d| d.needed(&catalog))
        .filter(|d| match d {
            schema::Ddl::Column { table, .. } => catalog.contains_key(table),
            schema::Ddl::Table { .. } => true,
        })
        .map(schema::Ddl::describe)
        .collect();
    if !missing.is_empty() {
        checks.push(missing_check(&db, config, &missing).await);
        checks.push(Check::skip("keys", "the tables are not complete"));
        checks.push(Check::skip("privileges", "the tables are not complete"));
        checks.push(Check::skip("dead_letters", "the tables are not complete"));
        return None;
    }
    checks.push(shape_check(&db, &names.table, &tables).await);
    checks.push(
        match schema::check_keys(&db, &names.table, &names.offsets, &names.dead_letters).await {
            Ok(()) => Check::ok(
                "keys",
                "tx_id, each partition's position and each dead letter are unique keys",
            ),
            Err(e) => Check::fail("keys", e.to_string(), None),
        },
    );
    checks.push(
        match schema::check_grants(&db, pg, &names.table, &names.offsets, &names.dead_letters).await
        {
            Ok(()) => Check::ok(
                "privileges",
                format!("user {} holds every grant the sink needs", pg.user),
            ),
            Err(e) => Check::fail("privileges", e.to_string(), None),
        },
    );
    checks.push(dead_letter_check(&db, config, &names.dead_letters).await);
    let stored = db
        .query(
            &format!(
                "SELECT partition, next_offset FROM {} WHERE group_id = $1 AND topic = $2",
                names.offsets
            ),
            &[&config.group_id, &config.topic],
        )
        .await
        .ok()?;
    Some(stored.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn tls_check(db: &tokio_postgres::Client, pg: &crate::config::PgConfig) -> Check {
    use txn_runtime::postgres::SslMode;
    let mode = pg.tls.mode.as_str();
    let row = db
        .query_opt(
            "SELECT ssl, coalesce(version, ''), coalesce(cipher, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await;
    match row {
        Ok(Some(r)) if r.get::<_, bool>(0) => {
            let detail = format!(
                "encrypted with {} ({}), sslmode={mode}",
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            );
            match pg.tls.mode {
                SslMode::VerifyFull => Check::ok("tls", detail),
                SslMode::VerifyCa => Check::warn(
                    "tls",
                    detail,
                    "the server's host name is not checked: use sslmode=verify-full",
                ),
                _ => Check::warn(
                    "tls",
                    detail,
                    "the server's certificate is not verified: use sslmode=verify-full with sslrootcert (POSTGRES_SSLROOTCERT)",
                ),
            }
        }
        Ok(_) => {
            let fix = if pg.tls.mode == SslMode::Disable {
                "the session is not encrypted (sslmode=disable): use sslmode=verify-full off a trusted network"
            } else {
                "the server offers no TLS, so the session fell back to plain text: enable ssl on the server and use sslmode=verify-full"
            };
            Check::warn("tls", format!("not encrypted, sslmode={mode}"), fix)
        }
        Err(e) => Check::warn(
            "tls",
            format!("cannot read pg_stat_ssl: {e}"),
            "nothing to do unless TLS matters here",
        ),
    }
}

async fn missing_check(
    db: &tokio_postgres::Client,
    config: &SinkConfig,
    missing: &[String],
) -> Check {
    let schema = config.table.split_once('.').map(|(s, _)| s.to_owned());
    let can_create = db
        .query_one(
            "SELECT has_schema_privilege(coalesce($1, current_schema()), 'CREATE')",
            &[&schema],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    let detail = format!("missing: {}", missing.join(", "));
    if can_create {
        Check::warn(
            "table",
            detail,
            format!(
                "the sink creates them at its start (user {} may); or apply sql/*.sql as their owner",
                config.postgres.user
            ),
        )
    } else {
        Check::fail(
            "table",
            detail,
            Some(format!(
                "user {} may not create them: apply sql/*.sql as their owner, then grant what sql/grants.sql lists",
                config.postgres.user
            )),
        )
    }
}

/// Compares each column's type and nullability with the shipped schema, built for the
/// comparison in the session's temporary schema and rolled back.
async fn shape_check(db: &tokio_postgres::Client, table: &str, tables: &[&str]) -> Check {
    const EXPECTED: &str = "pg_temp.txn_doctor_expected";
    let expected_names = [
        EXPECTED.to_owned(),
        format!("{EXPECTED}_offsets"),
        format!("{EXPECTED}_dead_letters"),
    ];
    let built = async {
        db.batch_execute("BEGIN").await?;
        for d in schema::statements(EXPECTED) {
            db.batch_execute(d.sql()).await?;
        }
        let shape = |names: Vec<String>| async move {
            db.query(
                "SELECT t.i, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull \
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i) \
                 JOIN pg_attribute a ON a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&names],
            )
            .await
        };
        let want = shape(expected_names.to_vec()).await?;
        let have = shape(tables.iter().map(|t| (*t).to_owned()).collect()).await?;
        Ok::<_, tokio_postgres::Error>((want, have))
    }
    .await;
    let _ = db.batch_execute("ROLLBACK").await;
    let (want, have) = match built {
        Ok(r) => r,
        Err(e) => {
            return Check::warn(
                "table",
                format!(
                    "every column is present; their types were not compared ({})",
                    StoreError::Db(e).detail_line()
                ),
                "grant TEMPORARY on the database to compare them, or compare with sql/*.sql by hand",
            );
        }
    };
    let columns = |rows: &[tokio_postgres::Row]| -> HashMap<(i64, String), (String, bool)> {
        rows.iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect()
    };
    let (want, have) = (columns(&want), columns(&have));
    let mut differences: Vec<String> = want
        .iter()
        .filter_map(|((i, column), (ty, not_null))| {
            let name = tables[(*i - 1) as usize];
            let (have_ty, have_not_null) = have.get(&(*i, column.clone()))?;
            if have_ty != ty {
                Some(format!("{name}.{column} is {have_ty}, expected {ty}"))
            } else if *not_null && !have_not_null {
                Some(format!("{name}.{column} allows NULL, expected NOT NULL"))
            } else {
                None
            }
        })
        .collect();
    differences.sort();
    let count = have.keys().filter(|(i, _)| *i == 1).count();
    if differences.is_empty() {
        Check::ok(
            "table",
            format!("{table} and its state tables match sql/*.sql ({count} columns in {table})"),
        )
    } else {
        Check::fail(
            "table",
            differences.join("; "),
            Some(
                "alter the columns to the shipped types (sql/*.sql) as the tables' owner: the sink's binary COPY needs them".into(),
            ),
        )
    }
}

async fn dead_letter_check(db: &tokio_postgres::Client, config: &SinkConfig, table: &str) -> Check {
    let rows = db
        .query(
            &format!(
                "SELECT error_class, count(*) FROM {table} WHERE topic = $1 AND replayed_at IS NULL GROUP BY 1 ORDER BY 2 DESC"
            ),
            &[&config.topic],
        )
        .await;
    match rows {
        Ok(rows) if rows.is_empty() => Check::ok("dead_letters", "none pending"),
        Ok(rows) => {
            let total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
            let classes: Vec<String> = rows
                .iter()
                .map(|r| format!("{} {}", r.get::<_, i64>(1), r.get::<_, String>(0)))
                .collect();
            Check::warn(
                "dead_letters",
                format!("{total} pending in {table} ({})", classes.join(", ")),
                format!(
                    "read their reason (SELECT id, error_class, field, reason FROM {table} WHERE replayed_at IS NULL), fix the cause, then `sink replay-dead-letters`"
                ),
            )
        }
        Err(e) => Check::fail(
            "dead_letters",
            format!("cannot read {table}: {}", StoreError::Db(e).detail_line()),
            None,
        ),
    }
}

fn group_check(config: &SinkConfig, view: &KafkaView, stored: &HashMap<i32, i64>) -> Check {
    let group = &config.group_id;
    let members = match &view.group {
        Some((state, members)) => format!("{members} member(s), {state}"),
        None => "unknown to Kafka".into(),
    };
    let mut lag = 0;
    let mut problems = Vec::new();
    for (p, (low, high)) in &view.watermarks {
        match stored.get(p) {
            Some(&next) if next > *high => problems.push(format!(
                "partition {p}: stored offset {next} is past the log end {high} (the topic was recreated?)"
            )),
            Some(&next) if next < *low => problems.push(format!(
                "partition {p}: offsets {next}..{low} were deleted before the sink stored them"
            )),
            Some(&next) => lag += high - next,
            None => lag += high - low,
        }
    }
    let positions = view
        .watermarks
        .keys()
        .filter(|p| stored.contains_key(p))
        .count();
    let detail = format!(
        "group {group}: {members}; stored positions for {positions} of {} partitions; lag {lag} messages",
        view.watermarks.len()
    );
    if !problems.is_empty() {
        return Check::fail(
            "group",
            format!("{detail}; {}", problems.join("; ")),
            Some("see `sink reset-offsets` (README: Operations)".into()),
        );
    }
    let consuming = view.group.as_ref().is_some_and(|(_, m)| *m > 0);
    if lag > 0 && !consuming {
        Check::warn(
            "group",
            detail,
            "no sink of the group is running: start one (cargo run -p sink)",
        )
    } else {
        Check::ok("group", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(watermarks: &[(i32, i64, i64)], members: usize) -> KafkaView {
        KafkaView {
            watermarks: watermarks.iter().map(|&(p, l, h)| (p, (l, h))).collect(),
            group: Some(("Stable".into(), members)),
        }
    }

    #[test]
    fn the_group_check_counts_lag_and_names_positions_kafka_cannot_serve() {
        let config = SinkConfig::default();
        let stored = HashMap::from([(0, 10), (1, 5)]);
        // partition 2 has no position: its whole log is lag
        let c = group_check(
            &config,
            &view(&[(0, 0, 10), (1, 0, 8), (2, 0, 4)], 1),
            &stored,
        );
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("lag 7 messages"), "{c:?}");
        assert!(c.detail.contains("2 of 3 partitions"), "{c:?}");
        // lag and nobody consuming: a warning
        let c = group_check(&config, &view(&[(0, 0, 12)], 0), &stored);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        // drained and nobody consuming: fine
        let c = group_check(&config, &view(&[(0, 0, 10)], 0), &stored);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        // past the log end (recreated topic), or below its start (deleted unwritten)
        let c = group_check(&config, &view(&[(0, 0, 3)], 1), &stored);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("past the log end"), "{c:?}");
        let c = group_check(&config, &view(&[(1, 7, 9)], 1), &stored);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("5..7 were deleted"), "{c:?}");
        assert!(!healthy(&[c]));
        assert!(healthy(&[
            Check::warn("x", "y", "z"),
            Check::skip("a", "b")
        ]));
    }
}
