//! `cargo bench --bench ha`: several real release `tokend run` instances sharing one
//! rotating Zarv account (the in-process emulator, short token lifetimes) through a real
//! OpenBao coordination store (issue 14, docs/HA.md). Prints Markdown tables
//! (docs/BENCHMARKS.md "Several instances") and writes them to
//! `target/tmp/tokend-bench/ha-report.md`:
//!
//! 1. **Failover after the claimer dies.** With 2 and 3 instances and each `claim_ttl`,
//!    the record at `secret/data/<prefix>/zarv` is polled with the root token until a
//!    claim appears; the claiming instance is SIGKILLed at once. Measured from the kill:
//!    until the record's generation increases (another instance committed), and until
//!    every surviving instance's file sink holds a newer token. The killed instance is
//!    then restarted (same state dir and name) and the next kill waits for the next claim.
//! 2. **Provider requests per refresh** over a steady window: emulator logins + refreshes
//!    divided by the generations committed (for one instance without coordination: by the
//!    tokens issued), with `spent_refresh_reuses` (must be 0).
//! 3. **Store requests per refresh**: the instances' `tokend_coordination_store_requests_total`
//!    (scraped from `/metrics`) summed, divided by the generations committed.
//!
//! Options: `--window SECS` (steady window, default 45), `--kills N` (per cluster with the
//! first claim_ttl, default 10), `--kills-long N` (per cluster with the other claim_ttls,
//! default 6: each takes about claim_ttl + one refresh interval), `--lifetime SECS` (access
//! token lifetime, default 5), `--ttls 3,10` (claim_ttl values in seconds, fractions
//! allowed, at least 3), `--instances 2,3`. Every wait is bounded; with the defaults the
//! run takes about 10 minutes.

mod common;
#[path = "common/openbao.rs"]
mod openbao;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::machine;
use common::process::Tokend;
use common::report::{Table, num, percentile};
use openbao::OpenBao;
use tokend::emulator::{Emulator, Options, PASSWORD, Provider, USERNAME};

/// The one account every instance shares.
const ACCOUNT: &str = "zarv";
/// The account's per-request timeout (`timeout = "1s"`).
const TIMEOUT_S: u64 = 1;

fn main() {
    let window = Duration::from_secs(parse_or("--window", 45));
    let kills = parse_or("--kills", 10) as usize;
    let kills_long = parse_or("--kills-long", 6) as usize;
    let lifetime = Duration::from_secs(parse_or("--lifetime", 5));
    // claim_ttl values, in ms (`--ttls` takes seconds, fractions allowed: `2.9,10`).
    let ttls: Vec<u64> = common::arg("--ttls").map_or_else(
        || vec![3000, 10_000],
        |v| {
            v.split(',')
                .map(|s| {
                    let secs: f64 = s.trim().parse().expect("a list of seconds");
                    (secs * 1000.0).round() as u64
                })
                .collect()
        },
    );
    let sizes: Vec<usize> = list_or("--instances", &[2, 3])
        .into_iter()
        .map(|n| n as usize)
        .collect();
    let started = Instant::now();
    let root = common::scratch_dir("ha");
    let mut out = String::new();
    out.push_str("## Machine\n\n");
    out.push_str(&machine::describe(&root));
    out.push_str(&format!(
        "\ntokend binary: `{}`; load before: {}\n\n",
        common::process::tokend_binary().display(),
        machine::load_string()
    ));
    println!("{out}");
    let bao = OpenBao::start(&root);

    // Steady windows: one instance alone (the baseline), then 1..3 sharing the account.
    let mut steady = Vec::new();
    let mut failovers = Vec::new();
    let first_ttl = ttls.first().copied().unwrap_or(3000);
    let mut setups = vec![(1, false), (1, true)];
    setups.extend(sizes.iter().map(|&n| (n, true)));
    for (n, coordinated) in setups {
        let name = format!("n{n}-{}", if coordinated { "shared" } else { "alone" });
        let mut cluster =
            Cluster::start(&root.join(&name), &bao, n, coordinated, first_ttl, lifetime);
        let s = cluster.steady(window);
        eprintln!("{s:?}");
        steady.push(s);
        if coordinated && n >= 2 && kills > 0 {
            let f = cluster.failovers(kills);
            eprintln!("{f:?}");
            failovers.push(f);
        }
        cluster.stop();
    }
    // The other claim TTLs: failover only.
    for &ttl in ttls.iter().skip(1) {
        for &n in &sizes {
            let name = format!("n{n}-ttl{ttl}ms");
            let mut cluster = Cluster::start(&root.join(&name), &bao, n, true, ttl, lifetime);
            let f = cluster.failovers(kills_long);
            eprintln!("{f:?}");
            failovers.push(f);
            cluster.stop();
        }
    }
    let report = render(&steady, &failovers, lifetime, window, started.elapsed());
    out.push_str(&report);
    println!("{report}");
    let path = root.parent().expect("scratch parent").join("ha-report.md");
    std::fs::write(&path, &out).expect("write report");
    println!("(written to {})", path.display());
}

