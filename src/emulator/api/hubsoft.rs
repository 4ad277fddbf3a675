//! HubSoft (seed 002): `POST /oauth/token` is Laravel Passport, i.e. league/oauth2-server 8.
//! The document shows the `password` grant with a JSON body of `client_id`,
//! `client_secret`, `username` and `password`, answered by `access_token`, `expires_in`,
//! `refresh_token` and `token_type`. Passport also serves the `refresh_token` grant, which
//! this emulates as Passport does: the refresh token rotates, and the old refresh token
//! *and the access token issued with it* are revoked at once.
//!
//! Like Laravel, the endpoint reads JSON or form bodies. Errors use league's body:
//! `error`, `error_description`, `hint` (when league gives one) and `message`.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{json, json_object, media_type, record_json};
use crate::emulator::state::{Api, IssueSpec, TokenFormat};
use crate::emulator::token::Refused;
use crate::emulator::{CLIENT_ID, CLIENT_SECRET};

/// league's description of `invalid_request`.
const INVALID_REQUEST: &str = "The request is missing a required parameter, includes an invalid \
     parameter value, includes a parameter more than once, or is otherwise malformed.";

/// league's `OAuthServerException` as JSON.
fn league_error(
    status: StatusCode,
    error: &str,
    description: &str,
    hint: Option<&str>,
) -> Response {
    let mut body =
        json!({"error": error, "error_description": description, "message": description});
    if let Some(hint) = hint {
        body["hint"] = Value::from(hint);
    }
    json(status, body)
}

/// `invalid_request` for a missing parameter, worded as league words it.
fn missing(api: &Api, parameter: &str) -> Response {
    api.reject(league_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        INVALID_REQUEST,
        Some(&format!("Check the `{parameter}` parameter")),
    ))
}

/// The body as a JSON object; a form body becomes one with string members.
fn params(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, String> {
    if media_type(headers).as_deref() == Some("application/x-www-form-urlencoded") {
        return Ok(url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
            .collect());
    }
    json_object(headers, body).map_err(|error| error.message())
}

/// A string parameter; Laravel also takes numbers (the document's `client_id` is `"3"`).
fn param(params: &Map<String, Value>, key: &str) -> Option<String> {
    match params.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `POST /hubsoft/oauth/token`.
pub(crate) async fn token(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match params(&headers, &body) {
        Ok(params) => params,
        Err(why) => {
            return api.reject(league_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                INVALID_REQUEST,
                Some(&why),
            ));
        }
    };
    record_json(&api, "/hubsoft/oauth/token", &headers, &params);
    let grant = param(&params, "grant_type");
    let counter = match grant.as_deref() {
        Some("password") => &api.stats().logins,
        Some("refresh_token") => &api.stats().refreshes,
        _ => {
            return api.reject(league_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
                Some("Check that all required parameters have been provided"),
            ));
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
    // league validates the client before the grant's own parameters.
    let Some(client_id) = param(&params, "client_id") else {
        return missing(&api, "client_id");
    };
    if client_id != CLIENT_ID || param(&params, "client_secret").as_deref() != Some(CLIENT_SECRET) {
        return api.reject(league_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
            None,
        ));
    }
    let (subject, family) = if grant.as_deref() == Some("password") {
        let Some(username) = param(&params, "username") else {
            return missing(&api, "username");
        };
        let Some(password) = param(&params, "password") else {
            return missing(&api, "password");
        };
        if !api.password_ok(&username, &password) {
            return api.reject(league_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The user credentials were incorrect.",
                None,
            ));
        }
        (username, None)
    } else {
        let Some(refresh_token) = param(&params, "refresh_token") else {
            return missing(&api, "refresh_token");
        };
        match api.redeem(&refresh_token, Some(&client_id), None, true) {
            Ok(grant) => (grant.subject, Some(grant.family)),
            Err(refused) => {
                // league's hints (RefreshTokenGrant::validateOldRefreshToken).
                let hint = match refused {
                    Refused::Spent | Refused::Revoked => "Token has been revoked",
                    Refused::Expired => "Token has expired",
                    Refused::WrongClient => "Token is not linked to client",
                    Refused::Unknown | Refused::ScopeExceeded => "Cannot decrypt the refresh token",
                };
                return api.reject(league_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "The refresh token is invalid.",
                    Some(hint),
                ));
            }
        }
    };
    let issued = api.issue(IssueSpec {
        subject: &subject,
        access: TokenFormat::Jwt,
        refresh: Some(TokenFormat::Passport),
        client_id: Some(&client_id),
        scope: None,
        family,
    });
    json(
        StatusCode::OK,
        json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token,
        }),
    )
}
