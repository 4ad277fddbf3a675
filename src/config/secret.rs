//! Secret values in the config: `"literal"`, `{ env = "VAR" }`, `{ file = "/path" }` or
//! `{ credential = "name" }` (SPEC §3). The raw form is parsed by serde with a small visitor
//! (an untagged enum would lose the error location); [`SecretValueConfig::resolve`] reads the
//! value during validation. Resolved values are [`secrecy::SecretString`]s, whose `Debug`
//! prints a redaction marker, so a secret never reaches a log line by accident.

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::files;

thread_local! {
    /// Set while [`structure_only`] runs on this thread: secrets are not read.
    static STRUCTURE_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// What a secret reads as in a structure-only load: nothing was read.
pub const UNREAD: &str = "unread";

/// Runs `f` (a config load) without resolving any secret: every secret value reads as
/// [`UNREAD`], and no variable, file or credential is looked at. `tokend status` and
/// `tokend token` need the config's structure (accounts, sinks, timing, the state dir),
/// never its secrets, and must work from an operator's shell that has none of them (SPEC
/// §2). Configs loaded this way must not be used to talk to a provider or a store.
pub fn structure_only<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            STRUCTURE_ONLY.set(false);
        }
    }
    STRUCTURE_ONLY.set(true);
    let _reset = Reset;
    f()
}

