//! `type = "vault"`: the token's `json` document (SPEC §3 "Sink formats") stored as a
//! HashiCorp Vault / OpenBao KV v2 secret at `mount`/`path`. Built by
//! [`crate::sink::SinkConfig::build`] (validation only, no network); the account task calls
//! [`VaultSink::write`] after every new token.
//!
//! # No lost updates
//!
//! Several writers may share a secret: two tokend instances, or an old one waking up from a
//! suspend. Every write therefore reads the secret first and decides with [`decide`]: a
//! stored `expires_at` later than ours is kept ([`WriteOutcome::KeptNewer`]), our own token
//! already stored is left alone ([`WriteOutcome::Unchanged`]), anything else is replaced
//! with KV v2 check-and-set on the version just read (0 when absent). If another writer got
//! in between, Vault refuses with 400; the sink reads again and decides again, at most
//! [`MAX_CAS_ATTEMPTS`] times. A 400 on a version that did not move is not a conflict and is
//! reported as a permanent error.
//!
//! # Talking to Vault: vaultrs
//!
//! Every Vault call goes through the vaultrs crate ([`api`] wraps the six the sink needs:
//! KV v2 read and check-and-set write, AppRole and Kubernetes login, token lookup and
//! renewal). [`api`]'s module doc explains the three gaps worked around: vaultrs logs
//! expected non-2xx answers at ERROR (tokend's log filter turns its targets off,
//! [`crate::observability::logging`]); `kv2::read` drops the version check-and-set needs
//! (vaultrs's `ReadSecretRequest` endpoint is executed directly, with `kv2::read_metadata`
//! after a 404); and its client types print the token in `Debug` (never formatted; the
//! sink's `Debug` impls are written by hand).
//!
//! The token needs read, create and update on `{mount}/data/{path}`. Read on
//! `{mount}/metadata/{path}` is only used to overwrite a secret whose latest version is
//! deleted or destroyed (its version number is only in the metadata).
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
//! addresses only. vaultrs's settings can express the CA file and the timeout but not the
//! resolver (nor a connection timeout or a user agent), so the sink builds this reqwest
//! client itself (`http_client`, through [`crate::http_client::build`], which also turns
//! redirects off: a redirect would re-send `X-Vault-Token`, the document or an AppRole
//! `secret_id` to wherever it points) and [`api`] installs it as the transport of the
//! vaultrs client; vaultrs still builds, sends and parses every request over it. `ca_file`
//! is read by [`crate::http_client::load_ca_file`] (a regular file of at most 1 MiB).

mod api;
mod token;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use url::{Host, Url};

use self::api::{Api, ApiError, KvCurrent};
pub use self::token::VaultTokenStatus;
use self::token::{Auth, Keeper, Names, colon, describe_unavailable};
use super::{SinkContext, SinkError, TokenDocument, WriteOutcome, parse_rfc3339};
use crate::config::error::Validator;
use crate::config::secret::SecretValueConfig;
use crate::http_client::{ClientOptions, load_ca_file};

/// How many times a write reads and tries again after check-and-set conflicts.
const MAX_CAS_ATTEMPTS: usize = 5;
/// Request timeout when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Where Kubernetes mounts the pod's service account token.
pub const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// `[[account.sink]] type = "vault"` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSinkConfig {
    /// The server's URL; default `$VAULT_ADDR`.
    #[serde(default)]
    pub address: Option<String>,
    /// The KV v2 mount; default `secret`.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// The secret's path inside the mount.
    pub path: String,
    /// The Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Extra PEM CA certificates, trusted besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the server certificate must carry, when it differs from `address`'s host.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Per request, as a duration string (`"10s"`); default 30 s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// How the sink gets its Vault token; default: the token in `$VAULT_TOKEN`.
    #[serde(default)]
    pub auth: Option<VaultAuthConfig>,
}

/// `auth = { … }`: exactly one of the three methods. A table of options rather than an
/// enum, so that `{ token = …, approle = … }` gets a located, readable error from `build`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultAuthConfig {
    /// `auth = { token = <secret value> }`.
    #[serde(default)]
    pub token: Option<SecretValueConfig>,
    /// `auth = { approle = { role_id, secret_id, mount } }`.
    #[serde(default)]
    pub approle: Option<AppRoleConfig>,
    /// `auth = { kubernetes = { role, jwt_file, mount } }`.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
}

