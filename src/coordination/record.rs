//! One account's record in the coordination store: the newest tokens with their
//! generation, which instance refreshed them, and the claim of an instance that is
//! refreshing now (docs/HA.md). Read from the store, a record is outside input like a
//! provider answer: [`Record::parse`] bounds every field and refuses tokens that
//! [`accept_token`](crate::provider::extract::accept_token) refuses, so another writer (or
//! a hand edit) can never make tokend panic or publish a bad token.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bounds::MAX_TIME_MS;
use crate::provider::extract::accept_token;

/// The record's format; a record of another format is not read (and is overwritten by the
/// next commit).
pub const FORMAT: u32 = 1;

/// An instance's claim on the account's next refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The claiming instance's name (`[daemon.coordination] instance`).
    pub instance: String,
    /// Random per process: tells this process's claim from one left by an earlier
    /// process of the same name.
    pub nonce: String,
    /// When it was taken, on the claimer's clock: shown by `status`, never used to judge a
    /// claim stale (docs/HA.md: no instance trusts another host's clock).
    pub since_ms: u64,
}

/// The tokens a record holds. Secrets: never in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// Usually `Bearer`.
    pub token_type: String,
    /// When it was obtained, on the writer's clock.
    pub obtained_at_ms: u64,
    /// When it expires, on the writer's clock.
    pub expires_at_ms: u64,
    /// Where the expiry came from.
    pub expiry_source: String,
    /// The refresh token to use next, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Its expiry, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at_ms: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"[REDACTED]")
            .field("expires_at_ms", &self.expires_at_ms)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

/// One account's record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// One more than the tokens this record's tokens replaced; 0 before the first commit.
    pub generation: u64,
    /// The account's fingerprint (provider settings and credentials, hashed): tokens of
    /// other credentials are never adopted.
    #[serde(default)]
    pub fingerprint: String,
    /// The newest tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    /// The instance that committed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_by: Option<String>,
    /// The claim of an instance refreshing now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
}

impl Record {
    /// Reads a record from the store's data. `Err` says why it cannot be used (the caller
    /// logs it and treats the record as holding no tokens and no claim; its version still
    /// guards the next write).
    pub fn parse(data: &Map<String, Value>) -> Result<Record, String> {
        let record: Record = serde_json::from_value(Value::Object(data.clone()))
            .map_err(|e| format!("not a tokend record: {e}"))?;
        record.check()?;
        Ok(record)
    }

    /// The bounds a stored record must meet.
    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("record format {} is not {FORMAT}", self.format));
        }
        let names = [
            self.refreshed_by.as_deref(),
            self.claim.as_ref().map(|c| c.instance.as_str()),
            self.claim.as_ref().map(|c| c.nonce.as_str()),
        ];
        if names.into_iter().flatten().any(|n| !valid_name(n)) {
            return Err("an instance name is empty, too long or not printable".into());
        }
        let mut times = vec![self.claim.as_ref().map(|c| c.since_ms)];
        if let Some(t) = &self.tokens {
            accept_token(&t.access_token).map_err(|m| format!("the access token {m}"))?;
            if let Some(rt) = &t.refresh_token {
                accept_token(rt).map_err(|m| format!("the refresh token {m}"))?;
            }
            if !valid_name(&t.token_type) || !valid_name(&t.expiry_source) {
                return Err("the token type or expiry source is not printable".into());
            }
            if t.obtained_at_ms > t.expires_at_ms {
                return Err("the token expires before it was obtained".into());
            }
            times.extend([
                Some(t.obtained_at_ms),
                Some(t.expires_at_ms),
                t.refresh_expires_at_ms,
            ]);
        }
        if times.into_iter().flatten().any(|ms| ms > MAX_TIME_MS) {
            return Err("a time is after 9999-12-31".into());
        }
        Ok(())
    }

    /// The record as the store's data.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a record always serialises")
    }
}

/// A name as the record may hold it ([`crate::bounds::printable_name`]).
pub fn valid_name(name: &str) -> bool {
    crate::bounds::printable_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Record, String> {
        Record::parse(v.as_object().unwrap())
    }

    #[test]
    fn a_record_round_trips_and_debug_hides_tokens() {
        let r = Record {
            format: FORMAT,
            generation: 7,
            fingerprint: "fp".into(),
            tokens: Some(Tokens {
                access_token: "acc-123".into(),
                token_type: "Bearer".into(),
                obtained_at_ms: 1,
                expires_at_ms: 2,
                expiry_source: "expires_in".into(),
                refresh_token: Some("ref-456".into()),
                refresh_expires_at_ms: None,
            }),
            refreshed_by: Some("host-a".into()),
            claim: Some(Claim {
                instance: "host-b".into(),
                nonce: "n".into(),
                since_ms: 3,
            }),
        };
        assert_eq!(parse(r.to_value()), Ok(r.clone()));
        let debug = format!("{r:?}");
        assert!(
            !debug.contains("acc-123") && !debug.contains("ref-456"),
            "{debug}"
        );
    }

    /// Outside input: every malformed record is refused with a reason, never a panic.
    #[test]
    fn malformed_records_are_refused() {
        let ok = serde_json::json!({"format": 1, "generation": 1, "fingerprint": "f",
            "tokens": {"access_token": "a", "token_type": "Bearer", "obtained_at_ms": 1,
                       "expires_at_ms": 2, "expiry_source": "expires_in"}});
        assert!(parse(ok.clone()).is_ok());
        let cases: Vec<(&str, Value)> = vec![
            ("format", serde_json::json!({"format": 2, "generation": 1})),
            (
                "generation",
                serde_json::json!({"format": 1, "generation": -1}),
            ),
            (
                "generation",
                serde_json::json!({"format": 1, "generation": "1"}),
            ),
            (
                "claim",
                serde_json::json!({"format": 1, "generation": 1, "claim": {"instance": "", "nonce": "n", "since_ms": 1}}),
            ),
            (
                "claim",
                serde_json::json!({"format": 1, "generation": 1, "claim": {"instance": "a\nb", "nonce": "n", "since_ms": 1}}),
            ),
            (
                "claim",
                serde_json::json!({"format": 1, "generation": 1, "claim": {"instance": "x".repeat(129), "nonce": "n", "since_ms": 1}}),
            ),
            (
                "time",
                serde_json::json!({"format": 1, "generation": 1, "claim": {"instance": "a", "nonce": "n", "since_ms": u64::MAX}}),
            ),
        ];
        for (what, v) in cases {
            assert!(parse(v.clone()).is_err(), "{what}: {v}");
        }
        for (field, bad) in [
            ("access_token", Value::from("")),
            ("access_token", Value::from("has space")),
            ("access_token", Value::from("x".repeat(20_000))),
            ("expires_at_ms", Value::from(0)),
            ("expires_at_ms", Value::from(u64::MAX)),
            ("refresh_token", Value::from("tab\there")),
            ("token_type", Value::from("")),
        ] {
            let mut v = ok.clone();
            v["tokens"][field] = bad.clone();
            assert!(parse(v).is_err(), "{field} = {bad}");
        }
    }
}
