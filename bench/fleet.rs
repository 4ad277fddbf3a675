//! `cargo bench --bench fleet`: the real release `tokend run` against the loopback
//! emulator with N accounts (default 1, 100, 1000, 10000), plus the baselines a user
//! would otherwise deploy (the seed docs' curl|jq and Python class, the latter also writing
//! atomically with fsync), measured the same way, and instruction and system-call counts
//! per refresh under valgrind and strace. Prints Markdown (docs/BENCHMARKS.md explains
//! every figure) and writes it to `target/tmp/tokend-bench/fleet-report.md`.
//!
//! Each N runs in two layouts: **deployed** (state on disk, token files on a tmpfs, as
//! `/run/tokend` is deployed; the benchmark mounts one, or uses `/dev/shm` when not root)
//! through every phase below, and **disk** (both on disk, the layout of the earlier runs)
//! through phases 1 and 2 only. Per N and layout, one daemon lives through these phases:
//! 1. cold start: time until every account's first token file is written, and `READY=1`;
//!    the emulator's `max_in_flight` against `max_concurrent_requests` (default 32);
//! 2. refresh load (token lifetime L(N), a few seconds): RSS, CPU per refresh, lateness
//!    of each refresh (its arrival at the provider minus the `next_refresh_ms` its state
//!    file held at that instant);
//! 3. idle (tokens now live 1 h): context switches and CPU over a window with nothing due;
//! 4. restart with fresh state: logins made (must be 0) and time to `READY=1`;
//! 5. hot reload changing one account's sink: `config reloaded … elapsed_ms`, wall time
//!    until the new sink is written, and unchanged accounts touched (must be 0);
//! 6. refresh storm: SIGUSR1 while every answer takes 50 ms; the emulator's
//!    `max_in_flight` must stay ≤ `max_concurrent_requests`.
//!
//! Options: `--accounts 1,100,1000,10000`, `--window SECS` (load, default 30),
//! `--idle SECS` (default 30), `--ms-per-account MS` (L(N) = max(3 s, N × MS), default 4),
//! `--baseline-refreshes N` (default 300), `--counted-accounts N` (the valgrind and strace
//! fleet, default 20; 0 skips them), `--quiet-wait-min M` (at most M minutes in all, default
//! 10, spent waiting for a 1-minute load below 0.5 before each measurement), `--no-wait`
//! (don't wait).
//! `--only-rss` (only the memory figures, `common::memory`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::baseline::{Baseline, PyWrite};
use common::counted::{self, Counted, Tool};
use common::fleet_config::{self, AccountSpec, DaemonSpec};
use common::machine;
use common::notify::NotifySocket;
use common::process::{Tokend, delta};
use common::report::{Table, num, percentile};
use common::tap::Tap;
use common::tmpfs::{self, Tmpfs};
use tokend::emulator::{Emulator, Fault, Options, Provider};

/// Where the daemon's files live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Layout {
    /// State on disk, token files on tmpfs: how tokend is deployed (`/run/tokend`).
    #[default]
    Deployed,
    /// State and token files on disk: the layout of the runs before issue 16.
    Disk,
}

impl Layout {
    fn label(self) -> &'static str {
        match self {
            Layout::Deployed => "deployed",
            Layout::Disk => "disk",
        }
    }
}

/// Everything measured for one N in one layout.
#[derive(Debug, Default, Clone)]
struct Fleet {
    n: usize,
    layout: Layout,
    /// Whether phases 3–6 ran (the deployed layout only).
    full: bool,
    lifetime_s: u64,
    load_before: String,
    load_after: String,
    cold_all_written_ms: f64,
    cold_ready_ms: f64,
    max_in_flight: u64,
    load_rss_kb: u64,
    load_rss_max_kb: u64,
    load_refreshes: u64,
    load_notify_messages: u64,
    load_wall_s: f64,
    load_cpu_sched_s: f64,
    load_cpu_ticks_s: f64,
    load_sys_ticks_s: f64,
    late: Vec<f64>,
    early: usize,
    idle_rss_kb: u64,
    idle_anon_kb: u64,
    idle_file_kb: u64,
    idle_wall_s: f64,
    idle_switches: u64,
    idle_cpu_sched_s: f64,
    idle_cpu_ticks_s: f64,
    idle_threads: (usize, usize, usize),
    shutdown_ms: f64,
    restart_ready_ms: f64,
    restart_logins: u64,
    restart_rss_kb: u64,
    reload_elapsed_ms: Option<u64>,
    reload_wall_ms: f64,
    reload_touched_state: usize,
    reload_touched_tokens: usize,
    reload_requests: u64,
    storm_ms: f64,
    storm_max_in_flight: u64,
    warnings: Vec<String>,
}