fn parse_or(name: &str, default: u64) -> u64 {
    common::arg(name).map_or(default, |v| v.parse().expect("a number"))
}

fn list_or(name: &str, default: &[u64]) -> Vec<u64> {
    common::arg(name).map_or_else(
        || default.to_vec(),
        |v| {
            v.split(',')
                .map(|s| s.trim().parse().expect("a list of numbers"))
                .collect()
        },
    )
}

/// One tokend instance: its files and, while it runs, its process.
struct Instance {
    name: String,
    config: PathBuf,
    log: PathBuf,
    sink: PathBuf,
    process: Option<Tokend>,
    /// The `/metrics` port of the running process.
    port: Option<u16>,
}

impl Instance {
    /// Starts (or restarts) the process; the log is appended to.
    fn spawn(&mut self) {
        let offset = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let process = Tokend::spawn(&self.config, &self.log, None);
        let mut port = None;
        let found = common::wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            port = process
                .log_since(offset)
                .lines()
                .find(|l| l.contains("serving /metrics"))
                .and_then(|l| l.split("addr=127.0.0.1:").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse().ok());
            port.is_some()
        });
        assert!(
            found,
            "{} did not serve /metrics: {}",
            self.name,
            self.log.display()
        );
        self.port = port;
        self.process = Some(process);
    }

    fn token(&self) -> Option<String> {
        std::fs::read_to_string(&self.sink)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }
}

/// What the record shows.
#[derive(Debug, Clone, Default)]
struct Seen {
    generation: u64,
    claim: Option<String>,
    access_token: Option<String>,
    expires_at_ms: u64,
}

/// N instances on one prefix (or one instance without coordination).
struct Cluster<'a> {
    bao: &'a OpenBao,
    emu: Emulator,
    prefix: String,
    instances: Vec<Instance>,
    coordinated: bool,
    claim_ttl: Duration,
    lifetime: Duration,
}

/// A steady window's figures.
#[derive(Debug, Default, Clone)]
struct Steady {
    instances: usize,
    coordinated: bool,
    claim_ttl_ms: u64,
    wall_s: f64,
    generations: u64,
    logins: u64,
    refreshes: u64,
    reuses: u64,
    reads: f64,
    writes: f64,
    won: f64,
    lost: f64,
    stale: f64,
    adopted: f64,
    load: String,
}

/// A kill series' figures.
#[derive(Debug, Default, Clone)]
struct Failovers {
    instances: usize,
    claim_ttl_ms: u64,
    /// Seconds from the kill to the next generation, per kill that counted.
    commit: Vec<f64>,
    /// Seconds from the kill until every survivor's sink held a newer token.
    sinks: Vec<f64>,
    /// Seconds every survivor's sink held an expired token (0 when none).
    expired_gap: Vec<f64>,
    /// Kills that landed after the claimer had committed (excluded).
    too_late: usize,
    /// Claims seen on no kill (missed: the claim came and went between two polls).
    missed_claims: usize,
    /// Takeovers that logged in (the killed claimer may have spent the refresh token).
    logins: usize,
    stale_claims: f64,
    reuses: u64,
    all_valid_at_end: bool,
    wall_s: f64,
    load: String,
}

