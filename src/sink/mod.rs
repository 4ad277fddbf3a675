//! Sinks: where a token is published. A sink is a config struct plus a built value, one file
//! per `type` (`file`, `vault`, `aws_secrets_manager`); [`SinkConfig`] is the
//! `#[serde(tag = "type")]` enum that dispatches to them and [`Sink`] the built one.
//! The account task calls [`Sink::write`] after every new token; each sink retries on its
//! own backoff (SPEC §4 "Sinks are independent").
//!
//! Building a sink ([`SinkConfig::build`]) is pure validation plus construction: no network,
//! no spawning, so `tokend check` can run it.

pub mod aws_secrets_manager;
pub mod file;
pub mod vault;

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::error::Validator;

/// A `[[account.sink]]` table as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// `type = "file"`.
    File(file::FileSinkConfig),
    /// `type = "vault"`.
    Vault(vault::VaultSinkConfig),
    /// `type = "aws_secrets_manager"`.
    AwsSecretsManager(aws_secrets_manager::AwsSecretsManagerSinkConfig),
}

/// What a sink needs to know about its account when it is built.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The account name.
    pub account: String,
}

impl SinkConfig {
    /// Validates the settings (reporting every problem through `v`) and builds the sink.
    /// Returns `None` when a problem was reported.
    pub fn build(&self, v: &mut Validator<'_>, ctx: &SinkContext) -> Option<Sink> {
        match self {
            SinkConfig::File(c) => c.build(v, ctx).map(Sink::File),
            SinkConfig::Vault(c) => c.build(v, ctx).map(Sink::Vault),
            SinkConfig::AwsSecretsManager(c) => c.build(v, ctx).map(Sink::AwsSecretsManager),
        }
    }
}

/// A built sink, ready to write.
#[derive(Debug)]
pub enum Sink {
    /// A file on local disk.
    File(file::FileSink),
    /// A Vault / OpenBao KV v2 secret.
    Vault(vault::VaultSink),
    /// An AWS Secrets Manager secret.
    AwsSecretsManager(aws_secrets_manager::AwsSecretsManagerSink),
}

impl Sink {
    /// Publishes `doc`. Never leaves a partial value behind; on error the previous value
    /// stays in place.
    pub async fn write(&self, doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        match self {
            Sink::File(s) => s.write(doc).await,
            // The network sinks' futures are large (the AWS SDK's made this one 15 KB)
            // and would size every publish, file-only or not; all accounts publish at
            // once at start: 125 MB of peak heap at 10 000 accounts (docs/BENCHMARKS.md).
            // Boxed, they cost a heap allocation only when used.
            Sink::Vault(s) => Box::pin(s.write(doc)).await,
            Sink::AwsSecretsManager(s) => Box::pin(s.write(doc)).await,
        }
    }

    /// A short label for logs, metrics and `status`: `file:/run/tokend/x.token`,
    /// `vault:secret/tokend/x`, `aws:tokend/x`. Never holds a secret.
    pub fn label(&self) -> String {
        match self {
            Sink::File(s) => s.label(),
            Sink::Vault(s) => s.label(),
            Sink::AwsSecretsManager(s) => s.label(),
        }
    }
}

/// What a successful [`Sink::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The new value was stored.
    Written,
    /// The store already held this token: nothing written (saves a billed AWS version).
    Unchanged,
    /// The store holds a token that expires later (another writer): left as it is.
    KeptNewer,
}

impl WriteOutcome {
    /// `written`, `unchanged` or `kept_newer`: the word in logs, metrics and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOutcome::Written => "written",
            WriteOutcome::Unchanged => "unchanged",
            WriteOutcome::KeptNewer => "kept_newer",
        }
    }
}

/// One of an account's sinks: its config as written (what a reload compares) kept with
/// the sink built from it (what writes, with its own login and client), so the two can
/// never drift apart.
#[derive(Debug, Clone)]
pub struct ConfiguredSink {
    /// As written in the config.
    pub config: SinkConfig,
    /// Built from `config`; kept across reloads that leave `config` unchanged.
    pub sink: std::sync::Arc<Sink>,
}

