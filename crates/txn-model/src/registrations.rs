//! The batch side's monthly user-registration files, generated: `users_YYYY_MM.csv` with
//! the documented columns `user_id, first_name, last_name, email, registration_date,
//! country` (the contract [`crate::users`] reads), so a demo needs no other tool.
//!
//! Users register on a uniformly drawn day of their month (rows in date order), in a
//! weighted mix of countries, each with names of its language (fake's locales) and an
//! ASCII e-mail address made from them. With a seed a month's file is reproducible, and
//! it is the same file whatever range of months it is generated in (each month draws
//! from its own seed).

use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use fake::Fake;
use fake::faker::name::raw::{FirstName, LastName};
use fake::locales::{DE_DE, EN, FR_FR, IT_IT, NL_NL, PT_BR, PT_PT};
use fake::uuid::UUIDv4;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use uuid::Uuid;

/// The header of a generated file: the documented columns, in order.
pub const HEADER: [&str; 6] = [
    "user_id",
    "first_name",
    "last_name",
    "email",
    "registration_date",
    "country",
];

/// The language a country's names are drawn in (fake's locales).
#[derive(Debug, Clone, Copy)]
enum Names {
    English,
    German,
    French,
    Italian,
    Dutch,
    BrazilianPortuguese,
    Portuguese,
}

/// A country users register from: its ISO 3166-1 alpha-2 code, its share of the
/// registrations and the language of its names.
#[derive(Debug)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, as the `country` column holds it.
    pub code: &'static str,
    /// Relative share of registrations.
    pub weight: u32,
    names: Names,
}

/// The countries and their shares (a US-led mix, as the sample files have).
pub const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        weight: 40,
        names: Names::English,
    },
    Country {
        code: "GB",
        weight: 10,
        names: Names::English,
    },
    Country {
        code: "CA",
        weight: 6,
        names: Names::English,
    },
    Country {
        code: "AU",
        weight: 4,
        names: Names::English,
    },
    Country {
        code: "IE",
        weight: 2,
        names: Names::English,
    },
    Country {
        code: "DE",
        weight: 9,
        names: Names::German,
    },
    Country {
        code: "AT",
        weight: 2,
        names: Names::German,
    },
    Country {
        code: "FR",
        weight: 8,
        names: Names::French,
    },
    Country {
        code: "IT",
        weight: 5,
        names: Names::Italian,
    },
    Country {
        code: "NL",
        weight: 4,
        names: Names::Dutch,
    },
    Country {
        code: "BR",
        weight: 6,
        names: Names::BrazilianPortuguese,
    },
    Country {
        code: "PT",
        weight: 4,
        names: Names::Portuguese,
    },
];

/// One user's registration: one row of a monthly file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// A random (v4) UUID.
    pub user_id: Uuid,
    /// Given name, in the country's language.
    pub first_name: String,
    /// Family name, in the country's language.
    pub last_name: String,
    /// `first.last<two digits>@example.com`, lower-case ASCII.
    pub email: String,
    /// A day of the month the file is for.
    pub registration_date: NaiveDate,
    /// One of [`COUNTRIES`].
    pub country: &'static str,
}

/// Why a range of months cannot be generated or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationsError {
    /// `--to` is before `--from`.
    #[error("--to {to} is before --from {from}: give the first month, then the last (YYYY-MM)")]
    Range {
        /// The first month.
        from: String,
        /// The last month.
        to: String,
    },
    /// More months than one run writes.
    #[error("{0} months from --from to --to: at most {MAX_MONTHS} at a time")]
    TooMany(usize),
    /// A month's file exists already.
    #[error("{0} exists already: choose another --out directory, or pass --force to replace it")]
    Exists(PathBuf),
    /// The directory could not be made (a file of that name, no permission).
    #[error("cannot create the directory {path} for the files: {source}; choose another --out")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: csv::Error,
    },
}

/// Most months one run writes (their files are open until all are written).
pub const MAX_MONTHS: usize = 240;

