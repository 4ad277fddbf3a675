//! Several tokend instances sharing accounts through a coordination store (issue 14,
//! SPEC §3 `[daemon.coordination]`, docs/HA.md), against a real OpenBao, the real binary
//! and the loopback emulator with Zarv's rule: a reused refresh token revokes its family.
//!
//! The five tests of the issue: three instances under random SIGKILLs, the store sealed,
//! two clocks 30 s apart, a stale writer that must not roll the store back, and one
//! instance partitioned from the store. Then the small tests of their machinery: the
//! emulator's family revocation over HTTP, the partition proxy, libfaketime, and the
//! record helper against a sealed and unsealed OpenBao.
//!
//! What the tests look at: the emulator's counters (every provider request, every reuse,
//! every family revoked), the record in the store, each instance's token file judged by
//! `whoami`, `status --json` and the metrics; every provider request must match a committed
//! generation. Never log lines. Tokens live a few seconds; conditions are awaited. The fixed waits are
//! the chaos schedule of the kill test and observation windows that prove something does
//! *not* happen, each ended by a token's own expiry.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde_json::json;
use tokend::emulator::{Emulator, Fault, Options, PASSWORD, Provider, USERNAME};

use crate::support::faketime;
use crate::support::ha::{Cluster, ClusterSpec, MOUNT, Record, file_token, read_record, runtime};
use crate::support::moto::Moto;
use crate::support::openbao::OpenBao;
use crate::support::process::TokendProcess;
use crate::support::proxy::{Link, Proxy};
use crate::support::{TestDir, test_seed, wait_for};

/// Generous bound for anything awaited on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);
/// How often the observation loops look.
const TICK: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

/// An emulator whose access tokens live `lifetime` (Zarv: refresh tokens rotate, and a
/// reuse revokes the family). The instances refresh at half the lifetime (SPEC §4:
/// `min_margin` is capped at half of it), so one instance makes one request per
/// `lifetime / 2`.
fn emulator(lifetime: Duration) -> Emulator {
    let emu = Emulator::start(Options {
        access_lifetime: lifetime,
        fault_seed: test_seed("emulator faults"),
        ..Options::default()
    })
    .expect("start the emulator");
    eprintln!("emulator on {}", emu.addr());
    emu
}

/// OpenBao, the emulator and a cluster of instances (not yet started).
struct Fixture {
    rt: tokio::runtime::Runtime,
    bao: OpenBao,
    emu: Emulator,
    cluster: Cluster,
    lifetime: Duration,
    /// When set, every read of the record also checks that nothing went backwards.
    monitor: std::cell::RefCell<Option<Monotonic>>,
}

impl Fixture {
    fn new(
        name: &str,
        lifetime: Duration,
        spec: ClusterSpec,
        n: usize,
        skews: &[Option<&str>],
    ) -> Fixture {
        let rt = runtime();
        let bao = rt.block_on(OpenBao::start(name));
        let emu = emulator(lifetime);
        let cluster = Cluster::new(name, &bao, &emu, spec, n, skews);
        Fixture {
            rt,
            bao,
            emu,
            cluster,
            lifetime,
            monitor: std::cell::RefCell::new(None),
        }
    }

    /// One refresh interval of a single instance.
    fn interval(&self) -> Duration {
        self.lifetime / 2
    }

    fn record(&self) -> Option<Record> {
        let record = read_record(
            &self.rt,
            &self.bao,
            &self.cluster.spec.prefix,
            &self.cluster.spec.account,
        );
        if let Some(monitor) = self.monitor.borrow_mut().as_mut() {
            monitor.record(record.as_ref(), &self.emu);
            let vault = self
                .rt
                .block_on(self.bao.read_secret(MOUNT, &monitor.sink_path));
            monitor.sink("vault", vault.map(|(_, doc)| doc), &self.emu);
            let aws = self.rt.block_on(monitor.aws_document());
            monitor.sink("aws", aws, &self.emu);
        }
        record
    }

    fn generation(&self) -> u64 {
        self.record().map_or(0, |r| r.generation())
    }

    /// Whether the emulator's protected resource accepts `token` (HTTP, as an app would).
    fn whoami(&self, token: &str) -> bool {
        let url = self.emu.whoami_url(Provider::Zarv);
        self.rt.block_on(async {
            let response = reqwest::Client::new()
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            response.status().as_u16() == 200
        })
    }

    /// Waits until the record is at generation `min` or later, and every running
    /// instance's file holds the record's access token and `whoami` accepts it.
    fn wait_converged(&mut self, min: u64, timeout: Duration) {
        let start = Instant::now();
        loop {
            let record = self.record();
            let tokens = record
                .as_ref()
                .map(|r| r.access_tokens(&self.emu))
                .unwrap_or_default();
            self.cluster.assert_none_exited();
            let files = self.running_file_tokens();
            let on_record: Vec<(String, bool)> = files
                .iter()
                .map(|(name, t)| {
                    let ok = t
                        .as_ref()
                        .is_some_and(|t| tokens.contains(t) && self.whoami(t));
                    (name.clone(), ok)
                })
                .collect();
            if record.as_ref().is_some_and(|r| r.generation() >= min)
                && on_record.iter().all(|(_, ok)| *ok)
            {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for generation ≥ {min} in the record and \
                 its token, valid, in every running instance's file\nrecord: {}\nfile holds the \
                 record's valid token: {on_record:?}\nemulator: {}",
                record.map_or("none".into(), |r| r.redacted()),
                self.stats_line()
            );
            std::thread::sleep(TICK);
        }
    }

