//! Hardening: whatever bytes a message holds (payload, key, headers, timestamp), the sink
//! lands it or parks it, and never exits, stalls, loops or panics because of it. Messages
//! here come the way other clients write them, not only the way our producer does.

use std::collections::HashMap;
use std::time::Duration;

use pipeline_tests::*;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use txn_model::Transaction;
use uuid::Uuid;

/// What must become of a record.
#[derive(Debug)]
enum Expect {
    /// A row equal to this transaction.
    Row(Transaction),
    /// A dead letter of this class (any when `None`) whose reason contains this text.
    Parked(Option<&'static str>, &'static str),
}

struct Case {
    name: String,
    record: Record,
    expect: Expect,
}

fn generator(seed: u64) -> txn_model::Generator {
    let users = txn_model::load_users(&users_dir()).unwrap().ids;
    txn_model::Generator::new(users, Some(seed)).unwrap()
}

fn value(t: &Transaction) -> Value {
    serde_json::from_slice(&t.to_json()).unwrap()
}

async fn dead_letters(
    db: &tokio_postgres::Client,
    table: &str,
) -> anyhow::Result<HashMap<i64, tokio_postgres::Row>> {
    Ok(db
        .query(
            &format!(
                "SELECT kafka_offset, error_class, field, reason, payload, message_key, kafka_timestamp \
                 FROM {table}_dead_letters"
            ),
            &[],
        )
        .await?
        .into_iter()
        .map(|r| (r.get::<_, i64>(0), r))
        .collect())
}

