//! The Vault calls the vault sink makes, all vaultrs functions: [`kv2::read_metadata`],
//! [`kv2::read_version`] and [`kv2::set_with_options`] for the check-and-set write,
//! [`vaultrs::auth::approle::login`] and [`vaultrs::auth::kubernetes::login`], and
//! [`vaultrs::token::lookup_self`] and [`vaultrs::token::renew_self`]. Called by the sink's
//! write ([`super::write`]) and its token keeper ([`super::token`]), which see only this
//! module's small types, never a vaultrs one.
//!
//! # The clients
//!
//! [`Api`] holds one token-less [`VaultClient`], built by [`VaultClientSettingsBuilder`]
//! from the address, namespace and timeout (everything else set explicitly, so that
//! `$VAULT_TOKEN`, `$VAULT_CACERT`, `$VAULT_SKIP_VERIFY` or `$VAULT_CLIENT_CERT` cannot sneak
//! in); logins run on it. Each token the keeper obtains gets its own [`VaultClient`] with
//! the token set by vaultrs's `set_token`: a [`Session`], built once per token and shared
//! by the writes and the renewal task that use it. vaultrs never renews or replaces a
//! token: [`super::token`] does.
//!
//! # What vaultrs is given rather than left to do
//!
//! - **The HTTP client.** vaultrs builds its own `reqwest::Client` from its settings, and
//!   those cannot turn redirects off: reqwest follows up to ten, and on a redirect to
//!   another host it drops `Authorization` and cookies but not `X-Vault-Token`, nor the
//!   document or an AppRole `secret_id` in a re-sent body (`tests/redirects.rs`). Nor can
//!   they express the DNS override `tls_server_name` needs. So the client comes from
//!   [`crate::http_client::build`], the one place that builds HTTP clients, and is handed
//!   to vaultrs the way its API allows: [`VaultClient`]'s public `http` field, a rustify
//!   client over that `reqwest::Client`. vaultrs still builds, sends and parses every
//!   request.
//! - **The status of answers that are not Vault's `errors` JSON** (a proxy's HTML 502):
//!   vaultrs passes on rustify's error for those, so the `rustify` crate is a dependency
//!   only to name that error type ([`status_of`], [`api_error`]).
//!
//! vaultrs and rustify log every non-2xx answer at ERROR (`#[instrument(err)]`), expected
//! ones too: the 404 of a first write, the 400 of a check-and-set conflict, the 403 that
//! triggers a new login. tokend's log filter turns both targets off unless the operator
//! names them ([`crate::observability::logging`]); the sink reports real failures itself.
//! Their events never carry a token (checked in vaultrs 0.8 and rustify 0.7, and by the
//! integration test that captures every level): tokens travel only in the `X-Vault-Token`
//! header, spans record the method and path, and errors are logged by `Display`, which
//! leaves out the response body rustify keeps in some errors. That body (a login answer
//! holds a token) is never formatted here either: [`api_error`] keeps only the status and
//! Vault's `errors` words. vaultrs's settings, middleware and answers print the token in
//! `Debug`; nothing here derives or calls `Debug` on them.
//!
//! Callers decide on the HTTP status ([`ApiError::Status`]), never on the wording of Vault's
//! `errors` array: OpenBao and HashiCorp Vault word the same error differently
//! (`TESTING.md`). The words are kept, cleaned and shortened, for humans only.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use rustify::clients::reqwest::Client as HttpClient;
use rustify::errors::ClientError as HttpError;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use url::Url;
use vaultrs::api::AuthInfo;
use vaultrs::api::kv2::requests::SetSecretRequestOptions;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::kv2;

/// Longest excerpt of Vault's error words kept in a message.
const MAX_DETAIL: usize = 240;

/// A Vault server as the sink talks to it: a vaultrs client without a token.
#[derive(Clone)]
pub(super) struct Api {
    vault: Arc<VaultClient>,
}

/// A token and the vaultrs client that sends it. Cheap to clone; no `Debug`.
#[derive(Clone)]
pub(super) struct Session(Arc<Authed>);

struct Authed {
    token: SecretString,
    vault: VaultClient,
}

