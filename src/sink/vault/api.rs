//! The Vault calls the vault sink makes, all through vaultrs: KV v2 read and check-and-set
//! write ([`vaultrs::kv2`]), AppRole and Kubernetes login ([`vaultrs::auth`]), and the
//! token's own `lookup-self` and `renew-self` ([`vaultrs::token`]). Called by the sink
//! ([`super::VaultSink`]) and its token keeper ([`super::token`]), which see only this
//! module's small types, never a vaultrs one.
//!
//! # The client
//!
//! One [`VaultClient`] per sink, built from [`VaultClientSettingsBuilder`] (address,
//! namespace, timeout; everything else set explicitly, so that `$VAULT_TOKEN`,
//! `$VAULT_CACERT`, `$VAULT_SKIP_VERIFY` or `$VAULT_CLIENT_CERT` cannot sneak in) and
//! holding no token. A login runs on it as is (no `X-Vault-Token`); every other call runs
//! on a short-lived [`Authed`] view that shares its HTTP client and carries the caller's
//! token in a copy of vaultrs's [`EndpointMiddleware`] (the token changes under the
//! sink's feet, and vaultrs's own `set_token` needs `&mut` on a client shared by writes
//! and the renewal task). vaultrs never renews or replaces a token: [`super::token`] does.
//!
//! Two settings of the client are adjusted after vaultrs built it, because vaultrs cannot
//! express them:
//! - its transport is the `reqwest::Client` that the sink builds (`http_client` in
//!   [`super`]): vaultrs's settings have no DNS override for `tls_server_name`, no
//!   connection timeout and no user agent. vaultrs still builds every request, adds its
//!   headers and parses every answer; only the socket underneath is tokend's.
//! - an address with a path (`https://lb.example/vault/`): vaultrs prepends its API
//!   version (`v1`) to the *whole* request path, so the path goes into that version string
//!   instead (`vault/v1`) and requests reach `/vault/v1/...` as before.
//!
//! # Three vaultrs gaps, and what is done about them
//!
//! 1. **ERROR events for expected answers.** vaultrs and rustify (its HTTP layer) are
//!    `#[instrument(err)]` and log every non-2xx answer at ERROR: the 404 of a first write,
//!    the 400 of a check-and-set conflict, the 403 that triggers a new login. tokend's log
//!    filter turns both targets off unless the operator names them
//!    ([`crate::observability::logging`]); the sink reports real failures itself, with
//!    the address, mount and path. Their events never carry a token (checked in vaultrs
//!    0.8 and rustify 0.7, and by the integration test that captures every level): tokens
//!    travel only in the `X-Vault-Token` header, request bodies are not recorded, spans
//!    record the method and path, and errors are logged by `Display`, which leaves out the
//!    response body that rustify keeps in some errors. That body (a login answer holds a
//!    token) is therefore never formatted here either: [`api_error`] keeps only the status
//!    and Vault's `errors` words.
//! 2. **`kv2::read` drops the version** that check-and-set needs (so does
//!    `kv2::read_version`). [`Api::kv_read`] executes vaultrs's own `ReadSecretRequest`
//!    endpoint with [`vaultrs::api::exec_with_result`], which returns the version with the
//!    data in one call and needs no more ACL than before (read on `{mount}/data/{path}`).
//!    A 404 does not tell "never written" from "latest version deleted or destroyed" (the
//!    version is in the body, which vaultrs drops), so then [`kv2::read_metadata`] gives
//!    `current_version`, and [`kv2::read_version`] the data should that version be live
//!    after all (written meanwhile). A write racing between two of these calls is harmless:
//!    the check-and-set write fails with 400 and the sink reads again.
//! 3. **vaultrs types print the token in `Debug`** ([`VaultClientSettings`],
//!    [`EndpointMiddleware`], `AuthInfo`, `LookupTokenResponse`). Nothing here derives or
//!    calls `Debug` on them: answers are turned into [`Lease`] (token in a
//!    [`SecretString`]) at once, and the sink's own `Debug` impls are written by hand.
//!
//! Callers decide on the HTTP status ([`ApiError::Status`]), never on the wording of Vault's
//! `errors` array: OpenBao and HashiCorp Vault word the same error differently
//! (`TESTING.md`). The words are kept, cleaned and shortened, for humans only.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use rustify::errors::ClientError as HttpError;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use url::Url;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::api::kv2::responses::ReadSecretResponse;
use vaultrs::api::{AuthInfo, EndpointMiddleware};
use vaultrs::client::{Client, VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::kv2;

/// Longest excerpt of Vault's error words kept in a message.
const MAX_DETAIL: usize = 240;

/// A Vault server as the sink talks to it: a vaultrs client without a token.
#[derive(Clone)]
pub(super) struct Api {
    vault: Arc<VaultClient>,
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
    /// The request could not be built or sent for a local reason; retrying will not help.
    Request(String),
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
    /// The TTL a renewal normally grants (the login TTL, or the token's creation TTL,
    /// which is its period for a periodic token). A renewal that grants less has hit the
    /// max TTL.
    pub full_ttl: Duration,
}

/// A TTL in seconds from Vault, clamped to a year (`crate::bounds::MAX_LIFETIME`): the
/// token keeper adds it to `Instant::now()`, which a server's `u64::MAX` would overflow
/// (issue 11: no answer from outside may panic).
fn lease_ttl(secs: u64) -> Duration {
    Duration::from_secs(secs).min(crate::bounds::MAX_LIFETIME)
}

impl Lease {
    /// The `auth` object of a login or renewal answer; its token moves into a secret.
    fn from_auth(auth: AuthInfo) -> Lease {
        let ttl = lease_ttl(auth.lease_duration);
        Lease {
            token: SecretString::from(auth.client_token),
            accessor: auth.accessor,
            ttl,
            renewable: auth.renewable,
            full_ttl: ttl,
        }
    }
}

/// The sink's [`VaultClient`] with a token: what every call but a login runs on.
///
/// vaultrs takes the token from [`Client::middle`], so this view carries its own copy of
/// the middleware (version, namespace, token) and borrows the rest. No `Debug`, and the
/// token copy is wiped on drop.
struct Authed<'a> {
    vault: &'a VaultClient,
    middle: EndpointMiddleware,
}

