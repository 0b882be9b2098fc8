//! Per-user profiles: what makes one user's transactions resemble each other.
//!
//! A profile is derived from the `user_id` alone (its 128 bits seed an RNG of its own), so
//! it is the same in every run of the same build, whatever `--seed`, and from the CSV's
//! `country` column when present:
//! - **home currency** from the country ([`home_currency`]: a documented map; a country it
//!   does not know pays in USD). A user pays in it except for a small share of
//!   transactions (`foreign_share`, drawn from the global mix without the home currency).
//!   Without a country the currency is drawn from the global mix, as before profiles.
//! - **spending level**: a log-normal factor on every amount (median 1, so the median
//!   amount over all users stays the categories' own; the spread widens and the mean
//!   rises by ~13 %).
//! - **category preferences**: each category's weight times a log-normal factor of the
//!   user's, so some spend mostly on groceries, others travel often.
//! - **activity**: a log-normal weight; active users are drawn more often.
//! - **local time**: the country's UTC offset ([`utc_offset`]), so a user transacts by
//!   the hours of its own day (without a country: UTC).

use rand::SeedableRng;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand_distr::LogNormal;
use uuid::Uuid;

use crate::generator::{CATEGORIES, CURRENCIES};

/// Spread (sigma of the logarithm) of the users' spending factors.
pub const SPEND_SIGMA: f64 = 0.5;
/// Spread of the users' preference factor for each category.
pub const PREFERENCE_SIGMA: f64 = 0.6;
/// Spread of the users' activity weights.
pub const ACTIVITY_SIGMA: f64 = 0.8;

/// The home currency of a country (ISO 3166-1 alpha-2, any letter case): the currencies
/// of the producer's mix; the euro area's twenty members pay in EUR; any other country,
/// or none, in USD.
pub fn home_currency(country: &str) -> &'static str {
    const EURO: [&str; 20] = [
        "AT", "BE", "HR", "CY", "EE", "FI", "FR", "DE", "GR", "IE", "IT", "LV", "LT", "LU", "MT",
        "NL", "PT", "SK", "SI", "ES",
    ];
    let c = country.trim().to_ascii_uppercase();
    match c.as_str() {
        "US" => "USD",
        "GB" => "GBP",
        "CA" => "CAD",
        "AU" => "AUD",
        "JP" => "JPY",
        "CH" | "LI" => "CHF",
        _ if EURO.contains(&c.as_str()) => "EUR",
        _ => "USD",
    }
}

/// The UTC offset, in whole hours of standard time (no daylight saving), of a country's
/// most populous time zones: US -6 (the population's middle, between Eastern and
/// Pacific), CA and the Andes -5, BR -3, GB, IE, PT and IS 0, most of Europe +1, the
/// Baltic, Finland, Greece, Romania, Bulgaria, Cyprus +2, IN +5 (5:30), CN, SG, HK +8, JP
/// and KR +9, AU +10 (Sydney), NZ +12; any other country, or none, 0.
pub fn utc_offset(country: &str) -> i8 {
    const PLUS_ONE: [&str; 22] = [
        "AT", "BE", "HR", "FR", "DE", "IT", "LU", "MT", "NL", "SK", "SI", "ES", "CH", "LI", "NO",
        "SE", "DK", "PL", "CZ", "HU", "RS", "AL",
    ];
    const PLUS_TWO: [&str; 8] = ["EE", "FI", "GR", "LV", "LT", "CY", "RO", "BG"];
    let c = country.trim().to_ascii_uppercase();
    match c.as_str() {
        "US" | "MX" => -6,
        "CA" | "CO" | "PE" | "EC" => -5,
        "BR" | "AR" => -3,
        "IN" => 5,
        "CN" | "SG" | "HK" | "TW" => 8,
        "JP" | "KR" => 9,
        "AU" => 10,
        "NZ" => 12,
        _ if PLUS_ONE.contains(&c.as_str()) => 1,
        _ if PLUS_TWO.contains(&c.as_str()) => 2,
        _ => 0,
    }
}

/// One user's profile (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Index into [`CURRENCIES`] of the home currency; `None` without a country.
    pub home: Option<usize>,
    /// Factor on every amount.
    pub spend: f64,
    /// Running sums of the category weights (the last is their total), in the order of
    /// [`CATEGORIES`].
    pub categories: [f64; CATEGORIES.len()],
    /// Relative weight of the user among all users.
    pub activity: f64,
    /// Hours from UTC of the user's local time ([`utc_offset`]).
    pub utc_offset: i8,
}

