//! A real OpenBao (`bao server -dev`, KV v2 at `secret/`, root token `root`) for the
//! benchmarks of several instances sharing accounts (`bench/ha.rs`, docs/BENCHMARKS.md),
//! with blocking helpers: read a KV v2 record with the root token, and a plain GET (the
//! daemons' `/metrics`). The tests have their own async launcher (`tests/support/openbao.rs`);
//! this one is blocking because the benchmarks poll from plain threads. Killed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a dev server may take to come up (about a second when the machine is idle).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `bao server -dev`.
pub struct OpenBao {
    child: Child,
    addr: String,
    log: PathBuf,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// `bao`, from `$TOKEND_TEST_TOOLS` or the `.tools` venv that `scripts/install-test-deps`
/// fills (as the tests find it).
pub fn bao_binary() -> PathBuf {
    let dir = std::env::var_os("TOKEND_TEST_TOOLS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin"),
        PathBuf::from,
    );
    let path = dir.join("bao");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps",
        path.display()
    );
    path
}

impl OpenBao {
    /// Starts a plain-HTTP dev server on a free loopback port, its log in `dir/bao.log`.
    pub fn start(dir: &Path) -> OpenBao {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Loopback only, no proxy from the environment, bounded.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let log = dir.join("bao.log");
        let port = two_free_ports();
        let out = File::create(&log).expect("create bao log");
        let child = Command::new(bao_binary())
            .arg("server")
            .arg("-dev")
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg("-dev-root-token-id=root")
            .arg("-dev-no-store-token")
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out)
            .spawn()
            .expect("spawn bao server");
        let bao = OpenBao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            log,
            rt,
            http,
        };
        let started = Instant::now();
        let health = format!("{}/v1/sys/health", bao.addr);
        while bao.get(&health, None).map(|(s, _)| s) != Some(200) {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "openbao did not start within {START_TIMEOUT:?}; its log: {}",
                bao.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bao
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A GET of `url`, with `X-Vault-Token` when given: status and body, `None` when there
    /// was no answer.
    pub fn get(&self, url: &str, token: Option<&str>) -> Option<(u16, String)> {
        self.rt.block_on(async {
            let mut request = self.http.get(url);
            if let Some(token) = token {
                request = request.header("X-Vault-Token", token);
            }
            let response = request.send().await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.ok()?))
        })
    }

    /// The latest version and data of the KV v2 secret `<mount>/<path>`, read with the
    /// root token; `None` when it is absent or the server did not answer.
    pub fn read_kv(&self, mount: &str, path: &str) -> Option<(u64, Value)> {
        let url = format!("{}/v1/{mount}/data/{path}", self.addr);
        let (status, body) = self.get(&url, Some("root"))?;
        if status != 200 {
            return None;
        }
        let body: Value = serde_json::from_str(&body).ok()?;
        let version = body["data"]["metadata"]["version"].as_u64()?;
        Some((version, body["data"]["data"].clone()))
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
