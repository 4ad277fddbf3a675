//! Step two of loading: turns the raw config into a [`Config`], applying defaults and
//! presets, resolving secret values and building sinks, and collecting *every* problem
//! (with its file, line and column) instead of stopping at the first. Pure apart from
//! reading the config files, secret files and user/group databases: no network, no
//! spawning, so `tokend check` and a hot reload can run it safely.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::error::{ConfigError, ConfigErrors, Source, Validator, line_column, locate, path_at};
use super::raw::{
    AccountConfig, DaemonConfig, ExchangeConfig, FileConfig, NotifyConfig, ResponseConfig,
    RetryConfig, Sources, TimingConfig,
};
use super::{Account, Config, Daemon, LogFormat, Notify};
use super::{checks, files, include};
use crate::bounds::{MAX_CONFIG_DURATION, MAX_LIFETIME, TIMEOUT_RANGE};
use crate::provider::http::{Provider, VarsEq, check_scheme};
use crate::provider::presets::{PROVIDERS, preset};
use crate::provider::template::{self, Vars};
use crate::provider::{Body, Exchange, ProviderSpec, ResponseSpec, Source as ValueSource};
use crate::schedule::{Retry, Timing};
use crate::sink::SinkContext;
use crate::state::Fingerprint;

/// The shortest `default_lifetime`: a token must still live 2 s after it is received.
const MIN_DEFAULT_LIFETIME: Duration = Duration::from_secs(3);

/// The account fields templates may use (besides `[account.vars]`).
const CREDENTIALS: [&str; 5] = [
    "username",
    "password",
    "client_id",
    "client_secret",
    "refresh_token",
];

/// [`load`] without reading any secret ([`super::secret::structure_only`]): the accounts,
/// sinks, timing and state dir, for `tokend status` and `tokend token`. Fingerprints of a
/// config loaded this way are meaningless, and its placeholder secrets are not registered
/// for redaction.
pub fn load_structure(path: &Path) -> Result<Config, ConfigErrors> {
    super::secret::structure_only(|| crate::redact::collect(|| load_unregistered(path)).0)
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

fn literal_secrets(raw: &AccountConfig) -> Vec<String> {
    let mut fields: Vec<String> = [
        ("username", &raw.username),
        ("password", &raw.password),
        ("client_id", &raw.client_id),
        ("client_secret", &raw.client_secret),
        ("refresh_token", &raw.refresh_token),
    ]
    .into_iter()
    .filter(|(name, value)| {
        value.as_ref().is_some_and(|v| v.is_literal()) && !matches!(*name, "username" | "client_id")
    })
    .map(|(name, _)| name.to_string())
    .collect();
    fields.extend(
        raw.vars
            .iter()
            .filter(|(_, v)| v.is_literal())
            .map(|(k, _)| format!("vars.{k}")),
    );
    fields
}

/// Parses a human duration (`"30s"`, `"5m"`, `"1h 30m"`). humantime's arithmetic is
/// checked: an absurd value (`"500000000000y"`) is an error here, not a panic.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("{s:?} is not a duration: expected e.g. \"30s\", \"5m\" or \"1h\""))
}

/// Parses a human duration and checks it lies in `min ..= max` (issue 11: every
/// configured duration is bounded, so none can overflow the daemon's time arithmetic).
/// The one rule for every duration in the config: accounts, `[daemon]`, sinks, notify.
pub fn bounded_duration(s: &str, (min, max): (Duration, Duration)) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        let range = if min.is_zero() {
            format!("at most {}", humantime::format_duration(max))
        } else {
            format!(
                "{} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )
        };
        return Err(format!("{s:?} is out of range: expected {range}"));
    }
    Ok(d)
}

/// An optional duration in `range`, else `default`; an error is recorded against `field`.
fn duration(
    v: &mut Validator<'_>,
    field: &str,
    value: Option<&String>,
    default: Duration,
    range: (Duration, Duration),
) -> Duration {
    match value.map(|s| bounded_duration(s, range)) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(m)) => {
            v.error(field, m);
            default
        }
    }
}

