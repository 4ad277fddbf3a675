//! Proves the OAuth2 test server harness (`support::oauth_server`) works against the real
//! django-oauth-toolkit: each grant tokend uses, refresh-token rotation, short access
//! lifetimes, and the error answers recorded in `docs/TESTING-OAUTH2.md`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::oauth_server::{OAuthServer, OAuthServerOptions};
use crate::support::wait_for_async;

/// How a request authenticates its client (RFC 6749 §2.3.1).
#[derive(Clone, Copy)]
enum ClientAuth<'a> {
    /// HTTP Basic: client_secret_basic.
    Basic(&'a str, &'a str),
    /// `client_id` and `client_secret` in the form body: client_secret_post.
    Body(&'a str, &'a str),
    /// No client credentials at all.
    None,
}

/// A token endpoint answer: status, `WWW-Authenticate` header and JSON body.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
}

/// POSTs a form to `url` (RFC 6749 §3.2: form-encoded) and collects the answer.
async fn post_form(url: &str, auth: ClientAuth<'_>, params: &[(&str, &str)]) -> Answer {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let mut request = reqwest::Client::new().post(url);
    match auth {
        ClientAuth::Basic(id, secret) => request = request.basic_auth(id, Some(secret)),
        ClientAuth::Body(id, secret) => {
            form.push(("client_id", id));
            form.push(("client_secret", secret));
        }
        ClientAuth::None => {}
    }
    let response = request
        .form(&form)
        .send()
        .await
        .expect("POST to oauth server");
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii header").to_owned());
    let text = response.text().await.expect("read body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
    Answer {
        status,
        www_authenticate,
        body,
    }
}

/// A successful token answer's JSON, or a panic showing what came back instead.
async fn token(server: &OAuthServer, auth: ClientAuth<'_>, params: &[(&str, &str)]) -> Value {
    let answer = post_form(&server.token_url(), auth, params).await;
    assert_eq!(answer.status, 200, "token request failed: {answer:?}");
    answer.body
}

/// The password grant for alice, through the password client.
async fn login(server: &OAuthServer) -> Value {
    let auth = ClientAuth::Basic(server.password_client_id(), server.password_client_secret());
    let params = [
        ("grant_type", "password"),
        ("username", server.username()),
        ("password", server.password()),
    ];
    token(server, auth, &params).await
}

/// Spends `refresh_token` and returns the whole answer, success or not.
async fn refresh(server: &OAuthServer, refresh_token: &str) -> Answer {
    let auth = ClientAuth::Basic(server.password_client_id(), server.password_client_secret());
    let params = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    post_form(&server.token_url(), auth, &params).await
}

fn str_field<'a>(body: &'a Value, key: &str) -> &'a str {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {body}"))
}

#[tokio::test]
async fn client_credentials_grant_issues_short_lived_bearer_token() {
    // Proves client_credentials works with Basic and body auth and honours the lifetime.
    let server = OAuthServer::start(3);
    let id = server.client_id();
    let secret = server.client_secret();
    let params = [
        ("grant_type", "client_credentials"),
        ("scope", "read write"),
    ];
    for auth in [ClientAuth::Basic(id, secret), ClientAuth::Body(id, secret)] {
        let body = token(&server, auth, &params).await;
        assert_eq!(body["token_type"], "Bearer", "{body}");
        assert_eq!(body["expires_in"], 3, "{body}");
        assert_eq!(body["scope"], "read write", "{body}");
        assert!(!str_field(&body, "access_token").is_empty());
        // RFC 6749 §4.4.3: no refresh token for client_credentials.
        assert!(body.get("refresh_token").is_none(), "{body}");
    }
}

#[tokio::test]
async fn password_grant_issues_access_and_refresh_token() {
    // Proves the password grant authenticates alice and returns a refresh token.
    let server = OAuthServer::start(3);
    let body = login(&server).await;
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 3, "{body}");
    assert!(!str_field(&body, "access_token").is_empty());
    assert!(!str_field(&body, "refresh_token").is_empty());
}

#[tokio::test]
async fn refresh_rotates_and_rejects_the_spent_token() {
    // Proves refresh rotation: a new refresh token each time, the old one dead at once.
    let server = OAuthServer::start(3);
    let first = login(&server).await;
    let spent = str_field(&first, "refresh_token");

    let rotated = refresh(&server, spent).await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let next = str_field(&rotated.body, "refresh_token");
    assert_ne!(next, spent, "refresh token was not rotated");
    assert_ne!(
        str_field(&rotated.body, "access_token"),
        str_field(&first, "access_token")
    );

    let replay = refresh(&server, spent).await;
    let expected = Answer {
        status: 400,
        www_authenticate: None,
        body: json!({"error": "invalid_grant"}),
    };
    assert_eq!(replay, expected, "spent refresh token");
    // Without reuse protection the replay leaves the rotated token usable.
    assert_eq!(refresh(&server, next).await.status, 200);
}

#[tokio::test]
async fn reuse_protection_revokes_the_rotated_token_on_replay() {
    // Proves the reuse_protection option: replaying a spent token kills its successor too.
    let server = OAuthServer::start_with(OAuthServerOptions {
        access_lifetime_secs: 3,
        reuse_protection: true,
    });
    let first = login(&server).await;
    let spent = str_field(&first, "refresh_token");
    let rotated = refresh(&server, spent).await;
    let next = str_field(&rotated.body, "refresh_token");

    assert_eq!(refresh(&server, spent).await.status, 400);
    let after = refresh(&server, next).await;
    assert_eq!(after.body, json!({"error": "invalid_grant"}), "{after:?}");
}