impl Client for Authed<'_> {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.vault.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        &self.vault.settings
    }

    fn set_token(&mut self, token: &str) {
        self.middle.token.zeroize();
        self.middle.token = token.to_string();
    }
}

impl Drop for Authed<'_> {
    fn drop(&mut self) {
        self.middle.token.zeroize();
    }
}

impl Api {
    /// A vaultrs client for the server at `base` (its path ends with `/`; its host is the
    /// `tls_server_name` when set), sending requests through `http`.
    pub fn new(
        http: reqwest::Client,
        base: &Url,
        namespace: Option<String>,
        timeout: Duration,
    ) -> Result<Api, String> {
        let mut origin = base.clone();
        origin.set_path("/");
        let prefix = base.path().trim_start_matches('/').to_string();
        let settings = VaultClientSettingsBuilder::default()
            .address(origin.as_str())
            .namespace(namespace)
            .timeout(Some(timeout))
            // Explicit, so that none of these is taken from the environment.
            .token("")
            .verify(true)
            .ca_certs(Vec::new())
            .identity(None)
            .build()
            .map_err(|e| format!("cannot set up the vault client: {e}"))?;
        let mut vault = VaultClient::new(settings)
            .map_err(|e| format!("cannot set up the vault client: {e}"))?;
        // What vaultrs cannot express (module doc): tokend's transport, and the address's
        // path in front of the API version.
        vault.http.http = http;
        vault.middle.version = format!("{prefix}{}", vault.middle.version);
        Ok(Api {
            vault: Arc::new(vault),
        })
    }