fn validate_daemon(v: &mut Validator<'_>, raw: &DaemonConfig) -> Daemon {
    let state_dir = match &raw.state_dir {
        Some(dir) => {
            if let Err(m) = checks::state_dir(dir) {
                v.error("state_dir", m);
            }
            v.base_dir().join(dir)
        }
        None => std::env::var_os("STATE_DIRECTORY")
            .and_then(|s| std::env::split_paths(&s).next())
            .unwrap_or_else(|| PathBuf::from("/var/lib/tokend")),
    };
    let listen = raw
        .listen
        .as_ref()
        .and_then(|s| match s.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                v.error(
                    "listen",
                    format!(
                        "{s:?} is not an address: expected host:port such as \"127.0.0.1:9750\""
                    ),
                );
                None
            }
        });
    let log_format = match raw.log_format.as_deref().unwrap_or("auto") {
        "auto" => LogFormat::Auto,
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            v.error(
                "log_format",
                format!("{other:?} is not a log format: expected auto, text or json"),
            );
            LogFormat::Auto
        }
    };
    let log_level = raw.log_level.clone().unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        v.error(
            "log_level",
            format!("{log_level:?} is not a log filter: {e}"),
        );
    }
    let max_concurrent_requests = match raw.max_concurrent_requests {
        None => 32,
        Some(n) if (1..=100_000).contains(&n) => n as usize,
        Some(n) => {
            v.error(
                "max_concurrent_requests",
                format!("{n} is out of range: expected 1 to 100000"),
            );
            32
        }
    };
    let timing = validate_timing(
        &mut v.key("refresh"),
        raw.refresh.as_ref(),
        &Timing::default(),
    );
    let retry = validate_retry(&mut v.key("retry"), raw.retry.as_ref());
    Daemon {
        state_dir,
        listen,
        log_format,
        log_level,
        max_concurrent_requests,
        timing,
        retry,
    }
}

fn validate_timing(v: &mut Validator<'_>, raw: Option<&TimingConfig>, base: &Timing) -> Timing {
    let Some(raw) = raw else { return *base };
    let mut t = *base;
    if let Some(r) = raw.ratio {
        if r > 0.0 && r < 1.0 {
            t.ratio = r;
        } else {
            v.error(
                "ratio",
                format!("{r} is out of range: expected a fraction between 0 and 1, e.g. 0.75"),
            );
        }
    }
    if let Some(j) = raw.jitter {
        if (0.0..0.5).contains(&j) {
            t.jitter = j;
        } else {
            v.error(
                "jitter",
                format!("{j} is out of range: expected a fraction from 0 to 0.5, e.g. 0.05"),
            );
        }
    }
    if t.ratio - t.jitter <= 0.0 || t.ratio + t.jitter >= 1.0 {
        v.error(
            "jitter",
            format!(
                "ratio {} ± jitter {} must stay between 0 and 1",
                t.ratio, t.jitter
            ),
        );
    }
    t.min_margin = duration(
        v,
        "min_margin",
        raw.min_margin.as_ref(),
        base.min_margin,
        (Duration::ZERO, MAX_CONFIG_DURATION),
    );
    // A token must live 2 s after receipt (SPEC §4), so a shorter default could never
    // be accepted.
    t.default_lifetime = duration(
        v,
        "default_lifetime",
        raw.default_lifetime.as_ref(),
        base.default_lifetime,
        (MIN_DEFAULT_LIFETIME, MAX_LIFETIME),
    );
    t
}

