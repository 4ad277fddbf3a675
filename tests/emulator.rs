//! The provider emulator over real HTTP on loopback: each API's success and error shapes,
//! rotation and reuse counting, and every fault kind as a client sees it.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokend::emulator::{
    CLIENT_ID, CLIENT_SECRET, Emulator, Fault, INTEGRATOR_KEY, Options, PASSWORD, Provider,
    USERNAME,
};

use crate::support::wait_for_async;

fn start() -> Emulator {
    Emulator::start(Options {
        access_lifetime: Duration::from_secs(3),
        ..Options::default()
    })
    .expect("start the emulator")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("build the client")
}

/// The JSON payload of a JWT (not verified).
fn jwt_payload(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url payload"))
        .expect("JSON payload")
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn post_json(url: &str, body: Value) -> (StatusCode, Value) {
    let response = client().post(url).json(&body).send().await.expect("send");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

/// Posts a GraphQL request to Funcional.
async fn funcional(emulator: &Emulator, request: Value) -> (StatusCode, Value) {
    post_json(&emulator.base_url(Provider::Funcional), request).await
}

/// A one-line `createToken` mutation with the credentials as string literals.
fn create_token(login: &str, password: &str) -> Value {
    // JSON string escapes are valid GraphQL string escapes.
    let query = format!(
        "mutation {{ createToken(login: {}, password: {}) {{ token }} }}",
        json!(login),
        json!(password)
    );
    json!({"query": query})
}

/// Logs in to Zarv.
async fn zarv_login(emulator: &Emulator) -> (StatusCode, Value) {
    let url = format!(
        "{}/api/v1/authentication",
        emulator.base_url(Provider::Zarv)
    );
    post_json(&url, json!({"username": USERNAME, "password": PASSWORD})).await
}

async fn whoami(emulator: &Emulator, provider: Provider, token: &str) -> StatusCode {
    client()
        .get(emulator.whoami_url(provider))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
        .status()
}

async fn pontotel_login(emulator: &Emulator) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{}/login/", emulator.base_url(Provider::Pontotel)))
        .json(&json!({"username": USERNAME, "password": PASSWORD}))
        .send()
        .await
}

/// `client_id:client_secret` form-encoded, then base64 (RFC 6749 §2.3.1).
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

async fn oauth2(
    emulator: &Emulator,
    authorization: Option<String>,
    form: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = client().post(emulator.token_url()).form(form);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("send");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn pontotel_login_returns_bearer_token_expiry_and_user() {
    // Proves Pontotel's login answers as its document shows, with a token whoami accepts.
    let emulator = start();
    let response = pontotel_login(&emulator).await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3);
    assert_eq!(body["user"]["username"], USERNAME);
    let token = body["access_token"].as_str().expect("access_token");
    assert_eq!(jwt_payload(token)["sub"], USERNAME);
    assert!(emulator.token_is_valid(Provider::Pontotel, token));
    assert!(!emulator.token_is_valid(Provider::Zarv, token));
    assert_eq!(
        whoami(&emulator, Provider::Pontotel, token).await,
        StatusCode::OK
    );
    let stats = emulator.stats(Provider::Pontotel);
    assert_eq!((stats.requests, stats.logins, stats.issued), (1, 1, 1));
    let record = emulator.last_request(Provider::Pontotel).expect("recorded");
    assert_eq!(record.fields["username"], USERNAME);
    assert_eq!(record.fields["password"], "<redacted>");
}

#[tokio::test]
async fn pontotel_refuses_wrong_credentials_with_401_and_bad_bodies_with_400() {
    // Proves Pontotel's documented 400 (bad payload) and 401 (bad credentials).
    let emulator = start();
    let url = format!("{}/login/", emulator.base_url(Provider::Pontotel));
    let (status, body) = post_json(&url, json!({"username": USERNAME, "password": "nope"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["detail"].is_string(), "{body}");
    let (status, _) = post_json(&url, json!({"username": USERNAME})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let response = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(emulator.stats(Provider::Pontotel).rejected, 3);
}

#[tokio::test]
async fn funcional_documented_mutation_returns_a_jwt_whose_exp_is_the_only_expiry() {
    // Proves the mutation exactly as Funcional documents it works, expiry only in `exp`.
    let emulator = start();
    let query = format!(
        "mutation {{\n  createToken(\n    login: \"{USERNAME}\"\n    password: \"{PASSWORD}\"\n  ) {{\n    token\n  }}\n}}"
    );
    let (status, body) = funcional(&emulator, json!({"query": query})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body.as_object().expect("object").len(),
        1,
        "only data: {body}"
    );
    let created = &body["data"]["createToken"];
    assert_eq!(
        created.as_object().expect("object").len(),
        1,
        "only token: {body}"
    );
    let token = created["token"].as_str().expect("token");
    let payload = jwt_payload(token);
    let exp = payload["exp"].as_u64().expect("exp");
    assert!(
        (now_unix() + 1..=now_unix() + 3).contains(&exp),
        "exp {exp}"
    );
    assert_eq!(payload["iat"].as_u64().map(|iat| exp - iat), Some(3));
    assert!(emulator.token_is_valid(Provider::Funcional, token));
}

#[tokio::test]
async fn funcional_takes_variables_and_decodes_string_escapes() {
    // Proves variables, aliases and GraphQL string escapes (\uXXXX, \", \\) are honoured.
    let emulator = start();
    let url = emulator.base_url(Provider::Funcional);
    let with_variables = json!({
        "query": "mutation Login($login: String!, $password: String!) { createToken(login: $login, password: $password) { token } }",
        "variables": {"login": USERNAME, "password": PASSWORD},
        "operationName": "Login",
    });
    let (status, body) = post_json(&url, with_variables).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["data"]["createToken"]["token"].is_string(), "{body}");

    // "demo" and "demo-password" spelled with escapes; a wrong escape decoding fails login.
    let escaped = r#"mutation { t: createToken(login: "\u0064emo", password: "demo\u002dpassword") { token __typename } }"#;
    let (status, body) = post_json(&url, json!({"query": escaped})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["t"]["__typename"], "Token", "{body}");
    // Quotes and backslashes inside literals parse; the credentials are just wrong.
    let (_, body) = funcional(&emulator, create_token("de\"mo\\", "x")).await;
    assert_eq!(body["errors"][0]["message"], "Unauthorized", "{body}");
}

#[tokio::test]
async fn funcional_wrong_credentials_are_graphql_errors_on_http_200() {
    // Proves a refused createToken is HTTP 200 with UNAUTHENTICATED errors and null data.
    let emulator = start();
    let (status, body) = funcional(&emulator, create_token(USERNAME, "wrong")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], Value::Null);
    let error = &body["errors"][0];
    assert_eq!(error["message"], "Unauthorized");
    assert_eq!(error["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(error["extensions"]["originalError"]["statusCode"], 401);
    assert_eq!(emulator.stats(Provider::Funcional).rejected, 1);
}

#[tokio::test]
async fn funcional_unparseable_or_invalid_documents_are_400_without_data() {
    // Proves syntax, validation and variable errors are Apollo-style 400s.
    let emulator = start();
    let url = emulator.base_url(Provider::Funcional);
    let cases = [
        (
            json!({"query": "mutation { createToken(login: ) { token } }"}),
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            json!({"query": "mutation { createToken(login: \"a\") { token } }"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            json!({"query": "query { createToken(login: \"a\", password: \"b\") { token } }"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            json!({"query": "mutation { createToken(login: \"a\", password: \"b\") }"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            json!({"query": "mutation($l: String!) { createToken(login: $l, password: \"b\") { token } }"}),
            "BAD_USER_INPUT",
        ),
        (json!({"variables": {}}), "BAD_REQUEST"),
    ];
    for (request, code) in cases {
        let (status, body) = post_json(&url, request.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request} -> {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], code,
            "{request} -> {body}"
        );
        assert!(body.get("data").is_none(), "{body}");
    }
    assert_eq!(emulator.stats(Provider::Funcional).logins, 0);
}

#[tokio::test]
async fn hubsoft_refresh_rotates_and_revokes_the_old_pair_like_passport() {
    // Proves HubSoft's password grant, then a refresh that rotates and revokes the old pair.
    let emulator = start();
    let url = format!("{}/oauth/token", emulator.base_url(Provider::Hubsoft));
    let (status, first) = post_json(
        &url,
        json!({"grant_type": "password", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
               "username": USERNAME, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 3);
    let old_access = first["access_token"].as_str().expect("access_token");
    let old_refresh = first["refresh_token"].as_str().expect("refresh_token");
    let refresh = |token: &str| {
        json!({"grant_type": "refresh_token", "refresh_token": token,
               "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    };
    let (status, second) = post_json(&url, refresh(old_refresh)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert!(!emulator.token_is_valid(Provider::Hubsoft, old_access));
    let new_access = second["access_token"].as_str().expect("access_token");
    assert!(emulator.token_is_valid(Provider::Hubsoft, new_access));
    let (status, body) = post_json(&url, refresh(old_refresh)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    let stats = emulator.stats(Provider::Hubsoft);
    assert_eq!(
        (stats.logins, stats.refreshes, stats.spent_refresh_reuses),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn hubsoft_errors_are_league_oauth2_json() {
    // Proves HubSoft's invalid_client (401), invalid_grant and unsupported_grant_type (400).
    let emulator = start();
    let url = format!("{}/oauth/token", emulator.base_url(Provider::Hubsoft));
    let login = |secret: &str, password: &str| {
        json!({"grant_type": "password", "client_id": CLIENT_ID, "client_secret": secret,
               "username": USERNAME, "password": password})
    };
    let (status, body) = post_json(&url, login("wrong", PASSWORD)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_client"))
    );
    let (status, body) = post_json(&url, login(CLIENT_SECRET, "wrong")).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    assert!(body["message"].is_string());
    let (status, body) = post_json(&url, json!({"grant_type": "implicit"})).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn zarv_refresh_token_rotates_and_each_reuse_is_counted() {
    // Proves Zarv's rotation: the spent refresh token is refused with 401 and counted, and
    // (reuse detection, issue 14) the reuse revokes the family: the rotated token dies too.
    let emulator = start();
    let base = emulator.base_url(Provider::Zarv);
    let (status, login) = zarv_login(&emulator).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 3);
    assert_eq!(login["refreshExpiresIn"], 300);
    assert!(jwt_payload(login["accessToken"].as_str().expect("accessToken"))["exp"].is_u64());
    let spent = login["refreshToken"].as_str().expect("refreshToken");
    let refresh_url = format!("{base}/api/v1/authentication/refresh");
    let (status, rotated) = post_json(&refresh_url, json!({"refreshToken": spent})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_ne!(rotated["refreshToken"], login["refreshToken"]);
    assert_eq!(emulator.stats(Provider::Zarv).spent_refresh_reuses, 0);
    for reuse in 1..=2 {
        let (status, _) = post_json(&refresh_url, json!({"refreshToken": spent})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(emulator.stats(Provider::Zarv).spent_refresh_reuses, reuse);
    }
    let (status, _) = post_json(
        &refresh_url,
        json!({"refreshToken": rotated["refreshToken"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked with its family");
    let (status, _) = post_json(&refresh_url, json!({"refreshToken": "never-issued"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let stats = emulator.stats(Provider::Zarv);
    assert_eq!((stats.spent_refresh_reuses, stats.families_revoked), (2, 1));
}

#[tokio::test]
async fn zarv_expired_refresh_token_is_refused_without_counting_a_reuse() {
    // Proves an expired (never spent) refresh token gets 401 and is not a reuse.
    let emulator = Emulator::start(Options {
        access_lifetime: Duration::from_secs(1),
        refresh_lifetime: Duration::from_secs(1),
        ..Options::default()
    })
    .expect("start");
    let base = emulator.base_url(Provider::Zarv);
    let (_, login) = zarv_login(&emulator).await;
    assert_eq!(login["refreshExpiresIn"], 1);
    let access = login["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned();
    // Both tokens were minted at the same instant with the same lifetime.
    wait_for_async("the Zarv tokens to expire", Duration::from_secs(3), || {
        let valid = emulator.token_is_valid(Provider::Zarv, &access);
        async move { !valid }
    })
    .await;
    let (status, _) = post_json(
        &format!("{base}/api/v1/authentication/refresh"),
        json!({"refreshToken": login["refreshToken"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(emulator.stats(Provider::Zarv).spent_refresh_reuses, 0);
}

#[tokio::test]
async fn itflex_sets_both_cookies_with_max_age_and_repeats_them_in_the_body() {
    // Proves iTFLEX's answer: two Set-Cookie headers with Max-Age, and the body.
    let emulator = start();
    let url = format!(
        "{}/api/v1/oauth2/token",
        emulator.base_url(Provider::Itflex)
    );
    let request = json!({"grant_type": "refresh_token", "refresh_token": INTEGRATOR_KEY});
    let response = client()
        .post(&url)
        .json(&request)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ASCII cookie").to_owned())
        .collect();
    assert_eq!(
        cookies[0],
        format!("refresh-token={INTEGRATOR_KEY}; Path=/; HttpOnly; Secure; Max-Age=2592000")
    );
    let body: Value = response.json().await.expect("JSON");
    let token = body["access_token"].as_str().expect("access_token");
    assert_eq!(
        cookies[1],
        format!("access-token={token}; Path=/; HttpOnly; Secure; Max-Age=3")
    );
    assert_eq!(body["refresh_token"], INTEGRATOR_KEY);
    assert_eq!(body["expires_in"], 3);
    assert!(
        URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("dotted"))
            .map(|p| serde_json::from_slice::<Value>(&p).is_err())
            .unwrap_or(true),
        "not a JWT, so Max-Age is the fallback expiry"
    );
    // The protected resource takes the cookie as the document says.
    let status = client()
        .get(emulator.whoami_url(Provider::Itflex))
        .header("cookie", format!("access-token={token}"))
        .send()
        .await
        .expect("send")
        .status();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn itflex_cookie_only_hides_token_and_expiry_from_the_body() {
    // Proves cookie_only leaves the access token and its lifetime to the cookie alone.
    let emulator = start();
    emulator.set_itflex_cookie_only(true);
    let url = format!(
        "{}/api/v1/oauth2/token",
        emulator.base_url(Provider::Itflex)
    );
    let request = json!({"grant_type": "refresh_token", "refresh_token": INTEGRATOR_KEY});
    let response = client()
        .post(&url)
        .json(&request)
        .send()
        .await
        .expect("send");
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("access-token="))
        .expect("access-token cookie")
        .to_owned();
    assert!(cookie.ends_with("; Max-Age=3"), "{cookie}");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body, json!({"refresh_token": INTEGRATOR_KEY}));
    let (status, body) = post_json(
        &url,
        json!({"grant_type": "refresh_token", "refresh_token": "wrong"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["msg"].is_string());
}

#[tokio::test]
async fn oauth2_client_credentials_with_form_encoded_basic_auth_issues_no_refresh_token() {
    // Proves §2.3.1 Basic auth (form-encoded secret), scope echo and no refresh token.
    let emulator = start();
    let (status, headers, body) = oauth2(
        &emulator,
        Some(basic(CLIENT_ID, CLIENT_SECRET)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read write"),
            ("audience", "api://x"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3);
    assert_eq!(body["scope"], "read write");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let record = emulator.last_request(Provider::Oauth2).expect("recorded");
    assert_eq!(record.authorization_scheme.as_deref(), Some("Basic"));
    assert_eq!(record.fields["audience"], "api://x");
    // The secret sent without the form-encoding step is refused, as a strict server would.
    let raw = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let (status, headers, body) = oauth2(
        &emulator,
        Some(raw),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert!(headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn oauth2_password_grant_with_body_auth_then_rotating_refresh() {
    // Proves body client auth, the password grant, and refresh rotation with reuse counting.
    let emulator = start();
    let client_auth = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
    let mut form = vec![
        ("grant_type", "password"),
        ("username", USERNAME),
        ("password", PASSWORD),
        ("scope", "read write"),
    ];
    form.extend(client_auth);
    let (status, _, first) = oauth2(&emulator, None, &form).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let spent = first["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    let mut refresh = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", spent.as_str()),
        ("scope", "read"),
    ];
    refresh.extend(client_auth);
    let (status, _, second) = oauth2(&emulator, None, &refresh).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["scope"], "read");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let (status, _, body) = oauth2(&emulator, None, &refresh).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    let stats = emulator.stats(Provider::Oauth2);
    assert_eq!(
        (
            stats.logins,
            stats.refreshes,
            stats.issued,
            stats.spent_refresh_reuses
        ),
        (1, 2, 2, 1)
    );
}

#[tokio::test]
async fn oauth2_errors_follow_rfc6749_section_5_2() {
    // Proves each §5.2 error code and status for the usual client mistakes.
    let emulator = start();
    let auth = || Some(basic(CLIENT_ID, CLIENT_SECRET));
    // (Authorization header, form, expected status, expected `error`)
    type Case<'a> = (Option<String>, Vec<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (auth(), vec![], StatusCode::BAD_REQUEST, "invalid_request"),
        (
            auth(),
            vec![("grant_type", "implicit")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            auth(),
            vec![
                ("grant_type", "password"),
                ("username", USERNAME),
                ("password", "x"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            auth(),
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "unknown"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            auth(),
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "password"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            auth(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", CLIENT_SECRET),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            auth(),
            vec![("grant_type", "client_credentials"), ("scope", "a\\b")],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            None,
            vec![("grant_type", "client_credentials")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            Some(basic(CLIENT_ID, "wrong")),
            vec![("grant_type", "client_credentials")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
    ];
    for (authorization, form, status, error) in cases {
        let (got, headers, body) = oauth2(&emulator, authorization, &form).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{form:?} -> {body}"
        );
        assert!(body["error_description"].is_string());
        assert_eq!(
            headers.contains_key("www-authenticate"),
            status == StatusCode::UNAUTHORIZED
        );
    }
    // Not a form body at all.
    let response = client()
        .post(emulator.token_url())
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn whoami_accepts_live_tokens_and_refuses_expired_and_revoked_ones() {
    // Proves the protected resource follows expiry and revocation.
    let emulator = Emulator::start(Options {
        access_lifetime: Duration::from_secs(1),
        ..Options::default()
    })
    .expect("start");
    let body: Value = pontotel_login(&emulator)
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    let token = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        whoami(&emulator, Provider::Pontotel, &token).await,
        StatusCode::OK
    );
    assert_eq!(
        whoami(&emulator, Provider::Pontotel, "forged").await,
        StatusCode::UNAUTHORIZED
    );
    wait_for_async("the token to expire", Duration::from_secs(3), || {
        let emulator = &emulator;
        let token = token.clone();
        async move { whoami(emulator, Provider::Pontotel, &token).await == StatusCode::UNAUTHORIZED }
    })
    .await;
    emulator.set_access_lifetime(Duration::from_secs(60));
    let body: Value = pontotel_login(&emulator)
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["expires_in"], 60);
    let token = body["access_token"].as_str().expect("token");
    emulator.revoke_all(Provider::Pontotel);
    assert_eq!(
        whoami(&emulator, Provider::Pontotel, token).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(emulator.stats(Provider::Pontotel).resource_requests >= 4);
}

#[tokio::test]
async fn reject_credentials_switch_refuses_correct_credentials_until_cleared() {
    // Proves the "credentials rejected" switch and that it can be turned off again.
    let emulator = start();
    emulator.reject_credentials(Provider::Pontotel, true);
    assert_eq!(
        pontotel_login(&emulator).await.expect("send").status(),
        StatusCode::UNAUTHORIZED
    );
    emulator.reject_credentials(Provider::Pontotel, false);
    assert_eq!(
        pontotel_login(&emulator).await.expect("send").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn status_and_429_faults_are_answered_then_service_resumes() {
    // Proves fail_next answers n requests with the fault (429 with Retry-After) in order.
    let emulator = start();
    emulator.fail_next(Provider::Pontotel, 1, Fault::Status(503));
    emulator.fail_next(
        Provider::Pontotel,
        1,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let first = pontotel_login(&emulator).await.expect("send");
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let second = pontotel_login(&emulator).await.expect("send");
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["retry-after"], "7");
    assert_eq!(
        pontotel_login(&emulator).await.expect("send").status(),
        StatusCode::OK
    );
    let stats = emulator.stats(Provider::Pontotel);
    assert_eq!(
        (stats.requests, stats.faults, stats.logins, stats.issued),
        (3, 2, 1, 1)
    );
}

#[tokio::test]
async fn drop_fault_closes_the_connection_without_a_response() {
    // Proves Drop is a connection error for the client, not an HTTP status.
    let emulator = start();
    emulator.fail_next(Provider::Pontotel, 1, Fault::Drop);
    let error = pontotel_login(&emulator).await.expect_err("no response");
    assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
    assert_eq!(
        pontotel_login(&emulator).await.expect("send").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn delay_fault_outlasts_the_client_timeout_and_issues_nothing() {
    // Proves Delay looks like a hung server, and a client that gives up gets no token issued.
    let emulator = start();
    emulator.fail_next(Provider::Zarv, 1, Fault::Delay(Duration::from_secs(2)));
    let url = format!(
        "{}/api/v1/authentication",
        emulator.base_url(Provider::Zarv)
    );
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let error = impatient
        .post(&url)
        .json(&json!({"username": USERNAME, "password": PASSWORD}))
        .send()
        .await
        .expect_err("times out");
    assert!(error.is_timeout(), "{error:?}");
    wait_for_async(
        "the abandoned request to end",
        Duration::from_secs(3),
        || {
            let in_flight = emulator.stats(Provider::Zarv).in_flight;
            async move { in_flight == 0 }
        },
    )
    .await;
    let stats = emulator.stats(Provider::Zarv);
    assert_eq!((stats.faults, stats.issued), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn garbage_and_graphql_error_faults_are_200s_without_a_token() {
    // Proves Garbage is a 200 that is not JSON, and GraphqlError a 200 with `errors`.
    let emulator = start();
    emulator.fail_next(Provider::Pontotel, 1, Fault::Garbage);
    let response = pontotel_login(&emulator).await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&response.text().await.expect("text")).is_err());
    emulator.fail_next(Provider::Funcional, 1, Fault::GraphqlError);
    let (status, body) = funcional(&emulator, create_token(USERNAME, PASSWORD)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["data"], Value::Null);
    assert_eq!(emulator.stats(Provider::Funcional).issued, 0);
}

#[tokio::test]
async fn random_faults_follow_the_rate_and_can_be_cleared() {
    // Proves the seeded random failure rate: always at 1.0, about half at 0.5, off when cleared.
    let emulator = start();
    emulator.set_random_faults(Provider::Pontotel, 1.0, vec![Fault::Status(502)]);
    for _ in 0..3 {
        assert_eq!(
            pontotel_login(&emulator).await.expect("send").status(),
            StatusCode::BAD_GATEWAY
        );
    }
    emulator.set_random_faults(
        Provider::Pontotel,
        0.5,
        vec![Fault::Status(500), Fault::Status(503)],
    );
    let mut failed = 0;
    for _ in 0..40 {
        if pontotel_login(&emulator)
            .await
            .expect("send")
            .status()
            .is_server_error()
        {
            failed += 1;
        }
    }
    assert!(
        (8..=32).contains(&failed),
        "{failed} of 40 failed at rate 0.5"
    );
    emulator.clear_faults(Provider::Pontotel);
    assert_eq!(
        pontotel_login(&emulator).await.expect("send").status(),
        StatusCode::OK
    );
    assert_eq!(emulator.stats(Provider::Pontotel).faults, 3 + failed);
}

#[tokio::test]
async fn statistics_see_concurrent_requests_and_their_times() {
    // Proves max_in_flight counts overlapping requests and request times are recorded.
    let emulator = start();
    emulator.fail_next(
        Provider::Pontotel,
        4,
        Fault::Delay(Duration::from_millis(300)),
    );
    let logins = (0..4).map(|_| pontotel_login(&emulator));
    for response in futures_util::future::join_all(logins).await {
        assert_eq!(response.expect("send").status(), StatusCode::OK);
    }
    let stats = emulator.stats(Provider::Pontotel);
    assert_eq!(
        (stats.max_in_flight, stats.in_flight, stats.issued),
        (4, 0, 4)
    );
    assert_eq!(stats.request_times.len(), 4);
    assert!(stats.min_request_gap().expect("two requests") < Duration::from_millis(300));
}

#[tokio::test]
async fn shutdown_closes_the_listener() {
    // Proves shutdown stops serving: the next connection is refused.
    let emulator = start();
    let url = emulator.whoami_url(Provider::Pontotel);
    emulator.shutdown();
    let error = client().get(&url).send().await.expect_err("nobody listens");
    assert!(error.is_connect(), "{error:?}");
}