impl Drop for Authed {
    fn drop(&mut self) {
        // vaultrs keeps the token in plain `String`s; wipe them like `SecretString` does.
        self.vault.middle.token.zeroize();
        self.vault.settings.token.zeroize();
    }
}

impl Session {
    /// The token this session sends.
    pub fn token(&self) -> &SecretString {
        &self.0.token
    }

    /// Whether both send the same token.
    pub fn same_token(&self, other: &Session) -> bool {
        self.token().expose_secret() == other.token().expose_secret()
    }
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
    /// `current_version` from the metadata; 0 when the secret was never written.
    pub version: u64,
    /// That version's data; `None` when absent, deleted or destroyed.
    pub data: Option<Map<String, Value>>,
}

/// A Vault token and what Vault says about its lifetime.
pub(super) struct Lease {
    /// The token, ready to send.
    pub session: Session,
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

impl Api {
    /// A vaultrs client for the server at `base` (no path; its host is the
    /// `tls_server_name` when set), sending requests through `http`.
    pub fn new(
        http: reqwest::Client,
        base: &Url,
        namespace: Option<String>,
        timeout: Duration,
    ) -> Result<Api, String> {
        let settings = VaultClientSettingsBuilder::default()
            .address(base.as_str())
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
        // tokend's HTTP client, redirects off (module doc).
        vault.http = HttpClient::new(base.as_str(), http);
        Ok(Api {
            vault: Arc::new(vault),
        })
    }

