//! The simulated clock of a backfill: when each historical transaction happens.
//!
//! A backfill covers whole days, `from` 00:00 UTC to the end of `to`. Each hour of the range
//! gets an expected number of transactions: the mean rate times the hour's weight
//! ([`crate::Generator::hourly_weight`]), over the users' local times the product of
//! - the hour of day ([`HOUR_OF_DAY`], local: quiet at night, a lunch peak, the evening
//!   peak),
//! - the day of week ([`DAY_OF_WEEK`]: Friday and Saturday busiest, Sunday quietest),
//! - the share of the users' activity registered by that day (a user base that grows
//!   month by month makes more transactions month by month; none before the first
//!   registration).
//!
//! Both tables average 1, so a week of fully registered users gets the mean rate. The
//! times are drawn in order, within an hour uniformly:
//! - without a count, as a Poisson process of that intensity (the number of transactions
//!   is itself random, about the expected total);
//! - with a count `n`, as the sorted times of `n` independent draws from the intensity,
//!   made one after the other in order (each next uniform order statistic from the last:
//!   no sort, no memory).
//!
//! A seed makes the times repeat (their own random stream, apart from the generator's).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::Exp1;

/// Relative intensity of each hour of the day (a user's local time), 00:00 first; scaled to
/// average 1.
pub const HOUR_OF_DAY: [f64; 24] = [
    0.25, 0.15, 0.10, 0.08, 0.08, 0.15, 0.35, 0.65, 0.95, 1.15, 1.30, 1.45, 1.65, 1.55, 1.35, 1.30,
    1.40, 1.55, 1.70, 1.60, 1.35, 1.05, 0.70, 0.45,
];

/// Relative intensity of each day of the week, Monday first; scaled to average 1.
pub const DAY_OF_WEEK: [f64; 7] = [0.92, 0.95, 0.97, 1.00, 1.12, 1.18, 0.86];

/// The longest range a backfill takes (about 100 years of hours).
const MAX_DAYS: i64 = 36_600;

/// The most transactions a backfill makes (far beyond a run's time, well within the
/// precision of its arithmetic).
const MAX_TRANSACTIONS: f64 = 1e12;

/// Why a backfill cannot be scheduled.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BackfillError {
    /// `to` before `from`.
    #[error("backfill range ends ({to}) before it starts ({from}): give --from <= --to")]
    Range {
        /// First day.
        from: NaiveDate,
        /// Last day.
        to: NaiveDate,
    },
    /// An absurdly long range.
    #[error("backfill range {from} to {to} is longer than {MAX_DAYS} days: split it")]
    TooLong {
        /// First day.
        from: NaiveDate,
        /// Last day.
        to: NaiveDate,
    },
    /// More transactions than a backfill makes.
    #[error(
        "a backfill of {expected:.0} transactions is more than {MAX_TRANSACTIONS:.0}: lower --count or the rate, or shorten the range"
    )]
    TooMany {
        /// The count, or the expected number at the rate.
        expected: f64,
    },
    /// Neither a rate nor a count: the number of transactions is unknown.
    #[error(
        "a backfill needs --count N (N transactions over the range) or a rate (--rate R or --interval S: the mean rate of the simulated clock), not --rate 0"
    )]
    NoRate,
    /// No user registered by the end of the range.
    #[error(
        "no user has registered by {to}, the backfill's last day: choose a later range or users registered earlier"
    )]
    NobodyRegistered {
        /// Last day.
        to: NaiveDate,
    },
}

/// Parses a day written `YYYY-MM-DD`.
///
/// # Errors
/// A message naming the expected form.
pub fn parse_day(s: &str) -> Result<NaiveDate, String> {
    let form = crate::digits_and_dashes(s, 10, &[4, 7]);
    form.then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| format!("{s:?} is not a day: write it YYYY-MM-DD, e.g. 2025-01-31"))
}

/// The hour-of-day and day-of-week weight of the hour starting at `t`, read as local time
/// (of users whose clocks show `t`).
pub fn intensity(t: DateTime<Utc>) -> f64 {
    let h = HOUR_OF_DAY[t.hour() as usize] / mean(&HOUR_OF_DAY);
    let d = DAY_OF_WEEK[t.weekday().num_days_from_monday() as usize] / mean(&DAY_OF_WEEK);
    h * d
}