impl Fleet {
    /// On-CPU µs per refresh in the load window (schedstat).
    fn cpu_per_refresh_us(&self) -> f64 {
        self.load_cpu_sched_s * 1e6 / self.load_refreshes as f64
    }
}

/// Where the run's files live, and what that was.
struct Places {
    /// The tmpfs for the deployed layout's token files, or why there is none.
    tmpfs: Result<Tmpfs, String>,
    /// The scratch directory's filesystem (state files, disk-layout token files).
    disk: String,
}

fn main() {
    let run_started = Instant::now();
    let accounts: Vec<usize> = common::arg("--accounts")
        .unwrap_or_else(|| "1,100,1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--accounts takes numbers"))
        .collect();
    let window = Duration::from_secs(parse_or("--window", 30));
    let idle = Duration::from_secs(parse_or("--idle", 30));
    let ms_per_account = parse_or("--ms-per-account", 4);
    let baseline_refreshes = parse_or("--baseline-refreshes", 300);
    let counted_accounts = parse_or("--counted-accounts", 20) as usize;
    let budget = Duration::from_secs(60 * parse_or("--quiet-wait-min", 10));
    let mut quiet = Quiet {
        wait: !std::env::args().any(|a| a == "--no-wait"),
        budget,
        initial: budget,
    };
    let root = common::scratch_dir("fleet");
    if std::env::args().any(|a| a == "--only-rss") {
        return common::memory::run(&root, &accounts);
    }
    let max_n = accounts.iter().copied().max().unwrap_or(1) as u64;
    // A token file and its temporary sibling take a 4 KiB page each; the reload phase
    // adds one file. Generous, as tmpfs only uses what is written.
    let size = format!("{}m", 64 + max_n.saturating_mul(16) / 1024);
    let places = Places {
        tmpfs: Tmpfs::mount_or_shm(&root.join("tmpfs"), &size),
        disk: tmpfs::mount_of(&root).map_or_else(
            || "?".to_string(),
            |(point, t, o)| format!("{t} on {point} ({o})"),
        ),
    };
    let mut out = String::new();
    out.push_str("## Machine\n\n");
    out.push_str(&machine::describe(&root));
    out.push_str(&format!(
        "\ntokend binary: `{}` (release); commit {}\n\n",
        common::process::tokend_binary().display(),
        commit()
    ));
    out.push_str(&format!(
        "Layouts: **deployed**: state files on {}, token files on {}; **disk**: both on the former.\n\n",
        places.disk,
        match &places.tmpfs {
            Ok(t) => format!("{} ({})", t.path().display(), t.note),
            Err(e) => format!("NOT MEASURED ({e})"),
        }
    ));
    println!("{out}");

    common::baseline::install();
    let mut results = Vec::new();
    for &n in &accounts {
        let lifetime = Duration::from_secs(3.max(n as u64 * ms_per_account / 1000));
        if let Ok(t) = &places.tmpfs {
            quiet.wait();
            let tokens = t.path().join(format!("n{n}"));
            let r = run_fleet(
                &root.join(format!("n{n}-deployed")),
                &tokens,
                n,
                lifetime,
                window,
                idle,
                Layout::Deployed,
            );
            // Free the tmpfs for the next N.
            let _ = std::fs::remove_dir_all(&tokens);
            eprintln!("{r:#?}");
            results.push(r);
        }
        quiet.wait();
        let dir = root.join(format!("n{n}-disk"));
        let r = run_fleet(&dir, &dir, n, lifetime, window, idle, Layout::Disk);
        eprintln!("{r:#?}");
        results.push(r);
    }
    quiet.wait();
    let baselines = run_baselines(
        &root.join("baselines"),
        places.tmpfs.as_ref().ok().map(Tmpfs::path),
        baseline_refreshes,
    );
    let mut counts = Vec::new();
    if counted_accounts > 0 {
        for tool in [Tool::Callgrind, Tool::Strace] {
            quiet.wait();
            let dir = root.join(format!("counted-{}", tool.program()));
            let tokens = places
                .tmpfs
                .as_ref()
                .map_or_else(|_| dir.join("tokens"), |t| t.path().join(tool.program()));
            eprintln!("== {counted_accounts} accounts under {}", tool.program());
            counts.push((
                tool,
                counted::measure(
                    tool,
                    &dir,
                    &tokens,
                    counted_accounts,
                    Duration::from_secs(3),
                    (Duration::from_secs(10), Duration::from_secs(40)),
                ),
            ));
        }
    }
    let mut report = render(&results, &baselines, &counts);
    report.push_str(&format!(
        "\nThe whole run took {:.1} min (of which {:.1} min waiting for a quiet machine).\n",
        run_started.elapsed().as_secs_f64() / 60.0,
        quiet.waited().as_secs_f64() / 60.0
    ));
    out.push_str(&report);
    println!("{report}");
    let path = root
        .parent()
        .expect("scratch parent")
        .join("fleet-report.md");
    std::fs::write(&path, &out).expect("write report");
    println!("(written to {})", path.display());
}