    /// (name, file token) of every running instance.
    fn running_file_tokens(&mut self) -> Vec<(String, Option<String>)> {
        self.cluster
            .instances
            .iter_mut()
            .filter_map(|i| i.is_running().then(|| (i.name.clone(), i.file_token())))
            .collect()
    }

    fn stats_line(&self) -> String {
        let s = self.emu.stats(Provider::Zarv);
        format!(
            "requests {}, logins {}, refreshes {}, rejected {}, spent refresh reuses {}, families revoked {}",
            s.requests,
            s.logins,
            s.refreshes,
            s.rejected,
            s.spent_refresh_reuses,
            s.families_revoked
        )
    }

    /// The rotation invariant: no spent refresh token was ever presented, so no family was
    /// revoked.
    fn assert_no_reuse(&self, context: &str) {
        let s = self.emu.stats(Provider::Zarv);
        assert!(
            s.spent_refresh_reuses == 0 && s.families_revoked == 0,
            "a spent refresh token was presented ({}); {context}",
            self.stats_line()
        );
    }

    /// No token file of any instance holds a revoked token (a revoked family shows here
    /// at once, before any counter is read).
    fn assert_no_revoked_file(&self, context: &str) {
        for i in &self.cluster.instances {
            if let Some(token) = i.file_token() {
                let info = self.emu.access_token_info(Provider::Zarv, &token);
                assert!(
                    info.is_some_and(|info| !info.revoked),
                    "{}'s file holds a revoked or unknown token ({info:?}); {context}\n{}",
                    i.name,
                    self.stats_line()
                );
            }
        }
    }

    /// Watches for `d`: the rotation invariant and every token file, every [`TICK`].
    fn observe_for(&mut self, d: Duration, context: &str) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.cluster.assert_none_exited();
            self.assert_no_reuse(context);
            self.assert_no_revoked_file(context);
            std::thread::sleep(TICK);
        }
    }

    /// The instant the emulator says `token` expires.
    fn expiry(&self, token: &str) -> Instant {
        self.emu
            .access_token_info(Provider::Zarv, token)
            .expect("a token the emulator issued")
            .expires_at
    }

    /// Makes the provider act on the next request at once but hold its answer for
    /// `hold` (the refresh token is spent by then), and returns the instance whose claim
    /// stands on the record meanwhile: the claimer, waiting for that answer.
    fn claimer_at_provider(&mut self, hold: Duration, context: &str) -> usize {
        let faults = self.emu.stats(Provider::Zarv).faults;
        self.emu
            .fail_next(Provider::Zarv, 1, Fault::DelayAnswer(hold));
        let wait = self.lifetime;
        wait_for("the next refresh to reach the provider", wait, || {
            self.emu.stats(Provider::Zarv).faults > faults
        });
        let claim = self.record().and_then(|r| r.claim_instance());
        self.cluster
            .instances
            .iter()
            .position(|i| claim.as_ref().is_some_and(|c| c.starts_with(&i.name)))
            .unwrap_or_else(|| {
                panic!(
                    "a refresh is at the provider but the record's claim is {claim:?}; {context}"
                )
            })
    }

    /// `tokend_coordination_store_errors_total{account}` of instance `k`.
    fn store_errors(&mut self, k: usize) -> f64 {
        let account = self.cluster.spec.account.clone();
        self.cluster.instances[k].metric(
            &self.rt,
            "tokend_coordination_store_errors_total",
            &[("account", &account)],
        )
    }
}

/// Provider requests `stats` made after `start`, and the longest gap between two
/// consecutive ones.
fn requests_since(emu: &Emulator, start: Instant) -> (usize, Duration) {
    let times: Vec<Instant> = emu
        .stats(Provider::Zarv)
        .request_times
        .into_iter()
        .filter(|t| *t >= start)
        .collect();
    let gap = times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default();
    (times.len(), gap)
}

/// What one instance alone would request in `elapsed`: one per interval, rounded up.
fn one_instance_requests(elapsed: Duration, interval: Duration) -> f64 {
    (elapsed.as_secs_f64() / interval.as_secs_f64()).ceil()
}

// ---------------------------------------------------------------------------------------
// 1. Three instances under random kills
// ---------------------------------------------------------------------------------------