impl Profile {
    /// The profile of `user_id`, from `country` when known.
    pub fn of(user_id: Uuid, country: Option<&str>) -> Profile {
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(user_id.as_bytes());
        seed[16..].copy_from_slice(b"txn profile seed");
        let mut rng = StdRng::from_seed(seed);
        let spread = |sigma: f64| LogNormal::new(0.0, sigma).expect("a finite sigma");
        let spend = spread(SPEND_SIGMA).sample(&mut rng);
        let activity = spread(ACTIVITY_SIGMA).sample(&mut rng);
        let preference = spread(PREFERENCE_SIGMA);
        let mut categories = [0.0; CATEGORIES.len()];
        let mut sum = 0.0;
        for (i, c) in CATEGORIES.iter().enumerate() {
            sum += f64::from(c.weight) * preference.sample(&mut rng);
            categories[i] = sum;
        }
        let home = country.map(|c| {
            let code = home_currency(c);
            CURRENCIES
                .iter()
                .position(|m| m.code.as_str() == code)
                .unwrap_or(0)
        });
        Profile {
            utc_offset: country.map_or(0, utc_offset),
            home,
            spend,
            categories,
            activity,
        }
    }

    /// The share of this user's transactions in each category.
    pub fn category_shares(&self) -> [f64; CATEGORIES.len()] {
        let total = self.categories[CATEGORIES.len() - 1];
        let mut shares = [0.0; CATEGORIES.len()];
        let mut before = 0.0;
        for (i, s) in self.categories.iter().enumerate() {
            shares[i] = (s - before) / total;
            before = *s;
        }
        shares
    }

    /// Draws a category index by the user's preferences, from a uniform draw in [0, 1).
    pub fn category(&self, uniform: f64) -> usize {
        let target = uniform * self.categories[CATEGORIES.len() - 1];
        self.categories
            .iter()
            .position(|s| target < *s)
            .unwrap_or(CATEGORIES.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(0x5f0c_8a3e_1b2d_4c5e_8f90_0000_0000_0000 + n)
    }

    #[test]
    fn a_profile_depends_on_the_user_alone_and_its_country() {
        let a = Profile::of(id(1), Some("de"));
        assert_eq!(a, Profile::of(id(1), Some("DE")));
        assert_ne!(a.spend, Profile::of(id(2), Some("DE")).spend);
        assert_eq!(CURRENCIES[a.home.unwrap()].code.as_str(), "EUR");
        assert_eq!(Profile::of(id(1), None).home, None);
        let shares = a.category_shares();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(shares.iter().all(|s| *s > 0.0));
        assert_eq!(a.category(0.0), 0);
        assert_eq!(a.category(0.999_999_9), CATEGORIES.len() - 1);
    }

    #[test]
    fn countries_map_to_their_currencies_and_the_unknown_to_usd() {
        for (country, code) in [
            ("US", "USD"),
            ("gb", "GBP"),
            ("CA", "CAD"),
            ("AU", "AUD"),
            ("JP", "JPY"),
            ("CH", "CHF"),
            ("ES", "EUR"),
            (" fr ", "EUR"),
            ("BR", "USD"),
            ("", "USD"),
            ("Narnia", "USD"),
        ] {
            assert_eq!(home_currency(country), code, "{country:?}");
        }
        // every currency the map names is one the producer knows
        for c in ["US", "GB", "CA", "AU", "JP", "CH", "DE"] {
            let code = home_currency(c);
            assert!(CURRENCIES.iter().any(|m| m.code.as_str() == code), "{code}");
        }
    }

    #[test]
    fn countries_have_their_local_time() {
        for (country, offset) in [
            ("US", -6),
            ("ca", -5),
            ("BR", -3),
            ("GB", 0),
            ("PT", 0),
            ("DE", 1),
            ("FI", 2),
            ("JP", 9),
            ("AU", 10),
            ("Narnia", 0),
        ] {
            assert_eq!(utc_offset(country), offset, "{country}");
        }
        assert_eq!(Profile::of(id(1), Some("JP")).utc_offset, 9);
        assert_eq!(Profile::of(id(1), None).utc_offset, 0);
    }

    #[test]
    fn users_differ_in_spending_and_preferences() {
        let profiles: Vec<Profile> = (0..2_000).map(|n| Profile::of(id(n), None)).collect();
        let mut spend: Vec<f64> = profiles.iter().map(|p| p.spend).collect();
        spend.sort_by(f64::total_cmp);
        // log-normal around 1: the 10th and 90th percentiles at about 0.53 and 1.9
        let (p10, p50, p90) = (spend[200], spend[1_000], spend[1_800]);
        assert!((0.9..1.1).contains(&p50), "{p50}");
        assert!(p90 / p10 > 3.0, "{p10} {p90}");
        let groceries: Vec<f64> = profiles.iter().map(|p| p.category_shares()[0]).collect();
        let max = groceries.iter().copied().fold(0.0, f64::max);
        let min = groceries.iter().copied().fold(1.0, f64::min);
        assert!(max > 2.0 * min, "{min} {max}");
    }
}
