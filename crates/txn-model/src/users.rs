//! Loads user ids from the batch side's user-registration CSV files.
//!
//! The contract (also in the README): a path is either one CSV file or a directory whose
//! `*.csv` files (one per month, read in name order, not recursively) are all loaded. Each
//! file has a header row; the `user_id` column is found by name, case-insensitively, at
//! any position, and every other column is ignored. A UTF-8 byte-order mark is tolerated.
//! Duplicate ids are kept once (first occurrence wins, so the order is stable). Rows whose
//! `user_id` is empty or not a UUID are skipped and reported together in [`Users::skipped`].
//! The optional `country` and `registration_date` columns, found the same way, give each
//! user's [`UserAttributes`] (a value that is not a two-letter code or a `YYYY-MM-DD` date
//! counts as absent).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The users loaded from the CSV files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// Distinct user ids, in order of first appearance.
    pub ids: Vec<Uuid>,
    /// Their attributes, in the same order as `ids`.
    pub attributes: Vec<UserAttributes>,
    /// Files read, in the order read.
    pub files: Vec<PathBuf>,
    /// Rows skipped as invalid.
    pub skipped: Vec<SkippedRow>,
    /// Rows whose id was already seen.
    pub duplicates: usize,
}

/// What a users file says about a user besides the id (each `None` when the file has no
/// such column, or no valid value in it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAttributes {
    /// ISO 3166-1 alpha-2 code, upper case.
    pub country: Option<String>,
    /// The day the user registered.
    pub registered: Option<chrono::NaiveDate>,
}

impl UserAttributes {
    /// From a `country` and a `registration_date` as text: a value that is not a two-letter
    /// code or a `YYYY-MM-DD` date counts as absent (a date may go on with a time, as in
    /// `2025-08-03T10:00:00Z`).
    pub fn from_fields(country: Option<&str>, registered: Option<&str>) -> UserAttributes {
        let country = country
            .map(str::trim)
            .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_ascii_uppercase);
        let registered = registered
            .map(str::trim)
            .filter(|d| d.len() == 10 || d.as_bytes().get(10).is_some_and(|b| b"T ".contains(b)))
            .and_then(|d| d.get(..10))
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        UserAttributes {
            country,
            registered,
        }
    }
}

/// A row that carried no usable user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    /// The file it is in.
    pub file: PathBuf,
    /// Its 1-based line number in that file.
    pub line: u64,
    /// Why it was skipped.
    pub reason: String,
}

/// Why no users could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The path does not exist.
    #[error(
        "users CSV path {0} does not exist: point --users / USERS_CSV_PATH at a CSV file or a directory of monthly *.csv files"
    )]
    NotFound(PathBuf),
    /// A directory without any `*.csv` file.
    #[error("directory {0} holds no *.csv file: add the monthly user-registration CSV files there")]
    NoCsvFiles(PathBuf),
    /// A file could not be read or parsed as CSV.
    #[error("cannot read users CSV {path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: csv::Error,
    },
    /// A directory could not be listed.
    #[error("cannot list directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file has no header or no `user_id` column.
    #[error(
        "users CSV {path} has no user_id column (header: {header}): add a header row naming the user_id column"
    )]
    NoUserIdColumn {
        /// The file.
        path: PathBuf,
        /// The header row found (`<empty file>` when there was none).
        header: String,
    },
    /// Every row was invalid or the files held no rows.
    #[error(
        "no valid user id in {path} ({skipped} invalid rows): the user_id column must hold UUIDs"
    )]
    NoValidUsers {
        /// The path given.
        path: PathBuf,
        /// How many rows were skipped.
        skipped: usize,
    },
}

impl Users {
    /// One line summarising the skipped rows, for a single warning; `None` when none were.
    pub fn skipped_summary(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        const SHOWN: usize = 10;
        let mut parts: Vec<String> = self
            .skipped
            .iter()
            .take(SHOWN)
            .map(|s| format!("{}:{} ({})", s.file.display(), s.line, s.reason))
            .collect();
        if self.skipped.len() > SHOWN {
            parts.push(format!("and {} more", self.skipped.len() - SHOWN));
        }
        Some(format!(
            "skipped {} invalid user rows: {}",
            self.skipped.len(),
            parts.join(", ")
        ))
    }
}

