//! Issue 11 against the real binary: answers from a hostile token endpoint
//! (`support::hostile`), absurd configs and unreadable state files never stop tokend and
//! never put a bad token in a sink. Each crash the issue reproduced runs next to a normal
//! account (the emulator) in one shared daemon; each bad-token kind gets its own quick
//! `tokend once`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::json;
use tokend::emulator::{Emulator, Options, Provider};

use crate::support::hostile::{Answer, HostileServer};
use crate::support::process::TokendProcess;
use crate::support::{TestDir, run_cmd, tokend_cmd, wait_for};

/// Generous bound for anything awaited on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);
const READY_LINE: &str = "first round done; ready";

/// A JWT (unsigned: tokend decodes `exp`, it does not verify) with these claims.
fn jwt(claims: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.c2ln", b64(r#"{"alg":"HS256"}"#), b64(claims))
}

/// An `http` account whose login is the hostile `url`; the token comes from the body's
/// `access_token` or the `access-token` cookie, the lifetime from `expires_in`, the JWT
/// `exp` or the cookie.
fn hostile_account(name: &str, url: &str, sink: &Path, format: &str) -> String {
    format!(
        "\n[[account]]\nname = \"{name}\"\nprovider = \"http\"\n\
         [account.login]\nurl = \"{url}\"\njson = {{ user = \"x\" }}\n\
         [account.response]\naccess_token = [\"/access_token\", \"cookie:access-token\"]\n\
         expires_in = \"/expires_in\"\n\
         [[account.sink]]\ntype = \"file\"\npath = \"{}\"\nformat = \"{format}\"\n",
        sink.display()
    )
}

/// A normal account against the emulator, with a `raw` file sink.
fn emulator_account(emu: &Emulator, name: &str, sink: &Path) -> String {
    format!(
        "\n[[account]]\nname = \"{name}\"\nprovider = \"zarv\"\n{}\
         [[account.sink]]\ntype = \"file\"\npath = \"{}\"\nformat = \"raw\"\n",
        emu.account_settings(Provider::Zarv),
        sink.display()
    )
}

fn header(state: &Path) -> String {
    format!(
        "[daemon]\nstate_dir = \"{}\"\nlog_format = \"text\"\n\
         [daemon.retry]\ninitial = \"100ms\"\nmax = \"300ms\"\n",
        state.display()
    )
}

fn status(config: &Path) -> crate::support::Run {
    run_cmd(tokend_cmd(&["-c", config.to_str().unwrap(), "status"]))
}

