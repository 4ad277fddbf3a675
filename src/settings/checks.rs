//! Config checks that `check` used to miss (issue 12, finding 8), as pure rules where they can
//! be: URL templates with a literal scheme, an empty `state_dir`, a cron schedule that never
//! fires, two file sinks writing one file, and secret files others can read (a warning).
//! Called by [`super::load()`] and [`super::account`]; each returns a message that the caller
//! locates. (`state_dir` is checked with `[daemon]`, in `crate::config::validate`.)

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::raw::AccountConfig;
use crate::config::error::{Problem, Source, Validator, locate};
use crate::config::secret::SecretValueConfig;
use crate::provider::http::check_scheme;
use crate::sink::SinkConfig;

/// A cron schedule must fire within this long: a schedule that does not (`0 0 0 31 2 *`,
/// February 31st) is a mistake, not a plan.
pub const CRON_HORIZON: Duration = Duration::from_secs(5 * 366 * 24 * 3600);

/// Checks the part of an exchange URL template before its first `{{`, `{%` or `{#`: when the
/// scheme and host are written literally, the one scheme rule ([`check_scheme`]) applies
/// now rather than at the first request; a literal non-http scheme is refused even when the
/// host is a template. A template that starts with a variable (`{{ base_url }}/…`) is
/// checked where that variable is set, and at request time.
pub fn url_template(template: &str, insecure_http: bool) -> Result<(), String> {
    let literal_end = ["{{", "{%", "{#"]
        .iter()
        .filter_map(|m| template.find(m))
        .min()
        .unwrap_or(template.len());
    let literal = &template[..literal_end];
    if literal_end == template.len() {
        // Entirely literal. The parse error never repeats the URL: it may hold a password.
        let url = url::Url::parse(template.trim()).map_err(|e| format!("is not a URL: {e}"))?;
        return check_scheme(&url, insecure_http);
    }
    let Some((scheme, rest)) = literal.split_once("://") else {
        return Ok(());
    };
    match rest.find(['/', '?', '#']) {
        Some(host_end) => {
            let origin = &literal[..scheme.len() + 3 + host_end];
            let url = url::Url::parse(origin.trim()).map_err(|e| format!("is not a URL: {e}"))?;
            check_scheme(&url, insecure_http)
        }
        // The host is a template: only the scheme is known.
        None if matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") => Ok(()),
        None => Err(format!(
            "unsupported scheme {scheme:?}: expected https (or http to a loopback host)"
        )),
    }
}

/// Whether `cron` fires within [`CRON_HORIZON`] after `now`.
pub fn cron_fires(schedule: &str, cron: &croner::Cron, now: SystemTime) -> Result<(), String> {
    let next = crate::schedule::next_cron(cron, now);
    let horizon = now.checked_add(CRON_HORIZON);
    match (next, horizon) {
        (Some(next), Some(horizon)) if next <= horizon => Ok(()),
        _ => Err(format!(
            "{schedule:?} never fires in the next 5 years (check the day of month against the month, and day of month against day of week: both must match)"
        )),
    }
}

/// A file path made absolute (against the current directory), with `.` and `..` resolved
/// lexically and the existing part of its directory resolved through symlinks, so that two
/// spellings of one file compare equal.
pub fn normalise(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut clean = PathBuf::from("/");
    for c in absolute.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    match (clean.parent(), clean.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(clean),
        _ => clean,
    }
}

/// Where one file sink sits in the config, for [`SinkPaths`].
struct SinkAt {
    source: Arc<Source>,
    account_index: usize,
    account: String,
    sink_index: usize,
}

/// Collects the file sinks of every account and reports a file written by two sinks (the
/// last writer would win, and the accounts would overwrite each other's tokens).
#[derive(Default)]
pub struct SinkPaths {
    seen: HashMap<PathBuf, SinkAt>,
}

