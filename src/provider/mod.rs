//! Providers: every provider is one declarative HTTP exchange ([`ProviderSpec`]), and the
//! named ones are presets of it (`presets.toml`, data, not code). [`http`] runs an exchange
//! and [`extract`] reads the token and its expiry out of the response.
//!
//! Called by the account logic (`crate::account`), which decides between refresh and login
//! from the typed [`ProviderError`]: transient → back off and retry, rejected → log in again
//! (or back off loudly when the login itself is rejected), malformed or misconfigured →
//! fix the config. An answer that carries no acceptable token is transient
//! ([`ProviderError::malformed_answer`]).

pub mod extract;
pub mod http;
pub mod presets;
pub mod template;
pub mod validate;

use std::time::{Duration, SystemTime};

use secrecy::SecretString;

/// A validated exchange description: the account's provider with its overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    /// How to log in with the account's credentials.
    pub login: Exchange,
    /// How to refresh with a held refresh token; `None` means "log in again".
    pub refresh: Option<Exchange>,
    /// Where the results are in the response.
    pub response: ResponseSpec,
}

/// One HTTP request, with templated strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// URL template.
    pub url: String,
    /// HTTP method.
    pub method: String,
    /// Body.
    pub body: Body,
    /// Header name → value template; empty renders are not sent.
    pub headers: Vec<(String, String)>,
}

impl Exchange {
    /// Every template of the exchange: the URL, header values and body leaves.
    pub fn templates(&self) -> Vec<&str> {
        let mut all = vec![self.url.as_str()];
        all.extend(self.headers.iter().map(|(_, v)| v.as_str()));
        match &self.body {
            Body::Empty => {}
            Body::Form(fields) => all.extend(fields.iter().map(|(_, v)| v.as_str())),
            Body::Json(tree) => json_strings(tree, &mut all),
        }
        all
    }
}

fn json_strings<'a>(tree: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match tree {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body.
    Empty,
    /// JSON: string leaves are templates; the rendered tree is serialised (correct escaping).
    /// Shared by every account with the same template ([`validate::shared_json`]).
    Json(std::sync::Arc<serde_json::Value>),
    /// `application/x-www-form-urlencoded`: values are templates; empty renders are left out.
    Form(Vec<(String, String)>),
}

/// Where a value is found in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A JSON pointer into the body (RFC 6901).
    Pointer(String),
    /// A `Set-Cookie` by name.
    Cookie(String),
    /// A response header by name.
    Header(String),
}

impl Source {
    /// Parses `"/json/pointer"`, `"cookie:NAME"` or `"header:NAME"`.
    pub fn parse(s: &str) -> Result<Source, String> {
        if let Some(name) = s.strip_prefix("cookie:") {
            (!name.is_empty())
                .then(|| Source::Cookie(name.to_string()))
                .ok_or_else(|| "empty cookie name".to_string())
        } else if let Some(name) = s.strip_prefix("header:") {
            (!name.is_empty())
                .then(|| Source::Header(name.to_string()))
                .ok_or_else(|| "empty header name".to_string())
        } else if s.is_empty() || s.starts_with('/') {
            Ok(Source::Pointer(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a source: expected a JSON pointer such as \"/access_token\", \"cookie:NAME\" or \"header:NAME\""
            ))
        }
    }
}

/// The source as written in a config (`/pointer`, `cookie:NAME`, `header:NAME`): what
/// [`Source::parse`] reads back.
impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Pointer(p) => f.write_str(p),
            Source::Cookie(c) => write!(f, "cookie:{c}"),
            Source::Header(h) => write!(f, "header:{h}"),
        }
    }
}

/// Where each result is in the response; lists are fallbacks tried in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseSpec {
    /// The access token (required).
    pub access_token: Vec<Source>,
    /// A refresh token, if issued.
    pub refresh_token: Vec<Source>,
    /// Lifetime in seconds.
    pub expires_in: Vec<Source>,
    /// Refresh token lifetime in seconds.
    pub refresh_expires_in: Vec<Source>,
    /// Token type; default `Bearer`.
    pub token_type: Vec<Source>,
    /// JSON pointer: present and non-null ⇒ failure, even with HTTP 200.
    pub error: Option<String>,
}

/// `oauth2`'s `grant` (RFC 6749 §4): what a login sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// `client_credentials` (the default): the client's own credentials.
    #[default]
    ClientCredentials,
    /// `password`: a user's username and password.
    Password,
    /// `refresh_token`: a configured refresh token, spent by a rotating server.
    RefreshToken,
}

impl Grant {
    /// The RFC 6749 `grant_type` word (also the preset templates' `grant` variable).
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
            Grant::RefreshToken => "refresh_token",
        }
    }

    /// The account fields a login with this grant sends.
    pub fn credentials(self) -> &'static [&'static str] {
        match self {
            Grant::ClientCredentials => &["client_secret"],
            Grant::Password => &["username", "password"],
            Grant::RefreshToken => &["refresh_token"],
        }
    }
}

