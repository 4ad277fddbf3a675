//! The baselines a user would otherwise deploy, measured like tokend (CPU per refresh,
//! resident memory) against the same emulator: the seed docs' `curl … | jq -r
//! .access_token > token.txt` in a loop (`bench/baseline/curl_jq.sh`, measured with
//! getrusage of all its descendants) and the seed docs' Python `PontotelAuth` class in a
//! long-lived process (`bench/baseline/pontotel_auth.py`, `requests` from PyPI in
//! `.tools/bench-venv`, measured from `/proc` like tokend), writing its token file plainly
//! or atomically with fsync ([`PyWrite`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::process::{Sample, delta};

/// One baseline's figures.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Refreshes done.
    pub refreshes: u64,
    /// CPU seconds (user + system) spent on them.
    pub cpu_s: f64,
    /// Wall seconds.
    pub wall_s: f64,
    /// Resident memory, KiB (curl|jq: the largest single process; Python: the process
    /// after the loop).
    pub rss_kb: u64,
    /// Python: resident memory after the first login, before the loop.
    pub rss_idle_kb: u64,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/install-bench-deps` (curl, jq, the venv with `requests`).
pub fn install() {
    let status = Command::new(manifest_dir().join("scripts/install-bench-deps"))
        .status()
        .expect("run scripts/install-bench-deps");
    assert!(status.success(), "scripts/install-bench-deps failed");
}

/// `n` refreshes with curl|jq against `pontotel_base_url`, the token into `out`.
pub fn curl_jq(pontotel_base_url: &str, out: &Path, n: u64) -> Baseline {
    let output = Command::new("python3")
        .arg(manifest_dir().join("bench/baseline/rusage.py"))
        .arg("bash")
        .arg(manifest_dir().join("bench/baseline/curl_jq.sh"))
        .arg(pontotel_base_url)
        .arg(out)
        .arg(n.to_string())
        .output()
        .expect("run the curl|jq baseline");
    assert!(
        output.status.success(),
        "curl|jq baseline failed: {output:?}"
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(f.len(), 4, "unexpected rusage output {text:?}");
    let token = std::fs::read_to_string(out).unwrap_or_default();
    assert!(token.len() > 20, "curl|jq wrote no token: {token:?}");
    Baseline {
        refreshes: n,
        cpu_s: f[0] + f[1],
        wall_s: f[3],
        rss_kb: f[2] as u64,
        rss_idle_kb: 0,
    }
}

/// How the Python loop writes its token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyWrite {
    /// `open(path, "w").write(token)`: what the seed docs' user would write; no fsync.
    Plain,
    /// Temporary file, fsync, rename, fsync of the directory: tokend's own durability.
    Atomic,
}

impl PyWrite {
    /// The mode argument of `pontotel_auth.py`.
    fn arg(self) -> &'static str {
        match self {
            PyWrite::Plain => "plain",
            PyWrite::Atomic => "atomic",
        }
    }
}

/// `n` refreshes with the Python class in one long-lived process.
pub fn python(pontotel_base_url: &str, out: &Path, n: u64, mode: PyWrite) -> Baseline {
    let python = manifest_dir().join(".tools/bench-venv/bin/python");
    let mut child = Command::new(python)
        .arg(manifest_dir().join("bench/baseline/pontotel_auth.py"))
        .arg(pontotel_base_url)
        .arg(out)
        .arg(n.to_string())
        .arg(mode.arg())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the Python baseline");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut expect = |word: &str| {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        assert_eq!(line, word, "Python baseline said {line:?}");
    };
    expect("ready");
    let before = Sample::of(pid);
    let started = Instant::now();
    writeln!(stdin, "go").expect("write to the Python baseline");
    expect("done");
    let wall_s = started.elapsed().as_secs_f64();
    let after = Sample::of(pid);
    writeln!(stdin, "exit").expect("write to the Python baseline");
    let _ = child.wait();
    let d = delta(&before, &after);
    Baseline {
        refreshes: n,
        cpu_s: d.cpu_sched_s,
        wall_s,
        rss_kb: after.rss_kb,
        rss_idle_kb: before.rss_kb,
    }
}
