//! Pontotel (seed 000, "Endpoint de Login"): `POST /api/v4/login/` with a JSON username and
//! password returns a JWT `access_token`, `token_type`, `expires_in` and the `user`. The
//! document lists 400 for a bad payload and 401 for bad credentials; the bodies follow
//! Django REST Framework (`{"detail": …}`), which the trailing-slash URLs suggest.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::{json, json_object, record_json, str_field};
use crate::emulator::state::{Api, IssueSpec, TokenFormat};

/// `POST /pontotel/api/v4/login/`.
pub(crate) async fn login(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    api.stats().logins.fetch_add(1, Ordering::Relaxed);
    let detail = |status: StatusCode, detail: &str| json(status, json!({"detail": detail}));
    let object = match json_object(&headers, &body) {
        Ok(object) => object,
        Err(error) => return api.reject(detail(error.status(), &error.message())),
    };
    record_json(&api, "/pontotel/api/v4/login/", &headers, &object);
    let (Some(username), Some(password)) = (
        str_field(&object, "username"),
        str_field(&object, "password"),
    ) else {
        return api.reject(detail(
            StatusCode::BAD_REQUEST,
            "username and password are required strings",
        ));
    };
    if !api.password_ok(username, password) {
        return api.reject(detail(StatusCode::UNAUTHORIZED, "Invalid credentials"));
    }
    let issued = api.issue(IssueSpec {
        subject: username,
        access: TokenFormat::Jwt,
        refresh: None,
        client_id: None,
        scope: None,
        family: None,
    });
    json(
        StatusCode::OK,
        json!({
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "user": {"id": 123, "username": username, "email": "demo@example.com"},
        }),
    )
}
