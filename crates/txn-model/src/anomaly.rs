//! Labelled anomalies, for testing what runs downstream (fraud rules, deduplication, late
//! data handling). Off unless a rate is set; each kind has its own rate: the chance that a
//! normal transaction starts an episode of it.
//!
//! - [`Kind::CardTesting`]: a burst of 3 to 10 tiny payments (0.50 to 3.00 USD in the user's
//!   currency) at online shops, 2 to 20 s apart, by the same user.
//! - [`Kind::AccountTakeover`]: 1 to 3 large payments (about ten times the category's median)
//!   for electronics, travel or online shopping in a currency the user did not just pay in
//!   (a new country), 1 to 10 minutes apart.
//! - [`Kind::Velocity`]: 6 to 15 ordinary payments at different merchants, 5 to 60 s apart.
//! - [`Kind::Late`]: the transaction itself is sent late, 1 minute to 24 hours after its
//!   timestamp (log-normal, median 10 minutes): out of order among the others.
//! - [`Kind::Duplicate`]: the transaction is sent a second time, byte for byte the same
//!   (same `tx_id`), up to 30 s later, as a producer retry or a replay would.
//!
//! Every message of an episode carries its [`Label`]: the kind and an episode id shared by
//! the episode's messages (the producer sends them as Kafka headers; the JSON stays the
//! seed's). The episodes' messages are held until their time comes: [`Injector::next_due`]
//! says when the next is due, so they interleave with the ordinary ones in time order.
//!
//! With a seed the anomalies repeat (their own random stream, apart from the generator's:
//! turning anomalies on does not change the ordinary transactions).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use chrono::{DateTime, Duration, Utc};
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::LogNormal;
use uuid::Uuid;

use crate::generator::{CATEGORIES, CURRENCIES, TxIds, to_amount};
use crate::transaction::Transaction;

/// A kind of anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Bursts of tiny payments.
    CardTesting,
    /// Large payments from a new country.
    AccountTakeover,
    /// Many payments in minutes.
    Velocity,
    /// Sent long after its timestamp.
    Late,
    /// Sent twice.
    Duplicate,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] = [
        Kind::CardTesting,
        Kind::AccountTakeover,
        Kind::Velocity,
        Kind::Late,
        Kind::Duplicate,
    ];

    /// The label's text (the `anomaly` header's value).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CardTesting => "card_testing",
            Kind::AccountTakeover => "account_takeover",
            Kind::Velocity => "velocity",
            Kind::Late => "late",
            Kind::Duplicate => "duplicate",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        let wanted = s.trim().replace('-', "_");
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(&wanted))
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("{s:?} is not an anomaly: one of {}", names.join(", "))
            })
    }
}

/// Each kind's rate: the chance (0 to 1) that a normal transaction starts an episode.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates([f64; 5]);

impl Rates {
    /// The rate of `kind`.
    pub fn get(&self, kind: Kind) -> f64 {
        self.0[kind as usize]
    }

    /// Sets the rate of `kind` (clamped to 0..=1; NaN counts as 0).
    pub fn set(&mut self, kind: Kind, rate: f64) {
        self.0[kind as usize] = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
    }

    /// Whether any kind is on.
    pub fn any(&self) -> bool {
        self.0.iter().any(|r| *r > 0.0)
    }
}

/// What an anomalous message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// The kind.
    pub kind: Kind,
    /// Shared by the messages of one episode.
    pub episode: Uuid,
    /// For a late message or a duplicate, how long after its timestamp it is sent (a
    /// duplicate comes up to 30 s after the original; the others are sent at their
    /// timestamps).
    pub delay_ms: Option<i64>,
}

/// A transaction to send, labelled when it is part of an anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The message.
    pub tx: Transaction,
    /// `None` for an ordinary transaction.
    pub label: Option<Label>,
}

/// A message held until its time.
#[derive(Debug)]
struct Pending {
    /// When to send it, milliseconds since the epoch.
    due: i64,
    /// Ties keep the order of scheduling.
    seq: u64,
    out: Outgoing,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Pending) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Pending) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Turns ordinary transactions into a stream with anomalies (see the module docs).
#[derive(Debug)]
pub struct Injector {
    rates: Rates,
    rng: StdRng,
    tx_ids: TxIds,
    pending: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    lateness: LogNormal<f64>,
    large: LogNormal<f64>,
}

/// Median lateness of a late message, and its bounds.
const LATE_MEDIAN_MS: f64 = 600_000.0;
const LATE_RANGE_MS: (f64, f64) = (60_000.0, 86_400_000.0);