fn mean(w: &[f64]) -> f64 {
    w.iter().sum::<f64>() / w.len() as f64
}

/// How the number of transactions is set.
#[derive(Debug, Clone, Copy)]
enum Draw {
    /// A Poisson process: the cumulative intensity of the last arrival.
    Poisson { at: f64 },
    /// `left` more of `n` sorted draws; `log_rest` is ln(1 - u) of the last one's quantile
    /// `u` (kept as a logarithm: precise however many draws are left).
    Count { left: u64, log_rest: f64 },
}

/// The arrival times of a backfill, in order (see the module docs).
#[derive(Debug)]
pub struct Schedule {
    start: DateTime<Utc>,
    /// Expected arrivals by the end of each hour of the range.
    cumulative: Vec<f64>,
    /// The hour the last arrival fell in.
    hour: usize,
    draw: Draw,
    rng: StdRng,
}

impl Schedule {
    /// The schedule of `from`..=`to` at `per_second` on average (`None`: `count` is given),
    /// with `weight(t)` the weight of the hour starting at `t` (1 on average for a fully
    /// registered week; 0 before anyone registered).
    ///
    /// # Errors
    /// [`BackfillError`] for a reversed or too long range, no rate and no count, or no user
    /// registered within the range.
    pub fn new(
        (from, to): (NaiveDate, NaiveDate),
        per_second: Option<f64>,
        count: Option<u64>,
        weight: impl Fn(DateTime<Utc>) -> f64,
        seed: Option<u64>,
    ) -> Result<Schedule, BackfillError> {
        if to < from {
            return Err(BackfillError::Range { from, to });
        }
        let days = (to - from).num_days() + 1;
        if days > MAX_DAYS {
            return Err(BackfillError::TooLong { from, to });
        }
        let per_hour = match (count, per_second) {
            (Some(_), _) => 1.0,
            (None, Some(r)) if r > 0.0 && r.is_finite() => r * 3600.0,
            (None, _) => return Err(BackfillError::NoRate),
        };
        let start = from.and_time(chrono::NaiveTime::MIN).and_utc();
        let mut cumulative = Vec::with_capacity(days as usize * 24);
        let mut total = 0.0;
        for h in 0..days * 24 {
            let w = weight(start + Duration::hours(h));
            total += per_hour * if w.is_finite() { w.max(0.0) } else { 0.0 };
            cumulative.push(total);
        }
        if total <= 0.0 {
            return Err(BackfillError::NobodyRegistered { to });
        }
        let expected = count.map_or(total, |n| n as f64);
        if expected > MAX_TRANSACTIONS {
            return Err(BackfillError::TooMany { expected });
        }
        let draw = match count {
            Some(n) => Draw::Count {
                left: n,
                log_rest: 0.0,
            },
            None => Draw::Poisson { at: 0.0 },
        };
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s ^ SCHEDULE_STREAM),
            None => rand::make_rng(),
        };
        Ok(Schedule {
            start,
            cumulative,
            hour: 0,
            draw,
            rng,
        })
    }

    /// The end of the range: midnight after its last day.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + Duration::hours(self.cumulative.len() as i64)
    }

    /// The expected number of arrivals (the count, when given).
    pub fn expected(&self) -> f64 {
        match self.draw {
            Draw::Count { left, .. } => left as f64,
            Draw::Poisson { .. } => self.total(),
        }
    }

    fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// Where a cumulative intensity falls in time (`x` below the total).
    fn time_of(&mut self, x: f64) -> DateTime<Utc> {
        while self.hour + 1 < self.cumulative.len() && self.cumulative[self.hour] <= x {
            self.hour += 1;
        }
        let before = if self.hour == 0 {
            0.0
        } else {
            self.cumulative[self.hour - 1]
        };
        let span = self.cumulative[self.hour] - before;
        let within = if span > 0.0 {
            ((x - before) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // milliseconds, like the messages' timestamps; never into the next hour
        let millis = ((within * 3_600_000.0) as i64).min(3_599_999);
        self.start + Duration::hours(self.hour as i64) + Duration::milliseconds(millis)
    }
}

impl Iterator for Schedule {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        let total = self.total();
        let x = match &mut self.draw {
            Draw::Poisson { at } => {
                let gap: f64 = Exp1.sample(&mut self.rng);
                *at += gap;
                if *at >= total {
                    return None;
                }
                *at
            }
            Draw::Count { left, log_rest } => {
                if *left == 0 {
                    return None;
                }
                // the least of `left` uniforms above `u`: 1 - (1 - u) * V^(1/left)
                let v: f64 = 1.0 - self.rng.random::<f64>();
                *log_rest += v.ln() / *left as f64;
                *left -= 1;
                let u = -log_rest.exp_m1();
                (u * total).min(total * (1.0 - f64::EPSILON))
            }
        };
        Some(self.time_of(x))
    }
}

