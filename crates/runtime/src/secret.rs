//! Secrets: a string that never prints, the `_FILE` convention of the official images
//! (`POSTGRES_PASSWORD_FILE`, `KAFKA_SASL_PASSWORD_FILE`), and the redaction of librdkafka
//! options that carry secrets, for start-up lines.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A secret value (a password, a URL with a password in it). `Debug` and `Display` print
/// `<redacted>`; [`Secret::expose`] gives the value to the code that needs it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: only for handing it to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// A configuration that cannot be used, in one line naming the setting and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The secret given either directly (`value`, from `name`) or in a file (`file`, from
/// `name_FILE`); `None` when neither is set. The file's content is taken whole but for
/// its trailing line breaks, as the official images read theirs.
///
/// # Errors
/// Both are set, or the file cannot be read.
pub fn value_or_file(
    name: &str,
    value: Option<Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError(format!(
            "both {name} and {name}_FILE are set: keep one (the file keeps the secret out of the environment)"
        ))),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => read_secret_file(name, path).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_secret_file(name: &str, path: &Path) -> Result<Secret, ConfigError> {
    let content = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read {name}_FILE {} ({e}): point it at a readable file holding the secret",
            path.display()
        ))
    })?;
    let value = content.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(ConfigError(format!(
            "{name}_FILE {} is empty: write the secret into it",
            path.display()
        )));
    }
    Ok(Secret::new(value))
}

/// Whether a librdkafka option holds a secret (its value is never logged).
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("passphrase")
        || key.contains("secret")
        || key.ends_with(".pem")
        || key == "sasl.oauthbearer.config"
}

/// `key=value` pairs for a log line, with the values of secret options redacted.
pub fn redacted_options(options: &[(String, String)]) -> Vec<String> {
    options
        .iter()
        .map(|(k, v)| {
            if is_secret_option(k) {
                format!("{k}=<redacted>")
            } else {
                format!("{k}={v}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
        let opts = vec![
            ("sasl.password".to_owned(), "hunter2".to_owned()),
            ("SSL.KEY.PASSWORD".to_owned(), "k".to_owned()),
            ("ssl.key.pem".to_owned(), "-----BEGIN".to_owned()),
            ("sasl.oauthbearer.client.secret".to_owned(), "s".to_owned()),
            ("linger.ms".to_owned(), "5".to_owned()),
        ];
        let shown = redacted_options(&opts).join(" ");
        assert!(
            !shown.contains("hunter2") && !shown.contains("BEGIN"),
            "{shown}"
        );
        assert!(!shown.contains("=k") && !shown.contains("=s "), "{shown}");
        assert!(is_secret_option(
            "sasl.oauthbearer.assertion.private.key.passphrase"
        ));
        assert!(shown.contains("linger.ms=5"), "{shown}");
    }

    #[test]
    fn a_secret_comes_from_the_value_or_the_file_never_both() {
        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\r\n\n").unwrap();
        let read = value_or_file("X_PASSWORD", None, Some(&file)).unwrap();
        assert_eq!(read.unwrap().expose(), "s3cret");
        let both = value_or_file("X_PASSWORD", Some(Secret::new("a")), Some(&file));
        assert!(both.unwrap_err().0.contains("X_PASSWORD_FILE"));
        let missing = value_or_file("X_PASSWORD", None, Some(&dir.join("none")));
        assert!(
            missing
                .unwrap_err()
                .0
                .contains("cannot read X_PASSWORD_FILE")
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(
            value_or_file("X_PASSWORD", None, Some(&file))
                .unwrap_err()
                .0
                .contains("empty")
        );
        assert_eq!(value_or_file("X_PASSWORD", None, None).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
