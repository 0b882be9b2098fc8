//! The transaction message: its JSON form on the `transactions` topic and strict decoding.
//!
//! The wire format is the seed's JSON, field for field:
//!
//! ```json
//! {"tx_id":"…uuid…","user_id":"…uuid…","amount":123.45,"currency":"USD",
//!  "merchant":"Amazon","category":"online_shopping","timestamp":"2025-08-15T10:30:00Z",
//!  "source_system":"streaming_kafka","transaction_type":"real_time","processing_time_ms":150}
//! ```
//!
//! `amount` is a JSON number held as [`Decimal`] end to end: serde_json's
//! `arbitrary_precision` keeps the digits as text, so `123.45` never passes through an
//! `f64`. Decoding is strict about types and about the limits of the PostgreSQL columns
//! (`DECIMAL(10,2)`, `VARCHAR(3)`, `VARCHAR(255)`, `VARCHAR(100)`), and every error names
//! the offending field. Unknown extra fields are ignored, so producers may add fields
//! without breaking the sink.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// `source_system` of every transaction this project generates.
pub const SOURCE_SYSTEM: &str = "streaming_kafka";
/// `transaction_type` of every transaction this project generates.
pub const TRANSACTION_TYPE: &str = "real_time";

/// Largest absolute amount `DECIMAL(10,2)` holds: 99,999,999.99.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0x540B_E3FF, 2, 0, false, 2); // 9,999,999,999 × 10⁻²
/// Column widths of `transactions_sink`, in characters.
pub const MERCHANT_MAX_CHARS: usize = 255;
/// Column width of `category`, in characters.
pub const CATEGORY_MAX_CHARS: usize = 100;
/// Column width of `source_system` and `transaction_type`, in characters.
pub const LABEL_MAX_CHARS: usize = 50;

/// One financial transaction, as published to Kafka and stored in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Unique id of the transaction; the table's primary key (idempotent writes rely on it).
    pub tx_id: Uuid,
    /// The user who paid; one of the ids of the batch side's registration CSV files.
    pub user_id: Uuid,
    /// Amount in `currency`, two decimals (the currency's minor unit), exact.
    #[serde(with = "amount")]
    pub amount: Decimal,
    /// ISO 4217 code: three upper-case letters.
    pub currency: Currency,
    /// Merchant name, at most 255 characters.
    pub merchant: String,
    /// Merchant category (`online_shopping`, `groceries`, …), at most 100 characters.
    pub category: String,
    /// When the transaction happened, UTC, at most microsecond precision (what PostgreSQL
    /// keeps). On the wire RFC 3339 with `Z`; read from the ISO 8601 forms producers
    /// write (see [`parse_timestamp`]).
    #[serde(with = "timestamp")]
    pub timestamp: DateTime<Utc>,
    /// `streaming_kafka` for generated data; optional (absent in the seed table's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_system: Option<String>,
    /// `real_time` for generated data; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_type: Option<String>,
    /// Time the payment processor took, in milliseconds; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_time_ms: Option<u32>,
}

