//! The fake-transaction generator: realistic rather than uniform.
//!
//! - A user is drawn by activity and, in a backfill ([`Generator::with_local_time`]), by
//!   the hour of its own day (its country's local time: users whose clocks show 03:00
//!   rarely transact), and each user has a profile
//!   ([`crate::profile`]): home currency and local time from the users file's `country`,
//!   spending level, category preferences.
//! - A category is drawn by the category's weight times the user's preference (groceries
//!   and restaurants are common, travel rare), then a merchant from that category's table
//!   of real merchant names, so a merchant always matches its category.
//! - Amounts are log-normal per category (many small payments, a long tail of large ones),
//!   times the user's spending level, drawn in US dollars, converted at a fixed rate and
//!   rounded to the currency's minor unit (cents; whole yen).
//! - A user with a country pays in its home currency but for a small share
//!   ([`DEFAULT_FOREIGN_SHARE`]) drawn from the mix; without one, currencies follow a
//!   weighted mix dominated by USD.
//! - `processing_time_ms` is log-normal around 120 ms, clamped to 15 ms to 5 s.
//!
//! # Reproducibility
//! With a seed, the generator draws from `StdRng::seed_from_u64(seed)`: the same seed and the
//! same user list (same ids, same order) give the same sequence of `tx_id`, `user_id`,
//! `amount`, `currency`, `merchant`, `category` and `processing_time_ms`, for this build
//! (the RNG algorithm is pinned by `Cargo.lock`); a UUIDv7 `tx_id` also holds the
//! timestamp, so it repeats only for the same timestamps. The other fields are the same
//! sequence whichever kind of id is made. `timestamp` is the time passed to
//! [`Generator::next_at`]: live, the time of generation (not reproduced); in a backfill,
//! the simulated clock's ([`crate::backfill`]), reproduced by its own seed.
//!
//! # Transaction ids
//! Random UUIDv4 by default, as the seed's generator makes them. [`TxIds::V7`] makes
//! time-ordered UUIDv7 ids instead (RFC 9562: the transaction's millisecond timestamp, then
//! random bits from the same RNG, so a seeded run still reproduces them for the same
//! timestamps): still UUIDs, but consecutive ids land next to each other in the primary
//! key's index instead of on a random page (`docs/SCALING.md` measures what that is worth).

use chrono::{DateTime, Utc};
use fake::Fake;
use fake::uuid::UUIDv4;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::LogNormal;
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

use crate::profile::Profile;
use crate::transaction::{Currency, MAX_AMOUNT, SOURCE_SYSTEM, TRANSACTION_TYPE, Transaction};

/// Share of a user's transactions paid in a currency other than the home one, by default.
pub const DEFAULT_FOREIGN_SHARE: f64 = 0.1;

/// One merchant category: its relative frequency, its merchants and its amount distribution.
#[derive(Debug)]
pub struct Category {
    /// The `category` value.
    pub name: &'static str,
    /// Relative frequency among all transactions.
    pub weight: u32,
    /// Real merchant names of this category.
    pub merchants: &'static [&'static str],
    /// Median amount in USD.
    pub median_usd: f64,
    /// Spread of the log-normal amount (sigma of ln(amount)).
    pub sigma: f64,
}

/// The categories, with their merchants and amount distributions.
pub const CATEGORIES: &[Category] = &[
    Category {
        name: "groceries",
        weight: 20,
        merchants: &[
            "Whole Foods Market",
            "Kroger",
            "Safeway",
            "Trader Joe's",
            "Aldi",
            "Costco",
            "Tesco",
            "Carrefour",
        ],
        median_usd: 45.0,
        sigma: 0.6,
    },
    Category {
        name: "restaurants",
        weight: 18,
        merchants: &[
            "McDonald's",
            "Starbucks",
            "Chipotle",
            "Subway",
            "Domino's",
            "Olive Garden",
            "Panera Bread",
        ],
        median_usd: 18.0,
        sigma: 0.7,
    },
    Category {
        name: "online_shopping",
        weight: 16,
        merchants: &[
            "Amazon",
            "eBay",
            "Etsy",
            "Walmart.com",
            "Zalando",
            "AliExpress",
            "Target.com",
        ],
        median_usd: 40.0,
        sigma: 0.9,
    },
    Category {
        name: "transportation",
        weight: 12,
        merchants: &["Uber", "Lyft", "Shell", "Chevron", "BP", "Amtrak"],
        median_usd: 25.0,
        sigma: 0.6,
    },
    Category {
        name: "entertainment",
        weight: 8,
        merchants: &[
            "Netflix",
            "Spotify",
            "AMC Theatres",
            "Steam",
            "Ticketmaster",
            "Disney+",
        ],
        median_usd: 15.0,
        sigma: 0.7,
    },
    Category {
        name: "utilities",
        weight: 6,
        merchants: &[
            "Comcast",
            "Verizon",
            "AT&T",
            "Con Edison",
            "Vodafone",
            "T-Mobile",
        ],
        median_usd: 85.0,
        sigma: 0.5,
    },
    Category {
        name: "health",
        weight: 6,
        merchants: &["CVS Pharmacy", "Walgreens", "Boots", "Rite Aid"],
        median_usd: 30.0,
        sigma: 0.8,
    },
    Category {
        name: "clothing",
        weight: 6,
        merchants: &["Zara", "H&M", "Nike", "Uniqlo", "Gap", "Adidas"],
        median_usd: 60.0,
        sigma: 0.7,
    },
    Category {
        name: "electronics",
        weight: 5,
        merchants: &["Best Buy", "Apple Store", "Samsung", "Newegg", "MediaMarkt"],
        median_usd: 180.0,
        sigma: 0.9,
    },
    Category {
        name: "travel",
        weight: 3,
        merchants: &[
            "Delta Air Lines",
            "United Airlines",
            "Booking.com",
            "Expedia",
            "Airbnb",
            "Marriott",
            "Lufthansa",
        ],
        median_usd: 350.0,
        sigma: 0.8,
    },
];