impl<'a> Cluster<'a> {
    fn start(
        dir: &Path,
        bao: &'a OpenBao,
        n: usize,
        coordinated: bool,
        ttl_ms: u64,
        lifetime: Duration,
    ) -> Cluster<'a> {
        std::fs::create_dir_all(dir).expect("create cluster dir");
        let emu = Emulator::start(Options {
            access_lifetime: lifetime,
            ..Options::default()
        })
        .expect("start emulator");
        let prefix = format!(
            "bench/{}",
            dir.file_name().and_then(|s| s.to_str()).unwrap_or("ha")
        );
        let instances = (0..n)
            .map(|i| {
                let name = format!("instance-{i}");
                let config = dir.join(format!("tokend-{i}.toml"));
                let sink = dir.join(format!("token-{i}"));
                let coordination = if coordinated {
                    format!(
                        "[daemon.coordination]\nstore = \"vault\"\naddress = \"{}\"\nmount = \"secret\"\nprefix = \"{prefix}\"\nauth = {{ token = \"root\" }}\nclaim_ttl = \"{ttl_ms}ms\"\ninstance = \"{name}\"\n",
                        bao.addr()
                    )
                } else {
                    String::new()
                };
                let text = format!(
                    r#"[daemon]
state_dir = "{state}"
log_format = "text"
listen = "127.0.0.1:0"
[daemon.refresh]
min_margin = "1s"
{coordination}
[[account]]
name = "{ACCOUNT}"
provider = "zarv"
base_url = "{base}"
username = "{USERNAME}"
password = "{PASSWORD}"
timeout = "{TIMEOUT_S}s"
[[account.sink]]
type = "file"
path = "{sink}"
format = "raw"
"#,
                    state = dir.join(format!("state-{i}")).display(),
                    base = emu.base_url(Provider::Zarv),
                    sink = sink.display(),
                );
                std::fs::write(&config, text).expect("write config");
                std::fs::set_permissions(
                    &config,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod config");
                Instance {
                    name,
                    config,
                    log: dir.join(format!("tokend-{i}.log")),
                    sink,
                    process: None,
                    port: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            bao,
            emu,
            prefix,
            instances,
            coordinated,
            claim_ttl: Duration::from_millis(ttl_ms),
            lifetime,
        };
        for i in &mut cluster.instances {
            i.spawn();
        }
        cluster.settle(Duration::from_secs(60));
        cluster
    }

    fn record(&self) -> Seen {
        let Some((_, data)) = self
            .bao
            .read_kv("secret", &format!("{}/{ACCOUNT}", self.prefix))
        else {
            return Seen::default();
        };
        Seen {
            generation: data["generation"].as_u64().unwrap_or(0),
            claim: data["claim"]["instance"].as_str().map(str::to_string),
            access_token: data["tokens"]["access_token"].as_str().map(str::to_string),
            expires_at_ms: data["tokens"]["expires_at_ms"].as_u64().unwrap_or(0),
        }
    }

    /// How many tokens were committed so far: the record's generation, or (one instance
    /// without a store) the tokens the emulator issued.
    fn generation(&self) -> u64 {
        if self.coordinated {
            self.record().generation
        } else {
            self.emu.stats(Provider::Zarv).issued
        }
    }

    /// Waits until every running instance's sink holds the newest token.
    fn settle(&self, timeout: Duration) {
        let ok = common::wait_until(timeout, Duration::from_millis(20), || {
            let newest = if self.coordinated {
                self.record().access_token
            } else {
                self.instances[0].token()
            };
            newest.is_some()
                && self
                    .emu
                    .token_is_valid(Provider::Zarv, newest.as_deref().unwrap_or(""))
                && self
                    .instances
                    .iter()
                    .filter(|i| i.process.is_some())
                    .all(|i| i.token() == newest)
        });
        assert!(
            ok,
            "the instances did not settle on one valid token within {timeout:?}"
        );
    }

    /// Waits (bounded) for the count of committed tokens to move past `from`.
    fn next_generation(&self, from: u64, timeout: Duration) -> u64 {
        let mut g = from;
        let ok = common::wait_until(timeout, Duration::from_millis(10), || {
            g = self.generation();
            g > from
        });
        assert!(ok, "no new token within {timeout:?}");
        g
    }

    /// Sums a metric over the running instances' `/metrics` (lines of `metric` carrying
    /// every one of `labels`).
    fn metric(&self, metric: &str, labels: &[&str]) -> f64 {
        (0..self.instances.len())
            .filter_map(|i| self.instance_metric(i, metric, labels))
            .sum()
    }

    /// [`Cluster::metric`] of instance `i`; `None` when it is not running.
    fn instance_metric(&self, i: usize, metric: &str, labels: &[&str]) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.instances[i].port?);
        let (_, body) = self.bao.get(&url, None)?;
        Some(sum_metric(&body, metric, labels))
    }

