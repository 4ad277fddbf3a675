//! The types a state file holds (the account's tokens, status, last failure and the
//! fingerprint that ties it to its account) and their serialisation; [`super`] stores
//! them. Read by the account task, the refresh policy and `tokend status`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{VERSION, from_ms};

/// Which state belongs to an account: a hash of its provider settings and credentials
/// (`settings::fingerprint`), plus the hash today's release wrote before the
/// hash became a versioned serialisation (issue 11), accepted as an alias so an upgrade
/// keeps every saved token. A state loaded under the alias is re-keyed to the current
/// value and saved under it on its next write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The current fingerprint, written into new state.
    pub current: String,
    /// The fingerprint of the same settings as written by releases before the versioned one.
    pub legacy: Option<String>,
}

impl Fingerprint {
    /// A fingerprint without a legacy alias.
    pub fn new(current: impl Into<String>) -> Self {
        Fingerprint {
            current: current.into(),
            legacy: None,
        }
    }

    /// Whether state saved under `saved` belongs to this fingerprint.
    pub fn matches(&self, saved: &str) -> bool {
        saved == self.current || self.legacy.as_deref() == Some(saved)
    }
}

impl std::ops::Deref for Fingerprint {
    type Target = str;
    fn deref(&self) -> &str {
        &self.current
    }
}

/// `state.fingerprint == account.fingerprint`: the saved state belongs to the account
/// (current value or legacy alias).
impl PartialEq<Fingerprint> for String {
    fn eq(&self, other: &Fingerprint) -> bool {
        other.matches(self)
    }
}

/// A secret that is written to the (0600) state file but never printed.
#[derive(Clone)]
pub struct StoredSecret(pub SecretString);

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for StoredSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

impl<'de> Deserialize<'de> for StoredSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| StoredSecret(SecretString::from(s)))
    }
}

/// The held access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    /// The token.
    pub access_token: StoredSecret,
    /// Usually `Bearer`.
    pub token_type: String,
    /// When it was obtained.
    pub obtained_at_ms: u64,
    /// When it expires.
    pub expires_at_ms: u64,
    /// Where the expiry came from.
    pub expiry_source: String,
}

/// What one sink last did, for `tokend status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SinkStatus {
    /// Last successful write (or confirmed unchanged).
    pub last_write_ms: Option<u64>,
    /// `written`, `unchanged` or `kept_newer`.
    pub last_outcome: Option<String>,
    /// Expiry of the token the sink holds (as far as tokend knows).
    pub holds_expires_at_ms: Option<u64>,
    /// Last error, if the last attempt failed (cleaned and redacted in and out).
    #[serde(default, with = "crate::redact::stored_text")]
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_ms: Option<u64>,
}

/// An account's coordination record as this instance last saw it (docs/HA.md), shown
/// by `tokend status`, which reads no store.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedStatus {
    /// The record's generation.
    pub generation: u64,
    /// The instance holding the refresh claim, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_instance: Option<String>,
    /// Since when, on the claimer's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_since_ms: Option<u64>,
    /// The instance that committed the record's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_by: Option<String>,
    /// When this instance read it.
    pub seen_ms: u64,
}

impl SharedStatus {
    /// Why this status (read from a file) cannot be shown, if it cannot: a time after
    /// 9999-12-31 or an instance name that is not printable.
    pub fn check(&self) -> Result<(), String> {
        let names = [self.claim_instance.as_deref(), self.refreshed_by.as_deref()];
        if names
            .into_iter()
            .flatten()
            .any(|n| !crate::bounds::printable_name(n))
        {
            return Err("an instance name is not printable".into());
        }
        let times = [self.claim_since_ms, Some(self.seen_ms)];
        if times
            .into_iter()
            .flatten()
            .any(|ms| ms > crate::bounds::MAX_TIME_MS)
        {
            return Err("a time is after 9999-12-31".into());
        }
        Ok(())
    }
}

/// How the last attempt failed, as far as the refresh policy (`crate::account::policy`)
/// cares; saved so a restart keeps a rejected-credentials wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Might work if asked again (5xx, 429, timeouts, malformed answers).
    Transient,
    /// The provider rejected the credentials.
    Rejected,
    /// A configuration error: 404/405 from the token endpoint, a request that cannot be
    /// built.
    Misconfigured,
}