impl SinkPaths {
    /// Adds the file sinks of account `raw` (number `account_index` in `source`), reporting
    /// through `problems` any that writes a file an earlier sink writes.
    pub fn add(
        &mut self,
        problems: &mut Vec<Problem>,
        source: &Arc<Source>,
        account_index: usize,
        raw: &AccountConfig,
    ) {
        for (sink_index, sink) in raw.sink.iter().enumerate() {
            let SinkConfig::File(file) = sink else {
                continue;
            };
            // Bad paths are reported by the sink itself.
            if crate::sink::file::check_path(&file.path, &source.dir().join(&file.path)).is_err() {
                continue;
            }
            let key = normalise(&source.dir().join(&file.path));
            if let Some(first) = self.seen.get(&key) {
                let (line, column) = location(first);
                Validator::new(problems, source.clone())
                    .account(account_index, &raw.name)
                    .item("sink", sink_index)
                    .error(
                        "path",
                        format!(
                            "{} is also written by account {:?} sink[{}] ({}:{line}:{column}): each file needs one writer",
                            key.display(),
                            first.account,
                            first.sink_index,
                            first.source.path.display()
                        ),
                    );
            } else {
                self.seen.insert(
                    key,
                    SinkAt {
                        source: source.clone(),
                        account_index,
                        account: raw.name.clone(),
                        sink_index,
                    },
                );
            }
        }
    }
}

/// The line and column of a sink's `path`.
fn location(at: &SinkAt) -> (usize, usize) {
    let mut problems = Vec::new();
    Validator::new(&mut problems, at.source.clone())
        .account(at.account_index, &at.account)
        .item("sink", at.sink_index)
        .error("path", "");
    let e = locate(problems).0.remove(0);
    (e.line, e.column)
}

/// Warnings for the secret files of account `raw` that group or others can read (SPEC §3;
/// issue 12). Not an error: a root-owned file readable by a trusted group is a valid setup.
pub fn readable_secret_files(raw: &AccountConfig, base_dir: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    for (field, value) in secret_values(raw) {
        let Some(path) = value.file_path(base_dir) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_file() && mode & 0o044 != 0 {
            warnings.push(format!(
                "account {:?} {field}: secret file {} is readable by group or others (mode {mode:04o}): chmod 600",
                raw.name,
                path.display()
            ));
        }
    }
    warnings
}

/// The files an account's `{ file = … }` / `{ credential = … }` secrets are read from: the
/// reload watcher watches them like config files (a rotated password file is a reload).
pub fn secret_files(raw: &AccountConfig, base_dir: &Path) -> Vec<std::path::PathBuf> {
    secret_values(raw)
        .into_iter()
        .filter_map(|(_, value)| value.file_path(base_dir))
        .collect()
}

/// Every secret value of an account, named by its field (credentials, `vars`, the Vault
/// sinks' auth): one list for the warnings about literal secrets and readable secret files,
/// and for the reload watcher.
pub fn secret_values(raw: &AccountConfig) -> Vec<(String, &SecretValueConfig)> {
    let mut values: Vec<(String, &SecretValueConfig)> = [
        ("username", &raw.username),
        ("password", &raw.password),
        ("client_id", &raw.client_id),
        ("client_secret", &raw.client_secret),
        ("refresh_token", &raw.refresh_token),
    ]
    .into_iter()
    .filter_map(|(field, value)| value.as_ref().map(|v| (field.to_string(), v)))
    .collect();
    values.extend(raw.vars.iter().map(|(k, v)| (format!("vars.{k}"), v)));
    for (i, sink) in raw.sink.iter().enumerate() {
        if let SinkConfig::Vault(vault) = sink
            && let Some(auth) = &vault.auth
        {
            if let Some(token) = &auth.token {
                values.push((format!("sink[{i}].auth.token"), token));
            }
            if let Some(approle) = &auth.approle {
                values.push((format!("sink[{i}].auth.approle.role_id"), &approle.role_id));
                values.push((
                    format!("sink[{i}].auth.approle.secret_id"),
                    &approle.secret_id,
                ));
            }
        }
    }
    values
}

