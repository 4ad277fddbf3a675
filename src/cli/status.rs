//! `tokend status`: whether a daemon holds the state directory, and every account's state
//! as a table or as JSON (config structure only, no secrets read), with times shown
//! relative to now. Called by [`super::run`].

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::account;
use crate::account::policy;
use crate::settings;
use crate::sink::rfc3339;
use crate::startup::load_structure;
use crate::state::{AccountState, from_ms};

/// `tokend status`'s exit code when no daemon holds the state (like `systemctl status` for
/// a stopped unit).
pub const STATUS_NOT_RUNNING: u8 = 3;

/// Prints the status of every account of the config at `path` (`--json`: one object).
pub(super) fn status(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    // The structure only: an operator's shell has none of the service's secrets (SPEC §2).
    let cfg = load_structure(path)?;
    let store = crate::state::StateStore::new(&cfg.daemon.state_dir);
    let now = SystemTime::now();
    let holder = store.holder();
    let daemon = match &holder {
        Ok(Some(h)) => serde_json::json!({
            "running": true,
            "pid": h.pid,
            "since": rfc3339(from_ms(h.since_ms)),
            "command": h.command,
        }),
        Ok(None) => serde_json::json!({ "running": false }),
        Err(e) => serde_json::json!({ "running": false, "error": e.to_string() }),
    };
    let running = matches!(holder, Ok(Some(_)));
    let code = if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(STATUS_NOT_RUNNING)
    };
    let mut rows = Vec::new();
    for a in &cfg.accounts {
        // One unreadable state file (permissions, a corrupt file the daemon has not moved
        // aside yet) is shown on its row; the other accounts are still reported.
        let (state, unreadable) = match store.peek(&a.name) {
            Ok(state) => (state, None),
            Err(e) => (None, Some(e.to_string())),
        };
        // Without the secrets the fingerprint cannot be computed: a state file of another
        // provider is stale; one of other credentials shows until the daemon replaces it.
        let current = state.as_ref().filter(|s| s.provider == a.provider.name);
        let mut row = status_row(a, current, state.is_some() && current.is_none(), now);
        if cfg.coordination.is_some() {
            row["coordination"] = coordination_row(current);
        }
        if let Some(e) = unreadable {
            row["state"] = "unreadable".into();
            row["last_error"] = format!("cannot read the state file: {e}").into();
        }
        rows.push(row);
    }
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({ "daemon": daemon, "accounts": rows });
        // Written as one io::Write call, so a closed pipe (`| head`) is an io::Error that
        // main treats as success, not a serde error.
        let text = serde_json::to_string_pretty(&doc)?;
        writeln!(out, "{text}")?;
        return Ok(code);
    }
    match &holder {
        Ok(Some(h)) => writeln!(
            out,
            "daemon: running (tokend {}, pid {}, since {})",
            h.command,
            h.pid,
            rfc3339(from_ms(h.since_ms))
        )?,
        Ok(None) => writeln!(
            out,
            "daemon: not running (nothing holds {}); the times below are what it last saved",
            cfg.daemon.state_dir.join(".lock").display()
        )?,
        Err(e) => writeln!(out, "daemon: unknown ({e})")?,
    }
    // One line per account, sized to its contents; exact times are in --json.
    let text = |r: &serde_json::Value, key: &str| r[key].as_str().unwrap_or("-").to_string();
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                text(r, "account"),
                text(r, "provider"),
                text(r, "state"),
                relative(r["expires_in"].as_str()),
                relative(r["next_refresh_in"].as_str()),
                r["last_success_ago"]
                    .as_str()
                    .map_or("never".into(), |a| format!("{a} ago")),
                r["last_error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let header = [
        "ACCOUNT",
        "PROVIDER",
        "STATE",
        "EXPIRES",
        "NEXT REFRESH",
        "LAST OK",
        "LAST ERROR",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 7]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 6 {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l.trim_end().to_string()
    };
    writeln!(out, "{}", line(&header))?;
    for (row, r) in table.iter().zip(&rows) {
        writeln!(out, "{}", line(row))?;
        let c = &r["coordination"];
        if c.is_object() {
            let claim = match (
                c["claim"]["instance"].as_str(),
                c["claim"]["since"].as_str(),
            ) {
                (Some(who), Some(since)) => format!("claimed by {who} since {since}"),
                _ => "no claim".to_string(),
            };
            writeln!(
                out,
                "  └ coordination: generation {}, refreshed by {}, {claim}",
                c["generation"],
                c["refreshed_by"].as_str().unwrap_or("-")
            )?;
        }
        for s in r["sinks"].as_array().into_iter().flatten() {
            let state = match (s["last_write"].as_str(), s["last_error"].as_str()) {
                (_, Some(e)) => format!("error: {e}"),
                (Some(w), None) => {
                    format!("{} at {w}", s["last_outcome"].as_str().unwrap_or("written"))
                }
                (None, None) => "not written yet".to_string(),
            };
            writeln!(out, "  └ {}: {state}", s["sink"].as_str().unwrap_or(""))?;
        }
    }
    Ok(code)
}