#[test]
fn three_instances_under_random_kills_refresh_once_per_interval_and_never_reuse() {
    // Proves (issue 14): three instances on one prefix keep a rotating Zarv account fresh
    // while a random one (or, a third of the time, the one whose refresh is at the
    // provider) is SIGKILLed and restarted every few seconds: no spent refresh
    // token is ever presented (no family revoked), the provider sees about what one
    // instance makes, a new token always arrives before the last one expired, and at the
    // end every instance's file holds a token `whoami` accepts.
    // `TOKEND_HA_KILL_SECONDS` runs the chaos longer (default 60).
    let lifetime = Duration::from_secs(12);
    let mut f = Fixture::new(
        "ha-kills",
        lifetime,
        ClusterSpec::new("tokend/ha-kills"),
        3,
        &[],
    );
    f.cluster.start_all();
    f.wait_converged(1, WAIT);
    let run_for = Duration::from_secs(
        std::env::var("TOKEND_HA_KILL_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let mut schedule = rand::rngs::StdRng::seed_from_u64(test_seed("ha kill schedule"));
    let started = Instant::now();
    let mut kills = Vec::new();
    // Kills of an instance that held the claim: its refresh may have reached the provider
    // and been lost with it, so the next claimer must log in (one request more).
    let mut died_claiming = 0;
    while started.elapsed() < run_for {
        let context = format!("kills so far: {kills:?}");
        f.observe_for(
            Duration::from_millis(schedule.random_range(1500..4500)),
            &context,
        );
        // A random instance at a random moment rarely dies mid-refresh (the claim stands
        // for milliseconds), so every third kill, on average, waits for the next refresh
        // to reach the provider, which spends the refresh token and holds its answer
        // 800 ms, and kills the claimer meanwhile: whoever takes over must not send that
        // refresh token again.
        let victim = if schedule.random_range(0..3) == 0 {
            f.claimer_at_provider(Duration::from_millis(800), &context)
        } else {
            schedule.random_range(0..f.cluster.instances.len())
        };
        f.cluster.instances[victim].kill();
        let claimed = f
            .record()
            .and_then(|r| r.claim_instance())
            // The configured name, perhaps with a per-run suffix.
            .is_some_and(|c| c.starts_with(&f.cluster.instances[victim].name));
        died_claiming += usize::from(claimed);
        kills.push(format!(
            "i{victim}@{:.1}s{}",
            started.elapsed().as_secs_f64(),
            if claimed { " (claimer)" } else { "" }
        ));
        // Down for a moment, sometimes not at all: a restart under the same instance name
        // may meet its predecessor's claim.
        f.observe_for(
            Duration::from_millis(schedule.random_range(0..1500)),
            &context,
        );
        f.cluster.start(victim);
    }
    let context = format!("kills: {kills:?}");
    f.cluster.assert_all_running();
    f.wait_converged(f.generation() + 1, WAIT);
    f.assert_no_reuse(&context);
    f.assert_no_revoked_file(&context);

    let elapsed = started.elapsed();
    let (requests, longest_gap) = requests_since(&f.emu, started);
    let one = one_instance_requests(elapsed, f.interval());
    // About one instance's rate: half again for jitter and takeovers, plus one login for
    // each claimer killed. Three instances refreshing on their own would make three times
    // as many.
    let bound = (1.5 * one).ceil() as usize + died_claiming;
    assert!(
        requests <= bound,
        "{requests} provider requests in {elapsed:?}; one instance makes about {one}, allowed \
         {bound} with {died_claiming} claimers killed; {}; {context}",
        f.stats_line()
    );
    assert!(
        longest_gap < lifetime,
        "{longest_gap:?} without a provider request, longer than the {lifetime:?} lifetime: the \
         account was not kept fresh; {context}"
    );
    eprintln!(
        "{} kills ({died_claiming} claimers) in {elapsed:?}: {requests} requests (one instance: \
         {one}); {}",
        kills.len(),
        f.stats_line()
    );
}

// ---------------------------------------------------------------------------------------
// 2. The store is down
// ---------------------------------------------------------------------------------------

#[test]
fn a_sealed_store_stops_every_rotating_refresh_and_the_held_token_is_served_until_expiry() {
    // Proves (issue 14): while OpenBao is sealed for longer than claim_ttl, no instance
    // presents Zarv's rotating refresh token, every instance keeps serving the token it
    // holds (valid until its own expiry), each notices the store errors, and after the
    // unseal both get a fresh token again without any reuse.
    let lifetime = Duration::from_secs(8);
    let claim_ttl = Duration::from_secs(3);
    let mut f = Fixture::new(
        "ha-sealed",
        lifetime,
        ClusterSpec::new("tokend/ha-sealed"),
        2,
        &[],
    );
    f.cluster.start_all();
    f.wait_converged(1, WAIT);
    // Seal right after a commit, so the held token has most of its life ahead of it and
    // the instances' refresh falls due while sealed.
    let g = f.generation();
    f.wait_converged(g + 1, WAIT);
    let held = f.cluster.instances[0].file_token().expect("a token");
    let expires = f.expiry(&held);
    let errors_before: Vec<f64> = (0..2).map(|k| f.store_errors(k)).collect();
    f.rt.block_on(f.bao.seal());
    let sealed_at = Instant::now();
    let before = f.emu.stats(Provider::Zarv);

    // Sealed past the held token's expiry and then one more claim_ttl.
    let until = expires + claim_ttl + Duration::from_secs(1);
    while Instant::now() < until {
        let now = Instant::now();
        let stats = f.emu.stats(Provider::Zarv);
        assert_eq!(
            stats.refreshes,
            before.refreshes,
            "a refresh reached Zarv {:?} after sealing the store; {}",
            now - sealed_at,
            f.stats_line()
        );
        for i in &f.cluster.instances {
            let token = i
                .file_token()
                .unwrap_or_else(|| panic!("{}'s token file disappeared", i.name));
            if now + Duration::from_millis(300) < expires {
                assert!(
                    f.whoami(&token),
                    "{} serves a token whoami refuses {:?} before the held one expires",
                    i.name,
                    expires - now
                );
            }
        }
        f.assert_no_revoked_file("while sealed");
        std::thread::sleep(TICK);
    }
    assert!(sealed_at.elapsed() > claim_ttl);
    for (k, before) in errors_before.iter().enumerate() {
        let now = f.store_errors(k);
        assert!(
            now > *before,
            "i{k}: tokend_coordination_store_errors_total stayed at {now} while sealed"
        );
    }
    eprintln!(
        "sealed for {:?}: {} logins meanwhile",
        sealed_at.elapsed(),
        f.emu.stats(Provider::Zarv).logins - before.logins
    );

    f.rt.block_on(f.bao.unseal());
    let g = f.generation();
    f.wait_converged(g + 1, WAIT);
    for i in &f.cluster.instances {
        assert_ne!(
            i.file_token(),
            Some(held.clone()),
            "{} never recovered",
            i.name
        );
    }
    f.assert_no_reuse("after the unseal");
    f.cluster.assert_all_running();
}

// ---------------------------------------------------------------------------------------
// 3. Clock skew
// ---------------------------------------------------------------------------------------

#[test]
fn two_instances_with_clocks_30s_apart_never_double_refresh() {
    // Proves (issue 14): with one instance's wall clock 30 s ahead (libfaketime; the
    // monotonic clocks agree, as on two real hosts), the pair makes one instance's worth
    // of provider requests, never two close together, and never reuses a refresh token.
    let lifetime = Duration::from_secs(8);
    let mut f = Fixture::new(
        "ha-skew",
        lifetime,
        ClusterSpec::new("tokend/ha-skew"),
        2,
        &[None, Some("+30s")],
    );
    f.cluster.start_all();
    // The skew is real: the skewed daemon stamps its lock with a time 30 s ahead.
    let skewed = &f.cluster.instances[1];
    wait_for("the skewed daemon's lock", WAIT, || {
        skewed.status()["daemon"]["running"] == true
    });
    let since = skewed.status()["daemon"]["since"]
        .as_str()
        .and_then(tokend::sink::parse_rfc3339)
        .expect("daemon.since");
    let ahead = since
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(20),
        "the skewed daemon's clock is only {ahead:?} ahead"
    );

    f.wait_converged(1, WAIT);
    let start = Instant::now();
    let g = f.generation();
    let generations = 5;
    f.wait_converged(g + generations, lifetime * 4);
    let elapsed = start.elapsed();
    let (requests, _) = requests_since(&f.emu, start);
    let one = one_instance_requests(elapsed, f.interval());
    assert!(
        requests as f64 <= (1.5 * one).ceil() + 1.0,
        "{requests} provider requests in {elapsed:?} for {generations} generations; one \
         instance makes about {one}; {}",
        f.stats_line()
    );
    let times: Vec<Instant> = f
        .emu
        .stats(Provider::Zarv)
        .request_times
        .into_iter()
        .filter(|t| *t >= start)
        .collect();
    let closest = times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .min()
        .unwrap_or(Duration::MAX);
    assert!(
        closest >= f.interval() / 2,
        "two provider requests {closest:?} apart: a double refresh; {}",
        f.stats_line()
    );
    f.assert_no_reuse("with the clocks 30 s apart");
    f.assert_no_revoked_file("with the clocks 30 s apart");
}

// ---------------------------------------------------------------------------------------
// 4. No rollback
// ---------------------------------------------------------------------------------------

/// Notes every step backwards of the record and of the published Vault and AWS secrets,
/// as seen by each read of the record ([`Fixture::record`]).
struct Monotonic {
    sink_path: String,
    aws: aws_sdk_secretsmanager::Client,
    record_version: u64,
    generation: u64,
    record_issued: Option<Instant>,
    sink_issued: Option<Instant>,
    aws_issued: Option<Instant>,
    samples: usize,
    violations: Vec<String>,
}

impl Monotonic {
    fn new(sink_path: &str, aws: aws_sdk_secretsmanager::Client) -> Monotonic {
        Monotonic {
            sink_path: sink_path.to_string(),
            aws,
            record_version: 0,
            generation: 0,
            record_issued: None,
            sink_issued: None,
            aws_issued: None,
            samples: 0,
            violations: Vec::new(),
        }
    }

    /// When the newest access token in `tokens` was issued, as the emulator's own expiry
    /// for it (every token has the same lifetime, so a later expiry is a later issue; no
    /// tokend clock is involved).
    fn issued<'a>(emu: &Emulator, tokens: impl IntoIterator<Item = &'a str>) -> Option<Instant> {
        tokens
            .into_iter()
            .filter_map(|t| emu.access_token_info(Provider::Zarv, t))
            .map(|i| i.expires_at)
            .max()
    }

    fn record(&mut self, record: Option<&Record>, emu: &Emulator) {
        let Some(record) = record else { return };
        self.samples += 1;
        if record.version < self.record_version {
            self.violations.push(format!(
                "record version {} after {}",
                record.version, self.record_version
            ));
        }
        let g = record.generation();
        if g < self.generation {
            self.violations
                .push(format!("record generation {g} after {}", self.generation));
        }
        self.record_version = self.record_version.max(record.version);
        self.generation = self.generation.max(g);
        let tokens = record.access_tokens(emu);
        let issued = Monotonic::issued(emu, tokens.iter().map(String::as_str));
        if let (Some(now), Some(seen)) = (issued, self.record_issued)
            && now < seen
        {
            self.violations.push(format!(
                "the record went back to a token issued {:?} earlier (generation {g})",
                seen - now
            ));
        }
        self.record_issued = self.record_issued.max(issued);
    }

    /// One look at a published `json` document (`which`: "vault", "aws").
    fn sink(&mut self, which: &str, doc: Option<serde_json::Value>, emu: &Emulator) {
        let Some(doc) = doc else { return };
        let issued = Monotonic::issued(emu, doc["access_token"].as_str());
        let last = if which == "aws" {
            &mut self.aws_issued
        } else {
            &mut self.sink_issued
        };
        if let (Some(now), Some(seen)) = (issued, *last)
            && now < seen
        {
            self.violations.push(format!(
                "the {which} sink went back to a token issued {:?} earlier",
                seen - now
            ));
        }
        *last = (*last).max(issued);
    }

    /// The AWSCURRENT value of the AWS sink's secret, if it exists yet.
    async fn aws_document(&self) -> Option<serde_json::Value> {
        let out = self
            .aws
            .get_secret_value()
            .secret_id(&self.sink_path)
            .send()
            .await
            .ok()?;
        serde_json::from_str(out.secret_string()?).ok()
    }
}

