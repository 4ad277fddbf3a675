//! `TokendProcess`: the real `tokend` binary as a child process, for tests of signals, exit
//! codes, restarts and the log. Modelled on hickory-dns' `bin/tests/integration/
//! server_harness.rs`: the child's stdout and stderr go to files in the test directory,
//! dropping the handle kills the child, and when the test is panicking the drop prints the
//! captured output, so a failure shows what the daemon was doing.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Environment variables of the test runner that would change how the child behaves
/// (systemd protocol, journald logging, log filters, config lookup).
const SCRUBBED_ENV: [&str; 9] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "LISTEN_FDS",
    "LISTEN_PID",
    "RUST_LOG",
    "TOKEND_CONFIG",
    "STATE_DIRECTORY",
];

/// A running (or finished) `tokend` child process.
pub struct TokendProcess {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl TokendProcess {
    /// `tokend run -c CONFIG`, with a scrubbed environment; add variables with
    /// [`Command::env`] before passing it to [`TokendProcess::start`].
    pub fn run_command(config: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokend"));
        cmd.arg("run").arg("-c").arg(config).env("NO_COLOR", "1");
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Starts `tokend run -c CONFIG`; its output goes to files in `log_dir`.
    pub fn run(config: &Path, log_dir: &Path) -> TokendProcess {
        TokendProcess::start(TokendProcess::run_command(config), log_dir)
    }

    /// Starts `tokend run -c CONFIG` with extra environment variables.
    pub fn run_with_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        config: &Path,
        log_dir: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> TokendProcess {
        let mut cmd = TokendProcess::run_command(config);
        cmd.envs(env);
        TokendProcess::start(cmd, log_dir)
    }

    /// Starts a prepared command; stdout and stderr go to `tokend-N.{stdout,stderr}` in
    /// `log_dir` (a new N per process, so a restart keeps the previous run's log).
    pub fn start(mut cmd: Command, log_dir: &Path) -> TokendProcess {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let label = format!("tokend-{n}");
        let stdout = log_dir.join(format!("{label}.stdout"));
        let stderr = log_dir.join(format!("{label}.stderr"));
        let out = File::create(&stdout).expect("create the stdout file");
        let err = File::create(&stderr).expect("create the stderr file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn tokend");
        TokendProcess {
            child,
            label,
            stdout,
            stderr,
            status: None,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        assert!(
            self.status.is_none(),
            "{} already exited; cannot send {signal}",
            self.label
        );
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("kill {signal} {}: {e}", self.label));
    }

    /// Everything the child wrote so far: stderr (the log), then stdout.
    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.stderr), read(&self.stdout))
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.output()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the output holds `needle` at least `count` times.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        super::wait_for(
            &format!("{count}× {needle:?} in the log of {}", self.label),
            timeout,
            || self.output().matches(needle).count() >= count,
        );
    }

    /// Waits until the output holds `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_for_log_count(needle, 1, timeout);
    }

    /// The port the daemon's metrics listener bound (`listen = "127.0.0.1:0"`).
    pub fn listen_port(&self) -> u16 {
        super::listen_port(&self.stderr)
    }

    /// Waits for the child to exit (polling, so a hung child fails the test instead of
    /// hanging it) and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not exit within {timeout:?}",
                self.label
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (no chance to clean up) and reap.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait for the killed child"));
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Asserts that no secret occurs anywhere in the child's output.
    pub fn assert_no_secrets<S: AsRef<str>>(&self, secrets: &[S]) {
        let output = self.output();
        for s in secrets {
            let s = s.as_ref();
            assert!(
                s.is_empty() || !output.contains(s),
                "secret {s:?} leaked into the log of {}",
                self.label
            );
        }
    }
}

impl Drop for TokendProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== {} ({:?}) =====\n{}===== end of {} =====",
                self.label,
                self.status,
                self.output(),
                self.label
            );
        }
    }
}