/// What the daemon last saw of the account's coordination record (docs/HA.md): the held
/// token's generation, the claim and who refreshed last.
fn coordination_row(state: Option<&AccountState>) -> serde_json::Value {
    let seen = state.and_then(|s| s.coordination.as_ref());
    let claim = seen.and_then(|c| {
        c.claim_instance.as_ref().map(|who| {
            serde_json::json!({
                "instance": who,
                "since": c.claim_since_ms.map(|ms| rfc3339(from_ms(ms))),
            })
        })
    });
    serde_json::json!({
        "generation": state.map_or(0, |s| s.generation),
        "record_generation": seen.map(|c| c.generation),
        "claim": claim,
        "refreshed_by": seen.and_then(|c| c.refreshed_by.clone()),
        "seen_at": seen.map(|c| rfc3339(from_ms(c.seen_ms))),
    })
}

/// `"14s"` → `"in 14s"`, `"-3m 2s"` → `"3m 2s ago"`.
fn relative(delta: Option<&str>) -> String {
    match delta {
        None => "-".into(),
        Some(d) => match d.strip_prefix('-') {
            Some(past) => format!("{past} ago"),
            None => format!("in {d}"),
        },
    }
}

fn human_delta(from: SystemTime, to: SystemTime) -> String {
    match to.duration_since(from) {
        Ok(d) => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
        Err(e) => format!(
            "-{}",
            humantime::format_duration(Duration::from_secs(e.duration().as_secs()))
        ),
    }
}

fn status_row(
    a: &settings::Account,
    state: Option<&AccountState>,
    stale: bool,
    now: SystemTime,
) -> serde_json::Value {
    let token = state.and_then(|s| s.token.as_ref());
    // The next attempt as the policy sees it (the daemon saved the same plan).
    let next =
        state.map(|s| policy::planned_attempt(&account::facts(s, now, None), &a.timing, &a.retry));
    let valid = token.is_some_and(|t| from_ms(t.expires_at_ms) > now);
    let superseded = state.is_some_and(|s| s.superseded);
    let label = match (token, valid, stale) {
        (_, _, true) => "stale",
        (None, _, _) => "none",
        (Some(_), true, _) if superseded => "superseded",
        (Some(_), true, _) => "valid",
        (Some(_), false, _) => "expired",
    };
    let sinks: Vec<serde_json::Value> = a
        .sinks
        .iter()
        .map(|s| {
            let label = s.label();
            let st = state.and_then(|st| st.sinks.get(&label));
            serde_json::json!({
                "sink": label,
                "last_write": st.and_then(|x| x.last_write_ms).map(|ms| rfc3339(from_ms(ms))),
                "last_outcome": st.and_then(|x| x.last_outcome.clone()),
                "last_error": st.and_then(|x| x.last_error.clone()),
                "last_error_at": st.and_then(|x| x.last_error_ms).map(|ms| rfc3339(from_ms(ms))),
            })
        })
        .collect();
    serde_json::json!({
        "account": a.name,
        "provider": a.provider.name,
        "state": label,
        "expires_at": token.map(|t| rfc3339(from_ms(t.expires_at_ms))),
        "expires_in": token.map(|t| human_delta(now, from_ms(t.expires_at_ms))),
        "expires_in_seconds": token.map(|t| (t.expires_at_ms as i64 - crate::state::to_ms(now) as i64) / 1000),
        "next_refresh": next.map(rfc3339),
        "next_refresh_in": next.map(|at| human_delta(now, at)),
        "last_success": state.and_then(|s| s.last_success_ms).map(|ms| rfc3339(from_ms(ms))),
        "last_success_ago": state.and_then(|s| s.last_success_ms).map(|ms| human_delta(from_ms(ms), now)),
        "last_error": state.and_then(|s| s.last_error.clone()),
        "last_error_at": state.and_then(|s| s.last_error_ms).map(|ms| rfc3339(from_ms(ms))),
        "consecutive_failures": state.map(|s| s.failures).unwrap_or(0),
        "logins": state.map(|s| s.logins).unwrap_or(0),
        "refreshes": state.map(|s| s.refreshes).unwrap_or(0),
        "sinks": sinks,
    })
}
