//! `cargo bench --bench faults -- --minutes N`: the fault harness (docs/BENCHMARKS.md).
//! The real release `tokend run` keeps accounts of every emulated provider fresh for N
//! minutes while everything goes wrong at once:
//! - random provider faults on every token request (5xx, 429 with `Retry-After`, answers
//!   slower than the account's timeout, dropped connections, garbage bodies, GraphQL
//!   errors), plus full outages of one provider at a time;
//! - SIGKILL of tokend at random moments, restarted at once;
//! - a sink directory on a 64 KiB tmpfs that is filled to the last byte and freed again;
//! - config edits every 40–80 s, read by hot reload: one account's refresh `ratio`, a
//!   second file sink added and later removed, an account removed and later re-added, one
//!   account's `timeout`, and an invalid config held for 3–5 s; written in place or by
//!   temporary file and rename, some followed by SIGHUP;
//! - a reader that reads every token file over and over and checks each read against the
//!   emulator.
//!
//! It prints reads done, torn or empty reads (must be 0), expired tokens served while the
//! provider was reachable (must be 0; the exact rule is in docs/BENCHMARKS.md and
//! [`judge`]), spent refresh tokens reused (must be 0, from the emulator), the peak
//! requests per account per minute during an outage, and per kind of config edit what
//! tokend's log says of it: valid edits not applied by a reload and new sinks or re-added
//! accounts left without a token tokend had (must be 0). Exit status 1 when a must-be-0
//! figure is not 0.
//!
//! Options: `--minutes N` (default 10), `--accounts N` (default 24, spread over the six
//! providers), `--fault-rate R` (default 0.2), `--seed S`, `--edit-every A-B` (seconds
//! between config edits, default 40-80; shorter for a quick run that sees every kind).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use common::fleet_config::{self, AccountSpec, DaemonSpec};
use common::machine;
use common::process::Tokend;
use common::report::Table;
use common::tap::{Outcome, Record, Tap};
use common::tmpfs::Tmpfs;
use tokend::emulator::{Emulator, Fault, Options, Provider};

/// Token lifetime: short, so there are many refreshes; with `min_margin = 4s` a token is
/// due 6 s after it was obtained and the retry window before expiry is 4 s.
const LIFETIME: Duration = Duration::from_secs(10);
/// From due to expiry (`min_margin`, which binds: 75 % of 10 s would leave 2.5 s).
const RETRY_WINDOW: Duration = Duration::from_secs(4);
/// Per-request timeout of every account; `Delay` faults wait longer.
const TIMEOUT: &str = "2s";
const DELAY: Duration = Duration::from_secs(3);
/// An outage every this often, of this length, one provider at a time in turn.
const OUTAGE_EVERY: Duration = Duration::from_secs(150);
const OUTAGE_FOR: Duration = Duration::from_secs(75);
/// SIGKILL every 20–60 s, restart after 0–1 s.
const KILL_EVERY: (u64, u64) = (20_000, 60_000);
/// The tmpfs sink directory is full for this long, then free for as long.
const DISK_TOGGLE: Duration = Duration::from_secs(40);
/// A config edit every 40–80 s (seconds; `--edit-every A-B`), the kinds in turn.
const EDIT_EVERY: (u64, u64) = (40, 80);
/// No edit this close before a scheduled SIGKILL (or the end): an invalid config is held
/// up to 5 s, and the valid one written after it must still be read by a reload, not by
/// the restart.
const EDIT_BEFORE_KILL: Duration = Duration::from_secs(8);
/// Nor this soon after tokend was (re)started: it reads the config first and sets up its
/// watcher and signal handlers after; an edit in between would be seen by neither, and a
/// SIGHUP before the handler is installed would end it.
const EDIT_AFTER_SPAWN: Duration = Duration::from_secs(3);
/// An invalid config stays this long (ms) before the valid one is written back.
const INVALID_FOR: (u64, u64) = (3_000, 5_000);
/// The timing edit toggles one account's `ratio` between these.
const RATIOS: (f64, f64) = (0.75, 0.5);
/// The provider-settings edit toggles one account's `timeout` between [`TIMEOUT`] and this
/// (still under [`DELAY`], so delayed answers still time out).
const TIMEOUT_ALT: &str = "2500ms";
/// A new sink, or the token file of a re-added account, is judged from this long after the
/// edit (the watcher's 250 ms debounce and the reload) …
const RELOAD_SETTLE: Duration = Duration::from_secs(2);
/// … and must hold a valid token once tokend has had one to write for this long: the
/// account's task picks a reload up only between requests, and one may be in flight
/// (up to the 2.5 s timeout, after up to the 1 s minimum interval between requests).
const WRITE_GRACE: Duration = Duration::from_secs(4);

/// What the reader saw.
#[derive(Debug, Default)]
struct Reads {
    total: u64,
    missing: u64,
    empty: u64,
    torn: u64,
    unknown: u64,
    valid: u64,
    /// Reads of a sink added by a config edit before tokend first wrote it.
    missing_added: u64,
    /// Revoked (not expired) when read: reads per (account index, sink, token).
    revoked: BTreeMap<(usize, usize, String), u64>,
    /// Expired between the read and the check (the token was valid when read).
    expired_while_checking: u64,
    /// Expired when read: per (account index, sink, token) the first read and the count.
    expired: BTreeMap<(usize, usize, String), ExpiredRead>,
}

#[derive(Debug, Clone)]
struct ExpiredRead {
    first_read: Instant,
    expires_at: Instant,
    reads: u64,
}

/// Shared timeline of what the harness did, to judge expired reads.
#[derive(Debug, Default)]
struct Timeline {
    /// tokend not running: (killed, restarted).
    down: Vec<(Instant, Instant)>,
    /// tmpfs full: (from, to).
    full: Vec<(Instant, Instant)>,
    /// Outages: (provider, from, to).
    outages: Vec<(Provider, Instant, Instant)>,
    /// Accounts removed from the config by an edit: (account index, removed, re-added).
    unconfigured: Vec<(usize, Instant, Instant)>,
}

/// Sink indices of the reader (the `k` of its paths): the token sink, the tmpfs sink and a
/// sink added by a config edit.
const SINK_TOKEN: usize = 0;
const SINK_TMPFS: usize = 1;
const SINK_ADDED: usize = 2;

