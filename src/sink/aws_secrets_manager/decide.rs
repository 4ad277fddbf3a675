//! The pure decisions of one write: the idempotent `ClientRequestToken` of a token, and
//! whether AWSCURRENT already holds it or something newer (the module doc of
//! [`super`], "One write" step 2 and "Idempotency"). Called by [`super::write`].

use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::Format;
use crate::sink::{WriteOutcome, parse_rfc3339};

/// The `ClientRequestToken` (and so the version id) for one token written by one account in
/// one format: SHA-256 over a domain tag, the account, the format and the token, truncated to
/// 128 bits and shaped as a version-8 UUID (36 characters; AWS wants 32 to 64). Stable across
/// restarts and hosts, so every retry of one token's write is the same request.
pub fn client_request_token(account: &str, format: Format, token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tokend aws_secrets_manager v1\0");
    hash.update(account.as_bytes());
    hash.update([0]);
    hash.update(format.name().as_bytes());
    hash.update([0]);
    hash.update(token.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom (RFC 9562 §5.8)
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 10
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What AWSCURRENT holds, as far as [`decide`] cares.
pub(super) struct Stored {
    pub(super) version_id: Option<String>,
    /// Absent for a binary secret.
    pub(super) value: Option<SecretString>,
    pub(super) created: Option<SystemTime>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Store a new value.
    Write,
    /// Leave the secret as it is.
    Skip(WriteOutcome),
}

/// Whether to write `token` (expiring at `expires_at`) over what AWSCURRENT holds. Pure; see
/// the module doc, "One write", step 2.
pub(super) fn decide(
    stored: Option<&Stored>,
    format: Format,
    request_token: &str,
    token: &str,
    expires_at: SystemTime,
) -> Decision {
    let Some(stored) = stored else {
        return Decision::Write;
    };
    if stored.version_id.as_deref() == Some(request_token) {
        return Decision::Skip(WriteOutcome::Unchanged);
    }
    let Some(value) = &stored.value else {
        return Decision::Write;
    };
    match format {
        Format::Raw => {
            if value.expose_secret() == token {
                Decision::Skip(WriteOutcome::Unchanged)
            } else {
                Decision::Write
            }
        }
        Format::Json => {
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(value.expose_secret()) else {
                return Decision::Write;
            };
            if doc["access_token"].as_str() == Some(token) {
                return Decision::Skip(WriteOutcome::Unchanged);
            }
            // Compare at the document's precision (whole seconds), so equal means equal.
            let ours = parse_rfc3339(&crate::sink::rfc3339(expires_at)).unwrap_or(expires_at);
            match doc["expires_at"].as_str().and_then(parse_rfc3339) {
                Some(theirs) if theirs > ours => Decision::Skip(WriteOutcome::KeptNewer),
                _ => Decision::Write,
            }
        }
    }
}
