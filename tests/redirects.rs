//! No HTTP client of tokend follows a redirect (issue 12 finding 1, SPEC §4 "Boundaries").
//! Each test is the attack: the configured address (a loopback server, so plain http is
//! allowed) answers 307 or 308 pointing at a plain-http "catcher" on another loopback
//! address (127.0.0.2). A client that followed would re-send the request there: the
//! provider's credentials, the Vault sink's `X-Vault-Token` and token document, an AppRole
//! `secret_id`, the AWS request. The catcher counts accepted connections; each test awaits
//! the failure of the real provider (the real binary), Vault sink or AWS sink, then asserts
//! the catcher saw no connection at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use axum::Router;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::json;
use tokend::config::error::{Source, Validator, locate};
use tokend::sink::aws_secrets_manager::AwsSecretsManagerSink;
use tokend::sink::{Sink, SinkConfig, SinkContext, TokenDocument};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestDir;

/// A plain-http server on 127.0.0.2 that counts the connections it accepts and answers
/// each request with 401 (so a client that did follow gets an answer and fails fast).
struct Catcher {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Catcher {
    async fn start() -> Catcher {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2:0");
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                // Counted before anything is answered: a client that followed the redirect
                // cannot have its answer (and fail) before the count went up.
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        let catcher = Catcher { port, connections };
        // The catcher is reachable: one probe connection is seen (else "0 connections"
        // below would prove nothing).
        let probe = reqwest::get(format!("http://127.0.0.2:{port}/probe"))
            .await
            .expect("the catcher answers");
        assert_eq!(probe.status(), 401);
        assert_eq!(catcher.count(), 1, "the catcher counts connections");
        catcher
    }

    fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Asserts that nothing but the probe reached the catcher.
    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            self.count() - 1,
            0,
            "{what}: the redirect was followed to the plain-http catcher"
        );
    }
}

