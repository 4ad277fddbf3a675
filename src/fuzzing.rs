//! One fuzz input in, the daemon's handling of it out: the shared bodies of the cargo-fuzz
//! targets in `fuzz/` and of the regression tests in `tests/fuzz_regressions.rs`, so a
//! crash the fuzzer found is replayed by `cargo test` through exactly the code it hit.
//! Not part of tokend's interface (`#[doc(hidden)]`); see docs/FUZZING.md.
//!
//! Each `run_*` function must return normally for every input: a panic is the finding.
//! They follow a value from the outside (provider answer, config file, state file) through
//! what the daemon does with it next: extracting the token and its expiry, formatting
//! times, planning the refresh and the backoff.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine;

use crate::account::policy::{self, Event, Facts, Samples};
use crate::provider::extract::{self, Response};
use crate::provider::{Obtained, ProviderError, ResponseSpec, Source, Via};
use crate::schedule::{self, Retry, Timing};
use crate::sink::{TokenDocument, rfc3339};
use crate::state::{AccountState, StateStore, from_ms, to_ms};

/// The response specs fuzzed: the five presets, `oauth2`, and an `http` spec that reads
/// every kind of source (header, cookie, pointer), as `[account.response]` may.
pub const SPECS: [&str; 7] = crate::provider::presets::PROVIDERS;

/// The clock a response input may set is clamped to these years (2000–2100, Unix seconds):
/// a host clock outside them is not a provider's doing. Outside values stay unbounded.
const CLOCK_RANGE: (u64, u64) = (946_684_800, 4_102_444_800);

/// The clock when a response input does not set one (2027-01-15).
const DEFAULT_CLOCK: u64 = 1_800_000_000;

/// The response spec of `name` (one of [`SPECS`]), built from the preset's
/// `[response]` table the way validation parses it.
pub fn response_spec(name: &str) -> ResponseSpec {
    let sources = |list: &Option<crate::config::raw::Sources>| -> Vec<Source> {
        list.as_ref()
            .map(|s| s.to_vec())
            .unwrap_or_default()
            .iter()
            .map(|s| Source::parse(s).expect("preset sources parse (unit-tested)"))
            .collect()
    };
    let Some(preset) = crate::provider::presets::preset(name) else {
        let parse = |s: &[&str]| -> Vec<Source> {
            s.iter()
                .map(|s| Source::parse(s).expect("fixed sources parse"))
                .collect()
        };
        return ResponseSpec {
            access_token: parse(&["header:x-token", "cookie:token", "/data/token"]),
            refresh_token: parse(&["cookie:refresh", "/data/refresh"]),
            expires_in: parse(&["header:x-expires-in", "/data/ttl"]),
            refresh_expires_in: parse(&["/data/refresh_ttl"]),
            token_type: parse(&["header:x-token-type"]),
            error: Some("/error".into()),
        };
    };
    let r = &preset.response;
    ResponseSpec {
        access_token: sources(&r.access_token),
        refresh_token: sources(&r.refresh_token),
        expires_in: sources(&r.expires_in),
        refresh_expires_in: sources(&r.refresh_expires_in),
        token_type: sources(&r.token_type),
        error: r.error.clone(),
    }
}

/// A provider answer as the `response` target reads it: a text that looks like an HTTP/1
/// response, so seeds are real answers and regressions can be read in review.
///
/// ```text
/// <spec> <status> [<clock, Unix seconds>] [<jitter sample, -1..1>]
/// Name: value            (any headers, Set-Cookie and Retry-After included)
///
/// <body>
/// ```
///
/// `<spec>` is one of [`SPECS`] or an index into it. Set-Cookie headers become cookies
/// through reqwest, exactly as a live answer does in `provider::http`.
pub fn run_response(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let spec_name = first
        .next()
        .map(|s| {
            SPECS
                .iter()
                .position(|n| *n == s)
                .or_else(|| s.parse::<usize>().ok().map(|i| i % SPECS.len()))
                .unwrap_or(0)
        })
        .map_or(SPECS[0], |i| SPECS[i]);
    let status = first
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let clock = first
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(DEFAULT_CLOCK)
        .clamp(CLOCK_RANGE.0, CLOCK_RANGE.1);
    // The daemon draws it from `rand` in [-1, 1]; NaN or 1e300 is not an outside value.
    let sample = first
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .unwrap_or(0.0)
        .clamp(-1.0, 1.0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(clock);

    let response = to_response(status, &headers, body);
    // The JWT parser on its own: the body as a token, and the body as a token's claims
    // (so the fuzzer edits `exp` as JSON, not through base64), then what the daemon does
    // with an expiry it found: print it and plan the refresh.
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body.trim());
    for token in [body.trim().to_string(), format!("e30.{claims}.c2ln")] {
        if let Ok(Some(exp)) = extract::jwt_exp(&token) {
            rfc3339(exp);
            rfc3339(schedule::refresh_due(now, exp, &Timing::default(), sample));
        }
    }
    for (_, value) in &headers {
        if let Some(wait) = extract::parse_retry_after(value, now) {
            schedule::backoff(0, &Retry::default(), 1.0, Some(wait));
        }
    }
    let spec = response_spec(spec_name);
    let timing = Timing::default();
    for via in [Via::Login, Via::Refresh] {
        let result = extract::interpret(
            &response,
            &spec,
            now,
            now,
            timing.default_lifetime,
            via,
            "login to https://fuzz.invalid/token",
        );
        handle_result(spec_name, result, now, &timing, &Retry::default(), sample);
    }
}

