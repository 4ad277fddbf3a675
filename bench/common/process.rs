//! The `tokend run` child process and what `/proc` says about any process: CPU time
//! (`utime+stime` in clock ticks from `/proc/PID/stat`, and the nanosecond
//! `sum_exec_runtime` of every thread from `/proc/PID/task/*/schedstat`), resident memory
//! (`VmRSS`, `VmHWM`) and context switches summed over all threads.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ; 100 on Linux).
pub const CLK_TCK: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When it was taken.
    pub at: Option<Instant>,
    /// utime + stime in seconds (10 ms resolution; includes exited threads).
    pub cpu_ticks_s: f64,
    /// The system (kernel) part of it.
    pub sys_ticks_s: f64,
    /// Per live thread: (on-CPU ns, voluntary + involuntary context switches).
    pub threads: HashMap<u32, (u64, u64)>,
    /// Resident set, KiB.
    pub rss_kb: u64,
    /// Peak resident set, KiB.
    pub hwm_kb: u64,
    /// Of the resident set: anonymous memory (heap, stacks), KiB.
    pub anon_kb: u64,
    /// Of the resident set: file-backed pages (the binary and libraries), KiB.
    pub file_kb: u64,
}

impl Sample {
    /// Reads `/proc/PID`. Threads that vanish while being read are skipped.
    pub fn of(pid: u32) -> Sample {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14.
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let cpu_ticks_s = (tick(11) + tick(12)) as f64 / CLK_TCK;
        let sys_ticks_s = tick(12) as f64 / CLK_TCK;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mut threads = HashMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in dir.flatten() {
                let Some(tid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let sched = std::fs::read_to_string(entry.path().join("schedstat"));
                let tstatus = std::fs::read_to_string(entry.path().join("status"));
                if let (Ok(sched), Ok(tstatus)) = (sched, tstatus) {
                    let ns = sched
                        .split_whitespace()
                        .next()
                        .and_then(|x| x.parse::<u64>().ok())
                        .unwrap_or(0);
                    let switches = field_kb(&tstatus, "voluntary_ctxt_switches:")
                        + field_kb(&tstatus, "nonvoluntary_ctxt_switches:");
                    threads.insert(tid, (ns, switches));
                }
            }
        }
        Sample {
            at: Some(Instant::now()),
            cpu_ticks_s,
            sys_ticks_s,
            threads,
            rss_kb: field_kb(&status, "VmRSS:"),
            hwm_kb: field_kb(&status, "VmHWM:"),
            anon_kb: field_kb(&status, "RssAnon:"),
            file_kb: field_kb(&status, "RssFile:"),
        }
    }
}

/// The number after `key` in a `/proc/*/status` text.
pub fn field_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// What happened between two samples.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// Wall time.
    pub wall: Duration,
    /// utime+stime difference, seconds (10 ms ticks).
    pub cpu_ticks_s: f64,
    /// The stime part of it.
    pub sys_ticks_s: f64,
    /// On-CPU time of threads alive at the end, seconds (ns resolution; a thread that
    /// exited in between is missing, one that started counts fully).
    pub cpu_sched_s: f64,
    /// Context switches of threads alive at the end (same rule).
    pub switches: u64,
    /// Threads alive at the end / that exited / that started.
    pub threads: (usize, usize, usize),
}

/// `b - a`.
pub fn delta(a: &Sample, b: &Sample) -> Delta {
    let mut cpu_ns = 0u64;
    let mut switches = 0u64;
    let mut started = 0;
    for (tid, (ns, sw)) in &b.threads {
        match a.threads.get(tid) {
            Some((ns0, sw0)) => {
                cpu_ns += ns.saturating_sub(*ns0);
                switches += sw.saturating_sub(*sw0);
            }
            None => {
                started += 1;
                cpu_ns += ns;
                switches += sw;
            }
        }
    }
    let exited = a
        .threads
        .keys()
        .filter(|t| !b.threads.contains_key(t))
        .count();
    Delta {
        wall: b
            .at
            .zip(a.at)
            .map_or(Duration::ZERO, |(b, a)| b.saturating_duration_since(a)),
        cpu_ticks_s: b.cpu_ticks_s - a.cpu_ticks_s,
        sys_ticks_s: b.sys_ticks_s - a.sys_ticks_s,
        cpu_sched_s: cpu_ns as f64 / 1e9,
        switches,
        threads: (b.threads.len(), exited, started),
    }
}