/// AppRole login settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoleConfig {
    /// The role id (a secret value).
    pub role_id: SecretValueConfig,
    /// The secret id (a secret value), read again at every login.
    pub secret_id: SecretValueConfig,
    /// The auth mount; default `approle`.
    #[serde(default = "default_approle_mount")]
    pub mount: String,
}

/// Kubernetes login settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The Vault role bound to the pod's service account.
    pub role: String,
    /// The service account token; default [`DEFAULT_JWT_FILE`]. Read at every login.
    #[serde(default = "default_jwt_file")]
    pub jwt_file: PathBuf,
    /// The auth mount; default `kubernetes`.
    #[serde(default = "default_kubernetes_mount")]
    pub mount: String,
}

fn default_mount() -> String {
    "secret".into()
}

fn default_approle_mount() -> String {
    "approle".into()
}

fn default_kubernetes_mount() -> String {
    "kubernetes".into()
}

fn default_jwt_file() -> PathBuf {
    DEFAULT_JWT_FILE.into()
}

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

impl VaultSinkConfig {
    /// Validates every setting (reporting each problem through `v`) and builds the sink:
    /// reads `$VAULT_ADDR`, the auth secrets, `ca_file` and `jwt_file`, sets up the HTTP
    /// client; no network.
    pub fn build(&self, v: &mut Validator<'_>, ctx: &SinkContext) -> Option<VaultSink> {
        let env_address = std::env::var("VAULT_ADDR").ok();
        let address = check(
            v,
            "address",
            parse_address(self.address.as_deref(), env_address.as_deref()),
        );
        let mount = check(v, "mount", clean_path(&self.mount));
        let path = check(v, "path", clean_path(&self.path));
        let namespace = match &self.namespace {
            None => Some(None),
            Some(ns) => check(v, "namespace", clean_path(ns).and_then(header_safe)).map(Some),
        };
        let timeout = match &self.timeout {
            None => Some(DEFAULT_TIMEOUT),
            Some(text) => check(v, "timeout", parse_timeout(text)),
        };
        let roots = match &self.ca_file {
            None => Some(Vec::new()),
            Some(file) => check(v, "ca_file", load_ca_file(&v.base_dir().join(file))),
        };
        let server_name = match &self.tls_server_name {
            None => Some(None),
            Some(name) => check(v, "tls_server_name", parse_server_name(name)).map(Some),
        };
        let mut tls_ok = true;
        if address.as_ref().is_some_and(|a| a.scheme() == "http") {
            for (field, set) in [
                ("ca_file", self.ca_file.is_some()),
                ("tls_server_name", self.tls_server_name.is_some()),
            ] {
                if set {
                    v.error(field, "only used with an https:// address");
                    tls_ok = false;
                }
            }
        }
        let auth = self.build_auth(v);
        let (
            Some(address),
            Some(mount),
            Some(path),
            Some(namespace),
            Some(timeout),
            Some(roots),
            Some(server_name),
            Some(auth),
            true,
        ) = (
            address,
            mount,
            path,
            namespace,
            timeout,
            roots,
            server_name,
            auth,
            tls_ok,
        )
        else {
            return None;
        };
        let (http, base) = check(
            v,
            "",
            http_client(&address, timeout, roots, server_name.as_deref()),
        )?;
        let api = check(v, "", Api::new(http, &base, namespace.clone(), timeout))?;
        let shown = address.as_str().trim_end_matches('/').to_string();
        let label = format!("vault:{mount}/{path}");
        let keeper = Keeper::new(
            api.clone(),
            auth,
            Names {
                account: ctx.account.clone(),
                label,
                address: shown.clone(),
            },
        );
        Some(VaultSink {
            address: shown,
            mount,
            path,
            namespace,
            account: ctx.account.clone(),
            api,
            keeper,
        })
    }

