//! One write of the vault sink: read the secret, [`decide`] (never roll back a token
//! that expires later), check-and-set write, and again on a conflict; failed calls are
//! classified by HTTP status ([`status_class`]). Called by [`super::VaultSink::write`],
//! which owns the token and the retry after a 403.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::VaultSink;
use super::api::{ApiError, KvCurrent, Session, colon, describe_unavailable};
use crate::sink::{SinkError, TokenDocument, WriteOutcome, parse_rfc3339};

/// How many times a write reads and tries again after check-and-set conflicts.
const MAX_CAS_ATTEMPTS: usize = 5;

/// What the secret holds, as far as [`decide`] is concerned.
struct Stored {
    /// The current version; 0 when the secret was never written.
    version: u64,
    /// The stored document's `access_token`.
    access_token: Option<SecretString>,
    /// The stored document's `expires_at`.
    expires_at: Option<SystemTime>,
}

impl Stored {
    fn from_current(current: KvCurrent) -> Stored {
        let field = |key: &str| {
            current
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
        };
        Stored {
            version: current.version,
            access_token: field("access_token").map(|t| SecretString::from(t.to_string())),
            expires_at: field("expires_at").and_then(parse_rfc3339),
        }
    }
}

/// What a write does after reading the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// The stored token expires later than ours: leave it.
    KeptNewer,
    /// The stored document already is ours: nothing to write.
    Unchanged,
    /// Write, with check-and-set on this version (0: create only).
    Write {
        /// The version the write expects to replace.
        cas: u64,
    },
}

/// The check-and-set decision (see the module doc), comparing expiries in whole seconds as
/// stored in RFC 3339.
fn decide(stored: &Stored, access_token: &str, expires_at: SystemTime) -> Decision {
    let ours = whole_seconds(expires_at);
    if let Some(theirs) = stored.expires_at {
        if theirs > ours {
            return Decision::KeptNewer;
        }
        let same_token = stored
            .access_token
            .as_ref()
            .is_some_and(|t| t.expose_secret() == access_token);
        if theirs == ours && same_token {
            return Decision::Unchanged;
        }
    }
    Decision::Write {
        cas: stored.version,
    }
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// How a KV status code is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusClass {
    /// 401/403: obtain a new token once, then transient.
    Forbidden,
    /// Retry on the sink's backoff.
    Transient,
    /// Needs a human.
    Permanent,
}

/// Classifies a non-2xx KV answer by status code alone.
fn status_class(status: u16) -> StatusClass {
    match status {
        401 | 403 => StatusClass::Forbidden,
        // 408 request timeout, 412 Vault Enterprise's "not yet replicated", 429 rate limit
        // or unready standby, 472/473 Vault's DR and performance standby codes, 5xx (503:
        // sealed).
        408 | 412 | 429 | 472 | 473 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Permanent,
    }
}

/// Why one attempt at publishing failed.
pub(super) enum Failed {
    /// Vault refused the token (401/403).
    Forbidden(String),
    /// Anything else, already classified.
    Other(SinkError),
}

