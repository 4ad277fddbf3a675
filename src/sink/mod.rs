//! Sinks: where a token is published. A sink is a config struct plus a built value, one file
//! per `type` (`file`, `vault`, `aws_secrets_manager`); [`SinkConfig`] is the
//! `#[serde(tag = "type")]` enum that dispatches to them and [`Sink`] the built one.
//! The account task calls [`Sink::write`] after every new token; each sink retries on its
//! own backoff (SPEC §4 "Sinks are independent").
//!
//! Building a sink ([`SinkConfig::build`]) is pure validation plus construction: no network,
//! no spawning, so `tokend check` can run it.
//!
//! # Publishing in generation order
//!
//! A Vault secret or an AWS secret can be shared by several writers: the instances of an HA
//! pair, or an old instance waking up from a suspend with a token it fetched long ago. Each
//! token carries a generation ([`TokenDocument::generation`]: one more than the token it
//! replaced, counted by the account, or with `[daemon.coordination]` by the shared record),
//! and those sinks store it next to the token (the `json` document's `generation` field; for
//! an AWS `raw` value, the version id, see `aws_secrets_manager`). Before writing, a sink
//! reads what is stored and asks [`decide_publish`] (issue 14):
//!
//! - the stored token is ours: [`Publish::Unchanged`], nothing written (a restart, a reload
//!   that only changed sinks, a retry);
//! - the stored generation is higher than ours and the stored token has not expired:
//!   [`Publish::KeptNewer`], never roll back;
//! - otherwise [`Publish::Write`], with the store's own check-and-set (Vault `cas`, AWS
//!   `RemoveFromVersionId`) on the version that was read, so a writer that got in between
//!   makes the write fail, and the sink reads and decides again ([`MAX_CAS_ATTEMPTS`]).
//!
//! Why generations and not expiry times: `expires_at` comes from the clock of whichever host
//! received the token, and two hosts' clocks differ; a token fetched later can even carry an
//! earlier expiry (a shorter lifetime). A generation is a counter with one source.
//!
//! Why an expired stored token never blocks: without coordination the counter lives in the
//! account's state file. A wiped `state_dir` (a new host, a lost volume) restarts it at 1,
//! and the secret still holds generation 9 from before. If a higher generation always won,
//! that sink would refuse every write until the counter climbed past 9, possibly for weeks.
//! Since a stored token that has expired is useless to every reader, replacing it cannot roll
//! anybody back; so the wedge lasts at most until the stored token expires. Deciding
//! "expired" compares the stored expiry with this host's clock, but only to choose between a
//! dead token and a live one, where a few seconds of skew do no harm. A stored value without
//! a readable generation (written by an older tokend or by hand) counts as generation 0.

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
    /// The store holds an unexpired token of a higher generation (another writer): left
    /// as it is ([`decide_publish`]).
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

    /// The `json` document: `{"access_token","token_type","expires_at","expires_in","account",
    /// "provider","generation"}`. The Vault and AWS sinks read `generation` back to publish
    /// in generation order ([`decide_publish`]).
    pub fn json(&self, now: SystemTime) -> String {
        serde_json::json!({
            "access_token": self.access_token.expose_secret(),
            "token_type": self.token_type,
            "expires_at": self.expires_at_rfc3339(),
            "expires_in": self.expires_in(now),
            "account": self.account,
            "provider": self.provider,
            "generation": self.generation,
        })
        .to_string()
    }
}

/// How many times a Vault or AWS write reads, decides and tries again when another writer
/// changed the secret between its read and its write. Each conflict means another writer
/// succeeded, so running out takes a storm of writers; the write then fails as transient and
/// the sink's backoff tries again later.
pub const MAX_CAS_ATTEMPTS: usize = 5;

/// What a Vault or AWS sink found stored, reduced to what [`decide_publish`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredToken {
    /// The stored token's generation; 0 when none could be read (an older tokend, a value
    /// written by hand).
    pub generation: u64,
    /// Whether the store holds the very token being published.
    pub same_token: bool,
    /// Whether the stored token's own expiry is still ahead at the time of the read; false
    /// when the store carries no readable expiry.
    pub unexpired: bool,
}

impl StoredToken {
    /// A stored token whose expiry (if known) is compared with `now`.
    pub fn new(
        generation: u64,
        same_token: bool,
        expires_at: Option<SystemTime>,
        now: SystemTime,
    ) -> StoredToken {
        StoredToken {
            generation,
            same_token,
            unexpired: expires_at.is_some_and(|at| at > now),
        }
    }

    /// Reads a stored `json` document (Vault's KV data, an AWS `json` value): its
    /// `access_token` compared with `token`, its `generation` (0 when absent or not an
    /// unsigned integer) and its `expires_at` (absent or unparseable: expired).
    pub fn from_document(
        fields: &serde_json::Map<String, serde_json::Value>,
        token: &str,
        now: SystemTime,
    ) -> StoredToken {
        let text = |key: &str| fields.get(key).and_then(serde_json::Value::as_str);
        StoredToken::new(
            fields
                .get("generation")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            text("access_token") == Some(token),
            text("expires_at").and_then(parse_rfc3339),
            now,
        )
    }
}