/// One account's state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountState {
    /// Format version.
    pub version: u32,
    /// The account name.
    pub account: String,
    /// The provider name.
    pub provider: String,
    /// Fingerprint of provider settings and credentials.
    pub fingerprint: String,
    /// The held access token.
    pub token: Option<StoredToken>,
    /// The held refresh token.
    pub refresh_token: Option<StoredSecret>,
    /// Its expiry, if known.
    pub refresh_expires_at_ms: Option<u64>,
    /// A refresh with `refresh_token` was sent and its outcome is unknown (crash, timeout):
    /// a rotating provider may have spent it, so it is not sent again; log in instead.
    #[serde(default)]
    pub refresh_in_flight: bool,
    /// Last successful obtain.
    pub last_success_ms: Option<u64>,
    /// Last error (cleaned and redacted in and out).
    #[serde(default, with = "crate::redact::stored_text")]
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_ms: Option<u64>,
    /// Consecutive failed attempts.
    #[serde(default)]
    pub failures: u32,
    /// The held token was obtained with credentials that have since changed: it is still
    /// served, and a login is due at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
    /// The kind of the last failure while `failures > 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureKind>,
    /// When the next refresh is planned.
    pub next_refresh_ms: Option<u64>,
    /// Logins made (lifetime of this state file).
    #[serde(default)]
    pub logins: u64,
    /// Refreshes made.
    #[serde(default)]
    pub refreshes: u64,
    /// Per sink label.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkStatus>,
    /// The held token's generation: one more than the token it replaced. Alone, counted
    /// here; with `[daemon.coordination]`, the shared record's (docs/HA.md). The Vault and
    /// AWS sinks never replace a stored token with one of a lower generation.
    #[serde(default)]
    pub generation: u64,
    /// What this instance last saw of the account's coordination record (for `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<SharedStatus>,
    /// In memory only: the last save failed, so the held token (and any rotated refresh
    /// token) is not on disk yet and must not be published (SPEC §4: persisted before
    /// anything else).
    #[serde(skip)]
    pub unsaved: bool,
}

impl AccountState {
    /// Empty state for an account.
    pub fn new(account: &str, provider: &str, fingerprint: &str) -> Self {
        AccountState {
            version: VERSION,
            account: account.to_string(),
            provider: provider.to_string(),
            fingerprint: fingerprint.to_string(),
            ..Default::default()
        }
    }

    /// Why this state (just read from a file) cannot be used, if it cannot: a time after
    /// 9999-12-31 or a token [`accept_token`](crate::provider::extract::accept_token)
    /// refuses. Such a file was not written by tokend.
    pub fn check(&self) -> Result<(), String> {
        let accept = crate::provider::extract::accept_token;
        let too_late = |ms: Option<u64>| ms.is_some_and(|ms| ms > crate::bounds::MAX_TIME_MS);
        let mut times = vec![
            self.refresh_expires_at_ms,
            self.last_success_ms,
            self.last_error_ms,
            self.next_refresh_ms,
        ];
        if let Some(t) = &self.token {
            times.extend([Some(t.obtained_at_ms), Some(t.expires_at_ms)]);
            accept(t.access_token.0.expose_secret())
                .map_err(|m| format!("the access token {m}"))?;
        }
        for s in self.sinks.values() {
            times.extend([s.last_write_ms, s.holds_expires_at_ms, s.last_error_ms]);
        }
        if let Some(c) = &self.coordination {
            c.check()?;
        }
        if times.into_iter().any(too_late) {
            return Err("a time is after 9999-12-31".into());
        }
        if let Some(rt) = &self.refresh_token {
            accept(rt.0.expose_secret()).map_err(|m| format!("the refresh token {m}"))?;
        }
        Ok(())
    }

    /// What is left of this state once the credentials changed: the access token, still
    /// served (issue 13: a credentials edit must not hide a valid token), marked
    /// `superseded` so a login follows at once; nothing tied to the old credentials (the
    /// refresh token, failures, the plan).
    pub fn superseded_by(self, fingerprint: &Fingerprint) -> AccountState {
        AccountState {
            token: self.token,
            superseded: true,
            last_success_ms: self.last_success_ms,
            logins: self.logins,
            refreshes: self.refreshes,
            sinks: self.sinks,
            generation: self.generation,
            ..AccountState::new(&self.account, &self.provider, &fingerprint.current)
        }
    }

    /// The access token if it is still valid at `now`.
    pub fn valid_token(&self, now: SystemTime) -> Option<&StoredToken> {
        self.token
            .as_ref()
            .filter(|t| from_ms(t.expires_at_ms) > now)
    }

    /// The refresh token if it is usable at `now` (unexpired, not possibly spent).
    pub fn usable_refresh_token(&self, now: SystemTime) -> Option<&SecretString> {
        if self.refresh_in_flight {
            return None;
        }
        let unexpired = self
            .refresh_expires_at_ms
            .is_none_or(|ms| from_ms(ms) > crate::bounds::add(now, Duration::from_secs(1)));
        self.refresh_token
            .as_ref()
            .filter(|_| unexpired)
            .map(|s| &s.0)
    }
}