/// A loopback server that answers `status` (307/308) with `Location` on the catcher, same
/// path, to every request that `vault_reads` does not answer.
async fn redirector(status: StatusCode, catcher: &Catcher, vault_reads: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let target = format!("http://127.0.0.2:{}", catcher.port);
    let app = Router::new().fallback(move |method: Method, uri: Uri| {
        let target = target.clone();
        async move {
            if vault_reads && method == Method::GET {
                return vault_read(uri.path());
            }
            let location = format!("{target}{}", uri.path());
            (status, [(header::LOCATION, location)]).into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Just enough Vault for the sink to reach its write: `lookup-self` accepts the token (a
/// non-expiring one, like a root token) and the secret does not exist yet (404), so the next
/// request is the write (POST) that carries the token and the document.
fn vault_read(path: &str) -> Response {
    if path == "/v1/auth/token/lookup-self" {
        let data = json!({
            "accessor": "acc", "creation_time": 0, "creation_ttl": 0, "display_name": "token",
            "entity_id": "", "expire_time": null, "explicit_max_ttl": 0, "id": "",
            "identity_policies": null, "issue_time": null, "meta": null, "num_uses": 0,
            "orphan": true, "path": "auth/token/create", "policies": ["root"],
            "renewable": false, "role": null, "ttl": 0
        });
        let body = json!({
            "data": data, "auth": null, "lease_id": "", "lease_duration": 0,
            "renewable": false, "request_id": "r", "warnings": null, "wrap_info": null
        });
        return axum::Json(body).into_response();
    }
    (StatusCode::NOT_FOUND, axum::Json(json!({ "errors": [] }))).into_response()
}

/// A sink built from `[[account.sink]]` TOML as `check` and the daemon build it.
fn vault_sink(dir: &TestDir, text: &str) -> Sink {
    let config: SinkConfig = toml::from_str(text).expect("sink TOML parses");
    let source = Arc::new(Source {
        path: dir.join("tokend.toml"),
        text: text.to_string(),
    });
    let mut problems = Vec::new();
    let sink = {
        let mut v = Validator::new(&mut problems, source);
        config.build(
            &mut v,
            &SinkContext {
                account: "acct".into(),
            },
        )
    };
    assert!(problems.is_empty(), "{}", locate(problems));
    sink.expect("a sink")
}

fn doc() -> TokenDocument {
    TokenDocument {
        account: "acct".into(),
        provider: "pontotel".into(),
        access_token: SecretString::from("redirect-test-access-token".to_string()),
        token_type: "Bearer".into(),
        expires_at: SystemTime::now() + Duration::from_secs(600),
        generation: 1,
    }
}

const REDIRECTS: [StatusCode; 2] = [
    StatusCode::TEMPORARY_REDIRECT,
    StatusCode::PERMANENT_REDIRECT,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_login_does_not_follow_a_redirect_to_another_host() {
    // Proves: `tokend once` against a provider whose login answers 307/308 fails with the
    // "redirected" error and never connects to the redirect's target.
    for status in REDIRECTS {
        let catcher = Catcher::start().await;
        let base = redirector(status, &catcher, false).await;
        let dir = TestDir::new("redirect-provider");
        let cfg = dir.write(
            "tokend.toml",
            &format!(
                "[daemon]\nstate_dir = \"state\"\nlog_format = \"text\"\n\n\
                 [[account]]\nname = \"pt\"\nprovider = \"pontotel\"\nbase_url = \"{base}\"\n\
                 username = \"user\"\npassword = {{ env = \"REDIRECT_TEST_PASSWORD\" }}\n\
                 [[account.sink]]\ntype = \"file\"\npath = \"pt.token\"\n"
            ),
        );
        let mut cmd = crate::support::tokend_cmd(&["-c", cfg.to_str().unwrap(), "once"]);
        cmd.env("REDIRECT_TEST_PASSWORD", "redirect-test-password");
        let run = tokio::task::spawn_blocking(move || crate::support::run_cmd(cmd))
            .await
            .unwrap();
        catcher.assert_untouched(&format!("provider login, HTTP {status}"));
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stderr
                .contains(&format!("redirected (HTTP {})", status.as_u16())),
            "expected the redirect to be reported: {run:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_sink_write_does_not_follow_a_redirect_with_its_token_and_document() {
    // Proves: the Vault sink's write (POST with X-Vault-Token and the token document) that is
    // answered 307/308 fails and never connects to the redirect's target.
    for status in REDIRECTS {
        let catcher = Catcher::start().await;
        let base = redirector(status, &catcher, true).await;
        let dir = TestDir::new("redirect-vault-token");
        let sink = vault_sink(
            &dir,
            &format!(
                "type = \"vault\"\naddress = \"{base}\"\npath = \"app\"\nauth = {{ token = \"redirect-test-vault-token\" }}\n"
            ),
        );
        let err = sink
            .write(&doc())
            .await
            .expect_err("a redirected write fails");
        catcher.assert_untouched(&format!("vault write, HTTP {status}"));
        assert!(
            err.to_string().contains(&status.as_u16().to_string()),
            "expected the status in the error: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_sink_approle_login_does_not_follow_a_redirect_with_the_secret_id() {
    // Proves: an AppRole login (POST with role_id and secret_id) answered 307/308 fails and
    // never connects to the redirect's target.
    for status in REDIRECTS {
        let catcher = Catcher::start().await;
        let base = redirector(status, &catcher, true).await;
        let dir = TestDir::new("redirect-vault-approle");
        let secret_id = dir.write("secret-id", "redirect-test-secret-id");
        let sink = vault_sink(
            &dir,
            &format!(
                "type = \"vault\"\naddress = \"{base}\"\npath = \"app\"\n\
                 auth = {{ approle = {{ role_id = \"role\", secret_id = {{ file = \"{}\" }} }} }}\n",
                secret_id.display()
            ),
        );
        let err = sink
            .write(&doc())
            .await
            .expect_err("a redirected login fails");
        catcher.assert_untouched(&format!("vault approle login, HTTP {status}"));
        assert!(
            err.to_string().contains(&status.as_u16().to_string()),
            "expected the status in the error: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sink_does_not_follow_a_redirect() {
    // Proves: the AWS SDK's own HTTP client (the sink's, with its endpoint_url on a server
    // that answers 307/308) fails and never connects to the redirect's target.
    for status in REDIRECTS {
        let catcher = Catcher::start().await;
        let base = redirector(status, &catcher, false).await;
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIAREDIRECTTEST0001",
                "redirect-test-secret-key",
                None,
                None,
                "tokend-tests",
            ))
            .retry_config(RetryConfig::disabled())
            .load()
            .await;
        let text = format!(
            "type = \"aws_secrets_manager\"\nendpoint_url = \"{base}\"\nsecret_id = \"app\"\n"
        );
        let SinkConfig::AwsSecretsManager(config) = toml::from_str(&text).unwrap() else {
            panic!("not an aws sink");
        };
        let ctx = SinkContext {
            account: "acct".into(),
        };
        let sink = Sink::AwsSecretsManager(
            AwsSecretsManagerSink::with_sdk_config(&config, &ctx, sdk).expect("valid sink"),
        );
        let err = sink
            .write(&doc())
            .await
            .expect_err("a redirected call fails");
        catcher.assert_untouched(&format!("aws, HTTP {status}"));
        assert!(
            err.to_string().contains("GetSecretValue"),
            "expected the first call to fail: {err}"
        );
    }
}
