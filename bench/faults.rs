//! `cargo bench --bench faults -- --minutes N`: the fault harness (docs/BENCHMARKS.md).
//! The real release `tokend run` keeps accounts of every emulated provider fresh for N
//! minutes while everything goes wrong at once:
//! - random provider faults on every token request (5xx, 429 with `Retry-After`, answers
//!   slower than the account's timeout, dropped connections, garbage bodies, GraphQL
//!   errors), plus full outages of one provider at a time;
//! - SIGKILL of tokend at random moments, restarted at once;
//! - a sink directory on a 64 KiB tmpfs that is filled to the last byte and freed again;
//! - a reader that reads every token file over and over and checks each read against the
//!   emulator.
//!
//! It prints reads done, torn or empty reads (must be 0), expired tokens served while the
//! provider was reachable (must be 0; the exact rule is in docs/BENCHMARKS.md and
//! [`judge`]), spent refresh tokens reused (must be 0, from the emulator), and the peak
//! requests per account per minute during an outage. Exit status 1 when a must-be-0
//! figure is not 0.
//!
//! Options: `--minutes N` (default 10), `--accounts N` (default 24, spread over the six
//! providers), `--fault-rate R` (default 0.2), `--seed S`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use common::fleet_config::{self, AccountSpec, DaemonSpec};
use common::machine;
use common::process::Tokend;
use common::report::Table;
use common::tap::{Outcome, Record, Tap};
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

/// What the reader saw.
#[derive(Debug, Default)]
struct Reads {
    total: u64,
    missing: u64,
    empty: u64,
    torn: u64,
    unknown: u64,
    valid: u64,
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
}

/// Unmounts the tmpfs on drop, whatever happened.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

fn main() -> ExitCode {
    let minutes: f64 = common::arg("--minutes").map_or(10.0, |v| v.parse().expect("--minutes N"));
    let n: usize = common::arg("--accounts").map_or(24, |v| v.parse().expect("--accounts N"));
    let rate: f64 = common::arg("--fault-rate").map_or(0.2, |v| v.parse().expect("--fault-rate R"));
    let seed: u64 = common::arg("--seed").map_or(7, |v| v.parse().expect("--seed S"));
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let dir = common::scratch_dir("faults");
    let load_before = machine::load_string();
    println!("## Machine\n\n{}", machine::describe(&dir));
    println!(
        "fault harness: {minutes} min, {n} accounts, fault rate {rate}, seed {seed}, load {load_before}\n"
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
    std::fs::create_dir_all(&full_dir).expect("create tmpfs dir");
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&full_dir)
        .output();
    let (mount, mount_note) = match mount {
        Ok(o) if o.status.success() => (Some(Mount(full_dir.clone())), "64 KiB tmpfs".to_string()),
        Ok(o) => (
            None,
            format!(
                "NOT exercised: mount failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => (None, format!("NOT exercised: cannot run mount: {e}")),
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
    // Not next to the config: tokend watches the config's directory.
    let log = dir.with_extension("log");
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
            unexpected_exits += 1;
            eprintln!(
                "tokend exited on its own; restarting (see {})",
                log.display()
            );
            proc_ = Tokend::spawn(&config, &log, None);
        }
        if now >= next_kill {
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
    }
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
        "reads of a token expiring between read and check",
        reads.expired_while_checking.to_string(),
        "",
    );
    for (k, sink) in [(0, "token sink"), (1, "tmpfs sink")] {
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
    let failed = reads.torn + reads.empty + reads.unknown + reuses + unexpected_exits as u64 > 0
        || !verdicts.violations.is_empty();
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
    paths: &[(usize, usize, PathBuf)],
    stop: &AtomicBool,
    reads: &Mutex<Reads>,
) {
    while !stop.load(Ordering::SeqCst) {
        let mut r = reads.lock().expect("reads");
        for (i, k, path) in paths {
            let read_at = Instant::now();
            r.total += 1;
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    r.missing += 1;
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
}

/// Sorts every expired token served into excused or violation. A token of account A
/// expiring at E, read at t ≥ E, is excused when
/// - it was read from the tmpfs sink and the tmpfs was full at some time in [E − 4 s, t]
///   (the write of its successor could not be done), or
/// - tokend was not running (killed by the harness) at some time in [E − 4 s, E], or
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
        if *k == 1 && overlaps(&tl.full, from, e.first_read) {
            v.full.0 += 1;
            v.full.1 += e.reads;
            continue;
        }
        if overlaps(&tl.down, from, e.expires_at) {
            v.down.0 += 1;
            v.down.1 += e.reads;
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
