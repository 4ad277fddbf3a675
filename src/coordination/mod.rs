//! Several tokend instances sharing accounts (issue 14, docs/HA.md): a coordination store
//! holds one [`Record`] per account (generation, tokens, claim), written only with
//! check-and-set. An instance claims an account's refresh on the store before it calls
//! the provider, so a rotating refresh token is spent once across all instances; the
//! others take the committed tokens from the store without calling the provider.
//!
//! This module is the store and the protocol's pure decisions ([`decide`]); the account's
//! coordinated attempt that runs them is `crate::account::shared`. The store is a small
//! trait ([`Store`]) so that other engines can follow; the one today is Vault/OpenBao KV v2
//! ([`VaultStore`]), reusing the vault sink's client, logins and error handling.
//!
//! Built from `[daemon.coordination]` by [`CoordinationConfig::build`] (no network); without
//! that table nothing here runs.

pub mod decide;
pub mod record;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::config::error::Validator;
use crate::sink::SinkContext;
use crate::sink::vault::{CasWrite, VaultAuthConfig, VaultSink, VaultSinkConfig};
pub use record::{Claim, Record, Tokens};

/// Default `claim_ttl`.
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(60);
/// Longest `claim_ttl`: a dead claimer holds its accounts at most this long.
pub const MAX_CLAIM_TTL: Duration = Duration::from_secs(3600);

/// `[daemon.coordination]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationConfig {
    /// The engine: `vault` (Vault or OpenBao KV v2).
    pub store: String,
    /// Default `$VAULT_ADDR`.
    pub address: Option<String>,
    /// A KV v2 mount.
    pub mount: String,
    /// Records live at `<prefix>/<account>`.
    pub prefix: String,
    /// Vault Enterprise / OpenBao namespace.
    pub namespace: Option<String>,
    /// Extra CA (PEM) for the store's TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name the store's certificate is checked against.
    pub tls_server_name: Option<String>,
    /// Per request to the store.
    pub timeout: Option<String>,
    /// The vault sink's auth forms (`token`, `approle`, `kubernetes`); default `$VAULT_TOKEN`.
    pub auth: Option<VaultAuthConfig>,
    /// How long a claim stands with no change to its record before others take over.
    pub claim_ttl: Option<String>,
    /// This instance's name in claims and `refreshed_by`; default hostname + pid.
    pub instance: Option<String>,
}

impl CoordinationConfig {
    /// Validates the table (every problem through `v`) and builds the coordinator: reads the
    /// auth secrets and `ca_file`, no network.
    pub fn build(&self, v: &mut Validator<'_>) -> Option<Coordinator> {
        if self.store != "vault" {
            v.error(
                "store",
                format!(
                    "{:?} is not a coordination store: expected \"vault\" (Vault or OpenBao kv v2)",
                    self.store
                ),
            );
        }
        let claim_ttl = crate::config::validate::duration(
            v,
            "claim_ttl",
            self.claim_ttl.as_ref(),
            DEFAULT_CLAIM_TTL,
            (Duration::from_secs(1), MAX_CLAIM_TTL),
        );
        let instance = match &self.instance {
            Some(name) if !record::valid_name(name) => {
                v.error("instance", "must be 1 to 128 printable ascii characters");
                None
            }
            Some(name) => Some(name.clone()),
            None => Some(default_instance()),
        };
        let sink = VaultSinkConfig {
            address: self.address.clone(),
            mount: self.mount.clone(),
            path: self.prefix.clone(),
            namespace: self.namespace.clone(),
            ca_file: self.ca_file.clone(),
            tls_server_name: self.tls_server_name.clone(),
            // A store that does not answer within seconds is down for this purpose: the
            // vault sink's 30 s default would stall every claim of a partitioned instance.
            timeout: Some(self.timeout.clone().unwrap_or_else(|| "5s".into())),
            auth: self.auth.clone(),
        };
        let kv = sink.build_at(
            v,
            &SinkContext {
                account: "coordination".into(),
            },
            "prefix",
        )?;
        if self.store != "vault" {
            return None;
        }
        Some(Coordinator {
            store: Arc::new(VaultStore {
                kv,
                in_flight: tokio::sync::Semaphore::new(STORE_CONCURRENCY),
            }),
            instance: instance?,
            nonce: hex::encode(rand::random::<[u8; 8]>()),
            claim_ttl,
        })
    }
}

/// hostname + pid: unique per process on one host, readable in `status`.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| record::valid_name(h) && h.len() <= 100)
        .unwrap_or_else(|| "tokend".into());
    format!("{host}-{}", std::process::id())
}

/// The coordination settings and store, shared by every account task.
#[derive(Clone)]
pub struct Coordinator {
    /// The store.
    pub store: Arc<dyn Store>,
    /// This instance's name.
    pub instance: String,
    /// Random per process (see [`Claim::nonce`]).
    pub nonce: String,
    /// See [`CoordinationConfig::claim_ttl`].
    pub claim_ttl: Duration,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("store", &self.store.describe())
            .field("instance", &self.instance)
            .field("claim_ttl", &self.claim_ttl)
            .finish_non_exhaustive()
    }
}

/// A record as read: its version (0: never written) and content.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The version a check-and-set write must name.
    pub version: u64,
    /// The record: absent (`Ok(None)`), or unusable with the reason (`Err`).
    pub record: Result<Option<Record>, String>,
}

/// What a check-and-set write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored as this version.
    Version(u64),
    /// The record had moved on: another instance wrote first.
    Conflict,
}

/// A coordination store: versioned records, written with check-and-set. Errors are
/// messages that name the store, never a secret.
pub trait Store: Send + Sync {
    /// Reads `account`'s record.
    fn read<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Stored, String>>;
    /// Writes `account`'s record if its version is still `cas` (0: it must not exist).
    fn write<'a>(
        &'a self,
        account: &'a str,
        record: &'a Record,
        cas: u64,
    ) -> BoxFuture<'a, Result<Written, String>>;
    /// `vault:<mount>/<prefix>` for logs and `check`.
    fn describe(&self) -> String;
}

/// Vault / OpenBao KV v2: one secret per account at `<mount>/<prefix>/<account>`, written
/// with `cas` (docs/HA.md has the policy that limits tokend to the prefix).
pub struct VaultStore {
    kv: VaultSink,
    /// Bounds requests in flight: a start reads every account's record at once.
    in_flight: tokio::sync::Semaphore,
}

/// Requests to the coordination store in flight at most (all accounts together).
pub const STORE_CONCURRENCY: usize = 32;

impl Store for VaultStore {
    fn read<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Stored, String>> {
        Box::pin(async move {
            let _permit = self.in_flight.acquire().await.map_err(|e| e.to_string())?;
            crate::observability::metrics::metrics().store_request("read");
            let kv = self.kv.kv_get(account).await.map_err(|e| e.to_string())?;
            Ok(Stored {
                version: kv.version,
                record: kv.data.as_ref().map(Record::parse).transpose(),
            })
        })
    }

    fn write<'a>(
        &'a self,
        account: &'a str,
        record: &'a Record,
        cas: u64,
    ) -> BoxFuture<'a, Result<Written, String>> {
        Box::pin(async move {
            let _permit = self.in_flight.acquire().await.map_err(|e| e.to_string())?;
            crate::observability::metrics::metrics().store_request("write");
            match self.kv.kv_cas(account, &record.to_value(), cas).await {
                Ok(CasWrite::Written(v)) => Ok(Written::Version(v)),
                Ok(CasWrite::Conflict) => Ok(Written::Conflict),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn describe(&self) -> String {
        self.kv.label()
    }
}
