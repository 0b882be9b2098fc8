//! What a dead letter holds, made storable whatever the message was.
//!
//! A dead letter must always store: if PostgreSQL rejected one, the batch (and every
//! later one of its partition) could never commit, and the whole consumer group would
//! stop on one message. Everything derived from the message that lands in a text column
//! (the reason, the field name) is therefore sanitized here: control characters (NUL,
//! which PostgreSQL text cannot hold, among them) are escaped and the length is capped.
//! The raw key and payload stay untouched in `bytea` columns. A Kafka timestamp outside
//! PostgreSQL's range is stored as NULL. If PostgreSQL still rejects the row (a
//! database encoding that cannot represent a character, a constraint added by an
//! operator), `store` writes a minimal `unstorable` one instead.

use chrono::{DateTime, Utc};

/// Longest `reason` stored, in bytes (the rest is cut at a character boundary).
pub const REASON_MAX_BYTES: usize = 2048;
/// Longest `field` stored, in characters (the column is `VARCHAR(100)`).
pub const FIELD_MAX_CHARS: usize = 100;
/// The error class of a minimal dead letter written when the full one was rejected.
pub const UNSTORABLE: &str = "unstorable";

/// Every `error_class` a dead letter can have (the metric's `class` label values).
pub const CLASSES: [&str; 6] = [
    "not_utf8",
    "invalid_json",
    "schema",
    "rejected",
    "conflicting_duplicate",
    UNSTORABLE,
];

/// The index of `class` in [`CLASSES`] (an unknown one counts as unstorable).
pub fn class_index(class: &str) -> usize {
    CLASSES
        .iter()
        .position(|c| *c == class)
        .unwrap_or(CLASSES.len() - 1)
}

/// `text` with control characters escaped (`\u{0}`, `\n`, …) and cut to at most
/// `max_bytes` bytes (an ellipsis marks a cut).
pub fn sanitize(text: &str, max_bytes: usize) -> String {
    const ELLIPSIS: char = '…';
    let mut out = String::with_capacity(text.len().min(max_bytes));
    // the longest prefix (whole characters and whole escapes) that leaves room for "…"
    let mut cut_at = 0;
    for c in text.chars() {
        if out.len() + ELLIPSIS.len_utf8() <= max_bytes {
            cut_at = out.len();
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max_bytes {
            out.truncate(cut_at);
            if out.len() + ELLIPSIS.len_utf8() <= max_bytes {
                out.push(ELLIPSIS);
            }
            return out;
        }
    }
    out
}

/// A field name for the `field` column: sanitized and at most [`FIELD_MAX_CHARS`].
pub fn field(name: &str) -> String {
    let clean = sanitize(name, usize::MAX);
    if clean.chars().count() <= FIELD_MAX_CHARS {
        return clean;
    }
    let mut cut: String = clean.chars().take(FIELD_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A reason for the `reason` column: sanitized and at most [`REASON_MAX_BYTES`].
pub fn reason(text: &str) -> String {
    sanitize(text, REASON_MAX_BYTES)
}

/// Earliest instant PostgreSQL's `timestamptz` holds: 4714-11-24 BC 00:00:00 UTC
/// (Julian day 0), in milliseconds since the Unix epoch.
const PG_MIN_MS: i64 = -210_866_803_200_000;
/// First instant past PostgreSQL's `timestamptz` range: 294277-01-01 00:00:00 UTC, in
/// milliseconds since the Unix epoch (both bounds as PostgreSQL's `extract(epoch …)`
/// gives them).
const PG_END_MS: i64 = 9_224_318_016_000_000;

/// The Kafka timestamp as PostgreSQL can store it; `None` (NULL) when there is none or
/// it is outside PostgreSQL's range.
pub fn kafka_timestamp(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.filter(|ms| (PG_MIN_MS..PG_END_MS).contains(ms))
        .and_then(DateTime::from_timestamp_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            sanitize("a\0b\nc\u{7f}d\u{1b}", 100),
            "a\\u{0}b\\nc\\u{7f}d\\u{1b}"
        );
        assert_eq!(sanitize("Café ☕ 東京", 100), "Café ☕ 東京");
        assert!(!sanitize("\0\0\0", 100).contains('\0'));
    }

    #[test]
    fn length_is_capped_at_a_character_boundary() {
        let long = "é".repeat(5000);
        let s = sanitize(&long, REASON_MAX_BYTES);
        assert!(s.len() <= REASON_MAX_BYTES, "{}", s.len());
        assert!(s.ends_with('…'));
        assert!(s.len() > REASON_MAX_BYTES - 8);
        // an escape is never cut in half: either whole or absent
        let nuls = sanitize(&"\0".repeat(1000), 20);
        assert!(nuls.len() <= 20);
        assert_eq!(nuls.trim_end_matches('…').len() % "\\u{0}".len(), 0);
        // text that fits is untouched
        assert_eq!(sanitize("short", 5), "short");
        assert_eq!(sanitize("", 0), "");
        assert_eq!(sanitize("abc", 2), "");
        assert!(reason(&"x".repeat(10_000)).len() <= REASON_MAX_BYTES);
    }

    #[test]
    fn field_names_fit_the_column() {
        assert_eq!(field("tx_id"), "tx_id");
        let f = field(&"f".repeat(500));
        assert_eq!(f.chars().count(), FIELD_MAX_CHARS);
        assert_eq!(field("a\0b"), "a\\u{0}b");
    }

    #[test]
    fn kafka_timestamps_outside_postgres_range_are_null() {
        assert_eq!(kafka_timestamp(None), None);
        assert_eq!(kafka_timestamp(Some(0)), DateTime::from_timestamp_millis(0));
        assert!(kafka_timestamp(Some(PG_MIN_MS)).is_some());
        assert!(kafka_timestamp(Some(PG_MIN_MS - 1)).is_none());
        // chrono stops at year 262143, before PostgreSQL does: its latest instant is kept
        let latest = DateTime::<Utc>::MAX_UTC.timestamp_millis();
        assert!(latest < PG_END_MS);
        assert!(kafka_timestamp(Some(latest)).is_some());
        assert!(kafka_timestamp(Some(latest + 1)).is_none());
        assert!(kafka_timestamp(Some(PG_END_MS)).is_none());
        assert!(kafka_timestamp(Some(i64::MAX)).is_none());
        assert!(kafka_timestamp(Some(i64::MIN)).is_none());
        // the bounds are PostgreSQL's: 4714-11-24 BC and 294277-01-01
        let min = DateTime::from_timestamp_millis(PG_MIN_MS).unwrap();
        assert_eq!(min.to_rfc3339(), "-4713-11-24T00:00:00+00:00");
    }
}