/// Where a secret comes from, as written in the config.
#[derive(Clone)]
pub enum SecretValueConfig {
    /// The value itself, written in the config file.
    Literal(SecretString),
    /// An environment variable of the tokend process.
    Env(String),
    /// A file; one trailing newline (`\n` or `\r\n`) is trimmed.
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>` (`LoadCredential=`).
    Credential(String),
}

impl PartialEq for SecretValueConfig {
    fn eq(&self, other: &Self) -> bool {
        use SecretValueConfig::*;
        match (self, other) {
            (Literal(a), Literal(b)) => a.expose_secret() == b.expose_secret(),
            (Env(a), Env(b)) | (Credential(a), Credential(b)) => a == b,
            (File(a), File(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Debug for SecretValueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretValueConfig::Literal(_) => f.write_str("Literal([REDACTED])"),
            SecretValueConfig::Env(var) => write!(f, "Env({var:?})"),
            SecretValueConfig::File(path) => write!(f, "File({path:?})"),
            SecretValueConfig::Credential(name) => write!(f, "Credential({name:?})"),
        }
    }
}

impl SecretValueConfig {
    /// True for a value written in the config file itself (SPEC §3: warn when the file is
    /// readable by group or others).
    pub fn is_literal(&self) -> bool {
        matches!(self, SecretValueConfig::Literal(_))
    }

    /// Reads the secret. Errors name the source (variable, path), never the value.
    pub fn resolve(&self, base_dir: &Path) -> Result<SecretString, String> {
        if STRUCTURE_ONLY.get() {
            return Ok(SecretString::from(UNREAD));
        }
        match self {
            SecretValueConfig::Literal(value) => Ok(value.clone()),
            SecretValueConfig::Env(var) => match std::env::var(var) {
                Ok(value) => Ok(SecretString::from(value)),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("environment variable {var:?} is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("environment variable {var:?} is not valid UTF-8"))
                }
            },
            SecretValueConfig::File(path) => read_secret_file(&base_dir.join(path)),
            SecretValueConfig::Credential(name) => {
                if name.is_empty() || name.contains('/') {
                    return Err(format!(
                        "credential name {name:?} must be a plain file name"
                    ));
                }
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                    return Err(format!(
                        "credential {name:?}: $CREDENTIALS_DIRECTORY is not set \
                         (use LoadCredential= in the systemd unit)"
                    ));
                };
                read_secret_file(&Path::new(&dir).join(name))
            }
        }
    }

    /// The file behind a `{ file = … }` or `{ credential = … }` value, for the warning about
    /// secret files others can read; `None` for the other forms (and a bad credential name,
    /// which [`Self::resolve`] reports).
    pub fn file_path(&self, base_dir: &Path) -> Option<PathBuf> {
        match self {
            SecretValueConfig::File(path) => Some(base_dir.join(path)),
            SecretValueConfig::Credential(name) if !name.is_empty() && !name.contains('/') => {
                std::env::var_os("CREDENTIALS_DIRECTORY").map(|dir| Path::new(&dir).join(name))
            }
            _ => None,
        }
    }
}

/// Reads a secret file through [`files::read_trusted`]: a regular file of at most 64 KiB
/// that only its owner (root or tokend's user) can write, so a FIFO or `/dev/zero` cannot hang
/// `check` and another user cannot choose what tokend sends (issue 12).
fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    let file = files::read_trusted(path, "secret file", files::SECRET_CAP)?;
    let mut text = String::from_utf8(file.bytes)
        .map_err(|_| format!("secret file {} is not valid UTF-8", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(SecretString::from(text))
}

/// The error for a secret value of the wrong type, which never quotes the value.
fn wrong_type<E: de::Error>(got: &str) -> E {
    E::custom(format!(
        "expected a secret value: a string, {{ env = \"VAR\" }}, {{ file = \"/path\" }} or \
         {{ credential = \"name\" }}, not {got} (its value is not shown)"
    ))
}

impl<'de> Deserialize<'de> for SecretValueConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretValueConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a secret value: a string, { env = \"VAR\" }, { file = \"/path\" } \
             or { credential = \"name\" }",
        )
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(SecretValueConfig::Literal(SecretString::from(value)))
    }

    // A value of the wrong type may still be the secret (`password = 12345678`): serde's
    // own message would quote it ("invalid type: integer `12345678`"), so these name the
    // type only (issue 12 finding 3).
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(wrong_type("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(wrong_type("an integer"))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
        Err(wrong_type("an integer"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(wrong_type("an integer"))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
        Err(wrong_type("an integer"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(wrong_type("a float"))
    }

    fn visit_char<E: de::Error>(self, _: char) -> Result<Self::Value, E> {
        Err(wrong_type("a character"))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Err(wrong_type("bytes"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(wrong_type("an array"))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(SecretValueConfig::Literal(SecretString::from(value)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "empty table: expected one of `env`, `file` or `credential`",
            ));
        };
        // The key first: under an unknown key the value may be the secret itself
        // (`{ value = 12345678 }`), and reading it as a string would quote it.
        if !matches!(key.as_str(), "env" | "file" | "credential") {
            return Err(de::Error::unknown_field(
                &key,
                &["env", "file", "credential"],
            ));
        }
        let value: String = map.next_value()?;
        let secret = match key.as_str() {
            "env" => SecretValueConfig::Env(value),
            "file" => SecretValueConfig::File(PathBuf::from(value)),
            _ => SecretValueConfig::Credential(value),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "unexpected key `{extra}`: a secret value takes exactly one of `env`, `file` or `credential`"
            )));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Holder {
        s: SecretValueConfig,
    }

    #[test]
    fn parses_every_form_and_redacts_literals() {
        let h: Holder = toml::from_str(r#"s = "hunter2""#).unwrap();
        assert!(h.s.is_literal());
        assert!(!format!("{h:?}").contains("hunter2"), "{h:?}");
        let h: Holder = toml::from_str(r#"s = { env = "X" }"#).unwrap();
        assert_eq!(h.s, SecretValueConfig::Env("X".into()));
        let h: Holder = toml::from_str(r#"s = { file = "/p" }"#).unwrap();
        assert_eq!(h.s, SecretValueConfig::File("/p".into()));
        let h: Holder = toml::from_str(r#"s = { credential = "c" }"#).unwrap();
        assert_eq!(h.s, SecretValueConfig::Credential("c".into()));
    }

    #[test]
    fn rejects_unknown_and_extra_keys() {
        let e = toml::from_str::<Holder>(r#"s = { envv = "X" }"#).unwrap_err();
        assert!(e.to_string().contains("envv"), "{e}");
        let e = toml::from_str::<Holder>(r#"s = { env = "X", file = "y" }"#).unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
        assert!(toml::from_str::<Holder>("s = 3").is_err());
    }

    #[test]
    fn file_secret_trims_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("tokend-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "abc\n\n").unwrap();
        let s = SecretValueConfig::File("pw".into()).resolve(&dir).unwrap();
        assert_eq!(s.expose_secret(), "abc\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
