//! `sink reconcile`: audits a topic against the table, message by message. Every message
//! the group has consumed (below its stored offset, per partition) must be accounted for:
//! its row stored with the same content, or the message parked in the dead-letter table at
//! its partition and offset. Rows of the table no message of the topic accounts for are
//! counted as extra (meaningful when the table is fed by this topic alone). Read-only on
//! both sides: the Kafka consumer assigns partitions without a group subscription and
//! commits nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use txn_model::Transaction;

use crate::config::SinkConfig;
use crate::error::StoreError;
use crate::store::columns;
use crate::store::conflicts::StoredRow;

/// One message the table does not account for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `missing`, `conflicting` or `not_parked`.
    pub kind: &'static str,
    /// Where the message is.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its `tx_id`, when it decodes.
    pub tx_id: Option<String>,
    /// What differs (for a conflict), or why it should have been parked.
    pub detail: String,
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct Audit {
    /// Partitions of the topic.
    pub partitions: usize,
    /// Messages below the group's stored offsets, read and checked.
    pub checked: u64,
    /// Of those, stored with the same content (redeliveries of a `tx_id` included).
    pub stored: u64,
    /// Of those, parked in the dead-letter table at their partition and offset.
    pub parked: u64,
    /// Offsets at or past the stored offsets (not consumed yet: not checked).
    pub pending: i64,
    /// Rows of the table that no checked message (nor a replayed dead letter) accounts
    /// for. A difference only while the topic still holds its first messages (see
    /// [`Audit::trimmed`]); after retention deleted some, their rows are expected here.
    pub extra: i64,
    /// Whether retention (or a deletion) removed the topic's first messages: rows of those
    /// then count as extra without being a difference.
    pub trimmed: bool,
    /// The messages the table does not account for.
    pub findings: Vec<Finding>,
}

impl Audit {
    /// Whether topic and table agree.
    pub fn agrees(&self) -> bool {
        self.findings.is_empty() && (self.extra == 0 || self.trimmed)
    }

    /// How many findings of `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }
}

/// Why the audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Kafka.
    #[error("{0}")]
    Kafka(String),
}

/// Reads the group's consumed range of the topic and checks each message against the
/// table and the dead letters.
///
/// # Errors
/// [`ReconcileError`] when PostgreSQL or Kafka cannot be read.
pub async fn reconcile(config: &SinkConfig) -> Result<Audit, ReconcileError> {
    let names = crate::store::table_names(&config.table)?;
    let db = crate::store::open_session(&config.postgres).await?;
    // Every read sees one snapshot, taken before Kafka is read: rows a running sink writes
    // meanwhile (and their offsets) are in neither. The audit may take long: no timeouts.
    db.batch_execute(
        "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
         BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    )
    .await
    .map_err(StoreError::Db)?;
    let stored: HashMap<i32, i64> = db
        .query(
            &format!(
                "SELECT partition, next_offset FROM {} WHERE group_id = $1 AND topic = $2",
                names.offsets
            ),
            &[&config.group_id, &config.topic],
        )
        .await
        .map_err(StoreError::Db)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if stored.is_empty() {
        return Err(ReconcileError::Kafka(format!(
            "group {:?} has no stored offsets for topic {} in {}: nothing was consumed under that group (check --group-id / KAFKA_GROUP_ID and --topic)",
            config.group_id, config.topic, names.offsets
        )));
    }
    let parked: HashSet<(i32, i64)> = db
        .query(
            &format!(
                "SELECT partition, kafka_offset FROM {} WHERE topic = $1",
                names.dead_letters
            ),
            &[&config.topic],
        )
        .await
        .map_err(StoreError::Db)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let read_config = config.clone();
    let (partitions, messages, pending, trimmed) =
        tokio::task::spawn_blocking(move || read_range(&read_config, &stored))
            .await
            .map_err(|e| ReconcileError::Kafka(e.to_string()))??;

    // the stored rows of every decoded tx_id
    let ids: Vec<String> = messages
        .iter()
        .filter_map(|(_, _, t)| t.as_ref().ok().map(|t| t.tx_id.to_string()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut rows: HashMap<String, Option<StoredRow>> = HashMap::new();
    for chunk in ids.chunks(5000) {
        let found = db
            .query(
                &format!(
                    "SELECT {} FROM {} WHERE tx_id = ANY($1)",
                    columns::list(),
                    names.table
                ),
                &[&chunk],
            )
            .await
            .map_err(StoreError::Db)?;
        for r in &found {
            rows.insert(r.get::<_, String>("tx_id"), StoredRow::read(r).ok());
        }
    }
    let in_table: i64 = db
        .query_one(&format!("SELECT count(*) FROM {}", names.table), &[])
        .await
        .map_err(StoreError::Db)?
        .get(0);

    // rows of replayed dead letters carry the tx_id of their corrected payload, which no
    // message of the topic has
    let replayed: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE topic = $1 AND replayed_at IS NOT NULL",
                names.dead_letters
            ),
            &[&config.topic],
        )
        .await
        .map_err(StoreError::Db)?
        .get(0);
    let _ = db.batch_execute("COMMIT").await;
    let mut audit = Audit {
        partitions,
        pending,
        extra: (in_table - rows.len() as i64 - replayed).max(0),
        trimmed,
        ..Audit::default()
    };
    for (partition, offset, decoded) in messages {
        audit.checked += 1;
        let is_parked = parked.contains(&(partition, offset));
        let finding = |kind, tx_id, detail: String| Finding {
            kind,
            partition,
            offset,
            tx_id,
            detail,
        };
        match decoded {
            Err(_) if is_parked => audit.parked += 1,
            Err(e) => audit.findings.push(finding(
                "not_parked",
                None,
                format!("not a valid transaction ({e}) and not in the dead letters"),
            )),
            Ok(t) => {
                let id = t.tx_id.to_string();
                match rows.get(&id) {
                    Some(Some(row)) if row.differences(&t).is_empty() => audit.stored += 1,
                    _ if is_parked => audit.parked += 1,
                    Some(Some(row)) => {
                        let fields = row.differences(&t).join(", ");
                        audit.findings.push(finding(
                            "conflicting",
                            Some(id),
                            format!(
                                "the stored row differs in {fields} and the message is not parked"
                            ),
                        ));
                    }
                    Some(None) => audit.findings.push(finding(
                        "conflicting",
                        Some(id),
                        "the stored row cannot be read back".into(),
                    )),
                    None => audit.findings.push(finding(
                        "missing",
                        Some(id),
                        "no row and not in the dead letters".into(),
                    )),
                }
            }
        }
    }
    Ok(audit)
}