fn validate_retry(v: &mut Validator<'_>, raw: Option<&RetryConfig>) -> Retry {
    let base = Retry::default();
    let Some(raw) = raw else { return base };
    let range = (Duration::ZERO, MAX_CONFIG_DURATION);
    let initial = duration(v, "initial", raw.initial.as_ref(), base.initial, range);
    let max = duration(v, "max", raw.max.as_ref(), base.max, range);
    // At least 1 s: below that the 1 s spacing binds anyway, and 0 would read as "at once".
    let at_least_1s = (Duration::from_secs(1), MAX_CONFIG_DURATION);
    let max_expired = duration(
        v,
        "max_expired",
        raw.max_expired.as_ref(),
        base.max_expired,
        at_least_1s,
    );
    let rejected = duration(
        v,
        "rejected",
        raw.rejected.as_ref(),
        base.rejected,
        at_least_1s,
    );
    if initial.is_zero() {
        v.error("initial", "must be more than 0s");
    }
    if max < initial {
        v.error(
            "max",
            format!(
                "{} is less than initial ({})",
                humantime::format_duration(max),
                humantime::format_duration(initial)
            ),
        );
    }
    Retry {
        initial,
        max,
        max_expired,
        rejected,
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.')
}

fn validate_account(
    v: &mut Validator<'_>,
    raw: &AccountConfig,
    daemon: &Daemon,
) -> Option<Account> {
    let start = v.has_problems();
    let mut failed = false;
    if !valid_name(&raw.name) {
        v.error("name", format!("{:?} is not a valid account name: expected 1 to 64 of A-Z a-z 0-9 . _ - (not starting with .)", raw.name));
        failed = true;
    }
    if !PROVIDERS.contains(&raw.provider.as_str()) {
        v.error(
            "provider",
            format!(
                "{:?} is not a provider: expected one of {}",
                raw.provider,
                PROVIDERS.join(", ")
            ),
        );
        return None;
    }
    let is_oauth2 = raw.provider == "oauth2";
    for (field, set) in [
        ("grant", raw.grant.is_some()),
        ("client_auth", raw.client_auth.is_some()),
        ("scope", raw.scope.is_some()),
        ("audience", raw.audience.is_some()),
        ("params", !raw.params.is_empty()),
        ("token_url", raw.token_url.is_some()),
    ] {
        if set && !is_oauth2 {
            v.error(
                field,
                format!(
                    "only used with provider = \"oauth2\" (this account uses {:?})",
                    raw.provider
                ),
            );
            failed = true;
        }
    }

    // Template variables: credentials, URLs, oauth2 options, [account.vars].
    let mut vars = Vars::default();
    for (field, value) in [
        ("username", &raw.username),
        ("password", &raw.password),
        ("client_id", &raw.client_id),
        ("client_secret", &raw.client_secret),
        ("refresh_token", &raw.refresh_token),
    ] {
        if let Some(value) = value {
            match v.secret(field, value) {
                Some(secret) => vars.set(field, secret),
                None => failed = true,
            }
        }
    }
    // A `Basic` header carries base64(id:secret): register each pair for redaction.
    for id in ["username", "client_id"]
        .iter()
        .filter_map(|f| vars.0.get(*f))
    {
        for secret in ["password", "client_secret", "refresh_token"]
            .iter()
            .filter_map(|f| vars.0.get(*f))
        {
            crate::redact::note_pair(id.expose_secret(), secret.expose_secret());
        }
    }
    for (field, value) in [("base_url", &raw.base_url), ("token_url", &raw.token_url)] {
        if let Some(url) = value {
            // base_url is a prefix that presets append paths to; token_url is used as is
            // (some servers need its trailing slash).
            let url = if field == "base_url" {
                url.trim_end_matches('/')
            } else {
                url.as_str()
            };
            if !url.contains("{{") {
                match url::Url::parse(url) {
                    Ok(parsed) => {
                        if let Err(m) = check_scheme(&parsed, raw.insecure_http.unwrap_or(false)) {
                            v.error(field, m);
                            failed = true;
                        }
                    }
                    Err(e) => {
                        v.error(
                            field,
                            format!("{} is not a URL: {e}", crate::redact::url_for_message(url)),
                        );
                        failed = true;
                    }
                }
            }
            vars.set_plain(field, url);
        }
    }
    if is_oauth2 {
        let grant = raw.grant.as_deref().unwrap_or("client_credentials");
        if !matches!(grant, "client_credentials" | "password" | "refresh_token") {
            v.error("grant", format!("{grant:?} is not a grant: expected client_credentials, password or refresh_token"));
            failed = true;
        }
        let client_auth = raw.client_auth.as_deref().unwrap_or("basic");
        if !matches!(client_auth, "basic" | "body") {
            v.error(
                "client_auth",
                format!(
                    "{client_auth:?} is not a client authentication method: expected basic or body"
                ),
            );
            failed = true;
        }
        vars.set_plain("grant", grant);
        vars.set_plain("client_auth", client_auth);
        let mut needed: Vec<&str> = match grant {
            "password" => vec!["username", "password"],
            "refresh_token" => vec!["refresh_token"],
            _ => vec!["client_secret"],
        };
        if client_auth == "basic" {
            needed.push("client_secret");
        }
        needed.dedup();
        for field in needed {
            if raw_credential(raw, field).is_none() {
                v.error(
                    field,
                    format!("required by grant = {grant:?} with client_auth = {client_auth:?}"),
                );
                failed = true;
            }
        }
        if let Some(scope) = &raw.scope {
            vars.set_plain("scope", scope);
        }
        if let Some(audience) = &raw.audience {
            vars.set_plain("audience", audience);
        }
    }
    for (name, value) in &raw.vars {
        if CREDENTIALS.contains(&name.as_str())
            || [
                "base_url",
                "token_url",
                "grant",
                "client_auth",
                "scope",
                "audience",
            ]
            .contains(&name.as_str())
        {
            v.key("vars").error(
                name,
                format!(
                    "{name:?} is an account field; set it on the account, not in [account.vars]"
                ),
            );
            failed = true;
            continue;
        }
        match v.key("vars").secret(name, value) {
            Some(secret) => vars.set(name, secret),
            None => failed = true,
        }
    }

    // Merge the preset with the account's overrides.
    let preset = preset(&raw.provider);
    if let Some(p) = preset {
        for field in &p.requires {
            if raw_field_set(raw, field) {
                continue;
            }
            v.error(field, format!("required by provider = {:?}", raw.provider));
            failed = true;
        }
    }
    let login_raw = merge_exchange(preset.map(|p| &p.login), raw.login.as_ref());
    let refresh_raw = match (
        preset.and_then(|p| p.refresh.as_ref()),
        raw.refresh.as_ref().and_then(|r| r.exchange()),
    ) {
        (None, None) => None,
        (base, over) => Some(merge_exchange(base, over.as_ref())),
    };
    let response_raw = merge_response(preset.map(|p| &p.response), raw.response.as_ref());
    let known: Vec<&str> = vars
        .names()
        .chain(std::iter::once("refresh_token"))
        .collect();
    let user_login = raw.login.as_ref();
    let login = validate_exchange(&mut v.key("login"), &login_raw, user_login, &known);
    let refresh = refresh_raw.as_ref().map(|r| {
        validate_exchange(
            &mut v.key("refresh"),
            r,
            raw.refresh.as_ref().and_then(|r| r.exchange()).as_ref(),
            &known,
        )
    });
    // Literal schemes and hosts in the exchange URLs follow the scheme rule now, not at the
    // first request (issue 12: `login.url` in plain http to another host passed `check`).
    let insecure_http = raw.insecure_http.unwrap_or(false);
    for (key, url) in [
        ("login", login_raw.url.as_deref()),
        (
            "refresh",
            refresh_raw.as_ref().and_then(|r| r.url.as_deref()),
        ),
    ] {
        if let Some(url) = url
            && let Err(m) = checks::url_template(url, insecure_http)
        {
            v.key(key).error("url", m);
            failed = true;
        }
    }
    let response = validate_response(&mut v.key("response"), &response_raw);
    let (Some(mut login), Some(response)) = (login, response) else {
        return None;
    };
    let mut refresh = match refresh {
        None => None,
        Some(Some(r)) => Some(r),
        Some(None) => return None,
    };
    for (name, value) in &raw.params {
        for exchange in std::iter::once(&mut login).chain(refresh.as_mut()) {
            if let Body::Form(fields) = &mut exchange.body {
                fields.retain(|(n, _)| n != name);
                fields.push((name.clone(), value.clone()));
            }
        }
    }

    let timing = validate_timing(
        &mut v.key("refresh"),
        raw.refresh.as_ref().map(|r| r.timing()).as_ref(),
        &daemon.timing,
    );
    let timeout = duration(
        v,
        "timeout",
        raw.timeout.as_ref(),
        Duration::from_secs(15),
        TIMEOUT_RANGE,
    );
    if let Some(schedule) = &raw.schedule {
        let fires = crate::schedule::parse_cron(schedule)
            .and_then(|cron| checks::cron_fires(schedule, &cron, std::time::SystemTime::now()));
        if let Err(m) = fires {
            v.error("schedule", m);
            failed = true;
        }
    }
    let ca_file = raw.ca_file.as_ref().map(|p| v.base_dir().join(p));
    if let Some(path) = &ca_file {
        match files::read_ca_file(path) {
            Ok(pem) => {
                if reqwest::Certificate::from_pem_bundle(&pem)
                    .map(|c| c.is_empty())
                    .unwrap_or(true)
                {
                    v.error(
                        "ca_file",
                        format!("{} holds no PEM certificate", path.display()),
                    );
                    failed = true;
                }
            }
            Err(m) => {
                v.error("ca_file", m);
                failed = true;
            }
        }
    }

    let ctx = SinkContext {
        account: raw.name.clone(),
    };
    let mut sinks = Vec::new();
    for (i, sink) in raw.sink.iter().enumerate() {
        match sink.build(&mut v.item("sink", i), &ctx) {
            Some(s) => sinks.push(Arc::new(s)),
            None => failed = true,
        }
    }
    let mut notify = Vec::new();
    for (i, n) in raw.notify.iter().enumerate() {
        match validate_notify(&mut v.item("notify", i), n) {
            Some(n) => notify.push(n),
            None => failed = true,
        }
    }
    if failed || (!start && v.has_problems()) {
        return None;
    }
    let spec = ProviderSpec {
        login,
        refresh,
        response,
    };
    let fingerprint = fingerprint(&raw.provider, &spec, &vars);
    Some(Account {
        name: raw.name.clone(),
        provider: Provider {
            name: raw.provider.clone(),
            spec,
            vars: VarsEq(vars),
            timeout,
            insecure_http: raw.insecure_http.unwrap_or(false),
            default_lifetime: timing.default_lifetime,
        },
        timing,
        retry: daemon.retry,
        schedule: raw.schedule.clone(),
        ca_file,
        sink_configs: raw.sink.clone(),
        sinks,
        notify,
        fingerprint,
    })
}

fn raw_credential<'a>(
    raw: &'a AccountConfig,
    field: &str,
) -> Option<&'a super::secret::SecretValueConfig> {
    match field {
        "username" => raw.username.as_ref(),
        "password" => raw.password.as_ref(),
        "client_id" => raw.client_id.as_ref(),
        "client_secret" => raw.client_secret.as_ref(),
        "refresh_token" => raw.refresh_token.as_ref(),
        _ => None,
    }
}