/// The kinds of config edit, done in this order, round and round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EditKind {
    /// One account's `[account.refresh] ratio` 0.75 ↔ 0.5.
    Timing,
    /// A second file sink added to an account; the next edit of this kind removes it.
    Sinks,
    /// An account's block removed; the next edit of this kind adds it back.
    Account,
    /// One account's `timeout` 2s ↔ 2500ms.
    Provider,
    /// An invalid config for 3–5 s, then the valid one again.
    Invalid,
}

impl EditKind {
    const ALL: [EditKind; 5] = [
        EditKind::Timing,
        EditKind::Sinks,
        EditKind::Account,
        EditKind::Provider,
        EditKind::Invalid,
    ];

    fn label(self) -> &'static str {
        match self {
            EditKind::Timing => "timing: one account's `ratio` 0.75 ↔ 0.5",
            EditKind::Sinks => "sinks only: a second file sink added / removed",
            EditKind::Account => "an account removed / re-added",
            EditKind::Provider => "provider settings: one account's `timeout` 2s ↔ 2500ms",
            EditKind::Invalid => "invalid config for 3–5 s, then the valid one back",
        }
    }
}

/// How an edit reaches the file, in turn for each kind: rewritten in place (truncate and
/// write) or written to a temporary file renamed over it (as editors do); half of each
/// followed by SIGHUP (the watcher fires as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    InPlace,
    Rename,
    InPlaceHup,
    RenameHup,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::InPlace,
        Method::Rename,
        Method::InPlaceHup,
        Method::RenameHup,
    ];

    fn label(self) -> &'static str {
        match self {
            Method::InPlace => "in place",
            Method::Rename => "rename",
            Method::InPlaceHup => "in place + SIGHUP",
            Method::RenameHup => "rename + SIGHUP",
        }
    }

    fn hup(self) -> bool {
        matches!(self, Method::InPlaceHup | Method::RenameHup)
    }

    /// Writes `text` to `path` this way; SIGHUP to `pid` after, if it says so.
    fn apply(self, path: &Path, text: &str, pid: u32) {
        match self {
            // O_TRUNC keeps the file's 0600 mode.
            Method::InPlace | Method::InPlaceHup => {
                std::fs::write(path, text).expect("rewrite config in place");
            }
            Method::Rename | Method::RenameHup => fleet_config::write(path, text),
        }
        if self.hup() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
        }
    }
}

/// The config as the edits have left it: every account's current spec (kept while it is
/// removed, so that it comes back as it was), which one is removed, which one has a
/// second sink.
struct Fleet {
    specs: Vec<AccountSpec>,
    removed: Option<usize>,
    /// (account index, index of the added sink in its `sinks`).
    added_sink: Option<(usize, usize)>,
}

impl Fleet {
    fn render(&self, tap: &str, daemon: &DaemonSpec) -> String {
        let live: Vec<AccountSpec> = self
            .specs
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.removed)
            .map(|(_, s)| s.clone())
            .collect();
        fleet_config::render(tap, daemon, &live)
    }

    /// Configured accounts other than `except`.
    fn candidates(&self, except: Option<usize>) -> Vec<usize> {
        (0..self.specs.len())
            .filter(|i| Some(*i) != self.removed && Some(*i) != except)
            .collect()
    }
}

/// One write of the config file, until the next write, kill or end: what tokend's log
/// says about it is checked then.
struct Written {
    kind: EditKind,
    /// A valid config (every write but the invalid one of an invalid edit).
    valid: bool,
    /// The account whose change the log should name (`reload` line), if any.
    account: Option<String>,
    /// What was done, for the progress lines and failures.
    what: String,
    /// tokend's log size just before the write.
    log_offset: u64,
    /// When it was written.
    at: Instant,
}

/// A new sink, or a re-added account's token file, waiting for a valid token.
struct Awaited {
    kind: EditKind,
    account: usize,
    path: PathBuf,
    written: Instant,
    /// Tap records from here on are this edit's.
    tap_from: usize,
    /// Since when tokend had a valid token for it (and the file did not).
    owed_since: Option<Instant>,
}

