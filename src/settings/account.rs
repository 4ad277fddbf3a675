//! One `[[account]]` validated into an [`Account`]: credentials and variables, the base
//! and token URLs, the oauth2 options, the preset merged with the account's overrides
//! (`crate::provider::validate`), timing, the CA file, the sinks (each sink's own `build`)
//! and the notifications. Called by [`super::load()`] for every account of every file; it
//! sits above `config`, `provider` and `sink` because it is where they meet.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::fingerprint::fingerprint;
use super::raw::AccountConfig;
use super::{Account, checks};
use crate::bounds::TIMEOUT_RANGE;
use crate::config::Daemon;
use crate::config::error::Validator;
use crate::config::files;
use crate::config::validate::{duration, validate_notify, validate_timing};
use crate::provider::http::{Provider, VarsEq, check_scheme};
use crate::provider::presets::{PROVIDERS, preset};
use crate::provider::template::Vars;
use crate::provider::validate::{
    merge_exchange, merge_response, oauth2, validate_exchange, validate_response,
};
use crate::provider::{Body, ProviderSpec};
use crate::sink::{ConfiguredSink, SinkContext};

/// The account fields templates may use (besides `[account.vars]`).
const CREDENTIALS: [&str; 5] = [
    "username",
    "password",
    "client_id",
    "client_secret",
    "refresh_token",
];

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.')
}

/// Validates one account against the daemon settings; `None` when it has a problem
/// (every problem is recorded in `v`).
///
/// Every check runs even after one failed (`failed` is only read at the end), because
/// `tokend check` must report all of an account's problems at once, not one per run; only
/// a step that cannot go on without its input (an unknown provider, a login exchange that
/// did not validate) returns early. Nothing here touches the network or spawns anything.
pub fn validate_account(
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
    // oauth2's own keys on another provider would be silently ignored, which hides a typo
    // in `provider` (the account would log in some other way): refuse them.
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
        failed |= !oauth2(
            v,
            raw.grant.unwrap_or_default(),
            raw.client_auth.unwrap_or_default(),
            |field| raw_credential(raw, field).is_some(),
            &mut vars,
        );
        if let Some(scope) = &raw.scope {
            vars.set_plain("scope", scope);
        }
        if let Some(audience) = &raw.audience {
            vars.set_plain("audience", audience);
        }
    }
    // `[account.vars]` may not shadow an account field: a template reading `password`
    // must always get the account's password, whatever an include adds to vars.
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
    // The variables templates may read. `refresh_token` is always known: the refresh
    // exchange renders the *held* refresh token (from state), even when the config sets
    // none.
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
    // oauth2 `[account.params]` go into both form bodies, replacing a preset field of the
    // same name (a server that wants its own `scope` spelling gets it).
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
    let mut schedule = None;
    if let Some(text) = &raw.schedule {
        let parsed = crate::schedule::parse_cron(text).and_then(|cron| {
            checks::cron_fires(text, &cron, std::time::SystemTime::now()).map(|()| cron)
        });
        match parsed {
            Ok(cron) => {
                schedule = Some(crate::schedule::Schedule {
                    text: text.clone(),
                    cron,
                })
            }
            Err(m) => {
                v.error("schedule", m);
                failed = true;
            }
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
    // Each sink validates and builds itself (a new sink type is one file); its config is
    // kept with the built sink so a reload can tell which sinks changed.
    let mut sinks = Vec::new();
    for (i, sink) in raw.sink.iter().enumerate() {
        match sink.build(&mut v.item("sink", i), &ctx) {
            Some(s) => sinks.push(ConfiguredSink {
                config: sink.clone(),
                sink: Arc::new(s),
            }),
            None => failed = true,
        }
    }
    // A pushed-to Vec holds four sinks of room (~1.5 KiB at one sink; 14.7 MB at 10,000
    // accounts, docs/BENCHMARKS.md "Memory at 10,000 accounts"); the list never grows.
    sinks.shrink_to_fit();
    let mut notify = Vec::new();
    for (i, n) in raw.notify.iter().enumerate() {
        match validate_notify(&mut v.item("notify", i), n) {
            Some(n) => notify.push(n),
            None => failed = true,
        }
    }
    // `start`: problems recorded before this account (other accounts, [daemon]) are not
    // this account's; `failed` covers the steps that report through sub-validators.
    if failed || (!start && v.has_problems()) {
        return None;
    }
    let spec = ProviderSpec {
        login,
        refresh,
        response,
    };
    // What the saved state belongs to: the provider, its exchanges and every variable
    // (credentials included). Timing, sinks and request settings are left out, so editing
    // them keeps the saved tokens; a credentials edit supersedes them (settings::fingerprint).
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
            grant: is_oauth2.then(|| raw.grant.unwrap_or_default()),
        },
        timing,
        retry: daemon.retry,
        schedule,
        ca_file,
        sinks,
        notify,
        fingerprint,
    })
}

fn raw_credential<'a>(
    raw: &'a AccountConfig,
    field: &str,
) -> Option<&'a crate::config::secret::SecretValueConfig> {
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