/// A currency of the mix: its weight, its rate per USD and its minor unit.
#[derive(Debug)]
pub struct CurrencyMix {
    /// The ISO 4217 code.
    pub code: Currency,
    /// Relative frequency.
    pub weight: u32,
    /// Units of this currency per US dollar (fixed, approximate).
    pub per_usd: f64,
    /// Decimal places of the minor unit (2 for cents, 0 for yen).
    pub minor_unit: u32,
}

/// The currency mix, dominated by USD.
pub const CURRENCIES: &[CurrencyMix] = &[
    CurrencyMix {
        code: Currency::new_static("USD"),
        weight: 70,
        per_usd: 1.0,
        minor_unit: 2,
    },
    CurrencyMix {
        code: Currency::new_static("EUR"),
        weight: 12,
        per_usd: 0.92,
        minor_unit: 2,
    },
    CurrencyMix {
        code: Currency::new_static("GBP"),
        weight: 8,
        per_usd: 0.79,
        minor_unit: 2,
    },
    CurrencyMix {
        code: Currency::new_static("CAD"),
        weight: 4,
        per_usd: 1.37,
        minor_unit: 2,
    },
    CurrencyMix {
        code: Currency::new_static("AUD"),
        weight: 3,
        per_usd: 1.52,
        minor_unit: 2,
    },
    CurrencyMix {
        code: Currency::new_static("JPY"),
        weight: 2,
        per_usd: 150.0,
        minor_unit: 0,
    },
    CurrencyMix {
        code: Currency::new_static("CHF"),
        weight: 1,
        per_usd: 0.88,
        minor_unit: 2,
    },
];

/// Median and spread of `processing_time_ms`.
const PROCESSING_MEDIAN_MS: f64 = 120.0;
const PROCESSING_SIGMA: f64 = 0.5;
const PROCESSING_RANGE_MS: (f64, f64) = (15.0, 5_000.0);

/// Generates transactions for a fixed set of users.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    tx_ids: TxIds,
    users: Vec<Uuid>,
    /// Each user's profile, in the order of `users`.
    profiles: Vec<Profile>,
    /// Draws a user by activity, among those registered by `pick_day`, by local hour.
    pick: Pick,
    /// Each user's registration day, in the order of `users` (empty: no user has one).
    registered: Vec<Option<chrono::NaiveDate>>,
    /// The day `pick` was made for (users who register later are left out until then).
    pick_day: Option<chrono::NaiveDate>,
    /// Share of a user with a home currency's transactions paid in another.
    foreign_share: f64,
    /// Whether users are drawn by the hour of their own day too (a backfill, whose clock
    /// follows the same hours), or by activity alone (live: a fixed rate).
    local_time: bool,
    /// The ids of `users`, once users are added while it runs.
    known: std::collections::HashSet<Uuid>,
    currency: WeightedIndex<u32>,
    /// For each home currency, the mix without it.
    abroad: Vec<WeightedIndex<u32>>,
    amounts: Vec<LogNormal<f64>>,
    processing: LogNormal<f64>,
}

/// Which kind of UUID the `tx_id`s are (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TxIds {
    /// Random (version 4), as the seed makes them.
    #[default]
    V4,
    /// Time-ordered (version 7): the timestamp's milliseconds, then random bits.
    V7,
}

impl TxIds {
    /// A new id of this kind for a transaction at `millis` since the epoch.
    pub fn make(self, rng: &mut StdRng, millis: i64) -> Uuid {
        match self {
            TxIds::V4 => UUIDv4.fake_with_rng(rng),
            TxIds::V7 => {
                // as many draws as a v4 id takes, so that the rest of the transaction is
                // the same sequence whichever kind of id a seeded run makes
                let random: [u8; 16] = rng.random();
                let mut counter_random = [0; 10];
                counter_random.copy_from_slice(&random[..10]);
                // before 1970 cannot be a UUIDv7 timestamp: clamped to its epoch
                uuid::Builder::from_unix_timestamp_millis(millis.max(0) as u64, &counter_random)
                    .into_uuid()
            }
        }
    }
}

/// Why a generator cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeneratorError {
    /// No user to attribute transactions to.
    #[error("the generator needs at least one user id")]
    NoUsers,
    /// Every user registers after the first day of transactions.
    #[error(
        "no user has registered by {today}: the first registers on {first} (registration_date); add users registered by then"
    )]
    NoneRegistered {
        /// The first day of transactions (today, UTC, when live).
        today: chrono::NaiveDate,
        /// The earliest registration.
        first: chrono::NaiveDate,
    },
}

