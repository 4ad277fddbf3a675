//! Loading: reads the main config file and the files its `include` globs match (each
//! trusted, bounded, parsed by serde and located on error), then validates `[daemon]` and
//! every account ([`super::account`]) and runs the cross-account checks
//! ([`super::checks`]), collecting *every* problem (with its file, line and column)
//! instead of stopping at the first. Pure apart from reading the config files, secret
//! files and user/group databases: no network, no spawning, so `tokend check` and a hot
//! reload can run it safely.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use super::account::validate_account;
use super::raw::{AccountConfig, FileConfig};
use super::{Config, checks};
use crate::config::error::{
    ConfigError, ConfigErrors, Source, Validator, line_column, locate, path_at,
};
use crate::config::raw::DaemonConfig;
use crate::config::validate::validate_daemon;
use crate::config::{files, include};

/// [`load`] without reading any secret ([`crate::config::secret::structure_only`]): the
/// accounts, sinks, timing and state dir, for `tokend status` and `tokend token`.
/// Fingerprints of a config loaded this way are meaningless, and its placeholder secrets
/// are not registered for redaction.
pub fn load_structure(path: &Path) -> Result<Config, ConfigErrors> {
    crate::config::secret::structure_only(|| crate::redact::collect(|| load_unregistered(path)).0)
}

/// Loads, parses and validates the config at `path` and every file it includes. A valid
/// config's secrets replace the redaction registry's (`crate::redact`): from now on they
/// are redacted from every log line, error and status text, in every encoding.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let (config, secrets) = crate::redact::collect(|| load_unregistered(path));
    if config.is_ok() {
        crate::redact::replace_config(secrets);
    }
    config
}

