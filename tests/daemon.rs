//! The daemon (`tokend run`, SPEC §4) through the real binary against the loopback
//! provider emulator: refresh-ahead, transient faults, SIGKILL during rotation, restarts,
//! hot reload (four ways), account diffs, signals, sd_notify, the state lock, notify hooks,
//! and that no secret reaches a log line. Each test runs its own emulator and daemon with
//! tokens that live a few seconds; conditions are awaited, never slept for. The only
//! fixed waits are observation windows that prove something does *not* happen, and they
//! are longer than the daemon's 1 s minimum request interval.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use rand::{RngExt, SeedableRng};
use serde_json::Value;
use tokend::emulator::{
    CLIENT_ID, CLIENT_SECRET, Emulator, Fault, INTEGRATOR_KEY, Options, PASSWORD, Provider,
    USERNAME,
};

use crate::support::process::TokendProcess;
use crate::support::{TestDir, run_cmd, tokend_cmd, wait_for};

/// Generous bound for anything awaited: a loaded 2-core CI machine is slow, a hung daemon
/// is not.
const WAIT: Duration = Duration::from_secs(30);
/// Logged once every account has had its first attempt.
const READY_LINE: &str = "first round done; ready";
/// Token lifetime for tests that must see no natural refresh.
const LONG: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Fixture: an emulator, a test directory, a config, secrets.
// ---------------------------------------------------------------------------------------

/// An emulator issuing access tokens of `access_lifetime`, with a fault seed that a
/// failing test prints and `TOKEND_TEST_SEED` replays.
fn emulator(access_lifetime: Duration) -> Emulator {
    let fault_seed = crate::support::test_seed("emulator faults");
    let emu = Emulator::start(Options {
        access_lifetime,
        fault_seed,
        ..Options::default()
    })
    .expect("start the emulator");
    eprintln!("emulator on {} with fault_seed {fault_seed}", emu.addr());
    emu
}

/// A test directory with a config file, a state dir and token files under `out/`. Every
/// path in the configs is absolute, so the config may live anywhere (the symlink test).
struct Setup {
    dir: TestDir,
    config: PathBuf,
    state: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir = TestDir::new(name);
        let config = dir.join("tokend.toml");
        let state = dir.join("state");
        Setup { dir, config, state }
    }

    /// The `json` token file of an account.
    fn sink(&self, name: &str) -> PathBuf {
        self.dir.join(&format!("out/{name}.json"))
    }

    /// `[daemon]` with this setup's state dir and text logs, plus `extra` lines/tables.
    fn header(&self, extra: &str) -> String {
        format!(
            "[daemon]\nstate_dir = \"{}\"\nlog_format = \"text\"\n{extra}\n",
            self.state.display()
        )
    }

    /// Writes the config in place (0600, so literal secrets draw no warning).
    fn write_config(&self, text: &str) {
        write_private(&self.config, text);
    }

    fn start(&self) -> TokendProcess {
        TokendProcess::run(&self.config, self.dir.path())
    }

    /// Starts the daemon and waits until its first round of attempts is done.
    fn start_ready(&self) -> TokendProcess {
        let d = self.start();
        d.wait_for_log(READY_LINE, WAIT);
        d
    }

    /// An account's state file, if it exists.
    fn state_of(&self, account: &str) -> Option<Value> {
        read_json(&self.state.join(format!("{account}.json")))
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A `[[account.sink]]` of type file.
fn file_sink(path: &Path, format: &str) -> String {
    format!(
        "\n[[account.sink]]\ntype = \"file\"\npath = \"{}\"\nformat = \"{format}\"\n",
        path.display()
    )
}

/// Credentials and endpoint of `provider` on `emu`, as account keys.
fn credentials(emu: &Emulator, provider: Provider) -> String {
    let user = format!("username = \"{USERNAME}\"\npassword = \"{PASSWORD}\"\n");
    let client = format!("client_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n");
    let base = format!("base_url = \"{}\"\n", emu.base_url(provider));
    match provider {
        Provider::Pontotel | Provider::Funcional | Provider::Zarv => format!("{base}{user}"),
        Provider::Hubsoft => format!("{base}{user}{client}"),
        Provider::Itflex => format!("{base}refresh_token = \"{INTEGRATOR_KEY}\"\n"),
        Provider::Oauth2 => format!("token_url = \"{}\"\n{client}", emu.token_url()),
    }
}

/// One `[[account]]`: `keys` are extra account keys (they go before any table), `tables`
/// extra tables (`[account.refresh]`, `[[account.notify]]`), `sinks` from [`file_sink`].
fn account(
    emu: &Emulator,
    name: &str,
    provider: Provider,
    keys: &str,
    tables: &str,
    sinks: &str,
) -> String {
    let keys = format!("{}{keys}", credentials(emu, provider));
    account_with(name, provider, &keys, tables, sinks)
}

/// One `[[account]]` whose credential keys are all in `keys`.
fn account_with(name: &str, provider: Provider, keys: &str, tables: &str, sinks: &str) -> String {
    format!(
        "\n[[account]]\nname = \"{name}\"\nprovider = \"{}\"\n{keys}\n{tables}\n{sinks}",
        provider.name()
    )
}

/// An account with one `json` file sink at `setup.sink(name)`.
fn simple_account(setup: &Setup, emu: &Emulator, name: &str, provider: Provider) -> String {
    account(
        emu,
        name,
        provider,
        "",
        "",
        &file_sink(&setup.sink(name), "json"),
    )
}

fn read_json(path: &Path) -> Option<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    Some(serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{} is not a complete JSON document ({e}): {text:?}",
            path.display()
        )
    }))
}

/// The access token in a `json` token file, if the file exists.
fn sink_token(path: &Path) -> Option<String> {
    read_json(path).map(|doc| {
        doc["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {}: {doc}", path.display()))
            .to_string()
    })
}

fn wait_for_file(path: &Path) {
    wait_for(&format!("{} to exist", path.display()), WAIT, || {
        path.exists()
    });
}

/// Everything that must never appear in a log line: the emulator's credentials (also in
/// the encodings that go on the wire) and every access and refresh token seen in state
/// and token files during the test.
struct Secrets(BTreeSet<String>);

