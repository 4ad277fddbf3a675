//! The pure parts of one write: the `ClientRequestToken` (version id) of a token, which
//! carries its generation and expiry, and what AWSCURRENT holds as a [`StoredToken`] for
//! [`crate::sink::decide_publish`] (the module doc of [`super`], "One write" step 2,
//! "Version ids"). Called by [`super::write`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::Format;
use crate::bounds::MAX_TIME_SECS;
use crate::sink::StoredToken;

/// The `ClientRequestToken` (and so the version id) of one token written by one account in
/// one format: `g<generation, 20 digits>-e<expiry, 12 digits of Unix seconds>-<24 hex>`,
/// 61 characters (AWS wants 32 to 64). The hex part is SHA-256 over a domain tag, the
/// account, the format and the token, truncated to 96 bits. Stable across restarts and
/// hosts, so every retry of one token's write is the same request; and it states the
/// generation and expiry in a form [`parse_version_id`] reads back, which a `raw` value
/// (the token alone) cannot hold.
pub fn client_request_token(
    account: &str,
    format: Format,
    token: &str,
    generation: u64,
    expires_at: SystemTime,
) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tokend aws_secrets_manager v2\0");
    hash.update(account.as_bytes());
    hash.update([0]);
    hash.update(format.name().as_bytes());
    hash.update([0]);
    hash.update(token.as_bytes());
    let digest = hash.finalize();
    let expires = expires_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(MAX_TIME_SECS);
    format!(
        "g{generation:020}-e{expires:012}-{}",
        hex::encode(&digest[..12])
    )
}

/// The generation and expiry stated by a version id of [`client_request_token`]'s form;
/// `None` for any other id (a UUID from the console, an older tokend).
pub fn parse_version_id(id: &str) -> Option<(u64, SystemTime)> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let rest = id.strip_prefix('g')?;
    let (generation, rest) = rest.split_once("-e")?;
    let (expires, hash) = rest.split_once('-')?;
    if !digits(generation, 20)
        || !digits(expires, 12)
        || hash.len() != 24
        || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let generation = generation.parse().ok()?;
    let expires: u64 = expires.parse().ok()?;
    let expires_at = UNIX_EPOCH.checked_add(Duration::from_secs(expires.min(MAX_TIME_SECS)))?;
    Some((generation, expires_at))
}

/// What AWSCURRENT holds.
pub(super) struct Current {
    pub(super) version_id: Option<String>,
    /// Absent for a binary secret.
    pub(super) value: Option<SecretString>,
    pub(super) created: Option<SystemTime>,
}

/// AWSCURRENT as [`crate::sink::decide_publish`] sees it, for a sink publishing `token` in
/// `format` at `now`. A `json` value is read as the document it should be (its
/// `generation` and `expires_at` fields); a `raw` value is only the token, so its
/// generation and expiry come from the version id. Anything unreadable is generation 0.
pub(super) fn stored_token(
    current: &Current,
    format: Format,
    token: &str,
    now: SystemTime,
) -> StoredToken {
    let value = current.value.as_ref().map(ExposeSecret::expose_secret);
    let from_id = current.version_id.as_deref().and_then(parse_version_id);
    let by_id = |same_token: bool| {
        StoredToken::new(
            from_id.map_or(0, |(g, _)| g),
            same_token,
            from_id.map(|(_, at)| at),
            now,
        )
    };
    match format {
        Format::Raw => by_id(value == Some(token)),
        Format::Json => match value.and_then(|v| serde_json::from_str(v).ok()) {
            Some(serde_json::Value::Object(fields)) => {
                StoredToken::from_document(&fields, token, now)
            }
            // Not a document (a binary secret, a placeholder, another format's value).
            _ => by_id(false),
        },
    }
}