    /// The host requests go to (the `tls_server_name` when set).
    #[cfg(test)]
    pub fn base_host(&self) -> String {
        Url::parse(&self.vault.http.base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The client with `token` in its middleware.
    fn authed(&self, token: &SecretString) -> Result<Authed<'_>, ApiError> {
        // vaultrs would panic on a token that is not a valid header value.
        if HeaderValue::from_str(token.expose_secret()).is_err() {
            return Err(ApiError::BadToken);
        }
        let mut middle = self.vault.middle.clone();
        middle.token = token.expose_secret().to_string();
        Ok(Authed {
            vault: &self.vault,
            middle,
        })
    }

    /// Reads the latest version of `mount`/`path` (GET `{mount}/data/{path}`).
    ///
    /// A 404 means "not there": the secret was never written, its latest version is
    /// deleted or destroyed (then its metadata still carries the version, which
    /// check-and-set needs), or the mount does not exist. The write that follows tells the
    /// last case apart by its own 404.
    pub async fn kv_read(
        &self,
        token: &SecretString,
        mount: &str,
        path: &str,
    ) -> Result<KvCurrent, ApiError> {
        let client = self.authed(token)?;
        let endpoint = ReadSecretRequest::builder()
            .mount(mount)
            .path(path)
            .build()
            .expect("mount and path are set");
        let result: Result<ReadSecretResponse, _> =
            vaultrs::api::exec_with_result(&client, endpoint).await;
        match result {
            Ok(answer) => Ok(KvCurrent {
                version: answer.metadata.version,
                data: object(answer.data),
            }),
            Err(e) if status_of(&e) == Some(404) => self.kv_after_404(&client, mount, path).await,
            Err(e) => Err(api_error(e, |json| {
                if json {
                    // A KV v1 secret literally named `data/<path>`.
                    ApiError::NotKv2
                } else {
                    ApiError::Malformed("http 200 with a body that is not json".into())
                }
            })),
        }
    }

    /// After a 404 on the data: the version from the metadata (0 when there is none).
    async fn kv_after_404(
        &self,
        client: &Authed<'_>,
        mount: &str,
        path: &str,
    ) -> Result<KvCurrent, ApiError> {
        let metadata = match kv2::read_metadata(client, mount, path).await {
            Ok(metadata) => metadata,
            // 404: never written (or no such mount). 403: the policy allows the data but not
            // the metadata; assume never written, and should the latest version be deleted
            // after all, check-and-set refuses the write and the sink says so.
            Err(e) if matches!(status_of(&e), Some(403 | 404)) => {
                return Ok(KvCurrent {
                    version: 0,
                    data: None,
                });
            }
            Err(e) => return Err(api_error(e, |_| ApiError::NotKv2)),
        };
        let version = metadata.current_version;
        let live = metadata
            .versions
            .get(&version.to_string())
            .is_some_and(|v| v.deletion_time.is_empty() && !v.destroyed);
        if version == 0 || !live {
            return Ok(KvCurrent {
                version,
                data: None,
            });
        }
        // Written since the first read: its data decides, not just its version.
        match kv2::read_version::<Value>(client, mount, path, version).await {
            Ok(data) => Ok(KvCurrent {
                version,
                data: object(data),
            }),
            Err(e) if status_of(&e) == Some(404) => Ok(KvCurrent {
                version,
                data: None,
            }),
            Err(e) => Err(api_error(e, |_| ApiError::NotKv2)),
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
        let client = self.authed(token)?;
        let cas = u32::try_from(cas).map_err(|_| {
            ApiError::Request(format!(
                "version {cas} is beyond what vaultrs can send for check-and-set"
            ))
        })?;
        kv2::set_with_options(&client, mount, path, data, SetSecretRequestOptions { cas })
            .await
            .map(|written| written.version)
            // KV v1 answers 204 with no body: it stored a secret literally named
            // `data/<path>`.
            .map_err(|e| api_error(e, |_| ApiError::NotKv2))
    }

    /// Logs in with AppRole at `auth/{mount}/login`.
    pub async fn approle_login(
        &self,
        mount: &str,
        role_id: &SecretString,
        secret_id: &SecretString,
    ) -> Result<Lease, ApiError> {
        vaultrs::auth::approle::login(
            &*self.vault,
            mount,
            role_id.expose_secret(),
            secret_id.expose_secret(),
        )
        .await
        .map(Lease::from_auth)
        .map_err(|e| api_error(e, auth_malformed))
    }

    /// Logs in with a Kubernetes service account token at `auth/{mount}/login`.
    pub async fn kubernetes_login(
        &self,
        mount: &str,
        role: &str,
        jwt: &SecretString,
    ) -> Result<Lease, ApiError> {
        vaultrs::auth::kubernetes::login(&*self.vault, mount, role, jwt.expose_secret())
            .await
            .map(Lease::from_auth)
            .map_err(|e| api_error(e, auth_malformed))
    }

    /// Asks Vault about `token` itself (GET `auth/token/lookup-self`, allowed by the
    /// default policy). Used for token auth, where nothing else tells the sink the TTL.
    pub async fn lookup_self(&self, token: &SecretString) -> Result<Lease, ApiError> {
        let client = self.authed(token)?;
        let mut answer = vaultrs::token::lookup_self(&client).await.map_err(|e| {
            api_error(e, |_| {
                ApiError::Malformed("token lookup answer without the token's data".into())
            })
        })?;
        // The answer repeats the token; the caller has it already.
        answer.id.zeroize();
        Ok(Lease {
            token: token.clone(),
            accessor: answer.accessor,
            ttl: lease_ttl(answer.ttl),
            renewable: answer.renewable.unwrap_or(false),
            // vaultrs does not deserialize `period`; for a periodic token Vault sets the
            // creation TTL to the period.
            full_ttl: lease_ttl(answer.creation_ttl),
        })
    }

    /// Extends `token` (POST `auth/token/renew-self`, no increment: Vault grants the
    /// token's normal TTL, capped by its max TTL). `full_ttl` of the answer is left at the
    /// granted TTL; the caller compares it with the TTL it expected.
    pub async fn renew_self(&self, token: &SecretString) -> Result<Lease, ApiError> {
        let client = self.authed(token)?;
        vaultrs::token::renew_self(&client, None)
            .await
            .map(Lease::from_auth)
            .map_err(|e| api_error(e, auth_malformed))
    }
}

/// A JSON object, or `None` (a deleted version's `data` is `null`).
fn object(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A login or renewal answer that vaultrs could not read.
fn auth_malformed(json: bool) -> ApiError {
    ApiError::Malformed(if json {
        "answer without an auth object with a token".into()
    } else {
        "answer that is not json".into()
    })
}

/// The HTTP status of a non-2xx answer, whether vaultrs found Vault's `errors` array in
/// it ([`ClientError::APIError`]) or not (a 404 for a deleted version has none; a proxy's
/// HTML page neither).
fn status_of(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: HttpError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

/// A vaultrs error as an [`ApiError`]. `unparsed` decides what a 2xx answer that vaultrs
/// could not read means (its argument: whether the body was JSON), since that depends on
/// the call.
///
/// Never formats `e` with `Debug`, nor any body it holds: a login answer carries a token.
fn api_error(e: ClientError, unparsed: impl FnOnce(bool) -> ApiError) -> ApiError {
    match e {
        ClientError::APIError { code, errors } => ApiError::Status {
            status: code,
            detail: clean_words(&errors),
        },
        ClientError::RestClientError { source } => match source {
            HttpError::ServerResponseError { code, content } => ApiError::Status {
                status: code,
                detail: content
                    .map(|body| error_words(body.as_bytes()))
                    .unwrap_or_default(),
            },
            HttpError::RequestError { source, .. } | HttpError::ResponseError { source } => {
                transport(source)
            }
            HttpError::ResponseParseError { content, .. } => {
                unparsed(content.is_some_and(|body| serde_json::from_str::<Value>(&body).is_ok()))
            }
            other => ApiError::Request(other.to_string()),
        },
        ClientError::ResponseEmptyError
        | ClientError::ResponseDataEmptyError
        | ClientError::JsonParseError { .. } => unparsed(true),
        other => ApiError::Request(other.to_string()),
    }
}

/// Vault's `errors` array joined into one short line.
fn clean_words(errors: &[String]) -> String {
    // "1 error occurred:\n\t* permission denied\n\n" reads better on one line.
    let joined = errors.join("; ");
    let line = joined.split_whitespace().collect::<Vec<_>>().join(" ");
    // A secret store's text: cleaned and redacted whole, then cut (issue 12).
    crate::redact::excerpt(&line, MAX_DETAIL)
}

/// The `errors` array of an error body as [`clean_words`]; empty when there is none (an
/// HTML page from a proxy is not repeated).
pub(super) fn error_words(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let words: Vec<String> = value
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    clean_words(&words)
}

/// A failure to send or to receive as an [`ApiError::Transport`], with its cause chain and
/// no URL.
fn transport(source: anyhow::Error) -> ApiError {
    let e = match source.downcast::<reqwest::Error>() {
        Ok(e) => e,
        Err(other) => {
            return ApiError::Transport {
                timeout: false,
                detail: format!("{other:#}"),
            };
        }
    };
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
    use std::sync::Mutex;

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

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

    /// One request as a scripted server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        /// `GET /v1/secret/data/x HTTP/1.1`.
        line: String,
        /// Header lines, lower-cased names.
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// A loopback HTTP/1.1 server that answers each connection's request with the next
    /// `(status, body)` of its script and records what it saw.
    async fn scripted(script: Vec<(u16, &'static str)>) -> (Url, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            for (status, body) in script {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, length) = loop {
                    let n = socket.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let length = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                            .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
                        buf.drain(..end + 4);
                        break (head, length);
                    }
                };
                while buf.len() < length {
                    let n = socket.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                let mut lines = head.lines();
                // vaultrs sends an empty query (`data/x?`) when no version is given.
                let line = lines.next().unwrap().replace("? HTTP/", " HTTP/");
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                log.lock().unwrap().push(Seen {
                    line,
                    headers,
                    body: String::from_utf8_lossy(&buf).to_string(),
                });
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
                socket.shutdown().await.ok();
            }
        });
        (url, seen)
    }

    fn api(base: &Url, namespace: Option<&str>) -> Api {
        Api::new(
            crate::http_client::build(crate::http_client::ClientOptions::default()).unwrap(),
            base,
            namespace.map(str::to_string),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    fn token(t: &str) -> SecretString {
        SecretString::from(t.to_string())
    }

    const NOT_FOUND: &str = r#"{"errors":[]}"#;
    const METADATA_V3_DELETED: &str = r#"{"data":{"cas_required":false,"created_time":"t",
        "current_version":3,"delete_version_after":"0s","max_versions":0,"oldest_version":0,
        "updated_time":"t","custom_metadata":null,"versions":{"3":{"created_time":"t",
        "deletion_time":"t2","destroyed":false}}},"lease_id":"","lease_duration":0,
        "renewable":false,"request_id":"r"}"#;
    const DATA_V3: &str = r#"{"data":{"data":{"access_token":"a"},"metadata":{
        "created_time":"t","deletion_time":"","destroyed":false,"version":3}},
        "lease_id":"","lease_duration":0,"renewable":false,"request_id":"r"}"#;

    #[tokio::test]
    async fn requests_carry_token_namespace_and_the_address_path_before_v1() {
        let (mut base, seen) = scripted(vec![(200, DATA_V3)]).await;
        base.set_path("/prefix/");
        let api = api(&base, Some("team/a"));
        let current = api
            .kv_read(&token("hvs.secret"), "team/kv", "tokend/a b")
            .await
            .unwrap();
        assert_eq!(current.version, 3);
        assert_eq!(current.data.unwrap()["access_token"], "a");
        let seen = seen.lock().unwrap()[0].clone();
        assert_eq!(
            seen.line, "GET /prefix/v1/team/kv/data/tokend/a%20b HTTP/1.1",
            "{seen:?}"
        );
        assert_eq!(seen.header("x-vault-token"), Some("hvs.secret"));
        assert_eq!(seen.header("x-vault-namespace"), Some("team/a"));
        assert_eq!(seen.header("x-vault-request"), Some("true"));
    }

    #[tokio::test]
    async fn a_404_takes_the_version_from_the_metadata() {
        // Never written: data 404, metadata 404.
        let (base, seen) = scripted(vec![(404, NOT_FOUND), (404, NOT_FOUND)]).await;
        let current = api(&base, None)
            .kv_read(&token("t"), "secret", "x")
            .await
            .unwrap();
        assert_eq!((current.version, current.data.is_none()), (0, true));
        let lines: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.line.clone())
            .collect();
        assert_eq!(
            lines,
            [
                "GET /v1/secret/data/x HTTP/1.1",
                "GET /v1/secret/metadata/x HTTP/1.1"
            ]
        );

        // Latest version deleted: its 404 has no `errors`, the metadata has the version.
        let deleted = r#"{"data":{"data":null,"metadata":{"created_time":"t",
            "deletion_time":"t2","destroyed":false,"version":3}}}"#;
        let (base, _) = scripted(vec![(404, deleted), (200, METADATA_V3_DELETED)]).await;
        let current = api(&base, None)
            .kv_read(&token("t"), "secret", "x")
            .await
            .unwrap();
        assert_eq!((current.version, current.data.is_none()), (3, true));

        // Written between the two reads: that version's data is read too.
        let live = METADATA_V3_DELETED.replace(r#""deletion_time":"t2""#, r#""deletion_time":"""#);
        let live: &'static str = Box::leak(live.into_boxed_str());
        let (base, seen) = scripted(vec![(404, NOT_FOUND), (200, live), (200, DATA_V3)]).await;
        let current = api(&base, None)
            .kv_read(&token("t"), "secret", "x")
            .await
            .unwrap();
        assert_eq!(current.version, 3);
        assert_eq!(current.data.unwrap()["access_token"], "a");
        assert_eq!(
            seen.lock().unwrap()[2].line,
            "GET /v1/secret/data/x?version=3 HTTP/1.1"
        );
    }

    #[tokio::test]
    async fn writes_send_check_and_set_and_spot_kv_v1() {
        let written = r#"{"data":{"created_time":"t","deletion_time":"","destroyed":false,
            "version":4},"lease_id":"","lease_duration":0,"renewable":false,"request_id":"r"}"#;
        let (base, seen) = scripted(vec![(200, written), (204, "")]).await;
        let api = api(&base, None);
        let data = json!({ "access_token": "a" });
        assert_eq!(
            api.kv_write(&token("t"), "secret", "x", &data, 3)
                .await
                .unwrap(),
            4
        );
        let body: Value = serde_json::from_str(&seen.lock().unwrap()[0].body).unwrap();
        assert_eq!(body, json!({ "data": data, "options": { "cas": 3 } }));
        assert!(matches!(
            api.kv_write(&token("t"), "kv1", "x", &data, 0).await,
            Err(ApiError::NotKv2)
        ));
    }

    #[tokio::test]
    async fn errors_keep_the_status_and_vault_words_only() {
        let (base, _) = scripted(vec![
            (503, r#"{"errors":["Vault is sealed"]}"#),
            (502, "<html>bad gateway</html>"),
            (200, r#"{"auth":null,"client_token":"hvs.leaked"}"#),
        ])
        .await;
        let api = api(&base, None);
        let e = api.kv_read(&token("t"), "secret", "x").await.err().unwrap();
        assert!(
            matches!(&e, ApiError::Status { status: 503, detail } if detail == "Vault is sealed"),
            "{e:?}"
        );
        let e = api.renew_self(&token("t")).await.err().unwrap();
        assert!(
            matches!(&e, ApiError::Status { status: 502, detail } if detail.is_empty()),
            "{e:?}"
        );
        let e = api
            .approle_login("approle", &token("r"), &token("s"))
            .await
            .err()
            .unwrap();
        assert!(matches!(&e, ApiError::Malformed(_)), "{e:?}");
        assert!(!format!("{e:?}").contains("hvs.leaked"), "{e:?}");
    }

    #[tokio::test]
    async fn transport_errors_and_unsendable_tokens() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let api = api(&base, None);
        let e = api.lookup_self(&token("t")).await.err().unwrap();
        assert!(
            matches!(&e, ApiError::Transport { timeout: false, detail } if !detail.contains("127.0.0.1")),
            "{e:?}"
        );
        let e = api.kv_read(&token("a\nb"), "secret", "x").await.err();
        assert!(matches!(e, Some(ApiError::BadToken)));
    }

    /// Issue 11: a TTL of u64::MAX from a hostile server once overflowed `Instant + ttl`.
    #[test]
    fn lease_ttls_are_clamped_to_a_year() {
        assert_eq!(lease_ttl(u64::MAX), crate::bounds::MAX_LIFETIME);
        assert_eq!(lease_ttl(3600), Duration::from_secs(3600));
    }
}