    /// Per instance: its `tokend_coordination_claims_total{result="stale"}`.
    fn stale_claims(&self) -> Vec<Option<f64>> {
        (0..self.instances.len())
            .map(|i| {
                self.instance_metric(i, "tokend_coordination_claims_total", &["result=\"stale\""])
            })
            .collect()
    }

    fn counters(&self) -> [f64; 6] {
        let claims = "tokend_coordination_claims_total";
        [
            self.metric("tokend_coordination_store_requests_total", &["op=\"read\""]),
            self.metric(
                "tokend_coordination_store_requests_total",
                &["op=\"write\""],
            ),
            self.metric(claims, &["result=\"won\""]),
            self.metric(claims, &["result=\"lost\""]),
            self.metric(claims, &["result=\"stale\""]),
            self.metric("tokend_coordination_adopted_total", &[]),
        ]
    }

    /// A window of at least `window`, starting and ending halfway between two commits
    /// (so the followers' reads after a commit fall inside it), with nothing killed.
    fn steady(&mut self, window: Duration) -> Steady {
        let bound = self.lifetime * 3 + self.claim_ttl * 2;
        let half = self.lifetime.mul_f64(0.3);
        let g = self.generation();
        self.next_generation(g, bound);
        std::thread::sleep(half);
        let (g0, s0, c0, t0) = (
            self.generation(),
            self.emu.stats(Provider::Zarv),
            self.counters(),
            Instant::now(),
        );
        std::thread::sleep(window);
        let g = self.generation();
        self.next_generation(g, bound);
        std::thread::sleep(half);
        let (g1, s1, c1, t1) = (
            self.generation(),
            self.emu.stats(Provider::Zarv),
            self.counters(),
            Instant::now(),
        );
        Steady {
            instances: self.instances.len(),
            coordinated: self.coordinated,
            claim_ttl_ms: self.claim_ttl.as_millis() as u64,
            wall_s: (t1 - t0).as_secs_f64(),
            generations: g1 - g0,
            logins: s1.logins - s0.logins,
            refreshes: s1.refreshes - s0.refreshes,
            reuses: s1.spent_refresh_reuses,
            reads: c1[0] - c0[0],
            writes: c1[1] - c0[1],
            won: c1[2] - c0[2],
            lost: c1[3] - c0[3],
            stale: c1[4] - c0[4],
            adopted: c1[5] - c0[5],
            load: machine::load_string(),
        }
    }