fn raw_field_set(raw: &AccountConfig, field: &str) -> bool {
    match field {
        "base_url" => raw.base_url.is_some(),
        "token_url" => raw.token_url.is_some(),
        other => raw_credential(raw, other).is_some(),
    }
}

fn merge_exchange(base: Option<&ExchangeConfig>, over: Option<&ExchangeConfig>) -> ExchangeConfig {
    let mut merged = base.cloned().unwrap_or_default();
    let Some(over) = over else { return merged };
    if over.url.is_some() {
        merged.url = over.url.clone();
    }
    if over.method.is_some() {
        merged.method = over.method.clone();
    }
    // A body given by the account replaces the preset's body, whatever its kind.
    if over.json.is_some() || over.form.is_some() {
        merged.json = over.json.clone();
        merged.form = over.form.clone();
    }
    if let Some(headers) = &over.headers {
        let mut all = merged.headers.take().unwrap_or_default();
        all.extend(headers.clone());
        merged.headers = Some(all);
    }
    merged
}

fn merge_response(base: Option<&ResponseConfig>, over: Option<&ResponseConfig>) -> ResponseConfig {
    let mut merged = base.cloned().unwrap_or_default();
    let Some(over) = over else { return merged };
    macro_rules! take {
        ($($f:ident),*) => { $( if over.$f.is_some() { merged.$f = over.$f.clone(); } )* };
    }
    take!(
        access_token,
        refresh_token,
        expires_in,
        refresh_expires_in,
        token_type,
        error
    );
    merged
}

