//! `cargo bench --bench fleet -- --only-rss [--accounts 1,1000,10000]`: the resident
//! memory of `tokend run` alone, without the fleet benchmark's other phases (issue 16,
//! docs/BENCHMARKS.md "Memory at 10,000 accounts"). Called by `bench/fleet.rs`'s `main`.
//!
//! Per N Pontotel accounts (one file sink each), one daemon lives through:
//! 1. cold start: every account logs in; RSS when the last token file is written;
//! 2. refresh load: tokens live L = max(3 s, N × 4 ms), so every account refreshes about
//!    once per L; the highest RSS over 1.5 L (sampled every 250 ms);
//! 3. idle: tokens now live 1 h; after one more L (every account has refreshed into the
//!    long token) and 10 s of quiet, RSS (anonymous and file-backed) and `VmHWM`.
//!
//! `$TOKEND_BENCH_WRAPPER` (e.g. `heaptrack -o /tmp/ht`, or `env MALLOC_ARENA_MAX=2`)
//! works as in the fleet benchmark; under a tool the idle daemon itself is killed
//! (SIGKILL), so that heaptrack's "leaked" figures are exactly what the idle daemon held.
//! With `$TOKEND_BENCH_GDB_TRIM=1`, gdb makes the idle daemon call glibc's
//! `malloc_trim(0)` and the RSS after it is reported too: what glibc held free after the
//! start burst.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fleet_config::{self, AccountSpec, DaemonSpec};
use super::notify::NotifySocket;
use super::process::{Sample, Tokend};
use tokend::emulator::{Emulator, Options, Provider};

/// Resident memory of one N, KiB.
#[derive(Debug, Default, Clone)]
pub struct Rss {
    /// Accounts.
    pub n: usize,
    /// Token lifetime under load, seconds.
    pub lifetime_s: u64,
    /// Cold start: all tokens written (ms) and RSS then.
    pub cold_ms: f64,
    /// RSS when every first token was written.
    pub cold_rss_kb: u64,
    /// Highest RSS sampled under refresh load.
    pub load_max_kb: u64,
    /// Idle RSS, its anonymous and file-backed parts.
    pub idle_kb: u64,
    /// Of `idle_kb`: anonymous.
    pub idle_anon_kb: u64,
    /// Of `idle_kb`: file-backed.
    pub idle_file_kb: u64,
    /// `VmHWM` at the end: the peak over the whole run.
    pub hwm_kb: u64,
    /// Threads at the end.
    pub threads: usize,
    /// Idle RSS after `malloc_trim(0)` (`$TOKEND_BENCH_GDB_TRIM`), else 0.
    pub trimmed_kb: u64,
}

/// Runs every N of `accounts` under `root` and prints one Markdown table.
pub fn run(root: &Path, accounts: &[usize]) {
    let mut rows = Vec::new();
    for &n in accounts {
        let r = measure(&root.join(format!("rss-n{n}")), n);
        eprintln!("{r:?}");
        rows.push(r);
    }
    println!(
        "| accounts | cold start: all written (ms) | RSS then (MiB) | RSS under load, max (MiB) | RSS idle (MiB) | of which anon / file (MiB) | VmHWM (MiB) | threads | RSS idle after malloc_trim (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mib = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    for r in rows {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} / {} | {} | {} | {} |",
            r.n,
            r.cold_ms,
            mib(r.cold_rss_kb),
            mib(r.load_max_kb),
            mib(r.idle_kb),
            mib(r.idle_anon_kb),
            mib(r.idle_file_kb),
            mib(r.hwm_kb),
            r.threads,
            if r.trimmed_kb > 0 {
                mib(r.trimmed_kb)
            } else {
                "–".into()
            }
        );
    }
}

fn name(i: usize) -> String {
    format!("acct{i:05}")
}

