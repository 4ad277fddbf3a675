//! The `oauth2` provider against a real authorization server nobody here wrote
//! (django-oauth-toolkit, see docs/TESTING-OAUTH2.md), through the real binary.

use crate::support::oauth_server::OAuthServer;
use crate::support::{TestDir, assert_no_secrets, post_form, state_json, tokend, wait_for};
use std::time::Duration;

fn config(dir: &TestDir, body: &str) -> String {
    let path = dir.write(
        "tokend.toml",
        &format!("[daemon]\nstate_dir = \"state\"\nlog_format = \"text\"\n\n[[account]]\n{body}\n[[account.sink]]\ntype = \"file\"\npath = \"out/token\"\nformat = \"json\"\n"),
    );
    path.to_string_lossy().into_owned()
}

/// Asks the server whether a token is active (RFC 7662 introspection).
fn active(server: &OAuthServer, token: &str) -> bool {
    let (status, body) = post_form(
        &server.introspect_url(),
        server.client_id(),
        server.client_secret(),
        &[("token", token)],
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).expect("introspection JSON")["active"] == true
}

#[test]
fn client_credentials_with_basic_and_body_auth_obtain_live_tokens() {
    // Proves: both client authentication methods get a token the server says is active.
    let server = OAuthServer::start(60);
    for auth in ["basic", "body"] {
        let dir = TestDir::new(&format!("oauth2-cc-{auth}"));
        let cfg = config(
            &dir,
            &format!(
                "name = \"svc\"\nprovider = \"oauth2\"\ntoken_url = \"{}\"\ngrant = \"client_credentials\"\nclient_auth = \"{auth}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
                server.token_url(),
                server.client_id(),
                server.client_secret()
            ),
        );
        let run = tokend(&["-c", &cfg, "once"]);
        assert_eq!(run.code, 0, "{run:?}");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("out/token")).unwrap()).unwrap();
        let token = doc["access_token"].as_str().unwrap();
        assert!(active(&server, token), "server does not know the token");
        assert_eq!(doc["token_type"], "Bearer");
        assert_no_secrets(
            "tokend output",
            &(run.stdout + &run.stderr),
            &[server.client_secret(), token],
        );
    }
}

#[test]
fn password_grant_rotates_refresh_tokens_and_never_reuses_a_spent_one() {
    // Proves: after expiry tokend uses the refresh token (no new login), keeps the rotated
    // one, and the spent one is dead on the server.
    // 4 s: a token must live 2 s after receipt (SPEC §4); half of it is a clear "due".
    let server = OAuthServer::start(4);
    let dir = TestDir::new("oauth2-password");
    let cfg = config(
        &dir,
        &format!(
            "name = \"app\"\nprovider = \"oauth2\"\ntoken_url = \"{}\"\ngrant = \"password\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n[account.refresh]\nmin_margin = \"0s\"\nratio = 0.5\njitter = 0.0\n",
            server.token_url(),
            server.password_client_id(),
            server.password_client_secret(),
            server.username(),
            server.password()
        ),
    );
    let run = tokend(&["-c", &cfg, "once"]);
    assert_eq!(run.code, 0, "{run:?}");
    let state_dir = dir.join("state");
    let first = state_json(&state_dir, "app");
    let rt1 = first["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(first["logins"], 1);
    // Wait until the token is due (half of its 4 s life), then run again.
    let due = first["token"]["obtained_at_ms"].as_u64().unwrap() + 2000;
    wait_for("token due", Duration::from_secs(10), || {
        tokend_now_ms() > due
    });
    let run = tokend(&["-c", &cfg, "once"]);
    assert_eq!(run.code, 0, "{run:?}");
    let second = state_json(&state_dir, "app");
    assert_eq!(
        (second["logins"].as_u64(), second["refreshes"].as_u64()),
        (Some(1), Some(1)),
        "expected a refresh, not a login"
    );
    let rt2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2, "the refresh token should have rotated");
    // The spent refresh token is rejected by the server.
    let (status, body) = post_form(
        &server.token_url(),
        server.password_client_id(),
        server.password_client_secret(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt1.as_str()),
        ],
    );
    assert_eq!(status, 400, "{body}");
    assert_no_secrets(
        "tokend output",
        &(run.stdout + &run.stderr),
        &[&rt1, &rt2, server.password()],
    );
}

fn tokend_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn rejected_client_secret_fails_clearly_and_writes_nothing() {
    // Proves: an RFC 6749 invalid_client answer is a clear, secret-free failure (exit 1)
    // and no token file appears.
    let server = OAuthServer::start(60);
    let dir = TestDir::new("oauth2-bad-secret");
    let cfg = config(
        &dir,
        &format!(
            "name = \"svc\"\nprovider = \"oauth2\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"wrong-secret-value\"\n",
            server.token_url(),
            server.client_id()
        ),
    );
    let run = tokend(&["-c", &cfg, "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("invalid_client") && run.stderr.contains("rejected"),
        "{run:?}"
    );
    assert!(!dir.join("out/token").exists());
    assert_no_secrets(
        "tokend output",
        &(run.stdout + &run.stderr),
        &["wrong-secret-value"],
    );
}