impl Secrets {
    fn new() -> Secrets {
        let encoded_secret: String =
            url::form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect();
        let basic = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .encode(format!("{CLIENT_ID}:{encoded_secret}"))
        };
        Secrets(
            [PASSWORD, CLIENT_SECRET, INTEGRATOR_KEY]
                .iter()
                .map(|s| s.to_string())
                .chain([encoded_secret, basic])
                .collect(),
        )
    }

    fn add(&mut self, secret: &str) {
        if !secret.is_empty() {
            self.0.insert(secret.to_string());
        }
    }

    /// Adds the tokens held in every state file of `state_dir`.
    fn harvest_state(&mut self, state_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(state_dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(state) = read_json(&path)
            {
                for v in [&state["token"]["access_token"], &state["refresh_token"]] {
                    if let Some(s) = v.as_str() {
                        self.add(s);
                    }
                }
            }
        }
    }

    /// Asserts that no secret, and nothing shaped like an emulator token (JWTs start with
    /// base64 of `{"`, Passport tokens with `def50200`), is in the output of `processes`.
    fn assert_not_in(&self, processes: &[&TokendProcess]) {
        let mut all: Vec<&str> = self.0.iter().map(String::as_str).collect();
        all.extend(["eyJ", "def50200"]);
        for p in processes {
            p.assert_no_secrets(&all);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// SIGTERM, then the exit status within SPEC §4's 10 s.
fn stop(d: &mut TokendProcess) {
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "tokend run exit status");
}

/// A clock made of events: a witness account (Pontotel on `witness`, short tokens) that
/// refreshes on its own every couple of seconds. Waiting for it to make `ticks` more
/// requests replaces an observation window (a sleep) when a test must show that something
/// does *not* happen: each tick is a request the daemon really made, at least 1 s apart.
fn witness_ticks(witness: &Emulator, ticks: u64) {
    let start = witness.stats(Provider::Pontotel).requests;
    wait_for(&format!("{ticks} more witness refreshes"), WAIT, || {
        witness.stats(Provider::Pontotel).requests >= start + ticks
    });
}

// ---------------------------------------------------------------------------------------
// 1. Refresh ahead
// ---------------------------------------------------------------------------------------

#[test]
fn token_files_are_always_valid_while_the_provider_answers() {
    // Proves refresh-ahead: across several refresh cycles, every read of every token file
    // is a complete token that the provider accepts at that moment.
    let emu = emulator(Duration::from_secs(4));
    let s = Setup::new("daemon-always-valid");
    let providers = [
        Provider::Zarv,
        Provider::Pontotel,
        Provider::Funcional,
        Provider::Itflex,
    ];
    let raw = |p: Provider| s.dir.join(&format!("out/{}.token", p.name()));
    let mut text = s.header("");
    for p in providers {
        text += &account(&emu, p.name(), p, "", "", &file_sink(&raw(p), "raw"));
    }
    s.write_config(&text);
    let mut d = s.start();
    for p in providers {
        wait_for_file(&raw(p));
    }
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut secrets = Secrets::new();
    let start = Instant::now();
    let mut reads = 0u64;
    // Four distinct tokens per account = three refreshes each seen from the reader side.
    while seen.len() < providers.len() || seen.values().any(|s| s.len() < 4) {
        for p in providers {
            let path = raw(p);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{} vanished: {e}", path.display()));
            reads += 1;
            assert!(
                text.len() > 1 && text.ends_with('\n') && !text[..text.len() - 1].contains('\n'),
                "{}: not one complete token line: {text:?}",
                path.display()
            );
            let token = text.trim_end();
            let tokens = seen.entry(p.name()).or_default();
            assert!(
                emu.token_is_valid(p, token),
                "{p}: read #{reads}, {:?} into the run, the token file holds a token the \
                 provider refuses (token #{} of this account)",
                start.elapsed(),
                tokens.len() + usize::from(!tokens.contains(token))
            );
            tokens.insert(token.to_string());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "too few refreshes: {:?}",
            seen.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
        );
        // Sampling interval of the reader, not a synchronisation.
        std::thread::sleep(Duration::from_millis(5));
    }
    for tokens in seen.values() {
        for t in tokens {
            secrets.add(t);
        }
    }
    secrets.harvest_state(&s.state);
    stop(&mut d);
    secrets.assert_not_in(&[&d]);
}

// ---------------------------------------------------------------------------------------
// 2. Transient faults
// ---------------------------------------------------------------------------------------

/// One look at an account's token file.
struct Sample {
    at: Instant,
    token: String,
    expires_at: SystemTime,
    valid: bool,
    /// Tokens the provider had issued by then (read after the file, so it counts the
    /// file's token).
    issued: u64,
}

#[test]
fn transient_faults_never_leave_an_expired_token_while_a_retry_window_remains() {
    // Proves, with ~30 % of requests failing (5xx, 429 + Retry-After, hangs past the
    // timeout, dropped connections) for the whole run: a token file holds a dead token
    // only when the provider answered none of the daemon's attempts in that token's retry
    // window (and the daemon did try before expiry); a new token reaches the file
    // promptly; and requests per account stay >= 1 s apart.
    //
    // Retry window: 4 s tokens refreshed after 30 % of their life leave 2.8 s in which
    // retries (backoff capped at 1 s, Retry-After 1 s, timeout 2 s) keep coming.
    let emu = emulator(Duration::from_secs(4));
    let providers = [Provider::Zarv, Provider::Pontotel, Provider::Hubsoft];
    let faults = vec![
        Fault::Status(500),
        Fault::Status(503),
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        Fault::Delay(Duration::from_millis(2500)),
        Fault::Drop,
    ];
    for p in providers {
        emu.set_random_faults(p, 0.3, faults.clone());
    }
    let s = Setup::new("daemon-faults");
    let mut text = s.header(
        "[daemon.refresh]\nratio = 0.3\njitter = 0.0\nmin_margin = \"2s\"\n\
         [daemon.retry]\ninitial = \"200ms\"\nmax = \"1s\"\n",
    );
    for p in providers {
        text += &account(
            &emu,
            p.name(),
            p,
            "timeout = \"2s\"\n",
            "",
            &file_sink(&s.sink(p.name()), "json"),
        );
    }
    s.write_config(&text);
    let (t0, t0_wall) = (Instant::now(), SystemTime::now());
    let to_instant = |t: SystemTime| match t.duration_since(t0_wall) {
        Ok(d) => t0 + d,
        Err(e) => t0.checked_sub(e.duration()).unwrap_or(t0),
    };
    let mut d = s.start();
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    let distinct = |v: &Vec<Sample>| v.iter().map(|s| &s.token).collect::<BTreeSet<_>>().len();
    let start = Instant::now();
    loop {
        for p in providers {
            // Sampled from the first write on, so a token's first sample precedes every
            // attempt to replace it.
            let Some(doc) = read_json(&s.sink(p.name())) else {
                assert!(
                    !samples.contains_key(p.name()),
                    "{p}: the token file vanished"
                );
                continue;
            };
            let token = doc["access_token"].as_str().expect("token").to_string();
            let expires_at =
                humantime::parse_rfc3339_weak(doc["expires_at"].as_str().expect("expires_at"))
                    .expect("RFC 3339 expires_at");
            let valid = emu.token_is_valid(p, &token);
            let issued = emu.stats(p).issued;
            samples.entry(p.name()).or_default().push(Sample {
                at: Instant::now(),
                token,
                expires_at,
                valid,
                issued,
            });
        }
        let faults: u64 = providers.iter().map(|p| emu.stats(*p).faults).sum();
        if samples.len() == providers.len()
            && samples.values().all(|v| distinct(v) >= 8)
            && faults >= 12
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "too little progress: faults {faults}, tokens {:?}",
            samples
                .iter()
                .map(|(k, v)| (k, distinct(v)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A token issued but not yet in the file: the write (state fsync, file fsync) may
    // lag on a loaded machine, but not by seconds.
    const GRACE: Duration = Duration::from_secs(4);
    let mut excused = 0;
    for p in providers {
        let st = emu.stats(p);
        let v = &samples[p.name()];
        let mut run_start = 0;
        let mut run_excused = false;
        for (k, sample) in v.iter().enumerate() {
            if sample.token != v[run_start].token {
                run_start = k;
                run_excused = false;
            }
            if sample.valid {
                continue;
            }
            let first = &v[run_start];
            // (a) The daemon had no newer token to give, or got it less than GRACE ago.
            if let Some(newer) = v[run_start..=k].iter().find(|x| x.issued > first.issued) {
                assert!(
                    sample.at.duration_since(newer.at) <= GRACE,
                    "{p}: the token file held a dead token {:?} after the provider had \
                     issued a newer one",
                    sample.at.duration_since(newer.at)
                );
                continue;
            }
            // (b) The outage covered the retry window: the daemon tried before expiry and
            // the provider issued nothing.
            let expiry = to_instant(sample.expires_at);
            assert!(
                st.request_times
                    .iter()
                    .any(|r| *r > first.at && *r < expiry),
                "{p}: the token expired without any attempt to replace it"
            );
            if !run_excused {
                run_excused = true;
                excused += 1;
            }
        }
        // The rate stays bounded both ways: never faster than 1 s (less the fsync and
        // scheduling jitter between the daemon's clock and the emulator's arrival times),
        // and the daemon never gives up (timeout 2 s + backoff 1 s + slack).
        let times = &st.request_times;
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let min = gaps.iter().min().expect("several requests");
        let max = gaps.iter().max().expect("several requests");
        assert!(
            *min >= Duration::from_millis(900),
            "{p}: two requests {min:?} apart"
        );
        assert!(
            *max <= Duration::from_secs(6),
            "{p}: the daemon went quiet for {max:?}"
        );
        eprintln!(
            "{p}: {} requests, {} faults, {} tokens issued, gaps {min:?}..{max:?}",
            st.requests, st.faults, st.issued
        );
    }
    eprintln!("expiries excused by an outage longer than the retry window: {excused}");
    let mut secrets = Secrets::new();
    for v in samples.values() {
        for s in v {
            secrets.add(&s.token);
        }
    }
    secrets.harvest_state(&s.state);
    stop(&mut d);
    secrets.assert_not_in(&[&d]);
}

// ---------------------------------------------------------------------------------------
// 3. SIGKILL during rotation
// ---------------------------------------------------------------------------------------

#[test]
fn after_an_outage_longer_than_the_token_a_fresh_token_arrives_within_max_expired() {
    // Proves (issue 11): once the held token has expired, attempts are at most
    // `retry.max_expired` apart, so however long the outage lasted, a fresh token is in
    // the sink within max_expired + 1 s of the provider's return (before, the backoff
    // could reach `retry.max`, 5 min, and leave apps on an expired token that long).
    let emu = emulator(Duration::from_secs(4));
    let s = Setup::new("outage-end");
    s.write_config(&format!(
        "{}{}",
        s.header("[daemon.retry]\nmax = \"5m\"\nmax_expired = \"3s\"\n"),
        simple_account(&s, &emu, "p", Provider::Pontotel)
    ));
    let mut d = s.start_ready();
    let first = sink_token(&s.sink("p")).expect("a token before the outage");
    emu.set_random_faults(Provider::Pontotel, 1.0, vec![Fault::Status(503)]);
    wait_for("the held token to expire during the outage", WAIT, || {
        !emu.token_is_valid(Provider::Pontotel, &first)
    });
    // Long enough after expiry for the backoff ceiling (1, 2, 4, 8 … s) to pass 3 s.
    let faults = emu.stats(Provider::Pontotel).faults;
    wait_for("four failed attempts after expiry", WAIT, || {
        emu.stats(Provider::Pontotel).faults >= faults + 4
    });
    d.wait_for_log("why=expired", WAIT);
    emu.clear_faults(Provider::Pontotel);
    let back = Instant::now();
    wait_for("a fresh token in the sink", WAIT, || {
        sink_token(&s.sink("p"))
            .is_some_and(|t| t != first && emu.token_is_valid(Provider::Pontotel, &t))
    });
    let took = back.elapsed();
    assert!(
        took <= Duration::from_secs(3 + 1),
        "a fresh token arrived {took:?} after the provider returned; expected within max_expired (3 s) + 1 s"
    );
    stop(&mut d);
}

#[test]
fn rejected_credentials_are_not_retried_within_retry_rejected_even_on_sigusr1() {
    // Proves (issue 11): after a rejected login the next login waits `retry.rejected`
    // (4 s here), and SIGUSR1 does not cut that short (a provider that locks accounts
    // after a few failed logins must not lock this one). Gaps are measured on the
    // emulator's own receive times, not by polling.
    let emu = emulator(LONG);
    emu.reject_credentials(Provider::Pontotel, true);
    let s = Setup::new("rejected-wait");
    s.write_config(&format!(
        "{}{}",
        s.header("[daemon.retry]\nrejected = \"4s\"\n"),
        simple_account(&s, &emu, "p", Provider::Pontotel)
    ));
    let mut d = s.start_ready();
    let first = emu
        .last_request(Provider::Pontotel)
        .expect("the first login reached the emulator");
    assert_eq!(emu.stats(Provider::Pontotel).requests, 1);
    for _ in 0..3 {
        d.signal(Signal::SIGUSR1);
    }
    d.wait_for_log("SIGUSR1 does not cut this wait short", WAIT);
    wait_for("the second login, after retry.rejected", WAIT, || {
        emu.stats(Provider::Pontotel).requests >= 2
    });
    let second = emu.last_request(Provider::Pontotel).expect("second login");
    let gap = second.received_at.duration_since(first.received_at);
    assert!(
        gap >= Duration::from_secs(4),
        "two logins {gap:?} apart; expected at least retry.rejected (4 s)"
    );
    // The wait doubles: the third login is at least 8 s after the second.
    d.wait_for_log_count("credentials rejected by the provider", 2, WAIT);
    assert_eq!(emu.stats(Provider::Pontotel).requests, 2);
    assert!(
        d.log_lines("credentials rejected by the provider")
            .last()
            .is_some_and(|l| l.contains("retry_in=7.9") || l.contains("retry_in=8s")),
        "{}",
        d.output()
    );
    stop(&mut d);
}

#[test]
fn status_and_token_work_from_a_shell_without_the_secrets_and_say_whether_a_daemon_runs() {
    // Proves (SPEC §2, issue 13): `status` and `token` read only the config's structure and
    // the state: from a shell without the service's `{ env = … }` secret they show the
    // accounts, the daemon's pid and since when (exit 0), print the token, and once the
    // daemon has stopped say so with exit 3.
    let emu = emulator(LONG);
    let s = Setup::new("status-no-secrets");
    let keys = format!(
        "base_url = \"{}\"\nusername = \"{USERNAME}\"\npassword = {{ env = \"TOKEND_TEST_PW\" }}\n",
        emu.base_url(Provider::Pontotel)
    );
    s.write_config(&format!(
        "{}{}",
        s.header(""),
        account_with(
            "p",
            Provider::Pontotel,
            &keys,
            "",
            &file_sink(&s.sink("p"), "json")
        )
    ));
    let mut cmd = TokendProcess::run_command(&s.config);
    cmd.env("TOKEND_TEST_PW", PASSWORD);
    let mut d = TokendProcess::start(cmd, s.dir.path());
    d.wait_for_log(READY_LINE, WAIT);
    let config = s.config.display().to_string();
    let operator = |args: &[&str]| {
        let mut cmd = tokend_cmd(args);
        cmd.env_remove("TOKEND_TEST_PW");
        run_cmd(cmd)
    };
    let status = operator(&["-c", &config, "status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status
            .stdout
            .contains(&format!("daemon: running (tokend run, pid {}", d.pid())),
        "{status:?}"
    );
    assert!(status.stdout.contains("valid"), "{status:?}");
    let json = operator(&["-c", &config, "status", "--json"]);
    let doc: Value = serde_json::from_str(&json.stdout).expect("status --json is JSON");
    assert_eq!(doc["daemon"]["pid"], d.pid().as_raw(), "{}", json.stdout);
    assert_eq!(doc["accounts"][0]["state"], "valid", "{}", json.stdout);
    let token = operator(&["-c", &config, "token", "p"]);
    assert_eq!(token.code, 0, "{token:?}");
    assert_eq!(
        Some(token.stdout.trim().to_string()),
        sink_token(&s.sink("p"))
    );
    stop(&mut d);
    let status = operator(&["-c", &config, "status"]);
    assert_eq!(status.code, 3, "{status:?}");
    assert!(status.stdout.contains("daemon: not running"), "{status:?}");
}

#[test]
fn a_secret_file_in_a_subdirectory_is_watched() {
    // Proves (issue 13): a `{ file = "secrets/pw" }` below the config's directory is
    // watched like the config: rewriting it reloads (and a changed password is a
    // credentials change: a new login).
    let emu = emulator(LONG);
    let s = Setup::new("secret-watch");
    let secret = s.dir.join("secrets/pw");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    write_private(&secret, PASSWORD);
    let keys = format!(
        "base_url = \"{}\"\nusername = \"{USERNAME}\"\npassword = {{ file = \"secrets/pw\" }}\n",
        emu.base_url(Provider::Pontotel)
    );
    s.write_config(&format!(
        "{}{}",
        s.header(""),
        account_with(
            "p",
            Provider::Pontotel,
            &keys,
            "",
            &file_sink(&s.sink("p"), "json")
        )
    ));
    let mut d = s.start_ready();
    assert_eq!(emu.stats(Provider::Pontotel).logins, 1);
    write_private(&secret, &format!("{PASSWORD}\n"));
    d.wait_for_log("config reloaded", WAIT);
    assert!(
        d.log_lines("config reloaded")[0].contains("config file changed"),
        "{}",
        d.output()
    );
    stop(&mut d);
}

#[test]
fn a_credentials_edit_keeps_the_valid_token_served_until_a_new_login_succeeds() {
    // Proves (issue 13): an edit of the credentials logs in again at once, but until that
    // login succeeds the still-valid token stays in the sinks, in the state and in
    // `status` (as "superseded"), instead of `status` showing "none" while the sink holds it.
    let emu = emulator(LONG);
    let s = Setup::new("superseded");
    let with_password = |password: &str| {
        let keys = format!(
            "base_url = \"{}\"\nusername = \"{USERNAME}\"\npassword = \"{password}\"\n",
            emu.base_url(Provider::Pontotel)
        );
        format!(
            "{}{}",
            s.header(""),
            account_with(
                "p",
                Provider::Pontotel,
                &keys,
                "",
                &file_sink(&s.sink("p"), "json")
            )
        )
    };
    s.write_config(&with_password(PASSWORD));
    let mut d = s.start_ready();
    let token = sink_token(&s.sink("p")).expect("a token");
    emu.reject_credentials(Provider::Pontotel, true);
    s.write_config(&with_password("a-new-password"));
    d.wait_for_log("credentials rejected by the provider", WAIT);
    assert_eq!(
        emu.stats(Provider::Pontotel).logins,
        2,
        "one new login at once"
    );
    assert_eq!(
        sink_token(&s.sink("p")),
        Some(token.clone()),
        "the sink keeps the token"
    );
    assert_eq!(
        s.state_of("p").expect("state")["token"]["access_token"],
        token.as_str()
    );
    let status = run_cmd(tokend_cmd(&[
        "-c",
        &s.config.display().to_string(),
        "status",
        "--json",
    ]));
    let doc: Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(
        doc["accounts"][0]["state"], "superseded",
        "{}",
        status.stdout
    );
    // A credentials change ends the rejected wait at once: the right password again
    // logs in and replaces the superseded token.
    emu.reject_credentials(Provider::Pontotel, false);
    s.write_config(&with_password(PASSWORD));
    wait_for("a new token after the second edit", WAIT, || {
        sink_token(&s.sink("p")).is_some_and(|t| t != token)
    });
    stop(&mut d);
}

#[test]
fn sigkill_during_zarv_rotation_never_reuses_a_spent_refresh_token() {
    // Proves crash safety of rotating refresh tokens: across SIGKILLs at random points
    // (and one while a refresh is certainly in flight) the daemon never presents a spent
    // refresh token, and logs in again only when its saved state says the held refresh
    // token may have been spent (`refresh_in_flight`) or it has none.
    // 3 s: the shortest lifetime a token may have (it must live 2 s after receipt).
    let emu = emulator(Duration::from_secs(3));
    // Half the requests take 300 ms, so random kills often land mid-request.
    let slow = || {
        emu.set_random_faults(
            Provider::Zarv,
            0.5,
            vec![Fault::Delay(Duration::from_millis(300))],
        )
    };
    slow();
    let s = Setup::new("daemon-sigkill");
    s.write_config(&(s.header("") + &simple_account(&s, &emu, "zarv", Provider::Zarv)));
    let mut secrets = Secrets::new();
    let mut runs = Vec::new();
    let mut in_flight_restarts = 0;
    // The kill points come from a printed seed, so a failure can be replayed.
    let mut kill_points =
        rand::rngs::StdRng::seed_from_u64(crate::support::test_seed("kill points"));
    for cycle in 0..9 {
        let saved = s.state_of("zarv");
        let may_login = match &saved {
            None => true,
            Some(st) => st["refresh_in_flight"] == true || st["refresh_token"].is_null(),
        };
        in_flight_restarts += usize::from(saved.is_some() && may_login);
        let before = emu.stats(Provider::Zarv);
        let started = Instant::now();
        let mut d = s.start();
        if cycle == 5 {
            // Deterministic: kill while a refresh is at the provider.
            emu.clear_faults(Provider::Zarv);
            wait_for("a refresh in this run", WAIT, || {
                emu.stats(Provider::Zarv).refreshes > before.refreshes
            });
            // The fault counter moves when the delayed request has arrived (in_flight
            // alone could be the tail of the previous refresh).
            let faults = emu.stats(Provider::Zarv).faults;
            emu.fail_next(Provider::Zarv, 1, Fault::Delay(Duration::from_secs(30)));
            wait_for("a refresh held at the provider", WAIT, || {
                emu.stats(Provider::Zarv).faults > faults
            });
        } else {
            let ms = kill_points.random_range(150..2700);
            // The random kill point itself.
            std::thread::sleep(Duration::from_millis(ms));
        }
        d.kill();
        let kill_after = started.elapsed();
        wait_for("the killed daemon's requests to end", WAIT, || {
            emu.stats(Provider::Zarv).in_flight == 0
        });
        let after = emu.stats(Provider::Zarv);
        let logins = after.logins - before.logins;
        runs.push(format!(
            "cycle {cycle}: killed after {kill_after:?}, +{logins} logins, +{} refreshes",
            after.refreshes - before.refreshes
        ));
        if cycle == 5 {
            let st = s.state_of("zarv").expect("state");
            assert_eq!(
                st["refresh_in_flight"], true,
                "a refresh was in flight at the kill: the state must say the token may be spent"
            );
            slow();
        }
        assert!(
            logins <= u64::from(may_login),
            "{}\nthe run logged in although the saved state held a usable refresh token",
            runs.join("\n")
        );
        assert_eq!(
            after.spent_refresh_reuses,
            0,
            "{}\na spent refresh token was presented",
            runs.join("\n")
        );
        secrets.harvest_state(&s.state);
        secrets.assert_not_in(&[&d]);
    }
    eprintln!("{}", runs.join("\n"));
    let total = emu.stats(Provider::Zarv);
    assert!(in_flight_restarts >= 1, "{}", runs.join("\n"));
    assert!(total.refreshes >= 3, "too few rotations: {total:?}");
}

// ---------------------------------------------------------------------------------------
// 4. Restart
// ---------------------------------------------------------------------------------------

#[test]
fn restart_with_fresh_state_makes_no_request_and_writes_the_sinks_again() {
    // Proves state reuse: a restart with still-fresh tokens sends nothing to any provider,
    // keeps every state file as it was (token and planned refresh) and still rewrites
    // every token file (a sink under /run may be gone after a reboot).
    let emu = emulator(LONG);
    let s = Setup::new("daemon-restart");
    let providers = [Provider::Zarv, Provider::Pontotel, Provider::Itflex];
    let mut text = s.header("");
    for p in providers {
        text += &simple_account(&s, &emu, p.name(), p);
    }
    s.write_config(&text);
    let mut first = s.start_ready();
    let tokens: Vec<String> = providers
        .iter()
        .map(|p| sink_token(&s.sink(p.name())).expect("token file"))
        .collect();
    stop(&mut first);
    let before: Vec<u64> = providers.iter().map(|p| emu.stats(*p).requests).collect();
    let states: Vec<Value> = providers
        .iter()
        .map(|p| s.state_of(p.name()).expect("state"))
        .collect();
    for p in providers {
        std::fs::remove_file(s.sink(p.name())).expect("remove token file");
    }
    let mut second = s.start_ready();
    for (p, token) in providers.iter().zip(&tokens) {
        wait_for_file(&s.sink(p.name()));
        assert_eq!(
            sink_token(&s.sink(p.name())).as_ref(),
            Some(token),
            "{p}: the saved token"
        );
    }
    let after: Vec<u64> = providers.iter().map(|p| emu.stats(*p).requests).collect();
    assert_eq!(after, before, "requests per provider across the restart");
    assert_eq!(
        second.log_lines("reusing the saved token").len(),
        providers.len()
    );
    // The planned refreshes are kept too: the restart rewrote no state file.
    for (p, state) in providers.iter().zip(&states) {
        assert_eq!(
            &s.state_of(p.name()).expect("state"),
            state,
            "{p}: state file"
        );
    }
    stop(&mut second);
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    secrets.assert_not_in(&[&first, &second]);
}

#[test]
fn restart_with_a_due_token_and_the_provider_down_still_writes_the_sinks() {
    // Proves a restart never leaves a token file missing while a valid token is saved:
    // the token is due for refresh and the provider answers 503, yet the still-valid
    // token is written (a reboot empties /run) while the daemon keeps retrying.
    let emu = emulator(LONG);
    let s = Setup::new("daemon-restart-due");
    let body = simple_account(&s, &emu, "a", Provider::Pontotel);
    s.write_config(&(s.header("") + &body));
    let mut first = s.start_ready();
    let token = sink_token(&s.sink("a")).expect("token file");
    stop(&mut first);
    std::fs::remove_file(s.sink("a")).expect("remove token file");
    // Same credentials (the state stays), but due 1 s after it was obtained.
    s.write_config(&(s.header("[daemon.refresh]\nratio = 0.01\njitter = 0.0\n") + &body));
    emu.set_random_faults(Provider::Pontotel, 1.0, vec![Fault::Status(503)]);
    let obtained = s.state_of("a").expect("state")["token"]["obtained_at_ms"]
        .as_u64()
        .expect("obtained_at_ms");
    wait_for("the saved token to be due", WAIT, || {
        now_ms() > obtained + 1500
    });
    let mut second = s.start();
    wait_for("a failed refresh attempt", WAIT, || {
        emu.stats(Provider::Pontotel).faults >= 1
    });
    wait_for_file(&s.sink("a"));
    assert_eq!(sink_token(&s.sink("a")), Some(token), "the saved token");
    stop(&mut second);
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    secrets.assert_not_in(&[&first, &second]);
}

// ---------------------------------------------------------------------------------------
// 5. Reload: four ways to change the config
// ---------------------------------------------------------------------------------------

#[test]
fn reload_on_in_place_write() {
    // Proves the watcher sees a config rewritten in place (truncate + write).
    let s = Setup::new("daemon-reload-inplace");
    reload_case(&s, |s, new| write_private(&s.config, new));
}

#[test]
fn reload_on_editor_rename() {
    // Proves the watcher sees an editor-style save: write a temporary file, rename it over.
    let s = Setup::new("daemon-reload-rename");
    reload_case(&s, |s, new| {
        let tmp = s.dir.join(".tokend.toml.swp");
        write_private(&tmp, new);
        std::fs::rename(&tmp, &s.config).expect("rename over the config");
    });
}

#[test]
fn reload_on_configmap_symlink_swap() {
    // Proves the watcher sees a Kubernetes ConfigMap update: the config is a symlink
    // through `..data`, which is atomically re-pointed at a new timestamped directory.
    let mut s = Setup::new("daemon-reload-configmap");
    let map = s.dir.join("configmap");
    std::fs::create_dir_all(map.join("..2024_01_01_00_00_00.1")).expect("mkdir");
    std::os::unix::fs::symlink("..2024_01_01_00_00_00.1", map.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/tokend.toml", map.join("tokend.toml")).expect("symlink");
    s.config = map.join("tokend.toml");
    reload_case(&s, |_, new| {
        // What kubelet does (AtomicWriter): new dir, `..data_tmp` link, rename over `..data`.
        let dir = map.join("..2024_01_01_00_01_00.2");
        std::fs::create_dir_all(&dir).expect("mkdir");
        write_private(&dir.join("tokend.toml"), new);
        std::os::unix::fs::symlink("..2024_01_01_00_01_00.2", map.join("..data_tmp"))
            .expect("symlink");
        std::fs::rename(map.join("..data_tmp"), map.join("..data")).expect("swap ..data");
        std::fs::remove_dir_all(map.join("..2024_01_01_00_00_00.1")).expect("remove old");
    });
}

/// The shared body of the watcher reload tests: account `a` (Pontotel) runs, `apply`
/// writes a config that adds `b` (Zarv); `b` must start and `a` must not be touched.
fn reload_case(s: &Setup, apply: impl FnOnce(&Setup, &str)) {
    let emu = emulator(LONG);
    let old = s.header("") + &simple_account(s, &emu, "a", Provider::Pontotel);
    let new = format!("{old}{}", simple_account(s, &emu, "b", Provider::Zarv));
    // In the ConfigMap layout this writes through the symlinks into the current dir.
    s.write_config(&old);
    let mut d = s.start_ready();
    let a_token = sink_token(&s.sink("a")).expect("a's token");
    apply(s, &new);
    wait_for_file(&s.sink("b"));
    d.wait_for_log("config reloaded", WAIT);
    assert!(emu.token_is_valid(Provider::Zarv, &sink_token(&s.sink("b")).expect("b")));
    assert_eq!(sink_token(&s.sink("a")), Some(a_token), "a's token");
    let pontotel = emu.stats(Provider::Pontotel);
    assert_eq!(pontotel.requests, 1, "a was left alone: {pontotel:?}");
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    stop(&mut d);
    secrets.assert_not_in(&[&d]);
}

#[test]
fn reload_on_sighup() {
    // Proves SIGHUP reloads: a password file the watcher does not watch is fixed, and only
    // the signal makes the daemon read it and log in with it.
    let emu = emulator(LONG);
    let s = Setup::new("daemon-reload-sighup");
    let pw = s.dir.write("secrets/pontotel-password", "wrong-password\n");
    let keys = format!(
        "base_url = \"{}\"\nusername = \"{USERNAME}\"\npassword = {{ file = \"{}\" }}\n",
        emu.base_url(Provider::Pontotel),
        pw.display()
    );
    let sink = file_sink(&s.sink("a"), "json");
    let text = s.header("") + &account_with("a", Provider::Pontotel, &keys, "", &sink);
    s.write_config(&text);
    let mut d = s.start_ready();
    assert!(!s.sink("a").exists(), "the wrong password got a token");
    d.wait_for_log("credentials rejected", WAIT);
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("fix the password");
    d.signal(Signal::SIGHUP);
    wait_for_file(&s.sink("a"));
    d.wait_for_log("config reloaded", WAIT);
    let token = sink_token(&s.sink("a")).expect("token");
    assert!(emu.token_is_valid(Provider::Pontotel, &token));
    let mut secrets = Secrets::new();
    secrets.add("wrong-password");
    secrets.add(&token);
    stop(&mut d);
    secrets.assert_not_in(&[&d]);
}

// ---------------------------------------------------------------------------------------
// 6. Invalid edits
// ---------------------------------------------------------------------------------------

#[test]
fn an_invalid_edit_is_reported_with_its_location_and_the_old_config_keeps_running() {
    // Proves reload validates the whole new file first: a TOML syntax error and a bad
    // value are each logged as file:line:column, the running account keeps working, and
    // a later valid edit is applied.
    let emu = emulator(LONG);
    let s = Setup::new("daemon-invalid-edit");
    let old = s.header("") + &simple_account(&s, &emu, "a", Provider::Pontotel);
    s.write_config(&old);
    let mut d = s.start_ready();
    let config = s.config.display().to_string();
    // A syntax error: an unterminated string on the last line.
    let broken = format!("{old}\n[[account]]\nname = \"b\n");
    let broken_line = broken.lines().count();
    write_private(&s.config, &broken);
    d.wait_for_log_count("reload failed; keeping the running config", 1, WAIT);
    let located = format!("{config}:{broken_line}:");
    // Within the record's one line: a log record never spans lines (issue 12).
    assert!(
        d.output().lines().any(|l| l.contains(&located)),
        "expected a line starting with {located:?}"
    );
    // A bad value in an otherwise valid file.
    let b = account(
        &emu,
        "b",
        Provider::Zarv,
        "",
        "",
        &format!("{}mode = \"0999\"\n", file_sink(&s.sink("b"), "json")),
    );
    let bad = format!("{old}{b}");
    let mode_line = bad
        .lines()
        .position(|l| l.starts_with("mode = "))
        .expect("mode line")
        + 1;
    write_private(&s.config, &bad);
    d.wait_for_log_count("reload failed; keeping the running config", 2, WAIT);
    let located = format!("{config}:{mode_line}:8: account \"b\" sink[0].mode: \"0999\"");
    assert!(
        d.output().lines().any(|l| l.contains(&located)),
        "expected a line starting with {located:?}"
    );
    assert!(!s.sink("b").exists(), "an invalid config was applied");
    assert_eq!(emu.stats(Provider::Zarv).requests, 0);
    // The old config still runs: `a` answers SIGUSR1.
    d.signal(Signal::SIGUSR1);
    wait_for("a refreshed", WAIT, || {
        emu.stats(Provider::Pontotel).requests == 2
    });
    // And a valid edit after the failures is applied.
    write_private(
        &s.config,
        &format!("{old}{}", simple_account(&s, &emu, "b", Provider::Zarv)),
    );
    wait_for_file(&s.sink("b"));
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    stop(&mut d);
    secrets.assert_not_in(&[&d]);
}

// ---------------------------------------------------------------------------------------
// 7. Reload diffs
// ---------------------------------------------------------------------------------------

#[test]
fn reload_touches_only_the_accounts_that_changed() {
    // Proves the reload diff: an unchanged account makes no request and keeps its token
    // and timer; a sinks-only change writes the current token to the new sink without a
    // request; a provider-settings change logs in at once (at the new endpoint); a changed
    // `timeout` updates the running task without a request; an added
    // account starts; a removed one stops and its files stay.
    let emu = emulator(LONG);
    let emu2 = emulator(LONG);
    // The removed account refreshes every 2 s or so, so its silence afterwards shows (4 s
    // tokens: a JWT `exp` in whole seconds must still leave 2 s after receipt).
    let emu_short = emulator(Duration::from_secs(4));
    let s = Setup::new("daemon-reload-diff");
    let keep = simple_account(&s, &emu, "keep", Provider::Pontotel);
    let sinks_before = simple_account(&s, &emu, "sinks", Provider::Zarv);
    let sinks_after = account(
        &emu,
        "sinks",
        Provider::Zarv,
        "",
        "",
        &(file_sink(&s.sink("sinks"), "json") + &file_sink(&s.dir.join("out/sinks.raw"), "raw")),
    );
    let creds_before = simple_account(&s, &emu, "creds", Provider::Hubsoft);
    let creds_after = simple_account(&s, &emu2, "creds", Provider::Hubsoft);
    let gone = simple_account(&s, &emu_short, "gone", Provider::Funcional);
    // Refreshes on the same 4 s tokens as "gone", and stays: the clock of the check below.
    let witness = simple_account(&s, &emu_short, "witness", Provider::Pontotel);
    let added = simple_account(&s, &emu, "added", Provider::Itflex);
    // A request setting that is not a credential: the running task takes it, no request.
    let tuned_before = simple_account(&s, &emu, "tuned", Provider::Pontotel);
    let tuned_after = account(
        &emu,
        "tuned",
        Provider::Pontotel,
        "timeout = \"9s\"\n",
        "",
        &file_sink(&s.sink("tuned"), "json"),
    );
    s.write_config(&format!(
        "{}{keep}{sinks_before}{creds_before}{gone}{tuned_before}{witness}",
        s.header("")
    ));
    let mut d = s.start_ready();
    let keep_state = s.state_of("keep").expect("keep state");
    let sinks_token = sink_token(&s.sink("sinks")).expect("sinks token");
    let before: BTreeMap<&str, u64> = [Provider::Pontotel, Provider::Zarv, Provider::Hubsoft]
        .iter()
        .map(|p| (p.name(), emu.stats(*p).requests))
        .collect();
    let tuned_state = s.state_of("tuned").expect("tuned state");
    write_private(
        &s.config,
        &format!(
            "{}{keep}{sinks_after}{creds_after}{added}{tuned_after}{witness}",
            s.header("")
        ),
    );
    d.wait_for_log("config reloaded", WAIT);
    d.wait_for_log("request settings", WAIT);
    let gone_requests = emu_short.stats(Provider::Funcional).requests;
    // Added: started.
    wait_for_file(&s.sink("added"));
    assert_eq!(emu.stats(Provider::Itflex).logins, 1);
    // Sinks only: the current token in the new file, nothing asked of the provider.
    let raw = s.dir.join("out/sinks.raw");
    wait_for_file(&raw);
    assert_eq!(
        std::fs::read_to_string(&raw).expect("raw sink"),
        format!("{sinks_token}\n")
    );
    // Credentials/provider settings: a login now, at the new endpoint.
    wait_for("creds to log in at the new endpoint", WAIT, || {
        sink_token(&s.sink("creds")).is_some_and(|t| emu2.token_is_valid(Provider::Hubsoft, &t))
    });
    assert_eq!(emu2.stats(Provider::Hubsoft).logins, 1);
    // Unchanged: no request, same token, same timer.
    let after: BTreeMap<&str, u64> = [Provider::Pontotel, Provider::Zarv, Provider::Hubsoft]
        .iter()
        .map(|p| (p.name(), emu.stats(*p).requests))
        .collect();
    assert_eq!(after, before, "requests per provider at the old endpoint");
    let keep_after = s.state_of("keep").expect("keep state");
    assert_eq!(keep_after["token"], keep_state["token"]);
    assert_eq!(keep_after["next_refresh_ms"], keep_state["next_refresh_ms"]);
    let tuned_after = s.state_of("tuned").expect("tuned state");
    assert_eq!(tuned_after["token"], tuned_state["token"]);
    assert_eq!(
        tuned_after["next_refresh_ms"],
        tuned_state["next_refresh_ms"]
    );
    // Removed: its files stay and it sends nothing more, while the witness on the same
    // token lifetime refreshes twice.
    witness_ticks(&emu_short, 2);
    assert_eq!(
        emu_short.stats(Provider::Funcional).requests,
        gone_requests,
        "the removed account kept refreshing"
    );
    assert!(s.sink("gone").exists() && s.state.join("gone.json").exists());
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    stop(&mut d);
    secrets.assert_not_in(&[&d]);
}

#[test]
fn a_sinks_only_reload_keeps_a_failing_sink_retrying() {
    // Proves sinks stay independent across a sinks-only reload: a sink that fails (its
    // directory is blocked by a file) keeps its own retries after another sink is added,
    // and gets the token once unblocked, all without a request to the provider.
    let emu = emulator(LONG);
    let s = Setup::new("daemon-reload-failing-sink");
    let blocker = s.dir.write("out/blocked", "not a directory\n");
    let stuck = blocker.join("token.json");
    let header = s.header("[daemon.retry]\ninitial = \"200ms\"\nmax = \"1s\"\n");
    let sinks = file_sink(&stuck, "json") + &file_sink(&s.sink("a"), "json");
    let added = s.dir.join("out/a.raw");
    let before = header.clone() + &account(&emu, "a", Provider::Pontotel, "", "", &sinks);
    let after_sinks = sinks + &file_sink(&added, "raw");
    let after = header + &account(&emu, "a", Provider::Pontotel, "", "", &after_sinks);
    s.write_config(&before);
    let mut d = s.start_ready();
    d.wait_for_log_count("sink write failed", 2, WAIT);
    write_private(&s.config, &after);
    wait_for_file(&added);
    std::fs::remove_file(&blocker).expect("unblock");
    wait_for_file(&stuck);
    assert_eq!(sink_token(&stuck), sink_token(&s.sink("a")));
    assert_eq!(emu.stats(Provider::Pontotel).requests, 1);
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    stop(&mut d);
    secrets.assert_not_in(&[&d]);
}

// ---------------------------------------------------------------------------------------
// 8. Signals
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_and_sigint_exit_0_promptly_even_with_a_request_hanging() {
    // Proves shutdown: SIGTERM and SIGINT each end the daemon with status 0 well within
    // 10 s, although a provider request hangs (15 s timeout) at that moment.
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let emu = emulator(LONG);
        let s = Setup::new("daemon-sigterm");
        s.write_config(&format!(
            "{}{}{}",
            s.header(""),
            simple_account(&s, &emu, "ok", Provider::Pontotel),
            simple_account(&s, &emu, "hung", Provider::Zarv)
        ));
        emu.fail_next(Provider::Zarv, 1, Fault::Delay(Duration::from_secs(60)));
        let mut d = s.start();
        wait_for_file(&s.sink("ok"));
        wait_for("the hanging request", WAIT, || {
            emu.stats(Provider::Zarv).in_flight == 1
        });
        let sent = Instant::now();
        d.signal(signal);
        let status = d.wait_exit(Duration::from_secs(10));
        let took = sent.elapsed();
        assert_eq!(status.code(), Some(0), "{signal}");
        assert!(
            took < Duration::from_secs(10),
            "{signal}: exit took {took:?}"
        );
        eprintln!("{signal}: exited 0 after {took:?}");
        let mut secrets = Secrets::new();
        secrets.harvest_state(&s.state);
        secrets.assert_not_in(&[&d]);
    }
}

#[test]
fn sigusr1_refreshes_every_account_once_even_when_sent_twice() {
    // Proves SIGUSR1 refreshes every account now, as one flight per account: two signals
    // back to back, and a second one while the first refresh is still at the provider,
    // each cause one request per account.
    let emu = emulator(LONG);
    let witness = emulator(Duration::from_secs(3));
    let s = Setup::new("daemon-sigusr1");
    let providers = [Provider::Zarv, Provider::Pontotel, Provider::Hubsoft];
    let mut text = s.header("");
    for p in providers {
        text += &simple_account(&s, &emu, p.name(), p);
    }
    text += &simple_account(&s, &witness, "witness", Provider::Pontotel);
    s.write_config(&text);
    let mut d = s.start_ready();
    let requests =
        |emu: &Emulator| -> Vec<u64> { providers.iter().map(|p| emu.stats(*p).requests).collect() };
    assert_eq!(requests(&emu), vec![1, 1, 1]);
    // Twice, back to back. Each refresh is held 1 s at the provider, so the second
    // signal surely arrives while the first one's flight is on (if the kernel did not
    // already merge the two).
    for p in providers {
        emu.fail_next(p, 1, Fault::Delay(Duration::from_secs(1)));
    }
    d.signal(Signal::SIGUSR1);
    d.signal(Signal::SIGUSR1);
    wait_for("one refresh per account", WAIT, || {
        requests(&emu).iter().all(|n| *n >= 2)
            && providers.iter().all(|p| emu.stats(*p).in_flight == 0)
    });
    // Two witness refreshes (≥ 2 s of the daemon's own activity): longer than the 1 s a
    // second flight would wait.
    witness_ticks(&witness, 2);
    assert_eq!(requests(&emu), vec![2, 2, 2], "after two quick SIGUSR1s");
    // A second signal while the first refresh is in flight joins that flight.
    for p in providers {
        emu.fail_next(p, 1, Fault::Delay(Duration::from_millis(1500)));
    }
    d.signal(Signal::SIGUSR1);
    wait_for("the refreshes in flight", WAIT, || {
        providers.iter().all(|p| emu.stats(*p).in_flight == 1)
    });
    d.signal(Signal::SIGUSR1);
    wait_for("one more refresh per account", WAIT, || {
        requests(&emu).iter().all(|n| *n >= 3)
            && providers.iter().all(|p| emu.stats(*p).in_flight == 0)
    });
    witness_ticks(&witness, 2);
    assert_eq!(
        requests(&emu),
        vec![3, 3, 3],
        "after a SIGUSR1 during a flight"
    );
    for p in providers {
        assert!(emu.token_is_valid(p, &sink_token(&s.sink(p.name())).expect("token")));
    }
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    stop(&mut d);
    secrets.assert_not_in(&[&d]);
}

// ---------------------------------------------------------------------------------------
// 9. sd_notify
// ---------------------------------------------------------------------------------------

/// A test `NOTIFY_SOCKET`: a datagram socket whose messages a thread collects, each with
/// the result of `probe` run the moment it arrived.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(path: PathBuf, probe: impl Fn() -> String + Send + 'static) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (messages, stop) = (messages.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let probed = probe();
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        messages.lock().expect("lock").push((text, probed));
                    }
                }
            })
        };
        NotifySocket {
            path,
            messages,
            stop,
            thread: Some(thread),
        }
    }

    /// Every datagram so far, with its probe result.
    fn all(&self) -> Vec<(String, String)> {
        self.messages.lock().expect("lock").clone()
    }

    /// Datagrams so far that hold the line `line`.
    fn count(&self, line: &str) -> usize {
        self.all()
            .iter()
            .filter(|(m, _)| m.lines().any(|l| l == line))
            .count()
    }

    fn wait_for(&self, line: &str, count: usize) {
        wait_for(
            &format!("{count}× {line:?} on NOTIFY_SOCKET: {:?}", self.all()),
            WAIT,
            || self.count(line) >= count,
        );
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn sd_notify_reports_ready_status_reloading_and_watchdog() {
    // Proves the systemd protocol: READY=1 once every account has had its first attempt
    // (one failing), STATUS= with fresh/total, RELOADING=1 then READY=1 around a reload,
    // WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM.
    let emu = emulator(LONG);
    emu.reject_credentials(Provider::Zarv, true);
    let s = Setup::new("daemon-sd-notify");
    s.write_config(&format!(
        "{}{}{}",
        s.header(""),
        simple_account(&s, &emu, "good", Provider::Pontotel),
        simple_account(&s, &emu, "bad", Provider::Zarv)
    ));
    let (good_sink, bad_state) = (s.sink("good"), s.state.join("bad.json"));
    let socket = NotifySocket::bind(s.dir.join("notify.sock"), move || {
        // At READY both accounts must have been tried: the good one wrote its file, the bad
        // one recorded its error.
        let bad_tried = read_json(&bad_state).is_some_and(|st| !st["last_error"].is_null());
        format!("good_written={} bad_tried={bad_tried}", good_sink.exists())
    });
    let mut d = TokendProcess::run_with_env(
        &s.config,
        s.dir.path(),
        [
            ("NOTIFY_SOCKET", socket.path.as_os_str()),
            ("WATCHDOG_USEC", "400000".as_ref()),
        ],
    );
    socket.wait_for("READY=1", 1);
    let all = socket.all();
    let (ready, probed) = all
        .iter()
        .find(|(m, _)| m.lines().any(|l| l == "READY=1"))
        .expect("READY");
    assert_eq!(probed, "good_written=true bad_tried=true", "at READY=1");
    assert!(
        ready.lines().any(|l| l == "STATUS=1/2 accounts fresh"),
        "READY carries the status: {ready:?}"
    );
    socket.wait_for("WATCHDOG=1", 3);
    d.signal(Signal::SIGHUP);
    socket.wait_for("READY=1", 2);
    let all = socket.all();
    let reloading = all
        .iter()
        .position(|(m, _)| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1: {all:?}"));
    assert!(
        all[reloading]
            .0
            .lines()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 needs MONOTONIC_USEC (systemd Type=notify-reload): {all:?}"
    );
    assert!(
        all[reloading..]
            .iter()
            .any(|(m, _)| m.lines().any(|l| l == "READY=1")),
        "READY=1 after RELOADING=1: {all:?}"
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    socket.wait_for("STOPPING=1", 1);
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    secrets.assert_not_in(&[&d]);
}

#[test]
fn sd_notify_ready_waits_for_the_first_round_even_across_a_reload() {
    // Proves READY=1 means "first round done" even when a reload (SIGHUP) comes while an
    // account's first attempt still hangs: no RELOADING=1/READY=1 before that attempt
    // ends, then one READY=1.
    let emu = emulator(LONG);
    emu.fail_next(Provider::Zarv, 1, Fault::Delay(Duration::from_secs(10)));
    let s = Setup::new("daemon-sd-notify-early-reload");
    let slow = account(
        &emu,
        "slow",
        Provider::Zarv,
        "timeout = \"3s\"\n",
        "",
        &file_sink(&s.sink("slow"), "json"),
    );
    s.write_config(&format!(
        "{}{}{slow}",
        s.header(""),
        simple_account(&s, &emu, "quick", Provider::Pontotel),
    ));
    let slow_state = s.state.join("slow.json");
    let socket = NotifySocket::bind(s.dir.join("notify.sock"), move || {
        let tried = read_json(&slow_state).is_some_and(|st| !st["last_error"].is_null());
        format!("slow_tried={tried}")
    });
    let mut d = TokendProcess::run_with_env(
        &s.config,
        s.dir.path(),
        [("NOTIFY_SOCKET", socket.path.as_os_str())],
    );
    wait_for_file(&s.sink("quick"));
    wait_for("the slow account's first attempt to hang", WAIT, || {
        emu.stats(Provider::Zarv).in_flight == 1
    });
    d.signal(Signal::SIGHUP);
    socket.wait_for("READY=1", 1);
    let all = socket.all();
    let first_ready = all
        .iter()
        .position(|(m, _)| m.lines().any(|l| l == "READY=1"))
        .expect("READY=1");
    assert_eq!(
        all[first_ready].1, "slow_tried=true",
        "READY=1 before the first round was done: {all:?}"
    );
    assert!(
        all[..first_ready]
            .iter()
            .all(|(m, _)| !m.lines().any(|l| l == "RELOADING=1")),
        "RELOADING=1 before READY=1: {all:?}"
    );
    stop(&mut d);
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    secrets.assert_not_in(&[&d]);
}

// ---------------------------------------------------------------------------------------
// 10. The state lock
// ---------------------------------------------------------------------------------------

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    // Proves the lock: a second `run` (and a `once`) on a state_dir in use exits non-zero
    // with a message naming the state dir, and the first daemon runs on undisturbed.
    let emu = emulator(LONG);
    let s = Setup::new("daemon-lock");
    s.write_config(&(s.header("") + &simple_account(&s, &emu, "a", Provider::Pontotel)));
    let mut first = s.start_ready();
    let mut second = s.start();
    let status = second.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "second daemon: {}", second.output());
    let message = second.output();
    assert!(
        message.contains("another tokend holds the lock")
            && message.contains(&s.state.display().to_string()),
        "unclear refusal: {message}"
    );
    let once = run_cmd(tokend_cmd(&["once", "-c", &s.config.display().to_string()]));
    assert_eq!(once.code, 1, "{once:?}");
    assert!(
        once.stderr.contains("another tokend holds the lock"),
        "{once:?}"
    );
    assert!(first.is_running());
    first.signal(Signal::SIGUSR1);
    wait_for("the first daemon still works", WAIT, || {
        emu.stats(Provider::Pontotel).requests == 2
    });
    stop(&mut first);
    let mut secrets = Secrets::new();
    secrets.harvest_state(&s.state);
    secrets.assert_not_in(&[&first, &second]);
}

// ---------------------------------------------------------------------------------------
// 11. Secrets in logs
// ---------------------------------------------------------------------------------------

#[test]
fn no_secret_reaches_any_log_line() {
    // Proves SPEC §4 "Secrets never leak" for the daemon's log at debug level: every
    // provider, rotations, refresh tokens revoked (fallback to login), credentials
    // rejected, garbage answers, GraphQL errors, a failed reload of a config with a
    // mistyped secret, SIGUSR1 and SIGHUP. 4 s tokens: the shortest a JWT `exp` in whole
    // seconds can give that still lives 2 s after receipt.
    let emu = emulator(Duration::from_secs(4));
    let s = Setup::new("daemon-secrets");
    let mut text = s.header("log_level = \"debug\"\nlog_format = \"json\"\n");
    // The header sets log_format twice otherwise.
    text = text.replacen("log_format = \"text\"\n", "", 1);
    for p in Provider::ALL {
        let keys = if p == Provider::Oauth2 {
            "grant = \"password\"\nusername = \"demo\"\npassword = \"demo-password\"\n"
        } else {
            ""
        };
        text += &account(
            &emu,
            p.name(),
            p,
            keys,
            "",
            &file_sink(&s.sink(p.name()), "json"),
        );
    }
    s.write_config(&text);
    for p in [Provider::Funcional, Provider::Hubsoft, Provider::Oauth2] {
        emu.set_random_faults(
            p,
            0.3,
            vec![Fault::Garbage, Fault::GraphqlError, Fault::Status(502)],
        );
    }
    let mut d = s.start_ready();
    let mut secrets = Secrets::new();
    let tokens_seen = |secrets: &mut Secrets| {
        secrets.harvest_state(&s.state);
        for p in Provider::ALL {
            if let Some(t) = sink_token(&s.sink(p.name())) {
                secrets.add(&t);
            }
        }
    };
    tokens_seen(&mut secrets);
    emu.reject_credentials(Provider::Itflex, true);
    emu.revoke_all(Provider::Zarv);
    emu.revoke_all(Provider::Hubsoft);
    d.signal(Signal::SIGUSR1);
    wait_for(
        "a rejected login and a refresh token fallback",
        WAIT,
        || {
            let out = d.output();
            out.contains("credentials rejected") && out.contains("refresh token rejected")
        },
    );
    tokens_seen(&mut secrets);
    // A mistyped secret in an edit: the error must name the key, not the value.
    let broken = text.replacen(
        &format!("password = \"{PASSWORD}\""),
        &format!("password = {{ value = \"{PASSWORD}\" }}"),
        1,
    );
    write_private(&s.config, &broken);
    d.wait_for_log("reload failed", WAIT);
    write_private(&s.config, &text);
    d.signal(Signal::SIGHUP);
    d.wait_for_log("config reloaded", WAIT);
    // A few more rotations.
    let zarv_refreshes = emu.stats(Provider::Zarv).refreshes;
    wait_for("more rotations", WAIT, || {
        tokens_seen(&mut secrets);
        emu.stats(Provider::Zarv).refreshes >= zarv_refreshes + 3
    });
    tokens_seen(&mut secrets);
    stop(&mut d);
    tokens_seen(&mut secrets);
    assert!(secrets.0.len() > 10, "too few secrets collected");
    secrets.assert_not_in(&[&d]);
    // `status` shows the same state without a secret.
    let status = run_cmd(tokend_cmd(&[
        "status",
        "-c",
        &s.config.display().to_string(),
    ]));
    assert_eq!(status.code, 3, "the daemon was stopped: {status:?}");
    for secret in secrets
        .0
        .iter()
        .map(String::as_str)
        .chain(["eyJ", "def50200"])
    {
        assert!(
            !status.stdout.contains(secret) && !status.stderr.contains(secret),
            "secret {secret:?} in `tokend status`: {status:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 12. Notify hooks
// ---------------------------------------------------------------------------------------

#[test]
fn notify_command_runs_after_the_sinks_with_account_and_expiry_but_no_secret() {
    // Proves `[[account.notify]] command`: it runs after every sink of the account holds
    // the new token, gets TOKEND_ACCOUNT and TOKEND_EXPIRES_AT, and neither its arguments
    // nor its environment hold the token, the refresh token or the password (which the
    // daemon itself got from its environment).
    let emu = emulator(Duration::from_secs(3));
    let s = Setup::new("daemon-notify");
    let hooks = s.dir.join("hooks");
    std::fs::create_dir_all(&hooks).expect("mkdir");
    let (json, raw) = (s.sink("app"), s.dir.join("out/app.token"));
    // Records, per run: both token files as the hook saw them, its environment and argv.
    let script = s.dir.write(
        "hook.sh",
        r#"d="$3/run-$$"
mkdir "$d"
cat "$1" > "$d/json"
cat "$2" > "$d/raw"
env > "$d/env"
echo "$0 $*" > "$d/args"
touch "$d/done"
"#,
    );
    let notify = format!(
        "[[account.notify]]\ncommand = [\"/bin/sh\", \"{}\", \"{}\", \"{}\", \"{}\"]\n",
        script.display(),
        json.display(),
        raw.display(),
        hooks.display()
    );
    // The password comes from tokend's environment, which a hook must not inherit.
    let keys = format!(
        "base_url = \"{}\"\nusername = \"{USERNAME}\"\n\
         password = {{ env = \"TOKEND_TEST_ZARV_PASSWORD\" }}\n",
        emu.base_url(Provider::Zarv)
    );
    let sinks = file_sink(&json, "json") + &file_sink(&raw, "raw");
    let text = s.header("") + &account_with("app", Provider::Zarv, &keys, &notify, &sinks);
    s.write_config(&text);
    let mut d = TokendProcess::run_with_env(
        &s.config,
        s.dir.path(),
        [("TOKEND_TEST_ZARV_PASSWORD", PASSWORD)],
    );
    let runs = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&hooks)
            .expect("hooks dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.join("done").exists())
            .collect();
        v.sort();
        v
    };
    let mut secrets = Secrets::new();
    wait_for("three hook runs (a login and two refreshes)", WAIT, || {
        secrets.harvest_state(&s.state);
        runs().len() >= 3
    });
    stop(&mut d);
    secrets.harvest_state(&s.state);
    for run in runs() {
        let read = |f: &str| std::fs::read_to_string(run.join(f)).expect("hook record");
        let env: BTreeMap<String, String> = read("env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let doc: Value = serde_json::from_str(&read("json")).expect("the json sink at hook time");
        let token = doc["access_token"].as_str().expect("token").to_string();
        secrets.add(&token);
        assert_eq!(env.get("TOKEND_ACCOUNT").map(String::as_str), Some("app"));
        assert_eq!(
            env.get("TOKEND_EXPIRES_AT").map(String::as_str),
            doc["expires_at"].as_str(),
            "{}: the json sink did not yet hold the token the hook was told about",
            run.display()
        );
        assert_eq!(
            read("raw"),
            format!("{token}\n"),
            "{}: the raw sink did not yet hold the new token",
            run.display()
        );
        let exposed = format!("{}\n{}", read("env"), read("args"));
        for secret in secrets.0.iter().chain([&token]) {
            assert!(
                !exposed.contains(secret.as_str()),
                "{}: the hook's environment or arguments hold a secret ({secret:?})",
                run.display()
            );
        }
    }
    secrets.assert_not_in(&[&d]);
}