fn check_template(
    v: &mut Validator<'_>,
    field: &str,
    source: &str,
    known: &[&str],
    user_written: bool,
) -> bool {
    let env = template::environment();
    match template::check(env, source, known) {
        Err(m) => {
            v.error(field, m);
            false
        }
        Ok(missing) if user_written && !missing.is_empty() => {
            v.error(
                field,
                format!(
                    "template uses {}, which this account does not set (known: {})",
                    missing.join(", "),
                    known.join(", ")
                ),
            );
            false
        }
        Ok(_) => true,
    }
}

fn validate_exchange(
    v: &mut Validator<'_>,
    raw: &ExchangeConfig,
    user: Option<&ExchangeConfig>,
    known: &[&str],
) -> Option<Exchange> {
    let mut ok = true;
    let url = match &raw.url {
        Some(u) => u.clone(),
        None => {
            v.error("url", "missing: the exchange needs a url");
            return None;
        }
    };
    ok &= check_template(v, "url", &url, known, user.is_some_and(|u| u.url.is_some()));
    let method = raw
        .method
        .clone()
        .unwrap_or_else(|| "POST".into())
        .to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH") {
        v.error(
            "method",
            format!("{method:?} is not supported: expected GET, POST, PUT or PATCH"),
        );
        ok = false;
    }
    let user_body = user.is_some_and(|u| u.json.is_some() || u.form.is_some());
    let body = match (&raw.json, &raw.form) {
        (Some(_), Some(_)) => {
            v.error("form", "set either json or form, not both");
            ok = false;
            Body::Empty
        }
        (Some(json), None) => {
            let value = serde_json::to_value(json).unwrap_or(serde_json::Value::Null);
            ok &= check_json_templates(&mut v.key("json"), &value, known, user_body);
            Body::Json(value)
        }
        (None, Some(form)) => {
            let mut fv = v.key("form");
            for (k, val) in form {
                ok &= check_template(&mut fv, k, val, known, user_body);
            }
            Body::Form(form.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        (None, None) => Body::Empty,
    };
    let headers: BTreeMap<String, String> = raw.headers.clone().unwrap_or_default();
    let user_headers = user.and_then(|u| u.headers.as_ref());
    let mut hv = v.key("headers");
    for (name, value) in &headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            hv.error(name, format!("{name:?} is not a header name"));
            ok = false;
        }
        ok &= check_template(
            &mut hv,
            name,
            value,
            known,
            user_headers.is_some_and(|h| h.contains_key(name)),
        );
    }
    ok.then(|| Exchange {
        url,
        method,
        body,
        headers: headers.into_iter().collect(),
    })
}