/// An AWS client on `moto` with the test keys the instances use too.
async fn aws_client(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(AWS_REGION))
        .credentials_provider(aws_credential_types::Credentials::new(
            AWS_KEYS.0,
            AWS_KEYS.1,
            None,
            None,
            "tokend-ha-tests",
        ))
        .endpoint_url(moto.endpoint())
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&sdk)
}

/// The region and keys of the AWS sink in the rollback test (moto takes any).
const AWS_REGION: &str = "us-east-1";
const AWS_KEYS: (&str, &str) = ("AKIATOKENDHATESTS000", "tokend-ha-tests-secret-key");

/// How the claimer of a refresh is taken out in [`a_stale_writer_never_rolls_the_store_or_the_published_secrets_back`].
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// SIGSTOP while its provider request is held, SIGCONT after the others took over: it
    /// wakes with a refresh answer for a generation that is no longer the next one.
    Pause,
    /// SIGKILL while its provider request is held, then a restart.
    Kill,
}

#[test]
fn a_stale_writer_never_rolls_the_store_or_the_published_secrets_back() {
    // Proves (issue 14): a claimer that stalls (SIGSTOP, like a long GC pause) or dies
    // while its refresh is at the provider, so that the others take over after claim_ttl,
    // never moves the record's generation, its KV version, the published Vault secret or
    // the AWS secret (moto) back to an older token when it wakes or restarts; no spent
    // refresh token is presented, and every instance ends on the record's token.
    let lifetime = Duration::from_secs(10);
    let prefix = "tokend/ha-rollback";
    let sink_path = "published/ha-rollback/zarv";
    let mut spec = ClusterSpec::new(prefix);
    // Room for a provider answer held 1.5 s inside the request timeout.
    spec.timeout = "2s".into();
    spec.claim_ttl = "5s".into();
    let moto = Moto::start();
    spec.extra_sinks = format!(
        "\n[[account.sink]]\ntype = \"vault\"\naddress = \"{{store}}\"\nmount = \"{MOUNT}\"\n\
         path = \"{sink_path}\"\nauth = {{ token = \"root\" }}\n\
         \n[[account.sink]]\ntype = \"aws_secrets_manager\"\nsecret_id = \"{sink_path}\"\n\
         region = \"{AWS_REGION}\"\nendpoint_url = \"{}\"\ncreate = true\n",
        moto.endpoint()
    );
    spec.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), AWS_KEYS.0.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), AWS_KEYS.1.into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ];
    let mut f = Fixture::new("ha-rollback", lifetime, spec, 3, &[]);
    f.cluster.start_all();
    f.wait_converged(1, WAIT);
    let aws = f.rt.block_on(aws_client(&moto));

    *f.monitor.borrow_mut() = Some(Monotonic::new(sink_path, aws));
    for stall in [Stall::Pause, Stall::Kill] {
        stale_writer_round(&mut f, stall);
    }
    let monotonic = f.monitor.borrow_mut().take().expect("monitor");
    assert!(monotonic.samples > 20, "only {} samples", monotonic.samples);
    assert!(
        monotonic.sink_issued.is_some() && monotonic.aws_issued.is_some(),
        "the Vault or AWS sink was never written"
    );
    assert!(
        monotonic.violations.is_empty(),
        "rolled back: {:#?}",
        monotonic.violations
    );
    f.assert_no_reuse("after the stale writers");
    // Every instance reports the record's generation in `status`.
    let g = f.generation();
    for i in &f.cluster.instances {
        wait_for(
            &format!("{}'s status to show generation {g}", i.name),
            WAIT,
            || i.status_coordination("zarv")["generation"].as_u64() >= Some(g),
        );
    }
}

