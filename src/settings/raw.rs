//! The shape of a whole config file as written: the file and its `[[account]]` tables,
//! parsed by serde alone (unknown keys denied). They sit here, above `config`, because an
//! account holds its sinks' own config types (`crate::sink::SinkConfig`); the tables every
//! layer shares (`[daemon]`, exchanges, responses, notify) are in `crate::config::raw`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::raw::{
    DaemonConfig, ExchangeConfig, NotifyConfig, RefreshTableConfig, ResponseConfig,
};
use crate::config::secret::SecretValueConfig;
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
    pub grant: Option<crate::provider::Grant>,
    /// `oauth2`: `basic` (default) or `body`.
    pub client_auth: Option<crate::provider::ClientAuth>,
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
