//! One write of the vault sink: read the secret, decide with the sinks' publish-order rule
//! ([`decide_publish`]: never roll back to a lower generation), check-and-set write, and
//! again on a conflict; failed calls are classified by HTTP status ([`status_class`]).
//! Called by [`super::VaultSink::write`], which owns the token and the retry after a 403.

use std::time::SystemTime;

use secrecy::ExposeSecret;
use serde_json::Value;

use super::VaultSink;
use super::api::{ApiError, KvCurrent, Session, colon, describe_unavailable};
use crate::sink::{
    MAX_CAS_ATTEMPTS, Publish, SinkError, StoredToken, TokenDocument, WriteOutcome, decide_publish,
};

/// What the secret holds, as far as a write is concerned.
struct Stored {
    /// The current version; 0 when the secret was never written.
    version: u64,
    /// The current version's document; `None` when there is none (never written, or the
    /// latest version deleted or destroyed).
    token: Option<StoredToken>,
}

impl Stored {
    /// Reads the KV data as a `json` document for a sink publishing `access_token` at `now`.
    fn from_current(current: &KvCurrent, access_token: &str, now: SystemTime) -> Stored {
        Stored {
            version: current.version,
            token: current
                .data
                .as_ref()
                .map(|fields| StoredToken::from_document(fields, access_token, now)),
        }
    }
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
            let stored = Stored::from_current(
                &current,
                doc.access_token.expose_secret(),
                SystemTime::now(),
            );
            // Check-and-set on the version read (0 when absent: create only).
            let cas = match decide_publish(stored.token.as_ref(), doc.generation) {
                Publish::KeptNewer => return Ok(WriteOutcome::KeptNewer),
                Publish::Unchanged => return Ok(WriteOutcome::Unchanged),
                Publish::Write => stored.version,
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
    use crate::sink::parse_rfc3339;

    #[test]
    fn stored_documents_are_read_from_kv_data() {
        let now = parse_rfc3339("2027-01-15T08:00:00Z").unwrap();
        let data = serde_json::json!({
            "access_token": "tok",
            "expires_at": "2027-01-15T08:06:00Z",
            "token_type": "Bearer",
            "generation": 7,
        });
        let Value::Object(map) = data else {
            unreachable!()
        };
        let current = KvCurrent {
            version: 2,
            data: Some(map),
        };
        let s = Stored::from_current(&current, "tok", now);
        assert_eq!(s.version, 2);
        assert_eq!(
            s.token,
            Some(StoredToken {
                generation: 7,
                same_token: true,
                unexpired: true
            })
        );
        // A deleted latest version: nothing to keep, write on that version.
        let deleted = KvCurrent {
            version: 3,
            data: None,
        };
        let s = Stored::from_current(&deleted, "tok", now);
        assert_eq!((s.version, s.token), (3, None));
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
