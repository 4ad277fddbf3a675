//! Plain KV v2 access for other parts of tokend that keep data in the same Vault the sink
//! writes to: the coordination store (`crate::coordination`) reads records and writes them
//! with check-and-set under one prefix. It reuses everything the sink has: the vaultrs
//! client with tokend's HTTP client (no redirects), the token keeper (login, renewal, a new
//! login after a 403) and the status-code classification of errors.

use serde_json::{Map, Value};

use super::VaultSink;
use super::api::{ApiError, Session};
use super::write::Failed;
use crate::sink::SinkError;

/// A KV v2 record and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct KvRecord {
    /// The current version; 0 when the secret was never written.
    pub version: u64,
    /// That version's data; `None` when absent, deleted or destroyed.
    pub data: Option<Map<String, Value>>,
}

/// What a check-and-set write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasWrite {
    /// Stored as this new version.
    Written(u64),
    /// The current version was not the one expected: another writer got in first.
    Conflict,
}

impl VaultSink {
    /// Reads `<mount>/<path>/<sub>` (the sink's `path` is the prefix).
    pub async fn kv_get(&self, sub: &str) -> Result<KvRecord, SinkError> {
        let path = format!("{}/{sub}", self.path);
        let path = path.as_str();
        self.authed(path, |session| async move {
            let current = self.api.kv_read(&session, &self.mount, path).await?;
            Ok(KvRecord {
                version: current.version,
                data: current.data,
            })
        })
        .await
    }

    /// Writes `data` to `<mount>/<path>/<sub>` if its current version is `cas` (0: create).
    /// Vault answers a check-and-set mismatch with 400, which is [`CasWrite::Conflict`].
    pub async fn kv_cas(&self, sub: &str, data: &Value, cas: u64) -> Result<CasWrite, SinkError> {
        let path = format!("{}/{sub}", self.path);
        let path = path.as_str();
        self.authed(path, |session| async move {
            match self
                .api
                .kv_write(&session, &self.mount, path, data, cas)
                .await
            {
                Ok(version) => Ok(CasWrite::Written(version)),
                Err(ApiError::Status { status: 400, .. }) => Ok(CasWrite::Conflict),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Runs `call` with the sink's Vault token, once more with a new token after a 403, and
    /// classifies its errors like the sink's own writes.
    async fn authed<'a, T, F, Fut>(&'a self, path: &str, call: F) -> Result<T, SinkError>
    where
        F: Fn(Session) -> Fut,
        Fut: Future<Output = Result<T, ApiError>> + 'a,
    {
        let mut session = self.keeper.token().await?;
        let mut fresh = false;
        loop {
            match call(session.clone()).await.map_err(|e| self.failed(e)) {
                Ok(value) => return Ok(value),
                Err(Failed::Forbidden(_)) if !fresh => {
                    fresh = true;
                    session = self.keeper.reauth(&session).await?;
                }
                Err(Failed::Forbidden(detail)) => return Err(self.forbidden(path, &detail)),
                Err(Failed::Other(e)) => return Err(e),
            }
        }
    }

    fn forbidden(&self, path: &str, detail: &str) -> SinkError {
        SinkError::Transient(format!(
            "vault {} mount {:?} path {:?}: permission denied (http 403{}) even with a new \
             vault token: the token's policies must allow read, create and update on \
             \"{m}/data/{p}/*\" and read on \"{m}/metadata/{p}/*\"",
            self.address,
            self.mount,
            path,
            super::api::colon(detail),
            m = self.mount,
            p = self.path
        ))
    }
}