/// One round of [`a_stale_writer_never_rolls_the_store_or_the_published_secrets_back`].
fn stale_writer_round(f: &mut Fixture, stall: Stall) {
    let g = f.generation();
    // The next refresh, whoever claims it, is held 1.5 s at the provider.
    let claimer = f.claimer_at_provider(Duration::from_millis(1500), &format!("{stall:?}"));
    match stall {
        Stall::Pause => f.cluster.instances[claimer].signal(Signal::SIGSTOP),
        Stall::Kill => f.cluster.instances[claimer].kill(),
    }
    // The others wait out claim_ttl on their own clocks and commit a newer generation.
    let what = format!("a takeover commit after {stall:?} of i{claimer}");
    wait_for(&what, WAIT, || f.generation() > g);
    match stall {
        Stall::Pause => f.cluster.instances[claimer].signal(Signal::SIGCONT),
        Stall::Kill => f.cluster.start(claimer),
    }
    // One ordinary generation after the stale writer is back, and everyone on it.
    let g = f.generation();
    f.wait_converged(g + 1, WAIT);
    f.assert_no_reuse(&format!("after {stall:?} of i{claimer}"));
}

// ---------------------------------------------------------------------------------------
// 5. Partition
// ---------------------------------------------------------------------------------------

#[test]
fn an_instance_cut_off_from_the_store_never_refreshes_and_adopts_the_new_generation_after() {
    // Proves (issue 14): an instance whose link to the store drops every packet makes no
    // provider request (every request in the window became a generation, committed by the
    // other two, and none reused a refresh token), keeps serving its still-valid token
    // past its own refresh point, while the other two commit a new generation; once the
    // link heals it takes that generation from the store without a provider call
    // (tokend_coordination_adopted_total), and counted store errors while cut.
    let lifetime = Duration::from_secs(10);
    let mut f = Fixture::new(
        "ha-partition",
        lifetime,
        ClusterSpec::new("tokend/ha-partition"),
        3,
        &[],
    );
    f.cluster.start_all();
    f.wait_converged(1, WAIT);
    let g = f.generation();
    f.wait_converged(g + 1, WAIT);
    let account = f.cluster.spec.account.clone();
    let adopted = |f: &mut Fixture| {
        f.cluster.instances[0].metric(
            &f.rt,
            "tokend_coordination_adopted_total",
            &[("account", &account)],
        )
    };
    let held = f.cluster.instances[0].file_token().expect("a token");
    let expires = f.expiry(&held);
    let adopted_before = adopted(&mut f);
    let errors_before = f.store_errors(0);
    // Every provider request from here on must be a refresh that became a generation (by
    // i1 or i2, since i0 cannot commit): a request by i0 would be one more, or a reuse.
    let (requests_at_cut, generation_at_cut) =
        (f.emu.stats(Provider::Zarv).requests, f.generation());
    let wasted = |f: &Fixture| {
        let requests = f.emu.stats(Provider::Zarv).requests - requests_at_cut;
        let generations = f.generation() - generation_at_cut;
        requests.saturating_sub(generations)
    };
    f.cluster.instances[0].store.cut();
    let cut_at = Instant::now();

    // i0 stays cut until it has tried the store at its refresh point and counted the
    // failure, and the other two have committed the next generation; all well before
    // its token expires.
    loop {
        let now = Instant::now();
        f.cluster.assert_none_exited();
        // One refresh of the others may be between the provider and its commit.
        assert!(
            wasted(&f) <= 1,
            "{:?} after the cut, two provider requests made no generation (i0 called the \
             provider?); {}",
            now - cut_at,
            f.stats_line()
        );
        assert_eq!(
            f.cluster.instances[0].file_token().as_ref(),
            Some(&held),
            "i0 stopped serving the token it held"
        );
        f.assert_no_reuse("during the partition");
        f.assert_no_revoked_file("during the partition");
        let committed = f.generation() > generation_at_cut;
        let noticed = f.store_errors(0) > errors_before;
        if committed && noticed {
            break;
        }
        assert!(
            now + Duration::from_secs(2) < expires,
            "{:?} into the partition, with the held token nearly expired: the others \
             committed a new generation: {committed}; i0 counted a store error: {noticed}",
            now - cut_at
        );
        std::thread::sleep(TICK);
    }
    assert!(
        f.whoami(&held),
        "i0's held token is no longer valid before its expiry"
    );

    f.cluster.instances[0].store.heal();
    let healed_at = Instant::now();
    wait_for("i0 to adopt the record's token", WAIT, || {
        let record = f.record().expect("record");
        f.cluster.instances[0]
            .file_token()
            .is_some_and(|t| t != held && record.access_tokens(&f.emu).contains(&t))
    });
    let adopted_after = healed_at.elapsed();
    assert!(
        adopted(&mut f) > adopted_before,
        "tokend_coordination_adopted_total of i0 did not move"
    );
    eprintln!(
        "cut for {:?}; adopted {adopted_after:?} after healing",
        healed_at - cut_at
    );
    // The other two kept the account fresh: everyone ends on a newer generation, and
    // with that commit settled every provider request since the cut is a generation.
    let g = f.generation();
    f.wait_converged(g + 1, WAIT);
    assert_eq!(
        wasted(&f),
        0,
        "a provider request since the cut made no generation: i0 called the provider \
         (while cut, or instead of adopting the record after the heal); {}",
        f.stats_line()
    );
    f.assert_no_reuse("after the partition");
    f.cluster.assert_all_running();
}