fn check_json_templates(
    v: &mut Validator<'_>,
    value: &serde_json::Value,
    known: &[&str],
    user: bool,
) -> bool {
    match value {
        serde_json::Value::String(s) => check_template(v, "", s, known, user),
        serde_json::Value::Array(items) => {
            let results: Vec<bool> = items
                .iter()
                .map(|i| check_json_templates(v, i, known, user))
                .collect();
            results.into_iter().all(|ok| ok)
        }
        serde_json::Value::Object(map) => {
            // Check every field (report every problem), not just up to the first bad one.
            let results: Vec<bool> = map
                .iter()
                .map(|(k, i)| check_json_templates(&mut v.key(k), i, known, user))
                .collect();
            results.into_iter().all(|ok| ok)
        }
        _ => true,
    }
}

fn validate_response(v: &mut Validator<'_>, raw: &ResponseConfig) -> Option<ResponseSpec> {
    let mut ok = true;
    let mut sources = |field: &str, value: &Option<Sources>| -> Vec<ValueSource> {
        let mut out = Vec::new();
        for s in value.as_ref().map(Sources::to_vec).unwrap_or_default() {
            match ValueSource::parse(&s) {
                Ok(src) => out.push(src),
                Err(m) => {
                    v.error(field, m);
                    ok = false;
                }
            }
        }
        out
    };
    let spec = ResponseSpec {
        access_token: sources("access_token", &raw.access_token),
        refresh_token: sources("refresh_token", &raw.refresh_token),
        expires_in: sources("expires_in", &raw.expires_in),
        refresh_expires_in: sources("refresh_expires_in", &raw.refresh_expires_in),
        token_type: sources("token_type", &raw.token_type),
        error: raw.error.clone(),
    };
    if spec.access_token.is_empty() && ok {
        v.error("access_token", "missing: where is the access token in the response? e.g. access_token = \"/access_token\"");
        ok = false;
    }
    if let Some(p) = &raw.error
        && !p.is_empty()
        && !p.starts_with('/')
    {
        v.error(
            "error",
            format!("{p:?} is not a JSON pointer: expected e.g. \"/errors\""),
        );
        ok = false;
    }
    ok.then_some(spec)
}