/// Parses a month written `YYYY-MM` into its first day.
///
/// # Errors
/// A one-line message naming the expected form.
pub fn parse_month(s: &str) -> Result<NaiveDate, String> {
    let form = crate::digits_and_dashes(s, 7, &[4]);
    form.then(|| NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| format!("{s:?} is not a month: write it YYYY-MM, e.g. 2025-01"))
}

/// The first days of the months from `from` to `to`, both included.
///
/// # Errors
/// [`RegistrationsError::Range`] when `to` is before `from`.
pub fn months(from: NaiveDate, to: NaiveDate) -> Result<Vec<NaiveDate>, RegistrationsError> {
    let (from, to) = (first_day(from), first_day(to));
    if to < from {
        return Err(RegistrationsError::Range {
            from: from.format("%Y-%m").to_string(),
            to: to.format("%Y-%m").to_string(),
        });
    }
    let months: Vec<NaiveDate> =
        std::iter::successors(Some(from), |m| m.checked_add_months(chrono::Months::new(1)))
            .take_while(|m| *m <= to)
            .take(MAX_MONTHS + 1)
            .collect();
    if months.len() > MAX_MONTHS {
        let span = (to.year() - from.year()) * 12 + to.month() as i32 - from.month() as i32 + 1;
        return Err(RegistrationsError::TooMany(span as usize));
    }
    Ok(months)
}