impl Injector {
    /// An injector at these rates, making `tx_id`s of this kind; seeded when `seed` is.
    pub fn new(rates: Rates, tx_ids: TxIds, seed: Option<u64>) -> Injector {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s ^ ANOMALY_STREAM),
            None => rand::make_rng(),
        };
        Injector {
            rates,
            rng,
            tx_ids,
            pending: BinaryHeap::new(),
            seq: 0,
            // Invariant: finite, positive parameters.
            lateness: LogNormal::new(LATE_MEDIAN_MS.ln(), 1.0).expect("lateness"),
            large: LogNormal::new(10f64.ln(), 0.4).expect("large amounts"),
        }
    }

    /// When the next held message is due, if any.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.pending
            .peek()
            .and_then(|Reverse(p)| DateTime::from_timestamp_millis(p.due))
    }

    /// The held message due first.
    pub fn pop(&mut self) -> Option<Outgoing> {
        self.pending.pop().map(|Reverse(p)| p.out)
    }

    /// Messages held.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// An ordinary transaction at its time: returned to be sent now, unless it is to be
    /// late (then it is held); episodes it starts are held for their times.
    pub fn admit(&mut self, tx: Transaction) -> Option<Outgoing> {
        if !self.rates.any() {
            return Some(Outgoing { tx, label: None });
        }
        let at = tx.timestamp.timestamp_millis();
        for kind in [Kind::CardTesting, Kind::AccountTakeover, Kind::Velocity] {
            if self.starts(kind) {
                self.episode(kind, &tx);
            }
        }
        // late first: a duplicate follows the original when it is sent
        let late = self.starts(Kind::Late).then(|| {
            self.lateness
                .sample(&mut self.rng)
                .clamp(LATE_RANGE_MS.0, LATE_RANGE_MS.1) as i64
        });
        let sent = at + late.unwrap_or(0);
        let duplicate = self.starts(Kind::Duplicate).then(|| {
            let delay = self.rng.random_range(0..=30_000);
            (
                delay,
                self.label(Kind::Duplicate, Some(late.unwrap_or(0) + delay)),
            )
        });
        let late = late.map(|late| self.label(Kind::Late, Some(late)));
        match (late, duplicate) {
            (Some(late), Some((delay, label))) => {
                // the late original is held first: on a tie it goes first
                self.hold(sent, tx.clone(), late);
                self.hold(sent + delay, tx, label);
                None
            }
            (Some(late), None) => {
                self.hold(sent, tx, late);
                None
            }
            (None, Some((delay, label))) => {
                self.hold(sent + delay, tx.clone(), label);
                Some(Outgoing { tx, label: None })
            }
            (None, None) => Some(Outgoing { tx, label: None }),
        }
    }

    fn starts(&mut self, kind: Kind) -> bool {
        let rate = self.rates.get(kind);
        rate > 0.0 && self.rng.random::<f64>() < rate
    }

    fn label(&mut self, kind: Kind, delay_ms: Option<i64>) -> Label {
        Label {
            kind,
            episode: Uuid::from_bytes(self.rng.random::<[u8; 16]>()),
            delay_ms,
        }
    }

    fn hold(&mut self, due: i64, tx: Transaction, label: Label) {
        self.seq += 1;
        self.pending.push(Reverse(Pending {
            due,
            seq: self.seq,
            out: Outgoing {
                tx,
                label: Some(label),
            },
        }));
    }

    /// Schedules the messages of one episode after `tx`.
    fn episode(&mut self, kind: Kind, tx: &Transaction) {
        let label = self.label(kind, None);
        let (count, gap_ms) = match kind {
            Kind::CardTesting => (3..=10, 2_000..=20_000),
            Kind::AccountTakeover => (1..=3, 60_000..=600_000),
            _ => (6..=15, 5_000..=60_000),
        };
        let n = self.rng.random_range(count);
        // the currency paid in: the user's, or for a takeover another one
        let mut currency = CURRENCIES
            .iter()
            .position(|c| c.code == tx.currency)
            .unwrap_or(0);
        if kind == Kind::AccountTakeover {
            let other = self.rng.random_range(0..CURRENCIES.len() - 1);
            currency = if other >= currency { other + 1 } else { other };
        }
        let mix = &CURRENCIES[currency];
        let mut at = tx.timestamp;
        for _ in 0..n {
            at += Duration::milliseconds(self.rng.random_range(gap_ms.clone()));
            let (category, usd) = match kind {
                Kind::CardTesting => (category("online_shopping"), self.rng.random_range(0.5..3.0)),
                Kind::AccountTakeover => {
                    let c = category(
                        ["electronics", "travel", "online_shopping"][self.rng.random_range(0..3)],
                    );
                    (c, c.median_usd * self.large.sample(&mut self.rng))
                }
                _ => {
                    let c = &CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
                    // Invariant: constant, finite parameters.
                    let amount = LogNormal::new(c.median_usd.ln(), c.sigma).expect("amounts");
                    (c, amount.sample(&mut self.rng))
                }
            };
            let merchant = category.merchants[self.rng.random_range(0..category.merchants.len())];
            let millis = at.timestamp_millis();
            let out = Transaction {
                tx_id: self.tx_ids.make(&mut self.rng, millis),
                user_id: tx.user_id,
                amount: to_amount(usd * mix.per_usd, mix.minor_unit),
                currency: mix.code,
                merchant: merchant.to_owned(),
                category: category.name.to_owned(),
                timestamp: at,
                source_system: tx.source_system.clone(),
                transaction_type: tx.transaction_type.clone(),
                processing_time_ms: Some(self.rng.random_range(40..400)),
            };
            self.hold(millis, out, label);
        }
    }
}

