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
#[derive(Debug)]
struct KafkaView {
    /// Per partition: its log start and end.
    watermarks: HashMap<i32, (i64, i64)>,
    /// The group's state and member count (`None`: Kafka does not know the group), or
    /// why it could not be listed.
    group: Result<Option<(String, usize)>, String>,
    /// Partitions whose offsets past the stored position hold no record a consumer
    /// receives (transaction markers, aborted records): their lag is 0.
    markers_only: std::collections::HashSet<i32>,
}

/// Runs every check.
pub async fn doctor(config: &SinkConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    let kafka = kafka_checks(config, &mut checks).await;
    let stored = postgres_checks(config, &mut checks).await;
    checks.push(match (kafka, stored) {
        (Some((mut view, consumer)), Some(stored)) => {
            view.markers_only = markers_only(consumer, config, &view, &stored).await;
            group_check(config, &view, &stored)
        }
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

/// The doctor's Kafka client.
type DoctorConsumer = std::sync::Arc<BaseConsumer<DoctorContext>>;

/// Where the offsets between the stored position and the log end are few (at most
/// `PEEK_AT_MOST`), reads them: if none is a record a consumer receives, they are
/// transaction markers or aborted records, not lag. Read-only: assigned, never committed.
async fn markers_only(
    consumer: DoctorConsumer,
    config: &SinkConfig,
    view: &KafkaView,
    stored: &HashMap<i32, i64>,
) -> std::collections::HashSet<i32> {
    const PEEK_AT_MOST: i64 = 100;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut peeked = Vec::new();
    for (p, (_, high)) in &view.watermarks {
        if let Some(&next) = stored.get(p)
            && next < *high
            && high - next <= PEEK_AT_MOST
            && tpl
                .add_partition_offset(&config.topic, *p, rdkafka::Offset::Offset(next))
                .is_ok()
        {
            peeked.push(*p);
        }
    }
    if peeked.is_empty() {
        return Default::default();
    }
    tokio::task::spawn_blocking(move || {
        let mut pending: std::collections::HashSet<i32> = peeked.into_iter().collect();
        let mut empty = std::collections::HashSet::new();
        if consumer.assign(&tpl).is_err() {
            return empty;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pending.is_empty() && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                // a record: the lag is real
                Some(Ok(m)) => {
                    pending.remove(&rdkafka::message::Message::partition(&m));
                }
                Some(Err(KafkaError::PartitionEOF(p))) if pending.remove(&p) => {
                    empty.insert(p);
                }
                _ => {}
            }
        }
        let _ = consumer.unassign();
        empty
    })
    .await
    .unwrap_or_default()
}

async fn kafka_checks(
    config: &SinkConfig,
    checks: &mut Vec<Check>,
) -> Option<(KafkaView, DoctorConsumer)> {
    let servers = &config.bootstrap_servers;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", servers)
        // the group's id, to ask about it; never subscribed, so it joins nothing
        .set("group.id", &config.group_id)
        .set("client.id", "txn-sink-doctor")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // reading the few offsets past a stored position ends at the log end
        .set("enable.partition.eof", "true");
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
    let refused = topic
        .and_then(|t| t.error())
        .map(rdkafka::types::RDKafkaErrorCode::from)
        .filter(|code| *code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition);
    if let Some(code) = refused {
        let fix = if code == rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed {
            format!(
                "grant the sink's principal READ and DESCRIBE on topic {} and READ on group {}",
                config.topic, config.group_id
            )
        } else {
            "check the brokers (kafka-topics.sh --describe)".into()
        };
        checks.push(Check::fail(
            "topic",
            format!(
                "Kafka refuses the metadata of topic {}: {code}",
                config.topic
            ),
            Some(fix),
        ));
        return None;
    }
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
            .map(|list| {
                list.groups()
                    .iter()
                    .find(|g| g.name() == group_id && g.state() != "Dead")
                    .map(|g| (g.state().to_owned(), g.members().len()))
            })
            .map_err(|e| e.to_string());
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
    Some((
        KafkaView {
            watermarks,
            group,
            markers_only: Default::default(),
        },
        consumer,
    ))
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
    let missing: Vec<schema::Ddl> = schema::statements(&names.table)
        .into_iter()
        .filter(|d| d.needed(&catalog))
        .filter(|d| match d {
            schema::Ddl::Column { table, .. } => catalog.contains_key(table),
            schema::Ddl::Table { .. } => true,
        })
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

/// What is missing, and whether the sink's start can add it: a table needs CREATE on its
/// schema, a column the ownership of its table (ALTER TABLE).
async fn missing_check(
    db: &tokio_postgres::Client,
    config: &SinkConfig,
    missing: &[schema::Ddl],
) -> Check {
    let user = &config.postgres.user;
    let schema = config.table.split_once('.').map(|(s, _)| s.to_owned());
    let mut blocked = Vec::new();
    if missing
        .iter()
        .any(|d| matches!(d, schema::Ddl::Table { .. }))
    {
        // NULL when the search_path names no schema that exists
        let row = db
            .query_one(
                "SELECT s, has_schema_privilege(s, 'CREATE') FROM coalesce($1, current_schema()) AS s",
                &[&schema],
            )
            .await
            .ok();
        let named = row.as_ref().and_then(|r| r.get::<_, Option<String>>(0));
        match (named, row.and_then(|r| r.get::<_, Option<bool>>(1))) {
            (_, Some(true)) => {}
            (Some(s), _) => {
                blocked.push(format!("user {user} may not create tables in schema {s}"))
            }
            (None, _) => blocked.push(format!(
                "user {user}'s search_path names no schema that exists"
            )),
        }
    }
    let mut altered: Vec<&str> = missing
        .iter()
        .filter_map(|d| match d {
            schema::Ddl::Column { table, .. } => Some(table.as_str()),
            schema::Ddl::Table { .. } => None,
        })
        .collect();
    altered.dedup();
    for table in altered {
        let owns = db
            .query_one(
                "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = to_regclass($1)",
                &[&table],
            )
            .await
            .ok()
            .and_then(|r| r.get::<_, Option<bool>>(0));
        if owns != Some(true) {
            blocked.push(format!(
                "user {user} does not own {table}, so cannot add its columns"
            ));
        }
    }
    let detail = format!(
        "missing: {}",
        missing
            .iter()
            .map(schema::Ddl::describe)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if blocked.is_empty() {
        Check::warn(
            "table",
            detail,
            format!(
                "the sink adds them at its start (user {user} may); or apply sql/*.sql as their owner"
            ),
        )
    } else {
        Check::fail(
            "table",
            format!("{detail}; {}", blocked.join("; ")),
            Some(
                "apply sql/*.sql as the tables' owner, then grant what sql/grants.sql lists".into(),
            ),
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
                "SELECT t.i, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                        format_type(a.atttypid, NULL), \
                        a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '', \
                        CASE \
                          WHEN a.attcollation = 0 THEN NULL \
                          WHEN c.collprovider = 'd' THEN CASE coalesce(to_jsonb(d)->>'datlocprovider', 'c') \
                            WHEN 'c' THEN d.datcollate::text \
                            WHEN 'b' THEN 'builtin ' || coalesce(to_jsonb(d)->>'datlocale', '') \
                            ELSE 'ICU ' || coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale', '') END \
                          WHEN c.collprovider = 'c' THEN c.collcollate::text \
                          WHEN c.collprovider = 'b' THEN 'builtin ' || coalesce(to_jsonb(c)->>'colllocale', '') \
                          ELSE 'ICU ' || coalesce(to_jsonb(c)->>'colllocale', to_jsonb(c)->>'colliculocale', c.collname::text) END \
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i) \
                 JOIN pg_attribute a ON a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped \
                 LEFT JOIN pg_collation c ON c.oid = a.attcollation \
                 LEFT JOIN pg_database d ON d.datname = current_database()",
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
    let (want, have) = (Column::read(&want), Column::read(&have));
    let (failures, warnings) = compare_shapes(tables, &want, &have);
    let count = have.keys().filter(|(i, _)| *i == 1).count();
    if !failures.is_empty() {
        Check::fail(
            "table",
            failures.join("; "),
            Some(
                "alter them to the shipped schema (sql/*.sql) as the tables' owner: the sink's binary COPY writes those types, and only those columns".into(),
            ),
        )
    } else if !warnings.is_empty() {
        Check::warn(
            "table",
            warnings.join("; "),
            "values beyond such a length or precision are refused and parked as dead letters, and another collation only costs speed: align the columns with sql/*.sql if that is not intended",
        )
    } else {
        Check::ok(
            "table",
            format!("{table} and its state tables match sql/*.sql ({count} columns in {table})"),
        )
    }
}

/// One column as the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    /// With its length or precision (`character varying(50)`).
    ty: String,
    /// Without (`character varying`).
    base: String,
    not_null: bool,
    /// NOT NULL with no default (nor identity or generation): a row must give it.
    required: bool,
    /// What its collation compares by, for text types: a libc locale name (`C`,
    /// `en_US.utf8`), or `ICU <locale>` / `builtin <locale>`; the database's for `default`.
    collation: Option<String>,
}

impl Column {
    /// The columns of the shape query's rows, by (table position, name).
    fn read(rows: &[tokio_postgres::Row]) -> HashMap<(i64, String), Column> {
        rows.iter()
            .map(|r| {
                let column = Column {
                    ty: r.get(2),
                    not_null: r.get(3),
                    base: r.get(4),
                    required: r.get(5),
                    collation: r.get(6),
                };
                ((r.get(0), r.get(1)), column)
            })
            .collect()
    }
}

/// Whether a collation compares text by its bytes (code points): `C` and `POSIX`, and the
/// `C.UTF-8` locales of libc and of PostgreSQL 17's builtin provider.
fn bytewise(collation: &str) -> bool {
    let locale = collation.strip_prefix("builtin ").unwrap_or(collation);
    matches!(locale, "C" | "POSIX")
        || locale.eq_ignore_ascii_case("C.UTF-8")
        || locale.eq_ignore_ascii_case("C.utf8")
}

/// What differs between the shipped shape and the tables: failures (the sink's writes
/// cannot work: another base type, a column the sink needs NOT NULL, a required column
/// it does not write) and warnings (another length or precision, or another type of the
/// text family, which the binary COPY accepts).
fn compare_shapes(
    tables: &[&str],
    want: &HashMap<(i64, String), Column>,
    have: &HashMap<(i64, String), Column>,
) -> (Vec<String>, Vec<String>) {
    const TEXT: [&str; 3] = ["text", "character varying", "character"];
    let name = |i: i64| tables[(i - 1) as usize];
    let (mut failures, mut warnings) = (Vec::new(), Vec::new());
    for ((i, column), w) in want {
        let Some(h) = have.get(&(*i, column.clone())) else {
            continue;
        };
        let at = format!("{}.{column}", name(*i));
        if h.base != w.base {
            let both_text = TEXT.contains(&h.base.as_str()) && TEXT.contains(&w.base.as_str());
            let line = format!("{at} is {}, expected {}", h.ty, w.ty);
            if both_text {
                warnings.push(line)
            } else {
                failures.push(line)
            }
        } else if h.ty != w.ty {
            warnings.push(format!("{at} is {}, expected {}", h.ty, w.ty));
        } else if w.not_null && !h.not_null {
            failures.push(format!("{at} allows NULL, expected NOT NULL"));
        } else if w.collation.as_deref().is_some_and(bytewise)
            && !h.collation.as_deref().is_some_and(bytewise)
        {
            // a table made by the seed's DDL in a linguistic database: it works, its
            // primary key costs more per row
            warnings.push(format!(
                "{at} uses collation {}, the shipped schema \"C\": every insert compares keys by the dearer linguistic rule (docs/SCALING.md measures it); `ALTER TABLE {} ALTER COLUMN {column} TYPE VARCHAR COLLATE \"C\"` rebuilds its index under an exclusive lock, during which the sink's writes wait: do it in a quiet window, with a lock_timeout",
                h.collation.as_deref().unwrap_or("none"),
                name(*i)
            ));
        }
    }
    for ((i, column), h) in have {
        if h.required && !want.contains_key(&(*i, column.clone())) {
            failures.push(format!(
                "{}.{column} is NOT NULL without a default, and the sink does not write it: every row would be refused",
                name(*i)
            ));
        }
    }
    failures.sort();
    warnings.sort();
    (failures, warnings)
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
        Ok(Some((state, members))) => format!("{members} member(s), {state}"),
        Ok(None) => "no member (unknown to Kafka)".into(),
        Err(e) => format!("members unknown (listing the group failed: {e})"),
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
            Some(_) if view.markers_only.contains(p) => {}
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
    let idle = matches!(&view.group, Ok(None) | Ok(Some((_, 0))));
    if lag > 0 && idle {
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
            group: Ok(Some(("Stable".into(), members))),
            markers_only: Default::default(),
        }
    }

    fn column(ty: &str, base: &str, not_null: bool, required: bool) -> Column {
        Column {
            ty: ty.into(),
            base: base.into(),
            not_null,
            required,
            collation: None,
        }
    }

    #[test]
    fn shapes_fail_on_what_breaks_the_writes_and_warn_on_what_parks_some_rows() {
        let key = |c: &str| (1, c.to_owned());
        let want = HashMap::from([
            (
                key("amount"),
                column("numeric(10,2)", "numeric", true, true),
            ),
            (
                key("currency"),
                column("character varying(3)", "character varying", true, true),
            ),
            (
                key("merchant"),
                column("character varying(100)", "character varying", false, false),
            ),
        ]);
        let same = want.clone();
        assert_eq!(compare_shapes(&["t"], &want, &same), (vec![], vec![]));
        let mut have = want.clone();
        // a wider precision, text for varchar: the COPY works, some values may be parked
        have.insert(
            key("amount"),
            column("numeric(12,2)", "numeric", true, true),
        );
        have.insert(key("merchant"), column("text", "text", false, false));
        // a nullable column of the user's own, or one with a default: fine
        have.insert(key("note"), column("text", "text", false, false));
        have.insert(key("region"), column("text", "text", true, false));
        let (failures, warnings) = compare_shapes(&["t"], &want, &have);
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        // the key's collation: the shipped "C", or a database whose default is C, is fine;
        // another is a warning (slower, not wrong)
        let keyed = |collation: &str| Column {
            collation: Some(collation.into()),
            ..column("character varying", "character varying", true, true)
        };
        let want_key = HashMap::from([(key("tx_id"), keyed("C"))]);
        let have_key = |collation: &str| HashMap::from([(key("tx_id"), keyed(collation))]);
        for same in ["C", "POSIX", "C.UTF-8", "C.utf8", "builtin C.UTF-8"] {
            assert_eq!(
                compare_shapes(&["t"], &want_key, &have_key(same)),
                (vec![], vec![]),
                "{same}"
            );
        }
        let (_, warnings) = compare_shapes(&["t"], &want_key, &have_key("ICU en-US"));
        assert!(
            warnings[0].contains("uses collation ICU en-US"),
            "{warnings:?}"
        );
        let (failures, warnings) = compare_shapes(&["t"], &want_key, &have_key("en_US.utf8"));
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            warnings.len() == 1 && warnings[0].contains("t.tx_id uses collation en_US.utf8"),
            "{warnings:?}"
        );
        // another base type, a NOT NULL dropped, a required column the sink never writes
        have.insert(key("amount"), column("text", "text", true, true));
        have.insert(
            key("currency"),
            column("character varying(3)", "character varying", false, false),
        );
        have.insert(key("tenant"), column("integer", "integer", true, true));
        let (failures, _) = compare_shapes(&["t"], &want, &have);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(
            failures[0].contains("t.amount is text, expected numeric(10,2)"),
            "{failures:?}"
        );
        assert!(
            failures[1].contains("t.currency allows NULL"),
            "{failures:?}"
        );
        assert!(
            failures[2].contains("t.tenant is NOT NULL without a default"),
            "{failures:?}"
        );
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
        // offsets past the position that are only transaction markers are no lag
        let mut v = view(&[(0, 0, 11)], 0);
        v.markers_only.insert(0);
        let c = group_check(&config, &v, &stored);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("lag 0 messages"), "{c:?}");
        // a group Kafka would not list: no advice about running sinks, the reason shown
        let mut v = view(&[(0, 0, 12)], 0);
        v.group = Err("Broker: Group authorization failed".into());
        let c = group_check(&config, &v, &stored);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("Group authorization failed"), "{c:?}");
        assert!(healthy(&[
            Check::warn("x", "y", "z"),
            Check::skip("a", "b")
        ]));
    }
}