// ---------------------------------------------------------------------------------------
// The machinery: emulator rule, proxy, libfaketime, record helper
// ---------------------------------------------------------------------------------------

/// POSTs JSON to the emulator; returns the status and the body.
fn post_json(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    crate::support::block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    })
}

/// A Zarv login or refresh; returns (access, refresh) or the refusal's status.
fn zarv(emu: &Emulator, refresh: Option<&str>) -> Result<(String, String), u16> {
    let base = emu.base_url(Provider::Zarv);
    let (status, body) = match refresh {
        None => post_json(
            &format!("{base}/api/v1/authentication"),
            json!({"username": USERNAME, "password": PASSWORD}),
        ),
        Some(token) => post_json(
            &format!("{base}/api/v1/authentication/refresh"),
            json!({"refreshToken": token}),
        ),
    };
    if status != 200 {
        return Err(status);
    }
    let field = |name: &str| body[name].as_str().expect(name).to_string();
    Ok((field("accessToken"), field("refreshToken")))
}

fn whoami_status(emu: &Emulator, token: &str) -> u16 {
    let url = emu.whoami_url(Provider::Zarv);
    crate::support::block_on(async {
        reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .expect("GET whoami")
            .status()
            .as_u16()
    })
}

#[test]
fn emulator_zarv_reuse_of_a_rotated_refresh_token_revokes_the_whole_family() {
    // Proves the test's yardstick: presenting a spent Zarv refresh token revokes every
    // access and refresh token descended from that login (counted once per family), and
    // leaves other logins alone; with the rule off, a reuse is only refused and counted.
    let emu = emulator(Duration::from_secs(60));
    let (a1, r1) = zarv(&emu, None).expect("login");
    let (a2, r2) = zarv(&emu, Some(&r1)).expect("refresh");
    let (b1, _) = zarv(&emu, None).expect("second login");
    assert_eq!(whoami_status(&emu, &a2), 200);
    assert_eq!(
        zarv(&emu, Some(&r1)),
        Err(401),
        "the spent token is refused"
    );
    let s = emu.stats(Provider::Zarv);
    assert_eq!((s.spent_refresh_reuses, s.families_revoked), (1, 1));
    for (what, token) in [("the first access token", &a1), ("its successor", &a2)] {
        assert_eq!(whoami_status(&emu, token), 401, "{what} survived the reuse");
    }
    assert_eq!(
        zarv(&emu, Some(&r2)),
        Err(401),
        "the live refresh token died too"
    );
    assert_eq!(
        whoami_status(&emu, &b1),
        200,
        "another login's family was touched"
    );
    // Reusing within a family already revoked counts the reuse, not another family.
    assert_eq!(zarv(&emu, Some(&r1)), Err(401));
    let s = emu.stats(Provider::Zarv);
    assert_eq!((s.spent_refresh_reuses, s.families_revoked), (2, 1));

    emu.set_reuse_revokes_family(Provider::Zarv, false);
    let (c1, q1) = zarv(&emu, None).expect("login");
    let (c2, _) = zarv(&emu, Some(&q1)).expect("refresh");
    assert_eq!(zarv(&emu, Some(&q1)), Err(401));
    let s = emu.stats(Provider::Zarv);
    assert_eq!((s.spent_refresh_reuses, s.families_revoked), (3, 1));
    assert_eq!(whoami_status(&emu, &c1), 200);
    assert_eq!(whoami_status(&emu, &c2), 200);
}