fn first_day(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

/// The file name of a month's registrations: `users_YYYY_MM.csv`.
pub fn file_name(month: NaiveDate) -> String {
    format!("users_{}.csv", month.format("%Y_%m"))
}

/// `count` registrations in `month`, in date order. With `seed`, the same seed, month
/// and count give the same rows.
pub fn registrations(month: NaiveDate, count: usize, seed: Option<u64>) -> Vec<Registration> {
    let month = first_day(month);
    let mut rng = match seed {
        // each month its own stream: a month's file does not depend on the range asked
        Some(seed) => StdRng::seed_from_u64(
            seed ^ (u64::from(month.year().unsigned_abs()) * 12 + u64::from(month.month()))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ),
        None => rand::make_rng(),
    };
    let countries =
        WeightedIndex::new(COUNTRIES.iter().map(|c| c.weight)).expect("country weights");
    let days = month
        .checked_add_months(chrono::Months::new(1))
        .map_or(28, |next| (next - month).num_days()) as u64;
    let mut rows: Vec<Registration> = (0..count)
        .map(|_| {
            let country = &COUNTRIES[countries.sample(&mut rng)];
            let (first_name, last_name) = match country.names {
                Names::English => names(EN, &mut rng),
                Names::German => names(DE_DE, &mut rng),
                Names::French => names(FR_FR, &mut rng),
                Names::Italian => names(IT_IT, &mut rng),
                Names::Dutch => names(NL_NL, &mut rng),
                Names::BrazilianPortuguese => names(PT_BR, &mut rng),
                Names::Portuguese => names(PT_PT, &mut rng),
            };
            let email = format!(
                "{}.{}{:02}@example.com",
                ascii_part(&first_name),
                ascii_part(&last_name),
                rng.random_range(0..100u32)
            );
            let day = rng.random_range(0..days);
            Registration {
                user_id: UUIDv4.fake_with_rng(&mut rng),
                first_name,
                last_name,
                email,
                registration_date: month + chrono::Days::new(day),
                country: country.code,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.registration_date);
    rows
}

/// A first and a last name in `locale`'s language.
fn names<L: fake::locales::Data + Copy>(locale: L, rng: &mut StdRng) -> (String, String) {
    (
        FirstName(locale).fake_with_rng(rng),
        LastName(locale).fake_with_rng(rng),
    )
}

/// A name as the local part of an e-mail address: lower-case ASCII letters and digits,
/// accents taken off (`Müller-Lüdenscheidt` → `mullerludenscheidt`; `José` → `jose`).
fn ascii_part(name: &str) -> String {
    let part: String = deunicode::deunicode(name)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if part.is_empty() { "user".into() } else { part }
}

/// Writes the files of the months `from..=to`, `per_month` users each: all or nothing.
/// Without `replace`, an existing file is refused before anything is written; every
/// month is written in full under a temporary name first and renamed once all are, so a
/// failure part way leaves none of them. Returns the files with their row counts.
///
/// # Errors
/// A bad range, a file that exists (without `replace`), or a failed write.
pub fn write_range(
    dir: &Path,
    (from, to): (NaiveDate, NaiveDate),
    per_month: usize,
    seed: Option<u64>,
    replace: bool,
) -> Result<Vec<(PathBuf, usize)>, RegistrationsError> {
    let months = months(from, to)?;
    if !replace && let Some(m) = months.iter().find(|m| dir.join(file_name(**m)).exists()) {
        return Err(RegistrationsError::Exists(dir.join(file_name(*m))));
    }
    let written = months
        .into_iter()
        .map(|m| {
            let rows = registrations(m, per_month, seed);
            write_month(dir, m, &rows).map(|w| (w, rows.len()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    written
        .into_iter()
        .map(|(w, rows)| w.publish(replace).map(|p| (p, rows)))
        .collect()
}

/// A month's file written in full under a temporary name beside its final one; it gets its
/// name when [`Written::publish`] is called (and is removed if it never is), so a failed
/// run never leaves a truncated file, nor one of a range that failed part way.
#[derive(Debug)]
pub struct Written {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Written {
    /// Gives the file its name: replacing an existing file only with `replace` (checked
    /// and renamed in one step: a file that appeared meanwhile is not overwritten).
    ///
    /// # Errors
    /// [`RegistrationsError::Exists`], or the rename's error.
    pub fn publish(self, replace: bool) -> Result<PathBuf, RegistrationsError> {
        let path = self.path;
        let done = if replace {
            self.file.persist(&path).map(|_| ())
        } else {
            self.file.persist_noclobber(&path).map(|_| ())
        };
        match done {
            Ok(()) => Ok(path),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RegistrationsError::Exists(path))
            }
            Err(e) => Err(RegistrationsError::Write {
                path,
                source: e.error.into(),
            }),
        }
    }
}

/// Writes `rows` as the file `dir/users_YYYY_MM.csv` will hold (the header, then one line
/// per row), under a temporary name until [`Written::publish`]. The directory is created
/// when missing.
///
/// # Errors
/// [`RegistrationsError::Write`].
pub fn write_month(
    dir: &Path,
    month: NaiveDate,
    rows: &[Registration],
) -> Result<Written, RegistrationsError> {
    let path = dir.join(file_name(month));
    let failed = |source: csv::Error| RegistrationsError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|source| RegistrationsError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let file = tempfile::Builder::new()
        .prefix(".users-")
        .suffix(".csv.tmp")
        .tempfile_in(dir)
        .map_err(|e| failed(e.into()))?;
    let mut w = csv::Writer::from_writer(file.as_file());
    w.write_record(HEADER).map_err(failed)?;
    for r in rows {
        w.write_record([
            r.user_id.to_string().as_str(),
            &r.first_name,
            &r.last_name,
            &r.email,
            &r.registration_date.to_string(),
            r.country,
        ])
        .map_err(failed)?;
    }
    w.flush().map_err(|e| failed(e.into()))?;
    drop(w);
    file.as_file().sync_all().map_err(|e| failed(e.into()))?;
    Ok(Written { file, path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn month(s: &str) -> NaiveDate {
        parse_month(s).unwrap()
    }

    #[test]
    fn months_are_parsed_and_ranged_inclusively() {
        assert_eq!(
            month("2025-01"),
            NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
        );
        for bad in [
            "2025-13",
            "2025-1",
            "25-01",
            "2025/01",
            "2025-01-05",
            "",
            " 2025-1",
            "+2025-1",
            "-999-01",
            "2025-00",
        ] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
        let m = months(month("2024-11"), month("2025-02")).unwrap();
        assert_eq!(
            m.iter().map(|d| file_name(*d)).collect::<Vec<_>>(),
            [
                "users_2024_11.csv",
                "users_2024_12.csv",
                "users_2025_01.csv",
                "users_2025_02.csv"
            ]
        );
        assert_eq!(months(month("2025-03"), month("2025-03")).unwrap().len(), 1);
        assert_eq!(
            months(month("2000-01"), month("2019-12")).unwrap().len(),
            240
        );
        let e = months(month("2000-01"), month("2099-12")).unwrap_err();
        assert!(e.to_string().starts_with("1200 months"), "{e}");
        let e = months(month("2025-03"), month("2025-01")).unwrap_err();
        assert!(
            e.to_string()
                .contains("--to 2025-01 is before --from 2025-03"),
            "{e}"
        );
    }

    #[test]
    fn a_month_holds_count_rows_in_date_order_within_it_reproducibly() {
        let feb = month("2024-02");
        let rows = registrations(feb, 2_000, Some(7));
        assert_eq!(rows.len(), 2_000);
        assert!(
            rows.windows(2)
                .all(|w| w[0].registration_date <= w[1].registration_date)
        );
        assert!(
            rows.iter()
                .all(|r| r.registration_date.year() == 2024 && r.registration_date.month() == 2)
        );
        // leap day and the first are both drawn
        assert!(rows.iter().any(|r| r.registration_date.day() == 29));
        assert!(rows.iter().any(|r| r.registration_date.day() == 1));
        assert_eq!(rows, registrations(feb, 2_000, Some(7)));
        assert_ne!(rows, registrations(feb, 2_000, Some(8)));
        // another month of the same seed is another stream
        let mar = registrations(month("2024-03"), 2_000, Some(7));
        assert_ne!(rows[0].user_id, mar[0].user_id);
        let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.user_id).collect();
        assert_eq!(ids.len(), rows.len());
    }

    #[test]
    fn countries_follow_their_weights_and_emails_are_ascii() {
        let rows = registrations(month("2025-05"), 20_000, Some(3));
        let mut by: HashMap<&str, usize> = HashMap::new();
        for r in &rows {
            *by.entry(r.country).or_default() += 1;
            assert!(
                r.email.is_ascii() && r.email.ends_with("@example.com") && r.email.contains('.'),
                "{}",
                r.email
            );
            assert!(!r.first_name.is_empty() && !r.last_name.is_empty());
        }
        let total: u32 = COUNTRIES.iter().map(|c| c.weight).sum();
        for c in COUNTRIES {
            let expected = f64::from(c.weight) / f64::from(total) * rows.len() as f64;
            let got = by.get(c.code).copied().unwrap_or(0) as f64;
            // four standard deviations of a binomial count
            let sd = (expected * (1.0 - expected / rows.len() as f64)).sqrt();
            assert!(
                (got - expected).abs() < 4.0 * sd,
                "{}: {got} vs {expected:.0}",
                c.code
            );
        }
        assert_eq!(ascii_part("Müller-Lüdenscheidt"), "mullerludenscheidt");
        assert_eq!(ascii_part("José"), "jose");
        assert_eq!(ascii_part("---"), "user");
    }

    #[test]
    fn written_files_follow_the_contract_the_loader_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        for m in months(month("2025-01"), month("2025-03")).unwrap() {
            let rows = registrations(m, 50, Some(1));
            let written = write_month(dir.path(), m, &rows).unwrap();
            // not there under its name until published
            assert!(!dir.path().join(file_name(m)).exists());
            written.publish(false).unwrap();
            all.extend(rows.iter().map(|r| r.user_id));
        }
        let text = std::fs::read_to_string(dir.path().join("users_2025_02.csv")).unwrap();
        assert_eq!(text.lines().next().unwrap(), HEADER.join(","));
        let users = crate::load_users(dir.path()).unwrap();
        assert_eq!(users.ids, all);
        assert!(users.skipped.is_empty());
        // an existing month is not replaced unless asked; an unpublished one leaves nothing
        let m = month("2025-02");
        let e = write_month(dir.path(), m, &[])
            .unwrap()
            .publish(false)
            .unwrap_err();
        assert!(
            e.to_string().contains("users_2025_02.csv exists already"),
            "{e}"
        );
        drop(write_month(dir.path(), m, &[]).unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "no temporary file left"
        );
        write_month(dir.path(), m, &[])
            .unwrap()
            .publish(true)
            .unwrap();
        assert_eq!(crate::load_users(dir.path()).unwrap().ids.len(), 100);
    }
}