impl fmt::Display for SkippedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Loads the users from a CSV file or a directory of `*.csv` files.
///
/// # Errors
/// [`UsersError`] when the path does not exist, holds no CSV file, a file cannot be read,
/// has no `user_id` column, or when no valid id remains.
pub fn load_users(path: &Path) -> Result<Users, UsersError> {
    if !path.exists() {
        return Err(UsersError::NotFound(path.to_owned()));
    }
    let files = if path.is_dir() {
        csv_files_in(path)?
    } else {
        vec![path.to_owned()]
    };
    let mut users = Users {
        ids: Vec::new(),
        attributes: Vec::new(),
        files: Vec::new(),
        skipped: Vec::new(),
        duplicates: 0,
    };
    let mut seen = HashSet::new();
    for file in files {
        let content = std::fs::File::open(&file).map_err(|e| UsersError::Csv {
            path: file.clone(),
            source: e.into(),
        })?;
        read_file(&file, content, &mut users, &mut seen)?;
        users.files.push(file);
    }
    if users.ids.is_empty() {
        return Err(UsersError::NoValidUsers {
            path: path.to_owned(),
            skipped: users.skipped.len(),
        });
    }
    Ok(users)
}

/// Watches a users directory for users added while the producer runs: new monthly files
/// dropped there, or files that grew. A file is read once it is complete: it ends with a
/// line break, or it stopped changing between two looks (a file copied in place is read
/// when the copy is done, not half-way).
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    /// Each file's length and modification time when last read (or last seen unfinished).
    files: std::collections::HashMap<PathBuf, (u64, Option<std::time::SystemTime>, bool)>,
    seen: HashSet<Uuid>,
    /// The last failure to list the directory, reported once.
    listing: Option<String>,
}

impl Watcher {
    /// A watcher of `dir`, made before its users are loaded (then [`Watcher::knowing`]).
    pub fn new(dir: &Path) -> Watcher {
        // Looked at before the users are loaded: a file that changes between this look and
        // the load is read again at the first rescan (its users are known by then, and
        // only the new ones count), rather than missed.
        let files = csv_files_in(dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| {
                let (_, len, modified, complete) = stamp(&f)?;
                Some((f, (len, modified, complete)))
            })
            .collect();
        Watcher {
            dir: dir.to_owned(),
            files,
            seen: HashSet::new(),
            listing: None,
        }
    }

    /// The same watcher, knowing the users loaded from the directory after [`Watcher::new`].
    #[must_use]
    pub fn knowing(mut self, users: &Users) -> Watcher {
        self.seen.extend(users.ids.iter().copied());
        self
    }

    /// The users of new or changed files since the last look (none: empty `ids`), with the
    /// rows skipped in them, and what could not be read: the directory listing, or a file
    /// (each reported once, and read again when it changes).
    pub fn rescan(&mut self) -> (Users, Vec<UsersError>) {
        let mut users = Users::default();
        let files = match csv_files_in(&self.dir) {
            Ok(files) => files,
            Err(UsersError::NoCsvFiles(_)) => Vec::new(),
            Err(e) => {
                let text = e.to_string();
                let again = self.listing.replace(text.clone()) == Some(text);
                return (users, if again { Vec::new() } else { vec![e] });
            }
        };
        self.listing = None;
        let mut errors = Vec::new();
        for file in files {
            // one handle for the look and the read: a file renamed over in between is
            // read as it was looked at
            let Some((handle, len, modified, complete)) = stamp(&file) else {
                continue;
            };
            let last = self.files.get(&file).copied();
            if last.is_some_and(|(l, m, done)| done && l == len && m == modified) {
                continue;
            }
            // unfinished and still changing: looked at again next time
            let settled = last.is_some_and(|(l, m, _)| l == len && m == modified);
            if !complete && !settled {
                self.files.insert(file, (len, modified, false));
                continue;
            }
            self.files.insert(file.clone(), (len, modified, true));
            // only what was looked at: a row appended since may be half-written
            let looked_at = std::io::Read::take(handle, len);
            match read_file(&file, looked_at, &mut users, &mut self.seen) {
                Ok(()) => users.files.push(file),
                Err(e) => errors.push(e),
            }
        }
        (users, errors)
    }
}

/// A file opened at its start, with its length, modification time and whether it ends
/// with a line break.
fn stamp(path: &Path) -> Option<(std::fs::File, u64, Option<std::time::SystemTime>, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    let len = meta.len();
    let mut last = [0u8; 1];
    let complete = len == 0
        || file
            .seek(SeekFrom::Start(len - 1))
            .and_then(|_| file.read_exact(&mut last))
            .is_ok_and(|()| last[0] == b'\n');
    file.seek(SeekFrom::Start(0)).ok()?;
    Some((file, len, meta.modified().ok(), complete))
}

fn csv_files_in(dir: &Path) -> Result<Vec<PathBuf>, UsersError> {
    let dir_err = |source| UsersError::Dir {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let path = entry.map_err(dir_err)?.path();
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if is_csv && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(UsersError::NoCsvFiles(dir.to_owned()));
    }
    files.sort();
    Ok(files)
}

