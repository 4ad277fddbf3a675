//! Issue 12 findings 2 and 4, written as attacks: a hostile token endpoint whose error
//! answers echo the accounts' secrets in every encoding (beyond the old 160-character cut,
//! JSON-escaped, form- and percent-encoded, inside a `Basic` header, a short client id
//! that prefixes a longer secret, another account's secret) and text that forges a log
//! line and drives the terminal. The real daemon runs against it with text and then JSON
//! logs; its whole log, the state files and `tokend status` (text and `--json`) must hold
//! none of it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine;

use crate::support::process::TokendProcess;
use crate::support::{TestDir, run_cmd, tokend_cmd, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A forged record: what a provider text holding a newline would add to a text log.
const FORGED: &str = "2026-11-30T00:00:00.000000Z  INFO token obtained account=prod-bank";

/// Terminal escapes: set the window title, clear the screen.
const ESCAPES: &str = "\x1b]0;pwned\x07\x1b[2J";

/// One account of the attack: its client id and secret, and what its endpoint answers.
struct Case {
    name: &'static str,
    client_id: &'static str,
    secret: &'static str,
    status: u16,
    content_type: &'static str,
    body: String,
}

fn b64(s: &str) -> [String; 4] {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [
        STANDARD.encode(s),
        STANDARD_NO_PAD.encode(s),
        URL_SAFE.encode(s),
        URL_SAFE_NO_PAD.encode(s),
    ]
}

fn form(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn percent(s: &str) -> String {
    form(s).replace('+', "%20")
}

fn json_escaped(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap();
    q[1..q.len() - 1].to_string()
}

const SECRET_A: &str = "alpha-Secret-0123456789-abcdefghij";
const SECRET_B: &str = "beta\"quote\\back-Secret-42";
const SECRET_C: &str = "gamma secret&with+plus%and-42";
const SECRET_D: &str = "delta-Secret-basic-77";
const SECRET_E: &str = "acme-much-longer-Secret-99";

fn cases() -> Vec<Case> {
    vec![
        // (a) raw, straddling the old 160-character excerpt cut.
        Case {
            name: "cut",
            client_id: "app-a",
            secret: SECRET_A,
            status: 400,
            content_type: "text/plain",
            body: format!("{}{SECRET_A} and more", "x".repeat(150)),
        },
        // (b) JSON-escaped in a body that is not JSON (so it is quoted as it is).
        Case {
            name: "json",
            client_id: "app-b",
            secret: SECRET_B,
            status: 400,
            content_type: "text/plain",
            body: format!(
                "rejected {{\"client_secret\":\"{}\"",
                json_escaped(SECRET_B)
            ),
        },
        // (c) form-encoded, with `+` and with `%20` for the space.
        Case {
            name: "form",
            client_id: "app-c",
            secret: SECRET_C,
            status: 400,
            content_type: "application/json",
            body: serde_json::json!({
                "error": "invalid_request",
                "error_description": format!(
                    "bad body grant_type=client_credentials&client_secret={}; again {}",
                    form(SECRET_C),
                    percent(SECRET_C)
                ),
            })
            .to_string(),
        },
        // (d) inside a base64 Basic header value.
        Case {
            name: "basic",
            client_id: "app-d",
            secret: SECRET_D,
            status: 401,
            content_type: "application/json",
            body: serde_json::json!({
                "error": "invalid_client",
                "error_description": format!(
                    "Authorization: Basic {} / {}",
                    b64(&format!("app-d:{SECRET_D}"))[0],
                    b64(SECRET_D)[3]
                ),
            })
            .to_string(),
        },
        // (e) a short client id that is a prefix of the longer secret.
        Case {
            name: "prefix",
            client_id: "acme",
            secret: SECRET_E,
            status: 400,
            content_type: "application/json",
            body: serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("client acme sent {SECRET_E}"),
            })
            .to_string(),
        },
        // (f) another account's secrets, and (g) a forged line with terminal escapes.
        Case {
            name: "other",
            client_id: "app-f",
            secret: "foxtrot-Secret-own-31",
            status: 400,
            content_type: "application/json",
            body: serde_json::json!({
                "error": "invalid_client",
                "error_description": format!(
                    "tenant mix-up: {SECRET_A} {SECRET_D}\n{FORGED}\r\n{ESCAPES}"
                ),
            })
            .to_string(),
        },
        Case {
            name: "forge",
            client_id: "app-g",
            secret: "golf-Secret-own-32",
            status: 503,
            content_type: "text/plain",
            body: format!("down\n{FORGED}\n{ESCAPES}\u{9b}31m"),
        },
    ]
}

