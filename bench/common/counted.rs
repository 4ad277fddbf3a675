//! Figures per refresh that do not depend on how busy the machine is, for the fleet
//! benchmark (`bench/fleet.rs`): the release tokend under `valgrind --tool=callgrind`
//! (instructions executed in user space, `Ir`) and under `strace -f -c` (system calls, by
//! name). CPU time on a shared 2-core VM moves by tens of per cent between runs; these
//! counts move by about one per cent.
//!
//! Each tool runs tokend twice on a small fleet from a fresh state: a short and a long
//! window after every account's first token is written, then SIGTERM. Both runs pay the
//! same start-up (loading, the first logins) and shutdown, so
//! `(count_long − count_short) / (refreshes_long − refreshes_short)` is the cost of one
//! refresh with those cancelled, refreshes being what the emulator issued. The fixed part
//! is `count_short − refreshes_short × per_refresh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokend::emulator::{Emulator, Options, Provider};

use super::fleet_config::{self, AccountSpec, DaemonSpec};
use super::notify::NotifySocket;
use super::process::Tokend;

/// The tool a run is counted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `valgrind --tool=callgrind`: instructions executed (user space only).
    Callgrind,
    /// `strace -f -c`: system calls of every thread, by name.
    Strace,
}

impl Tool {
    /// The program that must be installed.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Callgrind => "valgrind",
            Tool::Strace => "strace",
        }
    }

    /// What is counted, for the report.
    pub fn what(self) -> &'static str {
        match self {
            Tool::Callgrind => "instructions (callgrind `Ir`, user space)",
            Tool::Strace => "system calls (`strace -f -c`, all threads)",
        }
    }

    fn wrapper(self, out: &Path) -> Vec<String> {
        let out = out.display().to_string();
        let args: Vec<String> = match self {
            Tool::Callgrind => vec![
                "valgrind".into(),
                "--tool=callgrind".into(),
                "--quiet".into(),
                format!("--callgrind-out-file={out}"),
            ],
            Tool::Strace => vec![
                "strace".into(),
                "-f".into(),
                "-qq".into(),
                "-c".into(),
                "-U".into(),
                "calls,name".into(),
                "-o".into(),
                out,
            ],
        };
        args
    }
}

/// One run under a tool.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The window after the cold start, seconds.
    pub window_s: f64,
    /// Tokens the emulator issued over the whole run (the first logins included).
    pub refreshes: u64,
    /// Everything counted over the whole run.
    pub total: u64,
    /// Per system call name (strace only).
    pub by_name: BTreeMap<String, u64>,
    /// Spawn → every account's first token written, seconds.
    pub cold_s: f64,
}

/// Both runs of one tool.
#[derive(Debug, Clone)]
pub struct Counted {
    /// Which tool.
    pub tool: Tool,
    /// Accounts in the fleet.
    pub accounts: usize,
    /// Token lifetime.
    pub lifetime_s: u64,
    /// The short run.
    pub short: Run,
    /// The long run.
    pub long: Run,
}

impl Counted {
    /// Refreshes the long run made beyond the short one.
    pub fn extra_refreshes(&self) -> u64 {
        self.long.refreshes.saturating_sub(self.short.refreshes)
    }

    /// Count per refresh with start-up and shutdown cancelled.
    pub fn per_refresh(&self) -> f64 {
        (self.long.total as f64 - self.short.total as f64) / self.extra_refreshes() as f64
    }

    /// Start-up + shutdown: what the short run counted beyond its refreshes.
    pub fn fixed(&self) -> f64 {
        self.short.total as f64 - self.short.refreshes as f64 * self.per_refresh()
    }