/// What a Vault or AWS sink does with a token after reading the store ([`decide_publish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Store our token, with check-and-set on the version that was read.
    Write,
    /// The store holds our token already.
    Unchanged,
    /// The store holds an unexpired token of a higher generation: keep it.
    KeptNewer,
}

/// The one publish-order rule of the Vault and AWS sinks (module doc, "Publishing in
/// generation order"): `stored` is what the store holds (`None`: nothing), `ours` the
/// generation of the token being published. Pure.
pub fn decide_publish(stored: Option<&StoredToken>, ours: u64) -> Publish {
    match stored {
        None => Publish::Write,
        Some(s) if s.same_token => Publish::Unchanged,
        // An expired stored token never blocks: a wiped state_dir restarts the counter.
        Some(s) if s.generation > ours && s.unexpired => Publish::KeptNewer,
        Some(_) => Publish::Write,
    }
}

/// Formats a time as RFC 3339 UTC with whole seconds; it cannot fail: times after
/// 9999-12-31T23:59:59Z print as that (see [`crate::bounds`]).
pub use crate::bounds::rfc3339;

/// Parses the `expires_at` of a stored `json` document (used by the Vault and AWS sinks to
/// tell whether a stored token of a higher generation is still alive).
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
        assert_eq!(v["generation"], 1);
        assert_eq!(parse_rfc3339("2027-01-15T08:06:00Z"), Some(doc.expires_at));
        assert!(!format!("{doc:?}").contains("tok-123"));
    }

    #[test]
    fn publish_order_never_rolls_back_to_a_lower_generation() {
        use Publish::*;
        // (what, stored generation, same token, stored unexpired, ours, expected)
        let cases: &[(&str, u64, bool, bool, u64, Publish)] = &[
            ("our token is stored", 5, true, true, 5, Unchanged),
            ("our token, stored as expired", 5, true, false, 5, Unchanged),
            // A provider that hands out the same token again: it is stored already.
            (
                "our token under an older generation",
                4,
                true,
                true,
                5,
                Unchanged,
            ),
            (
                "our token under a newer generation",
                6,
                true,
                true,
                5,
                Unchanged,
            ),
            ("a lower generation", 4, false, true, 5, Write),
            ("a lower generation, expired", 4, false, false, 5, Write),
            (
                "the same generation, another token",
                5,
                false,
                true,
                5,
                Write,
            ),
            ("a higher generation, alive", 6, false, true, 5, KeptNewer),
            (
                "a far higher generation, alive",
                u64::MAX,
                false,
                true,
                0,
                KeptNewer,
            ),
            // A wiped state_dir restarted our counter: a dead token never blocks.
            ("a higher generation, expired", 9, false, false, 2, Write),
            // An older tokend or a hand-written value: generation 0.
            ("no generation, alive", 0, false, true, 1, Write),
            ("no generation against our first", 0, false, true, 0, Write),
        ];
        for &(what, generation, same_token, unexpired, ours, expected) in cases {
            let stored = StoredToken {
                generation,
                same_token,
                unexpired,
            };
            assert_eq!(decide_publish(Some(&stored), ours), expected, "{what}");
        }
        assert_eq!(decide_publish(None, 7), Write, "nothing stored");
    }

    #[test]
    fn stored_documents_are_read_with_missing_fields_as_generation_zero_and_expired() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let read = |v: serde_json::Value| {
            let serde_json::Value::Object(map) = v else {
                panic!("an object")
            };
            StoredToken::from_document(&map, "tok", now)
        };
        let later = rfc3339(now + Duration::from_secs(60));
        let earlier = rfc3339(now - Duration::from_secs(60));
        let full = serde_json::json!({"access_token": "tok", "generation": 9, "expires_at": later});
        assert_eq!(
            read(full),
            StoredToken {
                generation: 9,
                same_token: true,
                unexpired: true
            }
        );
        let cases = [
            (
                serde_json::json!({"access_token": "x", "expires_at": later}),
                (0, false, true),
            ),
            (
                serde_json::json!({"generation": -1, "expires_at": earlier}),
                (0, false, false),
            ),
            (
                serde_json::json!({"generation": "9", "expires_at": "soon"}),
                (0, false, false),
            ),
            (serde_json::json!({"generation": 3}), (3, false, false)),
        ];
        for (doc, (generation, same_token, unexpired)) in cases {
            let text = doc.to_string();
            assert_eq!(
                read(doc),
                StoredToken {
                    generation,
                    same_token,
                    unexpired
                },
                "{text}"
            );
        }
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