/// Why a payload is not a valid [`Transaction`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not UTF-8 text.
    #[error("payload is not UTF-8: {0}")]
    NotUtf8(String),
    /// The payload is not JSON, or is truncated.
    #[error("payload is not valid JSON: {0}")]
    Syntax(String),
    /// A field is missing, has the wrong JSON type or an invalid value.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The offending field (`amount`, `tx_id`, …; `.` for the payload as a whole).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl DecodeError {
    /// The field the error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    /// A stable name for the kind of error: `not_utf8`, `invalid_json` or `schema`.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::NotUtf8(_) => "not_utf8",
            DecodeError::Syntax(_) => "invalid_json",
            DecodeError::Field { .. } => "schema",
        }
    }

    fn field_error(field: &str, reason: impl Into<String>) -> Self {
        DecodeError::Field {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl Transaction {
    /// Decodes and validates one message payload.
    ///
    /// # Errors
    /// [`DecodeError`] naming the offending field when the payload is not UTF-8, not JSON,
    /// misses a field, has a mistyped one, or holds a value the table cannot store.
    pub fn from_json(payload: &[u8]) -> Result<Transaction, DecodeError> {
        let text = std::str::from_utf8(payload).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
        // Fast path: plain decoding; the path-tracking decoder below runs only to explain
        // a failure (it names the offending field, at a cost on every message).
        if let Ok(tx) = serde_json::from_str::<Transaction>(text) {
            tx.validate()?;
            return Ok(tx);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let tx: Transaction = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                DecodeError::Syntax(inner.to_string())
            } else if path == "." {
                // serde reports missing fields and wrong top-level types at the root;
                // its message names the field ("missing field `amount`").
                let msg = inner.to_string();
                match missing_field_name(&msg) {
                    Some(field) => DecodeError::field_error(field, "missing"),
                    None => DecodeError::field_error(".", strip_position(&msg)),
                }
            } else {
                DecodeError::field_error(&path, strip_position(&inner.to_string()))
            }
        })?;
        de.end().map_err(|e| DecodeError::Syntax(e.to_string()))?;
        tx.validate()?;
        Ok(tx)
    }

    /// Encodes the transaction as the seed's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Invariant: every field serializes infallibly (strings, numbers, a valid decimal).
        serde_json::to_vec(self).expect("a Transaction always serializes")
    }

    /// Checks the values against the columns of `transactions_sink`.
    ///
    /// # Errors
    /// [`DecodeError::Field`] naming the first value that does not fit.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.amount.scale() > 2 || self.amount.abs() > MAX_AMOUNT {
            return Err(DecodeError::field_error(
                "amount",
                format!("{} does not fit DECIMAL(10,2)", self.amount),
            ));
        }
        check_text("merchant", &self.merchant, MERCHANT_MAX_CHARS)?;
        check_text("category", &self.category, CATEGORY_MAX_CHARS)?;
        if let Some(s) = &self.source_system {
            check_text("source_system", s, LABEL_MAX_CHARS)?;
        }
        if let Some(t) = &self.transaction_type {
            check_text("transaction_type", t, LABEL_MAX_CHARS)?;
        }
        if let Some(ms) = self.processing_time_ms
            && i32::try_from(ms).is_err()
        {
            return Err(DecodeError::field_error(
                "processing_time_ms",
                format!("{ms} does not fit INTEGER"),
            ));
        }
        Ok(())
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), DecodeError> {
    if value.trim().is_empty() {
        return Err(DecodeError::field_error(field, "empty"));
    }
    let len = value.chars().count();
    if len > max {
        return Err(DecodeError::field_error(
            field,
            format!("{len} characters, longer than the column's {max}"),
        ));
    }
    if value.contains('\0') {
        return Err(DecodeError::field_error(field, "contains a NUL character"));
    }
    Ok(())
}

fn missing_field_name(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// serde_json appends " at line L column C"; the field name says more than the column.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// An ISO 4217 currency code: exactly three ASCII upper-case letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Builds a code from a `&'static str` known to be valid (for tables of constants).
    ///
    /// # Panics
    /// When `code` is not three ASCII upper-case letters (a programming error).
    pub const fn new_static(code: &'static str) -> Currency {
        let b = code.as_bytes();
        assert!(b.len() == 3, "a currency code has three letters");
        assert!(
            b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() && b[2].is_ascii_uppercase()
        );
        Currency([b[0], b[1], b[2]])
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).expect("currency codes are ASCII")
    }
}

impl FromStr for Currency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency([b[0], b[1], b[2]]))
        } else {
            Err(format!(
                "{s:?} is not an ISO 4217 code (three upper-case letters)"
            ))
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `amount` as an exact JSON number (needs serde_json's `arbitrary_precision`).
mod amount {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        serde_json::Number::from_str(&value.to_string())
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }

    /// Accepts only a JSON number (a string is a type error), read from its digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        let text = n.as_str();
        let parsed = if text.contains(['e', 'E']) {
            Decimal::from_scientific(text)
        } else {
            Decimal::from_str_exact(text)
        };
        parsed
            .map(|d| d.normalize())
            .map(|d| {
                if d.scale() < 2 {
                    with_two_decimals(d)
                } else {
                    d
                }
            })
            .map_err(|e| serde::de::Error::custom(format!("{text} is not a decimal amount: {e}")))
    }

    fn with_two_decimals(mut d: Decimal) -> Decimal {
        d.rescale(2);
        d
    }
}

