//! The emulated APIs, one file per provider document, plus what they share: body parsing,
//! request records and the protected resource (`whoami`).

mod funcional;
mod hubsoft;
mod itflex;
mod oauth2;
mod pontotel;
mod zarv;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value};

use super::Provider;
use super::state::{Api, RequestRecord};

/// The token endpoints of `provider` (paths as in the module table of `emulator`).
pub(crate) fn token_routes(provider: Provider) -> Router<Api> {
    let router = Router::new();
    match provider {
        Provider::Pontotel => router.route("/pontotel/api/v4/login/", post(pontotel::login)),
        Provider::Funcional => router.route("/funcional/graphql", post(funcional::graphql)),
        Provider::Hubsoft => router.route("/hubsoft/oauth/token", post(hubsoft::token)),
        Provider::Zarv => router
            .route("/zarv/api/v1/authentication", post(zarv::login))
            .route("/zarv/api/v1/authentication/refresh", post(zarv::refresh)),
        Provider::Itflex => router.route("/itflex/api/v1/oauth2/token", post(itflex::token)),
        Provider::Oauth2 => router.route("/oauth2/token", post(oauth2::token)),
    }
}

/// Body fields whose values never leave the emulator, not even in a [`RequestRecord`].
const SECRET_FIELDS: [&str; 6] = [
    "password",
    "client_secret",
    "refresh_token",
    "refreshToken",
    // GraphQL: the document may hold the password as a literal, the variables as a value.
    "query",
    "variables",
];

/// Why a body could not be read.
pub(crate) enum BodyError {
    /// The `Content-Type` is not the one the API takes.
    UnsupportedMediaType,
    /// Not parseable, or not of the expected shape.
    Malformed(String),
}

impl BodyError {
    /// 415 for the wrong media type, else 400.
    fn status(&self) -> StatusCode {
        match self {
            BodyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn message(&self) -> String {
        match self {
            BodyError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            BodyError::Malformed(why) => why.clone(),
        }
    }
}

/// The media type of the request, lower-case, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or("").trim();
    Some(essence.to_ascii_lowercase())
}

/// A JSON object body, sent as `application/json`.
pub(crate) fn json_object(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, BodyError> {
    if media_type(headers).as_deref() != Some("application/json") {
        return Err(BodyError::UnsupportedMediaType);
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(BodyError::Malformed(
            "the body must be a JSON object".into(),
        )),
        Err(error) => Err(BodyError::Malformed(format!(
            "the body is not valid JSON: {error}"
        ))),
    }
}

/// A string member of a JSON object.
pub(crate) fn str_field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// A JSON response with the given status.
pub(crate) fn json(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Adds the RFC 6749 §5.1 headers that keep token responses out of caches.
pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Stores what the request carried, secrets redacted, for [`super::Emulator::last_request`].
pub(crate) fn record<'a>(
    api: &Api,
    path: &str,
    headers: &HeaderMap,
    fields: impl IntoIterator<Item = (&'a str, String)>,
) {
    let fields = fields
        .into_iter()
        .map(|(key, value)| {
            let value = if SECRET_FIELDS.contains(&key) {
                "<redacted>".to_owned()
            } else {
                value
            };
            (key.to_owned(), value)
        })
        .collect::<BTreeMap<_, _>>();
    let authorization_scheme = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_owned);
    api.record(RequestRecord {
        path: path.to_owned(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        authorization_scheme,
        fields,
        received_at: std::time::Instant::now(),
    });
}

/// [`record`] for a JSON object body: strings as they are, other values as JSON text.
pub(crate) fn record_json(api: &Api, path: &str, headers: &HeaderMap, object: &Map<String, Value>) {
    let fields = object.iter().map(|(key, value)| {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (key.as_str(), text)
    });
    record(api, path, headers, fields);
}

/// The token of an `Authorization: Bearer` header (RFC 6750 §2.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name` in the `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `GET /{provider}/whoami`: 200 for a valid token of this provider, else 401 with an RFC
/// 6750 §3 challenge. iTFLEX also takes its `access-token` cookie, as its document says.
pub(crate) async fn whoami(State(api): State<Api>, headers: HeaderMap) -> Response {
    api.stats()
        .resource_requests
        .fetch_add(1, Ordering::Relaxed);
    let token = bearer(&headers).or_else(|| {
        (api.provider == Provider::Itflex)
            .then(|| cookie(&headers, "access-token"))
            .flatten()
    });
    let valid = token.and_then(|token| {
        api.shared
            .tokens()
            .access_subject(api.provider, token, Instant::now())
    });
    match valid {
        Some((subject, left)) => json(
            StatusCode::OK,
            serde_json::json!({
                "provider": api.provider.name(),
                "sub": subject,
                "expires_in": left.as_secs(),
            }),
        ),
        None => {
            let body = if api.provider == Provider::Itflex {
                serde_json::json!({"msg": "Valid authentication token required"})
            } else {
                serde_json::json!({"error": "invalid_token"})
            };
            let mut response = json(StatusCode::UNAUTHORIZED, body);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"tokend-emulator\", error=\"invalid_token\"",
                ),
            );
            response
        }
    }
}