/// Builds the [`Response`] a live answer with these parts becomes: headers and cookies as
/// `provider::http` reads them from reqwest. Header names or values HTTP cannot carry are
/// dropped, as a real connection would never deliver them.
fn to_response(status: u16, headers: &[(String, String)], body: &str) -> Response {
    let mut builder = http::Response::builder()
        .status(http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK));
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            builder = builder.header(n, v);
        }
    }
    let live: reqwest::Response = builder
        .body(body.to_string())
        .expect("status, names and values were checked")
        .into();
    runtime()
        .block_on(crate::provider::http::read_response(live))
        .expect("an in-memory body cannot fail")
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime without I/O builds")
    })
}

/// What the daemon does with an exchange's result: on success it saves the token (state,
/// in milliseconds), publishes the `json` document, logs the expiry and plans the refresh;
/// on failure it logs the error and backs off (honouring `Retry-After`).
fn handle_result(
    provider: &str,
    result: Result<Obtained, ProviderError>,
    now: SystemTime,
    timing: &Timing,
    retry: &Retry,
    sample: f64,
) {
    match result {
        Ok(o) => {
            rfc3339(o.obtained_at);
            rfc3339(o.expires_at);
            if let Some(at) = o.refresh_expires_at {
                rfc3339(at);
            }
            let mut state = AccountState::new("fuzz", provider, "fp");
            state.token = Some(crate::state::StoredToken {
                access_token: crate::state::StoredSecret(o.access_token.clone()),
                token_type: o.token_type.clone(),
                obtained_at_ms: to_ms(o.obtained_at),
                expires_at_ms: to_ms(o.expires_at),
                expiry_source: o.expiry_source.to_string(),
            });
            state.refresh_expires_at_ms = o.refresh_expires_at.map(to_ms);
            state.refresh_token = o.refresh_token.clone().map(crate::state::StoredSecret);
            let facts = Facts {
                now,
                since_last_request: Some(Duration::ZERO),
                token: Some((o.obtained_at, o.expires_at)),
                failures: 0,
                superseded: false,
                last_failure: None,
                planned: None,
            };
            let event = Event::Obtained {
                obtained_at: o.obtained_at,
                expires_at: o.expires_at,
            };
            let d = policy::decide(&facts, event, timing, retry, Samples::MIDDLE);
            rfc3339(d.next);
            state.next_refresh_ms = Some(to_ms(d.next));
            after_load(&state, now, timing);
            let doc = TokenDocument {
                account: "fuzz".into(),
                provider: provider.into(),
                access_token: o.access_token,
                token_type: o.token_type,
                expires_at: o.expires_at,
                generation: 1,
            };
            doc.json(now);
        }
        Err(e) => {
            let _ = (e.to_string(), e.kind());
            // The next attempt as the daemon plans it, logs it and `status` prints it: the
            // refresh policy's decision after this failure, at any failure count.
            let samples = Samples {
                jitter: sample,
                backoff: (sample + 1.0) / 2.0,
            };
            for failures in [1, 2, 6, 31, 63, 64, u32::MAX] {
                let facts = Facts {
                    now,
                    since_last_request: Some(Duration::ZERO),
                    token: None,
                    failures,
                    superseded: false,
                    last_failure: Some(crate::account::failure_kind(&e)),
                    planned: None,
                };
                let event = Event::Failed {
                    kind: crate::account::failure_kind(&e),
                    retry_after: e.retry_after(),
                };
                let d = policy::decide(&facts, event, timing, retry, samples);
                rfc3339(d.next);
                let _ = policy::wait_text(d.wait(now));
            }
        }
    }
}

/// What the daemon and `tokend status` do with a state they read back: reuse the token if
/// it is valid, decide whether the refresh token is usable, re-plan the refresh and print
/// every time the file holds.
fn after_load(state: &AccountState, now: SystemTime, timing: &Timing) {
    if let Some(token) = state.valid_token(now) {
        let due = schedule::refresh_due(
            from_ms(token.obtained_at_ms),
            from_ms(token.expires_at_ms),
            timing,
            0.0,
        );
        rfc3339(due);
    }
    state.usable_refresh_token(now);
    // What `status` shows as the next refresh, and what a daemon start decides.
    let facts = crate::account::facts(state, now, None);
    rfc3339(policy::planned_attempt(&facts, timing, &Retry::default()));
    let d = policy::decide(
        &facts,
        Event::Start,
        timing,
        &Retry::default(),
        Samples::MIDDLE,
    );
    rfc3339(d.next);
    let token_times = state
        .token
        .iter()
        .flat_map(|t| [t.obtained_at_ms, t.expires_at_ms]);
    let sink_times = state.sinks.values().flat_map(|s| {
        [s.last_write_ms, s.holds_expires_at_ms, s.last_error_ms]
            .into_iter()
            .flatten()
    });
    let times = [
        state.refresh_expires_at_ms,
        state.last_success_ms,
        state.last_error_ms,
        state.next_refresh_ms,
    ]
    .into_iter()
    .flatten()
    .chain(token_times)
    .chain(sink_times);
    for ms in times {
        rfc3339(from_ms(ms));
    }
}