fn parse_or(name: &str, default: u64) -> u64 {
    common::arg(name).map_or(default, |v| v.parse().expect("a number"))
}

/// The commit measured: `git describe` of the source tree, `-dirty` when it has changes.
fn commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=10"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| format!("`{}`", String::from_utf8_lossy(&o.stdout).trim()),
        )
}

/// Waiting for a quiet machine, within one budget for the whole run, so the run's length
/// stays bounded however busy the machine is.
struct Quiet {
    wait: bool,
    /// What is left of the budget.
    budget: Duration,
    /// The budget at the start.
    initial: Duration,
}

impl Quiet {
    fn wait(&mut self) {
        if !self.wait || self.budget.is_zero() {
            return;
        }
        let started = Instant::now();
        let (load, ok) = machine::wait_quiet(0.5, self.budget);
        self.budget = self.budget.saturating_sub(started.elapsed());
        if !ok {
            eprintln!("warning: machine still busy (load {load}); measuring anyway");
        }
    }

    fn waited(&self) -> Duration {
        self.initial.saturating_sub(self.budget)
    }
}

fn ms_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn name(i: usize) -> String {
    format!("a{i:05}")
}

/// One N in one layout: the token files under `tokens/` and `tokens-new/` of
/// `token_root`, the rest under `dir`. Phases 3–6 in the deployed layout only.
fn run_fleet(
    dir: &Path,
    token_root: &Path,
    n: usize,
    lifetime: Duration,
    window: Duration,
    idle: Duration,
    layout: Layout,
) -> Fleet {
    std::fs::create_dir_all(dir).expect("create fleet dir");
    let mut r = Fleet {
        n,
        layout,
        full: layout == Layout::Deployed,
        lifetime_s: lifetime.as_secs(),
        load_before: machine::load_string(),
        ..Fleet::default()
    };
    eprintln!(
        "== N = {n}, {} layout, token lifetime {lifetime:?}, load {}",
        layout.label(),
        r.load_before
    );
    let emu = Emulator::start(Options {
        access_lifetime: lifetime,
        ..Options::default()
    })
    .expect("start emulator");
    let state_dir = dir.join("state");
    let hook_dir = state_dir.clone();
    // The due time that made tokend send this request: the state file's next_refresh_ms,
    // read before the request is forwarded (tokend rewrites it only after the answer).
    let hook: common::tap::Hook = Arc::new(move |account: &str| {
        let text = std::fs::read(hook_dir.join(format!("{account}.json"))).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
        v.get("next_refresh_ms")?.as_u64()
    });
    let tap = Tap::start(emu.addr(), Some(hook));
    let daemon = DaemonSpec {
        min_margin: "500ms",
        timeout: "15s",
        retry_max: "5m",
    };
    let token_path = |i: usize| token_root.join("tokens").join(format!("{}.token", name(i)));
    let mut specs: Vec<AccountSpec> = (0..n)
        .map(|i| AccountSpec {
            name: name(i),
            provider: Provider::Pontotel,
            sinks: vec![token_path(i).display().to_string()],
            ratio: None,
            timeout: None,
        })
        .collect();
    let config = dir.join("tokend.toml");
    fleet_config::write(&config, &fleet_config::render(&tap.url(), &daemon, &specs));
    // Not next to the config: tokend watches the config's directory, and every log line
    // would wake its watcher thread.
    let log = dir.with_extension("log");
    let notify = NotifySocket::bind(&PathBuf::from(format!(
        "/tmp/tokend-bench-{}.notify",
        std::process::id()
    )));

    // 1. Cold start.
    let mut daemon_proc = Tokend::spawn(&config, &log, Some(notify.path()));
    let ready = notify.wait_for("READY=1", 0, Duration::from_secs(300));
    let all = common::wait_until(Duration::from_secs(300), Duration::from_millis(20), || {
        (0..n).all(|i| token_path(i).exists())
    });
    assert!(
        all && ready.is_some(),
        "cold start did not finish; see {}",
        log.display()
    );
    let last_write = (0..n)
        .filter_map(|i| mtime(&token_path(i)))
        .max()
        .expect("token files");
    r.cold_all_written_ms = ms_since_epoch(last_write) - ms_since_epoch(daemon_proc.spawned);
    r.cold_ready_ms = ready
        .expect("ready")
        .duration_since(daemon_proc.spawned_i)
        .as_secs_f64()
        * 1000.0;
    r.max_in_flight = emu.stats(Provider::Pontotel).max_in_flight;

    // 2. Refresh load: from the first refresh wave on, for at least one lifetime.
    std::thread::sleep(lifetime.mul_f64(0.8));
    let window = window.max(lifetime);
    callgrind_control("-z", daemon_proc.pid());
    let s0 = daemon_proc.sample();
    let notify0 = notify.count();
    let logins0 = emu.stats(Provider::Pontotel).logins;
    let tap0 = tap.len();
    let started = Instant::now();
    let mut rss_max = 0;
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(started.elapsed())));
        rss_max = rss_max.max(daemon_proc.sample().rss_kb);
    }
    let s1 = daemon_proc.sample();
    callgrind_control("-d", daemon_proc.pid());
    let d = delta(&s0, &s1);
    r.load_refreshes = emu.stats(Provider::Pontotel).logins - logins0;
    r.load_notify_messages = (notify.count() - notify0) as u64;
    r.load_wall_s = d.wall.as_secs_f64();
    r.load_cpu_sched_s = d.cpu_sched_s;
    r.load_cpu_ticks_s = d.cpu_ticks_s;
    r.load_sys_ticks_s = d.sys_ticks_s;
    r.load_rss_kb = s1.rss_kb;
    r.load_rss_max_kb = rss_max.max(s1.rss_kb);
    for rec in tap.since(tap0) {
        if let Some(due) = rec.due_ms {
            let late = ms_since_epoch(rec.arrived_wall) - due as f64;
            if late < -1.0 {
                r.early += 1;
            }
            r.late.push(late);
        }
    }
    if !r.full {
        daemon_proc.terminate(Duration::from_secs(15));
        r.load_after = machine::load_string();
        return r;
    }

    // 3. Idle: every account takes a 1-hour token, then nothing is due.
    emu.set_access_lifetime(Duration::from_secs(3600));
    let base = emu.stats(Provider::Pontotel).logins;
    let switched = common::wait_until(
        lifetime * 3 + Duration::from_secs(30),
        Duration::from_millis(50),
        || emu.stats(Provider::Pontotel).logins - base >= n as u64,
    );
    if !switched {
        r.warnings
            .push("not every account took a 1-hour token before the idle window".into());
    }
    // Tokio's blocking-pool threads exit after 10 s unused; let them, so the window
    // counts the daemon's own wake-ups.
    std::thread::sleep(Duration::from_secs(12));
    let i0 = daemon_proc.sample();
    std::thread::sleep(idle);
    let i1 = daemon_proc.sample();
    let d = delta(&i0, &i1);
    r.idle_rss_kb = i1.rss_kb;
    r.idle_anon_kb = i1.anon_kb;
    r.idle_file_kb = i1.file_kb;
    r.idle_wall_s = d.wall.as_secs_f64();
    r.idle_switches = d.switches;
    r.idle_cpu_sched_s = d.cpu_sched_s;
    r.idle_cpu_ticks_s = d.cpu_ticks_s;
    r.idle_threads = d.threads;

    // 4. Restart with fresh state.
    r.shutdown_ms = daemon_proc.terminate(Duration::from_secs(15)).as_secs_f64() * 1000.0;
    let logins_before = emu.stats(Provider::Pontotel).logins;
    let from = notify.count();
    let mut daemon_proc = Tokend::spawn(&config, &log, Some(notify.path()));
    let ready = notify.wait_for("READY=1", from, Duration::from_secs(300));
    r.restart_ready_ms = ready.map_or(f64::NAN, |t| {
        t.duration_since(daemon_proc.spawned_i).as_secs_f64() * 1000.0
    });
    std::thread::sleep(Duration::from_secs(2));
    r.restart_logins = emu.stats(Provider::Pontotel).logins - logins_before;
    r.restart_rss_kb = daemon_proc.sample().rss_kb;

    // 5. Hot reload changing one account's sink.
    let changed = n / 2;
    let state_files: Vec<PathBuf> = (0..n)
        .map(|i| state_dir.join(format!("{}.json", name(i))))
        .collect();
    let before: Vec<(Option<SystemTime>, Option<SystemTime>)> = (0..n)
        .map(|i| (mtime(&state_files[i]), mtime(&token_path(i))))
        .collect();
    let requests_before = emu.stats(Provider::Pontotel).requests;
    let log_offset = std::fs::metadata(&log).map_or(0, |m| m.len());
    let new_sink = token_root
        .join("tokens-new")
        .join(format!("{}.token", name(changed)));
    specs[changed].sinks = vec![new_sink.display().to_string()];
    let text = fleet_config::render(&tap.url(), &daemon, &specs);
    let written = SystemTime::now();
    fleet_config::write(&config, &text);
    let appeared = common::wait_until(Duration::from_secs(60), Duration::from_millis(2), || {
        new_sink.exists()
    });
    r.reload_wall_ms = if appeared {
        mtime(&new_sink).map_or(f64::NAN, |m| ms_since_epoch(m) - ms_since_epoch(written))
    } else {
        r.warnings
            .push("the reloaded account's new sink was never written".into());
        f64::NAN
    };
    common::wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
        reload_elapsed(&daemon_proc.log_since(log_offset)).is_some()
    });
    std::thread::sleep(Duration::from_secs(1));
    r.reload_elapsed_ms = reload_elapsed(&daemon_proc.log_since(log_offset));
    for i in (0..n).filter(|&i| i != changed) {
        if mtime(&state_files[i]) != before[i].0 {
            r.reload_touched_state += 1;
        }
        if mtime(&token_path(i)) != before[i].1 {
            r.reload_touched_tokens += 1;
        }
    }
    r.reload_requests = emu.stats(Provider::Pontotel).requests - requests_before;

    // 6. Refresh storm: SIGUSR1 (refresh every account now) while every answer takes
    //    50 ms, so requests pile up against max_concurrent_requests.
    emu.set_random_faults(
        Provider::Pontotel,
        1.0,
        vec![Fault::Delay(Duration::from_millis(50))],
    );
    let base = emu.stats(Provider::Pontotel).logins;
    let storm = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon_proc.pid() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    );
    let done = common::wait_until(Duration::from_secs(300), Duration::from_millis(5), || {
        emu.stats(Provider::Pontotel).logins - base >= n as u64
    });
    r.storm_ms = if done {
        storm.elapsed().as_secs_f64() * 1000.0
    } else {
        f64::NAN
    };
    r.storm_max_in_flight = emu.stats(Provider::Pontotel).max_in_flight;
    emu.clear_faults(Provider::Pontotel);
    daemon_proc.terminate(Duration::from_secs(15));
    r.load_after = machine::load_string();
    r
}

