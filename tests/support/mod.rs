//! Test support: temporary directories, condition waiting, the real `tokend` binary as a
//! child process (`process::TokendProcess`), and launchers for the real servers (OpenBao,
//! moto, an OAuth2 authorization server) installed by `scripts/install-test-deps`; for
//! the HA tests, a cuttable loopback proxy (`proxy`), libfaketime (`faketime`) and a
//! cluster of instances on one coordination store (`ha`).

#![allow(dead_code)]

pub mod faketime;
pub mod ha;
pub mod hostile;
pub mod interpose;
pub mod moto;
pub mod oauth_server;
pub mod openbao;
pub mod process;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A directory under `target/` removed on drop (kept when the test panics, for inspection).
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// A fresh, empty directory named after the test.
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("tokend-tests")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes a file inside the directory and returns its path.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&p, contents).expect("write test file");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; panics with `what`
/// on timeout. Used instead of sleeping: the test waits exactly as long as needed.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async twin of [`wait_for`].
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The venv that `scripts/install-test-deps` fills with `bao`, `moto_server` and the
/// OAuth2 server. A missing tool fails the test with the command that installs it.
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("TOKEND_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps (or scripts/test, which runs it)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a child server).
/// The port a daemon started with `listen = "127.0.0.1:0"` bound, read from its log line
/// `serving /metrics, /healthz, /readyz addr=127.0.0.1:PORT` (waits for the line).
pub fn listen_port(log: &Path) -> u16 {
    let mut port = None;
    wait_for("the daemon's listen line", Duration::from_secs(30), || {
        port = std::fs::read_to_string(log).ok().and_then(|text| {
            text.lines()
                .find(|l| l.contains("serving /metrics"))
                .and_then(|l| l.split("addr=127.0.0.1:").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse().ok())
        });
        port.is_some()
    });
    port.expect("waited for it")
}

/// A seed for a test's random choices: `$TOKEND_TEST_SEED` if set (to replay a failure),
/// else a fresh one; printed either way (the harness shows a failing test's output).
pub fn test_seed(what: &str) -> u64 {
    let seed = std::env::var("TOKEND_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{what}: seed {seed} (replay with TOKEND_TEST_SEED={seed})");
    seed
}

/// A port that was free a moment ago. Racy (another process may take it before the
/// caller binds it): only for servers that cannot bind port 0 and report it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// The result of running the real `tokend` binary to completion.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A `tokend` command (the real binary) with a clean environment for config lookups.
pub fn tokend_cmd(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tokend"));
    cmd.args(args)
        .env_remove("TOKEND_CONFIG")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs `tokend ARGS…` to completion.
pub fn tokend(args: &[&str]) -> Run {
    run_cmd(tokend_cmd(args))
}

/// Runs a prepared command to completion.
pub fn run_cmd(mut cmd: std::process::Command) -> Run {
    let out = cmd.output().expect("run tokend");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Reads an account's state file as JSON.
pub fn state_json(state_dir: &Path, account: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(state_dir.join(format!("{account}.json"))).expect("state file");
    serde_json::from_str(&text).expect("state JSON")
}

/// Asserts that none of `secrets` occurs in `haystack` (what = where it was looked for).
pub fn assert_no_secrets(what: &str, haystack: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !haystack.contains(s),
            "secret {s:?} leaked into {what}:\n{haystack}"
        );
    }
}

/// Runs a future to completion on a fresh current-thread runtime (for plain `#[test]`s
/// that spawn the real binary but need an HTTP call or two).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fut)
}

/// POSTs a form with HTTP Basic auth; returns the status and the body.
pub fn post_form(url: &str, user: &str, pass: &str, form: &[(&str, &str)]) -> (u16, String) {
    block_on(async {
        let resp = reqwest::Client::new()
            .post(url)
            .basic_auth(user, Some(pass))
            .form(form)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    })
}
