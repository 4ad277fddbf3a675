//! Config errors that point at the file, line, column and key path of the problem
//! (`accounts.d/hub.toml:12:8: account "hub-prod" sink[1].mode: "0999" is not an octal mode`).
//!
//! Validation code does not deal with spans: it reports a problem against a key path through
//! a [`Validator`], and [`locate`] later walks the file's spanned TOML tree
//! (`toml::de::DeTable`) to turn that path into a line and column.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

/// One step of a key path inside one TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An index into an array (of tables).
    Index(usize),
}

/// A config problem with its position, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key path as users read it, e.g. `account "hub-prod" sink[1].mode`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config (validation reports all of them, not only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A problem reported during validation, not yet located in its file.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Which file (index into the list of sources).
    pub source: Arc<Source>,
    /// Raw path inside that file.
    pub at: Vec<Seg>,
    /// Path as users read it.
    pub shown: String,
    /// The message.
    pub message: String,
}

/// One config file's text, kept so that problems can be located after validation.
#[derive(Debug)]
pub struct Source {
    /// Path as given (main file) or as resolved (includes).
    pub path: PathBuf,
    /// The whole file.
    pub text: String,
}

impl Source {
    /// The directory relative paths in this file are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Collects problems while validating one part of the config. A child validator extends the
/// key path; all of them push into the same list.
pub struct Validator<'a> {
    problems: &'a mut Vec<Problem>,
    source: Arc<Source>,
    at: Vec<Seg>,
    shown: String,
}

impl<'a> Validator<'a> {
    /// A validator at the root of `source`.
    pub fn new(problems: &'a mut Vec<Problem>, source: Arc<Source>) -> Self {
        Validator {
            problems,
            source,
            at: Vec::new(),
            shown: String::new(),
        }
    }

    /// The directory relative paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.source.dir()
    }

    /// The file being validated.
    pub fn source(&self) -> &Arc<Source> {
        &self.source
    }

    /// A validator for the table under `key` (shown as `parent.key`).
    pub fn key(&mut self, key: &str) -> Validator<'_> {
        let mut at = self.at.clone();
        at.push(Seg::Key(key.to_string()));
        let shown = join_shown(&self.shown, key);
        Validator {
            problems: self.problems,
            source: self.source.clone(),
            at,
            shown,
        }
    }

    /// A validator for element `index` of the array under `key` (shown as `key[index]`).
    pub fn item(&mut self, key: &str, index: usize) -> Validator<'_> {
        let mut at = self.at.clone();
        at.push(Seg::Key(key.to_string()));
        at.push(Seg::Index(index));
        let shown = join_shown(&self.shown, &format!("{key}[{index}]"));
        Validator {
            problems: self.problems,
            source: self.source.clone(),
            at,
            shown,
        }
    }

    /// A validator for an account: raw path `account[index]`, shown as `account "name"`.
    pub fn account(&mut self, index: usize, name: &str) -> Validator<'_> {
        let at = vec![Seg::Key("account".into()), Seg::Index(index)];
        let shown = format!("account {name:?}");
        Validator {
            problems: self.problems,
            source: self.source.clone(),
            at,
            shown,
        }
    }

    /// Reports a problem with the field `field` of the current table (or with the table
    /// itself when `field` is empty).
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let mut at = self.at.clone();
        let shown = if field.is_empty() {
            self.shown.clone()
        } else {
            at.push(Seg::Key(field.to_string()));
            join_shown(&self.shown, field)
        };
        self.problems.push(Problem {
            source: self.source.clone(),
            at,
            shown,
            message: message.into(),
        });
    }

    /// Resolves a secret value, reporting a problem (never the value) when it cannot be read.
    pub fn secret(
        &mut self,
        field: &str,
        value: &super::secret::SecretValueConfig,
    ) -> Option<secrecy::SecretString> {
        match value.resolve(self.source.dir()) {
            Ok(secret) => {
                // Identifiers (a username, a client or role id) are not secrets on their
                // own: redacting them alone would blank account names and paths in every
                // log line. They are redacted as part of `id:secret` (`redact::note_pair`).
                if !matches!(field, "username" | "client_id" | "role_id") {
                    use secrecy::ExposeSecret;
                    crate::redact::note(field, secret.expose_secret());
                }
                Some(secret)
            }
            Err(message) => {
                self.error(field, message);
                None
            }
        }
    }

    /// Whether any problem has been reported so far (by this validator or any other).
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// Joins a shown path: `account "a"` + `sink[1]` → `account "a" sink[1]`; `a` + `b` → `a.b`.
fn join_shown(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else if parent.ends_with('"') {
        format!("{parent} {child}")
    } else {
        format!("{parent}.{child}")
    }
}

/// Turns problems into located errors: each path is walked in its file's spanned TOML tree,
/// as deep as it exists (a missing key is reported at its parent table).
pub fn locate(problems: Vec<Problem>) -> ConfigErrors {
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|p| {
            let offset = span_of(&p.source.text, &p.at).unwrap_or(0);
            let (line, column) = line_column(&p.source.text, offset);
            ConfigError {
                file: p.source.path.clone(),
                line,
                column,
                path: p.shown,
                message: p.message,
            }
        })
        .collect();
    errors.dedup();
    ConfigErrors(errors)
}

/// Byte offset of the deepest node of `path` that exists in `text`.
fn span_of(text: &str, path: &[Seg]) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for seg in path {
        match seg {
            Seg::Key(key) => {
                let t = match (table, value) {
                    (Some(t), None) => t,
                    (_, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                else {
                    break;
                };
                best = Some(
                    if matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
                        k.span().start
                    } else {
                        v.span().start
                    },
                );
                table = None;
                value = Some(v.get_ref());
            }
            Seg::Index(i) => {
                let Some(DeValue::Array(items)) = value else {
                    break;
                };
                let Some(item) = items.get(*i) else { break };
                best = Some(item.span().start);
                value = Some(item.get_ref());
            }
        }
    }
    best
}