/// With `[daemon.coordination]`, a claim must outlast the provider exchange it covers
/// (`coordination::decide::may_call`): `claim_ttl` ≥ 2 × each account's `timeout` + 1 s.
pub fn claim_ttl_covers_timeouts(
    problems: &mut Vec<crate::config::error::Problem>,
    main: &std::sync::Arc<crate::config::error::Source>,
    claim_ttl: std::time::Duration,
    accounts: &[super::Account],
) {
    let longest = accounts.iter().map(|a| a.provider.timeout).max();
    if let Some(timeout) = longest {
        let needed = crate::coordination::decide::min_claim_ttl(timeout);
        if claim_ttl < needed {
            let mut v = crate::config::error::Validator::new(problems, main.clone());
            v.key("daemon").key("coordination").error(
                "claim_ttl",
                format!(
                    "{} is too short for an account timeout of {}: a claim must cover a refresh and a login, at least {}",
                    humantime::format_duration(claim_ttl),
                    humantime::format_duration(timeout),
                    humantime::format_duration(needed)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::state_dir;

    #[test]
    fn url_templates_with_a_literal_scheme_follow_the_scheme_rule() {
        // (template, insecure_http, accepted?)
        let cases = [
            ("https://api.example.com/login", false, true),
            ("http://127.0.0.1:8080/login", false, true),
            ("http://api.localhost/login", false, true),
            ("http://api.example.com/login", false, false),
            ("http://api.example.com/login", true, true),
            ("http://api.example.com/{{ tenant }}/login", false, false),
            ("https://api.example.com/{{ tenant }}/login", false, true),
            ("http://{{ host }}/login", false, true), // host unknown: request time decides
            ("ftp://files.example.com/token", false, false),
            ("ftp://files.example.com/token", true, false),
            ("ftp://{{ host }}/token", false, false),
            ("file:///etc/passwd", false, false),
            ("{{ base_url }}/login", false, true),
            ("not a url", false, false),
            ("https://exa mple.com/x", false, false),
        ];
        for (template, insecure, want) in cases {
            let got = url_template(template, insecure);
            assert_eq!(got.is_ok(), want, "{template} insecure={insecure}: {got:?}");
        }
        // A URL with a password is never repeated.
        let e = url_template("https://user:S3CR3T@exa mple.com/", false).unwrap_err();
        assert!(!e.contains("S3CR3T"), "{e}");
        let e = url_template("ftp://user:S3CR3T@host/", false).unwrap_err();
        assert!(!e.contains("S3CR3T"), "{e}");
    }

    #[test]
    fn state_dir_must_be_a_path() {
        assert!(state_dir(Path::new("/var/lib/tokend")).is_ok());
        assert!(state_dir(Path::new("")).is_err());
        assert!(state_dir(Path::new("a\0b")).is_err());
    }

    #[test]
    fn a_schedule_must_fire_within_five_years() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000); // 2026-11
        for (schedule, fires) in [
            ("0 0 3 * * *", true),
            ("0 0 0 29 2 *", true), // leap day: 2028
            ("0 0 0 31 2 *", false),
            ("0 0 0 30 2 *", false),
            ("0 0 0 31 4 *", false),
        ] {
            let cron = crate::schedule::parse_cron(schedule).unwrap();
            let started = std::time::Instant::now();
            let got = cron_fires(schedule, &cron, now);
            assert_eq!(got.is_ok(), fires, "{schedule}: {got:?}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{schedule} took {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn normalise_spells_one_file_one_way() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            normalise(Path::new("/nonexistent/a/../b/./t")),
            Path::new("/nonexistent/b/t")
        );
        assert_eq!(normalise(Path::new("x/../t")), normalise(&cwd.join("t")));
    }
}