/// Parses a timestamp in the forms producers write, to UTC, truncated to microseconds:
///
/// - RFC 3339 and ISO 8601 extended: `2025-08-15T10:30:00Z`, `…+02:00`, `…+0200`, `…+02`;
/// - a space instead of the `T` (`2025-08-15 10:30:00`, as PostgreSQL and many logs write);
/// - 0 to 9 fractional digits (`…:00`, `…:00.1`, `…:00.123456789`);
/// - no offset at all (Python's `datetime.isoformat()` of a naive datetime, Faker's
///   `iso8601()`): taken as UTC.
///
/// Digits beyond the microsecond are dropped (not rounded): PostgreSQL keeps microseconds,
/// so a message and its stored row compare equal, and a redelivery is a plain duplicate.
///
/// # Errors
/// A message saying which forms are accepted.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    let bad = || {
        format!(
            "{s:?} is not an ISO 8601 timestamp (YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM], or without the offset for UTC)"
        )
    };
    // the date is YYYY-MM-DD, so an offset sign can only come after the 'T' or space
    let split = s
        .get(10..)
        .and_then(|time| time.rfind(['+', '-', 'Z', 'z']).map(|i| 10 + i));
    let (local, offset) = match split {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let offset_secs = match offset.as_bytes() {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let digits = |b: &[u8]| -> Option<i32> {
                (b.len() == 2 && b.iter().all(u8::is_ascii_digit))
                    .then(|| i32::from(b[0] - b'0') * 10 + i32::from(b[1] - b'0'))
            };
            let (h, m) = match rest {
                [h1, h2] => (digits(&[*h1, *h2]), Some(0)),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (digits(&[*h1, *h2]), digits(&[*m1, *m2]))
                }
                _ => (None, None),
            };
            match (h, m) {
                (Some(h), Some(m)) if h < 24 && m < 60 => {
                    let secs = h * 3600 + m * 60;
                    if *sign == b'-' { -secs } else { secs }
                }
                _ => return Err(bad()),
            }
        }
        _ => return Err(bad()),
    };
    let sep = local.as_bytes().get(10).copied();
    if !matches!(sep, Some(b'T' | b't' | b' ')) {
        return Err(bad());
    }
    let (date, time) = (&local[..10], &local[11..]);
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) if (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            (hms, f)
        }
        Some(_) => return Err(bad()),
        None => (time, ""),
    };
    // fixed-width fields, read by hand: chrono's format-string parser cost a tenth of the
    // sink's CPU on a drain
    let num = |b: &[u8]| -> Option<u32> {
        b.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (d, t) = (date.as_bytes(), hms.as_bytes());
    if d.len() != 10 || t.len() != 8 || d[4] != b'-' || d[7] != b'-' || t[2] != b':' || t[5] != b':'
    {
        return Err(bad());
    }
    let field = |b: &[u8]| num(b).ok_or_else(bad);
    let (year, month, day) = (field(&d[..4])?, field(&d[5..7])?, field(&d[8..])?);
    let (hour, minute, second) = (field(&t[..2])?, field(&t[3..5])?, field(&t[6..])?);
    // microseconds: the first six fractional digits, right-padded
    let f = fraction.as_bytes();
    let mut micros = num(&f[..f.len().min(6)]).ok_or_else(bad)?;
    for _ in f.len().min(6)..6 {
        micros *= 10;
    }
    // a leap second (:60) is the first second of the next minute, as PostgreSQL stores it
    // (chrono's own leap-second form would compare unequal to the row read back)
    let leap = i64::from(second == 60);
    let second = if leap == 1 { 59 } else { second };
    let naive = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)
        .and_then(|date| date.and_hms_micro_opt(hour, minute, second, micros))
        .ok_or_else(bad)?;
    let utc = naive + chrono::Duration::seconds(leap - i64::from(offset_secs));
    Ok(utc.and_utc())
}

/// `timestamp` as RFC 3339 in UTC with `Z`; read with [`parse_timestamp`].
mod timestamp {
    use super::*;