/// `oauth2`'s `client_auth` (RFC 6749 §2.3.1): how the client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `basic` (the default): an HTTP Basic header with the client id and secret.
    #[default]
    Basic,
    /// `body`: `client_id` (and `client_secret`, if any) in the form body.
    Body,
}

impl ClientAuth {
    /// `basic` or `body` (the preset templates' `client_auth` variable).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Basic => "basic",
            ClientAuth::Body => "body",
        }
    }
}

/// Which exchange produced a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A full login with the credentials.
    Login,
    /// The refresh exchange with a held refresh token.
    Refresh,
}

impl Via {
    /// `login` or `refresh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Login => "login",
            Via::Refresh => "refresh",
        }
    }
}

/// A token obtained from a provider.
#[derive(Clone)]
pub struct Obtained {
    /// The access token.
    pub access_token: SecretString,
    /// Usually `Bearer`.
    pub token_type: String,
    /// When it was obtained (request start).
    pub obtained_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Where the expiry came from: `expires_in`, `jwt`, `cookie`, `default`.
    pub expiry_source: &'static str,
    /// The refresh token to use next, if any (a rotated one replaces the old).
    pub refresh_token: Option<SecretString>,
    /// When that refresh token expires, if known.
    pub refresh_expires_at: Option<SystemTime>,
    /// Which exchange produced it.
    pub via: Via,
}

impl std::fmt::Debug for Obtained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Obtained")
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("expires_at", &crate::bounds::rfc3339(self.expires_at))
            .field("expiry_source", &self.expiry_source)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("via", &self.via)
            .finish()
    }
}

/// Why an exchange failed. Messages never hold a secret (they are redacted with the
/// account's known secrets before they are built).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 5xx, 429, timeouts, connection errors, unparseable bodies: retry with backoff.
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// The server's `Retry-After`, honoured as a lower bound for the next attempt.
        retry_after: Option<Duration>,
        /// The request may have been processed although no answer arrived (timeout, dropped
        /// connection): a rotating refresh token sent with it may be spent.
        maybe_processed: bool,
    },
    /// The provider said no: bad credentials, `invalid_grant`, a GraphQL `UNAUTHENTICATED`.
    #[error("{message}")]
    Rejected {
        /// What happened.
        message: String,
    },
    /// The request could not even be built (a template needs a variable that is not set,
    /// a plain-http URL to a remote host): only a config change helps.
    #[error("{message}")]
    Malformed {
        /// What happened.
        message: String,
    },
    /// The token endpoint does not exist (HTTP 404 or 405): a wrong `base_url` or
    /// `token_url`, not a credentials problem (SPEC §4). Only a config change helps; it
    /// backs off like rejected credentials (`account::policy`).
    #[error("{message}")]
    Misconfigured {
        /// What happened, naming the URL.
        message: String,
    },
}

impl ProviderError {
    /// `transient`, `rejected`, `malformed` or `misconfigured`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Transient { .. } => "transient",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Malformed { .. } => "malformed",
            ProviderError::Misconfigured { .. } => "misconfigured",
        }
    }

    /// An answer the server processed but that holds no usable token (SPEC §4 "Only good
    /// tokens are published"): a token that is empty, not visible ASCII, too long or about
    /// to expire, or a lifetime that is negative, NaN, infinite or unparseable. Transient,
    /// so the account backs off instead of logging in again at once; `maybe_processed`,
    /// because the server did process the request and a rotating refresh token sent with
    /// it may be spent. `detail` never holds the token.
    pub fn malformed_answer(what: &str, detail: &str) -> Self {
        ProviderError::Transient {
            message: format!("malformed answer: {what}: {detail}"),
            retry_after: None,
            maybe_processed: true,
        }
    }

    /// A transient failure with an HTTP answer (the server did not complete the exchange).
    pub fn transient(message: String, retry_after: Option<Duration>) -> Self {
        ProviderError::Transient {
            message,
            retry_after,
            maybe_processed: false,
        }
    }

    /// Whether the request may have been processed without us seeing the answer.
    pub fn maybe_processed(&self) -> bool {
        matches!(
            self,
            ProviderError::Transient {
                maybe_processed: true,
                ..
            }
        )
    }

    /// The same error with its message rewritten (redaction).
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            ProviderError::Transient {
                message,
                retry_after,
                maybe_processed,
            } => ProviderError::Transient {
                message: f(&message),
                retry_after,
                maybe_processed,
            },
            ProviderError::Rejected { message } => ProviderError::Rejected {
                message: f(&message),
            },
            ProviderError::Malformed { message } => ProviderError::Malformed {
                message: f(&message),
            },
            ProviderError::Misconfigured { message } => ProviderError::Misconfigured {
                message: f(&message),
            },
        }
    }

    /// `Retry-After` of a transient failure.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