/// Waits until every one of `n` messages is a row or a dead letter.
async fn wait_accounted(
    db: &tokio_postgres::Client,
    table: &str,
    n: i64,
    sink: &RunningSink,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let rows = count_rows(db, table).await?;
        let parked: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table}_dead_letters"), &[])
            .await?
            .get(0);
        if rows + parked >= n {
            return Ok(());
        }
        anyhow::ensure!(
            !sink.handle.is_finished(),
            "the sink stopped with {rows} rows and {parked} dead letters of {n} messages"
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {rows} rows and {parked} dead letters of {n} messages after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hostile_cases() -> Vec<Case> {
    let mut g = generator(81);
    let mut cases = Vec::new();
    let mut add = |name: &str, record: Record, expect: Expect| {
        cases.push(Case {
            name: name.to_owned(),
            record,
            expect,
        })
    };
    let with = |g: &mut txn_model::Generator, field: &str, v: Value| {
        let mut j = value(&g.next_now());
        j[field] = v;
        serde_json::to_vec(&j).unwrap()
    };
    // control characters in every field, the UUID fields first (issue: a NUL in tx_id
    // used to make the dead letter itself unstorable and stop the consumer group)
    let nul_uuid = "0b7e4bd5-8a51-4b6c-9a55-\u{0}f3c1f0d2a11";
    for field in ["tx_id", "user_id"] {
        add(
            &format!("NUL in {field}"),
            Record::payload(with(&mut g, field, json!(nul_uuid))),
            Expect::Parked(Some("schema"), field),
        );
        add(
            &format!("escape sequence in {field}"),
            Record::payload(with(&mut g, field, json!("\u{1b}[2J\u{1b}[31mred"))),
            Expect::Parked(Some("schema"), field),
        );
    }
    for field in ["merchant", "category", "source_system", "transaction_type"] {
        add(
            &format!("NUL in {field}"),
            Record::payload(with(&mut g, field, json!("a\u{0}b"))),
            Expect::Parked(Some("schema"), "NUL"),
        );
    }
    add(
        "NUL in currency",
        Record::payload(with(&mut g, "currency", json!("U\u{0}D"))),
        Expect::Parked(Some("schema"), "currency"),
    );
    add(
        "NUL in timestamp",
        Record::payload(with(
            &mut g,
            "timestamp",
            json!("2025-08-15T10:30:00\u{0}Z"),
        )),
        Expect::Parked(Some("schema"), "timestamp"),
    );
    add(
        "NUL in amount (a string)",
        Record::payload(with(&mut g, "amount", json!("\u{0}"))),
        Expect::Parked(Some("schema"), "amount"),
    );
    add(
        "100 KB of control characters in tx_id",
        Record::payload(with(&mut g, "tx_id", json!("\u{1}".repeat(100_000)))),
        Expect::Parked(Some("schema"), "tx_id"),
    );
    add(
        "a raw control byte inside a JSON string",
        Record::payload(String::from_utf8(g.next_now().to_json()).unwrap().replacen(
            "\",\"",
            "\u{1}\",\"",
            1,
        )),
        Expect::Parked(Some("invalid_json"), "control character"),
    );
    add(
        "a NUL byte between JSON tokens",
        Record::payload([b"{\0".as_slice(), &g.next_now().to_json()[1..]].concat()),
        Expect::Parked(Some("invalid_json"), ""),
    );
    add(
        "a null payload (tombstone)",
        Record::default(),
        Expect::Parked(Some("invalid_json"), "EOF"),
    );
    add(
        "a duplicated field",
        Record::payload({
            let t = g.next_now();
            let text = String::from_utf8(t.to_json()).unwrap();
            format!("{{\"tx_id\":\"{}\",{}", Uuid::new_v4(), &text[1..])
        }),
        Expect::Parked(Some("schema"), "duplicate field"),
    );
    add(
        "JSON nested 10,000 deep",
        Record::payload(format!(
            "{{\"tx_id\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        )),
        Expect::Parked(None, ""),
    );
    add(
        "a byte-order mark before the JSON",
        Record::payload([b"\xef\xbb\xbf".as_slice(), &g.next_now().to_json()].concat()),
        Expect::Parked(Some("invalid_json"), ""),
    );
    add(
        "a field name with control characters",
        Record::payload(with(&mut g, "amount", json!({"\u{0}\u{7}": 1}))),
        Expect::Parked(Some("schema"), "amount"),
    );
    // keys that are not UTF-8, binary headers and timestamps PostgreSQL cannot hold, on
    // messages that are parked and on messages that land
    let odd = |payload: Vec<u8>, timestamp: i64| Record {
        key: Some(b"\xff\x00\xfe key".to_vec()),
        payload: Some(payload),
        timestamp: Some(timestamp),
        headers: vec![
            ("\u{0}binary".into(), Some(b"\x00\xff\x80".to_vec())),
            ("null".into(), None),
        ],
    };
    for (label, ts) in [
        ("year 292,000,000", i64::MAX),
        ("year 200,000", 6_249_223_000_000_000),
        ("1970", 1),
    ] {
        add(
            &format!("not JSON, binary key and headers, Kafka timestamp {label}"),
            odd(b"\xc3\x28 garbage".to_vec(), ts),
            Expect::Parked(Some("not_utf8"), "UTF-8"),
        );
        let t = g.next_now();
        add(
            &format!("valid, binary key and headers, Kafka timestamp {label}"),
            odd(t.to_json(), ts),
            Expect::Row(t),
        );
    }
    // text PostgreSQL stores as is: control characters other than NUL, any script
    let mut t = g.next_now();
    t.merchant = "Caf\u{e9}\t\u{1b}[0m\nB\u{e4}ckerei \u{6771}\u{4eac} \u{1f600}".into();
    t.category = "\u{7f}odd\r".into();
    add(
        "control characters PostgreSQL accepts",
        Record::payload(t.to_json()),
        Expect::Row(t),
    );
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_land_or_are_parked_and_the_sink_keeps_running() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("hard_hostile");
    let table = unique("sink_hostile");
    // accept any CreateTime, as a broker configured by someone else may
    create_topic_with(
        &stack,
        &topic,
        1,
        1,
        &[("message.timestamp.after.max.ms", "9223372036854775807")],
    )
    .await?;
    let db = pg(&stack).await?;
    let cases = hostile_cases();
    let records: Vec<Record> = cases.iter().map(|c| c.record.clone()).collect();
    produce_records(&stack, &topic, 0, &records).await?;

    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_table(&db, &table).await?;
    wait_accounted(&db, &table, cases.len() as i64, &sink).await?;
    assert!(!sink.handle.is_finished(), "the sink never exits");
    let report = sink.stop().await?;

    let rows: HashMap<Uuid, Transaction> = table_rows(&db, &table)
        .await?
        .into_iter()
        .map(|t| (t.tx_id, t))
        .collect();
    let parked = dead_letters(&db, &table).await?;
    let mut expected_rows = 0;
    for (offset, case) in cases.iter().enumerate() {
        let offset = offset as i64;
        match &case.expect {
            Expect::Row(t) => {
                expected_rows += 1;
                assert_eq!(rows.get(&t.tx_id), Some(t), "{}", case.name);
                assert!(!parked.contains_key(&offset), "{} was parked", case.name);
            }
            Expect::Parked(class, reason_contains) => {
                let row = parked
                    .get(&offset)
                    .unwrap_or_else(|| panic!("{} was not parked", case.name));
                let (got_class, reason): (String, String) = (row.get(1), row.get(3));
                if let Some(class) = class {
                    assert_eq!(&got_class, class, "{}: {reason}", case.name);
                }
                assert!(reason.contains(reason_contains), "{}: {reason}", case.name);
                assert!(
                    reason.len() <= 2048,
                    "{}: {} bytes",
                    case.name,
                    reason.len()
                );
                assert!(
                    !reason.chars().any(char::is_control),
                    "{}: control characters in {reason:?}",
                    case.name
                );
                let field: Option<String> = row.get(2);
                assert!(field.is_none_or(|f| !f.chars().any(char::is_control)));
                // the raw bytes are kept
                let payload: Option<Vec<u8>> = row.get(4);
                assert_eq!(
                    payload.unwrap_or_default(),
                    case.record.payload.clone().unwrap_or_default(),
                    "{}",
                    case.name
                );
                let key: Option<Vec<u8>> = row.get(5);
                assert_eq!(key, case.record.key, "{}", case.name);
                let ts: Option<chrono::DateTime<chrono::Utc>> = row.get(6);
                match case.record.timestamp {
                    Some(ms) if ms > 8_000_000_000_000_000 => {
                        assert_eq!(
                            ts, None,
                            "{}: a timestamp PostgreSQL cannot hold",
                            case.name
                        )
                    }
                    Some(ms) => assert_eq!(ts.map(|t| t.timestamp_millis()), Some(ms)),
                    None => assert!(ts.is_some(), "{}", case.name),
                }
            }
        }
    }
    assert_eq!(rows.len(), expected_rows);
    assert_eq!(parked.len(), cases.len() - expected_rows);
    assert_eq!(report.dead_letters as usize, parked.len());
    report_figures(&format!(
        "FIGURES hostile records: cases={} rows={} dead_letters={} sink_exits=0",
        cases.len(),
        rows.len(),
        parked.len()
    ));
    drop_tables(&db, &table).await
}

/// Mutates a valid payload the way broken clients and bad networks do.
fn mutate(rng: &mut rand::rngs::StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    match rng.random_range(0..6) {
        0 => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = rng.random();
        }
        1 => {
            let i = rng.random_range(0..bytes.len());
            bytes.truncate(i);
        }
        2 => {
            let i = rng.random_range(0..bytes.len());
            bytes.insert(i, rng.random_range(0..0x20));
        }
        3 => {
            let i = rng.random_range(0..bytes.len());
            bytes.splice(i..i, *b"\\u0000");
        }
        4 => {
            let n = rng.random_range(0..64);
            bytes = (0..n).map(|_| rng.random()).collect();
        }
        _ => {
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomly_mutated_payloads_each_land_or_are_parked() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("hard_fuzz");
    let table = unique("sink_fuzz");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let seed: u64 = rand::rng().random();
    eprintln!("mutation seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = generator(seed);
    let payloads: Vec<Vec<u8>> = (0..400)
        .map(|_| mutate(&mut rng, g.next_now().to_json()))
        .collect();
    produce_raw(&stack, &topic, 0, &payloads).await?;

    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_table(&db, &table).await?;
    // every payload with its own tx_id: each is one row or one dead letter
    let decoded: Vec<Option<Transaction>> = payloads
        .iter()
        .map(|p| Transaction::from_json(p).ok())
        .collect();
    let mut landing: HashMap<Uuid, Transaction> = HashMap::new();
    let mut duplicates = 0;
    for t in decoded.iter().flatten() {
        if landing.insert(t.tx_id, t.clone()).is_some() {
            duplicates += 1;
        }
    }
    wait_accounted(&db, &table, payloads.len() as i64 - duplicates, &sink).await?;
    let report = sink.stop().await?;
    let rows: HashMap<Uuid, Transaction> = table_rows(&db, &table)
        .await?
        .into_iter()
        .map(|t| (t.tx_id, t))
        .collect();
    let parked = dead_letters(&db, &table).await?;
    for (offset, (payload, t)) in payloads.iter().zip(&decoded).enumerate() {
        match t {
            Some(t) => assert_eq!(rows.get(&t.tx_id), Some(t), "seed {seed} offset {offset}"),
            None => assert!(
                parked.contains_key(&(offset as i64)),
                "seed {seed}: offset {offset} ({:?}) neither landed nor parked",
                String::from_utf8_lossy(payload)
            ),
        }
    }
    assert_eq!(rows.len(), landing.len(), "seed {seed}");
    assert_eq!(report.messages as usize, payloads.len(), "seed {seed}");
    report_figures(&format!(
        "FIGURES mutated payloads: seed={seed} messages={} rows={} dead_letters={}",
        payloads.len(),
        rows.len(),
        parked.len()
    ));
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_postgres_rejects_is_stored_as_a_minimal_unstorable_one() -> anyhow::Result<()>
{
    let stack = stack();
    let topic = unique("hard_unstorable");
    let table = unique("sink_unstorable");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    // run with metrics, to check the class they count the minimal dead letter under
    let config = sink_config(&stack, &topic, &table);
    let ops = sink::metrics::Ops::for_config(&config);
    let metrics = ops.metrics.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let sink = RunningSink {
        stop: stop.clone(),
        handle: tokio::spawn(sink::run_with(config, stop, ops)),
    };
    wait_for_table(&db, &table).await?;
    // an operator's rule the sink does not know about rejects some dead letters
    db.batch_execute(&format!(
        "ALTER TABLE {table}_dead_letters ADD CONSTRAINT no_json_errors CHECK (error_class <> 'invalid_json')"
    ))
    .await?;
    let mut g = generator(7);
    let valid: Vec<Transaction> = (0..3).map(|_| g.next_now()).collect();
    let payloads = vec![
        valid[0].to_json(),
        b"{not json".to_vec(),
        valid[1].to_json(),
        b"\xff not utf-8".to_vec(),
        valid[2].to_json(),
    ];
    produce_raw(&stack, &topic, 0, &payloads).await?;
    wait_accounted(&db, &table, payloads.len() as i64, &sink).await?;
    let report = sink.stop().await?;
    assert_same(&valid, &table_rows(&db, &table).await?);
    let parked = dead_letters(&db, &table).await?;
    assert_eq!(parked.len(), 2);
    let minimal = &parked[&1];
    assert_eq!(minimal.get::<_, String>(1), "unstorable");
    let reason: String = minimal.get(3);
    // the class and the SQLSTATE, in ASCII, and no text of the message
    assert!(
        reason.contains("invalid_json") && reason.contains("23514") && reason.is_ascii(),
        "{reason}"
    );
    assert!(!reason.contains("not json"), "{reason}");
    assert!(minimal.get::<_, Option<Vec<u8>>>(4).is_none());
    assert!(
        minimal
            .get::<_, Option<chrono::DateTime<chrono::Utc>>>(6)
            .is_some()
    );
    assert_eq!(parked[&3].get::<_, String>(1), "not_utf8");
    assert_eq!(
        parked[&3].get::<_, Option<Vec<u8>>>(4).unwrap(),
        payloads[3]
    );
    assert_eq!(report.dead_letters, 2);
    let by_class = |class: &'static str| {
        metrics
            .dead_letters
            .get_or_create(&vec![("class", class)])
            .get()
    };
    assert_eq!(
        (
            by_class("unstorable"),
            by_class("invalid_json"),
            by_class("not_utf8")
        ),
        (1, 0, 1),
        "the metric counts each dead letter under the class the table holds"
    );
    // a replay skips the minimal one (it has nothing to decode) and keeps it as it is
    let r = sink::replay_dead_letters(&sink_config(&stack, &topic, &table), &[], None).await?;
    assert_eq!(
        (r.replayed, r.still_failing, r.without_payload),
        (0, 1, 1),
        "{r:?}"
    );
    let after = dead_letters(&db, &table).await?;
    assert_eq!(after[&1].get::<_, String>(1), "unstorable");
    assert_eq!(after[&1].get::<_, String>(3), reason);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_parked_again_keeps_its_stored_bytes_even_as_a_minimal_dead_letter()
-> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("hard_parked_again");
    let table = unique("sink_parked_again");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let mut g = generator(9);
    let good = g.next_now();
    produce_raw(&stack, &topic, 0, &[b"{bad".to_vec(), good.to_json()]).await?;
    let config = sink_config(&stack, &topic, &table);
    let sink = start_sink(config.clone());
    wait_for_table(&db, &table).await?;
    wait_accounted(&db, &table, 2, &sink).await?;
    sink.stop().await?;
    // a rule added later refuses its dead letter; the message is read again (a reset)
    db.batch_execute(&format!(
        "ALTER TABLE {table}_dead_letters ADD CONSTRAINT no_json_errors CHECK (error_class <> 'invalid_json') NOT VALID"
    ))
    .await?;
    assert_eq!(sink::reset_offsets(&config, &[0], 0).await?, 1);
    let sink = start_sink(config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let row = loop {
        let row = db
            .query_one(
                &format!("SELECT error_class, attempts, payload FROM {table}_dead_letters"),
                &[],
            )
            .await?;
        if row.get::<_, i32>(1) == 2 {
            break row;
        }
        anyhow::ensure!(!sink.handle.is_finished(), "the sink stopped");
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not parked again in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report = sink.stop().await?;
    // the minimal form counts the attempt and keeps the bytes it could not write again
    assert_eq!(row.get::<_, String>(0), "unstorable");
    assert_eq!(
        row.get::<_, Option<Vec<u8>>>(2).as_deref(),
        Some(&b"{bad"[..])
    );
    assert_eq!(
        (report.duplicates, report.dead_letters),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(count_rows(&db, &table).await?, 1);
    drop_tables(&db, &table).await
}

/// Transactions as a seed-style Python producer writes them (`json.dumps` of a dict with
/// `datetime.isoformat()` timestamps, naive or aware, some in the seed table's shape), each
/// with the UTC instant Python itself computes for it, in microseconds since the epoch.
fn python_payloads(users: &[Uuid]) -> anyhow::Result<Vec<(Vec<u8>, i64)>> {
    let script = r#"
import json, sys, uuid, random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo
random.seed(11)
users = sys.argv[1:]
epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
forms = [
    lambda t: t.replace(tzinfo=None),                          # naive, as datetime.now()
    lambda t: t.replace(tzinfo=None, microsecond=0),           # naive, no fraction
    lambda t: t,                                               # aware: +00:00
    lambda t: t.astimezone(ZoneInfo("Asia/Kolkata")),          # +05:30
    lambda t: t.astimezone(ZoneInfo("America/New_York")),      # -04:00 / -05:00
    lambda t: t.astimezone(timezone(timedelta(hours=-9, minutes=-30))),
]
for i in range(60):
    t = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=random.randrange(0, 20_000_000), microseconds=random.randrange(0, 1_000_000))
    local = forms[i % len(forms)](t)
    stamp = local.isoformat(sep=" " if i % 4 == 0 else "T")
    aware = local if local.tzinfo else local.replace(tzinfo=timezone.utc)
    expected = (aware - epoch) // timedelta(microseconds=1)
    msg = {
        "tx_id": str(uuid.uuid4()),
        "user_id": random.choice(users),
        "amount": round(random.uniform(1, 2000), 2),
        "currency": random.choice(["USD", "EUR", "GBP"]),
        "merchant": random.choice(["Amazon", "Starbucks", "Café Zürich"]),
        "category": random.choice(["online_shopping", "food_dining"]),
        "timestamp": stamp,
    }
    if i % 3:
        msg.update(source_system="streaming_kafka", transaction_type="real_time", processing_time_ms=random.randint(10, 900))
    print(json.dumps(msg) + "\t" + str(expected))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(users.iter().map(Uuid::to_string))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| {
            let (json, micros) = l.split_once('\t').unwrap();
            Ok((json.as_bytes().to_vec(), micros.parse()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_style_python_producer_lands_every_message_at_its_utc_instant() -> anyhow::Result<()>
{
    let stack = stack();
    let topic = unique("hard_python");
    let table = unique("sink_python");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let users = txn_model::load_users(&users_dir())?.ids;
    let payloads = python_payloads(&users)?;
    let raw: Vec<Vec<u8>> = payloads.iter().map(|(p, _)| p.clone()).collect();
    produce_raw(&stack, &topic, 0, &raw).await?;

    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_table(&db, &table).await?;
    wait_accounted(&db, &table, raw.len() as i64, &sink).await?;
    let report = sink.stop().await?;
    assert_eq!(report.dead_letters, 0, "{report:?}");
    let rows = db
        .query(
            &format!(
                "SELECT tx_id, (extract(epoch FROM \"timestamp\") * 1000000)::int8, source_system, processing_time_ms FROM {table}"
            ),
            &[],
        )
        .await?;
    let stored: HashMap<String, (i64, Option<String>, Option<i32>)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    assert_eq!(stored.len(), payloads.len());
    let mut seed_shape = 0;
    for (payload, micros) in &payloads {
        let v: Value = serde_json::from_slice(payload)?;
        let (at, source, ms) = &stored[v["tx_id"].as_str().unwrap()];
        assert_eq!(at, micros, "{v}");
        if v.get("source_system").is_none() {
            seed_shape += 1;
            assert_eq!((source, ms), (&None, &None), "{v}");
        } else {
            assert_eq!(source.as_deref(), Some("streaming_kafka"));
            assert_eq!(ms.map(i64::from), v["processing_time_ms"].as_i64());
        }
    }
    assert!(seed_shape >= 20);
    report_figures(&format!(
        "FIGURES python-style producer: messages={} rows={} seed_table_shape={seed_shape} dead_letters=0",
        payloads.len(),
        stored.len()
    ));
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_twice_in_a_batch_and_again_later_is_one_row_and_duplicates()
-> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("hard_twice");
    let table = unique("sink_twice");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let mut g = generator(3);
    // nanoseconds, which PostgreSQL cannot keep: the stored row has microseconds
    let mut v = value(&g.next_now());
    v["timestamp"] = json!("2025-08-15T10:30:00.123456789Z");
    let twice = serde_json::to_vec(&v)?;
    let other = g.next_now();
    // a leap second, which PostgreSQL stores as the next minute's first second: the copy
    // that comes later compares equal to that row (no false conflict)
    let mut leap = value(&g.next_now());
    leap["timestamp"] = json!("2016-12-31T23:59:60.25Z");
    let leap = serde_json::to_vec(&leap)?;
    // both copies in one batch (written before the sink starts), with other messages
    produce_raw(
        &stack,
        &topic,
        0,
        &[twice.clone(), other.to_json(), twice.clone(), leap.clone()],
    )
    .await?;
    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_for_table(&db, &table).await?;
    wait_accounted(&db, &table, 3, &sink).await?;
    // and once more later, alone
    produce_raw(&stack, &topic, 0, &[twice.clone(), leap]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next: Option<i64> = db
            .query_opt(&format!("SELECT next_offset FROM {table}_offsets"), &[])
            .await?
            .map(|r| r.get(0));
        if next == Some(6) {
            break;
        }
        anyhow::ensure!(!sink.handle.is_finished(), "the sink stopped");
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "offset {next:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = sink.stop().await?;
    assert_eq!(count_rows(&db, &table).await?, 3);
    assert!(
        dead_letters(&db, &table).await?.is_empty(),
        "nothing is a conflict"
    );
    assert_eq!(
        (
            report.messages,
            report.inserted,
            report.duplicates,
            report.conflicts,
            report.dead_letters
        ),
        (6, 3, 3, 0, 0),
        "{report:?}"
    );
    let micros: i64 = db
        .query_one(
            &format!("SELECT extract(microseconds FROM \"timestamp\")::int8 FROM {table} WHERE tx_id = $1"),
            &[&v["tx_id"].as_str().unwrap()],
        )
        .await?
        .get(0);
    assert_eq!(micros, 123_456);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_row_the_sink_cannot_read_back_makes_a_conflict_not_a_crash() -> anyhow::Result<()>
{
    let stack = stack();
    let topic = unique("hard_unreadable");
    let table = unique("sink_unreadable");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    drop(sink::store::Store::connect(&stack.pg, &table).await?);
    let mut g = generator(11);
    let (a, b, c) = (g.next_now(), g.next_now(), g.next_now());
    // rows written by something else, with values no Rust type here holds
    db.batch_execute(&format!(
        "INSERT INTO {table} (tx_id, user_id, amount, currency, merchant, category, \"timestamp\") VALUES \
         ('{}', 'u', 1, 'USD', 'm', 'c', 'infinity'), ('{}', 'u', 'NaN', 'USD', 'm', 'c', now())",
        a.tx_id, b.tx_id
    ))
    .await?;
    let unreadable = 2;
    produce_raw(&stack, &topic, 0, &[a.to_json(), b.to_json(), c.to_json()]).await?;
    let sink = start_sink(sink_config(&stack, &topic, &table));
    wait_accounted(&db, &table, 3 + unreadable, &sink).await?;
    let report = sink.stop().await?;
    let parked = dead_letters(&db, &table).await?;
    assert_eq!(parked.len() as i64, unreadable, "{report:?}");
    for row in parked.values() {
        assert_eq!(row.get::<_, String>(1), "conflicting_duplicate");
        let reason: String = row.get(3);
        assert!(reason.contains("cannot be read back"), "{reason}");
    }
    assert_eq!(report.conflicts as i64, unreadable, "{report:?}");
    assert_eq!(report.inserted, 1, "{report:?}");
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_the_user_id_text_and_partition_as_the_java_client_does() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("hard_keys");
    create_topic(&stack, &topic, 6).await?;
    produce(&stack, &topic, 60).await?;
    // Kafka's own console consumer sees the user_id as the key, in plain text
    let ours = console_consume(&stack, &topic, 60).await?;
    assert_eq!(ours.len(), 60);
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for (partition, key, value) in &ours {
        let t = Transaction::from_json(value.as_bytes())?;
        assert_eq!(
            key,
            &t.user_id.to_string(),
            "the key is the message's user_id"
        );
        partition_of.insert(key.clone(), *partition);
    }
    assert!(partition_of.len() > 1);
    // the Java client, keying by the same user_id, picks the same partitions (murmur2)
    let mut g = generator(5);
    let lines: Vec<String> = partition_of
        .keys()
        .map(|user| {
            let mut t = g.next_now();
            t.user_id = user.parse().unwrap();
            format!("{user}\t{}", String::from_utf8(t.to_json()).unwrap())
        })
        .collect();
    console_produce(&stack, &topic, "none", &lines).await?;
    let all = console_consume(&stack, &topic, 60 + lines.len()).await?;
    let mut checked = 0;
    for (partition, key, value) in &all {
        assert_eq!(partition_of.get(key), Some(partition), "{key}: {value}");
        checked += 1;
    }
    assert_eq!(checked, 60 + lines.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_producer_waits_on_a_full_local_queue_still_drains() -> anyhow::Result<()>
{
    let stack = stack();
    let topic = unique("hard_full_queue");
    create_topic(&stack, &topic, 1).await?;
    let mut config = producer_config(&stack, &topic, 1_000);
    // a local queue of one message that is held back 3 s: every other send waits on it
    config.kafka_options = txn_runtime::kafka::KafkaOptions(vec![
        ("queue.buffering.max.messages".into(), "1".into()),
        ("linger.ms".into(), "3000".into()),
    ]);
    config.count = None;
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(producer::run(config, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    // the one queued message is delivered at ~3 s; the producer must then return
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| anyhow::anyhow!("the producer's drain hung after a stop signal"))???;
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(report.delivered, 1, "{report:?}");
    assert!(report.lost_nothing(), "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_of_the_java_client_and_ours_lands() -> anyhow::Result<()> {
    let stack = stack();
    let topic = unique("hard_codecs");
    let table = unique("sink_codecs");
    create_topic(&stack, &topic, 2).await?;
    let db = pg(&stack).await?;
    let sink = start_sink(sink_config(&stack, &topic, &table));
    let mut g = generator(17);
    let mut expected = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        // Kafka's console producer (the Java client) writes batches in this codec...
        let batch: Vec<Transaction> = (0..40).map(|_| g.next_now()).collect();
        let lines: Vec<String> = batch
            .iter()
            .map(|t| format!("{}\t{}", t.user_id, String::from_utf8(t.to_json()).unwrap()))
            .collect();
        console_produce(&stack, &topic, codec, &lines).await?;
        expected.extend(batch);
        // ...and so does ours
        let mut config = producer_config(&stack, &topic, 40);
        config.compression = codec.parse().map_err(anyhow::Error::msg)?;
        config.seed = Some(expected.len() as u64);
        let report = producer::run(config, tokio_util::sync::CancellationToken::new()).await?;
        assert_eq!(report.delivered, 40, "{codec}: {report:?}");
    }
    let produced = read_topic(&stack, &topic).await?;
    assert_eq!(produced.len(), 400);
    wait_accounted(&db, &table, 400, &sink).await?;
    let report = sink.stop().await?;
    let produced: Vec<Transaction> = produced
        .iter()
        .map(|p| Transaction::from_json(p))
        .collect::<Result<_, _>>()?;
    assert_same(&produced, &table_rows(&db, &table).await?);
    assert_eq!(report.dead_letters, 0);
    report_figures(&format!(
        "FIGURES codecs: none,gzip,snappy,lz4,zstd x (Java console producer, ours) = {} messages, rows={}, dead_letters=0",
        produced.len(),
        count_rows(&db, &table).await?
    ));
    drop_tables(&db, &table).await
}

/// The payload and attempts of the dead letter at offset 0.
async fn letter_at_0(db: &tokio_postgres::Client, table: &str) -> anyhow::Result<(Vec<u8>, i32)> {
    let r = db
        .query_one(
            &format!("SELECT payload, attempts FROM {table}_dead_letters WHERE kafka_offset = 0"),
            &[],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_stops_the_sink_with_the_reset_and_nothing_is_skipped()
-> anyhow::Result<()> {
    init_logs();
    let stack = stack();
    let topic = unique("hard_recreated");
    let table = unique("sink_recreated");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    // a bad message at offset 0, then 50 good ones
    produce_raw(&stack, &topic, 0, &[b"{first".to_vec()]).await?;
    produce(&stack, &topic, 50).await?;
    let config = sink_config(&stack, &topic, &table);
    let sink = start_sink(config.clone());
    wait_for_rows(&db, &table, 50, Duration::from_secs(60)).await?;
    sink.stop().await?;
    let decoded = |payloads: Vec<Vec<u8>>| -> Vec<Transaction> {
        payloads
            .iter()
            .filter_map(|p| Transaction::from_json(p).ok())
            .collect()
    };
    let mut expected = decoded(read_topic(&stack, &topic).await?);
    assert_eq!(expected.len(), 50);

    // the topic is deleted and created again: its offsets restart at 0, the stored one is
    // 51; another bad message takes offset 0
    recreate_topic(&stack, &topic, 1).await?;
    produce_raw(&stack, &topic, 0, &[b"{second".to_vec()]).await?;
    produce(&stack, &topic, 10).await?;
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        sink::run(config.clone(), tokio_util::sync::CancellationToken::new()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the sink neither read nor stopped within 60 s"))?
    .expect_err("a stored offset beyond the log end must stop the sink")
    .to_string();
    for part in [
        format!("topic {topic} partition 0"),
        "is 51, beyond the partition's log end 11".to_owned(),
        format!(
            "sink reset-offsets --group-id {} --topic {topic}",
            config.group_id
        ),
    ] {
        assert!(err.contains(&part), "{part:?} not in: {err}");
    }
    assert_eq!(
        count_rows(&db, &table).await?,
        50,
        "nothing written, nothing skipped"
    );

    // a reset naming a partition with no stored position (7) fails, and resets nothing
    let err = sink::reset_offsets(&config, &[0, 7], 0)
        .await
        .expect_err("a reset of an unknown partition must fail")
        .to_string();
    assert!(
        err.contains("partition [7]") && err.contains("nothing reset"),
        "{err}"
    );
    let stored: i64 = db
        .query_one(&format!("SELECT next_offset FROM {table}_offsets"), &[])
        .await?
        .get(0);
    assert_eq!(stored, 51, "partition 0 must not be reset either");
    // the documented reset
    assert_eq!(sink::reset_offsets(&config, &[], 0).await?, 1);
    expected.extend(decoded(read_topic(&stack, &topic).await?));
    // the new topic's bad message at offset 0 would overwrite the old one's dead letter,
    // never replayed, the only copy of a message whose topic is gone: the sink stops
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        sink::run(config.clone(), tokio_util::sync::CancellationToken::new()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the sink neither wrote nor stopped within 60 s"))?
    .expect_err("overwriting an unreplayed dead letter must stop the sink")
    .to_string();
    assert!(
        err.contains(&format!("topic {topic} partition 0 offset 0"))
            && err.contains("holds a different message that was never replayed")
            && !err.contains('\n'),
        "{err}"
    );
    let (payload, _) = letter_at_0(&db, &table).await?;
    assert_eq!(payload, b"{first", "the old dead letter is intact");
    assert_eq!(
        count_rows(&db, &table).await?,
        50,
        "the batch was rolled back"
    );
    // once the operator has dealt with it (here: marked it replayed), the new topic lands
    db.batch_execute(&format!(
        "UPDATE {table}_dead_letters SET replayed_at = now() WHERE kafka_offset = 0"
    ))
    .await?;
    let sink = start_sink(config);
    wait_for_rows(&db, &table, 60, Duration::from_secs(60)).await?;
    let report = sink.stop().await?;
    assert_eq!(report.inserted, 10, "{report:?}");
    assert_same(&expected, &table_rows(&db, &table).await?);
    // and the new bad message at offset 0 replaced the replayed dead letter whole
    let (payload, attempts) = letter_at_0(&db, &table).await?;
    assert_eq!(payload, b"{second");
    assert_eq!(attempts, 1);
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_goes_in_bounded_pages_and_replays_each_dead_letter_once() -> anyhow::Result<()> {
    init_logs();
    let stack = stack();
    let topic = unique("hard_replay");
    let table = unique("sink_replay");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    drop(sink::store::Store::connect(&stack.pg, &table).await?);
    // an operator's rule that rejects every row: 1,234 dead letters of class 'rejected'
    db.batch_execute(&format!(
        "ALTER TABLE {table} ADD CONSTRAINT no_rows CHECK (amount < -1000000)"
    ))
    .await?;
    let n = 1234;
    produce(&stack, &topic, n).await?;
    let config = sink_config(&stack, &topic, &table);
    let sink = start_sink(config.clone());
    wait_accounted(&db, &table, n as i64, &sink).await?;
    sink.stop().await?;
    assert_eq!(dead_letters(&db, &table).await?.len(), n as usize);

    // the rule is lifted: one replay lands them all, page by page
    db.batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT no_rows"))
        .await?;
    let r = sink::replay_dead_letters(&config, &[], Some("rejected")).await?;
    assert_eq!(
        (r.replayed, r.inserted, r.still_failing),
        (n, n, 0),
        "{r:?}"
    );
    let produced: Vec<Transaction> = read_topic(&stack, &topic)
        .await?
        .iter()
        .map(|p| Transaction::from_json(p))
        .collect::<Result<_, _>>()?;
    assert_same(&produced, &table_rows(&db, &table).await?);
    // one transaction per page of at most 500: the rows carry 3 distinct xmin
    let transactions: i64 = db
        .query_one(
            &format!("SELECT count(DISTINCT xmin::text)::int8 FROM {table}"),
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        transactions,
        n.div_ceil(sink::store::REPLAY_PAGE_ROWS as u64) as i64
    );
    // and nothing is replayed twice
    let again = sink::replay_dead_letters(&config, &[], None).await?;
    assert_eq!((again.replayed, again.inserted), (0, 0));
    drop_tables(&db, &table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_behind_a_large_fetch_queue_are_written_within_the_byte_budget()
-> anyhow::Result<()> {
    init_logs();
    let stack = stack();
    let topic = unique("hard_budget");
    let table = unique("sink_budget");
    create_topic(&stack, &topic, 1).await?;
    let db = pg(&stack).await?;
    let mut g = generator(11);
    // valid transactions of about 900 KB each (an unknown field the sink ignores)
    let messages: Vec<(Transaction, Vec<u8>)> = (0..40)
        .map(|_| {
            let t = g.next_now();
            let mut v = value(&t);
            v["note"] = json!("x".repeat(900_000));
            (t, serde_json::to_vec(&v).unwrap())
        })
        .collect();
    let payloads: Vec<Vec<u8>> = messages.iter().map(|(_, p)| p.clone()).collect();
    produce_raw(&stack, &topic, 0, &payloads).await?;

    let mut config = sink_config(&stack, &topic, &table);
    config.buffer_bytes = 8 << 20;
    // librdkafka may fetch the whole backlog at once
    config.kafka_options = txn_runtime::kafka::KafkaOptions(vec![
        ("queued.max.messages.kbytes".into(), "262144".into()),
        ("fetch.max.bytes".into(), "52428800".into()),
        ("max.partition.fetch.bytes".into(), "52428800".into()),
    ]);
    let sink = start_sink(config);
    wait_for_rows(&db, &table, 40, Duration::from_secs(120)).await?;
    let report = sink.stop().await?;
    let produced: Vec<Transaction> = messages.into_iter().map(|(t, _)| t).collect();
    assert_same(&produced, &table_rows(&db, &table).await?);
    // each message weighs ~1.8 MB against 4 MiB for the batch: at most 3 per batch (and
    // as many read ahead); by count alone (5,000) the backlog went in 2 or 3 batches
    assert!(
        report.batches >= 14,
        "the batches ignored the byte budget: {report:?}"
    );
    report_figures(&format!(
        "hardening: 40 messages of 900 KB behind a 256 MiB fetch queue, 8 MiB budget: {} batches",
        report.batches
    ));
    drop_tables(&db, &table).await
}
