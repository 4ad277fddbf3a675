//! `cargo bench --bench fleet`: the real release `tokend run` against the loopback
//! emulator with N accounts (default 1, 100, 1000, 10000), plus the baselines a user
//! would otherwise deploy (the seed docs' curl|jq and Python class), measured the same
//! way. Prints Markdown tables (docs/BENCHMARKS.md explains every figure) and writes them
//! to `target/tmp/tokend-bench/fleet-report.md`.
//!
//! Per N, one daemon lives through these phases:
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
//! `--baseline-refreshes N` (default 300), `--quiet-wait-min M` (before each N, wait up to M
//! minutes, default 40, for a 1-minute load below 0.5), `--no-wait` (don't wait),
//! `--only-rss` (only the memory figures, `common::memory`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fleet_config::{self, AccountSpec, DaemonSpec};
use common::machine;
use common::notify::NotifySocket;
use common::process::{Tokend, delta};
use common::report::{Table, num, percentile};
use common::tap::Tap;
use tokend::emulator::{Emulator, Fault, Options, Provider};

/// Everything measured for one N.
#[derive(Debug, Default, Clone)]
struct Fleet {
    n: usize,
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

fn main() {
    let accounts: Vec<usize> = common::arg("--accounts")
        .unwrap_or_else(|| "1,100,1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--accounts takes numbers"))
        .collect();
    let window = Duration::from_secs(parse_or("--window", 30));
    let idle = Duration::from_secs(parse_or("--idle", 30));
    let ms_per_account = parse_or("--ms-per-account", 4);
    let baseline_refreshes = parse_or("--baseline-refreshes", 300);
    let wait = !std::env::args().any(|a| a == "--no-wait");
    let wait_max = Duration::from_secs(60 * parse_or("--quiet-wait-min", 40));
    let root = common::scratch_dir("fleet");
    if std::env::args().any(|a| a == "--only-rss") {
        return common::memory::run(&root, &accounts);
    }
    let mut out = String::new();
    out.push_str("## Machine\n\n");
    out.push_str(&machine::describe(&root));
    out.push_str(&format!(
        "\ntokend binary: `{}` (release)\n\n",
        common::process::tokend_binary().display()
    ));
    println!("{out}");