fn load_unregistered(path: &Path) -> Result<Config, ConfigErrors> {
    note_environment_secrets();
    let main = read_source(path).map_err(|message| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            path: String::new(),
            message,
        }])
    })?;
    let main_file = parse(&main).map_err(|e| ConfigErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut files = vec![(main.clone(), main_file.clone())];
    let mut include_dirs = Vec::new();
    for pattern in &main_file.include {
        let full = main.dir().join(pattern);
        if let Some(dir) = full.parent() {
            include_dirs.push(dir.to_path_buf());
        }
        let matched = match include::expand(&full) {
            Ok(matched) => matched,
            Err(m) => {
                errors.push(error_at(&main, "include", format!("{pattern:?} {m}")));
                continue;
            }
        };
        if matched.is_empty() && !pattern.contains(['*', '?', '[']) {
            errors.push(error_at(
                &main,
                "include",
                format!("{} does not exist", full.display()),
            ));
        }
        for file in matched {
            if files.iter().any(|(s, _)| s.path == file) {
                continue;
            }
            // A file that cannot be read or trusted is reported at the `include` that
            // names it; a syntax error inside it, in the file itself.
            let source = match read_source(&file) {
                Ok(source) => source,
                Err(m) => {
                    errors.push(error_at(&main, "include", m));
                    continue;
                }
            };
            match parse(&source) {
                Ok(parsed) => {
                    if !parsed.include.is_empty() || parsed.daemon.is_some() {
                        errors.push(error_at(
                            &source,
                            "",
                            "an included file may only hold [[account]] tables",
                        ));
                    }
                    files.push((source, parsed));
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let daemon = {
        let mut v = Validator::new(&mut problems, main.clone());
        validate_daemon(
            &mut v.key("daemon"),
            main_file
                .daemon
                .as_ref()
                .unwrap_or(&DaemonConfig::default()),
        )
    };
    let coordination = main_file
        .daemon
        .as_ref()
        .and_then(|d| d.coordination.as_ref())
        .and_then(|table| {
            let mut v = Validator::new(&mut problems, main.clone());
            let mut d = v.key("daemon");
            match table
                .clone()
                .try_into::<crate::coordination::CoordinationConfig>()
            {
                Ok(c) => c.build(&mut d.key("coordination")).map(std::sync::Arc::new),
                Err(e) => {
                    d.error("coordination", e.message().trim().to_string());
                    None
                }
            }
        });
    let mut accounts = Vec::new();
    let mut seen: HashMap<String, (Arc<Source>, usize)> = HashMap::new();
    let mut sink_paths = checks::SinkPaths::default();
    let mut secret_files = Vec::new();
    for (source, file) in &files {
        let mut literal_fields = Vec::new();
        for (index, raw) in file.account.iter().enumerate() {
            let mut v = Validator::new(&mut problems, source.clone());
            let mut av = v.account(index, &raw.name);
            if let Some((first, first_index)) = seen.get(&raw.name) {
                let (line, _) = account_line(first, *first_index);
                av.error(
                    "name",
                    format!(
                        "duplicate account name, first defined at {}:{line}",
                        first.path.display()
                    ),
                );
            } else {
                seen.insert(raw.name.clone(), (source.clone(), index));
            }
            literal_fields.extend(
                literal_secrets(raw)
                    .into_iter()
                    .map(|f| format!("account {:?} {f}", raw.name)),
            );
            if let Some(account) = validate_account(&mut av, raw, &daemon) {
                accounts.push(account);
            }
            sink_paths.add(&mut problems, source, index, raw);
            warnings.extend(checks::readable_secret_files(raw, source.dir()));
            secret_files.extend(checks::secret_files(raw, source.dir()));
        }
        if !literal_fields.is_empty() && readable_by_others(&source.path) {
            warnings.push(format!(
                "{} is readable by group or others and holds literal secrets ({}): use {{ file = \"…\" }}, {{ env = \"…\" }} or {{ credential = \"…\" }}, or chmod 600",
                source.path.display(),
                literal_fields.join(", ")
            ));
        }
    }
    if let Some(c) = &coordination {
        checks::claim_ttl_covers_timeouts(&mut problems, &main, c.claim_ttl, &accounts);
    }
    if !problems.is_empty() {
        return Err(locate(problems));
    }
    Ok(Config {
        path: main.path.clone(),
        files: files
            .iter()
            .map(|(s, _)| s.path.clone())
            .chain(secret_files)
            .collect(),
        include_dirs,
        daemon,
        coordination,
        accounts,
        warnings,
    })
}

/// Secrets the AWS SDK's standard chain reads from the environment (the AWS sink's
/// credentials): not config values, but a server could echo them all the same.
fn note_environment_secrets() {
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "VAULT_TOKEN"] {
        if let Ok(value) = std::env::var(var) {
            crate::redact::note(var, &value);
        }
    }
}

/// Reads a config file or an include through [`files::read_trusted`] (a regular file that
/// only root or tokend's user can write, at most 16 MiB). The error names the path.
fn read_source(path: &Path) -> Result<Arc<Source>, String> {
    let file = files::read_trusted(path, "config file", files::CONFIG_CAP)?;
    let text = String::from_utf8(file.bytes)
        .map_err(|_| format!("config file {} is not valid UTF-8", path.display()))?;
    Ok(Arc::new(Source {
        path: path.to_path_buf(),
        text,
    }))
}

/// Serde step: the first syntax or shape error, located.
fn parse(source: &Source) -> Result<FileConfig, ConfigError> {
    toml::from_str::<FileConfig>(&source.text).map_err(|e| {
        let mut offset = e.span().map_or(0, |s| s.start);
        let mut message = e.message().trim().replace('\n', " ");
        // serde reports an unknown key against its whole table: point at the key itself.
        let unknown = ["unknown field `", "unexpected key `"]
            .iter()
            .find_map(|p| message.split_once(p))
            .and_then(|(_, m)| m.split('`').next())
            .map(str::to_string);
        let (path, key_offset) = path_at(&source.text, offset, unknown.as_deref());
        offset = key_offset.unwrap_or(offset);
        if message.contains("leading zero") {
            message.push_str(" (TOML integers cannot start with 0: write a file mode as an octal string, e.g. mode = \"0640\")");
        }
        let (line, column) = line_column(&source.text, offset);
        ConfigError { file: source.path.clone(), line, column, path, message }
    })
}

/// A located error against a top-level key of `source` (or the file itself when `key` is empty).
fn error_at(source: &Arc<Source>, key: &str, message: impl Into<String>) -> ConfigError {
    let mut problems = Vec::new();
    Validator::new(&mut problems, source.clone()).error(key, message);
    locate(problems).0.remove(0)
}

fn account_line(source: &Arc<Source>, index: usize) -> (usize, usize) {
    let mut problems = Vec::new();
    Validator::new(&mut problems, source.clone())
        .account(index, "")
        .error("", "");
    let e = locate(problems).0.remove(0);
    (e.line, e.column)
}

fn readable_by_others(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}

/// The fields of an account that hold a literal secret (identifiers are not secrets).
fn literal_secrets(raw: &AccountConfig) -> Vec<String> {
    checks::secret_values(raw)
        .into_iter()
        .filter(|(name, value)| {
            value.is_literal() && !matches!(name.as_str(), "username" | "client_id")
        })
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: absurd durations are located config errors, never a panic at run time;
    /// humantime's own overflow is an error too.
    #[test]
    fn durations_out_of_range_are_located_errors() {
        let account = "[[account]]\nname = \"a\"\nprovider = \"zarv\"\nbase_url = \"http://127.0.0.1:1/z\"\nusername = \"u\"\npassword = \"p\"\n";
        let cases: [(&str, &str, &str); 12] = [
            (
                "[daemon.refresh]\ndefault_lifetime = \"10000y\"\n",
                "",
                "daemon.refresh.default_lifetime: \"10000y\" is out of range: expected 3s to 1year",
            ),
            (
                "[daemon.refresh]\ndefault_lifetime = \"1s\"\n",
                "",
                "default_lifetime: \"1s\" is out of range",
            ),
            (
                "[daemon.refresh]\nmin_margin = \"2y\"\n",
                "",
                "daemon.refresh.min_margin: \"2y\" is out of range: expected at most 1year",
            ),
            (
                "[daemon.retry]\nmax = \"500000000000y\"\n",
                "",
                "daemon.retry.max: \"500000000000y\" is",
            ),
            (
                "[daemon.retry]\nmax = \"99999999999999999999999y\"\n",
                "",
                "daemon.retry.max: \"99999999999999999999999y\" is not a duration",
            ),
            (
                "[daemon.retry]\ninitial = \"400d\"\nmax = \"400d\"\n",
                "",
                "daemon.retry.initial: \"400d\" is out of range",
            ),
            (
                "",
                "timeout = \"11m\"\n",
                "timeout: \"11m\" is out of range: expected 1s to 10m",
            ),
            (
                "",
                "timeout = \"500ms\"\n",
                "timeout: \"500ms\" is out of range: expected 1s to 10m",
            ),
            ("", "timeout = \"0s\"\n", "timeout: \"0s\" is out of range"),
            (
                "",
                "[account.refresh]\ndefault_lifetime = \"18446744073709551615s\"\n",
                "default_lifetime: \"18446744073709551615s\" is out of range",
            ),
            (
                "",
                "[[account.notify]]\ncommand = [\"true\"]\ntimeout = \"1h\"\n",
                "notify[0].timeout: \"1h\" is out of range: expected 1s to 10m",
            ),
            (
                "",
                "[[account.sink]]\ntype = \"vault\"\naddress = \"http://127.0.0.1:1\"\npath = \"x\"\nauth = { token = \"t\" }\ntimeout = \"1y\"\n",
                "timeout: \"1y\" is out of range: expected 1s to 10m",
            ),
        ];
        let dir = std::env::temp_dir().join(format!("tokend-durations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        for (daemon, extra, want) in cases {
            let text = format!("{daemon}{account}{extra}");
            std::fs::write(&path, &text).unwrap();
            let e = load(&path).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(want), "{text}\nexpected {want:?} in:\n{e}");
            assert!(e.contains("t.toml:"), "{e}");
        }
        std::fs::write(&path, format!("[daemon.refresh]\ndefault_lifetime = \"1y\"\n[daemon.retry]\nmax = \"1y\"\n{account}timeout = \"10m\"\n")).unwrap();
        assert!(load(&path).is_ok(), "the bounds themselves are in range");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