impl Generator {
    /// A generator over `users`, seeded when `seed` is given (see the module docs for what
    /// that reproduces), else from the operating system's entropy.
    ///
    /// # Errors
    /// [`GeneratorError::NoUsers`] when `users` is empty.
    pub fn new(users: Vec<Uuid>, seed: Option<u64>) -> Result<Generator, GeneratorError> {
        let countries = vec![None; users.len()];
        Generator::build(users, &countries, Vec::new(), seed, Utc::now().date_naive())
    }

    /// A generator over the users of a users file, their profiles made from their
    /// attributes (see [`crate::profile`]).
    ///
    /// # Errors
    /// [`GeneratorError::NoUsers`] when there is none.
    pub fn for_users(users: &crate::Users, seed: Option<u64>) -> Result<Generator, GeneratorError> {
        Generator::for_users_on(users, seed, Utc::now().date_naive())
    }

    /// As [`Generator::for_users`], for transactions from `day` on (a backfill's first
    /// day with a registered user) instead of today.
    ///
    /// # Errors
    /// [`GeneratorError::NoUsers`] when there is none, [`GeneratorError::NoneRegistered`]
    /// when every user registers after `day`.
    pub fn for_users_on(
        users: &crate::Users,
        seed: Option<u64>,
        day: chrono::NaiveDate,
    ) -> Result<Generator, GeneratorError> {
        let countries: Vec<Option<&str>> = users
            .ids
            .iter()
            .enumerate()
            .map(|(i, _)| users.attributes.get(i).and_then(|a| a.country.as_deref()))
            .collect();
        let registered: Vec<Option<chrono::NaiveDate>> = (0..users.ids.len())
            .map(|i| users.attributes.get(i).and_then(|a| a.registered))
            .collect();
        let registered = if registered.iter().any(Option::is_some) {
            registered
        } else {
            Vec::new()
        };
        Generator::build(users.ids.clone(), &countries, registered, seed, day)
    }

    fn build(
        users: Vec<Uuid>,
        countries: &[Option<&str>],
        registered: Vec<Option<chrono::NaiveDate>>,
        seed: Option<u64>,
        today: chrono::NaiveDate,
    ) -> Result<Generator, GeneratorError> {
        if users.is_empty() {
            return Err(GeneratorError::NoUsers);
        }
        let profiles: Vec<Profile> = users
            .iter()
            .zip(countries)
            .map(|(id, country)| Profile::of(*id, *country))
            .collect();
        let (pick, pick_day) = if registered.is_empty() {
            // Invariant: log-normal activities are finite and positive.
            let all = Pick::new(&profiles, &registered, None).expect("activities");
            (all, None)
        } else {
            let pick = Pick::new(&profiles, &registered, Some(today)).ok_or_else(|| {
                GeneratorError::NoneRegistered {
                    today,
                    first: registered.iter().flatten().min().copied().unwrap_or(today),
                }
            })?;
            (pick, Some(today))
        };
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        // Invariant: the tables are non-empty constants with positive weights and
        // finite, positive parameters, so these constructors cannot fail.
        let currency =
            WeightedIndex::new(CURRENCIES.iter().map(|c| c.weight)).expect("currency weights");
        // the mix holds several currencies, so each of these keeps a positive weight
        let abroad = (0..CURRENCIES.len())
            .map(|home| {
                let weights = CURRENCIES
                    .iter()
                    .enumerate()
                    .map(|(i, c)| if i == home { 0 } else { c.weight });
                WeightedIndex::new(weights).expect("currency weights abroad")
            })
            .collect();
        let amounts = CATEGORIES
            .iter()
            .map(|c| LogNormal::new(c.median_usd.ln(), c.sigma).expect("amount distribution"))
            .collect();
        let processing = LogNormal::new(PROCESSING_MEDIAN_MS.ln(), PROCESSING_SIGMA)
            .expect("processing distribution");
        Ok(Generator {
            rng,
            tx_ids: TxIds::V4,
            users,
            profiles,
            pick,
            registered,
            pick_day,
            foreign_share: DEFAULT_FOREIGN_SHARE,
            local_time: false,
            known: std::collections::HashSet::new(),
            currency,
            abroad,
            amounts,
            processing,
        })
    }

    /// The same generator, drawing users by the hour of their own day too when `local`
    /// (as a backfill's clock does: [`Generator::hourly_weight`]); by activity alone
    /// otherwise (live, where a fixed rate would hand a small country far from the
    /// others' night more than its share).
    #[must_use]
    pub fn with_local_time(mut self, local: bool) -> Generator {
        self.local_time = local;
        self
    }