/// A scratch directory for this process's fuzz files (one per process: libFuzzer runs
/// inputs one after another, and `cargo test` threads each take their own subdirectory).
fn scratch(kind: &str) -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE
        .get_or_init(|| std::env::temp_dir().join(format!("tokend-fuzz-{}", std::process::id())));
    let thread = format!("{:?}", std::thread::current().id());
    let dir = base
        .join(kind)
        .join(thread.replace(|c: char| !c.is_alphanumeric(), ""));
    std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
    dir
}

/// A config file: written to `tokend.toml` in a scratch directory and loaded with
/// [`crate::settings::load`]; errors are formatted as `tokend check` prints them. A config
/// that loads is then run the way the daemon would: an answer without an expiry takes the
/// account's `default_lifetime`, and failures back off with its `[retry]`.
pub fn run_config(data: &[u8]) {
    let dir = scratch("config");
    let path = dir.join("tokend.toml");
    std::fs::write(&path, data).expect("the scratch file is writable");
    match crate::settings::load(&path) {
        Ok(config) => {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(DEFAULT_CLOCK);
            let _ = format!("{config:?}");
            for account in &config.accounts {
                let p = &account.provider;
                let answer = Response {
                    status: 200,
                    body: r#"{"access_token":"a","refresh_token":"r","accessToken":"a","data":{"createToken":{"token":"a"},"token":"a"}}"#.into(),
                    ..Default::default()
                };
                let result = extract::interpret(
                    &answer,
                    &p.spec.response,
                    now,
                    now,
                    p.default_lifetime,
                    Via::Login,
                    "login",
                );
                handle_result(&p.name, result, now, &account.timing, &account.retry, 1.0);
                let failures = [
                    ProviderError::transient("fuzz".into(), None),
                    ProviderError::Malformed {
                        message: "fuzz".into(),
                    },
                ];
                for failed in failures {
                    handle_result(
                        &p.name,
                        Err(failed),
                        now,
                        &account.timing,
                        &account.retry,
                        1.0,
                    );
                }
            }
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
}

/// A state file: the bytes before the first NUL are `<account>.json`, any after it
/// `<account>.sinks`. Read with [`StateStore::peek`] (as `status` does) and
/// [`StateStore::load`] (as the daemon does, under the file's own fingerprint so a
/// parseable file is used), then handled as after a restart.
pub fn run_state(data: &[u8]) {
    let dir = scratch("state");
    let (json, sinks) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let store = StateStore::new(&dir);
    write_state(&store, json, sinks);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(DEFAULT_CLOCK);
    let fingerprint = match store.peek("fuzz") {
        Ok(Some(state)) => {
            after_load(&state, now, &Timing::default());
            state.fingerprint
        }
        Ok(None) => "fp".into(),
        Err(e) => {
            let _ = e.to_string();
            "fp".into()
        }
    };
    let (state, why) = store.load("fuzz", &crate::state::Fingerprint::new(fingerprint));
    if let Some(state) = state {
        after_load(&state, now, &Timing::default());
    }
    let _ = why;
    run_record(json, now);
}

/// The same JSON as a coordination record, another value from outside (docs/HA.md): parsed
/// and bounded by `Record::parse`, then what an instance decides about it.
fn run_record(json: &[u8], now: SystemTime) {
    use crate::coordination::{Record, decide};
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(json)
    else {
        return;
    };
    let Ok(record) = Record::parse(&map) else {
        return;
    };
    let _ = decide::adopt(&record, true, 0, false, now);
    if let Some(t) = &record.tokens {
        let _ = decide::adopted_times(t.obtained_at_ms, t.expires_at_ms, crate::bounds::to_ms(now));
    }
    let _ = decide::claim_state(
        record.claim.as_ref(),
        "nonce",
        Some(Duration::MAX),
        Duration::from_secs(60),
    );
    let _ = record.to_value();
}

fn write_state(store: &StateStore, json: &[u8], sinks: Option<&[u8]>) {
    std::fs::write(store.path("fuzz"), json).expect("the scratch file is writable");
    // The bytes after the NUL are both status overlays: sinks, and coordination (`.shared`).
    let sinks_path: &Path = &store.sinks_path("fuzz");
    let shared_path = sinks_path.with_extension("shared");
    for path in [sinks_path, shared_path.as_path()] {
        match sinks {
            Some(bytes) => std::fs::write(path, bytes).expect("the scratch file is writable"),
            // Absent already is the usual case.
            None => drop(std::fs::remove_file(path)),
        }
    }
}