#[tokio::test]
async fn access_token_expires_after_its_lifetime() {
    // Proves short lifetimes are real: introspection reports the token dead after 1 s.
    let server = OAuthServer::start(1);
    let auth = ClientAuth::Basic(server.client_id(), server.client_secret());
    let body = token(&server, auth, &[("grant_type", "client_credentials")]).await;
    let access = str_field(&body, "access_token").to_owned();
    let url = server.introspect_url();
    assert!(
        is_active(&url, auth, &access).await,
        "fresh token is not active"
    );
    let (url, access) = (&url, &access);
    wait_for_async(
        "access token to expire",
        Duration::from_secs(10),
        move || async move { !is_active(url, auth, access).await },
    )
    .await;
}

/// Asks the introspection endpoint (RFC 7662) whether `access` is still active.
async fn is_active(url: &str, auth: ClientAuth<'_>, access: &str) -> bool {
    let answer = post_form(url, auth, &[("token", access)]).await;
    answer.body["active"] == true
}

/// One row of the error table: a token request and the answer DOT gives it.
struct Case<'a> {
    name: &'a str,
    auth: ClientAuth<'a>,
    params: Vec<(&'a str, &'a str)>,
    expected: Answer,
}

/// RFC 6749 §5.2's 400 answer, without `WWW-Authenticate`.
fn bad_request(body: Value) -> Answer {
    Answer {
        status: 400,
        www_authenticate: None,
        body,
    }
}

/// DOT's invalid_client answer, the same for Basic and body authentication.
fn invalid_client() -> Answer {
    Answer {
        status: 401,
        www_authenticate: Some(r#"Bearer error="invalid_client""#.to_owned()),
        body: json!({"error": "invalid_client"}),
    }
}

#[tokio::test]
async fn error_answers_match_the_documented_table() {
    // Proves every row of docs/TESTING-OAUTH2.md's error table: status, header, JSON body.
    let server = OAuthServer::start(3);
    let spent = str_field(&login(&server).await, "refresh_token").to_owned();
    assert_eq!(refresh(&server, &spent).await.status, 200);

    let svc = ClientAuth::Basic(server.client_id(), server.client_secret());
    let app = ClientAuth::Basic(server.password_client_id(), server.password_client_secret());
    let cc = ("grant_type", "client_credentials");
    let user = ("username", server.username());
    let invalid_grant = json!({"error": "invalid_grant"});
    let bad_credentials =
        json!({"error": "invalid_grant", "error_description": "Invalid credentials given."});
    let cases = [
        Case {
            name: "wrong client secret, Basic",
            auth: ClientAuth::Basic(server.client_id(), "wrong"),
            params: vec![cc],
            expected: invalid_client(),
        },
        Case {
            name: "wrong client secret, body",
            auth: ClientAuth::Body(server.client_id(), "wrong"),
            params: vec![cc],
            expected: invalid_client(),
        },
        Case {
            name: "unknown client",
            auth: ClientAuth::Basic("nobody", "x"),
            params: vec![cc],
            expected: invalid_client(),
        },
        Case {
            name: "no client authentication",
            auth: ClientAuth::None,
            params: vec![cc],
            expected: invalid_client(),
        },
        Case {
            name: "wrong user password",
            auth: app,
            params: vec![("grant_type", "password"), user, ("password", "wrong")],
            expected: bad_request(bad_credentials.clone()),
        },
        Case {
            name: "unknown user",
            auth: app,
            params: vec![
                ("grant_type", "password"),
                ("username", "bob"),
                ("password", "x"),
            ],
            expected: bad_request(bad_credentials),
        },
        Case {
            name: "spent refresh token",
            auth: app,
            params: vec![("grant_type", "refresh_token"), ("refresh_token", &spent)],
            expected: bad_request(invalid_grant.clone()),
        },
        Case {
            name: "unknown refresh token",
            auth: app,
            params: vec![("grant_type", "refresh_token"), ("refresh_token", "bogus")],
            expected: bad_request(invalid_grant),
        },
        Case {
            name: "unsupported grant",
            auth: svc,
            params: vec![("grant_type", "urn:example:unknown")],
            expected: bad_request(json!({"error": "unsupported_grant_type"})),
        },
        Case {
            name: "missing grant_type",
            auth: svc,
            params: vec![("scope", "read")],
            expected: bad_request(json!({"error": "unsupported_grant_type"})),
        },
        Case {
            name: "missing password",
            auth: app,
            params: vec![("grant_type", "password"), user],
            expected: bad_request(json!({
                "error": "invalid_request",
                "error_description": "Request is missing password parameter.",
            })),
        },
        Case {
            name: "missing refresh_token",
            auth: app,
            params: vec![("grant_type", "refresh_token")],
            expected: bad_request(json!({
                "error": "invalid_request",
                "error_description": "Missing refresh token parameter.",
            })),
        },
        Case {
            name: "grant not allowed for the client",
            auth: svc,
            params: vec![
                ("grant_type", "password"),
                user,
                ("password", server.password()),
            ],
            expected: bad_request(json!({"error": "unauthorized_client"})),
        },
        Case {
            name: "unknown scope",
            auth: svc,
            params: vec![cc, ("scope", "admin")],
            expected: bad_request(json!({"error": "invalid_scope"})),
        },
    ];
    let mut mismatches = Vec::new();
    for case in cases {
        let actual = post_form(&server.token_url(), case.auth, &case.params).await;
        if actual != case.expected {
            let (name, expected) = (case.name, case.expected);
            mismatches.push(format!(
                "{name}:\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
