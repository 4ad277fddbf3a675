//! A generic OAuth 2.0 token endpoint (RFC 6749), for tokend's `oauth2` provider:
//! `application/x-www-form-urlencoded` bodies (§4.3.2, §4.4.2, §6) with the grants
//! `client_credentials` (no refresh token, §4.4.3), `password` and `refresh_token`.
//! Refresh tokens rotate: a spent one is refused with `invalid_grant` and counted.
//!
//! Client authentication (§2.3.1) is HTTP Basic with the form-encoded id and secret, or
//! `client_id`/`client_secret` in the body, never both. `scope` is checked for syntax
//! (§3.3) and echoed; on refresh it defaults to, and may only narrow, the original one
//! (§6). `audience` (not RFC 6749, but common) and any other parameter are accepted and
//! recorded. Errors follow §5.2: 400 with `error` and `error_description`, except
//! `invalid_client`, which is 401 with a `WWW-Authenticate` challenge. Every answer
//! carries `Cache-Control: no-store` (§5.1).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::{json, media_type, no_store, record};
use crate::emulator::state::{Api, IssueSpec, TokenFormat};
use crate::emulator::token::Refused;
use crate::emulator::{CLIENT_ID, CLIENT_SECRET};

/// A §5.2 error response.
fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut response = no_store(json(
        status,
        json!({"error": code, "error_description": description}),
    ));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tokend-emulator\""),
        );
    }
    response
}

fn invalid_request(description: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_client(description: &str) -> Response {
    error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

fn invalid_grant(description: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// Undoes `application/x-www-form-urlencoded` encoding of one value (§2.3.1, Appendix B).
fn form_decode(encoded: &str) -> String {
    let pair = format!("v={encoded}");
    url::form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// The client id and secret of an `Authorization: Basic` header: `None` without one,
/// `Err` when it is there but unreadable.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ()> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let Some((scheme, credentials)) = value.split_once(' ') else {
        return Err(());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(());
    }
    let decoded = STANDARD.decode(credentials.trim()).map_err(|_| ())?;
    let decoded = String::from_utf8(decoded).map_err(|_| ())?;
    let (id, secret) = decoded.split_once(':').ok_or(())?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

/// `scope = scope-token *( SP scope-token )`, `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn valid_scope(scope: &str) -> bool {
    scope.split(' ').all(|token| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
    })
}

/// `POST /oauth2/token`.
pub(crate) async fn token(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    if media_type(&headers).as_deref() != Some("application/x-www-form-urlencoded") {
        return api.reject(invalid_request(
            "the body must be application/x-www-form-urlencoded (RFC 6749 §4.4.2)",
        ));
    }
    let mut params = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        if params
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            // §3.2: "Request and response parameters MUST NOT be included more than once."
            return api.reject(invalid_request(&format!(
                "parameter \"{key}\" is included more than once"
            )));
        }
    }
    record(
        &api,
        "/oauth2/token",
        &headers,
        params.iter().map(|(k, v)| (k.as_str(), v.clone())),
    );
    let param = |key: &str| {
        params
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };

    let Ok(basic) = basic_credentials(&headers) else {
        return api.reject(invalid_client(
            "unreadable Authorization header; expected Basic",
        ));
    };
    let (client_id, client_secret) = match (basic, param("client_id"), param("client_secret")) {
        (Some(_), _, Some(_)) => {
            return api.reject(invalid_request(
                "the client authenticated twice, with Basic and with client_secret (RFC 6749 §2.3)",
            ));
        }
        (Some((id, _)), Some(body_id), None) if body_id != id => {
            return api.reject(invalid_request(
                "client_id differs from the Basic credentials",
            ));
        }
        (Some((id, secret)), _, None) => (id, secret),
        (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        (None, _, _) => return api.reject(invalid_client("client authentication is required")),
    };
    if client_id != CLIENT_ID || client_secret != CLIENT_SECRET {
        return api.reject(invalid_client("client authentication failed"));
    }
    let scope = param("scope");
    if scope.is_some_and(|s| !valid_scope(s)) {
        return api.reject(error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope is not a space-separated list of scope tokens (RFC 6749 §3.3)",
        ));
    }

    let (subject, granted_scope, with_refresh, family) = match param("grant_type") {
        None => return api.reject(invalid_request("grant_type is required")),
        Some("client_credentials") => {
            api.stats().logins.fetch_add(1, Ordering::Relaxed);
            if api.credentials_rejected() {
                return api.reject(invalid_client("client authentication failed"));
            }
            (client_id.clone(), scope.map(str::to_owned), false, None)
        }
        Some("password") => {
            api.stats().logins.fetch_add(1, Ordering::Relaxed);
            let (Some(username), Some(password)) = (param("username"), param("password")) else {
                return api.reject(invalid_request("username and password are required"));
            };
            if !api.password_ok(username, password) {
                return api.reject(invalid_grant("invalid resource owner credentials"));
            }
            (username.to_owned(), scope.map(str::to_owned), true, None)
        }
        Some("refresh_token") => {
            api.stats().refreshes.fetch_add(1, Ordering::Relaxed);
            let Some(refresh_token) = param("refresh_token") else {
                return api.reject(invalid_request("refresh_token is required"));
            };
            match api.redeem(refresh_token, Some(&client_id), scope, false) {
                Ok(grant) => (grant.subject, grant.scope, true, Some(grant.family)),
                Err(Refused::ScopeExceeded) => {
                    return api.reject(error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "the requested scope exceeds the scope originally granted (RFC 6749 §6)",
                    ));
                }
                Err(refused) => {
                    let why = match refused {
                        Refused::Spent => "the refresh token was already used",
                        Refused::Expired => "the refresh token has expired",
                        Refused::Revoked => "the refresh token was revoked",
                        Refused::WrongClient => "the refresh token was issued to another client",
                        Refused::Unknown | Refused::ScopeExceeded => "unknown refresh token",
                    };
                    return api.reject(invalid_grant(why));
                }
            }
        }
        Some(other) => {
            return api.reject(error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type \"{other}\" is not supported"),
            ));
        }
    };

    let issued = api.issue(IssueSpec {
        subject: &subject,
        access: TokenFormat::Opaque { parts: 1 },
        refresh: with_refresh.then_some(TokenFormat::Opaque { parts: 1 }),
        client_id: Some(&client_id),
        scope: granted_scope.as_deref(),
        family,
    });
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
    });
    if let Some(refresh_token) = issued.refresh_token {
        body["refresh_token"] = refresh_token.into();
    }
    if let Some(scope) = granted_scope {
        body["scope"] = scope.into();
    }
    no_store(json(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("demo-client:demo-secret%2B%2F%3D+x");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::try_from(format!("Basic {encoded}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers),
            Ok(Some(("demo-client".into(), "demo-secret+/= x".into())))
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(basic_credentials(&headers), Err(()));
    }

    #[test]
    fn scope_syntax_follows_section_3_3() {
        assert!(valid_scope("read write:all"));
        assert!(!valid_scope("read  write"));
        assert!(!valid_scope("a\"b"));
        assert!(!valid_scope("a\\b"));
    }
}