#[test]
fn emulator_delay_answer_spends_the_refresh_token_even_if_the_client_gives_up() {
    // Proves the kill test's tool: with DelayAnswer the provider has acted before the
    // client hears back, so a client that gives up (or is killed) has spent its refresh
    // token, and sending it again is a reuse; Delay, by contrast, spends nothing.
    let emu = emulator(Duration::from_secs(60));
    let refresh_url = format!(
        "{}/api/v1/authentication/refresh",
        emu.base_url(Provider::Zarv)
    );
    let impatient = |token: &str| {
        crate::support::block_on(async {
            reqwest::Client::builder()
                .timeout(Duration::from_millis(300))
                .build()
                .expect("client")
                .post(&refresh_url)
                .json(&json!({"refreshToken": token}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.is_timeout())
        })
    };
    let (_, r1) = zarv(&emu, None).expect("login");
    emu.fail_next(Provider::Zarv, 1, Fault::Delay(Duration::from_secs(2)));
    assert_eq!(impatient(&r1), Err(true));
    wait_for("the abandoned request to end", WAIT, || {
        emu.stats(Provider::Zarv).in_flight == 0
    });
    let (_, r2) = zarv(&emu, Some(&r1)).expect("Delay spent nothing");
    emu.fail_next(
        Provider::Zarv,
        1,
        Fault::DelayAnswer(Duration::from_secs(2)),
    );
    assert_eq!(impatient(&r2), Err(true));
    assert_eq!(zarv(&emu, Some(&r2)), Err(401), "DelayAnswer spent it");
    let s = emu.stats(Provider::Zarv);
    assert_eq!((s.spent_refresh_reuses, s.families_revoked), (1, 1));
}

/// A GET through `proxy` to the emulator's whoami with a short client timeout: the status,
/// or the error's kind.
fn get_through(proxy: &Proxy, emu: &Emulator) -> Result<u16, &'static str> {
    let url = proxy.url(&emu.whoami_url(Provider::Zarv));
    crate::support::block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(700))
            .build()
            .expect("client");
        match client.get(&url).bearer_auth("nope").send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) if e.is_timeout() => Err("timeout"),
            Err(_) => Err("connection"),
        }
    })
}