/// A running `tokend -c CONFIG run`, stderr (the log) to a file. Dropping it kills it.
pub struct Tokend {
    child: Option<Child>,
    /// When it was spawned.
    pub spawned: SystemTime,
    /// Same, monotonic.
    pub spawned_i: Instant,
    /// The log file.
    pub log: PathBuf,
}

/// The release binary Cargo built for this benchmark, or `$TOKEND_BENCH_BIN` (for
/// profiling: a build with symbols, docs/BENCHMARKS.md "Profiling").
pub fn tokend_binary() -> PathBuf {
    std::env::var_os("TOKEND_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tokend")),
        PathBuf::from,
    )
}

impl Tokend {
    /// Spawns the daemon; `notify_socket` becomes `NOTIFY_SOCKET`. The log is appended to.
    /// `$TOKEND_BENCH_WRAPPER` (e.g. `valgrind --tool=callgrind`) runs tokend under a
    /// tool, in the same process, so /proc figures still apply (slowed down).
    pub fn spawn(config: &Path, log: &Path, notify_socket: Option<&Path>) -> Tokend {
        let wrapper: Vec<String> = std::env::var("TOKEND_BENCH_WRAPPER")
            .map(|w| w.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Tokend::spawn_wrapped(config, log, notify_socket, &wrapper)
    }

    /// [`Tokend::spawn`] under `wrapper` (a tool and its arguments, e.g. `valgrind
    /// --tool=callgrind …`; empty: none), whatever `$TOKEND_BENCH_WRAPPER` says.
    pub fn spawn_wrapped(
        config: &Path,
        log: &Path,
        notify_socket: Option<&Path>,
        wrapper: &[String],
    ) -> Tokend {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("open tokend log");
        let mut cmd = match wrapper.split_first() {
            Some((tool, args)) => {
                let mut c = Command::new(tool);
                c.args(args).arg(tokend_binary());
                c
            }
            None => Command::new(tokend_binary()),
        };
        cmd.arg("-c")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .env("NO_COLOR", "1")
            // As systemd/tokend.service runs it (the deployed setting); a caller's own
            // value wins, so `MALLOC_ARENA_MAX=` compares with glibc's default.
            .env(
                "MALLOC_ARENA_MAX",
                std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        match notify_socket {
            Some(p) => cmd.env("NOTIFY_SOCKET", p),
            None => cmd.env_remove("NOTIFY_SOCKET"),
        };
        let spawned = SystemTime::now();
        let spawned_i = Instant::now();
        let child = cmd.spawn().expect("spawn tokend");
        Tokend {
            child: Some(child),
            spawned,
            spawned_i,
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A `/proc` sample.
    pub fn sample(&self) -> Sample {
        Sample::of(self.pid())
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then waits (bounded by `grace`, SIGKILL after); returns the time it took.
    pub fn terminate(&mut self, grace: Duration) -> Duration {
        let started = Instant::now();
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            while started.elapsed() < grace {
                if let Ok(Some(_)) = child.try_wait() {
                    return started.elapsed();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        started.elapsed()
    }

    /// Waits (at most `timeout`) for the process to exit by itself; whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            match self.child.as_mut().map(Child::try_wait) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => {
                    self.child = None;
                    return true;
                }
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The log from byte `offset` on.
    pub fn log_since(&self, offset: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = Vec::new();
        if let Ok(mut f) = File::open(&self.log)
            && f.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Drop for Tokend {
    fn drop(&mut self) {
        self.kill9();
    }
}