/// A message read: partition, offset, decoding.
type Read = (i32, i64, Result<Transaction, txn_model::DecodeError>);

/// Reads every partition from its low watermark up to the group's stored offset; returns
/// the partition count, the messages, the offsets not consumed yet, and whether a
/// partition no longer starts at offset 0.
fn read_range(
    config: &SinkConfig,
    stored: &HashMap<i32, i64>,
) -> Result<(usize, Vec<Read>, i64, bool), ReconcileError> {
    let kafka = |what: &str, e: rdkafka::error::KafkaError| {
        ReconcileError::Kafka(format!(
            "{what} of topic {} at {}: {e}",
            config.topic, config.bootstrap_servers
        ))
    };
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        // a group of its own, never committed: the audit moves no one's position
        .set("group.id", format!("{}-reconcile", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // messages deleted while they are read are an error, not a silent jump to the end
        .set("auto.offset.reset", "error");
    txn_runtime::kafka::apply_options(&mut client, &config.kafka_options);
    let consumer: BaseConsumer = client
        .create()
        .map_err(|e| ReconcileError::Kafka(txn_runtime::kafka::config_error(&e)))?;
    let timeout = Duration::from_secs(10);
    let meta = consumer
        .fetch_metadata(Some(&config.topic), timeout)
        .map_err(|e| kafka("cannot read the metadata", e))?;
    let parts: Vec<i32> = meta
        .topics()
        .iter()
        .filter(|t| t.name() == config.topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(ReconcileError::Kafka(format!(
            "topic {} does not exist at {}",
            config.topic, config.bootstrap_servers
        )));
    }
    let mut tpl = TopicPartitionList::new();
    let mut bounds: HashMap<i32, i64> = HashMap::new();
    let mut pending = 0;
    let mut trimmed = false;
    for &p in &parts {
        let (low, high) = consumer
            .fetch_watermarks(&config.topic, p, timeout)
            .map_err(|e| kafka("cannot read the watermarks", e))?;
        trimmed |= low > 0;
        // consumed: below the stored offset (nothing stored: nothing consumed)
        let bound = stored.get(&p).copied().unwrap_or(low);
        if bound > high {
            return Err(ReconcileError::Kafka(format!(
                "partition {p} of {}: the stored offset {bound} is beyond the log end {high} (the topic was recreated or truncated): see `sink reset-offsets`",
                config.topic
            )));
        }
        if bound < low {
            return Err(ReconcileError::Kafka(format!(
                "partition {p} of {}: offsets {bound}..{low} were deleted (retention) before the sink stored them: those messages cannot be audited, and were not written",
                config.topic
            )));
        }
        pending += high - bound;
        if bound > low {
            tpl.add_partition_offset(&config.topic, p, Offset::Offset(low))
                .map_err(|e| kafka("cannot assign", e))?;
            bounds.insert(p, bound);
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka("cannot assign", e))?;
    let mut out = Vec::new();
    let mut idle = 0;
    while !bounds.is_empty() {
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(m)) => {
                idle = 0;
                let (p, o) = (m.partition(), m.offset());
                let Some(&bound) = bounds.get(&p) else {
                    continue;
                };
                if o < bound {
                    let payload = m.payload().unwrap_or_default();
                    out.push((p, o, Transaction::from_json(payload)));
                }
                if o + 1 >= bound {
                    bounds.remove(&p);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                bounds.remove(&p);
            }
            Some(Err(e)) => return Err(kafka("cannot read", e)),
            None => {
                idle += 1;
                if idle >= 30 {
                    return Err(ReconcileError::Kafka(format!(
                        "no message of topic {} arrived for 30 s before the stored offsets were reached (partitions {:?})",
                        config.topic,
                        bounds.keys().collect::<Vec<_>>()
                    )));
                }
            }
        }
    }
    Ok((parts.len(), out, pending, trimmed))
}