#[test]
fn proxy_forwards_then_blackholes_resets_and_heals() {
    // Proves the partition tool: through the proxy a request is answered and its bytes
    // counted; cut (blackhole) it times out with no byte reaching the server; reset it
    // fails at once; healed it is answered again.
    let emu = emulator(Duration::from_secs(60));
    let proxy = Proxy::for_url(&emu.base_url(Provider::Zarv));
    let whoami = || emu.stats(Provider::Zarv).resource_requests;

    assert_eq!(get_through(&proxy, &emu), Ok(401));
    assert_eq!(whoami(), 1);
    assert!(proxy.bytes_up() > 0 && proxy.bytes_down() > 0);

    proxy.cut();
    let (up, seen) = (proxy.bytes_up(), whoami());
    assert_eq!(get_through(&proxy, &emu), Err("timeout"));
    assert_eq!(proxy.bytes_up(), up, "bytes crossed a cut link");
    assert_eq!(whoami(), seen, "a request crossed a cut link");

    proxy.set(Link::Reset);
    let started = Instant::now();
    assert_eq!(get_through(&proxy, &emu), Err("connection"));
    assert!(started.elapsed() < Duration::from_millis(600));

    proxy.heal();
    let seen = whoami();
    assert_eq!(get_through(&proxy, &emu), Ok(401));
    assert!(whoami() > seen);
    assert!(proxy.connections() >= 4);
}

#[test]
fn faketime_moves_the_daemons_wall_clock_30s_ahead() {
    // Proves the skew tool: the real binary under libfaketime "+30s" writes an
    // `expires_at` 30 s later than the emulator's real expiry of the same token, and a
    // daemon without it writes the real one. A machine without libfaketime fails here.
    let emu = emulator(Duration::from_secs(60));
    let dir = TestDir::new("ha-faketime");
    let skew_of = |name: &str, offset: Option<&str>| -> f64 {
        let sink = dir.join(&format!("{name}.json"));
        let config = dir.write(
            &format!("{name}.toml"),
            &format!(
                "[daemon]\nstate_dir = \"{}\"\nlog_format = \"text\"\n\n[[account]]\nname = \"p\"\n\
                 provider = \"pontotel\"\n{}\n[[account.sink]]\ntype = \"file\"\npath = \"{}\"\n\
                 format = \"json\"\n",
                dir.join(&format!("{name}-state")).display(),
                emu.account_settings(Provider::Pontotel),
                sink.display()
            ),
        );
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
        let mut cmd = TokendProcess::run_command(&config);
        if let Some(offset) = offset {
            faketime::skew(&mut cmd, offset);
        }
        let _daemon = TokendProcess::start(cmd, dir.path());
        wait_for("the token file", WAIT, || sink.exists());
        let text = std::fs::read_to_string(&sink).expect("token file");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        let written = doc["expires_at"]
            .as_str()
            .and_then(tokend::sink::parse_rfc3339)
            .expect("expires_at");
        let token = file_token(&sink).expect("token");
        let real_left = emu
            .access_token_info(Provider::Pontotel, &token)
            .expect("issued")
            .expires_at
            .saturating_duration_since(Instant::now());
        let real = std::time::SystemTime::now() + real_left;
        match written.duration_since(real) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        }
    };
    let ahead = skew_of("skewed", Some("+30s"));
    assert!(
        (27.0..33.0).contains(&ahead),
        "expires_at {ahead} s off, expected 30"
    );
    let plain = skew_of("plain", None);
    assert!(
        plain.abs() < 3.0,
        "without faketime expires_at is {plain} s off"
    );
}

#[test]
fn record_helper_reads_the_kv_record_and_survives_seal_and_unseal() {
    // Proves the store tools: a record written at <mount>/data/<prefix>/<account> is read
    // back with its generation, claim and tokens; sealing makes OpenBao unavailable
    // (503) and unsealing with the captured key brings the same data back.
    let rt = runtime();
    let bao = rt.block_on(OpenBao::start("ha-record"));
    let emu = emulator(Duration::from_secs(60));
    let (access, _) = zarv(&emu, None).expect("login");
    assert!(read_record(&rt, &bao, "tokend/t", "zarv").is_none());
    rt.block_on(bao.ok(
        Method::POST,
        &format!("{MOUNT}/data/tokend/t/zarv"),
        Some(json!({"data": {
            "generation": 7,
            "tokens": {"access_token": access},
            "claim": {"instance": "i1", "nonce": "n", "since_ms": 0},
            "refreshed_by": "i2",
        }})),
    ));
    let record = read_record(&rt, &bao, "tokend/t", "zarv").expect("record");
    assert_eq!(record.version, 1);
    assert_eq!(record.generation(), 7);
    assert_eq!(record.claim_instance().as_deref(), Some("i1"));
    assert_eq!(record.refreshed_by().as_deref(), Some("i2"));
    assert_eq!(record.access_tokens(&emu), vec![access.clone()]);
    assert!(!record.redacted().contains(&access));

    rt.block_on(bao.seal());
    assert_eq!(rt.block_on(bao.health()), Some(503));
    rt.block_on(bao.unseal());
    let again = read_record(&rt, &bao, "tokend/t", "zarv").expect("record after unseal");
    assert_eq!(again.generation(), 7);
}
