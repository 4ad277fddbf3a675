//! Step one of loading: the config as written, parsed by serde alone. Every table denies
//! unknown keys, so a typo never passes silently. Nothing here checks meaning; that is
//! [`super::validate`]'s job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::secret::SecretValueConfig;
use crate::sink::SinkConfig;

/// A whole config file (the main one or an included one).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Glob patterns of further files holding `[[account]]`s, relative to this file.
    #[serde(default)]
    pub include: Vec<String>,
    /// Daemon-wide settings (main file only).
    #[serde(default)]
    pub daemon: Option<DaemonConfig>,
    /// The accounts.
    #[serde(default)]
    pub account: Vec<AccountConfig>,
}

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
    /// Refresh timing defaults.
    pub refresh: Option<TimingConfig>,
    /// Backoff for transient failures.
    pub retry: Option<RetryConfig>,
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

/// One `[[account]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Unique, `[A-Za-z0-9._-]{1,64}`.
    pub name: String,
    /// `pontotel`, `funcional`, `hubsoft`, `zarv`, `itflex`, `oauth2` or `http`.
    pub provider: String,
    /// The API prefix shown in the provider's docs.
    pub base_url: Option<String>,
    /// `oauth2`: the token endpoint.
    pub token_url: Option<String>,
    /// Credential: user name (Funcional's `login`).
    pub username: Option<SecretValueConfig>,
    /// Credential: password.
    pub password: Option<SecretValueConfig>,
    /// Credential: OAuth2 client id.
    pub client_id: Option<SecretValueConfig>,
    /// Credential: OAuth2 client secret.
    pub client_secret: Option<SecretValueConfig>,
    /// Credential: a refresh token (iTFLEX's integrator key).
    pub refresh_token: Option<SecretValueConfig>,
    /// `oauth2`: `client_credentials`, `password` or `refresh_token`.
    pub grant: Option<String>,
    /// `oauth2`: `basic` (default) or `body`.
    pub client_auth: Option<String>,
    /// `oauth2`: requested scope.
    pub scope: Option<String>,
    /// `oauth2`: requested audience.
    pub audience: Option<String>,
    /// `oauth2`: extra form parameters of the token request.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Extra template variables; values are secret values.
    #[serde(default)]
    pub vars: BTreeMap<String, SecretValueConfig>,
    /// Per HTTP request (human duration), default 15s.
    pub timeout: Option<String>,
    /// Optional cron (`sec min hour dom mon dow`): also refresh at these times (UTC).
    pub schedule: Option<String>,
    /// Allow `http://` to non-loopback hosts.
    pub insecure_http: Option<bool>,
    /// Extra CA certificate (PEM) trusted for this account's provider.
    pub ca_file: Option<PathBuf>,
    /// The login exchange (`http` provider, or overrides of a preset's).
    pub login: Option<ExchangeConfig>,
    /// The refresh exchange and/or refresh timing overrides.
    pub refresh: Option<RefreshTableConfig>,
    /// Where the token and its expiry are found in the response.
    pub response: Option<ResponseConfig>,
    /// Where the token is written.
    #[serde(default)]
    pub sink: Vec<SinkConfig>,
    /// What to run after every sink was written.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
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