    common::baseline::install();
    let mut results = Vec::new();
    for &n in &accounts {
        quiet(wait, wait_max);
        let lifetime = Duration::from_secs(3.max(n as u64 * ms_per_account / 1000));
        let r = run_fleet(&root.join(format!("n{n}")), n, lifetime, window, idle);
        eprintln!("{r:#?}");
        results.push(r);
    }
    quiet(wait, wait_max);
    let baselines = run_baselines(&root.join("baselines"), baseline_refreshes);
    let report = render(&results, &baselines);
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

fn quiet(wait: bool, max: Duration) {
    if wait {
        let (load, ok) = machine::wait_quiet(0.5, max);
        if !ok {
            eprintln!("warning: machine still busy after {max:?} (load {load}); measuring anyway");
        }
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

fn run_fleet(dir: &Path, n: usize, lifetime: Duration, window: Duration, idle: Duration) -> Fleet {
    std::fs::create_dir_all(dir).expect("create fleet dir");
    let mut r = Fleet {
        n,
        lifetime_s: lifetime.as_secs(),
        load_before: machine::load_string(),
        ..Fleet::default()
    };
    eprintln!(
        "== N = {n}, token lifetime {lifetime:?}, load {}",
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
    let mut specs: Vec<AccountSpec> = (0..n)
        .map(|i| AccountSpec {
            name: name(i),
            provider: Provider::Pontotel,
            sinks: vec![format!("tokens/{}.token", name(i))],
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
    let token_path = |i: usize| dir.join("tokens").join(format!("{}.token", name(i)));

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
    specs[changed].sinks = vec![format!("tokens-new/{}.token", name(changed))];
    let new_sink = dir
        .join("tokens-new")
        .join(format!("{}.token", name(changed)));
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

struct Baselines {
    curl: common::baseline::Baseline,
    python: common::baseline::Baseline,
    load_before: String,
    load_after: String,
}

fn run_baselines(dir: &Path, refreshes: u64) -> Baselines {
    std::fs::create_dir_all(dir).expect("create baseline dir");
    let load_before = machine::load_string();
    let emu = Emulator::start(Options::default()).expect("start emulator");
    let url = emu.base_url(Provider::Pontotel);
    let curl = common::baseline::curl_jq(&url, &dir.join("curl.token"), refreshes);
    let python = common::baseline::python(&url, &dir.join("python.token"), refreshes);
    let issued = emu.stats(Provider::Pontotel).issued;
    assert!(issued >= 2 * refreshes, "baselines got {issued} tokens");
    Baselines {
        curl,
        python,
        load_before,
        load_after: machine::load_string(),
    }
}

fn mib(kb: u64) -> String {
    num(kb as f64 / 1024.0, 1)
}

fn render(rs: &[Fleet], b: &Baselines) -> String {
    let mut s = String::new();
    let mut t = Table::new(&[
        "accounts",
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
    let rss1 = rs.iter().find(|r| r.n == 1).map(|r| r.idle_rss_kb);
    for r in rs {
        let per_account = match rss1 {
            Some(base) if r.n > 1 => {
                num((r.idle_rss_kb as f64 - base as f64) / (r.n - 1) as f64, 1)
            }
            _ => "–".into(),
        };
        t.row(&[
            r.n.to_string(),
            format!("{} s", r.lifetime_s),
            format!("{} → {}", r.load_before, r.load_after),
            mib(r.idle_rss_kb),
            format!("{} / {}", mib(r.idle_anon_kb), mib(r.idle_file_kb)),
            format!("{} ({})", mib(r.load_rss_kb), mib(r.load_rss_max_kb)),
            per_account,
            r.load_refreshes.to_string(),
            num(r.load_refreshes as f64 / r.load_wall_s, 1),
            num(r.load_cpu_sched_s * 1e6 / r.load_refreshes as f64, 0),
            num(r.load_cpu_ticks_s * 1e6 / r.load_refreshes as f64, 0),
            format!(
                "{} %",
                num(100.0 * r.load_sys_ticks_s / r.load_cpu_ticks_s, 0)
            ),
            num(r.load_notify_messages as f64 / r.load_refreshes as f64, 2),
        ]);
    }
    s.push_str("## Memory and CPU per refresh\n\n");
    s.push_str(t.render());

    let mut t = Table::new(&[
        "accounts",
        "refreshes measured",
        "lateness p50 (ms)",
        "p99 (ms)",
        "max (ms)",
        "early (< −1 ms)",
    ]);
    for r in rs {
        t.row(&[
            r.n.to_string(),
            r.late.len().to_string(),
            num(percentile(&r.late, 50.0), 2),
            num(percentile(&r.late, 99.0), 2),
            num(percentile(&r.late, 100.0), 2),
            r.early.to_string(),
        ]);
    }
    s.push_str("\n## Refresh lateness (arrival at the provider − due time)\n\n");
    s.push_str(t.render());

    let mut t = Table::new(&[
        "accounts",
        "window (s)",
        "context switches (all threads)",
        "wake-ups/s",
        "CPU (ms, schedstat)",
        "CPU (ms, utime+stime)",
        "threads (alive, exited, started)",
    ]);
    for r in rs {
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
    s.push_str("\n## Idle cost (nothing due)\n\n");
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
    for r in rs {
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
    s.push_str("\n## Cold start and restart\n\n");
    s.push_str(t.render());

    let mut t = Table::new(&[
        "accounts",
        "`config reloaded` elapsed_ms",
        "file write → new sink written (ms, incl. 250 ms debounce)",
        "unchanged accounts' state files touched",
        "unchanged accounts' token files touched",
        "provider requests",
    ]);
    for r in rs {
        t.row(&[
            r.n.to_string(),
            r.reload_elapsed_ms.map_or("–".into(), |v| v.to_string()),
            num(r.reload_wall_ms, 0),
            r.reload_touched_state.to_string(),
            r.reload_touched_tokens.to_string(),
            r.reload_requests.to_string(),
        ]);
    }
    s.push_str("\n## Hot reload changing one account's sink\n\n");
    s.push_str(t.render());

    let per = |x: &common::baseline::Baseline| x.cpu_s * 1e6 / x.refreshes as f64;
    let (curl, py) = (per(&b.curl), per(&b.python));
    let mut t = Table::new(&[
        "what",
        "refreshes",
        "CPU per refresh (µs)",
        "RSS (MiB)",
        "tokend is … × cheaper per refresh (per N)",
    ]);
    let ratios = |base: f64| {
        rs.iter()
            .map(|r| {
                let own = r.load_cpu_sched_s * 1e6 / r.load_refreshes as f64;
                format!("N={}: {}×", r.n, num(base / own, 1))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    t.row(&[
        "curl \\| jq > file (seed docs), one pipeline per refresh".into(),
        b.curl.refreshes.to_string(),
        num(curl, 0),
        format!("{} (largest process)", mib(b.curl.rss_kb)),
        ratios(curl),
    ]);
    t.row(&[
        "Python `PontotelAuth` + requests, long-lived".into(),
        b.python.refreshes.to_string(),
        num(py, 0),
        format!(
            "{} idle, {} after",
            mib(b.python.rss_idle_kb),
            mib(b.python.rss_kb)
        ),
        ratios(py),
    ]);
    s.push_str(&format!(
        "\n## Baselines (load {} → {})\n\n",
        b.load_before, b.load_after
    ));
    s.push_str(t.render());
    let warnings: Vec<String> = rs
        .iter()
        .flat_map(|r| r.warnings.iter().map(move |w| format!("- N={}: {w}", r.n)))
        .collect();
    if !warnings.is_empty() {
        s.push_str("\nWarnings:\n");
        s.push_str(&warnings.join("\n"));
        s.push('\n');
    }
    s
}
