//! `type = "vault"`: the token's `json` document (SPEC §3 "Sink formats") stored as a
//! HashiCorp Vault / OpenBao KV v2 secret at `mount`/`path`. Built by
//! [`crate::sink::SinkConfig::build`] (validation only, no network); the account task calls
//! [`VaultSink::write`] after every new token.
//!
//! # No lost updates, no rollback
//!
//! Several writers may share a secret: two tokend instances, or an old one waking up from a
//! suspend. Every write therefore reads the secret first and decides with the sinks' one
//! publish-order rule, [`super::decide_publish`] (see [`super`], "Publishing in generation
//! order"): the stored document's `generation` field against ours. A stored unexpired token
//! of a higher generation is kept ([`WriteOutcome::KeptNewer`]), our own token already
//! stored is left alone ([`WriteOutcome::Unchanged`]), anything else is replaced with KV v2
//! check-and-set on the version just read (0 when absent: create only). If another writer
//! got in between, Vault refuses with 400; the sink reads again and decides again, at most
//! [`super::MAX_CAS_ATTEMPTS`] times ([`write`]). A 400 on a version that did not move is
//! not a conflict and is reported as a permanent error.
//!
//! # Talking to Vault: vaultrs
//!
//! Every Vault call is a vaultrs function ([`api`]): `kv2::read_metadata` for the current
//! version, `kv2::read_version` for its data, `kv2::set_with_options` with
//! `SetSecretRequestOptions { cas }` for the write, vaultrs's AppRole and Kubernetes
//! logins, and its token lookup and renewal. vaultrs is given tokend's HTTP client (no
//! redirects, `tls_server_name`); [`api`]'s module doc says why.
//!
//! The token needs read, create and update on `{mount}/data/{path}` and read on
//! `{mount}/metadata/{path}` (the current version, which check-and-set needs, is only in
//! the metadata).
//!
//! # The sink's own Vault token
//!
//! See [`token`]: logged in (AppRole, Kubernetes) or read (token auth) on the first write,
//! renewed by a background task at two thirds of its TTL, replaced by a new login when it is
//! not renewable, reached its max TTL or was revoked; the task stops when the sink is
//! dropped. A write that gets 403 obtains a new token once and retries.
//!
//! # Errors
//!
//! Decided on HTTP status codes only, never on Vault's wording (OpenBao and Vault differ):
//! connection failures, timeouts, 412, 429, 472, 473 and 5xx (503: sealed) are
//! [`SinkError::Transient`]; 403 after a fresh token is transient too (a new token may not
//! have reached a performance standby yet; a missing policy shows in the message); other
//! 4xx (404: no such mount) and a mount that is not KV v2 are [`SinkError::Permanent`], and
//! so is a rejected login. Messages name the address, mount and path, never a token,
//! secret id or the access token.
//!
//! # TLS
//!
//! rustls with the system roots plus `ca_file`. `tls_server_name` is the name the
//! certificate is checked against (and sent as SNI): requests go to that name, and a small
//! resolver maps it to the host of `address`. Plain `http://` is allowed for loopback
//! addresses only. The client is built by [`crate::http_client::build`] (which also turns
//! redirects off: a redirect would re-send `X-Vault-Token`, the document or an AppRole
//! `secret_id` to wherever it points) in [`config`], and `ca_file` is read by
//! [`crate::http_client::load_ca_file`] (a regular file of at most 1 MiB).

mod api;
mod config;
mod kv;
mod token;
mod write;

use std::time::SystemTime;

use serde_json::Value;

use self::api::Api;
use self::api::colon;
pub use self::config::{
    AppRoleConfig, DEFAULT_JWT_FILE, DEFAULT_TIMEOUT, KubernetesConfig, VaultAuthConfig,
    VaultSinkConfig,
};
pub use self::kv::{CasWrite, KvRecord};
use self::token::Keeper;
pub use self::token::VaultTokenStatus;
use self::write::Failed;
use super::{SinkError, TokenDocument, WriteOutcome};

/// A built vault sink.
pub struct VaultSink {
    address: String,
    mount: String,
    path: String,
    namespace: Option<String>,
    account: String,
    api: Api,
    keeper: Keeper,
}

impl std::fmt::Debug for VaultSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand: the keeper holds the token, and the API handle is of no interest.
        f.debug_struct("VaultSink")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("path", &self.path)
            .field("namespace", &self.namespace)
            .field("auth", &self.keeper.describe())
            .finish_non_exhaustive()
    }
}

impl VaultSink {
    /// `vault:<mount>/<path>`.
    pub fn label(&self) -> String {
        format!("vault:{}/{}", self.mount, self.path)
    }

    /// What the sink knows about its own Vault token (never the token).
    pub fn token_status(&self) -> VaultTokenStatus {
        self.keeper.status()
    }

    /// `vault <address> mount "<mount>" path "<path>"`, the start of every KV message.
    fn context(&self) -> String {
        format!(
            "vault {} mount {:?} path {:?}",
            self.address, self.mount, self.path
        )
    }

    /// Publishes `doc` unless the secret holds it already or an unexpired token of a higher
    /// generation (see the module doc).
    pub async fn write(&self, doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        let data: Value = serde_json::from_str(&doc.json(SystemTime::now()))
            .expect("TokenDocument::json always produces a json object");
        let mut session = self.keeper.token().await?;
        let mut fresh_token = false;
        loop {
            match self.publish(&session, doc, &data).await {
                Ok(outcome) => {
                    match outcome {
                        WriteOutcome::KeptNewer => tracing::info!(
                            account = %self.account,
                            sink = %self.label(),
                            "the vault secret holds a token of a higher generation; kept it"
                        ),
                        _ => tracing::debug!(
                            account = %self.account,
                            sink = %self.label(),
                            ?outcome,
                            "vault secret up to date"
                        ),
                    }
                    return Ok(outcome);
                }
                Err(Failed::Forbidden(_)) if !fresh_token => {
                    fresh_token = true;
                    session = self.keeper.reauth(&session).await?;
                }
                Err(Failed::Forbidden(detail)) => {
                    return Err(SinkError::Transient(format!(
                        "{}: permission denied (http 403{}) even with a new vault token: \
                         check that mount {:?} exists and that the token's policies allow \
                         read, create and update on \"{m}/data/{p}\" and read on \
                         \"{m}/metadata/{p}\"",
                        self.context(),
                        colon(&detail),
                        self.mount,
                        m = self.mount,
                        p = self.path
                    )));
                }
                Err(Failed::Other(e)) => return Err(e),
            }
        }
    }
}
