//! The vault sink's settings: `[[account.sink]] type = "vault"` as serde reads it
//! ([`VaultSinkConfig`]), and [`VaultSinkConfig::build`], which checks every field (each
//! problem reported with its location), resolves the auth secrets once and sets up the
//! vaultrs client, without any network. Called by [`crate::sink::SinkConfig::build`] for
//! `tokend check`, start-up and reload.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::{Host, Url};

use super::VaultSink;
use super::api::Api;
use super::token::{Keeper, Names};
use crate::config::error::Validator;
use crate::config::secret::SecretValueConfig;
use crate::http_client::{ClientOptions, load_ca_file};
use crate::sink::SinkContext;

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

/// How the sink obtains its Vault token (the `auth` table, validated).
pub(super) enum Auth {
    /// A token given by the operator; re-read from its source whenever it must be replaced.
    Token {
        /// Where the token comes from.
        value: SecretValueConfig,
        /// The config file's directory, for relative `file` values.
        base_dir: PathBuf,
    },
    /// AppRole login at `auth/{mount}/login`.
    AppRole {
        /// The auth mount.
        mount: String,
        /// The role id.
        role_id: SecretValueConfig,
        /// The secret id; re-read at every login, so a rotated file is picked up.
        secret_id: SecretValueConfig,
        /// The config file's directory, for relative `file` values.
        base_dir: PathBuf,
    },
    /// Kubernetes login at `auth/{mount}/login` with the pod's service account token.
    Kubernetes {
        /// The auth mount.
        mount: String,
        /// The Vault role.
        role: String,
        /// The service account token file; re-read at every login (projected tokens rotate).
        jwt_file: PathBuf,
    },
}

impl Auth {
    /// Whether a new token can be obtained without the operator (a login).
    pub(super) fn can_login(&self) -> bool {
        !matches!(self, Auth::Token { .. })
    }

    /// How the token is obtained, for messages: `approle login at auth/approle`.
    pub fn describe(&self) -> String {
        match self {
            Auth::Token { value, .. } => format!("vault token from {}", source_name(value)),
            Auth::AppRole { mount, .. } => format!("approle login at auth/{mount}"),
            Auth::Kubernetes { mount, role, .. } => {
                format!("kubernetes login at auth/{mount} (role {role:?})")
            }
        }
    }
}

/// Where a secret value comes from, without the value: `$VAULT_TOKEN`, `file /run/t`.
fn source_name(value: &SecretValueConfig) -> String {
    match value {
        SecretValueConfig::Literal(_) => "the config file".into(),
        SecretValueConfig::Env(var) => format!("${var}"),
        SecretValueConfig::File(path) => format!("file {}", path.display()),
        SecretValueConfig::Credential(name) => format!("credential {name:?}"),
    }
}

impl VaultSinkConfig {
    /// Validates every setting (reporting each problem through `v`) and builds the sink:
    /// reads `$VAULT_ADDR`, the auth secrets, `ca_file` and `jwt_file`, sets up the HTTP
    /// client; no network.
    pub fn build(&self, v: &mut Validator<'_>, ctx: &SinkContext) -> Option<VaultSink> {
        self.build_at(v, ctx, "path")
    }

    /// [`build`](Self::build), reporting problems with `path` against `path_field`: the
    /// coordination store (`crate::coordination`) builds its KV client from a table whose
    /// path is called `prefix`.
    pub fn build_at(
        &self,
        v: &mut Validator<'_>,
        ctx: &SinkContext,
        path_field: &str,
    ) -> Option<VaultSink> {
        let env_address = std::env::var("VAULT_ADDR").ok();
        let address = check(
            v,
            "address",
            parse_address(self.address.as_deref(), env_address.as_deref()),
        );
        let mount = check(v, "mount", clean_path(&self.mount));
        let path = check(v, path_field, clean_path(&self.path));
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
/// to a loopback host, no credentials, path, query or fragment.
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
    let url = Url::parse(text.trim()).map_err(|e| format!("{what} is not a url: {e}"))?;
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
    // vaultrs puts its API version in front of the whole request path (`/v1/…` at the
    // server's root), so a path prefix (a Vault behind `https://lb.example/vault`) cannot
    // be honoured; refuse it rather than send requests elsewhere (issue 15).
    if url.path() != "/" {
        return Err(format!(
            "{what} has a path ({:?}): vault is reached at the server's root (/v1/…); \
             give the url without a path",
            url.path()
        ));
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

#[cfg(test)]
mod tests;
