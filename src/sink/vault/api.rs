//! The handful of Vault HTTP API calls the vault sink makes, over reqwest: KV v2 read and
//! check-and-set write, AppRole and Kubernetes login, and the token's own `lookup-self` and
//! `renew-self`. Called by the sink ([`super::VaultSink`]) and its token keeper
//! ([`super::token`]).
//!
//! Callers decide on the HTTP status ([`ApiError::Status`]), never on the wording of Vault's
//! `errors` array: OpenBao and HashiCorp Vault word the same error differently
//! (`TESTING.md`). The words are kept, cleaned and shortened, for humans only.
//!
//! Why not vaultrs (CRATES.md): every vaultrs call is `#[instrument(err)]`, so each expected
//! non-2xx (the 404 of a first write, a 400 check-and-set conflict, the 403 that triggers a
//! new login) would log an ERROR line; `kv2::read` drops the version that check-and-set
//! needs; its settings and token lookup types derive `Debug` with the token inside. Six
//! JSON calls over the reqwest client the crate already has are smaller than working around
//! that.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

/// Longest excerpt of Vault's error words kept in a message.
const MAX_DETAIL: usize = 240;

/// A Vault server as the sink talks to it: one HTTP client (TLS, timeout and the
/// `tls_server_name` resolver are set up by `build`), the base URL and the namespace.
#[derive(Clone)]
pub(super) struct Api {
    http: reqwest::Client,
    base: Url,
    namespace: Option<String>,
}

/// Why a call failed.
#[derive(Debug)]
pub(super) enum ApiError {
    /// Vault answered with a status outside 2xx. `detail` is its `errors` array, cleaned.
    Status {
        /// The HTTP status code: what callers decide on.
        status: u16,
        /// Vault's words, for humans.
        detail: String,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    Transport {
        /// The request ran out of time.
        timeout: bool,
        /// The error chain, without the URL (the caller names the address).
        detail: String,
    },
    /// A 2xx answer whose body is not what the API documents (a proxy's HTML page, say).
    Malformed(String),
    /// The mount answered like a KV version 1 engine (no version metadata).
    NotKv2,
    /// The token cannot be sent: it holds characters not allowed in an HTTP header.
    BadToken,
}

/// The current state of a KV v2 secret, as needed for check-and-set.
pub(super) struct KvCurrent {
    /// `metadata.version` of the latest version; 0 when the secret was never written.
    pub version: u64,
    /// The latest version's data; `None` when absent, deleted or destroyed.
    pub data: Option<Map<String, Value>>,
}

/// A Vault token and what Vault says about its lifetime.
pub(super) struct Lease {
    /// The token itself.
    pub token: SecretString,
    /// The token's accessor: identifies it (lookup, revoke) but cannot authenticate.
    pub accessor: String,
    /// Time to live left; zero for a token that never expires (root tokens).
    pub ttl: Duration,
    /// Whether `renew-self` may extend it.
    pub renewable: bool,
    /// The TTL a renewal normally grants (the login TTL, the token's period or its
    /// creation TTL). A renewal that grants less has hit the max TTL.
    pub full_ttl: Duration,
}

/// The `auth` object of a login or renew answer. No `Debug`: it holds the token.
#[derive(Deserialize)]
struct AuthBody {
    client_token: String,
    #[serde(default)]
    accessor: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

impl Api {
    /// An API handle for the server at `base` (its path ends with `/`).
    pub fn new(http: reqwest::Client, base: Url, namespace: Option<String>) -> Api {
        Api {
            http,
            base,
            namespace,
        }
    }

    /// The host requests go to (the `tls_server_name` when set).
    #[cfg(test)]
    pub fn base_host(&self) -> String {
        self.base.host_str().unwrap_or_default().to_string()
    }

    /// `base` + `v1/` + the given path pieces, each split on `/` and percent-encoded.
    fn url(&self, pieces: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("http and https urls always have a path");
            segments.pop_if_empty().push("v1");
            for piece in pieces {
                segments.extend(piece.split('/'));
            }
        }
        url
    }