    /// Validates `auth` (default: `$VAULT_TOKEN`), resolving its secrets once so that a
    /// missing variable or file is a config error, not a runtime one.
    fn build_auth(&self, v: &mut Validator<'_>) -> Option<Auth> {
        let base_dir = v.base_dir().to_path_buf();
        let Some(auth) = &self.auth else {
            let value = SecretValueConfig::Env("VAULT_TOKEN".into());
            return match value.resolve(&base_dir).and_then(|t| check_token(&t)) {
                Ok(()) => Some(Auth::Token { value, base_dir }),
                Err(e) => {
                    v.error(
                        "auth",
                        format!(
                            "not set, and the default $VAULT_TOKEN cannot be used ({e}): \
                             set auth = {{ token = … }}, {{ approle = … }} or {{ kubernetes = … }}"
                        ),
                    );
                    None
                }
            };
        };
        match (&auth.token, &auth.approle, &auth.kubernetes) {
            (Some(value), None, None) => {
                let mut a = v.key("auth");
                let token = a.secret("token", value)?;
                check(&mut a, "token", check_token(&token))?;
                Some(Auth::Token {
                    value: value.clone(),
                    base_dir,
                })
            }
            (None, Some(c), None) => {
                let mut a = v.key("auth");
                let mut r = a.key("approle");
                let role_id = r
                    .secret("role_id", &c.role_id)
                    .and_then(|s| check(&mut r, "role_id", not_empty(&s)));
                let secret_id = r
                    .secret("secret_id", &c.secret_id)
                    .and_then(|s| check(&mut r, "secret_id", not_empty(&s)));
                let mount = check(&mut r, "mount", clean_path(&c.mount));
                let (Some(()), Some(()), Some(mount)) = (role_id, secret_id, mount) else {
                    return None;
                };
                Some(Auth::AppRole {
                    mount,
                    role_id: c.role_id.clone(),
                    secret_id: c.secret_id.clone(),
                    base_dir,
                })
            }
            (None, None, Some(c)) => {
                let mut a = v.key("auth");
                let mut k = a.key("kubernetes");
                let role = if c.role.trim().is_empty() {
                    k.error("role", "must not be empty");
                    None
                } else {
                    Some(c.role.clone())
                };
                let jwt_file = base_dir.join(&c.jwt_file);
                let readable = check(&mut k, "jwt_file", readable_file(&jwt_file));
                let mount = check(&mut k, "mount", clean_path(&c.mount));
                let (Some(role), Some(()), Some(mount)) = (role, readable, mount) else {
                    return None;
                };
                Some(Auth::Kubernetes {
                    mount,
                    role,
                    jwt_file,
                })
            }
            _ => {
                v.error(
                    "auth",
                    "expected exactly one of token, approle or kubernetes",
                );
                None
            }
        }
    }
}

/// Reports an error result against `field`, keeping the value of an `Ok`.
fn check<T>(v: &mut Validator<'_>, field: &str, result: Result<T, String>) -> Option<T> {
    result.map_err(|message| v.error(field, message)).ok()
}

/// The server URL: `configured`, else `env` (`$VAULT_ADDR`). http(s) only, plain http only
/// to a loopback host, no credentials, query or fragment. The path ends with `/`.
fn parse_address(configured: Option<&str>, env: Option<&str>) -> Result<Url, String> {
    let (text, what) = match (configured, env) {
        (Some(text), _) => (text, crate::redact::url_for_message(text)),
        (None, Some(text)) => (
            text,
            format!("$VAULT_ADDR ({})", crate::redact::url_for_message(text)),
        ),
        (None, None) => {
            return Err("not set, and $VAULT_ADDR is not set either: \
                        give the server's url, e.g. \"https://vault.example:8200\""
                .into());
        }
    };
    // Never repeat an address that may carry a password.
    let what = if text.contains('@') {
        "the address".to_string()
    } else {
        what
    };
    let mut url = Url::parse(text.trim()).map_err(|e| format!("{what} is not a url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{what} is not an http:// or https:// url"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the address must not contain a user name or password".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{what} must not have a query or a fragment"));
    }
    if url.scheme() == "http" && !crate::provider::http::is_loopback(&url) {
        return Err(format!(
            "{what}: plain http is only allowed to a loopback address \
             (127.0.0.0/8, ::1, localhost, *.localhost); use https://"
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A mount, path or namespace without leading or trailing `/`; no empty, `.` or `..`
/// segments, no control characters.
fn clean_path(text: &str) -> Result<String, String> {
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!("{text:?} contains control characters"));
    }
    if trimmed
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!("{text:?} has an empty, \".\" or \"..\" segment"));
    }
    Ok(trimmed.to_string())
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    crate::config::validate::bounded_duration(text, crate::bounds::TIMEOUT_RANGE)
}

/// A DNS name for certificate checks (lower-cased; IP addresses are refused).
fn parse_server_name(name: &str) -> Result<String, String> {
    match Host::parse(name.trim()) {
        Ok(Host::Domain(domain)) if !domain.is_empty() => Ok(domain),
        Ok(Host::Ipv4(_) | Host::Ipv6(_)) => Err(format!(
            "{name:?} is an ip address: expected the dns name in the server's certificate"
        )),
        _ => Err(format!("{name:?} is not a dns name")),
    }
}