/// Reads the users of one file from `content`.
fn read_file(
    path: &Path,
    content: impl std::io::Read,
    users: &mut Users,
    seen: &mut HashSet<Uuid>,
) -> Result<(), UsersError> {
    let csv_err = |source| UsersError::Csv {
        path: path.to_owned(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(content);
    let header = reader.headers().map_err(csv_err)?.clone();
    let named = |name: &str| {
        header.iter().position(|h| {
            h.trim_start_matches('\u{feff}')
                .trim()
                .eq_ignore_ascii_case(name)
        })
    };
    let column = named("user_id");
    let (country, registered) = (named("country"), named("registration_date"));
    let Some(column) = column else {
        let header = if header.is_empty() {
            "<empty file>".to_owned()
        } else {
            header.iter().collect::<Vec<_>>().join(",")
        };
        return Err(UsersError::NoUserIdColumn {
            path: path.to_owned(),
            header,
        });
    };
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_err)? {
        let line = record.position().map_or(0, |p| p.line());
        let value = record.get(column).unwrap_or("");
        let skip = |reason: String| SkippedRow {
            file: path.to_owned(),
            line,
            reason,
        };
        if value.is_empty() {
            if record.iter().all(str::is_empty) {
                continue; // a blank line is not a row
            }
            users.skipped.push(skip("empty user_id".into()));
            continue;
        }
        match Uuid::parse_str(value) {
            Ok(id) => {
                if seen.insert(id) {
                    users.ids.push(id);
                    users.attributes.push(UserAttributes::from_fields(
                        country.and_then(|c| record.get(c)),
                        registered.and_then(|c| record.get(c)),
                    ));
                } else {
                    users.duplicates += 1;
                }
            }
            Err(_) => users.skipped.push(skip(format!("{value:?} is not a UUID"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const A: &str = "5f0c8a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6";
    const B: &str = "6a1d9b4f-2c3e-4d6f-9a01-b2c3d4e5f6a7";
    const C: &str = "7b2eac50-3d4f-4e70-8b12-c3d4e5f6a7b8";

    fn file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content)
            .unwrap();
        path
    }

    fn ids(users: &Users) -> Vec<String> {
        users.ids.iter().map(Uuid::to_string).collect()
    }

    #[test]
    fn finds_user_id_by_header_in_any_position_and_case() {
        let dir = tempfile::tempdir().unwrap();
        for (i, header) in ["user_id,name", "name,USER_ID,email", "email, User_Id "]
            .iter()
            .enumerate()
        {
            let cols: Vec<&str> = header.split(',').collect();
            let pos = cols
                .iter()
                .position(|c| c.trim().eq_ignore_ascii_case("user_id"))
                .unwrap();
            let mut row = vec!["x"; cols.len()];
            row[pos] = A;
            let content = format!("{header}\n{}\n", row.join(","));
            let path = file(dir.path(), &format!("h{i}.csv"), content.as_bytes());
            assert_eq!(ids(&load_users(&path).unwrap()), vec![A], "{header}");
        }
    }

    #[test]
    fn tolerates_a_utf8_bom() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            dir.path(),
            "bom.csv",
            format!("\u{feff}user_id,name\n{A},Ann\n").as_bytes(),
        );
        assert_eq!(ids(&load_users(&path).unwrap()), vec![A]);
    }

    #[test]
    fn skips_bad_rows_reporting_file_and_line_and_removes_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let content =
            format!("user_id,name\n{A},Ann\n,Nobody\nnot-a-uuid,Bob\n{A},Ann again\n\n{B},Cid\n");
        let path = file(dir.path(), "mixed.csv", content.as_bytes());
        let users = load_users(&path).unwrap();
        assert_eq!(ids(&users), vec![A, B]);
        assert_eq!(users.duplicates, 1);
        let lines: Vec<u64> = users.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![3, 4]);
        let summary = users.skipped_summary().unwrap();
        assert!(summary.contains("mixed.csv:3 (empty user_id)"), "{summary}");
        assert!(summary.contains("mixed.csv:4"), "{summary}");
        assert!(summary.contains("not-a-uuid"), "{summary}");
    }

    #[test]
    fn empty_file_and_missing_column_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file(dir.path(), "empty.csv", b"");
        let err = load_users(&empty).unwrap_err();
        assert!(matches!(err, UsersError::NoUserIdColumn { .. }), "{err}");
        assert!(err.to_string().contains("<empty file>"), "{err}");

        let no_col = file(
            dir.path(),
            "nocol.csv",
            format!("id,name\n{A},Ann\n").as_bytes(),
        );
        let err = load_users(&no_col).unwrap_err();
        assert!(
            err.to_string()
                .contains("no user_id column (header: id,name)"),
            "{err}"
        );

        let only_header = file(dir.path(), "header.csv", b"user_id,name\n");
        assert!(matches!(
            load_users(&only_header).unwrap_err(),
            UsersError::NoValidUsers { skipped: 0, .. }
        ));
        let all_bad = file(dir.path(), "bad.csv", b"user_id\nx\ny\n");
        let err = load_users(&all_bad).unwrap_err();
        assert!(
            matches!(err, UsersError::NoValidUsers { skipped: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_path_and_empty_directory_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_users(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("USERS_CSV_PATH"), "{err}");
        file(dir.path(), "readme.txt", b"not csv");
        let err = load_users(dir.path()).unwrap_err();
        assert!(matches!(err, UsersError::NoCsvFiles(_)), "{err}");
    }

    #[test]
    fn reads_every_csv_of_a_directory_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        file(
            dir.path(),
            "users_2025_02.csv",
            format!("user_id\n{B}\n{A}\n").as_bytes(),
        );
        file(
            dir.path(),
            "users_2025_01.CSV",
            format!("name,user_id\nAnn,{A}\n").as_bytes(),
        );
        file(
            dir.path(),
            "users_2025_03.csv",
            format!("user_id\n{C}\n").as_bytes(),
        );
        file(dir.path(), "notes.txt", b"user_id\nnot read\n");
        let users = load_users(dir.path()).unwrap();
        assert_eq!(ids(&users), vec![A, B, C]);
        assert_eq!(users.files.len(), 3);
        assert_eq!(users.duplicates, 1);
        assert!(users.skipped.is_empty());
    }

    #[test]
    fn the_shipped_sample_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/users");
        let users = load_users(&dir).unwrap();
        assert!(users.ids.len() >= 100, "{} users", users.ids.len());
        assert!(users.files.len() >= 3);
        assert!(users.skipped.is_empty(), "{:?}", users.skipped_summary());
    }

    /// New files and grown files are picked up, each user once; a file still being written
    /// (no final line break) waits until it is complete or stops changing; an unreadable
    /// file is reported once and read again when it changes.
    #[test]
    fn the_watcher_picks_up_new_users_once_and_waits_for_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        file(
            d,
            "users_2025_01.csv",
            format!("user_id,country\n{A},DE\n").as_bytes(),
        );
        let w = Watcher::new(d);
        let users = load_users(d).unwrap();
        let mut w = w.knowing(&users);
        let (new, errors) = w.rescan();
        assert!(new.ids.is_empty() && errors.is_empty());

        // a new month, with one known user again
        file(
            d,
            "users_2025_02.csv",
            format!("user_id,country\n{B},FR\n{A},DE\n").as_bytes(),
        );
        let (new, errors) = w.rescan();
        assert_eq!((ids(&new), errors.len()), (vec![B.to_owned()], 0));
        assert_eq!(new.attributes[0].country.as_deref(), Some("FR"));
        assert!(w.rescan().0.ids.is_empty(), "read once");

        // half-written: the last line has no line break yet
        let partial = format!("user_id,registration_date\n{C},2025-0");
        file(d, "users_2025_03.csv", partial.as_bytes());
        assert!(w.rescan().0.ids.is_empty(), "still being written");
        file(
            d,
            "users_2025_03.csv",
            format!("user_id,registration_date\n{C},2025-03-09\n").as_bytes(),
        );
        let (new, _) = w.rescan();
        assert_eq!(ids(&new), vec![C.to_owned()]);
        assert_eq!(
            new.attributes[0].registered,
            chrono::NaiveDate::from_ymd_opt(2025, 3, 9)
        );

        // a file without a final line break that stopped changing is read at the next look
        let d4 = "8c3fbd61-4e50-4f81-9c23-d4e5f6a7b8c9";
        file(d, "users_2025_04.csv", format!("user_id\n{d4}").as_bytes());
        assert!(w.rescan().0.ids.is_empty());
        assert_eq!(ids(&w.rescan().0), vec![d4.to_owned()]);

        // a file that grew: only its new users
        let e5 = "9d40ce72-5f61-4a92-8d34-e5f6a7b8c9d0";
        file(
            d,
            "users_2025_02.csv",
            format!("user_id\n{B}\n{e5}\n").as_bytes(),
        );
        assert_eq!(ids(&w.rescan().0), vec![e5.to_owned()]);

        // unreadable: reported once
        file(d, "users_2025_05.csv", b"name,email\nx,y\n");
        let (new, errors) = w.rescan();
        assert!(new.ids.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("no user_id column"),
            "{}",
            errors[0]
        );
        assert!(w.rescan().1.is_empty(), "reported once");

        // a directory that went away: reported once too
        std::fs::remove_dir_all(d).unwrap();
        let (new, errors) = w.rescan();
        assert!(new.ids.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(w.rescan().1.is_empty(), "reported once");
    }
}
