//! A real `moto_server` (AWS service emulator, installed by `scripts/install-test-deps`) on a
//! loopback port, for the AWS Secrets Manager sink tests (`tests/aws.rs`). One server per
//! test: it is ready in about 0.3 s, and separate servers need no reset between tests that run
//! in parallel. Readiness is polled; a server that cannot start fails the test. Dropping the
//! [`Moto`] kills the server (and prints its log when the test failed).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after spawning (generous: CI shares 2 cores).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `moto_server -H 127.0.0.1 -p PORT`.
pub struct Moto {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    extra_env: Vec<(String, String)>,
    /// How long the last start took until the server answered.
    pub startup: Duration,
}

impl Moto {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// Like [`Moto::start`], with extra environment variables for the server only (e.g.
    /// `MOTO_AUTH=1`); the test process's environment is never changed.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        // Port 0: the server binds a port of its own choosing and prints it, so no other
        // process can take the port between a probe and the bind.
        let mut moto = Moto {
            child: None,
            port: 0,
            log: PathBuf::new(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            startup: Duration::ZERO,
        };
        if let Err(e) = moto.spawn_and_wait() {
            panic!("moto_server did not start: {e}");
        }
        moto
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port, which a restart reuses.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and waits until it is gone (its port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh server (empty state) on the same port after [`Moto::stop`].
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("moto_server did not restart on port {}: {e}", self.port);
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("moto-{}-{n}.log", std::process::id(),));
        let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let started = Instant::now();
        // Output goes to a file, not a pipe: moto logs every request, and an unread pipe
        // would fill up and stall the server.
        let mut child = Command::new(super::tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run moto_server: {e}"))?;
        self.log = log_path;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "moto_server on port {} exited with {status}:\n{}",
                    self.port,
                    self.log_text()
                ));
            }
            if self.port == 0 {
                // werkzeug prints " * Running on http://127.0.0.1:PORT" once it listens.
                self.port = self
                    .log_text()
                    .lines()
                    .find_map(|l| l.split("Running on http://127.0.0.1:").nth(1))
                    .and_then(|rest| rest.trim().parse().ok())
                    .unwrap_or(0);
            }
            if self.port != 0 && answers(self.port) {
                self.startup = started.elapsed();
                self.child = Some(child);
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "moto_server on port {} did not answer within {READY_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// True when moto's own API answers 200 on `port` (not merely some process listening).
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let head = String::from_utf8_lossy(&head[..read]);
    head.starts_with("HTTP/1.") && head.contains(" 200")
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- moto_server log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