fn validate_notify(v: &mut Validator<'_>, raw: &NotifyConfig) -> Option<Notify> {
    let timeout = duration(
        v,
        "timeout",
        raw.timeout.as_ref(),
        Duration::from_secs(30),
        TIMEOUT_RANGE,
    );
    match (&raw.command, &raw.signal, &raw.pid_file) {
        (Some(argv), None, None) => {
            if argv.is_empty() || argv[0].is_empty() {
                v.error(
                    "command",
                    "must name a program, e.g. [\"systemctl\", \"reload\", \"myapp\"]",
                );
                return None;
            }
            Some(Notify::Command {
                argv: argv.clone(),
                timeout,
            })
        }
        (None, Some(signal), Some(pid_file)) => {
            let name = signal.trim().to_ascii_uppercase();
            let name = if name.starts_with("SIG") {
                name
            } else {
                format!("SIG{name}")
            };
            match name.parse::<nix::sys::signal::Signal>() {
                Ok(signal) => Some(Notify::Signal {
                    signal,
                    pid_file: v.base_dir().join(pid_file),
                }),
                Err(_) => {
                    v.error(
                        "signal",
                        format!(
                            "{signal:?} is not a signal name: expected e.g. \"HUP\" or \"USR1\""
                        ),
                    );
                    None
                }
            }
        }
        _ => {
            v.error(
                "",
                "expected either command = [...] or signal = \"…\" with pid_file = \"…\"",
            );
            None
        }
    }
}

/// The state fingerprint of an account: which saved state belongs to it (SPEC §4 "State
/// for an account whose provider settings or credentials changed is discarded").
///
/// Version 1 hashes an explicit serialisation, [`FingerprintV1`] as JSON: the provider
/// name, both exchanges (url, method, body, headers), the response spec and every variable
/// (credentials included, so a changed password discards the state), each in a fixed
/// order. SHA-256, hex of the first 16 bytes. Never `Debug` text: that changes with any
/// new field or dependency bump, and an upgrade would then silently discard every state
/// file (a lockout for `grant = "refresh_token"` accounts). A change to this format must
/// bump `version` and keep accepting the old value as a legacy alias.
///
/// The legacy alias is the value releases before version 1 wrote: a hash of the provider
/// name, the `Debug` text of the [`ProviderSpec`] and the variables. It is computed the
/// same way here, so state from those releases still loads without a login as long as
/// `ProviderSpec`'s `Debug` output is unchanged; `legacy_fingerprint_matches_todays_release`
/// pins it against state files that release wrote (`tests/data/state-v1/`).
pub fn fingerprint(provider: &str, spec: &ProviderSpec, vars: &Vars) -> Fingerprint {
    let v1 = FingerprintV1 {
        version: 1,
        provider,
        login: ExchangeV1::of(&spec.login),
        refresh: spec.refresh.as_ref().map(ExchangeV1::of),
        response: ResponseV1::of(&spec.response),
        vars: vars
            .0
            .iter()
            .map(|(k, val)| (k.as_str(), val.expose_secret()))
            .collect(),
    };
    let bytes = serde_json::to_vec(&v1).expect("a fingerprint serialises: strings and JSON only");
    Fingerprint {
        current: hex::encode(&Sha256::digest(&bytes)[..16]),
        legacy: Some(legacy_fingerprint(provider, spec, vars)),
    }
}

/// The fingerprint as releases before version 1 computed it (see [`fingerprint`]).
fn legacy_fingerprint(provider: &str, spec: &ProviderSpec, vars: &Vars) -> String {
    let mut h = Sha256::new();
    h.update(provider.as_bytes());
    h.update([0]);
    h.update(format!("{spec:?}").as_bytes());
    for (k, val) in &vars.0 {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([0]);
        h.update(val.expose_secret().as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// What version 1 of the fingerprint hashes. Field order is the serialisation order.
#[derive(serde::Serialize)]
struct FingerprintV1<'a> {
    version: u32,
    provider: &'a str,
    login: ExchangeV1<'a>,
    refresh: Option<ExchangeV1<'a>>,
    response: ResponseV1<'a>,
    /// Name → value, sorted by name (a `BTreeMap`).
    vars: Vec<(&'a str, &'a str)>,
}

#[derive(serde::Serialize)]
struct ExchangeV1<'a> {
    url: &'a str,
    method: &'a str,
    body: BodyV1<'a>,
    headers: Vec<(&'a str, &'a str)>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum BodyV1<'a> {
    Empty,
    /// Keys sorted at every level, whatever order serde_json's map keeps.
    Json(serde_json::Value),
    Form(Vec<(&'a str, &'a str)>),
}

#[derive(serde::Serialize)]
struct ResponseV1<'a> {
    access_token: Vec<String>,
    refresh_token: Vec<String>,
    expires_in: Vec<String>,
    refresh_expires_in: Vec<String>,
    token_type: Vec<String>,
    error: Option<&'a str>,
}