    /// Sends one request and returns the status and body, whatever the status.
    async fn send(
        &self,
        method: Method,
        url: Url,
        token: Option<&SecretString>,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let mut request = self
            .http
            .request(method, url)
            .header("X-Vault-Request", "true");
        if let Some(token) = token {
            let mut value =
                HeaderValue::from_str(token.expose_secret()).map_err(|_| ApiError::BadToken)?;
            // Keeps the token out of reqwest's and hyper's Debug output and HPACK tables.
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace.as_str());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(transport)?;
        Ok((status, bytes.to_vec()))
    }

    /// Sends a request that must answer 2xx with a JSON body.
    async fn call(
        &self,
        method: Method,
        url: Url,
        token: Option<&SecretString>,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let (status, bytes) = self.send(method, url, token, body).await?;
        if !(200..300).contains(&status) {
            return Err(status_error(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::Malformed(format!("http {status} with a body that is not json")))
    }

    /// Reads the latest version of `mount`/`path` (GET `{mount}/data/{path}`).
    ///
    /// A 404 means "not there": the secret was never written, its latest version is
    /// deleted or destroyed (then the body still carries the version, which check-and-set
    /// needs), or the mount does not exist. The write that follows tells the last case
    /// apart by its own 404.
    pub async fn kv_read(
        &self,
        token: &SecretString,
        mount: &str,
        path: &str,
    ) -> Result<KvCurrent, ApiError> {
        let url = self.url(&[mount, "data", path]);
        let (status, bytes) = self.send(Method::GET, url, Some(token), None).await?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let version = body
            .as_ref()
            .and_then(|b| b.pointer("/data/metadata/version"))
            .and_then(Value::as_u64);
        match status {
            200 => {
                let Some(version) = version else {
                    return Err(if body.is_some() {
                        ApiError::NotKv2
                    } else {
                        ApiError::Malformed("http 200 with a body that is not json".into())
                    });
                };
                let data = body
                    .and_then(|mut b| b.pointer_mut("/data/data").map(Value::take))
                    .and_then(|d| match d {
                        Value::Object(map) => Some(map),
                        _ => None,
                    });
                Ok(KvCurrent { version, data })
            }
            404 => Ok(KvCurrent {
                version: version.unwrap_or(0),
                data: None,
            }),
            _ => Err(status_error(status, &bytes)),
        }
    }

    /// Writes `data` as a new version of `mount`/`path` with check-and-set `cas`
    /// (POST `{mount}/data/{path}`): Vault refuses with 400 unless the current version is
    /// `cas` (0: the secret must not exist yet). Returns the new version.
    pub async fn kv_write(
        &self,
        token: &SecretString,
        mount: &str,
        path: &str,
        data: &Value,
        cas: u64,
    ) -> Result<u64, ApiError> {
        let url = self.url(&[mount, "data", path]);
        let body = json!({ "options": { "cas": cas }, "data": data });
        let (status, bytes) = self
            .send(Method::POST, url, Some(token), Some(&body))
            .await?;
        if !(200..300).contains(&status) {
            return Err(status_error(status, &bytes));
        }
        // KV v1 answers 204 with no body: it stored a secret literally named `data/<path>`.
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|b| b.pointer("/data/version").and_then(Value::as_u64))
            .ok_or(ApiError::NotKv2)
    }

    /// Logs in at `auth/{mount}/login` with `body` (AppRole: role_id and secret_id;
    /// Kubernetes: role and jwt).
    pub async fn login(&self, mount: &str, body: &Value) -> Result<Lease, ApiError> {
        let url = self.url(&["auth", mount, "login"]);
        let answer = self.call(Method::POST, url, None, Some(body)).await?;
        let auth = auth_body(answer)?;
        let ttl = Duration::from_secs(auth.lease_duration);
        Ok(Lease {
            token: SecretString::from(auth.client_token),
            accessor: auth.accessor,
            ttl,
            renewable: auth.renewable,
            full_ttl: ttl,
        })
    }

    /// Asks Vault about `token` itself (GET `auth/token/lookup-self`, allowed by the
    /// default policy). Used for token auth, where nothing else tells the sink the TTL.
    pub async fn lookup_self(&self, token: &SecretString) -> Result<Lease, ApiError> {
        let url = self.url(&["auth", "token", "lookup-self"]);
        let answer = self.call(Method::GET, url, Some(token), None).await?;
        let data = answer
            .get("data")
            .ok_or_else(|| ApiError::Malformed("token lookup answer without data".into()))?;
        let seconds = |key: &str| data.get(key).and_then(Value::as_u64).unwrap_or(0);
        let period = seconds("period");
        Ok(Lease {
            token: token.clone(),
            accessor: data
                .get("accessor")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            ttl: Duration::from_secs(seconds("ttl")),
            renewable: data
                .get("renewable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            full_ttl: Duration::from_secs(if period > 0 {
                period
            } else {
                seconds("creation_ttl")
            }),
        })
    }