/// Checks that the file can be read, with the rules of every secret file (a regular file, no
/// FIFO that would block `check`, no other user able to write it, at most 64 KiB).
fn readable_file(path: &Path) -> Result<(), String> {
    crate::config::files::read_trusted(path, "jwt_file", crate::config::files::SECRET_CAP).map(drop)
}

fn not_empty(secret: &SecretString) -> Result<(), String> {
    if secret.expose_secret().trim().is_empty() {
        Err("is empty".into())
    } else {
        Ok(())
    }
}

/// A namespace is sent as the `X-Vault-Namespace` header (vaultrs panics on one that does
/// not fit).
fn header_safe(text: String) -> Result<String, String> {
    match HeaderValue::from_str(&text) {
        Ok(_) => Ok(text),
        Err(_) => Err(format!(
            "{text:?} holds characters that cannot be sent in an http header"
        )),
    }
}

/// A token must be non-empty and fit in an HTTP header.
fn check_token(token: &SecretString) -> Result<(), String> {
    not_empty(token)?;
    HeaderValue::from_str(token.expose_secret())
        .map(drop)
        .map_err(|_| "holds characters that cannot be sent in an http header".into())
}

/// The HTTP client for `address` (built by [`crate::http_client::build`], like every other
/// client: no redirects), and the base URL requests go to (its host replaced by
/// `server_name` when set).
fn http_client(
    address: &Url,
    timeout: Duration,
    roots: Vec<reqwest::Certificate>,
    server_name: Option<&str>,
) -> Result<(reqwest::Client, Url), String> {
    let mut options = ClientOptions {
        extra_roots: roots,
        timeout: Some(timeout),
        plain_http_only: address.scheme() == "http",
        resolver: None,
    };
    let mut base = address.clone();
    if let Some(name) = server_name {
        let target = match address.host() {
            Some(Host::Domain(domain)) => domain.to_string(),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip).to_string(),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip).to_string(),
            None => return Err("the address has no host".into()),
        };
        options.resolver = Some(Arc::new(ResolveAs {
            name: name.to_string(),
            target,
        }));
        base.set_host(Some(name))
            .map_err(|e| format!("cannot use tls_server_name {name:?}: {e}"))?;
    }
    Ok((crate::http_client::build(options)?, base))
}

/// Resolves `name` (the `tls_server_name` requests are sent to) as `target` (the host of
/// `address`); any other name as usual.
struct ResolveAs {
    name: String,
    target: String,
}