impl<'a> ExchangeV1<'a> {
    fn of(e: &'a Exchange) -> Self {
        let pairs = |v: &'a [(String, String)]| -> Vec<(&'a str, &'a str)> {
            v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
        };
        ExchangeV1 {
            url: &e.url,
            method: &e.method,
            body: match &e.body {
                Body::Empty => BodyV1::Empty,
                Body::Json(tree) => BodyV1::Json(sorted_json(tree)),
                Body::Form(fields) => BodyV1::Form(pairs(fields)),
            },
            headers: pairs(&e.headers),
        }
    }
}

impl<'a> ResponseV1<'a> {
    fn of(r: &'a ResponseSpec) -> Self {
        let sources = |v: &[ValueSource]| -> Vec<String> {
            v.iter()
                .map(|s| match s {
                    ValueSource::Pointer(p) => p.clone(),
                    ValueSource::Cookie(c) => format!("cookie:{c}"),
                    ValueSource::Header(h) => format!("header:{h}"),
                })
                .collect()
        };
        ResponseV1 {
            access_token: sources(&r.access_token),
            refresh_token: sources(&r.refresh_token),
            expires_in: sources(&r.expires_in),
            refresh_expires_in: sources(&r.refresh_expires_in),
            token_type: sources(&r.token_type),
            error: r.error.as_deref(),
        }
    }
}

/// `v` with object keys inserted in sorted order at every level, so the serialisation
/// does not depend on whether serde_json keeps insertion order (`preserve_order`).
fn sorted_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_json).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accounts of `tokend demo` as the release before the versioned fingerprint ran
    /// them, with the fingerprints it wrote into their state files (tests/data/state-v1).
    const DEMO: &str = include_str!("../../tests/data/state-v1/tokend.toml");
    const RELEASED: [(&str, &str); 6] = [
        ("pontotel", "3a70c9529138d446c4979d7aa1a782b7"),
        ("funcional", "870806b433ebd7ea2885158a8ed3deb4"),
        ("hubsoft", "677bc7ce344dd5aa7f9eac649a1ab822"),
        ("zarv", "1b5b99600409b300d3c41733b4115e10"),
        ("itflex", "4b0276d911a51c521dd07c4da57753bc"),
        ("oauth2", "5078192859bc546b350f6ea894a7c73d"),
    ];

    /// Every preset's state from that release still belongs to its account (legacy alias).
    #[test]
    fn legacy_fingerprint_matches_todays_release() {
        let accounts = crate::config::load_str_for_tests(DEMO);
        for (name, released) in RELEASED {
            let a = accounts.iter().find(|a| a.name == name).unwrap();
            assert_eq!(a.fingerprint.legacy.as_deref(), Some(released), "{name}");
            assert!(released.to_string() == a.fingerprint, "{name}");
        }
    }

    /// Golden values of version 1: a change here discards every user's saved state, so it
    /// must come with a version bump and a legacy alias.
    #[test]
    fn fingerprint_v1_is_pinned() {
        let accounts = crate::config::load_str_for_tests(DEMO);
        let got: Vec<(&str, &str)> = accounts
            .iter()
            .map(|a| (a.name.as_str(), a.fingerprint.current.as_str()))
            .collect();
        assert_eq!(got, GOLDEN_V1);
        // Any credential, URL or response change gives another value.
        let changed = crate::config::load_str_for_tests(
            &DEMO.replace("\"demo-password\"", "\"other-password\""),
        );
        assert_ne!(changed[0].fingerprint.current, GOLDEN_V1[0].1);
        assert_eq!(
            changed[4].fingerprint.current, GOLDEN_V1[4].1,
            "itflex has no password"
        );
    }

    const GOLDEN_V1: [(&str, &str); 6] = [
        ("pontotel", "bc697a3763988b5fb35bf2f325cbb1fd"),
        ("funcional", "83b4794abc29768abe9f183e9f9dd826"),
        ("hubsoft", "742b4bc0a2ef56d8bb0dfc22bcebeee3"),
        ("zarv", "3fc1f4d885f0d3d1c6e26a1fbb02c966"),
        ("itflex", "026e80e60fb46570e0293dd8baa18cc2"),
        ("oauth2", "5186a39990a61053bb59cf309dfc8728"),
    ];

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
