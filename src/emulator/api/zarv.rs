//! Zarv (seed 003, "Autenticação v2"): `POST /api/v1/authentication` with a JSON username
//! and password returns `accessToken`, `refreshToken`, `token_type`, `expires_in` and
//! `refreshExpiresIn`; `POST /api/v1/authentication/refresh` with `{"refreshToken"}` returns
//! a new pair. The document's examples garble the refresh field (`refreshoken`); only
//! `refreshToken` is accepted, as SPEC §3 says.
//!
//! The refresh token rotates: the spent one is refused with 401 forever after, and each
//! such reuse is counted. Like many rotating servers (OAuth 2.0 Security BCP, RFC 9700
//! §4.14.2), a reuse also revokes the whole token family: every access and refresh token
//! descended from that login (on by default, `Emulator::set_reuse_revokes_family`). Errors follow NestJS (`{"statusCode", "message"}`), which the
//! camel-case fields suggest; the document only promises 401 for bad credentials and
//! invalid or expired tokens.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{json, json_object, record_json, str_field};
use crate::emulator::state::{Api, IssueSpec, TokenFormat};
use crate::emulator::token::Family;

/// A NestJS-style error body.
fn nest_error(status: StatusCode, message: Value) -> Response {
    let mut body = json!({"statusCode": status.as_u16(), "message": message});
    if status != StatusCode::UNAUTHORIZED {
        body["error"] = Value::from(status.canonical_reason().unwrap_or(""));
    }
    json(status, body)
}

/// Issues a new pair and answers with it: in a new family for a login, in the spent
/// refresh token's `family` for a refresh.
fn issue(api: &Api, subject: &str, family: Option<Family>) -> Response {
    let issued = api.issue(IssueSpec {
        subject,
        access: TokenFormat::Jwt,
        refresh: Some(TokenFormat::Jwt),
        client_id: None,
        scope: None,
        family,
    });
    json(
        StatusCode::OK,
        json!({
            "accessToken": issued.access_token,
            "refreshToken": issued.refresh_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "refreshExpiresIn": issued.refresh_expires_in,
        }),
    )
}

/// `POST /zarv/api/v1/authentication`.
pub(crate) async fn login(State(api): State<Api>, headers: HeaderMap, bytes: Bytes) -> Response {
    api.stats().logins.fetch_add(1, Ordering::Relaxed);
    let object = match json_object(&headers, &bytes) {
        Ok(object) => object,
        Err(error) => {
            return api.reject(nest_error(error.status(), error.message().into()));
        }
    };
    record_json(&api, "/zarv/api/v1/authentication", &headers, &object);
    let (Some(username), Some(password)) = (
        str_field(&object, "username"),
        str_field(&object, "password"),
    ) else {
        return api.reject(nest_error(
            StatusCode::BAD_REQUEST,
            json!(["username must be a string", "password must be a string"]),
        ));
    };
    if !api.password_ok(username, password) {
        return api.reject(nest_error(StatusCode::UNAUTHORIZED, "Unauthorized".into()));
    }
    issue(&api, username, None)
}

/// `POST /zarv/api/v1/authentication/refresh`.
pub(crate) async fn refresh(State(api): State<Api>, headers: HeaderMap, bytes: Bytes) -> Response {
    api.stats().refreshes.fetch_add(1, Ordering::Relaxed);
    let object = match json_object(&headers, &bytes) {
        Ok(object) => object,
        Err(error) => {
            return api.reject(nest_error(error.status(), error.message().into()));
        }
    };
    record_json(
        &api,
        "/zarv/api/v1/authentication/refresh",
        &headers,
        &object,
    );
    let Some(refresh_token) = str_field(&object, "refreshToken") else {
        return api.reject(nest_error(
            StatusCode::BAD_REQUEST,
            json!(["refreshToken must be a string"]),
        ));
    };
    match api.redeem(refresh_token, None, None, false) {
        Ok(grant) => issue(&api, &grant.subject, Some(grant.family)),
        Err(_) => api.reject(nest_error(StatusCode::UNAUTHORIZED, "Unauthorized".into())),
    }
}