    /// `kills` times: SIGKILL the instance holding the claim, time the takeover, restart it.
    fn failovers(&mut self, kills: usize) -> Failovers {
        let started = Instant::now();
        let mut f = Failovers {
            instances: self.instances.len(),
            claim_ttl_ms: self.claim_ttl.as_millis() as u64,
            ..Failovers::default()
        };
        // A claim comes once per refresh interval (< lifetime); a few may be missed.
        let claim_bound = self.lifetime * 4 + self.claim_ttl;
        let takeover_bound = self.claim_ttl * 3 + self.lifetime * 2;
        for _ in 0..kills {
            // Poll until a claim shows, and kill its holder at once.
            let deadline = Instant::now() + claim_bound;
            let mut last_generation = self.record().generation;
            let (before, holder) = loop {
                assert!(
                    Instant::now() < deadline,
                    "no claim seen within {claim_bound:?}"
                );
                let seen = self.record();
                if let Some(holder) = seen.claim.as_deref()
                    && let Some(i) = self.instances.iter().position(|i| i.name == holder)
                {
                    break (seen, i);
                }
                if seen.generation > last_generation {
                    f.missed_claims += 1;
                    last_generation = seen.generation;
                }
                // A claim lasts a Vault write and read, one provider call and an fsync.
                std::thread::sleep(Duration::from_millis(2));
            };
            let logins_before = self.emu.stats(Provider::Zarv).logins;
            let stale_before = self.stale_claims();
            let old_token = before.access_token.clone();
            if let Some(p) = &mut self.instances[holder].process {
                p.kill9();
            }
            let killed = Instant::now();
            self.instances[holder].process = None;
            self.instances[holder].port = None;
            // The old token's expiry, on this machine's clock (the writer's).
            let expiry = UNIX_EPOCH + Duration::from_millis(before.expires_at_ms);
            let expires_in = expiry
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let expires = killed + expires_in;
            // Until another instance commits.
            let mut committed = None;
            let ok = common::wait_until(takeover_bound, Duration::from_millis(5), || {
                if self.record().generation > before.generation {
                    committed = Some(killed.elapsed());
                }
                committed.is_some()
            });
            assert!(ok, "no takeover within {takeover_bound:?} after the kill");
            let commit = committed.expect("waited for it");
            // Until every survivor's sink holds a newer token.
            let mut published = None;
            let ok = common::wait_until(takeover_bound, Duration::from_millis(5), || {
                let done = self
                    .instances
                    .iter()
                    .filter(|i| i.process.is_some())
                    .all(|i| i.token().is_some() && i.token() != old_token);
                if done {
                    published = Some(killed.elapsed());
                }
                done
            });
            assert!(
                ok,
                "the survivors' sinks did not move on within {takeover_bound:?}"
            );
            let sinks = published.expect("waited for it");
            if commit < self.claim_ttl / 2 {
                // The claimer committed before SIGKILL landed: not a failover.
                f.too_late += 1;
            } else {
                f.commit.push(commit.as_secs_f64());
                f.sinks.push(sinks.as_secs_f64());
                let published_at = killed + sinks;
                f.expired_gap.push(
                    published_at
                        .saturating_duration_since(expires)
                        .as_secs_f64(),
                );
                if self.emu.stats(Provider::Zarv).logins > logins_before {
                    f.logins += 1;
                }
            }
            eprintln!(
                "kill {} (held the claim at generation {}): commit after {:.3} s, sinks after {:.3} s",
                self.instances[holder].name,
                before.generation,
                commit.as_secs_f64(),
                sinks.as_secs_f64()
            );
            // Stale claims the survivors counted (the metric, as an operator sees it).
            for (after, before) in self.stale_claims().iter().zip(&stale_before) {
                if let (Some(a), Some(b)) = (after, before) {
                    f.stale_claims += a - b;
                }
            }
            // Back to N instances before the next kill.
            self.instances[holder].spawn();
            self.settle(self.lifetime * 3 + self.claim_ttl * 2);
        }
        let stats = self.emu.stats(Provider::Zarv);
        f.reuses = stats.spent_refresh_reuses;
        f.all_valid_at_end = self.instances.iter().all(|i| {
            i.token()
                .is_some_and(|t| self.emu.token_is_valid(Provider::Zarv, &t))
        });
        f.wall_s = started.elapsed().as_secs_f64();
        f.load = machine::load_string();
        f
    }

    fn stop(&mut self) {
        for i in &mut self.instances {
            if let Some(mut p) = i.process.take() {
                p.terminate(Duration::from_secs(10));
            }
        }
    }
}