    /// Extends `token` (POST `auth/token/renew-self`, no increment: Vault grants the
    /// token's normal TTL, capped by its max TTL). `full_ttl` of the answer is left at the
    /// granted TTL; the caller compares it with the TTL it expected.
    pub async fn renew_self(&self, token: &SecretString) -> Result<Lease, ApiError> {
        let url = self.url(&["auth", "token", "renew-self"]);
        let answer = self
            .call(Method::POST, url, Some(token), Some(&json!({})))
            .await?;
        let auth = auth_body(answer)?;
        let ttl = Duration::from_secs(auth.lease_duration);
        Ok(Lease {
            token: SecretString::from(auth.client_token),
            accessor: auth.accessor,
            ttl,
            renewable: auth.renewable,
            full_ttl: ttl,
        })
    }
}

/// Takes the `auth` object out of a login or renew answer.
fn auth_body(mut answer: Value) -> Result<AuthBody, ApiError> {
    let auth = answer
        .get_mut("auth")
        .map(Value::take)
        .ok_or_else(|| ApiError::Malformed("answer without an auth object".into()))?;
    serde_json::from_value(auth)
        .map_err(|_| ApiError::Malformed("answer with an auth object without a token".into()))
}

/// A non-2xx answer as an error, keeping Vault's words (cleaned) for the message.
fn status_error(status: u16, body: &[u8]) -> ApiError {
    ApiError::Status {
        status,
        detail: error_words(body),
    }
}

/// Vault's `errors` array joined into one short line; empty when there is none (an HTML
/// page from a proxy is not repeated).
pub(super) fn error_words(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let words: Vec<&str> = value
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| errors.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // "1 error occurred:\n\t* permission denied\n\n" reads better on one line.
    let joined = words.join("; ");
    let mut line = joined.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX_DETAIL {
        line = line.chars().take(MAX_DETAIL).collect::<String>() + "…";
    }
    line
}

/// A reqwest failure as an [`ApiError::Transport`], with its cause chain and no URL.
fn transport(e: reqwest::Error) -> ApiError {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper and reqwest often repeat their cause's text in their own.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    ApiError::Transport {
        timeout,
        detail: parts.join(": "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_words_are_one_short_line() {
        assert_eq!(
            error_words(br#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#),
            "1 error occurred: * permission denied"
        );
        assert_eq!(error_words(br#"{"errors":[]}"#), "");
        assert_eq!(error_words(b"<html>bad gateway</html>"), "");
        let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000));
        assert_eq!(error_words(long.as_bytes()).chars().count(), MAX_DETAIL + 1);
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_segments() {
        let api = Api::new(
            reqwest::Client::new(),
            Url::parse("https://vault.example:8200/prefix/").unwrap(),
            None,
        );
        assert_eq!(
            api.url(&["team/kv", "data", "tokend/a b"]).as_str(),
            "https://vault.example:8200/prefix/v1/team/kv/data/tokend/a%20b"
        );
        let api = Api::new(
            reqwest::Client::new(),
            Url::parse("http://127.0.0.1:8200/").unwrap(),
            None,
        );
        assert_eq!(
            api.url(&["auth", "approle", "login"]).as_str(),
            "http://127.0.0.1:8200/v1/auth/approle/login"
        );
    }
}