/// Under `TOKEND_BENCH_WRAPPER="valgrind --tool=callgrind"`, zeroes (`-z`) or dumps
/// (`-d`) the instruction counts, so a dump covers the load window only.
fn callgrind_control(action: &str, pid: u32) {
    if std::env::var("TOKEND_BENCH_WRAPPER").is_ok_and(|w| w.contains("callgrind")) {
        let _ = std::process::Command::new("callgrind_control")
            .arg(action)
            .arg(pid.to_string())
            .status();
    }
}

/// `elapsed_ms` of the last `config reloaded` line of a JSON log.
fn reload_elapsed(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .filter(|l| l.contains("config reloaded"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["fields"]["elapsed_ms"].as_u64())
}

/// The baselines, measured once (their cost does not depend on N).
struct Baselines {
    curl: Baseline,
    /// Python, plain write, token file on disk.
    py_plain: Baseline,
    /// Python, atomic write with fsync, token file on disk.
    py_atomic_disk: Baseline,
    /// Python, atomic write with fsync, token file on tmpfs (when there is one).
    py_atomic_tmpfs: Option<Baseline>,
    load_before: String,
    load_after: String,
}

fn run_baselines(dir: &Path, tmpfs: Option<&Path>, refreshes: u64) -> Baselines {
    use common::baseline::{curl_jq, python};
    std::fs::create_dir_all(dir).expect("create baseline dir");
    let load_before = machine::load_string();
    let emu = Emulator::start(Options::default()).expect("start emulator");
    let url = emu.base_url(Provider::Pontotel);
    let curl = curl_jq(&url, &dir.join("curl.token"), refreshes);
    let py_plain = python(&url, &dir.join("python.token"), refreshes, PyWrite::Plain);
    let py_atomic_disk = python(
        &url,
        &dir.join("python-atomic.token"),
        refreshes,
        PyWrite::Atomic,
    );
    let py_atomic_tmpfs = tmpfs.map(|t| {
        python(
            &url,
            &t.join("python-atomic.token"),
            refreshes,
            PyWrite::Atomic,
        )
    });
    let runs = 3 + u64::from(py_atomic_tmpfs.is_some());
    let issued = emu.stats(Provider::Pontotel).issued;
    assert!(issued >= runs * refreshes, "baselines got {issued} tokens");
    Baselines {
        curl,
        py_plain,
        py_atomic_disk,
        py_atomic_tmpfs,
        load_before,
        load_after: machine::load_string(),
    }
}

fn mib(kb: u64) -> String {
    num(kb as f64 / 1024.0, 1)
}

/// µs of CPU per refresh of a baseline.
fn per_refresh_us(b: &Baseline) -> f64 {
    b.cpu_s * 1e6 / b.refreshes as f64
}

/// `met` or `**missed**`.
fn verdict(met: bool) -> String {
    if met {
        "met".into()
    } else {
        "**missed**".into()
    }
}

/// The issue 16 targets, from the deployed layout at 1 000 and 10 000 accounts.
fn render_targets(rs: &[Fleet], b: &Baselines) -> String {
    let deployed = |n: usize| {
        rs.iter()
            .find(|r| r.n == n && r.layout == Layout::Deployed && r.load_refreshes > 0)
    };
    let mut t = Table::new(&["target (issue 16)", "measured", "verdict"]);
    let (curl, plain, atomic) = (
        per_refresh_us(&b.curl),
        per_refresh_us(&b.py_plain),
        per_refresh_us(&b.py_atomic_disk),
    );
    match deployed(1000) {
        Some(r) => {
            let own = r.cpu_per_refresh_us();
            t.row(&[
                "CPU per refresh ≤ 500 µs at 1 000 accounts, deployed layout".into(),
                format!("{} µs", num(own, 0)),
                verdict(own <= 500.0),
            ]);
            t.row(&[
                "≥ 100× below curl \\| jq".into(),
                format!("{}× ({} µs)", num(curl / own, 1), num(curl, 0)),
                verdict(curl / own >= 100.0),
            ]);
            t.row(&[
                "≥ 4× below the Python loop without fsync".into(),
                format!("{}× ({} µs)", num(plain / own, 1), num(plain, 0)),
                verdict(plain / own >= 4.0),
            ]);
            t.row(&[
                "(no target) below the Python loop writing atomically with fsync, on disk".into(),
                format!("{}× ({} µs)", num(atomic / own, 1), num(atomic, 0)),
                "–".into(),
            ]);
        }
        None => t.row(&[
            "CPU per refresh at 1 000 accounts, deployed layout".into(),
            "not measured (needs 1000 in `--accounts` and a tmpfs)".into(),
            "–".into(),
        ]),
    }
    match deployed(10_000) {
        Some(r) => {
            let mb = r.idle_rss_kb as f64 * 1024.0 / 1e6;
            t.row(&[
                "RSS ≤ 64 MB at 10 000 accounts (idle)".into(),
                format!("{} MiB = {} MB", mib(r.idle_rss_kb), num(mb, 1)),
                verdict(mb <= 64.0),
            ]);
        }
        None => t.row(&[
            "RSS ≤ 64 MB at 10 000 accounts".into(),
            "not measured (needs 10000 in `--accounts`)".into(),
            "–".into(),
        ]),
    }
    let mut s = String::from("## Targets (issue 16)\n\n");
    s.push_str(t.render());
    s
}

fn render(rs: &[Fleet], b: &Baselines, counts: &[(Tool, Result<Counted, String>)]) -> String {
    let mut s = render_targets(rs, b);
    let mut t = Table::new(&[
        "accounts",
        "layout",
        "token lifetime",
        "load before → after",
        "RSS idle (MiB)",
        "of which anon / file (MiB)",
        "RSS under load (MiB, max)",
        "RSS per account (KiB)",
        "refreshes in window",
        "refreshes/s",
        "CPU per refresh (µs, schedstat)",
        "CPU per refresh (µs, utime+stime)",
        "of which kernel (stime)",
        "sd_notify messages per refresh",
    ]);
    let rss1 = rs
        .iter()
        .find(|r| r.n == 1 && r.full)
        .map(|r| r.idle_rss_kb);
    for r in rs {
        let per_account = match rss1 {
            Some(base) if r.n > 1 && r.full => {
                num((r.idle_rss_kb as f64 - base as f64) / (r.n - 1) as f64, 1)
            }
            _ => "–".into(),
        };
        let (idle, split) = if r.full {
            (
                mib(r.idle_rss_kb),
                format!("{} / {}", mib(r.idle_anon_kb), mib(r.idle_file_kb)),
            )
        } else {
            ("–".into(), "–".into())
        };
        t.row(&[
            r.n.to_string(),
            r.layout.label().into(),
            format!("{} s", r.lifetime_s),
            format!("{} → {}", r.load_before, r.load_after),
            idle,
            split,
            format!("{} ({})", mib(r.load_rss_kb), mib(r.load_rss_max_kb)),
            per_account,
            r.load_refreshes.to_string(),
            num(r.load_refreshes as f64 / r.load_wall_s, 1),
            num(r.cpu_per_refresh_us(), 0),
            num(r.load_cpu_ticks_s * 1e6 / r.load_refreshes as f64, 0),
            format!(
                "{} %",
                num(100.0 * r.load_sys_ticks_s / r.load_cpu_ticks_s, 0)
            ),
            num(r.load_notify_messages as f64 / r.load_refreshes as f64, 2),
        ]);
    }
    s.push_str("\n## Memory and CPU per refresh\n\n");
    s.push_str(t.render());

    let mut t = Table::new(&[
        "accounts",
        "layout",
        "refreshes measured",
        "lateness p50 (ms)",
        "p99 (ms)",
        "max (ms)",
        "early (< −1 ms)",
    ]);
    for r in rs {
        t.row(&[
            r.n.to_string(),
            r.layout.label().into(),
            r.late.len().to_string(),
            num(percentile(&r.late, 50.0), 2),
            num(percentile(&r.late, 99.0), 2),
            num(percentile(&r.late, 100.0), 2),
            r.early.to_string(),
        ]);
    }
    s.push_str("\n## Refresh lateness (arrival at the provider − due time)\n\n");
    s.push_str(t.render());
    s.push_str(&render_full(rs));
    s.push_str(&render_baselines(rs, b));
    s.push_str(&render_counts(counts));
    let warnings: Vec<String> = rs
        .iter()
        .flat_map(|r| {
            r.warnings
                .iter()
                .map(move |w| format!("- N={} ({}): {w}", r.n, r.layout.label()))
        })
        .collect();
    if !warnings.is_empty() {
        s.push_str("\nWarnings:\n");
        s.push_str(&warnings.join("\n"));
        s.push('\n');
    }
    s
}

/// Phases 3–6, measured in the deployed layout only.
fn render_full(rs: &[Fleet]) -> String {
    let mut s = String::new();
    let full: Vec<&Fleet> = rs.iter().filter(|r| r.full).collect();
    let mut t = Table::new(&[
        "accounts",
        "window (s)",
        "context switches (all threads)",
        "wake-ups/s",
        "CPU (ms, schedstat)",
        "CPU (ms, utime+stime)",
        "threads (alive, exited, started)",
    ]);
    for r in &full {
        t.row(&[
            r.n.to_string(),
            num(r.idle_wall_s, 1),
            r.idle_switches.to_string(),
            num(r.idle_switches as f64 / r.idle_wall_s, 2),
            num(r.idle_cpu_sched_s * 1e3, 2),
            num(r.idle_cpu_ticks_s * 1e3, 0),
            format!("{:?}", r.idle_threads),
        ]);
    }
    s.push_str("\n## Idle cost (nothing due; deployed layout)\n\n");
    s.push_str(t.render());

    let mut t = Table::new(&[
        "accounts",
        "cold start: all tokens written (ms)",
        "cold start: READY=1 (ms)",
        "max in flight (bound 32)",
        "SIGUSR1 storm, 50 ms answers: all refreshed (ms)",
        "storm: max in flight (bound 32)",
        "SIGTERM → exit (ms)",
        "restart: READY=1 (ms)",
        "restart: logins",
        "restart: RSS (MiB)",
    ]);
    for r in &full {
        t.row(&[
            r.n.to_string(),
            num(r.cold_all_written_ms, 0),
            num(r.cold_ready_ms, 0),
            r.max_in_flight.to_string(),
            num(r.storm_ms, 0),
            r.storm_max_in_flight.to_string(),
            num(r.shutdown_ms, 0),
            num(r.restart_ready_ms, 0),
            r.restart_logins.to_string(),
            mib(r.restart_rss_kb),
        ]);
    }
    s.push_str("\n## Cold start and restart (deployed layout)\n\n");
    s.push_str(t.render());

    let mut t = Table::new(&[
        "accounts",
        "`config reloaded` elapsed_ms",
        "file write → new sink written (ms, incl. 250 ms debounce)",
        "unchanged accounts' state files touched",
        "unchanged accounts' token files touched",
        "provider requests",
    ]);
    for r in &full {
        t.row(&[
            r.n.to_string(),
            r.reload_elapsed_ms.map_or("–".into(), |v| v.to_string()),
            num(r.reload_wall_ms, 0),
            r.reload_touched_state.to_string(),
            r.reload_touched_tokens.to_string(),
            r.reload_requests.to_string(),
        ]);
    }
    s.push_str("\n## Hot reload changing one account's sink (deployed layout)\n\n");
    s.push_str(t.render());
    s
}

/// The baselines, and tokend's CPU per refresh against each, per N and layout.
fn render_baselines(rs: &[Fleet], b: &Baselines) -> String {
    let mut s = String::new();
    let mut t = Table::new(&[
        "baseline",
        "token file on",
        "refreshes",
        "CPU per refresh (µs)",
        "RSS (MiB)",
    ]);
    t.row(&[
        "curl \\| jq > file (seed docs), one pipeline per refresh".into(),
        "disk".into(),
        b.curl.refreshes.to_string(),
        num(per_refresh_us(&b.curl), 0),
        format!("{} (largest process)", mib(b.curl.rss_kb)),
    ]);
    let python_rows = [
        (
            "Python `PontotelAuth` + requests, plain write (no fsync)",
            "disk",
            Some(&b.py_plain),
        ),
        (
            "Python, atomic write with fsync (temporary file, fsync, rename, directory fsync)",
            "disk",
            Some(&b.py_atomic_disk),
        ),
        (
            "Python, atomic write with fsync",
            "tmpfs",
            b.py_atomic_tmpfs.as_ref(),
        ),
    ];
    for (what, on, run) in python_rows {
        let Some(run) = run else { continue };
        t.row(&[
            what.into(),
            on.into(),
            run.refreshes.to_string(),
            num(per_refresh_us(run), 0),
            format!("{} idle, {} after", mib(run.rss_idle_kb), mib(run.rss_kb)),
        ]);
    }
    s.push_str(&format!(
        "\n## Baselines (load {} → {})\n\n",
        b.load_before, b.load_after
    ));
    s.push_str(t.render());

    let mut t = Table::new(&[
        "accounts",
        "layout",
        "tokend CPU per refresh (µs)",
        "× below curl \\| jq",
        "× below Python, no fsync",
        "× below Python, atomic + fsync, disk",
        "× below Python, atomic + fsync, tmpfs",
    ]);
    let ratio = |base: Option<&Baseline>, own: f64| {
        base.map_or("–".into(), |x| {
            format!("{}×", num(per_refresh_us(x) / own, 1))
        })
    };
    for r in rs {
        let own = r.cpu_per_refresh_us();
        t.row(&[
            r.n.to_string(),
            r.layout.label().into(),
            num(own, 0),
            ratio(Some(&b.curl), own),
            ratio(Some(&b.py_plain), own),
            ratio(Some(&b.py_atomic_disk), own),
            ratio(b.py_atomic_tmpfs.as_ref(), own),
        ]);
    }
    s.push_str("\n## tokend against the baselines (CPU per refresh)\n\n");
    s.push_str(t.render());
    s
}

/// The valgrind and strace counts.
fn render_counts(counts: &[(Tool, Result<Counted, String>)]) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Counted per refresh (valgrind, strace; two runs, start-up cancelled)\n\n",
    );
    let mut t = Table::new(&[
        "what",
        "fleet",
        "short run: window, tokens issued, count",
        "long run: window, tokens issued, count",
        "per refresh",
        "start-up + shutdown",
    ]);
    let mut by_name = None;
    for (tool, result) in counts {
        match result {
            Ok(c) => {
                let run = |r: &counted::Run| {
                    format!("{} s, {}, {}", num(r.window_s, 0), r.refreshes, r.total)
                };
                t.row(&[
                    tool.what().into(),
                    format!("{} accounts, {} s tokens", c.accounts, c.lifetime_s),
                    run(&c.short),
                    run(&c.long),
                    // Ir in whole instructions; system calls to a tenth.
                    num(c.per_refresh(), usize::from(*tool == Tool::Strace)),
                    num(c.fixed(), 0),
                ]);
                if *tool == Tool::Strace {
                    by_name = Some(c.per_refresh_by_name());
                }
            }
            Err(e) => t.row(&[
                tool.what().into(),
                "–".into(),
                format!("not measured: {e}"),
                "–".into(),
                "–".into(),
                "–".into(),
            ]),
        }
    }
    s.push_str(t.render());
    if let Some(names) = by_name {
        let mut t = Table::new(&["system call", "per refresh"]);
        for (name, per) in names.iter().filter(|(_, per)| *per >= 0.05) {
            t.row(&[format!("`{name}`"), num(*per, 2)]);
        }
        s.push_str("\nSystem calls per refresh by name (≥ 0.05):\n\n");
        s.push_str(t.render());
    }
    s
}