/// The sum of the values of `metric`'s samples whose labels contain all of `labels`.
fn sum_metric(body: &str, metric: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            (name == metric && labels.iter().all(|x| series.contains(x)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

fn min_med_max(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{} / {} / {}",
        num(min, 2),
        num(percentile(v, 50.0), 2),
        num(max, 2)
    )
}

fn per(x: f64, generations: u64) -> String {
    if generations == 0 {
        "–".into()
    } else {
        num(x / generations as f64, 2)
    }
}

fn render(
    steady: &[Steady],
    failovers: &[Failovers],
    lifetime: Duration,
    window: Duration,
    took: Duration,
) -> String {
    let mut out = format!(
        "## Several instances sharing one Zarv account\n\nAccess tokens live {} s (refresh due at about 75 %), `timeout = \"{TIMEOUT_S}s\"`, `min_margin = \"1s\"`; a real OpenBao dev server; steady windows of at least {} s. The whole run took {:.0} s.\n\n",
        lifetime.as_secs(),
        window.as_secs(),
        took.as_secs_f64()
    );
    out.push_str("### Failover after the claimer is SIGKILLed\n\nSeconds from the SIGKILL (sent as soon as the record showed a claim) until another instance committed the next generation, and until every surviving instance's file sink held a newer token: min / median / max.\n\n");
    let mut t = Table::new(&[
        "instances",
        "claim_ttl",
        "recheck (effective)",
        "kills measured",
        "kill after commit",
        "takeover by login",
        "next generation (s)",
        "median − claim_ttl (s)",
        "all survivors' sinks (s)",
        "sinks on an expired token (s, max)",
        "stale claims (metric)",
        "spent refresh reuses",
        "sinks valid at end",
        "load after",
    ]);
    for f in failovers {
        let ttl = f.claim_ttl_ms as f64 / 1000.0;
        // `coordination::decide::recheck`, but attempts stay at least 1 s apart (policy).
        let recheck = (ttl / 4.0).clamp(0.25, 1.0).max(1.0);
        t.row(&[
            f.instances.to_string(),
            format!("{ttl} s"),
            format!("{recheck:.2} s"),
            f.commit.len().to_string(),
            f.too_late.to_string(),
            f.logins.to_string(),
            min_med_max(&f.commit),
            num(percentile(&f.commit, 50.0) - ttl, 2),
            min_med_max(&f.sinks),
            num(f.expired_gap.iter().copied().fold(0.0, f64::max), 2),
            num(f.stale_claims, 0),
            f.reuses.to_string(),
            if f.all_valid_at_end { "yes" } else { "**no**" }.into(),
            f.load.clone(),
        ]);
    }
    out.push_str(t.render());
    out.push_str("\n### Provider and store requests per refresh (steady, no kills)\n\nPer committed generation (for one instance without coordination: per token issued).\n\n");
    let mut t = Table::new(&[
        "instances",
        "coordination",
        "window (s)",
        "refreshes",
        "logins",
        "refresh requests",
        "provider requests / refresh",
        "spent refresh reuses",
        "store reads / refresh",
        "store writes / refresh",
        "claims won / lost / stale",
        "adopted / refresh",
        "load after",
    ]);
    for s in steady {
        t.row(&[
            s.instances.to_string(),
            if s.coordinated {
                format!("OpenBao, claim_ttl {} s", s.claim_ttl_ms as f64 / 1000.0)
            } else {
                "none".into()
            },
            num(s.wall_s, 0),
            s.generations.to_string(),
            s.logins.to_string(),
            s.refreshes.to_string(),
            per((s.logins + s.refreshes) as f64, s.generations),
            s.reuses.to_string(),
            if s.coordinated {
                per(s.reads, s.generations)
            } else {
                "–".into()
            },
            if s.coordinated {
                per(s.writes, s.generations)
            } else {
                "–".into()
            },
            if s.coordinated {
                format!(
                    "{} / {} / {}",
                    num(s.won, 0),
                    num(s.lost, 0),
                    num(s.stale, 0)
                )
            } else {
                "–".into()
            },
            if s.coordinated {
                per(s.adopted, s.generations)
            } else {
                "–".into()
            },
            s.load.clone(),
        ]);
    }
    out.push_str(t.render());
    out
}