/// The key path (as users read it) of the deepest key whose value contains `offset`, for
/// serde errors, which carry a span but no path. When `field` is given (an unknown key that
/// serde reports against its whole table), also returns the offset of that key inside the
/// deepest table, so the error points at the typo itself.
pub fn path_at(text: &str, offset: usize, field: Option<&str>) -> (String, Option<usize>) {
    let Ok(root) = DeTable::parse(text) else {
        return (String::new(), None);
    };
    let mut shown = String::new();
    let mut table = root.get_ref();
    'outer: loop {
        for (key, value) in table.iter() {
            let key_name = key.get_ref().as_ref();
            if let DeValue::Array(items) = value.get_ref() {
                if let Some((i, item)) = items
                    .iter()
                    .enumerate()
                    .find(|(_, it)| extent(it).contains(&offset))
                {
                    shown = join_shown(&shown, &array_item_name(key_name, i, item.get_ref()));
                    if let DeValue::Table(t) = item.get_ref() {
                        table = t;
                        continue 'outer;
                    }
                    break 'outer;
                }
                continue;
            }
            let in_key = key.span().contains(&offset);
            if !(extent(value).contains(&offset) || in_key) {
                continue;
            }
            shown = join_shown(&shown, key_name);
            match value.get_ref() {
                DeValue::Table(t) if !in_key => {
                    table = t;
                    continue 'outer;
                }
                _ => break 'outer,
            }
        }
        break;
    }
    let Some(field) = field else {
        return (shown, None);
    };
    if let Some((k, _)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == field) {
        // serde's span may already be the key's own (the walk above then ended on it).
        let on_key = k.span().contains(&offset);
        let path = if on_key {
            shown
        } else {
            join_shown(&shown, field)
        };
        return (path, Some(k.span().start));
    }
    // serde's span may cover a whole array of tables; a key named `field` that occurs once
    // in the file is the one.
    let mut hits = Vec::new();
    find_keys(root.get_ref(), field, String::new(), &mut hits);
    match hits.as_slice() {
        [(path, at)] => (path.clone(), Some(*at)),
        _ => (shown, None),
    }
}

fn find_keys(table: &DeTable<'_>, field: &str, shown: String, hits: &mut Vec<(String, usize)>) {
    for (key, value) in table.iter() {
        let name = key.get_ref().as_ref();
        if name == field {
            hits.push((join_shown(&shown, name), key.span().start));
        }
        match value.get_ref() {
            DeValue::Table(t) => find_keys(t, field, join_shown(&shown, name), hits),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(t) = item.get_ref() {
                        find_keys(
                            t,
                            field,
                            join_shown(&shown, &array_item_name(name, i, item.get_ref())),
                            hits,
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// The byte range a value really covers: `[[array.of.tables]]` items are spanned by their
/// header only, so take the union with everything inside.
fn extent(value: &toml::Spanned<DeValue<'_>>) -> std::ops::Range<usize> {
    let mut range = value.span();
    let mut widen = |r: std::ops::Range<usize>| {
        range.start = range.start.min(r.start);
        range.end = range.end.max(r.end);
    };
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                widen(k.span());
                widen(extent(v));
            }
        }
        DeValue::Array(items) => items.iter().for_each(|it| widen(extent(it))),
        _ => {}
    }
    range
}

fn array_item_name(key: &str, index: usize, item: &DeValue<'_>) -> String {
    if let (true, DeValue::Table(t)) = (key == "account", item)
        && let Some((_, name)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == "name")
        && let DeValue::String(n) = name.get_ref()
    {
        return format!("account {:?}", n.as_ref());
    }
    format!("{key}[{index}]")
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str, at: Vec<Seg>) -> ConfigError {
        let source = Arc::new(Source {
            path: "t.toml".into(),
            text: text.into(),
        });
        let mut problems = Vec::new();
        let mut v = Validator::new(&mut problems, source);
        let _ = &mut v;
        problems.push(Problem {
            source: Arc::new(Source {
                path: "t.toml".into(),
                text: text.into(),
            }),
            at,
            shown: "x".into(),
            message: "m".into(),
        });
        locate(problems).0.remove(0)
    }

    #[test]
    fn locates_values_in_arrays_of_tables() {
        let text = "[daemon]\nstate_dir = \"/x\"\n\n[[account]]\nname = \"a\"\n\n[[account]]\nname = \"b\"\n\n[[account.sink]]\ntype = \"file\"\nmode = \"0999\"\n";
        let e = problem(
            text,
            vec![
                Seg::Key("account".into()),
                Seg::Index(1),
                Seg::Key("sink".into()),
                Seg::Index(0),
                Seg::Key("mode".into()),
            ],
        );
        assert_eq!((e.line, e.column), (12, 8));
        let e = problem(
            text,
            vec![
                Seg::Key("account".into()),
                Seg::Index(1),
                Seg::Key("nope".into()),
            ],
        );
        assert_eq!(e.line, 7, "{e}");
    }

    #[test]
    fn shown_paths_read_naturally() {
        let source = Arc::new(Source {
            path: "t.toml".into(),
            text: String::new(),
        });
        let mut problems = Vec::new();
        let mut v = Validator::new(&mut problems, source);
        v.account(0, "hub-prod")
            .item("sink", 1)
            .error("mode", "bad");
        v.key("daemon").key("retry").error("max", "bad");
        let errors = locate(problems);
        assert_eq!(errors.0[0].path, "account \"hub-prod\" sink[1].mode");
        assert_eq!(errors.0[1].path, "daemon.retry.max");
    }
}
