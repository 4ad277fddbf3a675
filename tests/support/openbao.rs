//! A real OpenBao (Vault API) dev server for the vault sink tests: `bao server -dev` on a
//! free loopback port (plain HTTP or `-dev-tls`), with AppRole enabled and a `tokend`
//! policy on `secret/*`. Root-token helpers let a test play operator or a second writer:
//! seal and unseal, revoke a token, read a secret. The server is killed on drop; its log is
//! printed when the test failed. A server that does not start fails the test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::{TestDir, tool};

/// How long a dev server may take to come up (about a second when the machine is idle).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `bao server -dev`.
pub struct OpenBao {
    child: Child,
    addr: String,
    unseal_key: String,
    log: PathBuf,
    ca_file: Option<PathBuf>,
    http: reqwest::Client,
    _dir: TestDir,
}

/// AppRole credentials for one role.
pub struct AppRole {
    /// The role id.
    pub role_id: String,
    /// A fresh secret id.
    pub secret_id: String,
}

/// An HTTP answer from the server: status and JSON body (`Null` when empty).
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl OpenBao {
    /// Starts a plain-HTTP dev server.
    pub async fn start(name: &str) -> OpenBao {
        OpenBao::launch(name, false).await
    }

    /// Starts a dev server with a generated CA and certificate (`-dev-tls`); the
    /// certificate names `localhost` and `127.0.0.1`.
    pub async fn start_tls(name: &str) -> OpenBao {
        OpenBao::launch(name, true).await
    }

    async fn launch(name: &str, tls: bool) -> OpenBao {
        let mut last_log = String::new();
        // A port taken between picking and binding (other test binaries run too) is the one
        // failure worth another try.
        for _attempt in 0..3 {
            let dir = TestDir::new(name);
            let log = dir.join("bao.log");
            let port = two_free_ports();
            let out = File::create(&log).expect("create bao log");
            let mut command = Command::new(tool("bao"));
            command
                .arg("server")
                .arg("-dev")
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .arg("-dev-root-token-id=root")
                .arg("-dev-no-store-token")
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("clone log handle"))
                .stderr(out);
            let cert_dir = dir.join("tls");
            if tls {
                std::fs::create_dir_all(&cert_dir).expect("create tls dir");
                command
                    .arg("-dev-tls")
                    .arg(format!("-dev-tls-cert-dir={}", cert_dir.display()));
            }
            let child = command.spawn().expect("spawn bao server");
            let scheme = if tls { "https" } else { "http" };
            let ca_file = tls.then(|| cert_dir.join("vault-ca.pem"));
            let mut bao = OpenBao {
                child,
                addr: format!("{scheme}://127.0.0.1:{port}"),
                unseal_key: String::new(),
                log,
                ca_file,
                http: reqwest::Client::new(),
                _dir: dir,
            };
            match bao.wait_ready().await {
                Ok(()) => {
                    bao.setup().await;
                    return bao;
                }
                Err(why) => {
                    last_log = bao.log();
                    let _ = bao.child.kill();
                    let _ = bao.child.wait();
                    if !last_log.contains("address already in use") {
                        panic!("openbao did not start: {why}\n--- bao log ---\n{last_log}");
                    }
                }
            }
        }
        panic!("openbao did not start after 3 attempts\n--- bao log ---\n{last_log}");
    }

    /// Waits for the unseal key in the log and `GET /v1/sys/health` = 200.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll bao") {
                return Err(format!("bao exited with {status}"));
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(format!("not ready within {START_TIMEOUT:?}"));
            }
            if self.unseal_key.is_empty() {
                // Printed after "OpenBao server started!", so the CA file exists by then.
                if let Some(key) = self
                    .log()
                    .lines()
                    .find_map(|l| l.strip_prefix("Unseal Key: "))
                {
                    self.unseal_key = key.trim().to_string();
                    self.http = client(self.ca_file.as_deref());
                }
            } else if self.health().await == Some(200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Enables AppRole and writes the `tokend` policy (read/write on `secret/*`).
    async fn setup(&self) {
        self.ok(
            Method::POST,
            "sys/auth/approle",
            Some(json!({ "type": "approle" })),
        )
        .await;
        self.ok(
            Method::PUT,
            "sys/policies/acl/tokend",
            Some(json!({
                "policy": r#"path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }"#
            })),
        )
        .await;
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The CA certificate of a `-dev-tls` server.
    pub fn ca_file(&self) -> &Path {
        self.ca_file.as_deref().expect("started with start_tls")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /v1/sys/health` status, or `None` when there is no answer.
    pub async fn health(&self) -> Option<u16> {
        let url = format!("{}/v1/sys/health", self.addr);
        let response = self.http.get(url).send().await.ok()?;
        Some(response.status().as_u16())
    }

    /// A root-token call to `/v1/{path}`, optionally in a namespace.
    pub async fn call_in(
        &self,
        namespace: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}/v1/{path}", self.addr);
        let mut request = self
            .http
            .request(method.clone(), url)
            .header("X-Vault-Token", "root");
        if let Some(ns) = namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("read body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, body }
    }

    /// A root-token call to `/v1/{path}`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_in(None, method, path, body).await
    }

    /// A root-token call that must succeed; returns the body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let answer = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&answer.status),
            "{method} {path}: expected 2xx, got {}: {}",
            answer.status,
            answer.body
        );
        answer.body
    }

    /// Creates AppRole `name` with the `tokend` policy and the given token TTLs
    /// (`"5s"`, `"60s"`) and returns its role id and a new secret id.
    pub async fn approle(&self, name: &str, token_ttl: &str, token_max_ttl: &str) -> AppRole {
        self.ok(
            Method::POST,
            &format!("auth/approle/role/{name}"),
            Some(json!({
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
                "token_policies": ["tokend"],
            })),
        )
        .await;
        let role_id = self
            .ok(
                Method::GET,
                &format!("auth/approle/role/{name}/role-id"),
                None,
            )
            .await["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_string();
        let secret_id = self
            .ok(
                Method::POST,
                &format!("auth/approle/role/{name}/secret-id"),
                None,
            )
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret_id")
            .to_string();
        AppRole { role_id, secret_id }
    }

    /// Creates a token with the `tokend` policy and the given TTL (`"1h"`).
    pub async fn create_token(&self, ttl: &str) -> String {
        self.ok(
            Method::POST,
            "auth/token/create",
            Some(json!({ "policies": ["tokend"], "ttl": ttl })),
        )
        .await["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_string()
    }

    /// What Vault knows about the token with this accessor; `None` once it is expired or
    /// revoked.
    pub async fn lookup_accessor(&self, accessor: &str) -> Option<Value> {
        let answer = self
            .call(
                Method::POST,
                "auth/token/lookup-accessor",
                Some(json!({ "accessor": accessor })),
            )
            .await;
        (answer.status == 200).then(|| answer.body["data"].clone())
    }

    /// Revokes the token with this accessor.
    pub async fn revoke_accessor(&self, accessor: &str) {
        self.ok(
            Method::POST,
            "auth/token/revoke-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
    }

    /// The latest version and data of a KV v2 secret; `None` when absent.
    pub async fn read_secret(&self, mount: &str, path: &str) -> Option<(u64, Value)> {
        self.read_secret_in(None, mount, path).await
    }

    /// [`OpenBao::read_secret`] in a namespace.
    pub async fn read_secret_in(
        &self,
        namespace: Option<&str>,
        mount: &str,
        path: &str,
    ) -> Option<(u64, Value)> {
        let answer = self
            .call_in(
                namespace,
                Method::GET,
                &format!("{mount}/data/{path}"),
                None,
            )
            .await;
        if answer.status == 404 {
            return None;
        }
        assert_eq!(answer.status, 200, "read {mount}/{path}: {}", answer.body);
        let version = answer.body["data"]["metadata"]["version"]
            .as_u64()
            .expect("version");
        Some((version, answer.body["data"]["data"].clone()))
    }

    /// Seals the server (`PUT /v1/sys/seal`) and waits until it says so.
    pub async fn seal(&self) {
        self.ok(Method::PUT, "sys/seal", None).await;
        let what = "openbao reports sealed (503)";
        super::wait_for_async(what, Duration::from_secs(20), || async {
            self.health().await == Some(503)
        })
        .await;
    }

    /// Unseals the server with the key from its log and waits until it is active.
    pub async fn unseal(&self) {
        let answer = self
            .call(
                Method::PUT,
                "sys/unseal",
                Some(json!({ "key": self.unseal_key })),
            )
            .await;
        assert_eq!(answer.status, 200, "unseal: {}", answer.body);
        let what = "openbao active again (200)";
        super::wait_for_async(what, Duration::from_secs(20), || async {
            self.health().await == Some(200)
        })
        .await;
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of the openbao log ({}) ---", self.addr);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A loopback port whose successor is free too (OpenBao binds PORT+1 for its cluster).
fn two_free_ports() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local addr").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// The tests' own HTTP client: trusts the dev CA when there is one.
fn client(ca_file: Option<&Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).expect("read dev ca");
        let certs = reqwest::Certificate::from_pem_bundle(&pem).expect("parse dev ca");
        builder = builder.tls_certs_only(certs);
    } else {
        builder = builder.tls_certs_only(Vec::new());
    }
    builder.build().expect("build test http client")
}