/// A backfill's messages in the order they are sent: the ordinary transactions at the
/// schedule's times, each episode's messages at theirs, late ones and duplicates after
/// their delay (see [`crate::anomaly`]). Without anomalies, in timestamp order.
#[derive(Debug)]
pub struct Backfill {
    /// Episodes started near the end are cut at it.
    end: DateTime<Utc>,
    schedule: std::iter::Peekable<Schedule>,
    generator: crate::Generator,
    injector: crate::anomaly::Injector,
}

impl Backfill {
    /// The messages of `schedule`'s times, made by `generator`, through `injector`.
    pub fn new(
        schedule: Schedule,
        generator: crate::Generator,
        injector: crate::anomaly::Injector,
    ) -> Backfill {
        Backfill {
            end: schedule.end(),
            schedule: schedule.peekable(),
            // its users by their local hours, as the clock's volume follows them
            generator: generator.with_local_time(true),
            injector,
        }
    }

    /// Users the generator draws from.
    pub fn users(&self) -> usize {
        self.generator.users()
    }
}

impl Iterator for Backfill {
    type Item = crate::anomaly::Outgoing;

    fn next(&mut self) -> Option<crate::anomaly::Outgoing> {
        loop {
            let ordinary = self.schedule.peek().copied();
            let held_first = match (ordinary, self.injector.next_due()) {
                (None, None) => return None,
                (Some(at), Some(due)) => due <= at,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if held_first {
                let out = self.injector.pop()?;
                // an episode's messages stay within the range (late ones are sent after
                // it, but happened within it)
                if out.tx.timestamp < self.end {
                    return Some(out);
                }
            } else if let Some(at) = self.schedule.next()
                && let Some(out) = self.injector.admit(self.generator.next_at(at))
            {
                return Some(out);
            }
        }
    }
}

/// Mixed into the seed for the arrival times, so they are not the generator's draws.
const SCHEDULE_STREAM: u64 = 0x6261_636b_6669_6c6c;

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        parse_day(s).unwrap()
    }

    /// `n` users, the `i`th of `attributes(i)`'s country and registration day.
    fn users_of(
        n: usize,
        attributes: impl Fn(usize) -> (&'static str, Option<NaiveDate>),
    ) -> crate::Users {
        crate::Users {
            ids: (0..n)
                .map(|i| uuid::Uuid::from_u128(0x9000 + i as u128))
                .collect(),
            attributes: (0..n)
                .map(|i| {
                    let (country, registered) = attributes(i);
                    crate::UserAttributes {
                        country: Some(country.into()),
                        registered,
                    }
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn days_are_parsed_strictly() {
        assert_eq!(
            day("2025-02-28"),
            NaiveDate::from_ymd_opt(2025, 2, 28).unwrap()
        );
        for bad in [
            "2025-2-28",
            "2025-02-30",
            "25-02-28",
            "2025/02/28",
            "2025-02-28T00",
        ] {
            assert!(parse_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_rates_and_registrations_are_checked() {
        let all = intensity;
        let r = Schedule::new(
            (day("2025-02-02"), day("2025-02-01")),
            Some(1.0),
            None,
            all,
            None,
        );
        assert!(matches!(r, Err(BackfillError::Range { .. })));
        let r = Schedule::new(
            (day("2025-02-01"), day("2025-02-02")),
            Some(0.0),
            None,
            all,
            None,
        );
        assert_eq!(r.unwrap_err(), BackfillError::NoRate);
        let r = Schedule::new(
            (day("1900-01-01"), day("2025-02-02")),
            None,
            Some(1),
            all,
            None,
        );
        assert!(matches!(r, Err(BackfillError::TooLong { .. })));
        let r = Schedule::new(
            (day("2025-02-01"), day("2025-02-02")),
            None,
            Some(2_000_000_000_000),
            all,
            None,
        );
        assert!(matches!(r, Err(BackfillError::TooMany { .. })));
        let r = Schedule::new(
            (day("2025-02-01"), day("2125-01-01")),
            Some(1e6),
            None,
            all,
            None,
        );
        assert!(matches!(r, Err(BackfillError::TooMany { .. })));
        // a huge count still advances the clock (its quantiles kept as logarithms)
        let mut huge = Schedule::new(
            (day("2025-02-01"), day("2025-02-28")),
            None,
            Some(100_000_000_000),
            all,
            Some(1),
        )
        .unwrap();
        let start = day("2025-02-01").and_hms_opt(0, 0, 0).unwrap().and_utc();
        let t = huge.nth(99_999).unwrap();
        assert!(t > start + Duration::seconds(1), "{t}");
        let none = |_: DateTime<Utc>| 0.0;
        let r = Schedule::new(
            (day("2025-02-01"), day("2025-02-02")),
            None,
            Some(5),
            none,
            None,
        );
        assert!(matches!(r, Err(BackfillError::NobodyRegistered { .. })));
    }

    /// The counts per hour of day and per weekday follow the tables (chi-square), the times
    /// are in order and within the range, and the same seed gives the same times.
    #[test]
    fn times_follow_hour_of_day_and_weekday_in_order() {
        let range = (day("2025-03-03"), day("2025-03-30")); // four whole weeks
        let times: Vec<_> = Schedule::new(range, None, Some(200_000), intensity, Some(9))
            .unwrap()
            .collect();
        assert_eq!(times.len(), 200_000);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order");
        assert!(times[0] >= range.0.and_hms_opt(0, 0, 0).unwrap().and_utc());
        assert!(times[times.len() - 1] < day("2025-03-31").and_hms_opt(0, 0, 0).unwrap().and_utc());
        let mut hours = [0u32; 24];
        let mut weekdays = [0u32; 7];
        for t in &times {
            hours[t.hour() as usize] += 1;
            weekdays[t.weekday().num_days_from_monday() as usize] += 1;
        }
        let expect =
            |w: &[f64]| -> Vec<f64> { w.iter().map(|x| x / w.iter().sum::<f64>()).collect() };
        let chi = |seen: &[u32], shares: &[f64]| -> f64 {
            seen.iter()
                .zip(shares)
                .map(|(&o, p)| {
                    let e = p * times.len() as f64;
                    (f64::from(o) - e).powi(2) / e
                })
                .sum()
        };
        // 23 and 6 degrees of freedom at p = 0.001: 49.73 and 22.46
        assert!(chi(&hours, &expect(&HOUR_OF_DAY)) < 49.73, "{hours:?}");
        assert!(
            chi(&weekdays, &expect(&DAY_OF_WEEK)) < 22.46,
            "{weekdays:?}"
        );
        // and clearly not flat: the 18:00 hour holds far more than the 03:00 one
        assert!(hours[18] > 10 * hours[3]);
        let again: Vec<_> = Schedule::new(range, None, Some(200_000), intensity, Some(9))
            .unwrap()
            .collect();
        assert_eq!(times, again);
        let other: Vec<_> = Schedule::new(range, None, Some(1_000), intensity, Some(10))
            .unwrap()
            .collect();
        assert_ne!(times[..1000], other[..]);
    }

    /// Without a count, a week at one per 10 s on average gives about 60,480 (Poisson: sd
    /// 246), and none falls on days before anyone registered; the volume follows the
    /// registered share.
    #[test]
    fn a_rate_gives_its_expected_number_and_follows_registrations() {
        let range = (day("2025-03-03"), day("2025-03-16"));
        // nobody in the first week, everybody in the second
        let second_week = |t: DateTime<Utc>| {
            if t.date_naive() >= day("2025-03-10") {
                intensity(t)
            } else {
                0.0
            }
        };
        let s = Schedule::new(range, Some(0.1), None, second_week, Some(3)).unwrap();
        assert!((s.expected() - 60_480.0).abs() < 1e-6, "{}", s.expected());
        let times: Vec<_> = s.collect();
        let n = times.len() as f64;
        assert!((n - 60_480.0).abs() < 4.0 * 246.0, "{n}");
        assert!(times.iter().all(|t| t.date_naive() >= day("2025-03-10")));
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // half registered: half the volume
        let half = Schedule::new(range, Some(0.1), None, |t| 0.5 * intensity(t), Some(3)).unwrap();
        assert!((half.expected() - 60_480.0).abs() < 1e-6);
    }

    /// A backfill over users who register through the range: no transaction before its
    /// user's registration day, none at all before the first one, the volume growing
    /// with the registered activity, and the whole stream, timestamps included, the same
    /// for the same seed.
    #[test]
    fn backfill_follows_registrations_and_repeats_with_its_seed() {
        let days = ["2025-01-10", "2025-02-01", "2025-03-01"];
        let users = users_of(300, |i| ("DE", Some(day(days[i % 3]))));
        let registered: std::collections::HashMap<_, _> = users
            .ids
            .iter()
            .zip(&users.attributes)
            .map(|(id, a)| (*id, a.registered.unwrap()))
            .collect();
        let range = (day("2025-01-01"), day("2025-03-31"));
        let run = |seed| -> Vec<crate::Transaction> {
            let g = crate::Generator::for_users_on(&users, Some(seed), range.1).unwrap();
            let s = Schedule::new(range, Some(0.01), None, g.hourly_weight(), Some(seed)).unwrap();
            let i = crate::anomaly::Injector::new(Default::default(), crate::TxIds::V7, Some(seed));
            Backfill::new(s, g, i).map(|o| o.tx).collect()
        };
        let txs = run(4);
        assert!(txs.len() > 40_000, "{}", txs.len());
        assert!(txs.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        for t in &txs {
            assert!(registered[&t.user_id] <= t.timestamp.date_naive(), "{t:?}");
        }
        assert!(txs[0].timestamp.date_naive() >= day("2025-01-10"));
        // about a third of the activity in late January, all of it in March
        let per_day = |from: &str, to: &str| {
            let (from, to) = (day(from), day(to));
            let k = txs
                .iter()
                .filter(|t| (from..=to).contains(&t.timestamp.date_naive()))
                .count();
            k as f64 / ((to - from).num_days() + 1) as f64
        };
        let (january, march) = (
            per_day("2025-01-13", "2025-01-26"),
            per_day("2025-03-03", "2025-03-30"),
        );
        assert!(
            (0.15..0.6).contains(&(january / march)),
            "{january} vs {march} a day"
        );
        assert_eq!(txs, run(4), "the same seed, the same stream");
        assert_ne!(txs[..100], run(5)[..100]);
        // a range that ends before anyone registers
        let g = crate::Generator::for_users_on(&users, Some(1), day("2025-03-31")).unwrap();
        let early = Schedule::new(
            (day("2024-12-01"), day("2025-01-09")),
            Some(1.0),
            None,
            g.hourly_weight(),
            None,
        );
        assert!(matches!(early, Err(BackfillError::NobodyRegistered { .. })));
    }

    /// Users transact by their own clocks: in a backfill over Japanese and American users,
    /// each country's transactions follow the hour-of-day table in its local time
    /// (chi-square), so their UTC peaks lie apart; the weight averages 1 over a week.
    #[test]
    fn users_transact_by_their_local_hours() {
        let countries = ["JP", "US"];
        let users = users_of(400, |i| (countries[i % 2], None));
        let g = crate::Generator::for_users(&users, Some(12)).unwrap();
        let weight = g.hourly_weight();
        let week = day("2025-03-03").and_hms_opt(0, 0, 0).unwrap().and_utc();
        let mean = (0..168)
            .map(|h| weight(week + Duration::hours(h)))
            .sum::<f64>()
            / 168.0;
        assert!((mean - 1.0).abs() < 1e-9, "{mean}");
        let range = (day("2025-03-03"), day("2025-03-30"));
        let s = Schedule::new(range, None, Some(100_000), g.hourly_weight(), Some(12)).unwrap();
        let i = crate::anomaly::Injector::new(Default::default(), crate::TxIds::V4, Some(12));
        let japanese: std::collections::HashSet<_> = users.ids.iter().step_by(2).copied().collect();
        let (mut local, mut utc) = ([[0u32; 24]; 2], [[0u32; 24]; 2]);
        for o in Backfill::new(s, g, i) {
            let k = usize::from(!japanese.contains(&o.tx.user_id));
            let offset = [9, -6][k];
            let at = o.tx.timestamp;
            local[k][(at + Duration::hours(offset)).hour() as usize] += 1;
            utc[k][at.hour() as usize] += 1;
        }
        let shares: Vec<f64> = HOUR_OF_DAY
            .iter()
            .map(|w| w / HOUR_OF_DAY.iter().sum::<f64>())
            .collect();
        for (k, name) in ["JP", "US"].iter().enumerate() {
            let total = f64::from(local[k].iter().sum::<u32>());
            let chi: f64 = local[k]
                .iter()
                .zip(&shares)
                .map(|(&o, p)| (f64::from(o) - p * total).powi(2) / (p * total))
                .sum();
            // 23 degrees of freedom at p = 0.001: 49.73
            assert!(chi < 49.73, "{name}: chi-square {chi:.1}, {:?}", local[k]);
            assert!(total > 30_000.0, "{name}: {total}");
        }
        // 18:00 local is 09:00 UTC in Tokyo, 00:00 UTC in Chicago
        let peak = |h: &[u32; 24]| (0..24).max_by_key(|i| h[*i]).unwrap();
        assert!((8..=10).contains(&peak(&utc[0])), "{:?}", utc[0]);
        assert!([23, 0, 1].contains(&peak(&utc[1])), "{:?}", utc[1]);
    }

    /// Offsets and registrations together: Japanese users registering in February never
    /// transact in January (their group is passed over while empty), Americans who
    /// registered in January do; once both have, both transact.
    #[test]
    fn each_offsets_users_wait_for_their_registration() {
        let (jan, feb) = (day("2025-01-01"), day("2025-02-01"));
        let users = users_of(200, |i| {
            if i % 2 == 0 {
                ("JP", Some(feb))
            } else {
                ("US", Some(jan))
            }
        });
        let japanese: std::collections::HashSet<_> = users.ids.iter().step_by(2).copied().collect();
        let g = crate::Generator::for_users_on(&users, Some(3), day("2025-02-28")).unwrap();
        let s = Schedule::new(
            (jan, day("2025-02-28")),
            None,
            Some(20_000),
            g.hourly_weight(),
            Some(3),
        )
        .unwrap();
        let i = crate::anomaly::Injector::new(Default::default(), crate::TxIds::V4, Some(3));
        let (mut early, mut late) = ([0u32; 2], [0u32; 2]);
        for o in Backfill::new(s, g, i) {
            let k = usize::from(japanese.contains(&o.tx.user_id));
            if o.tx.timestamp.date_naive() < feb {
                early[k] += 1;
            } else {
                late[k] += 1;
            }
        }
        assert_eq!(early[1], 0, "a Japanese user before registering: {early:?}");
        assert!(
            early[0] > 1_000 && late[0] > 1_000 && late[1] > 1_000,
            "{early:?} {late:?}"
        );
    }

    /// Live (no local time), users are drawn by activity whatever the hour: the Japanese
    /// share is the same at 09:00 UTC (their evening) as at 00:00 (Americans' evening).
    #[test]
    fn live_draws_ignore_the_hour() {
        let users = users_of(200, |i| (["JP", "US"][i % 2], None));
        let japanese: std::collections::HashSet<_> = users.ids.iter().step_by(2).copied().collect();
        let mut g = crate::Generator::for_users(&users, Some(8)).unwrap();
        let activity = |jp: bool| -> f64 {
            g.profiles()
                .iter()
                .zip(&users.ids)
                .filter(|(_, id)| japanese.contains(id) == jp)
                .map(|(p, _)| p.activity)
                .sum()
        };
        let p = activity(true) / (activity(true) + activity(false));
        let n = 20_000.0;
        for hour in [9, 0] {
            let at = day("2025-03-05").and_hms_opt(hour, 0, 0).unwrap().and_utc();
            let jp = (0..20_000)
                .filter(|_| japanese.contains(&g.next_at(at).user_id))
                .count() as f64;
            let sd = (n * p * (1.0 - p)).sqrt();
            assert!(
                (jp - n * p).abs() < 4.0 * sd,
                "{hour}:00 UTC: {jp} Japanese of {n}, expected {}",
                n * p
            );
        }
    }
}