/// What the config edits did and what tokend's log says about them.
#[derive(Debug, Default)]
struct EditStats {
    /// Edits per kind.
    done: BTreeMap<EditKind, u32>,
    /// Writes per kind and method.
    methods: BTreeMap<(EditKind, &'static str), u32>,
    /// Valid writes per kind, and those followed by a `config reloaded` line.
    valid_writes: BTreeMap<EditKind, (u32, u32)>,
    /// Invalid writes, and those followed by a `reload failed` line.
    invalid_writes: (u32, u32),
    /// Valid writes with no `config reloaded` line before the next write, kill or end.
    not_applied: Vec<String>,
    /// Valid writes whose window ended with a kill before any `config reloaded`: read at
    /// the restart instead.
    applied_at_restart: u32,
    /// The `change` values of tokend's `reload` lines naming the edited account, per kind.
    changes: BTreeMap<EditKind, BTreeSet<String>>,
    /// Edit → valid token in the new sink / the re-added account's file, per kind.
    appeared: BTreeMap<EditKind, Vec<Duration>>,
    /// New sinks / re-added accounts whose file lacked a token tokend had had for
    /// [`WRITE_GRACE`].
    not_written: Vec<String>,
    /// Still waiting when the sink was removed again or the run ended (tokend never had a
    /// valid token to write: the provider was failing).
    unresolved: BTreeMap<EditKind, u32>,
}

fn main() -> ExitCode {
    let minutes: f64 = common::arg("--minutes").map_or(10.0, |v| v.parse().expect("--minutes N"));
    let n: usize = common::arg("--accounts").map_or(24, |v| v.parse().expect("--accounts N"));
    let rate: f64 = common::arg("--fault-rate").map_or(0.2, |v| v.parse().expect("--fault-rate R"));
    let seed: u64 = common::arg("--seed").map_or(7, |v| v.parse().expect("--seed S"));
    let edit_every: (u64, u64) = common::arg("--edit-every").map_or(EDIT_EVERY, |v| {
        v.split_once('-')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .filter(|(a, b)| 0 < *a && a <= b)
            .expect("--edit-every A-B (seconds, 0 < A <= B)")
    });
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let dir = common::scratch_dir("faults");
    let load_before = machine::load_string();
    println!("## Machine\n\n{}", machine::describe(&dir));
    println!(
        "fault harness: {minutes} min, {n} accounts, fault rate {rate}, seed {seed}, config edit every {}–{} s, load {load_before}\n",
        edit_every.0, edit_every.1
    );

    let emu = Arc::new(
        Emulator::start(Options {
            access_lifetime: LIFETIME,
            refresh_lifetime: Duration::from_secs(120),
            fault_seed: seed,
            ..Options::default()
        })
        .expect("start emulator"),
    );
    let tap = Tap::start(emu.addr(), None);

    // The tmpfs sink directory (root only); without it, say so and go on.
    let full_dir = dir.join("full");
    let (mount, mount_note) = match Tmpfs::mount(&full_dir, "64k") {
        Ok(m) => (Some(m), "64 KiB tmpfs".to_string()),
        Err(e) => {
            std::fs::create_dir_all(&full_dir).expect("create tmpfs dir");
            (None, format!("NOT exercised: {e}"))
        }
    };

    let providers = Provider::ALL;
    let specs: Vec<AccountSpec> = (0..n)
        .map(|i| {
            let name = format!("{}-{i:03}", providers[i % providers.len()].name());
            let mut sinks = vec![format!("tokens/{name}.token")];
            if i % 4 == 0 {
                sinks.push(format!("full/{name}.token"));
            }
            AccountSpec {
                name,
                provider: providers[i % providers.len()],
                sinks,
                ratio: None,
                timeout: None,
            }
        })
        .collect();
    let daemon = DaemonSpec {
        min_margin: "4s",
        timeout: TIMEOUT,
        retry_max: "5m",
    };
    let config = dir.join("tokend.toml");
    fleet_config::write(&config, &fleet_config::render(&tap.url(), &daemon, &specs));
    // Not next to the config: tokend watches the config's directory. Appended to by every
    // tokend of the run, so a previous run's is removed first (its lines would be counted).
    let log = dir.with_extension("log");
    let _ = std::fs::remove_file(&log);
    let sink_paths: Vec<(usize, usize, PathBuf)> = specs
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let dir = dir.clone();
            s.sinks
                .iter()
                .enumerate()
                .map(move |(k, p)| (i, k, dir.join(p)))
        })
        .collect();
    // What the reader checks: config edits add and remove sinks.
    let sink_paths = Arc::new(Mutex::new(sink_paths));

    let faults = |p: Provider| {
        let mut kinds = vec![
            Fault::Status(500),
            Fault::Status(502),
            Fault::Status(503),
            Fault::TooManyRequests {
                retry_after_secs: 1,
            },
            Fault::Delay(DELAY),
            Fault::Drop,
            Fault::Garbage,
        ];
        if p == Provider::Funcional {
            kinds.push(Fault::GraphqlError);
        }
        kinds
    };
    for p in providers {
        emu.set_random_faults(p, rate, faults(p));
    }

    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(Reads::default()));
    let reader = {
        let (emu, stop, reads) = (emu.clone(), stop.clone(), reads.clone());
        let specs = specs.clone();
        let paths = sink_paths.clone();
        std::thread::spawn(move || read_loop(&emu, &specs, &paths, &stop, &reads))
    };

    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let deadline = started + duration;
    let mut proc_ = Tokend::spawn(&config, &log, None);
    // Its own rng, so that the kill schedule of a seed is what it was before edits existed.
    let mut edits = Edits {
        fleet: Fleet {
            specs: specs.clone(),
            removed: None,
            added_sink: None,
        },
        editor: Editor {
            config: config.clone(),
            log: log.clone(),
            started,
            writes: BTreeMap::new(),
            open: None,
            stats: EditStats::default(),
        },
        rng: StdRng::seed_from_u64(seed ^ 0x5eed_ed17),
        every: edit_every,
        next: started,
        restore_at: None,
        edits: 0,
        invalid: 0,
        added: 0,
        removed_since: None,
        awaited: Vec::new(),
        dir: dir.clone(),
        tap_url: tap.url(),
        daemon: daemon.clone(),
        paths: sink_paths.clone(),
    };
    edits.next = started + edits.interval();
    let mut kills = 0u32;
    let mut next_kill =
        started + Duration::from_millis(rng.random_range(KILL_EVERY.0..KILL_EVERY.1));
    let mut next_disk = started + DISK_TOGGLE;
    let mut disk_full_since: Option<Instant> = None;
    let mut next_outage = started + Duration::from_secs(30);
    let mut outage: Option<(Provider, Instant)> = None;
    let mut outage_turn = 0usize;
    let mut unexpected_exits = 0u32;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if !proc_.alive() {
            edits.editor.close(true);
            unexpected_exits += 1;
            eprintln!(
                "tokend exited on its own; restarting (see {})",
                log.display()
            );
            proc_ = Tokend::spawn(&config, &log, None);
        }
        if now >= next_kill {
            edits.editor.close(true);
            proc_.kill9();
            let killed = Instant::now();
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.random_range(0..1000)));
            proc_ = Tokend::spawn(&config, &log, None);
            timeline
                .lock()
                .expect("timeline")
                .down
                .push((killed, proc_.spawned_i));
            next_kill = Instant::now()
                + Duration::from_millis(rng.random_range(KILL_EVERY.0..KILL_EVERY.1));
        }
        if mount.is_some() && now >= next_disk {
            next_disk = now + DISK_TOGGLE;
            match disk_full_since.take() {
                Some(since) => {
                    let _ = std::fs::remove_file(full_dir.join("filler"));
                    timeline
                        .lock()
                        .expect("timeline")
                        .full
                        .push((since, Instant::now()));
                }
                None => {
                    fill(&full_dir.join("filler"));
                    disk_full_since = Some(Instant::now());
                }
            }
        }
        match outage {
            Some((p, since)) if now >= since + OUTAGE_FOR => {
                emu.set_random_faults(p, rate, faults(p));
                timeline
                    .lock()
                    .expect("timeline")
                    .outages
                    .push((p, since, Instant::now()));
                outage = None;
            }
            None if now >= next_outage && now + OUTAGE_FOR < deadline => {
                let p = providers[outage_turn % providers.len()];
                outage_turn += 1;
                emu.set_random_faults(p, 1.0, faults(p));
                outage = Some((p, Instant::now()));
                next_outage = now + OUTAGE_EVERY;
            }
            _ => {}
        }
        // Config edits, clear of kills and restarts (see EDIT_BEFORE_KILL).
        let clear = next_kill.min(deadline).saturating_duration_since(now) >= EDIT_BEFORE_KILL
            && now.duration_since(proc_.spawned_i) >= EDIT_AFTER_SPAWN;
        edits.step(now, clear, &proc_, &emu, &tap, &timeline);
    }
    edits.finish(Instant::now(), &timeline);
    let stop_took = proc_.terminate(Duration::from_secs(15));
    if let Some(since) = disk_full_since {
        timeline
            .lock()
            .expect("timeline")
            .full
            .push((since, Instant::now()));
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().expect("reader thread");
    drop(mount);
    let ran = started.elapsed();

    let reads = reads.lock().expect("reads");
    let timeline = timeline.lock().expect("timeline");
    let records = tap.since(0);
    let verdicts = judge(&reads, &timeline, &records, &specs);
    let reuses: u64 = providers
        .iter()
        .map(|&p| emu.stats(p).spent_refresh_reuses)
        .sum();
    let peak = outage_peaks(&timeline, &records, &specs);
    let es = &edits.editor.stats;
    let logged = log_messages(&read_from(&log, 0));
    let reloaded_lines = logged
        .iter()
        .filter(|l| l.message == "config reloaded")
        .count();
    let failed_lines = logged
        .iter()
        .filter(|l| l.message.starts_with("reload failed"))
        .count();

    let mut t = Table::new(&["figure", "value", "must be"]);
    let row = |t: &mut Table, a: &str, b: String, c: &str| t.row(&[a.into(), b, c.into()]);
    row(
        &mut t,
        "duration",
        format!("{:.1} min", ran.as_secs_f64() / 60.0),
        "≥ 10 min",
    );
    row(
        &mut t,
        "load before → after",
        format!("{load_before} → {}", machine::load_string()),
        "",
    );
    row(&mut t, "reads done", reads.total.to_string(), "");
    row(
        &mut t,
        "reads/s",
        format!("{:.0}", reads.total as f64 / ran.as_secs_f64()),
        "",
    );
    row(
        &mut t,
        "torn or empty reads",
        (reads.torn + reads.empty).to_string(),
        "0",
    );
    row(
        &mut t,
        "reads of a token the provider never issued",
        reads.unknown.to_string(),
        "0",
    );
    row(
        &mut t,
        "expired tokens served while the provider was reachable (distinct tokens)",
        verdicts.violations.len().to_string(),
        "0",
    );
    row(
        &mut t,
        "expired tokens served, provider unreachable through the retry window (tokens / reads)",
        format!("{} / {}", verdicts.unreachable.0, verdicts.unreachable.1),
        "",
    );
    row(
        &mut t,
        "expired tokens served while tokend was killed (tokens / reads)",
        format!("{} / {}", verdicts.down.0, verdicts.down.1),
        "",
    );
    row(
        &mut t,
        "expired tokens on the full tmpfs sink (tokens / reads)",
        format!("{} / {}", verdicts.full.0, verdicts.full.1),
        "",
    );
    row(
        &mut t,
        "expired tokens served while the account was removed from the config (tokens / reads)",
        format!("{} / {}", verdicts.unconfigured.0, verdicts.unconfigured.1),
        "",
    );
    row(
        &mut t,
        "reads of a token expiring between read and check",
        reads.expired_while_checking.to_string(),
        "",
    );
    for (k, sink) in [
        (SINK_TOKEN, "token sink"),
        (SINK_TMPFS, "tmpfs sink"),
        (SINK_ADDED, "added sink"),
    ] {
        let tokens = reads.revoked.keys().filter(|key| key.1 == k).count();
        let n: u64 = reads
            .revoked
            .iter()
            .filter(|(key, _)| key.1 == k)
            .map(|(_, v)| v)
            .sum();
        row(
            &mut t,
            &format!(
                "unexpired but revoked tokens read, {sink} (HubSoft revokes on refresh; tokens / reads)"
            ),
            format!("{tokens} / {n}"),
            "",
        );
    }
    row(&mut t, "valid reads", reads.valid.to_string(), "");
    row(
        &mut t,
        "reads before the first token (no file yet)",
        reads.missing.to_string(),
        "",
    );
    row(
        &mut t,
        "reads of an added sink before tokend first wrote it",
        reads.missing_added.to_string(),
        "",
    );
    row(
        &mut t,
        "spent refresh tokens reused (emulator)",
        reuses.to_string(),
        "0",
    );
    row(
        &mut t,
        "peak requests per account per minute during an outage",
        peak.0.to_string(),
        "",
    );
    row(
        &mut t,
        "mean requests per account per minute during an outage",
        format!("{:.1}", peak.1),
        "",
    );
    row(&mut t, "SIGKILLs + restarts", kills.to_string(), "");
    row(
        &mut t,
        "tokend exits not caused by the harness",
        unexpected_exits.to_string(),
        "0",
    );
    row(
        &mut t,
        "config edits (timing / sinks / account / provider settings / invalid)",
        EditKind::ALL
            .iter()
            .map(|k| es.done.get(k).copied().unwrap_or(0).to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        "",
    );
    row(
        &mut t,
        "`config reloaded` / `reload failed` lines in tokend's log",
        format!("{reloaded_lines} / {failed_lines}"),
        "",
    );
    row(
        &mut t,
        "valid config writes not applied (no `config reloaded` before the next write, kill or end), invalid ones not reported (no `reload failed`)",
        es.not_applied.len().to_string(),
        "0",
    );
    row(
        &mut t,
        "valid config writes read at a restart instead (killed < 2 s after the write)",
        es.applied_at_restart.to_string(),
        "",
    );
    row(
        &mut t,
        "added sinks and re-added accounts without the token tokend had, 4 s on",
        es.not_written.len().to_string(),
        "0",
    );
    row(
        &mut t,
        "SIGTERM → exit at the end",
        format!("{} ms", stop_took.as_millis()),
        "< 10 s",
    );
    row(
        &mut t,
        "full-disk sink directory",
        format!("{mount_note}, full {} times", timeline.full.len()),
        "",
    );
    row(
        &mut t,
        "outages (provider, s)",
        timeline
            .outages
            .iter()
            .map(|(p, a, b)| format!("{p} {:.0}", b.duration_since(*a).as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        "",
    );
    println!("{}", t.render());

    // Per kind of config edit.
    let mut t = Table::new(&[
        "config edit",
        "edits",
        "writes (in place / rename / in place + SIGHUP / rename + SIGHUP)",
        "valid writes followed by `config reloaded`",
        "tokend's `reload` change for the account",
        "edit → valid token in the new sink / re-added account's file (n, max)",
    ]);
    for k in EditKind::ALL {
        let writes = Method::ALL
            .iter()
            .map(|m| {
                es.methods
                    .get(&(k, m.label()))
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(" / ");
        let (valid, reloaded) = es.valid_writes.get(&k).copied().unwrap_or((0, 0));
        let mut applied = format!("{reloaded} of {valid}");
        if k == EditKind::Invalid {
            let (n, failed) = es.invalid_writes;
            applied.push_str(&format!(
                "; invalid writes followed by `reload failed`: {failed} of {n}"
            ));
        }
        let changes = es
            .changes
            .get(&k)
            .map(|c| c.iter().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "–".into());
        let appeared = match (k, es.appeared.get(&k)) {
            (EditKind::Sinks | EditKind::Account, Some(d)) => format!(
                "{}, {} ms{}",
                d.len(),
                d.iter().max().map_or(0, Duration::as_millis),
                es.unresolved.get(&k).map_or(String::new(), |u| format!(
                    " ({u} never had a token to write)"
                ))
            ),
            (EditKind::Sinks | EditKind::Account, None) => {
                es.unresolved.get(&k).map_or("– (none yet)".into(), |u| {
                    format!("0 ({u} never had a token to write)")
                })
            }
            _ => String::new(),
        };
        t.row(&[
            k.label().into(),
            es.done.get(&k).copied().unwrap_or(0).to_string(),
            writes,
            applied,
            changes,
            appeared,
        ]);
    }
    println!("{}", t.render());

    let mut t = Table::new(&[
        "provider",
        "requests",
        "faults injected",
        "logins",
        "refreshes",
        "issued",
        "rejected",
        "spent refresh reuses",
    ]);
    for p in providers {
        let s = emu.stats(p);
        t.row(&[
            p.to_string(),
            s.requests.to_string(),
            s.faults.to_string(),
            s.logins.to_string(),
            s.refreshes.to_string(),
            s.issued.to_string(),
            s.rejected.to_string(),
            s.spent_refresh_reuses.to_string(),
        ]);
    }
    println!("{}", t.render());
    for v in &verdicts.violations {
        println!("VIOLATION: {v}");
    }
    for v in &es.not_applied {
        println!("EDIT NOT APPLIED: {v}");
    }
    for v in &es.not_written {
        println!("NOT WRITTEN: {v}");
    }
    let failed = reads.torn + reads.empty + reads.unknown + reuses + unexpected_exits as u64 > 0
        || !verdicts.violations.is_empty()
        || !es.not_applied.is_empty()
        || !es.not_written.is_empty();
    if failed {
        println!(
            "FAILED: a must-be-0 figure is not 0; tokend log: {}",
            log.display()
        );
        ExitCode::FAILURE
    } else {
        println!("all must-be-0 figures are 0");
        ExitCode::SUCCESS
    }
}

/// Writes the config and checks, at the next write, kill or end, what tokend's log said
/// about each write.
struct Editor {
    config: PathBuf,
    log: PathBuf,
    started: Instant,
    /// Writes so far per kind and validity: each goes round the methods on its own, so
    /// that every kind is written every way (one counter for all would tie kinds to
    /// methods: five kinds make six writes a round), starting at a method of its own.
    writes: BTreeMap<(EditKind, bool), usize>,
    /// The last write, until its log window is closed.
    open: Option<Written>,
    stats: EditStats,
}

impl Editor {
    /// Writes `text` (the next method in turn), after closing the previous write's window.
    fn write(&mut self, w: Written, text: &str, pid: u32) {
        self.close(false);
        let n = self.writes.entry((w.kind, w.valid)).or_default();
        // Each kind starts at its own method (so that a short run sees them all), and the
        // valid config written back after an invalid one one method later still.
        let shift = w.kind as usize + usize::from(w.kind == EditKind::Invalid && w.valid);
        let method = Method::ALL[(*n + shift) % Method::ALL.len()];
        *n += 1;
        let log_offset = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        method.apply(&self.config, text, pid);
        eprintln!(
            "{:>7.1} s  config edit, {} ({}): {}",
            self.started.elapsed().as_secs_f64(),
            if w.valid { "valid" } else { "INVALID" },
            method.label(),
            w.what
        );
        *self
            .stats
            .methods
            .entry((w.kind, method.label()))
            .or_default() += 1;
        if w.valid {
            self.stats.valid_writes.entry(w.kind).or_default().0 += 1;
        } else {
            self.stats.invalid_writes.0 += 1;
        }
        self.open = Some(Written { log_offset, ..w });
    }

    /// Closes the open write's window: a valid write must have been followed by a `config
    /// reloaded` line, an invalid one by a `reload failed` line. `by_restart`: tokend is
    /// being killed (or died) now; a valid write less than [`RELOAD_SETTLE`] old is then
    /// read by the restart instead of a reload.
    fn close(&mut self, by_restart: bool) {
        let Some(w) = self.open.take() else { return };
        let text = read_from(&self.log, w.log_offset);
        let lines = log_messages(&text);
        let st = &mut self.stats;
        let age = w.at.elapsed();
        if w.valid {
            if lines.iter().any(|l| l.message == "config reloaded") {
                st.valid_writes.entry(w.kind).or_default().1 += 1;
            } else if by_restart && age < RELOAD_SETTLE {
                st.applied_at_restart += 1;
            } else {
                st.not_applied.push(format!(
                    "{}: no `config reloaded` in tokend's log in the {} ms after the write (log bytes {}..)",
                    w.what,
                    age.as_millis(),
                    w.log_offset
                ));
            }
            if let Some(account) = &w.account {
                for l in lines
                    .iter()
                    .filter(|l| l.message == "reload" && l.account.as_deref() == Some(account))
                {
                    st.changes
                        .entry(w.kind)
                        .or_default()
                        .insert(l.change.clone().unwrap_or_default());
                }
            }
        } else if lines.iter().any(|l| l.message.starts_with("reload failed")) {
            st.invalid_writes.1 += 1;
        } else if !by_restart {
            st.not_applied.push(format!(
                "{}: no `reload failed` in tokend's log in the {} ms the invalid config stood (log bytes {}..)",
                w.what,
                age.as_millis(),
                w.log_offset
            ));
        }
    }
}

/// The config edits of a run: what the config is now, what comes next, what is awaited.
struct Edits {
    fleet: Fleet,
    editor: Editor,
    rng: StdRng,
    /// Seconds between edits (`--edit-every`).
    every: (u64, u64),
    /// When the next edit is due.
    next: Instant,
    /// An invalid config is in place: when to write the valid one back.
    restore_at: Option<Instant>,
    /// Edits done (the kind goes round with it), invalid ones, sinks added.
    edits: usize,
    invalid: usize,
    added: usize,
    /// When the removed account was removed.
    removed_since: Option<Instant>,
    awaited: Vec<Awaited>,
    dir: PathBuf,
    tap_url: String,
    daemon: DaemonSpec,
    paths: Arc<Mutex<Vec<(usize, usize, PathBuf)>>>,
}

impl Edits {
    fn interval(&mut self) -> Duration {
        Duration::from_millis(
            self.rng
                .random_range(self.every.0 * 1000..=self.every.1 * 1000),
        )
    }

    /// One tick of the main loop: writes the valid config back after an invalid one, makes
    /// the next edit when it is due and `clear` (of kills and restarts), and checks the
    /// awaited files.
    fn step(
        &mut self,
        now: Instant,
        clear: bool,
        proc_: &Tokend,
        emu: &Emulator,
        tap: &Tap,
        timeline: &Mutex<Timeline>,
    ) {
        if let Some(at) = self.restore_at {
            if now >= at {
                self.restore_at = None;
                let text = self.render();
                self.editor.write(
                    Written {
                        kind: EditKind::Invalid,
                        valid: true,
                        account: None,
                        what: "the valid config back".into(),
                        log_offset: 0,
                        at: Instant::now(),
                    },
                    &text,
                    proc_.pid(),
                );
            }
        } else if now >= self.next && clear {
            self.edit(proc_.pid(), tap.len(), timeline);
            self.next = Instant::now() + self.interval();
        }
        let spawned = proc_.spawned_i;
        let specs = &self.fleet.specs;
        let dir = &self.dir;
        let stats = &mut self.editor.stats;
        self.awaited.retain_mut(|a| {
            let spec = &specs[a.account];
            !settled(
                a,
                now,
                spawned,
                emu,
                tap,
                spec,
                &dir.join(&spec.sinks[0]),
                stats,
            )
        });
    }

    /// At the end: closes the last write's window, and the removed account's span.
    fn finish(&mut self, now: Instant, timeline: &Mutex<Timeline>) {
        self.editor.close(false);
        if let (Some(j), Some(since)) = (self.fleet.removed, self.removed_since) {
            timeline
                .lock()
                .expect("timeline")
                .unconfigured
                .push((j, since, now));
        }
        for a in self.awaited.drain(..) {
            *self.editor.stats.unresolved.entry(a.kind).or_default() += 1;
        }
    }

    fn render(&self) -> String {
        self.fleet.render(&self.tap_url, &self.daemon)
    }

    fn pick(&mut self, except: Option<usize>) -> usize {
        let c = self.fleet.candidates(except);
        c[self.rng.random_range(0..c.len())]
    }

    /// Drops the awaited file of this kind, if any, as unresolved.
    fn give_up(&mut self, kind: EditKind) {
        let before = self.awaited.len();
        self.awaited.retain(|a| a.kind != kind);
        let gone = (before - self.awaited.len()) as u32;
        if gone > 0 {
            *self.editor.stats.unresolved.entry(kind).or_default() += gone;
        }
    }

    /// The next edit, of the next kind in turn.
    fn edit(&mut self, pid: u32, tap_len: usize, timeline: &Mutex<Timeline>) {
        let kind = EditKind::ALL[self.edits % EditKind::ALL.len()];
        self.edits += 1;
        *self.editor.stats.done.entry(kind).or_default() += 1;
        let written = |what: String, account: Option<String>| Written {
            kind,
            valid: true,
            account,
            what,
            log_offset: 0,
            at: Instant::now(),
        };
        match kind {
            EditKind::Timing => {
                let j = self.pick(None);
                let s = &mut self.fleet.specs[j];
                let ratio = if s.ratio == Some(RATIOS.1) {
                    RATIOS.0
                } else {
                    RATIOS.1
                };
                s.ratio = Some(ratio);
                let w = written(format!("{}: ratio = {ratio}", s.name), Some(s.name.clone()));
                self.editor.write(w, &self.render(), pid);
            }
            EditKind::Provider => {
                let j = self.pick(None);
                let s = &mut self.fleet.specs[j];
                let timeout = if s.timeout.as_deref() == Some(TIMEOUT_ALT) {
                    TIMEOUT
                } else {
                    TIMEOUT_ALT
                };
                s.timeout = Some(timeout.to_string());
                let w = written(
                    format!("{}: timeout = \"{timeout}\"", s.name),
                    Some(s.name.clone()),
                );
                self.editor.write(w, &self.render(), pid);
            }
            EditKind::Sinks => match self.fleet.added_sink.take() {
                None => {
                    let j = self.pick(None);
                    self.added += 1;
                    let s = &mut self.fleet.specs[j];
                    let rel = format!("tokens/{}.extra{}.token", s.name, self.added);
                    s.sinks.push(rel.clone());
                    self.fleet.added_sink = Some((j, s.sinks.len() - 1));
                    let w = written(
                        format!("{}: second file sink {rel} added", s.name),
                        Some(s.name.clone()),
                    );
                    self.editor.write(w, &self.render(), pid);
                    let path = self.dir.join(&rel);
                    self.paths
                        .lock()
                        .expect("sink paths")
                        .push((j, SINK_ADDED, path.clone()));
                    self.awaited.push(Awaited {
                        kind,
                        account: j,
                        path,
                        written: Instant::now(),
                        tap_from: tap_len,
                        owed_since: None,
                    });
                }
                Some((j, k)) => {
                    self.give_up(kind);
                    let rel = self.fleet.specs[j].sinks.remove(k);
                    // Stop checking it: it stays on disk, with a token that will expire.
                    let path = self.dir.join(&rel);
                    self.paths
                        .lock()
                        .expect("sink paths")
                        .retain(|(_, _, p)| *p != path);
                    let name = self.fleet.specs[j].name.clone();
                    let w = written(
                        format!("{name}: second file sink {rel} removed"),
                        Some(name.clone()),
                    );
                    self.editor.write(w, &self.render(), pid);
                }
            },
            EditKind::Account => match self.fleet.removed {
                None => {
                    self.give_up(kind);
                    let except = self.fleet.added_sink.map(|(j, _)| j);
                    let j = self.pick(except);
                    self.fleet.removed = Some(j);
                    let name = self.fleet.specs[j].name.clone();
                    self.removed_since = Some(Instant::now());
                    let w = written(
                        format!("{name}: [[account]] block removed"),
                        Some(name.clone()),
                    );
                    self.editor.write(w, &self.render(), pid);
                }
                Some(j) => {
                    self.fleet.removed = None;
                    let name = self.fleet.specs[j].name.clone();
                    let w = written(
                        format!("{name}: [[account]] block added back"),
                        Some(name.clone()),
                    );
                    self.editor.write(w, &self.render(), pid);
                    let now = Instant::now();
                    let since = self.removed_since.take().unwrap_or(now);
                    timeline
                        .lock()
                        .expect("timeline")
                        .unconfigured
                        .push((j, since, now));
                    self.awaited.push(Awaited {
                        kind,
                        account: j,
                        path: self.dir.join(&self.fleet.specs[j].sinks[0]),
                        written: now,
                        tap_from: tap_len,
                        owed_since: None,
                    });
                }
            },
            EditKind::Invalid => {
                self.invalid += 1;
                let valid = self.render();
                let (text, what) = match self.invalid % 3 {
                    1 => (
                        format!("{valid}[[account]\nname = \"broken\"\n"),
                        "syntax error: an unclosed `[[account]` header".to_string(),
                    ),
                    2 => {
                        let j = self.pick(None);
                        let mut specs = self.fleet.specs.clone();
                        specs[j].ratio = Some(1.5);
                        let bad = Fleet {
                            specs,
                            removed: self.fleet.removed,
                            added_sink: self.fleet.added_sink,
                        };
                        (
                            bad.render(&self.tap_url, &self.daemon),
                            format!("validation error: {} ratio = 1.5", self.fleet.specs[j].name),
                        )
                    }
                    _ => (
                        valid.replacen("[daemon]\n", "[daemon]\nlog_formt = \"json\"\n", 1),
                        "unknown key `log_formt` in [daemon]".to_string(),
                    ),
                };
                let w = Written {
                    valid: false,
                    ..written(what, None)
                };
                self.editor.write(w, &text, pid);
                self.restore_at = Some(
                    Instant::now()
                        + Duration::from_millis(
                            self.rng.random_range(INVALID_FOR.0..=INVALID_FOR.1),
                        ),
                );
            }
        }
    }
}

/// Whether the awaited file `a` is settled: it holds a valid token (the time from the edit
/// is recorded), or tokend has had a valid token for it for [`WRITE_GRACE`] and it still
/// does not (recorded as not written). A new sink is owed the token the account's token
/// file holds (tokend writes its current token to new sinks); a re-added account is owed
/// the token of the first OK answer its provider gave after the edit (or the saved token,
/// which its file then holds at once). Not judged during [`RELOAD_SETTLE`] after the edit
/// or [`EDIT_AFTER_SPAWN`] after a restart.
#[allow(clippy::too_many_arguments)]
fn settled(
    a: &mut Awaited,
    now: Instant,
    spawned: Instant,
    emu: &Emulator,
    tap: &Tap,
    spec: &AccountSpec,
    token_file: &Path,
    stats: &mut EditStats,
) -> bool {
    if holds_valid_token(emu, spec.provider, &a.path) {
        stats
            .appeared
            .entry(a.kind)
            .or_default()
            .push(now.duration_since(a.written));
        return true;
    }
    if now < a.written + RELOAD_SETTLE || now < spawned + EDIT_AFTER_SPAWN {
        a.owed_since = None;
        return false;
    }
    let owed_since = match a.kind {
        EditKind::Sinks => {
            if holds_valid_token(emu, spec.provider, token_file) {
                Some(*a.owed_since.get_or_insert(now))
            } else {
                a.owed_since = None;
                None
            }
        }
        _ => tap
            .since(a.tap_from)
            .iter()
            .filter(|r| r.account == spec.name && r.outcome == Outcome::Ok)
            .filter_map(|r| r.answered)
            .min(),
    };
    match owed_since {
        Some(t) if now >= t + WRITE_GRACE => {
            stats.not_written.push(format!(
                "{} ({:?}): {} has no valid token {} ms after the edit, {} ms after tokend had one",
                spec.name,
                a.kind,
                a.path.display(),
                now.duration_since(a.written).as_millis(),
                now.duration_since(t).as_millis()
            ));
            true
        }
        _ => false,
    }
}

/// Whether the file holds exactly `token\n` with a token the emulator deems valid now.
fn holds_valid_token(emu: &Emulator, provider: Provider, path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.strip_suffix('\n').map(str::to_string))
        .is_some_and(|t| !t.is_empty() && emu.token_is_valid(provider, &t))
}

/// The file from byte `offset` on.
fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// One line of tokend's JSON log: the message and, for `reload` lines, the account and
/// the change.
struct LogLine {
    message: String,
    account: Option<String>,
    change: Option<String>,
}

/// The JSON lines of `text` (others, e.g. a line still being written, are skipped).
fn log_messages(text: &str) -> Vec<LogLine> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let f = v.get("fields")?;
            let s = |k: &str| f.get(k).and_then(|x| x.as_str()).map(str::to_string);
            Some(LogLine {
                message: s("message")?,
                account: s("account"),
                change: s("change"),
            })
        })
        .collect()
}

/// Fills the filesystem holding `path` to the last byte.
fn fill(path: &Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    let chunk = [0u8; 512];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&[0u8; 1]);
    let _ = f.sync_all();
}