    /// The host requests go to (the `tls_server_name` when set).
    #[cfg(test)]
    pub fn base_host(&self) -> String {
        self.vault
            .settings
            .address
            .host_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A client that sends `token`, over the same HTTP client.
    pub fn session(&self, token: SecretString) -> Result<Session, ApiError> {
        // vaultrs would panic on a token that is not a valid header value.
        if HeaderValue::from_str(token.expose_secret()).is_err() {
            return Err(ApiError::BadToken);
        }
        let mut vault = VaultClient {
            // A clone of a reqwest client shares its connection pool.
            http: HttpClient::new(&self.vault.http.base, self.vault.http.http.clone()),
            middle: self.vault.middle.clone(),
            settings: self.vault.settings.clone(),
        };
        vault.set_token(token.expose_secret());
        Ok(Session(Arc::new(Authed { token, vault })))
    }

    /// A login or renewal answer as a [`Lease`]; its token moves into a secret.
    fn lease(&self, auth: AuthInfo) -> Result<Lease, ApiError> {
        let ttl = lease_ttl(auth.lease_duration);
        Ok(Lease {
            session: self.session(SecretString::from(auth.client_token))?,
            accessor: auth.accessor,
            ttl,
            renewable: auth.renewable,
            full_ttl: ttl,
        })
    }

    /// The current version of `mount`/`path` and its data: [`kv2::read_metadata`] for the
    /// version (a 404 means never written, or no such mount, which the write that follows
    /// tells by its own 404), then [`kv2::read_version`] for that version's data unless it
    /// is deleted or destroyed. A write between the two reads is harmless: the
    /// check-and-set write on the version read fails with 400 and the sink reads again.
    pub async fn kv_read(
        &self,
        session: &Session,
        mount: &str,
        path: &str,
    ) -> Result<KvCurrent, ApiError> {
        let vault = &session.0.vault;
        let absent = |version| KvCurrent {
            version,
            data: None,
        };
        let metadata = match kv2::read_metadata(vault, mount, path).await {
            Ok(metadata) => metadata,
            Err(e) if status_of(&e) == Some(404) => return Ok(absent(0)),
            // A 2xx that is not metadata: a KV v1 secret literally named `metadata/<path>`.
            Err(e) => return Err(api_error(e, |_| ApiError::NotKv2)),
        };
        let version = metadata.current_version;
        let live = metadata
            .versions
            .get(&version.to_string())
            .is_some_and(|v| v.deletion_time.is_empty() && !v.destroyed);
        if version == 0 || !live {
            return Ok(absent(version));
        }
        match kv2::read_version::<Value>(vault, mount, path, version).await {
            Ok(data) => Ok(KvCurrent {
                version,
                data: object(data),
            }),
            // Deleted between the two reads.
            Err(e) if status_of(&e) == Some(404) => Ok(absent(version)),
            Err(e) => Err(api_error(e, |_| ApiError::NotKv2)),
        }
    }

    /// Writes `data` as a new version of `mount`/`path` with check-and-set `cas`
    /// ([`kv2::set_with_options`]): Vault refuses with 400 unless the current version is
    /// `cas` (0: the secret must not exist yet). Returns the new version.
    pub async fn kv_write(
        &self,
        session: &Session,
        mount: &str,
        path: &str,
        data: &Value,
        cas: u64,
    ) -> Result<u64, ApiError> {
        let cas = u32::try_from(cas).map_err(|_| {
            ApiError::Request(format!(
                "version {cas} is beyond what vaultrs can send for check-and-set"
            ))
        })?;
        let options = SetSecretRequestOptions { cas };
        kv2::set_with_options(&session.0.vault, mount, path, data, options)
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
        let auth = vaultrs::auth::approle::login(
            &*self.vault,
            mount,
            role_id.expose_secret(),
            secret_id.expose_secret(),
        )
        .await
        .map_err(|e| api_error(e, auth_malformed))?;
        self.lease(auth)
    }

    /// Logs in with a Kubernetes service account token at `auth/{mount}/login`.
    pub async fn kubernetes_login(
        &self,
        mount: &str,
        role: &str,
        jwt: &SecretString,
    ) -> Result<Lease, ApiError> {
        let auth = vaultrs::auth::kubernetes::login(&*self.vault, mount, role, jwt.expose_secret())
            .await
            .map_err(|e| api_error(e, auth_malformed))?;
        self.lease(auth)
    }

    /// Asks Vault about the session's token (GET `auth/token/lookup-self`, allowed by the
    /// default policy). Used for token auth, where nothing else tells the sink the TTL.
    pub async fn lookup_self(&self, session: &Session) -> Result<Lease, ApiError> {
        let mut answer = vaultrs::token::lookup_self(&session.0.vault)
            .await
            .map_err(|e| {
                api_error(e, |_| {
                    ApiError::Malformed("token lookup answer without the token's data".into())
                })
            })?;
        // The answer repeats the token; the session has it already.
        answer.id.zeroize();
        Ok(Lease {
            session: session.clone(),
            accessor: answer.accessor,
            ttl: lease_ttl(answer.ttl),
            renewable: answer.renewable.unwrap_or(false),
            // vaultrs does not deserialize `period`; for a periodic token Vault sets the
            // creation TTL to the period.
            full_ttl: lease_ttl(answer.creation_ttl),
        })
    }

    /// Extends the session's token (POST `auth/token/renew-self`, no increment: Vault
    /// grants the token's normal TTL, capped by its max TTL). `full_ttl` of the answer is
    /// left at the granted TTL; the caller compares it with the TTL it expected.
    pub async fn renew_self(&self, session: &Session) -> Result<Lease, ApiError> {
        let mut auth = vaultrs::token::renew_self(&session.0.vault, None)
            .await
            .map_err(|e| api_error(e, auth_malformed))?;
        // The same token again; keep the session that has it.
        auth.client_token.zeroize();
        let ttl = lease_ttl(auth.lease_duration);
        Ok(Lease {
            session: session.clone(),
            accessor: auth.accessor,
            ttl,
            renewable: auth.renewable,
            full_ttl: ttl,
        })
    }
}

/// `": words"` when there are words.
pub(super) fn colon(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// Why Vault could not be used, for a transient error message.
pub(super) fn describe_unavailable(e: &ApiError) -> String {
    match e {
        ApiError::Status { status, detail } => format!("http {status}{}", colon(detail)),
        ApiError::Transport {
            timeout: true,
            detail,
        } => format!("no answer in time ({detail})"),
        ApiError::Transport { detail, .. } => format!("cannot reach vault: {detail}"),
        ApiError::Malformed(what) => format!("unexpected answer: {what}"),
        ApiError::NotKv2 => "unexpected answer without kv v2 metadata".into(),
        ApiError::BadToken => {
            "the vault token holds characters that cannot be sent in an http header".into()
        }
        ApiError::Request(what) => format!("cannot send the request: {what}"),
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
mod tests;