impl reqwest::dns::Resolve for ResolveAs {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = if name.as_str().eq_ignore_ascii_case(&self.name) {
            self.target.clone()
        } else {
            name.as_str().to_string()
        };
        Box::pin(async move {
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

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
enum Failed {
    /// Vault refused the token (401/403).
    Forbidden(String),
    /// Anything else, already classified.
    Other(SinkError),
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

    /// Publishes `doc` unless the secret holds a newer token (see the module doc).
    pub async fn write(&self, doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        let data: Value = serde_json::from_str(&doc.json(SystemTime::now()))
            .expect("TokenDocument::json always produces a json object");
        let mut token = self.keeper.token().await?;
        let mut fresh_token = false;
        loop {
            match self.publish(&token, doc, &data).await {
                Ok(outcome) => {
                    match outcome {
                        WriteOutcome::KeptNewer => tracing::info!(
                            account = %self.account,
                            sink = %self.label(),
                            "the vault secret holds a token that expires later; kept it"
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
                    token = self.keeper.reauth(&token).await?;
                }
                Err(Failed::Forbidden(detail)) => {
                    return Err(SinkError::Transient(format!(
                        "{}: permission denied (http 403{}) even with a new vault token: \
                         check that mount {:?} exists and that the token's policies allow \
                         read, create and update on \"{}/data/{}\"",
                        self.context(),
                        colon(&detail),
                        self.mount,
                        self.mount,
                        self.path
                    )));
                }
                Err(Failed::Other(e)) => return Err(e),
            }
        }
    }

    /// Read, decide, check-and-set write; again on a conflict.
    async fn publish(
        &self,
        token: &SecretString,
        doc: &TokenDocument,
        data: &Value,
    ) -> Result<WriteOutcome, Failed> {
        // The version a write was refused on, and Vault's words: seeing it again on the
        // next read means the 400 was no conflict.
        let mut refused: Option<(u64, String)> = None;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = self
                .api
                .kv_read(token, &self.mount, &self.path)
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
                // At 0, the read found no version: if the latest one is deleted, only the
                // metadata tells its number, and the token may not be allowed to read it.
                let hint = if cas == 0 {
                    format!(
                        "; if the secret's latest version is deleted, allow read on \"{}/metadata/{}\"",
                        self.mount, self.path
                    )
                } else {
                    String::new()
                };
                return Err(Failed::Other(SinkError::Permanent(format!(
                    "{}: vault rejected the write (http 400{}){hint}",
                    self.context(),
                    colon(detail)
                ))));
            }
            match self
                .api
                .kv_write(token, &self.mount, &self.path, data, cas)
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
    fn failed(&self, e: ApiError) -> Failed {
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
    use crate::config::error::{Source, locate};
    use crate::sink::SinkConfig;

    /// Parses and builds a sink table, returning the located errors as text.
    fn build(text: &str) -> Result<VaultSink, String> {
        let config: SinkConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let SinkConfig::Vault(config) = config else {
            panic!("not a vault sink: {text}");
        };
        let source = Arc::new(Source {
            path: "/etc/tokend/tokend.toml".into(),
            text: text.into(),
        });
        let mut problems = Vec::new();
        let sink = {
            let mut v = Validator::new(&mut problems, source);
            config.build(
                &mut v,
                &SinkContext {
                    account: "acct".into(),
                },
            )
        };
        if problems.is_empty() {
            Ok(sink.expect("no problems means a sink"))
        } else {
            assert!(sink.is_none(), "a sink despite problems");
            Err(locate(problems).to_string())
        }
    }

    fn err(text: &str) -> String {
        build(text).expect_err("expected a config error")
    }

    const BASE: &str = "type = \"vault\"\naddress = \"https://vault.example:8200\"\n";

    #[test]
    fn builds_with_defaults_and_labels_mount_and_path() {
        let sink = build(&format!(
            "{BASE}path = \"/tokend/a/\"\nauth = {{ token = \"hvs.x\" }}\n"
        ))
        .unwrap();
        assert_eq!(sink.label(), "vault:secret/tokend/a");
        let debug = format!("{sink:?}");
        assert!(
            debug.contains("vault token from the config file"),
            "{debug}"
        );
        assert!(!debug.contains("hvs.x"), "{debug}");
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        for text in [
            format!("{BASE}path = \"p\"\nauth = {{ token = \"t\" }}\nmout = \"x\"\n"),
            format!("{BASE}path = \"p\"\nauth = {{ tokn = \"t\" }}\n"),
            format!(
                "{BASE}path = \"p\"\nauth = {{ approle = {{ role_id = \"r\", secret_id = \"s\", mnt = \"x\" }} }}\n"
            ),
            format!(
                "{BASE}path = \"p\"\nauth = {{ kubernetes = {{ role = \"r\", jwt = \"x\" }} }}\n"
            ),
            format!("{BASE}path = \"p\"\nauth = {{ token = {{ evn = \"X\" }} }}\n"),
        ] {
            let e = err(&text);
            assert!(e.contains("unknown"), "{text}\n→ {e}");
        }
        // Two methods at once, or none.
        let e = err(&format!(
            "{BASE}path = \"p\"\nauth = {{ token = \"t\", approle = {{ role_id = \"r\", secret_id = \"s\" }} }}\n"
        ));
        assert!(
            e.contains(":4:1: auth: expected exactly one of token, approle or kubernetes"),
            "{e}"
        );
        let e = err(&format!("{BASE}path = \"p\"\nauth = {{}}\n"));
        assert!(e.contains("auth: expected exactly one"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let e = err(concat!(
            "type = \"vault\"\n",
            "address = \"http://vault.example:8200\"\n",
            "mount = \"/\"\n",
            "path = \"a//b\"\n",
            "timeout = \"soon\"\n",
            "namespace = \"\"\n",
            "auth = { approle = { role_id = \"\", secret_id = { env = \"TOKEND_TEST_SURELY_UNSET\" } } }\n",
        ));
        for expected in [
            "address: \"http://vault.example:8200\": plain http is only allowed to a loopback address",
            "mount: must not be empty",
            "path: \"a//b\" has an empty",
            "timeout: \"soon\" is not a duration",
            "namespace: must not be empty",
            "auth.approle.role_id: is empty",
            "auth.approle.secret_id: environment variable \"TOKEND_TEST_SURELY_UNSET\" is not set",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
        assert!(e.starts_with("/etc/tokend/tokend.toml:"), "{e}");
    }

    #[test]
    fn tls_settings_are_checked() {
        let e = err(&format!(
            "{BASE}path = \"p\"\nca_file = \"/nonexistent/ca.pem\"\ntls_server_name = \"10.0.0.1\"\nauth = {{ token = \"t\" }}\n"
        ));
        assert!(
            e.contains("ca_file: cannot read ca_file /nonexistent/ca.pem"),
            "{e}"
        );
        assert!(
            e.contains("tls_server_name: \"10.0.0.1\" is an ip address"),
            "{e}"
        );
        let e = err(
            "type = \"vault\"\naddress = \"http://127.0.0.1:8200\"\npath = \"p\"\ntls_server_name = \"vault\"\nauth = { token = \"t\" }\n",
        );
        assert!(
            e.contains("tls_server_name: only used with an https:// address"),
            "{e}"
        );
        let sink = build(&format!(
            "{BASE}path = \"p\"\ntls_server_name = \"Vault-1.Internal\"\nauth = {{ token = \"t\" }}\n"
        ))
        .unwrap();
        assert_eq!(sink.api_base_host(), "vault-1.internal");
    }

    #[test]
    fn kubernetes_needs_a_readable_jwt_file() {
        let e = err(&format!(
            "{BASE}path = \"p\"\nauth = {{ kubernetes = {{ role = \"tokend\", jwt_file = \"/nonexistent/jwt\" }} }}\n"
        ));
        assert!(
            e.contains("auth.kubernetes.jwt_file: cannot read jwt_file /nonexistent/jwt"),
            "{e}"
        );
        let config: SinkConfig = toml::from_str(&format!(
            "{BASE}path = \"p\"\nauth = {{ kubernetes = {{ role = \"tokend\" }} }}\n"
        ))
        .unwrap();
        let SinkConfig::Vault(VaultSinkConfig {
            auth:
                Some(VaultAuthConfig {
                    kubernetes: Some(k),
                    ..
                }),
            ..
        }) = config
        else {
            panic!("not parsed as kubernetes auth");
        };
        assert_eq!(k.jwt_file, Path::new(DEFAULT_JWT_FILE));
        assert_eq!(k.mount, "kubernetes");
    }

    #[test]
    fn addresses_default_to_vault_addr_and_refuse_plain_http_off_loopback() {
        assert_eq!(
            parse_address(None, Some("https://v.example:8200"))
                .unwrap()
                .as_str(),
            "https://v.example:8200/"
        );
        assert_eq!(
            parse_address(Some("https://v.example/prefix"), Some("https://other"))
                .unwrap()
                .as_str(),
            "https://v.example/prefix/"
        );
        assert!(
            parse_address(None, None)
                .unwrap_err()
                .contains("$VAULT_ADDR is not set")
        );
        assert!(
            parse_address(None, Some("http://10.1.1.1:8200"))
                .unwrap_err()
                .starts_with("$VAULT_ADDR (\"http://10.1.1.1:8200\"): plain http")
        );
        for ok in [
            "http://127.0.0.1:8200",
            "http://127.8.9.1",
            "http://[::1]:8200",
            "http://LocalHost:8200",
        ] {
            assert!(parse_address(Some(ok), None).is_ok(), "{ok}");
        }
        let e = parse_address(Some("https://user:hunter2@v.example"), None).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(parse_address(Some("ftp://v.example"), None).is_err());
        assert!(parse_address(Some("https://v.example/?x=1"), None).is_err());
        assert!(parse_address(Some("vault:8200"), None).is_err());
    }

    #[test]
    fn the_default_auth_is_the_vault_token_variable() {
        let e = err(&format!("{BASE}path = \"p\"\n"));
        // The test environment has no $VAULT_TOKEN (scripts/test does not set one).
        if std::env::var_os("VAULT_TOKEN").is_none() {
            assert!(
                e.contains("auth: not set, and the default $VAULT_TOKEN"),
                "{e}"
            );
        }
    }

    #[test]
    fn tokens_must_fit_in_a_header() {
        let e = err(&format!(
            "{BASE}path = \"p\"\nauth = {{ token = \"hvs.a\\nb\" }}\n"
        ));
        assert!(e.contains("auth.token: holds characters"), "{e}");
        assert!(!e.contains("hvs.a"), "{e}");
    }

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

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("/team/kv/").unwrap(), "team/kv");
        assert!(clean_path("a/../b").is_err());
        assert!(clean_path("a/./b").is_err());
        assert!(clean_path("a\tb").is_err());
    }

    impl VaultSink {
        fn api_base_host(&self) -> String {
            self.api.base_host()
        }
    }
}