fn read_loop(
    emu: &Emulator,
    specs: &[AccountSpec],
    paths: &Mutex<Vec<(usize, usize, PathBuf)>>,
    stop: &AtomicBool,
    reads: &Mutex<Reads>,
) {
    while !stop.load(Ordering::SeqCst) {
        let mut r = reads.lock().expect("reads");
        let paths = paths.lock().expect("sink paths");
        for (i, k, path) in paths.iter() {
            let read_at = Instant::now();
            r.total += 1;
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if *k == SINK_ADDED {
                        r.missing_added += 1;
                    } else {
                        r.missing += 1;
                    }
                    continue;
                }
                Err(e) => panic!("cannot read {}: {e}", path.display()),
            };
            if bytes.is_empty() {
                r.empty += 1;
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            let Some(token) = text
                .strip_suffix('\n')
                .filter(|t| !t.is_empty() && !t.contains('\n'))
            else {
                r.torn += 1;
                continue;
            };
            let provider = specs[*i].provider;
            if emu.token_is_valid(provider, token) {
                r.valid += 1;
                continue;
            }
            // Expiry first: a token can be both revoked and expired, and an expired one
            // served is what must not happen.
            match emu.access_token_info(provider, token) {
                None => r.unknown += 1,
                Some(info) if info.expires_at > read_at && info.revoked => {
                    *r.revoked.entry((*i, *k, token.to_string())).or_default() += 1;
                }
                Some(info) if info.expires_at > read_at => r.expired_while_checking += 1,
                Some(info) => {
                    r.expired
                        .entry((*i, *k, token.to_string()))
                        .or_insert(ExpiredRead {
                            first_read: read_at,
                            expires_at: info.expires_at,
                            reads: 0,
                        })
                        .reads += 1;
                }
            }
        }
        drop(paths);
        drop(r);
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[derive(Debug, Default)]
struct Verdicts {
    violations: Vec<String>,
    unreachable: (u64, u64),
    down: (u64, u64),
    full: (u64, u64),
    unconfigured: (u64, u64),
}

/// Sorts every expired token served into excused or violation. A token of account A
/// expiring at E, read at t ≥ E, is excused when
/// - it was read from the tmpfs sink and the tmpfs was full at some time in [E − 4 s, t]
///   (the write of its successor could not be done), or
/// - tokend was not running (killed by the harness) at some time in [E − 4 s, E], or
/// - A was not in the config (removed by an edit) at some time in [E − 4 s, t], or
/// - A's provider was unreachable through the retry window: tokend sent A's provider at
///   least one request in [E − 4 s, E) and none was answered OK before E.
///
/// Otherwise (an OK answer came before E, or tokend sent nothing in the window) it is a
/// violation.
fn judge(reads: &Reads, tl: &Timeline, records: &[Record], specs: &[AccountSpec]) -> Verdicts {
    let mut v = Verdicts::default();
    let overlaps = |spans: &[(Instant, Instant)], a: Instant, b: Instant| {
        spans.iter().any(|(s, e)| *s <= b && *e >= a)
    };
    let mut by_account: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in records {
        by_account.entry(r.account.as_str()).or_default().push(r);
    }
    for ((i, k, _), e) in &reads.expired {
        let from = e.expires_at - RETRY_WINDOW;
        let name = specs[*i].name.as_str();
        if *k == SINK_TMPFS && overlaps(&tl.full, from, e.first_read) {
            v.full.0 += 1;
            v.full.1 += e.reads;
            continue;
        }
        if overlaps(&tl.down, from, e.expires_at) {
            v.down.0 += 1;
            v.down.1 += e.reads;
            continue;
        }
        if tl
            .unconfigured
            .iter()
            .any(|(j, s, u)| j == i && *s <= e.first_read && *u >= from)
        {
            v.unconfigured.0 += 1;
            v.unconfigured.1 += e.reads;
            continue;
        }
        let sent: Vec<&&Record> = by_account
            .get(name)
            .map(|rs| {
                rs.iter()
                    .filter(|r| r.arrived >= from && r.arrived < e.expires_at)
                    .collect()
            })
            .unwrap_or_default();
        let ok_before = sent
            .iter()
            .find(|r| r.outcome == Outcome::Ok && r.answered.is_some_and(|a| a < e.expires_at));
        match ok_before {
            None if !sent.is_empty() => {
                v.unreachable.0 += 1;
                v.unreachable.1 += e.reads;
            }
            _ => v.violations.push(format!(
                "{name} sink {k}: token expired, read {} ms after expiry ({} reads); requests in the retry window: {:?}",
                e.first_read.duration_since(e.expires_at).as_millis(),
                e.reads,
                sent.iter()
                    .map(|r| (r.path.clone(), r.outcome, e.expires_at.saturating_duration_since(r.arrived).as_millis()))
                    .collect::<Vec<_>>()
            )),
        }
    }
    v
}

/// The most requests one account sent in any 60 s during an outage of its provider, and
/// the mean per account per minute over all outages.
fn outage_peaks(tl: &Timeline, records: &[Record], specs: &[AccountSpec]) -> (usize, f64) {
    let mut peak = 0;
    let (mut total, mut account_minutes) = (0usize, 0.0f64);
    for (p, from, to) in &tl.outages {
        for s in specs.iter().filter(|s| s.provider == *p) {
            let times: Vec<Instant> = records
                .iter()
                .filter(|r| r.account == s.name && r.arrived >= *from && r.arrived <= *to)
                .map(|r| r.arrived)
                .collect();
            total += times.len();
            account_minutes += to.duration_since(*from).as_secs_f64() / 60.0;
            for (j, t) in times.iter().enumerate() {
                let in_minute = times[j..]
                    .iter()
                    .take_while(|u| u.duration_since(*t) < Duration::from_secs(60))
                    .count();
                peak = peak.max(in_minute);
            }
        }
    }
    (peak, total as f64 / account_minutes.max(f64::MIN_POSITIVE))
}
