//! Step one of loading: the config tables as written, parsed by serde alone. Every table
//! denies unknown keys, so a typo never passes silently. Nothing here checks meaning; that
//! is [`super::validate`]'s, `crate::provider::validate`'s and `crate::settings`'s job. The
//! file and account tables, which hold the sinks' own config types, are in
//! `crate::settings::raw`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[daemon]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where state files live. Default: `$STATE_DIRECTORY`, else `/var/lib/tokend`.
    pub state_dir: Option<PathBuf>,
    /// `host:port` for `/metrics`, `/healthz`, `/readyz`.
    pub listen: Option<String>,
    /// `auto`, `text` or `json`.
    pub log_format: Option<String>,
    /// A tracing filter such as `info` or `tokend=debug`; `RUST_LOG` overrides.
    pub log_level: Option<String>,
    /// Bound on HTTP requests in flight across all accounts.
    pub max_concurrent_requests: Option<i64>,
    /// Which state saves are fsynced: `refresh_tokens` (default) or `all`.
    pub durability: Option<String>,
    /// Refresh timing defaults.
    pub refresh: Option<TimingConfig>,
    /// Backoff for transient failures.
    pub retry: Option<RetryConfig>,
    /// `[daemon.coordination]`, read by `crate::settings` into
    /// `crate::coordination::CoordinationConfig` (whose auth is the vault sink's, a layer
    /// above this one).
    pub coordination: Option<toml::Value>,
}

/// Refresh timing: `[daemon.refresh]`, or the timing keys of `[account.refresh]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingConfig {
    /// Refresh once this fraction of the lifetime has passed.
    pub ratio: Option<f64>,
    /// ± this fraction of the lifetime.
    pub jitter: Option<f64>,
    /// Never later than this before expiry (human duration).
    pub min_margin: Option<String>,
    /// Lifetime assumed when a response carries no expiry (human duration).
    pub default_lifetime: Option<String>,
}

/// `[daemon.retry]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff (human duration).
    pub initial: Option<String>,
    /// Longest backoff (human duration).
    pub max: Option<String>,
    /// Longest wait between attempts once the token has expired (human duration).
    pub max_expired: Option<String>,
    /// First wait after rejected credentials (human duration).
    pub rejected: Option<String>,
}

/// An HTTP exchange as written (`[account.login]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// The URL (templated).
    pub url: Option<String>,
    /// HTTP method, default POST.
    pub method: Option<String>,
    /// A JSON body: string leaves are templated, then serialised.
    pub json: Option<toml::Value>,
    /// A form body: values are templated.
    pub form: Option<BTreeMap<String, String>>,
    /// Request headers: values are templated.
    pub headers: Option<BTreeMap<String, String>>,
}

/// `[account.refresh]`: SPEC §3 gives this table two jobs, the refresh exchange of the `http`
/// provider and per-account refresh timing overrides, so it accepts both sets of keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshTableConfig {
    /// Exchange: URL.
    pub url: Option<String>,
    /// Exchange: method.
    pub method: Option<String>,
    /// Exchange: JSON body.
    pub json: Option<toml::Value>,
    /// Exchange: form body.
    pub form: Option<BTreeMap<String, String>>,
    /// Exchange: headers.
    pub headers: Option<BTreeMap<String, String>>,
    /// Timing: see [`TimingConfig`].
    pub ratio: Option<f64>,
    /// Timing: see [`TimingConfig`].
    pub jitter: Option<f64>,
    /// Timing: see [`TimingConfig`].
    pub min_margin: Option<String>,
    /// Timing: see [`TimingConfig`].
    pub default_lifetime: Option<String>,
}

impl RefreshTableConfig {
    /// The exchange keys, if any is set.
    pub fn exchange(&self) -> Option<ExchangeConfig> {
        let e = ExchangeConfig {
            url: self.url.clone(),
            method: self.method.clone(),
            json: self.json.clone(),
            form: self.form.clone(),
            headers: self.headers.clone(),
        };
        (e != ExchangeConfig::default()).then_some(e)
    }

    /// The timing keys.
    pub fn timing(&self) -> TimingConfig {
        TimingConfig {
            ratio: self.ratio,
            jitter: self.jitter,
            min_margin: self.min_margin.clone(),
            default_lifetime: self.default_lifetime.clone(),
        }
    }
}

/// `[account.response]`: each source is a JSON pointer (`/a/b`), `cookie:NAME` or
/// `header:NAME`; a list gives fallbacks tried in order.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// The access token.
    pub access_token: Option<Sources>,
    /// A refresh token, if the provider issues one.
    pub refresh_token: Option<Sources>,
    /// Lifetime in seconds.
    pub expires_in: Option<Sources>,
    /// Refresh token lifetime in seconds.
    pub refresh_expires_in: Option<Sources>,
    /// Token type (default `Bearer`).
    pub token_type: Option<Sources>,
    /// A JSON pointer: present and non-null means failure even with HTTP 200.
    pub error: Option<String>,
}

/// One source or a list of fallbacks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Sources {
    /// One source.
    One(String),
    /// Fallbacks, first match wins.
    Many(Vec<String>),
}

impl Sources {
    /// The sources in order.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Sources::One(s) => vec![s.clone()],
            Sources::Many(v) => v.clone(),
        }
    }
}

/// `[[account.notify]]`: a command, or a signal to a pid file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// argv of a command to run (no shell). Gets `TOKEND_ACCOUNT`, `TOKEND_EXPIRES_AT`.
    pub command: Option<Vec<String>>,
    /// A signal name such as `HUP`, sent to the pid in `pid_file`.
    pub signal: Option<String>,
    /// The pid file for `signal`.
    pub pid_file: Option<PathBuf>,
    /// How long the command may run (human duration), default 30s.
    pub timeout: Option<String>,
}