    /// Per system call name, per refresh (strace), largest first.
    pub fn per_refresh_by_name(&self) -> Vec<(String, f64)> {
        let extra = self.extra_refreshes() as f64;
        let mut v: Vec<(String, f64)> = self
            .long
            .by_name
            .iter()
            .map(|(name, &long)| {
                let short = self.short.by_name.get(name).copied().unwrap_or(0);
                (name.clone(), (long as f64 - short as f64) / extra)
            })
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

/// Runs tokend under `tool` twice (`windows`: short, long) with `accounts` Pontotel
/// accounts of `lifetime` tokens; state under `dir` (disk), token files under `tokens`.
pub fn measure(
    tool: Tool,
    dir: &Path,
    tokens: &Path,
    accounts: usize,
    lifetime: Duration,
    windows: (Duration, Duration),
) -> Result<Counted, String> {
    let installed = std::process::Command::new(tool.program())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return Err(format!("{} is not installed", tool.program()));
    }
    let short = run(
        tool,
        &dir.join("short"),
        &tokens.join("short"),
        accounts,
        lifetime,
        windows.0,
    )?;
    let long = run(
        tool,
        &dir.join("long"),
        &tokens.join("long"),
        accounts,
        lifetime,
        windows.1,
    )?;
    let counted = Counted {
        tool,
        accounts,
        lifetime_s: lifetime.as_secs(),
        short,
        long,
    };
    if counted.extra_refreshes() == 0 {
        return Err("the long run made no more refreshes than the short one".into());
    }
    Ok(counted)
}

fn run(
    tool: Tool,
    dir: &Path,
    tokens: &Path,
    accounts: usize,
    lifetime: Duration,
    window: Duration,
) -> Result<Run, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let emu = Emulator::start(Options {
        access_lifetime: lifetime,
        ..Options::default()
    })
    .map_err(|e| format!("start emulator: {e}"))?;
    let names: Vec<String> = (0..accounts).map(|i| format!("c{i:03}")).collect();
    let token_path = |name: &str| tokens.join(format!("{name}.token"));
    let specs: Vec<AccountSpec> = names
        .iter()
        .map(|name| AccountSpec {
            name: name.clone(),
            provider: Provider::Pontotel,
            sinks: vec![token_path(name).display().to_string()],
            ratio: None,
            timeout: None,
        })
        .collect();
    let daemon = DaemonSpec {
        min_margin: "500ms",
        timeout: "15s",
        retry_max: "5m",
    };
    let config = dir.join("tokend.toml");
    let emu_url = format!("http://{}", emu.addr());
    fleet_config::write(&config, &fleet_config::render(&emu_url, &daemon, &specs));
    let log = dir.with_extension("log");
    let out = dir.with_extension("out");
    let notify = NotifySocket::bind(&PathBuf::from(format!(
        "/tmp/tokend-bench-{}-{}.notify",
        std::process::id(),
        dir.file_name().and_then(|s| s.to_str()).unwrap_or("run")
    )));
    let mut proc = Tokend::spawn_wrapped(&config, &log, Some(notify.path()), &tool.wrapper(&out));
    let started = Instant::now();
    let ready = notify
        .wait_for("READY=1", 0, Duration::from_secs(300))
        .is_some()
        && super::wait_until(Duration::from_secs(300), Duration::from_millis(50), || {
            names.iter().all(|n| token_path(n).exists())
        });
    if !ready {
        proc.kill9();
        return Err(format!(
            "tokend under {} did not start within 300 s; see {}",
            tool.program(),
            log.display()
        ));
    }
    let cold_s = started.elapsed().as_secs_f64();
    std::thread::sleep(window);
    // SIGTERM to tokend itself: under valgrind that is the child; under strace, the
    // child's child (strace writes its summary once its tracee has exited).
    let target = match tool {
        Tool::Callgrind => proc.pid(),
        Tool::Strace => first_child(proc.pid()).unwrap_or(proc.pid()),
    };
    let _ = kill(Pid::from_raw(target as i32), Signal::SIGTERM);
    if !proc.wait_exit(Duration::from_secs(120)) {
        proc.kill9();
        return Err(format!(
            "tokend under {} did not exit within 120 s of SIGTERM",
            tool.program()
        ));
    }
    let refreshes = emu.stats(Provider::Pontotel).issued;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("read {}: {e}", out.display()))?;
    let (total, by_name) = match tool {
        Tool::Callgrind => (callgrind_total(&text)?, BTreeMap::new()),
        Tool::Strace => strace_counts(&text)?,
    };
    Ok(Run {
        window_s: window.as_secs_f64(),
        refreshes,
        total,
        by_name,
        cold_s,
    })
}

/// The first child of `pid` (`/proc/PID/task/PID/children`).
fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `Ir` of a callgrind output file: its `totals:` line (or `summary:`).
fn callgrind_total(text: &str) -> Result<u64, String> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "no totals: line in the callgrind output".into())
}

/// `(total, by name)` from `strace -c -U calls,name` output: lines `CALLS NAME`, the last
/// one `CALLS total`.
fn strace_counts(text: &str) -> Result<(u64, BTreeMap<String, u64>), String> {
    let mut by_name = BTreeMap::new();
    let mut total = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [calls, name] = f.as_slice() else {
            continue;
        };
        let Ok(calls) = calls.parse::<u64>() else {
            continue;
        };
        if *name == "total" {
            total = Some(calls);
        } else {
            by_name.insert((*name).to_string(), calls);
        }
    }
    total
        .map(|t| (t, by_name))
        .ok_or_else(|| "no total line in the strace summary".into())
}