impl ConfiguredSink {
    /// The sink's label (`file:/path`, …).
    pub fn label(&self) -> String {
        self.sink.label()
    }
}

/// Sinks are equal when their configs are: a reload diff compares what was written.
impl PartialEq for ConfiguredSink {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

/// Why a sink write failed. Messages name the sink (path, mount, secret id), never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying on the sink's backoff: connection errors, 5xx, sealed Vault, throttling,
    /// a full disk.
    #[error("{0}")]
    Transient(String),
    /// Needs a human: access denied, bad mount, validation errors. Still retried, but on the
    /// longest backoff, and logged as an error.
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    /// True for [`SinkError::Transient`].
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_))
    }
}

/// The token as published: the fields of the `json` format (SPEC §3 "Sink formats").
#[derive(Clone)]
pub struct TokenDocument {
    /// The account name.
    pub account: String,
    /// The provider name (`pontotel`, `oauth2`, …).
    pub provider: String,
    /// The access token.
    pub access_token: SecretString,
    /// Usually `Bearer`.
    pub token_type: String,
    /// When the token expires.
    pub expires_at: SystemTime,
    /// The token's generation (`AccountState::generation`): sinks that can hold another
    /// writer's token (Vault, AWS) never replace a higher one (docs/HA.md).
    pub generation: u64,
}

impl std::fmt::Debug for TokenDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDocument")
            .field("account", &self.account)
            .field("provider", &self.provider)
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("expires_at", &rfc3339(self.expires_at))
            .field("generation", &self.generation)
            .finish()
    }
}

impl TokenDocument {
    /// `expires_at` as RFC 3339 UTC with seconds, e.g. `2026-11-22T10:00:00Z`.
    pub fn expires_at_rfc3339(&self) -> String {
        rfc3339(self.expires_at)
    }

    /// Whole seconds left at `now` (0 once expired).
    pub fn expires_in(&self, now: SystemTime) -> u64 {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    }

    /// The `json` document: `{"access_token","token_type","expires_at","expires_in","account","provider"}`.
    pub fn json(&self, now: SystemTime) -> String {
        serde_json::json!({
            "access_token": self.access_token.expose_secret(),
            "token_type": self.token_type,
            "expires_at": self.expires_at_rfc3339(),
            "expires_in": self.expires_in(now),
            "account": self.account,
            "provider": self.provider,
        })
        .to_string()
    }
}

/// Formats a time as RFC 3339 UTC with whole seconds; it cannot fail: times after
/// 9999-12-31T23:59:59Z print as that (see [`crate::bounds`]).
pub use crate::bounds::rfc3339;

/// Parses the `expires_at` of a stored `json` document (used by the Vault and AWS sinks to
/// refuse to roll a newer token back).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_document_has_the_spec_fields_and_debug_redacts() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let doc = TokenDocument {
            account: "a".into(),
            provider: "zarv".into(),
            access_token: SecretString::from("tok-123"),
            token_type: "Bearer".into(),
            expires_at: now + Duration::from_secs(360),
            generation: 1,
        };
        let v: serde_json::Value = serde_json::from_str(&doc.json(now)).unwrap();
        assert_eq!(v["access_token"], "tok-123");
        assert_eq!(v["expires_in"], 360);
        assert_eq!(v["expires_at"], "2027-01-15T08:06:00Z");
        assert_eq!(parse_rfc3339("2027-01-15T08:06:00Z"), Some(doc.expires_at));
        assert!(!format!("{doc:?}").contains("tok-123"));
    }

    /// Issue 11: a far-future expiry (a JWT `exp` in milliseconds) once panicked here.
    #[test]
    fn far_future_expiry_formats_as_the_last_rfc3339_second() {
        let doc = TokenDocument {
            account: "a".into(),
            provider: "zarv".into(),
            access_token: SecretString::from("tok"),
            token_type: "Bearer".into(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000_000),
            generation: 1,
        };
        let v: serde_json::Value = serde_json::from_str(&doc.json(SystemTime::now())).unwrap();
        assert_eq!(v["expires_at"], "9999-12-31T23:59:59Z");
    }
}