    /// The same generator, with this share (0 to 1) of a user's transactions paid in a
    /// currency other than the home one.
    #[must_use]
    pub fn with_foreign_share(mut self, share: f64) -> Generator {
        self.foreign_share = if share.is_nan() {
            DEFAULT_FOREIGN_SHARE
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// A backfill's weight of the hour starting at `at`: over the users' UTC offsets, the
    /// share of the users' activity registered by that day times the local hour-of-day and
    /// day-of-week intensity (so 1 on average over a week when all have registered). The
    /// simulated clock draws its times by it, and the generator its users by the same
    /// terms.
    pub fn hourly_weight(&self) -> impl Fn(DateTime<Utc>) -> f64 + use<> {
        let total: f64 = self.profiles.iter().map(|p| p.activity).sum();
        // per offset: the undated users' share, and the running share by registration day
        let mut groups: std::collections::BTreeMap<i8, (f64, Vec<(chrono::NaiveDate, f64)>)> =
            Default::default();
        for (i, p) in self.profiles.iter().enumerate() {
            let group = groups.entry(p.utc_offset).or_default();
            match self.registered.get(i).copied().flatten() {
                Some(day) => group.1.push((day, p.activity / total)),
                None => group.0 += p.activity / total,
            }
        }
        /// A UTC offset, its undated users' share, its running share by registration day.
        type Offset = (i8, f64, Vec<(chrono::NaiveDate, f64)>);
        let groups: Vec<Offset> = groups
            .into_iter()
            .map(|(offset, (undated, mut dated))| {
                dated.sort_by_key(|(day, _)| *day);
                let mut sum = undated;
                for d in &mut dated {
                    sum += d.1;
                    d.1 = sum;
                }
                (offset, undated, dated)
            })
            .collect();
        move |at| {
            let day = at.date_naive();
            groups
                .iter()
                .map(|(offset, undated, by_day)| {
                    let share = match by_day.partition_point(|(d, _)| *d <= day) {
                        0 => *undated,
                        n => by_day[n - 1].1,
                    };
                    share * local_intensity(at, *offset)
                })
                .sum()
        }
    }

    /// Adds users while it runs (from a new users file, or registration events); ids it
    /// has already are left as they are. A user registering after today transacts from
    /// that day on. Returns how many were added.
    pub fn add_users(&mut self, users: &crate::Users) -> usize {
        if self.known.is_empty() {
            self.known = self.users.iter().copied().collect();
        }
        let before = self.users.len();
        let mut fresh = crate::Users::default();
        for (i, id) in users.ids.iter().enumerate() {
            if self.known.insert(*id) {
                fresh.ids.push(*id);
                fresh
                    .attributes
                    .push(users.attributes.get(i).cloned().unwrap_or_default());
            }
        }
        let users = &fresh;
        if users.ids.is_empty() {
            return 0;
        }
        let dated = users.attributes.iter().any(|a| a.registered.is_some());
        if dated && self.registered.is_empty() {
            self.registered = vec![None; self.users.len()];
        }
        for (i, id) in users.ids.iter().enumerate() {
            let attributes = users.attributes.get(i);
            let country = attributes.and_then(|a| a.country.as_deref());
            self.users.push(*id);
            self.profiles.push(Profile::of(*id, country));
            if !self.registered.is_empty() {
                self.registered.push(attributes.and_then(|a| a.registered));
            }
        }
        if self.registered.is_empty() {
            // Invariant: log-normal activities are finite and positive.
            self.pick = Pick::new(&self.profiles, &self.registered, None).expect("activities");
        } else {
            let day = self.pick_day.unwrap_or_else(|| Utc::now().date_naive());
            // none registered yet by `day` (only future users so far): the last pick stays
            if let Some(pick) = Pick::new(&self.profiles, &self.registered, Some(day)) {
                self.pick = pick;
            }
            self.pick_day = Some(day);
        }
        self.users.len() - before
    }

    /// The number of users.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// The profile of each user, in the order given.
    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// The kind of `tx_id`s made.
    pub fn tx_ids(&self) -> TxIds {
        self.tx_ids
    }

    /// The same generator, making `tx_id`s of this kind.
    #[must_use]
    pub fn with_tx_ids(mut self, tx_ids: TxIds) -> Generator {
        self.tx_ids = tx_ids;
        self
    }

    /// The next transaction, stamped `now` (truncated to milliseconds).
    pub fn next_at(&mut self, now: DateTime<Utc>) -> Transaction {
        let day = now.date_naive();
        if self.pick_day.is_some_and(|d| d != day) {
            // a day before every registration keeps the last day's users
            if let Some(pick) = Pick::new(&self.profiles, &self.registered, Some(day)) {
                self.pick = pick;
            }
            self.pick_day = Some(day);
        }
        let rng = &mut self.rng;
        let millis = now.timestamp_millis();
        let tx_id = self.tx_ids.make(rng, millis);
        let u = self.pick.sample(now, self.local_time, rng);
        let (user_id, profile) = (self.users[u], &self.profiles[u]);
        let ci = profile.category(rng.random::<f64>());
        let category = &CATEGORIES[ci];
        let merchant = category.merchants[rng.random_range(0..category.merchants.len())];
        let currency = match profile.home {
            Some(home) if rng.random::<f64>() >= self.foreign_share => home,
            // abroad: the global mix without the home currency
            Some(home) => self.abroad[home].sample(rng),
            None => self.currency.sample(rng),
        };
        let currency = &CURRENCIES[currency];
        let usd = self.amounts[ci].sample(rng) * profile.spend;
        let amount = to_amount(usd * currency.per_usd, currency.minor_unit);
        let processing_time_ms = self
            .processing
            .sample(rng)
            .clamp(PROCESSING_RANGE_MS.0, PROCESSING_RANGE_MS.1)
            .round() as u32;
        let timestamp = DateTime::from_timestamp_millis(millis).unwrap_or(now);
        Transaction {
            tx_id,
            user_id,
            amount,
            currency: currency.code,
            merchant: merchant.to_owned(),
            category: category.name.to_owned(),
            timestamp,
            source_system: Some(SOURCE_SYSTEM.to_owned()),
            transaction_type: Some(TRANSACTION_TYPE.to_owned()),
            processing_time_ms: Some(processing_time_ms),
        }
    }

    /// The next transaction, stamped with the current time.
    pub fn next_now(&mut self) -> Transaction {
        self.next_at(Utc::now())
    }
}

/// Draws a user by activity among those registered by a day (a user without a date
/// always counts), each UTC offset's users weighted by the hour of their own day: at 03:00
/// UTC a Japanese user (noon) is likelier than an American one (21:00 the day before).
#[derive(Debug, Clone)]
struct Pick {
    groups: Vec<Group>,
    /// The hour (since the epoch, UTC) `cumulative` was made for.
    hour: i64,
    /// Running sums of the groups' weights in that hour.
    cumulative: Vec<f64>,
}

/// The users of one UTC offset.
#[derive(Debug, Clone)]
struct Group {
    offset: i8,
    /// Indices into the generator's users.
    members: Vec<usize>,
    /// Draws a member by activity among the registered (`None`: none is).
    draw: Option<WeightedIndex<f64>>,
    /// The registered members' activity, summed.
    active: f64,
}

impl Pick {
    /// Among the users registered by `day` (`None` or no dates: all); `None` when none is.
    fn new(
        profiles: &[Profile],
        registered: &[Option<chrono::NaiveDate>],
        day: Option<chrono::NaiveDate>,
    ) -> Option<Pick> {
        let mut by_offset: std::collections::BTreeMap<i8, Vec<usize>> = Default::default();
        for (i, p) in profiles.iter().enumerate() {
            by_offset.entry(p.utc_offset).or_default().push(i);
        }
        let weight = |i: usize| match (day, registered.get(i).copied().flatten()) {
            (Some(day), Some(r)) if r > day => 0.0,
            _ => profiles[i].activity,
        };
        let groups: Vec<Group> = by_offset
            .into_iter()
            .map(|(offset, members)| {
                let weights: Vec<f64> = members.iter().map(|i| weight(*i)).collect();
                let active = weights.iter().sum();
                let draw = WeightedIndex::new(weights).ok();
                Group {
                    offset,
                    members,
                    draw,
                    active,
                }
            })
            .collect();
        groups.iter().any(|g| g.draw.is_some()).then_some(Pick {
            groups,
            hour: i64::MIN,
            cumulative: Vec::new(),
        })
    }

    /// A user for a transaction at `at`, by the hour of its own day when `local`.
    fn sample(&mut self, at: DateTime<Utc>, local: bool, rng: &mut StdRng) -> usize {
        // one offset (no countries, or one): no draw spent on choosing it
        let group = if self.groups.len() == 1 {
            &self.groups[0]
        } else {
            // the weights change by the hour: made once an hour, not per transaction (by
            // activity alone: once)
            let hour = if local {
                at.timestamp().div_euclid(3600)
            } else {
                i64::MAX
            };
            if hour != self.hour {
                let mut sum = 0.0;
                self.cumulative = self
                    .groups
                    .iter()
                    .map(|g| {
                        sum += g.active
                            * if local {
                                local_intensity(at, g.offset)
                            } else {
                                1.0
                            };
                        sum
                    })
                    .collect();
                self.hour = hour;
            }
            let total = self.cumulative.last().copied().unwrap_or(0.0);
            let x = rng.random::<f64>() * total;
            // the first running sum past x: a group of positive weight (unregistered
            // groups weigh 0 and are passed over); rounding at the very end falls back
            let i = self
                .cumulative
                .partition_point(|c| *c <= x)
                .min(self.groups.len() - 1);
            // Invariant: `new` made a Pick only with a group that has a draw.
            self.groups[..=i]
                .iter()
                .rev()
                .find(|g| g.draw.is_some())
                .expect("a registered group")
        };
        // Invariant: a group is chosen with a positive weight, so it has a draw; a single
        // group has one (`new` checked).
        let draw = group.draw.as_ref().expect("a group with a draw");
        group.members[draw.sample(rng)]
    }
}

/// The backfill's hour-of-day and day-of-week weight of `at` in the local time `offset`
/// hours from UTC.
fn local_intensity(at: DateTime<Utc>, offset: i8) -> f64 {
    let local = at
        .checked_add_signed(chrono::Duration::hours(i64::from(offset)))
        .unwrap_or(at);
    crate::backfill::intensity(local)
}

/// Rounds a positive amount to the minor unit, at least one minor unit, at most the column's
/// maximum, always written with two decimals (the column's scale).
pub(crate) fn to_amount(value: f64, minor_unit: u32) -> Decimal {
    let mut d = Decimal::from_f64_retain(value)
        .unwrap_or(Decimal::ONE)
        .round_dp_with_strategy(minor_unit, RoundingStrategy::MidpointNearestEven);
    let smallest = Decimal::new(1, minor_unit);
    if d < smallest {
        d = smallest;
    }
    if d > MAX_AMOUNT {
        d = MAX_AMOUNT;
    }
    d.rescale(2);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn users(n: usize) -> Vec<Uuid> {
        (0..n)
            .map(|i| Uuid::from_u128(0x1000 + i as u128))
            .collect()
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-08-15T10:30:00.123456Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn same_seed_and_users_give_the_same_sequence() {
        let mut a = Generator::new(users(50), Some(42)).unwrap();
        let mut b = Generator::new(users(50), Some(42)).unwrap();
        let mut c = Generator::new(users(50), Some(43)).unwrap();
        let sa: Vec<_> = (0..200).map(|_| a.next_at(at())).collect();
        let sb: Vec<_> = (0..200).map(|_| b.next_at(at())).collect();
        let sc: Vec<_> = (0..200).map(|_| c.next_at(at())).collect();
        assert_eq!(sa, sb);
        assert_ne!(sa, sc);
        let unseeded: Vec<_> = {
            let mut g = Generator::new(users(50), None).unwrap();
            (0..5).map(|_| g.next_at(at()).tx_id).collect()
        };
        assert_ne!(
            unseeded,
            sa[..5].iter().map(|t| t.tx_id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn v7_ids_carry_the_timestamp_are_ordered_by_it_and_reproducible() {
        let t = |ms: i64| DateTime::from_timestamp_millis(1_755_253_800_000 + ms).unwrap();
        let mut a = Generator::new(users(5), Some(9))
            .unwrap()
            .with_tx_ids(TxIds::V7);
        let mut b = Generator::new(users(5), Some(9))
            .unwrap()
            .with_tx_ids(TxIds::V7);
        let ids: Vec<Uuid> = (0..100).map(|i| a.next_at(t(i)).tx_id).collect();
        assert_eq!(
            ids,
            (0..100).map(|i| b.next_at(t(i)).tx_id).collect::<Vec<_>>()
        );
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id.get_version_num(), 7, "{id}");
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!(
                secs as i64 * 1000 + i64::from(nanos / 1_000_000),
                t(i as i64).timestamp_millis()
            );
        }
        // one per millisecond: in the order of their timestamps, as text too (the column)
        let text: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        assert!(text.is_sorted(), "{text:?}");
        // the rest of the transaction is the same sequence as with v4 ids
        let mut v4 = Generator::new(users(5), Some(9)).unwrap();
        let mut v7 = Generator::new(users(5), Some(9))
            .unwrap()
            .with_tx_ids(TxIds::V7);
        for i in 0..100 {
            let (a, b) = (v4.next_at(t(i)), v7.next_at(t(i)));
            assert_eq!(a.tx_id.get_version_num(), 4);
            assert_eq!(b.tx_id.get_version_num(), 7);
            assert_eq!(
                Transaction {
                    tx_id: b.tx_id,
                    ..a
                },
                b,
                "{i}"
            );
        }
    }

    /// How many of `n` transactions fall in each category.
    fn category_counts(g: &mut Generator, n: u32) -> [u32; CATEGORIES.len()] {
        let mut seen = [0; CATEGORIES.len()];
        for _ in 0..n {
            let tx = g.next_at(at());
            seen[CATEGORIES
                .iter()
                .position(|c| c.name == tx.category)
                .unwrap()] += 1;
        }
        seen
    }

    /// Pearson's chi-square of observed counts against expected shares (summing to 1).
    fn chi_square(seen: &[u32], shares: &[f64]) -> f64 {
        let n = f64::from(seen.iter().sum::<u32>());
        seen.iter()
            .zip(shares)
            .map(|(o, e)| (f64::from(*o) - e * n).powi(2) / (e * n))
            .sum()
    }

    /// Users of these countries (in turn), as a users file gives them.
    fn users_of(countries: &[&str], n: usize) -> crate::Users {
        let ids = users(n);
        crate::Users {
            attributes: (0..n)
                .map(|i| crate::UserAttributes {
                    country: Some(countries[i % countries.len()].to_owned()),
                    registered: None,
                })
                .collect(),
            ids,
            files: vec![],
            skipped: vec![],
            duplicates: 0,
        }
    }

    #[test]
    fn a_user_pays_in_the_home_currency_but_for_the_foreign_share() {
        let list = users_of(&["DE", "GB", "JP", "BR"], 40);
        let mut g = Generator::for_users(&list, Some(5))
            .unwrap()
            .with_foreign_share(0.1);
        let n = 40_000;
        let (mut home, mut foreign_currencies) = (0, std::collections::HashSet::new());
        for _ in 0..n {
            let tx = g.next_at(at());
            let i = list.ids.iter().position(|u| *u == tx.user_id).unwrap();
            let expected =
                crate::profile::home_currency(list.attributes[i].country.as_deref().unwrap());
            if tx.currency.as_str() == expected {
                home += 1;
            } else {
                foreign_currencies.insert(tx.currency.to_string());
            }
        }
        // 90 % at home, within four standard deviations of a binomial count
        let sd = (f64::from(n) * 0.9 * 0.1).sqrt();
        assert!(
            (f64::from(home) - 0.9 * f64::from(n)).abs() < 4.0 * sd,
            "{home} of {n}"
        );
        assert!(foreign_currencies.len() >= 5, "{foreign_currencies:?}");
        // no foreign share: always at home
        let mut g = Generator::for_users(&list, Some(5))
            .unwrap()
            .with_foreign_share(0.0);
        for _ in 0..2_000 {
            let tx = g.next_at(at());
            let i = list.ids.iter().position(|u| *u == tx.user_id).unwrap();
            let c = list.attributes[i].country.as_deref().unwrap();
            assert_eq!(tx.currency.as_str(), crate::profile::home_currency(c));
        }
    }

    #[test]
    fn categories_follow_the_users_preferences_chi_square() {
        let mut g = Generator::new(users(200), Some(21)).unwrap();
        let profiles = g.profiles().to_vec();
        let activity: f64 = profiles.iter().map(|p| p.activity).sum();
        let mut expected = [0.0; CATEGORIES.len()];
        for p in &profiles {
            for (e, s) in expected.iter_mut().zip(p.category_shares()) {
                *e += p.activity / activity * s;
            }
        }
        let n = 50_000;
        let seen = category_counts(&mut g, n);
        let chi2 = chi_square(&seen, &expected);
        // 9 degrees of freedom: 27.88 is exceeded by chance once in a thousand
        assert!(
            chi2 < 27.88,
            "chi-square {chi2:.1}: {seen:?} vs {expected:?}"
        );
        // and the users' preferences average out near the categories' own weights
        let total: u32 = CATEGORIES.iter().map(|c| c.weight).sum();
        for (c, e) in CATEGORIES.iter().zip(expected) {
            let base = f64::from(c.weight) / f64::from(total);
            assert!(
                (e / base - 1.0).abs() < 0.35,
                "{}: {e:.3} vs {base:.3}",
                c.name
            );
        }
    }

    #[test]
    fn one_users_categories_follow_its_own_preferences_and_activity_picks_users() {
        // a single user: its draws against its own shares (not the categories' weights)
        let list = users(1);
        let mut g = Generator::new(list, Some(4)).unwrap();
        let shares = g.profiles()[0].category_shares();
        let n = 30_000;
        let seen = category_counts(&mut g, n);
        assert!(chi_square(&seen, &shares) < 27.88, "{seen:?} vs {shares:?}");
        let total: u32 = CATEGORIES.iter().map(|c| c.weight).sum();
        let base: Vec<f64> = CATEGORIES
            .iter()
            .map(|c| f64::from(c.weight) / f64::from(total))
            .collect();
        assert!(
            chi_square(&seen, &base) > 100.0,
            "this user's preferences show"
        );
        // users are drawn in proportion to their activity
        let list = users(20);
        let mut g = Generator::new(list.clone(), Some(6)).unwrap();
        let activity: Vec<f64> = g.profiles().iter().map(|p| p.activity).collect();
        let sum: f64 = activity.iter().sum();
        let mut drawn = vec![0u32; 20];
        for _ in 0..n {
            let tx = g.next_at(at());
            drawn[list.iter().position(|u| *u == tx.user_id).unwrap()] += 1;
        }
        let p: Vec<f64> = activity.iter().map(|a| a / sum).collect();
        // 19 degrees of freedom: 43.82 is exceeded by chance once in a thousand
        assert!(chi_square(&drawn, &p) < 43.82, "{drawn:?} vs {p:?}");
        let (most, least) = (
            drawn.iter().max().copied().unwrap(),
            drawn.iter().min().copied().unwrap(),
        );
        assert!(most > 3 * least, "{drawn:?}");
    }

    #[test]
    fn no_user_transacts_before_registering() {
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let mut list = users_of(&["US"], 40);
        for (i, a) in list.attributes.iter_mut().enumerate() {
            // half registered in July, half on 1 September
            a.registered = Some(if i % 2 == 0 {
                day("2025-07-01")
            } else {
                day("2025-09-01")
            });
        }
        let registered = |list: &crate::Users, id: Uuid| {
            let i = list.ids.iter().position(|u| *u == id).unwrap();
            list.attributes[i].registered.unwrap()
        };
        let mut g = Generator::for_users(&list, Some(8)).unwrap();
        let mid_august = at();
        for _ in 0..2_000 {
            let tx = g.next_at(mid_august);
            assert!(registered(&list, tx.user_id) <= mid_august.date_naive());
        }
        // once September comes, the others transact too
        let september = DateTime::parse_from_rfc3339("2025-09-02T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut late = 0;
        for _ in 0..2_000 {
            let tx = g.next_at(september);
            if registered(&list, tx.user_id) == day("2025-09-01") {
                late += 1;
            }
        }
        assert!(late > 500, "{late}");
        // all users registering after today: refused, naming the first date
        for a in &mut list.attributes {
            a.registered = Some(day("2999-01-01"));
        }
        let e = Generator::for_users(&list, None).unwrap_err();
        assert!(
            e.to_string().contains("the first registers on 2999-01-01"),
            "{e}"
        );
        // users without a date always transact
        let g = Generator::new(users(3), Some(1)).unwrap();
        assert_eq!(g.pick_day, None);
    }

    /// Users added while it runs transact (by their profiles), those registering later
    /// only from their day; undated lists gain dates without losing their users.
    #[test]
    fn added_users_transact_from_their_registration_day() {
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let mut g = Generator::new(users(5), Some(2)).unwrap();
        let mut more = users_of(&["JP"], 10);
        more.ids = (0..10).map(|i| Uuid::from_u128(0x9_0000 + i)).collect();
        for (i, a) in more.attributes.iter_mut().enumerate() {
            // half registered before mid-August, half a month later
            a.registered = Some(if i < 5 {
                day("2025-08-01")
            } else {
                day("2025-09-15")
            });
        }
        assert_eq!(g.add_users(&more), 10);
        assert_eq!(g.users(), 15);
        assert_eq!(g.add_users(&more), 0, "known ids are not added twice");
        let (mut old, mut added, mut yen) = (0, 0, 0);
        for _ in 0..3_000 {
            let tx = g.next_at(at());
            match more.ids.iter().position(|u| *u == tx.user_id) {
                Some(i) => {
                    assert!(i < 5, "a user before registering: {tx:?}");
                    yen += usize::from(tx.currency.as_str() == "JPY");
                    added += 1;
                }
                None => old += 1,
            }
        }
        assert!(old > 300 && added > 300, "{old} old, {added} added");
        // their profiles come from their attributes: Japanese users pay in yen (90 %)
        assert!(yen * 100 > added * 85, "{yen} of {added} in JPY");
        let october = DateTime::parse_from_rfc3339("2025-10-01T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let later = (0..3_000)
            .map(|_| g.next_at(october).user_id)
            .filter(|u| more.ids[5..].contains(u))
            .count();
        assert!(later > 300, "{later}");
    }

    #[test]
    fn a_users_amounts_follow_its_spending_level() {
        let list = users_of(&["US"], 300);
        let g = Generator::for_users(&list, Some(2)).unwrap();
        let by_spend = |pick: fn(f64, f64) -> bool| {
            let mut best = 0;
            for (i, p) in g.profiles().iter().enumerate() {
                if pick(p.spend, g.profiles()[best].spend) {
                    best = i;
                }
            }
            best
        };
        let (low, high) = (by_spend(|a, b| a < b), by_spend(|a, b| a > b));
        let median = |u: usize| {
            let one = crate::Users {
                ids: vec![list.ids[u]],
                attributes: vec![list.attributes[u].clone()],
                files: vec![],
                skipped: vec![],
                duplicates: 0,
            };
            let mut g = Generator::for_users(&one, Some(3)).unwrap();
            let mut groceries: Vec<f64> = (0..20_000)
                .map(|_| g.next_at(at()))
                .filter(|t| t.category == "groceries")
                .map(|t| t.amount.to_string().parse::<f64>().unwrap())
                .collect();
            groceries.sort_by(f64::total_cmp);
            groceries[groceries.len() / 2]
        };
        let (p_low, p_high) = (&g.profiles()[low], &g.profiles()[high]);
        let ratio = median(high) / median(low);
        let expected = p_high.spend / p_low.spend;
        assert!(expected > 3.0, "{expected}");
        assert!(
            (ratio / expected - 1.0).abs() < 0.2,
            "{ratio} vs {expected}"
        );
    }

    #[test]
    fn merchants_match_their_categories() {
        let mut g = Generator::new(users(10), Some(7)).unwrap();
        let mut seen = HashMap::new();
        for _ in 0..5_000 {
            let tx = g.next_at(at());
            let cat = CATEGORIES.iter().find(|c| c.name == tx.category).unwrap();
            assert!(
                cat.merchants.contains(&tx.merchant.as_str()),
                "{} in {}",
                tx.merchant,
                tx.category
            );
            *seen.entry(tx.category).or_insert(0u32) += 1;
        }
        assert_eq!(seen.len(), CATEGORIES.len(), "every category appears");
        assert!(seen["groceries"] > seen["travel"] * 3, "{seen:?}");
    }

    #[test]
    fn amounts_are_skewed_rounded_and_valid() {
        let mut g = Generator::new(users(10), Some(11)).unwrap();
        let txs: Vec<_> = (0..20_000).map(|_| g.next_at(at())).collect();
        let mut currency_count: HashMap<String, u32> = HashMap::new();
        let mut usd: Vec<Decimal> = Vec::new();
        for tx in &txs {
            tx.validate().unwrap();
            assert_eq!(tx.amount.scale(), 2, "{}", tx.amount);
            assert!(tx.amount > Decimal::ZERO);
            if tx.currency.as_str() == "JPY" {
                assert_eq!(tx.amount.fract(), Decimal::ZERO, "whole yen: {}", tx.amount);
            }
            if tx.currency.as_str() == "USD" {
                usd.push(tx.amount);
            }
            *currency_count.entry(tx.currency.to_string()).or_default() += 1;
            assert!((15..=5_000).contains(&tx.processing_time_ms.unwrap()));
            assert_eq!(tx.source_system.as_deref(), Some("streaming_kafka"));
            assert_eq!(tx.transaction_type.as_deref(), Some("real_time"));
        }
        // USD dominates the mix
        assert!(
            currency_count["USD"] as usize > txs.len() / 2,
            "{currency_count:?}"
        );
        assert!(currency_count.len() >= 6);
        // right-skewed: the mean exceeds the median
        usd.sort();
        let median = usd[usd.len() / 2];
        let mean: Decimal = usd.iter().sum::<Decimal>() / Decimal::from(usd.len());
        assert!(mean > median, "mean {mean} median {median}");
    }

    #[test]
    fn users_come_from_the_list_and_timestamps_are_millis() {
        let list = users(3);
        let mut g = Generator::new(list.clone(), Some(1)).unwrap();
        for _ in 0..100 {
            let tx = g.next_at(at());
            assert!(list.contains(&tx.user_id));
            assert_eq!(tx.timestamp.timestamp_subsec_micros(), 123_000);
        }
        assert_eq!(
            Generator::new(vec![], None).unwrap_err(),
            GeneratorError::NoUsers
        );
    }

    #[test]
    fn to_amount_rounds_to_minor_unit_and_clamps() {
        assert_eq!(to_amount(12.3449, 2).to_string(), "12.34");
        assert_eq!(to_amount(12.3551, 2).to_string(), "12.36");
        assert_eq!(to_amount(1234.6, 0).to_string(), "1235.00");
        assert_eq!(to_amount(0.0001, 2).to_string(), "0.01");
        assert_eq!(to_amount(1e12, 2), MAX_AMOUNT);
    }
}