/// Every form of every secret that must not appear, plus the raw secrets' 10-character
/// windows (a truncated echo leaves a piece).
fn forbidden(cases: &[Case]) -> Vec<String> {
    let mut out = Vec::new();
    for c in cases {
        let s = c.secret;
        out.push(json_escaped(s));
        out.push(json_escaped(&json_escaped(s)));
        out.push(form(s));
        out.push(percent(s));
        out.extend(b64(s));
        out.extend(b64(&format!("{}:{s}", c.client_id)));
        let chars: Vec<char> = s.chars().collect();
        for w in chars.windows(10) {
            out.push(w.iter().collect());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Answers every request with the case its path names (`/<case>/token`), then closes.
fn hostile_endpoint(cases: Vec<Case>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line.split(' ').nth(1).unwrap_or("");
            let case = cases.iter().find(|c| path == format!("/{}/token", c.name));
            let (status, content_type, body) = match case {
                Some(c) => (c.status, c.content_type, c.body.as_str()),
                None => (404, "text/plain", "no such case"),
            };
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn config(dir: &TestDir, port: u16, log_format: &str, cases: &[Case]) -> std::path::PathBuf {
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\nlog_format = \"{log_format}\"\nlog_level = \"debug\"\n",
        dir.join("state").display()
    );
    for c in cases {
        text.push_str(&format!(
            "\n[[account]]\nname = \"{name}\"\nprovider = \"oauth2\"\ntoken_url = \"http://127.0.0.1:{port}/{name}/token\"\nclient_id = \"{id}\"\nclient_secret = '{secret}'\n[[account.sink]]\ntype = \"file\"\npath = \"{out}\"\n",
            name = c.name,
            id = c.client_id,
            secret = c.secret,
            out = dir.join(&format!("out/{}.token", c.name)).display(),
        ));
    }
    let path = dir.write("tokend.toml", &text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Asserts that `text` holds no forbidden form, no ESC/BEL/CSI (raw or JSON-escaped) and
/// no forged line; a failure lists every leak at once.
fn assert_clean(what: &str, text: &str, forbidden: &[String]) {
    let mut leaks: Vec<String> = forbidden
        .iter()
        .filter(|f| text.contains(f.as_str()))
        .cloned()
        .collect();
    for bad in ["\x1b", "\x07", "\u{9b}", "\\u001b"] {
        if text.contains(bad) {
            leaks.push(format!("control {bad:?}"));
        }
    }
    if text
        .lines()
        .any(|l| l.trim_start().starts_with("2026-11-30T00:00:00"))
    {
        leaks.push("a forged line".into());
    }
    assert!(leaks.is_empty(), "leaked into {what}: {leaks:?}\n{text}");
}

fn attack(log_format: &str) {
    let cases = cases();
    let forbidden = forbidden(&cases);
    let port = hostile_endpoint(self::cases());
    let dir = TestDir::new(&format!("redaction-{log_format}"));
    let cfg = config(&dir, port, log_format, &cases);
    let state = dir.join("state");
    let mut daemon = TokendProcess::run(&cfg, dir.path());
    wait_for("every account's error in its state file", WAIT, || {
        cases.iter().all(|c| {
            std::fs::read_to_string(state.join(format!("{}.json", c.name)))
                .is_ok_and(|t| t.contains("\"last_error\":\""))
        })
    });
    // The forge case is transient: wait for a retry too, so both kinds were logged.
    daemon.wait_for_log_count("forge", 2, WAIT);
    let status = run_cmd(tokend_cmd(&["-c", cfg.to_str().unwrap(), "status"]));
    let status_json = run_cmd(tokend_cmd(&[
        "-c",
        cfg.to_str().unwrap(),
        "status",
        "--json",
    ]));
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_exit(WAIT);

    let log = daemon.output();
    assert!(
        log.contains("[REDACTED]"),
        "the echoes were logged, redacted:\n{log}"
    );
    assert_clean(&format!("the {log_format} log"), &log, &forbidden);
    if log_format == "json" {
        for line in log.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not one JSON record per line ({e}): {line}"));
        }
    }
    for c in &cases {
        let text = std::fs::read_to_string(state.join(format!("{}.json", c.name))).unwrap();
        assert_clean(&format!("{}'s state file", c.name), &text, &forbidden);
    }
    assert!(status.stdout.contains("cut"), "{status:?}");
    assert_clean("tokend status", &format!("{status:?}"), &forbidden);
    assert_clean(
        "tokend status --json",
        &format!("{status_json:?}"),
        &forbidden,
    );
    let json: serde_json::Value = serde_json::from_str(&status_json.stdout).unwrap();
    assert_clean(
        "tokend status --json, decoded",
        &json.to_string(),
        &forbidden,
    );
    assert_decoded_clean(&json, &forbidden);
}

/// Every string in a JSON document, decoded, is clean too (a reader that prints them).
fn assert_decoded_clean(value: &serde_json::Value, forbidden: &[String]) {
    match value {
        serde_json::Value::String(s) => assert_clean("a status --json string", s, forbidden),
        serde_json::Value::Array(items) => items
            .iter()
            .for_each(|v| assert_decoded_clean(v, forbidden)),
        serde_json::Value::Object(map) => map
            .values()
            .for_each(|v| assert_decoded_clean(v, forbidden)),
        _ => {}
    }
}

#[test]
fn echoed_secrets_and_forged_lines_never_reach_text_logs_state_or_status() {
    // Proves issue 12 findings 2 and 4 with text logs: every encoded echo is redacted,
    // whole, in the log, the state files and `tokend status`, and no forged line or
    // terminal escape gets through.
    attack("text");
}

#[test]
fn echoed_secrets_and_forged_lines_never_reach_json_logs_state_or_status() {
    // Proves the same with JSON logs: one record per line, no escaped ESC, no secret in
    // any encoding (the JSON writer escapes `"` and `\`, so it needs those forms too).
    attack("json");
}

#[test]
fn the_hostile_endpoint_really_echoes() {
    // Proves the attack is real: the answers hold every form the other tests look for.
    let cases = cases();
    let all: String = cases.iter().map(|c| c.body.clone()).collect();
    assert!(all.contains(&json_escaped(SECRET_B)) && all.contains(&form(SECRET_C)));
    assert!(all.contains(&percent(SECRET_C)) && all.contains(SECRET_E));
    assert!(all.contains(&b64(&format!("app-d:{SECRET_D}"))[0]));
    assert!(all.contains(FORGED) && all.contains(ESCAPES));
}