fn measure(dir: &Path, n: usize) -> Rss {
    std::fs::create_dir_all(dir).expect("create dir");
    let lifetime = Duration::from_secs(3.max(n as u64 * 4 / 1000));
    let emu = Emulator::start(Options {
        access_lifetime: lifetime,
        ..Options::default()
    })
    .expect("start emulator");
    let daemon = DaemonSpec {
        min_margin: "500ms",
        timeout: "15s",
        retry_max: "5m",
    };
    let specs: Vec<AccountSpec> = (0..n)
        .map(|i| AccountSpec {
            name: name(i),
            provider: Provider::Pontotel,
            sinks: vec![format!("tokens/{}.token", name(i))],
            ratio: None,
            timeout: None,
        })
        .collect();
    let config = dir.join("tokend.toml");
    let url = format!("http://{}", emu.addr());
    fleet_config::write(&config, &fleet_config::render(&url, &daemon, &specs));
    let log = dir.with_extension("log");
    let notify = NotifySocket::bind(&PathBuf::from(format!(
        "/tmp/tokend-rss-{}.notify",
        std::process::id()
    )));
    let token = |i: usize| dir.join("tokens").join(format!("{}.token", name(i)));
    let mut proc = Tokend::spawn(&config, &log, Some(notify.path()));
    // Under a tool, the daemon is the tool's child: /proc figures are read from it.
    let pid = daemon_pid(proc.pid());
    let slow = std::env::var_os("TOKEND_BENCH_WRAPPER").is_some();
    let budget = if slow { 1800 } else { 300 };
    let all = super::wait_until(
        Duration::from_secs(budget),
        Duration::from_millis(50),
        || (0..n).all(|i| token(i).exists()),
    );
    assert!(all, "cold start did not finish; see {}", log.display());
    let mut r = Rss {
        n,
        lifetime_s: lifetime.as_secs(),
        cold_ms: proc.spawned_i.elapsed().as_secs_f64() * 1000.0,
        cold_rss_kb: Sample::of(pid).rss_kb,
        ..Rss::default()
    };
    let started = Instant::now();
    let window = lifetime.mul_f64(1.5);
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_millis(250));
        r.load_max_kb = r.load_max_kb.max(Sample::of(pid).rss_kb);
    }
    emu.set_access_lifetime(Duration::from_secs(3600));
    std::thread::sleep(lifetime + Duration::from_secs(10));
    let s = Sample::of(pid);
    r.idle_kb = s.rss_kb;
    r.idle_anon_kb = s.anon_kb;
    r.idle_file_kb = s.file_kb;
    r.hwm_kb = s.hwm_kb;
    r.threads = s.threads.len();
    if std::env::var_os("TOKEND_BENCH_GDB_TRIM").is_some() {
        let out = std::process::Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "call (int) malloc_trim(0)",
            ])
            .output()
            .expect("run gdb");
        eprintln!(
            "gdb: {}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or("")
        );
        r.trimmed_kb = Sample::of(pid).rss_kb;
    }
    if pid != proc.pid() {
        // SIGKILL the daemon itself (nothing is freed); the tool then writes its report.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        super::wait_until(Duration::from_secs(600), Duration::from_millis(200), || {
            !proc.alive()
        });
    } else {
        proc.terminate(Duration::from_secs(30));
    }
    emu.shutdown();
    r
}

/// The daemon's pid: `pid` itself, or its first descendant that runs the tokend binary
/// (when `$TOKEND_BENCH_WRAPPER` runs it under a tool).
fn daemon_pid(pid: u32) -> u32 {
    let binary = super::process::tokend_binary();
    let is_tokend =
        |p: u32| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == binary);
    let children = |p: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect()
    };
    let mut found = None;
    super::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        let mut queue = vec![pid];
        while let Some(p) = queue.pop() {
            if is_tokend(p) {
                found = Some(p);
                return true;
            }
            queue.extend(children(p));
        }
        false
    });
    found.unwrap_or(pid)
}