    pub fn serialize<S: Serializer>(value: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_timestamp(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn sample() -> Transaction {
        Transaction {
            tx_id: Uuid::parse_str("0b7e4bd5-8a51-4b6c-9a55-6f3c1f0d2a11").unwrap(),
            user_id: Uuid::parse_str("9d3c5a8e-2f41-4e7b-8c1d-5a6b7c8d9e0f").unwrap(),
            amount: Decimal::from_str("123.45").unwrap(),
            currency: "USD".parse().unwrap(),
            merchant: "Amazon".into(),
            category: "online_shopping".into(),
            timestamp: DateTime::parse_from_rfc3339("2025-08-15T10:30:00Z")
                .unwrap()
                .with_timezone(&Utc),
            source_system: Some(SOURCE_SYSTEM.into()),
            transaction_type: Some(TRANSACTION_TYPE.into()),
            processing_time_ms: Some(150),
        }
    }

    fn sample_value() -> Value {
        serde_json::from_slice(&sample().to_json()).unwrap()
    }

    #[test]
    fn json_matches_the_seed_field_for_field() {
        let text = String::from_utf8(sample().to_json()).unwrap();
        assert_eq!(
            text,
            r#"{"tx_id":"0b7e4bd5-8a51-4b6c-9a55-6f3c1f0d2a11","user_id":"9d3c5a8e-2f41-4e7b-8c1d-5a6b7c8d9e0f","amount":123.45,"currency":"USD","merchant":"Amazon","category":"online_shopping","timestamp":"2025-08-15T10:30:00Z","source_system":"streaming_kafka","transaction_type":"real_time","processing_time_ms":150}"#
        );
        let keys: Vec<String> = sample_value()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut expected = vec![
            "tx_id",
            "user_id",
            "amount",
            "currency",
            "merchant",
            "category",
            "timestamp",
            "source_system",
            "transaction_type",
            "processing_time_ms",
        ];
        expected.sort();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        assert_eq!(keys_sorted, expected);
        assert!(sample_value()["amount"].is_number());
        assert!(sample_value()["processing_time_ms"].is_u64());
    }

    #[test]
    fn amounts_round_trip_exactly() {
        for text in [
            "123.45",
            "0.01",
            "99999999.99",
            "-42.10",
            "0.10",
            "1000000.00",
            "7.07",
        ] {
            let mut tx = sample();
            tx.amount = Decimal::from_str(text).unwrap();
            let json = tx.to_json();
            assert!(
                String::from_utf8(json.clone())
                    .unwrap()
                    .contains(&format!("\"amount\":{text},")),
                "{text} written as digits"
            );
            let back = Transaction::from_json(&json).unwrap();
            assert_eq!(back.amount.to_string(), text);
            assert_eq!(back, tx);
        }
    }

    #[test]
    fn amounts_are_read_with_two_decimals() {
        let mut v = sample_value();
        v["amount"] = serde_json::from_str("12").unwrap();
        let tx = Transaction::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(tx.amount.to_string(), "12.00");
        v["amount"] = serde_json::from_str("1.5e2").unwrap();
        let tx = Transaction::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(tx.amount.to_string(), "150.00");
        v["amount"] = serde_json::from_str("3.100").unwrap();
        let tx = Transaction::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(tx.amount.to_string(), "3.10");
    }

    #[test]
    fn timestamp_is_utc_with_z_and_offsets_are_converted() {
        let mut v = sample_value();
        assert_eq!(v["timestamp"], "2025-08-15T10:30:00Z");
        v["timestamp"] = json!("2025-08-15T12:30:00.250+02:00");
        let tx = Transaction::from_json(v.to_string().as_bytes()).unwrap();
        let again: Value = serde_json::from_slice(&tx.to_json()).unwrap();
        assert_eq!(again["timestamp"], "2025-08-15T10:30:00.250Z");
    }

    #[test]
    fn timestamps_in_the_forms_producers_write_are_read_as_utc_microseconds() {
        let utc = |s: &str| {
            parse_timestamp(s)
                .unwrap_or_else(|e| panic!("{s}: {e}"))
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
        };
        for (input, expected) in [
            ("2025-08-15T10:30:00Z", "2025-08-15T10:30:00Z"),
            ("2025-08-15T10:30:00z", "2025-08-15T10:30:00Z"),
            ("2025-08-15t10:30:00Z", "2025-08-15T10:30:00Z"),
            // Python's isoformat() of a naive datetime, Faker's iso8601(): no offset = UTC
            ("2025-08-15T10:30:00.123456", "2025-08-15T10:30:00.123456Z"),
            ("2025-08-15T10:30:00", "2025-08-15T10:30:00Z"),
            // a space instead of the T
            ("2025-08-15 10:30:00", "2025-08-15T10:30:00Z"),
            ("2025-08-15 10:30:00.5+00:00", "2025-08-15T10:30:00.500Z"),
            // offsets, converted to UTC
            ("2025-08-15T12:30:00+02:00", "2025-08-15T10:30:00Z"),
            ("2025-08-15T12:30:00+0200", "2025-08-15T10:30:00Z"),
            ("2025-08-15T12:30:00+02", "2025-08-15T10:30:00Z"),
            ("2025-08-15T05:00:00-05:30", "2025-08-15T10:30:00Z"),
            ("2025-08-15T00:30:00-1000", "2025-08-15T10:30:00Z"),
            ("2025-01-01T00:30:00+01:00", "2024-12-31T23:30:00Z"),
            // 0 to 9 fractional digits, truncated (not rounded) to microseconds
            ("2025-08-15T10:30:00.1Z", "2025-08-15T10:30:00.100Z"),
            (
                "2025-08-15T10:30:00.123456789Z",
                "2025-08-15T10:30:00.123456Z",
            ),
            (
                "2025-08-15T10:30:00.999999999Z",
                "2025-08-15T10:30:00.999999Z",
            ),
            (
                "2025-08-15T10:30:00.000000001+01:00",
                "2025-08-15T09:30:00Z",
            ),
            // a leap second is the first second of the next minute, as PostgreSQL stores it
            ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
            ("2016-12-31T23:59:60.5Z", "2017-01-01T00:00:00.500Z"),
            ("2017-01-01T05:29:60+05:30", "2017-01-01T00:00:00Z"),
        ] {
            assert_eq!(utc(input), expected, "{input}");
        }
        for bad in [
            "",
            "yesterday",
            "2025-08-15",
            "2025-08-15T10:30",
            "2025-08-15T10:30:00.",
            "2025-08-15T10:30:00.1234567890Z",
            "2025-08-15T10:30:00+2:00",
            "2025-08-15T10:30:00+24:00",
            "2025-08-15T10:30:00+02:60",
            "2025-08-15T10:30:00 +02:00",
            "2025-08-15T10:30:00ZZ",
            "2025-08-15T10:30:00Z+01:00",
            "2025-08-15X10:30:00Z",
            "2025-13-15T10:30:00Z",
            "2025-8-15T10:30:00Z",
            "2025-08-15T1:30:00Z",
            "15/08/2025 10:30",
            "2025-08-15T10:30:00\u{0}Z",
            "2025-08-15T10:30:00.12a",
            "２０２５-08-15T10:30:00Z",
            "2025-08-15T10:30:00+02:00\n",
            "2025-08-15T10:30:61Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_redelivery_with_nanoseconds_decodes_equal_to_its_stored_microseconds() {
        let mut v = sample_value();
        v["timestamp"] = json!("2025-08-15T10:30:00.123456789Z");
        let first = Transaction::from_json(v.to_string().as_bytes()).unwrap();
        // what PostgreSQL keeps (microseconds), read back and written again
        v["timestamp"] = json!("2025-08-15 10:30:00.123456");
        let stored = Transaction::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(first, stored);
        assert_eq!(first.timestamp.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn the_fields_beyond_the_seed_table_are_optional() {
        let mut v = sample_value();
        for field in ["source_system", "transaction_type", "processing_time_ms"] {
            v.as_object_mut().unwrap().remove(field);
        }
        let tx = Transaction::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(
            (tx.source_system, tx.transaction_type, tx.processing_time_ms),
            (None, None, None)
        );
        // explicit nulls too
        let mut v = sample_value();
        v["source_system"] = Value::Null;
        v["processing_time_ms"] = Value::Null;
        let tx = Transaction::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(tx.source_system, None);
        assert_eq!(tx.processing_time_ms, None);
        assert_eq!(tx.transaction_type.as_deref(), Some(TRANSACTION_TYPE));
        // and written without them: the seed table's shape
        let text = String::from_utf8(tx.to_json()).unwrap();
        assert!(!text.contains("source_system") && !text.contains("processing_time_ms"));
    }

    fn decode_err(v: &Value) -> DecodeError {
        Transaction::from_json(v.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn each_missing_field_is_named() {
        let optional = ["source_system", "transaction_type", "processing_time_ms"];
        for field in sample_value().as_object().unwrap().keys() {
            if optional.contains(&field.as_str()) {
                continue;
            }
            let mut v = sample_value();
            v.as_object_mut().unwrap().remove(field);
            let err = decode_err(&v);
            assert_eq!(err.field(), Some(field.as_str()), "{err}");
            assert!(err.to_string().contains("missing"), "{err}");
        }
    }

    #[test]
    fn each_mistyped_field_is_named() {
        let cases: [(&str, Value); 12] = [
            ("tx_id", json!(17)),
            ("tx_id", json!("not-a-uuid")),
            ("user_id", json!(null)),
            ("amount", json!("123.45")),
            ("amount", json!(true)),
            ("currency", json!("usd")),
            ("currency", json!("EURO")),
            ("merchant", json!(["Amazon"])),
            ("category", json!(5)),
            ("timestamp", json!("yesterday")),
            ("processing_time_ms", json!(-3)),
            ("processing_time_ms", json!(1.5)),
        ];
        for (field, bad) in cases {
            let mut v = sample_value();
            v[field] = bad.clone();
            let err = decode_err(&v);
            assert_eq!(err.field(), Some(field), "{field}={bad}: {err}");
            assert!(!err.to_string().contains(" at line "), "{err}");
        }
    }

    #[test]
    fn values_the_table_cannot_hold_are_rejected_by_field() {
        let cases: [(&str, Value); 7] = [
            ("amount", serde_json::from_str("100000000.00").unwrap()),
            ("amount", serde_json::from_str("1.005").unwrap()),
            ("merchant", json!("x".repeat(256))),
            ("category", json!("y".repeat(101))),
            ("merchant", json!("  ")),
            ("source_system", json!("s".repeat(51))),
            ("processing_time_ms", json!(3_000_000_000u64)),
        ];
        for (field, bad) in cases {
            let mut v = sample_value();
            v[field] = bad.clone();
            assert_eq!(decode_err(&v).field(), Some(field), "{field}={bad}");
        }
        // the largest value the column holds is fine
        let mut v = sample_value();
        v["amount"] = serde_json::from_str("-99999999.99").unwrap();
        assert!(Transaction::from_json(v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn broken_payloads_are_syntax_or_utf8_errors() {
        assert!(matches!(
            Transaction::from_json(b""),
            Err(DecodeError::Syntax(_))
        ));
        assert!(matches!(
            Transaction::from_json(b"not json"),
            Err(DecodeError::Syntax(_))
        ));
        let full = sample().to_json();
        assert!(matches!(
            Transaction::from_json(&full[..full.len() / 2]),
            Err(DecodeError::Syntax(_))
        ));
        assert!(matches!(
            Transaction::from_json(b"\xff\xfe{}"),
            Err(DecodeError::NotUtf8(_))
        ));
        let mut trailing = full.clone();
        trailing.extend_from_slice(b" {}");
        assert!(matches!(
            Transaction::from_json(&trailing),
            Err(DecodeError::Syntax(_))
        ));
        assert_eq!(
            Transaction::from_json(b"42").unwrap_err().field(),
            Some(".")
        );
        assert!(matches!(
            Transaction::from_json(b"[1,2]"),
            Err(DecodeError::Field { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = sample_value();
        v["loyalty_points"] = json!(12);
        assert_eq!(
            Transaction::from_json(v.to_string().as_bytes()).unwrap(),
            sample()
        );
    }
}