fn category(name: &str) -> &'static crate::generator::Category {
    // Invariant: called with the names of the constant table.
    CATEGORIES
        .iter()
        .find(|c| c.name == name)
        .expect("a known category")
}

/// Mixed into the seed for the anomalies, so they are not the generator's draws.
const ANOMALY_STREAM: u64 = 0x616e_6f6d_616c_6965;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Generator;
    use crate::backfill::{Backfill, Schedule, parse_day};
    use std::collections::{HashMap, HashSet};

    const N: u64 = 100_000;

    fn rates(each: &[(Kind, f64)]) -> Rates {
        let mut r = Rates::default();
        for (k, v) in each {
            r.set(*k, *v);
        }
        r
    }

    fn stream(rates: Rates, seed: u64) -> Vec<Outgoing> {
        let users = (0..200).map(|i| Uuid::from_u128(0x5000 + i)).collect();
        let generator = Generator::new(users, Some(seed)).unwrap();
        let range = (
            parse_day("2025-03-03").unwrap(),
            parse_day("2025-03-30").unwrap(),
        );
        let schedule = Schedule::new(range, None, Some(N), |_| 1.0, Some(seed)).unwrap();
        Backfill::new(
            schedule,
            generator,
            Injector::new(rates, TxIds::V4, Some(seed)),
        )
        .collect()
    }

    fn usd(tx: &Transaction) -> f64 {
        let c = CURRENCIES.iter().find(|c| c.code == tx.currency).unwrap();
        f64::try_from(tx.amount).unwrap() / c.per_usd
    }

    /// Each kind's episodes come at its rate (within 4 sd of a binomial), each episode looks
    /// like its kind, and every message is sent at its time: timestamp plus the label's
    /// delay never goes back.
    #[test]
    fn episodes_come_at_their_rates_and_look_like_their_kind() {
        let r = rates(&[
            (Kind::CardTesting, 0.01),
            (Kind::AccountTakeover, 0.005),
            (Kind::Velocity, 0.01),
            (Kind::Late, 0.02),
            (Kind::Duplicate, 0.03),
        ]);
        let out = stream(r, 11);
        let mut episodes: HashMap<Uuid, Vec<&Outgoing>> = HashMap::new();
        for o in &out {
            if let Some(l) = o.label {
                episodes.entry(l.episode).or_default().push(o);
            }
        }
        for kind in Kind::ALL {
            let p = r.get(kind);
            let seen = episodes
                .values()
                .filter(|e| e[0].label.unwrap().kind == kind)
                .count() as f64;
            let (mean, sd) = (N as f64 * p, (N as f64 * p * (1.0 - p)).sqrt());
            assert!(
                (seen - mean).abs() < 4.0 * sd,
                "{kind:?}: {seen} episodes, expected {mean}"
            );
        }
        let ordinary = out.iter().filter(|o| o.label.is_none()).count() as f64;
        // every ordinary transaction is sent unlabelled unless late
        let late = N as f64 * 0.02;
        assert!(
            (ordinary - (N as f64 - late)).abs() < 4.0 * (late * 0.98).sqrt(),
            "{ordinary}"
        );

        // episodes started on the last day are cut at its end
        let end = parse_day("2025-03-31")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        assert!(out.iter().all(|o| o.tx.timestamp < end));
        let mut sent_at = i64::MIN;
        let mut seen_ids = HashSet::new();
        for o in &out {
            let delay = o.label.and_then(|l| l.delay_ms).unwrap_or(0);
            let at = o.tx.timestamp.timestamp_millis() + delay;
            assert!(at >= sent_at, "sent out of time order");
            sent_at = at;
            let first = seen_ids.insert(o.tx.tx_id);
            let kind = o.label.map(|l| l.kind);
            // a tx_id repeats exactly when the message is a duplicate
            assert_eq!(!first, kind == Some(Kind::Duplicate), "{o:?}");
        }
        for e in episodes.values() {
            let l = e[0].label.unwrap();
            let user = e[0].tx.user_id;
            assert!(
                e.iter()
                    .all(|o| o.tx.user_id == user && o.label.unwrap().kind == l.kind)
            );
            let span = e[e.len() - 1].tx.timestamp - e[0].tx.timestamp;
            match l.kind {
                Kind::CardTesting => {
                    assert!((3..=10).contains(&e.len()));
                    assert!(span <= Duration::seconds(9 * 20));
                    for o in e {
                        assert_eq!(o.tx.category, "online_shopping");
                        // 3 USD at most, rounded to the currency's unit (whole yen)
                        assert!(usd(&o.tx) <= 3.01, "{:?}", o.tx);
                    }
                }
                Kind::AccountTakeover => {
                    assert!((1..=3).contains(&e.len()));
                    for o in e {
                        assert!(
                            ["electronics", "travel", "online_shopping"]
                                .contains(&o.tx.category.as_str())
                        );
                    }
                }
                Kind::Velocity => {
                    assert!((6..=15).contains(&e.len()));
                    assert!(span <= Duration::seconds(14 * 60));
                }
                Kind::Late => {
                    assert_eq!(e.len(), 1);
                    let d = l.delay_ms.unwrap();
                    assert!((60_000..=86_400_000).contains(&d), "{d}");
                }
                Kind::Duplicate => {
                    assert_eq!(e.len(), 1);
                    assert!((0..=86_430_000).contains(&l.delay_ms.unwrap()));
                }
            }
        }
        // takeovers are large: their median is several times the categories' medians
        let mut ratios: Vec<f64> = out
            .iter()
            .filter(|o| o.label.is_some_and(|l| l.kind == Kind::AccountTakeover))
            .map(|o| usd(&o.tx) / category(&o.tx.category).median_usd)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        assert!(
            (7.0..14.0).contains(&median),
            "takeover amounts {median}x the median"
        );
        // late messages are really late: over 90 % of them are sent after a message
        // stamped later than they are
        let mut latest = i64::MIN;
        let mut out_of_order = 0;
        let mut lates = 0;
        for o in &out {
            let ts = o.tx.timestamp.timestamp_millis();
            if o.label.is_some_and(|l| l.kind == Kind::Late) {
                lates += 1;
                out_of_order += usize::from(latest > ts);
            }
            latest = latest.max(ts);
        }
        assert!(out_of_order * 10 > lates * 9, "{out_of_order} of {lates}");
    }

    /// Off by default: the stream is the generator's; on, the ordinary transactions are the
    /// same as without anomalies, and the same seed gives the same stream.
    #[test]
    fn anomalies_are_opt_in_leave_the_rest_alone_and_repeat() {
        let plain = stream(Rates::default(), 5);
        assert_eq!(plain.len() as u64, N);
        assert!(plain.iter().all(|o| o.label.is_none()));
        let r = rates(&[
            (Kind::Late, 0.05),
            (Kind::Velocity, 0.01),
            (Kind::Duplicate, 0.01),
        ]);
        let with = stream(r, 5);
        assert!(with.len() as u64 > N);
        let ordinary: HashSet<_> = with
            .iter()
            .filter(|o| o.label.is_none_or(|l| l.kind == Kind::Late))
            .map(|o| o.tx.clone())
            .map(|t| (t.tx_id, t.timestamp))
            .collect();
        let plain_set: HashSet<_> = plain.iter().map(|o| (o.tx.tx_id, o.tx.timestamp)).collect();
        assert_eq!(ordinary, plain_set);
        assert_eq!(with, stream(r, 5));
        assert_ne!(with, stream(r, 6));
    }

    #[test]
    fn kinds_parse_by_name() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        }
        assert_eq!("card-testing".parse::<Kind>(), Ok(Kind::CardTesting));
        let e = "fraud".parse::<Kind>().unwrap_err();
        assert!(e.contains("card_testing, account_takeover"), "{e}");
        let mut r = Rates::default();
        assert!(!r.any());
        r.set(Kind::Late, f64::NAN);
        r.set(Kind::Duplicate, 2.0);
        assert_eq!((r.get(Kind::Late), r.get(Kind::Duplicate)), (0.0, 1.0));
    }
}