/// Issue 11's crashes (a JWT `exp` in milliseconds, 1e20, 9.3e18; a cookie `Max-Age` of
/// 9223372036854775807, 99999999999999999999, 300000000000) no longer abort tokend: the
/// lifetime is clamped to a year, the normal account keeps refreshing, `status` works and
/// a restart on the same state works (and reuses the clamped tokens).
#[test]
fn absurd_expiries_are_clamped_and_stop_nothing() {
    let now_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cases: Vec<(&str, Answer)> = vec![
        (
            "jwt-exp-ms",
            Answer::json(
                json!({"access_token": jwt(&format!(r#"{{"exp":{}}}"#, (now_s + 3600) * 1000))}),
            ),
        ),
        (
            "jwt-exp-1e20",
            Answer::json(json!({"access_token": jwt(r#"{"exp":1e20}"#)})),
        ),
        (
            "jwt-exp-9e18",
            Answer::json(json!({"access_token": jwt(r#"{"exp":9.3e18}"#)})),
        ),
        (
            "max-age-i64",
            Answer::cookie("access-token=tok-max-age-i64; Max-Age=9223372036854775807; Path=/"),
        ),
        (
            "max-age-20-digits",
            Answer::cookie("access-token=tok-max-age-20; Max-Age=99999999999999999999; Path=/"),
        ),
        (
            "max-age-3e11",
            Answer::cookie("access-token=tok-max-age-3e11; Max-Age=300000000000; Path=/"),
        ),
    ];
    let server = HostileServer::start(cases.iter().map(|(n, a)| (n.to_string(), a.clone())));
    let emu = Emulator::start(Options {
        access_lifetime: Duration::from_secs(4),
        ..Options::default()
    })
    .expect("emulator");
    let dir = TestDir::new("hostile-expiries");
    let state = dir.join("state");
    let sink = |name: &str| dir.join(&format!("out/{name}.json"));
    let mut text = header(&state);
    text.push_str(&emulator_account(
        &emu,
        "normal",
        &dir.join("out/normal.token"),
    ));
    for (name, _) in &cases {
        text.push_str(&hostile_account(
            name,
            &server.url(name),
            &sink(name),
            "json",
        ));
    }
    let config = dir.write("tokend.toml", &text);

    let issued = || emu.stats(Provider::Zarv).issued;
    let check_running = |d: &mut TokendProcess, round: &str| {
        d.wait_for_log(READY_LINE, WAIT);
        let before = issued();
        wait_for(
            &format!("{round}: the normal account refreshes twice"),
            WAIT,
            || issued() >= before + 2,
        );
        assert!(d.is_running(), "{round}: tokend exited");
        let run = status(&config);
        assert_eq!(run.code, 0, "{round}: status: {run:?}");
        for (name, _) in &cases {
            assert!(run.stdout.contains(name), "{round}: {name} in {run:?}");
        }
    };
    let mut d = TokendProcess::run(&config, dir.path());
    check_running(&mut d, "first run");
    // Each hostile token is published with its lifetime clamped to a year.
    let year = Duration::from_secs(365 * 86_400);
    for (name, _) in &cases {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(sink(name)).unwrap()).unwrap();
        let at = humantime::parse_rfc3339(doc["expires_at"].as_str().unwrap()).unwrap();
        let left = at.duration_since(SystemTime::now()).unwrap();
        assert!(
            left > year - Duration::from_secs(86_400) && left < year + Duration::from_secs(86_400),
            "{name}: expires_at {}",
            doc["expires_at"]
        );
    }
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = d.wait_exit(WAIT);
    assert_eq!(
        exit.code(),
        Some(0),
        "SIGTERM ends tokend cleanly: {exit:?}"
    );

    // A restart on the same state: no abort, the saved tokens are reused.
    let mut again = TokendProcess::run(&config, dir.path());
    check_running(&mut again, "restart");
    for (name, _) in &cases {
        assert_eq!(server.hits(name), 1, "{name}: its saved token is reused");
    }
}

/// Each bad-token kind of issue 11 is a malformed answer: `tokend once` exits 1, no sink
/// is written, the token is in no log line and no state file. A 404 says
/// "check base_url/token_url" instead of "credentials rejected".
#[test]
fn bad_tokens_are_never_published_and_once_exits_1() {
    let long = "a".repeat(16 * 1024 + 1);
    let past = jwt(r#"{"exp":1600000000}"#);
    // (case, answer, a piece of the token that must appear nowhere, expected message)
    let cases: Vec<(&str, Answer, &str, &str)> = vec![
        (
            "expires-in-0",
            Answer::json(json!({"access_token": "tok-expires-in-0", "expires_in": 0})),
            "tok-expires-in-0",
            "less than 2s after it was received",
        ),
        (
            "jwt-exp-past",
            Answer::json(json!({"access_token": past})),
            &past,
            "less than 2s after it was received",
        ),
        (
            "cookie-expires-2015",
            Answer::cookie("access-token=tok-expires-2015; Expires=Wed, 21 Oct 2015 07:28:00 GMT"),
            "tok-expires-2015",
            "less than 2s after it was received",
        ),
        (
            "max-age-0",
            Answer::cookie("access-token=tok-max-age-0; Max-Age=0"),
            "tok-max-age-0",
            "less than 2s after it was received",
        ),
        (
            "newline",
            Answer::json(json!({"access_token": "abc\nLD_PRELOAD=/tmp/evil.so", "expires_in": 60})),
            "LD_PRELOAD",
            "outside visible ASCII",
        ),
        (
            "whitespace-only",
            Answer::json(json!({"access_token": "    ", "expires_in": 60})),
            "",
            "outside visible ASCII",
        ),
        (
            "control-characters",
            Answer::json(json!({"access_token": "tok-ctl\u{7}\u{1b}[2J", "expires_in": 60})),
            "tok-ctl",
            "outside visible ASCII",
        ),
        (
            "negative-lifetime",
            Answer::json(json!({"access_token": "tok-negative", "expires_in": -60})),
            "tok-negative",
            "is negative",
        ),
        (
            "nan-lifetime",
            Answer::json(json!({"access_token": "tok-nan", "expires_in": "NaN"})),
            "tok-nan",
            "is NaN",
        ),
        (
            "infinite-lifetime",
            Answer::json(json!({"access_token": "tok-infinite", "expires_in": "Infinity"})),
            "tok-infinite",
            "is infinite",
        ),
        (
            "over-long",
            Answer::json(json!({"access_token": long, "expires_in": 60})),
            &long[..64],
            "bytes long",
        ),
        (
            "not-found",
            Answer::status(404),
            "",
            "HTTP 404: check base_url/token_url",
        ),
    ];
    let server = HostileServer::start(cases.iter().map(|c| (c.0.to_string(), c.1.clone())));
    let dir = TestDir::new("hostile-tokens");
    std::thread::scope(|scope| {
        for (name, _, marker, message) in &cases {
            let (dir, server) = (&dir, &server);
            scope.spawn(move || {
                let state = dir.join(&format!("{name}/state"));
                let sink = dir.join(&format!("{name}/out/token.env"));
                let text = format!(
                    "{}{}",
                    header(&state),
                    hostile_account(name, &server.url(name), &sink, "env")
                );
                let config = dir.write(&format!("{name}/tokend.toml"), &text);
                let run = run_cmd(tokend_cmd(&["-c", config.to_str().unwrap(), "once"]));
                assert_eq!(run.code, 1, "{name}: {run:?}");
                assert!(
                    run.stderr.contains(message),
                    "{name}: {message:?} in {run:?}"
                );
                assert!(!sink.exists(), "{name}: the sink was written");
                assert!(server.hits(name) >= 1, "{name}: no request");
                let state_text =
                    std::fs::read_to_string(state.join(format!("{name}.json"))).unwrap_or_default();
                if !marker.is_empty() {
                    assert!(
                        !run.stderr.contains(marker),
                        "{name}: token in the log: {run:?}"
                    );
                    assert!(!state_text.contains(marker), "{name}: token in the state");
                }
                if !message.contains("404") {
                    assert!(run.stderr.contains("malformed answer: "), "{name}: {run:?}");
                }
            });
        }
    });
}

/// Durations that used to pass `check` and abort at run time are located errors (exit 2).
#[test]
fn absurd_durations_fail_check_with_a_location() {
    let dir = TestDir::new("hostile-durations");
    let account = "[[account]]\nname = \"a\"\nprovider = \"zarv\"\nbase_url = \"http://127.0.0.1:1/z\"\nusername = \"u\"\npassword = \"p\"\n";
    for (table, key, value) in [
        ("[daemon.refresh]", "default_lifetime", "10000y"),
        ("[daemon.retry]", "max", "500000000000y"),
    ] {
        let text =
            format!("[daemon]\nstate_dir = \"state\"\n{table}\n{key} = \"{value}\"\n{account}");
        let config = dir.write("tokend.toml", &text);
        let run = run_cmd(tokend_cmd(&["-c", config.to_str().unwrap(), "check"]));
        assert_eq!(run.code, 2, "{value}: {run:?}");
        let section = table.trim_matches(['[', ']']);
        let want = format!("{section}.{key}: \"{value}\" is out of range");
        let line = run.stderr.lines().find(|l| l.contains(&want));
        assert!(
            line.is_some_and(|l| l.contains("tokend.toml:4:")),
            "expected tokend.toml:4:…: {want:?} in {run:?}"
        );
    }
}

/// A state file the previous release could write for a JWT `exp` in milliseconds (its
/// expiry in year 58,000) made every restart and `status` abort. Now `status` reports it
/// without aborting, the next start moves it aside to `.json.corrupt` (logged, naming the
/// file) and starts the account clean, and `status` works again.
#[test]
fn corrupt_state_is_moved_aside_and_status_never_aborts() {
    let emu = Emulator::start(Options::default()).expect("emulator");
    let dir = TestDir::new("hostile-state");
    let state = dir.join("state");
    let text = format!(
        "{}{}",
        header(&state),
        emulator_account(&emu, "zarv", &dir.join("out/zarv.token"))
    );
    let config = dir.write("tokend.toml", &text);
    std::fs::create_dir_all(&state).unwrap();
    let corrupt = r#"{"version":1,"account":"zarv","provider":"zarv","fingerprint":"x","token":{"access_token":"old","token_type":"Bearer","obtained_at_ms":1796000000000,"expires_at_ms":1796000000000000,"expiry_source":"jwt"},"refresh_token":null,"refresh_expires_at_ms":null,"last_success_ms":null,"last_error":null,"last_error_ms":null,"next_refresh_ms":null}"#;
    std::fs::write(state.join("zarv.json"), corrupt).unwrap();

    // The problem is shown in the account's row; exit 3: no daemon runs. An abort (a
    // signal) would have no code.
    let run = status(&config);
    assert_eq!(run.code, 3, "an error row, not an abort: {run:?}");
    assert!(
        (run.stdout.clone() + &run.stderr).contains("zarv.json is not a valid state file"),
        "{run:?}"
    );

    let run = run_cmd(tokend_cmd(&["-c", config.to_str().unwrap(), "once"]));
    assert_eq!(run.code, 0, "{run:?}");
    let aside = state.join("zarv.json.corrupt");
    assert!(run.stderr.contains(&aside.display().to_string()), "{run:?}");
    assert_eq!(std::fs::read_to_string(&aside).unwrap(), corrupt);
    assert!(
        std::fs::read_to_string(dir.join("out/zarv.token"))
            .unwrap()
            .len()
            > 10
    );

    let run = status(&config);
    assert_eq!(run.code, 3, "no daemon runs: {run:?}");
    assert!(run.stdout.contains("valid"), "{run:?}");
}

/// A state file written by the release before the versioned fingerprint
/// (tests/data/state-v1/zarv.json) still belongs to its account: `once` reuses its token
/// without a login (nothing listens at that account's base_url).
#[test]
fn state_written_by_the_previous_release_loads_without_a_login() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-v1");
    let dir = TestDir::new("hostile-legacy-state");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let saved = std::fs::read_to_string(data.join("zarv.json")).unwrap();
    std::fs::write(state.join("zarv.json"), &saved).unwrap();
    let accounts = std::fs::read_to_string(data.join("tokend.toml")).unwrap();
    let config = dir.write(
        "tokend.toml",
        &format!(
            "[daemon]\nstate_dir = \"{}\"\nlog_format = \"text\"\n{accounts}",
            state.display()
        ),
    );
    let run = run_cmd(tokend_cmd(&[
        "-c",
        config.to_str().unwrap(),
        "once",
        "--account",
        "zarv",
    ]));
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("saved token is still fresh; reusing it"),
        "{run:?}"
    );
    let token: serde_json::Value = serde_json::from_str(&saved).unwrap();
    let written = std::fs::read_to_string(dir.join("tokens/zarv.token")).unwrap();
    assert_eq!(
        written.trim_end(),
        token["token"]["access_token"].as_str().unwrap()
    );
}