impl VaultSink {
    /// Read, decide, check-and-set write; again on a conflict.
    pub(super) async fn publish(
        &self,
        session: &Session,
        doc: &TokenDocument,
        data: &Value,
    ) -> Result<WriteOutcome, Failed> {
        // The version a write was refused on, and Vault's words: seeing it again on the
        // next read means the 400 was no conflict.
        let mut refused: Option<(u64, String)> = None;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = self
                .api
                .kv_read(session, &self.mount, &self.path)
                .await
                .map_err(|e| self.failed(e))?;
            let stored = Stored::from_current(current);
            let cas = match decide(&stored, doc.access_token.expose_secret(), doc.expires_at) {
                Decision::KeptNewer => return Ok(WriteOutcome::KeptNewer),
                Decision::Unchanged => return Ok(WriteOutcome::Unchanged),
                Decision::Write { cas } => cas,
            };
            if let Some((version, detail)) = &refused
                && *version == cas
            {
                // The version did not move, so no other writer got in: Vault refused the
                // write itself (a mount with `cas_required` and a bad option, say).
                return Err(Failed::Other(SinkError::Permanent(format!(
                    "{}: vault rejected the write (http 400{})",
                    self.context(),
                    colon(detail)
                ))));
            }
            match self
                .api
                .kv_write(session, &self.mount, &self.path, data, cas)
                .await
            {
                Ok(version) => {
                    tracing::debug!(
                        account = %self.account,
                        sink = %self.label(),
                        version,
                        "vault secret written"
                    );
                    return Ok(WriteOutcome::Written);
                }
                Err(ApiError::Status {
                    status: 400,
                    detail,
                }) => {
                    tracing::debug!(
                        account = %self.account,
                        sink = %self.label(),
                        cas,
                        "vault check-and-set refused; reading again"
                    );
                    refused = Some((cas, detail));
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        Err(Failed::Other(SinkError::Transient(format!(
            "{}: gave up after {MAX_CAS_ATTEMPTS} check-and-set conflicts with other writers",
            self.context()
        ))))
    }

    /// Classifies a failed KV call.
    pub(super) fn failed(&self, e: ApiError) -> Failed {
        let context = self.context();
        Failed::Other(match e {
            ApiError::Status { status, detail } => match (status_class(status), status) {
                (StatusClass::Forbidden, _) => return Failed::Forbidden(detail),
                (StatusClass::Transient, _) => SinkError::Transient(format!(
                    "{context}: vault is unavailable (http {status}{})",
                    colon(&detail)
                )),
                (StatusClass::Permanent, 404) => SinkError::Permanent(format!(
                    "{context}: not found (http 404{}): check that mount {:?} exists and is \
                     a kv v2 secrets engine",
                    colon(&detail),
                    self.mount
                )),
                (StatusClass::Permanent, _) => SinkError::Permanent(format!(
                    "{context}: vault rejected the request (http {status}{})",
                    colon(&detail)
                )),
            },
            ApiError::BadToken => SinkError::Permanent(format!(
                "{context}: {}",
                describe_unavailable(&ApiError::BadToken)
            )),
            ApiError::Request(what) => {
                SinkError::Permanent(format!("{context}: cannot send the request: {what}"))
            }
            ApiError::NotKv2 => SinkError::Permanent(format!(
                "{context}: mount {:?} is not a kv v2 secrets engine (no version metadata)",
                self.mount
            )),
            other => SinkError::Transient(format!("{context}: {}", describe_unavailable(&other))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(version: u64, token: Option<&str>, expires_at: Option<u64>) -> Stored {
        Stored {
            version,
            access_token: token.map(|t| SecretString::from(t.to_string())),
            expires_at: expires_at.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        }
    }

    #[test]
    fn cas_decision_never_rolls_back() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        // Absent: create only.
        assert_eq!(
            decide(&stored(0, None, None), "new", at(100)),
            Decision::Write { cas: 0 }
        );
        // Older token stored: replace that version.
        assert_eq!(
            decide(&stored(7, Some("old"), Some(50)), "new", at(100)),
            Decision::Write { cas: 7 }
        );
        // A later expiry stored (another writer): keep it.
        assert_eq!(
            decide(&stored(7, Some("theirs"), Some(200)), "new", at(100)),
            Decision::KeptNewer
        );
        // Ours already stored.
        assert_eq!(
            decide(&stored(7, Some("new"), Some(100)), "new", at(100)),
            Decision::Unchanged
        );
        // Sub-second parts are not stored, so they do not count.
        assert_eq!(
            decide(
                &stored(7, Some("new"), Some(100)),
                "new",
                at(100) + Duration::from_millis(900)
            ),
            Decision::Unchanged
        );
        // The same token with a later expiry (a provider that extends tokens): update.
        assert_eq!(
            decide(&stored(7, Some("new"), Some(90)), "new", at(100)),
            Decision::Write { cas: 7 }
        );
        // Deleted latest version, or foreign data without expires_at: overwrite it.
        assert_eq!(
            decide(&stored(3, None, None), "new", at(100)),
            Decision::Write { cas: 3 }
        );
        // Same expiry, other token (two instances, same second): write ours.
        assert_eq!(
            decide(&stored(4, Some("theirs"), Some(100)), "new", at(100)),
            Decision::Write { cas: 4 }
        );
    }

    #[test]
    fn stored_documents_are_read_from_kv_data() {
        let data = serde_json::json!({
            "access_token": "tok",
            "expires_at": "2027-01-15T08:06:00Z",
            "token_type": "Bearer",
        });
        let Value::Object(map) = data else {
            unreachable!()
        };
        let s = Stored::from_current(KvCurrent {
            version: 2,
            data: Some(map),
        });
        assert_eq!(s.version, 2);
        assert_eq!(s.access_token.unwrap().expose_secret(), "tok");
        assert_eq!(s.expires_at, parse_rfc3339("2027-01-15T08:06:00Z"));
    }

    #[test]
    fn status_codes_decide_the_error_kind() {
        assert_eq!(status_class(403), StatusClass::Forbidden);
        assert_eq!(status_class(401), StatusClass::Forbidden);
        for s in [503, 500, 502, 429, 412, 473] {
            assert_eq!(status_class(s), StatusClass::Transient, "{s}");
        }
        for s in [400, 404, 405, 413] {
            assert_eq!(status_class(s), StatusClass::Permanent, "{s}");
        }
    }
}
