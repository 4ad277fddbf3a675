//! iTFLEX (seed 004, "Processo de Autenticação"): `POST /api/v1/oauth2/token` with JSON
//! `{"grant_type": "refresh_token", "refresh_token": <integrator key>}`. The key is
//! pre-shared and never rotates. The answer sets two cookies, `refresh-token` (the key,
//! 30 days) and `access-token` (the token, `Max-Age` = its lifetime), and repeats them in
//! the body with `expires_in`. With `cookie_only`, the body lacks `access_token` and
//! `expires_in`, so a client has to read the cookie and its `Max-Age`.
//!
//! The access token is three dotted random parts like the document's example, and not a
//! JWT, so there is no `exp` claim to fall back on. Errors are `{"msg": …}` as in the
//! document's 401.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::{json, json_object, record_json, str_field};
use crate::emulator::state::{Api, IssueSpec, TokenFormat};
use crate::emulator::{INTEGRATOR_KEY, ITFLEX_REFRESH_COOKIE_MAX_AGE, USERNAME};

fn msg(status: StatusCode, message: &str) -> Response {
    json(status, json!({"msg": message}))
}

/// `POST /itflex/api/v1/oauth2/token`.
pub(crate) async fn token(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    api.stats().logins.fetch_add(1, Ordering::Relaxed);
    let object = match json_object(&headers, &body) {
        Ok(object) => object,
        Err(error) => return api.reject(msg(error.status(), &error.message())),
    };
    record_json(&api, "/itflex/api/v1/oauth2/token", &headers, &object);
    if str_field(&object, "grant_type") != Some("refresh_token") {
        return api.reject(msg(
            StatusCode::BAD_REQUEST,
            "grant_type must be \"refresh_token\"",
        ));
    }
    let Some(key) = str_field(&object, "refresh_token") else {
        return api.reject(msg(StatusCode::BAD_REQUEST, "refresh_token is required"));
    };
    if key != INTEGRATOR_KEY || api.credentials_rejected() {
        return api.reject(msg(StatusCode::UNAUTHORIZED, "Invalid refresh token"));
    }
    let issued = api.issue(IssueSpec {
        subject: USERNAME,
        access: TokenFormat::Opaque { parts: 3 },
        refresh: None,
        client_id: None,
        scope: None,
        family: None,
    });
    let body = if api.shared.itflex_cookie_only.load(Ordering::SeqCst) {
        json!({"refresh_token": key})
    } else {
        json!({
            "refresh_token": key,
            "access_token": issued.access_token,
            "expires_in": issued.expires_in,
        })
    };
    let mut response = json(StatusCode::OK, body);
    let cookies = [
        format!(
            "refresh-token={key}; Path=/; HttpOnly; Secure; Max-Age={ITFLEX_REFRESH_COOKIE_MAX_AGE}"
        ),
        format!(
            "access-token={}; Path=/; HttpOnly; Secure; Max-Age={}",
            issued.access_token, issued.expires_in
        ),
    ];
    for cookie in cookies {
        let value = HeaderValue::try_from(cookie).expect("tokens and the key are header-safe");
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
