//! Validation of the parts of the config that every layer shares: human durations and
//! their bounds (also used by the sinks), `[daemon]`, refresh timing, retry and
//! `[[account.notify]]`. The account as a whole (provider, sinks) is validated a layer up,
//! in `crate::settings::account`, which calls these.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::Validator;
use super::raw::{DaemonConfig, NotifyConfig, RetryConfig, TimingConfig};
use super::{Daemon, LogFormat, Notify};
use crate::bounds::{MAX_CONFIG_DURATION, MAX_LIFETIME, TIMEOUT_RANGE};
use crate::schedule::{Retry, Timing};

/// The shortest `default_lifetime`: a token must still live 2 s after it is received.
const MIN_DEFAULT_LIFETIME: Duration = Duration::from_secs(3);

/// Parses a human duration (`"30s"`, `"5m"`, `"1h 30m"`). humantime's arithmetic is
/// checked: an absurd value (`"500000000000y"`) is an error here, not a panic.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("{s:?} is not a duration: expected e.g. \"30s\", \"5m\" or \"1h\""))
}

/// Parses a human duration and checks it lies in `min ..= max` (issue 11: every
/// configured duration is bounded, so none can overflow the daemon's time arithmetic).
/// The one rule for every duration in the config: accounts, `[daemon]`, sinks, notify.
pub fn bounded_duration(s: &str, (min, max): (Duration, Duration)) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        let range = if min.is_zero() {
            format!("at most {}", humantime::format_duration(max))
        } else {
            format!(
                "{} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )
        };
        return Err(format!("{s:?} is out of range: expected {range}"));
    }
    Ok(d)
}

/// An optional duration in `range`, else `default`; an error is recorded against `field`.
pub fn duration(
    v: &mut Validator<'_>,
    field: &str,
    value: Option<&String>,
    default: Duration,
    range: (Duration, Duration),
) -> Duration {
    match value.map(|s| bounded_duration(s, range)) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(m)) => {
            v.error(field, m);
            default
        }
    }
}

/// Validates `[daemon]`, applying defaults.
pub fn validate_daemon(v: &mut Validator<'_>, raw: &DaemonConfig) -> Daemon {
    let state_dir = match &raw.state_dir {
        Some(dir) => {
            if let Err(m) = state_dir(dir) {
                v.error("state_dir", m);
            }
            v.base_dir().join(dir)
        }
        None => std::env::var_os("STATE_DIRECTORY")
            .and_then(|s| std::env::split_paths(&s).next())
            .unwrap_or_else(|| PathBuf::from("/var/lib/tokend")),
    };
    let listen = raw
        .listen
        .as_ref()
        .and_then(|s| match s.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                v.error(
                    "listen",
                    format!(
                        "{s:?} is not an address: expected host:port such as \"127.0.0.1:9750\""
                    ),
                );
                None
            }
        });
    let log_format = match raw.log_format.as_deref().unwrap_or("auto") {
        "auto" => LogFormat::Auto,
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            v.error(
                "log_format",
                format!("{other:?} is not a log format: expected auto, text or json"),
            );
            LogFormat::Auto
        }
    };
    let log_level = raw.log_level.clone().unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        v.error(
            "log_level",
            format!("{log_level:?} is not a log filter: {e}"),
        );
    }
    let max_concurrent_requests = match raw.max_concurrent_requests {
        None => 32,
        Some(n) if (1..=100_000).contains(&n) => n as usize,
        Some(n) => {
            v.error(
                "max_concurrent_requests",
                format!("{n} is out of range: expected 1 to 100000"),
            );
            32
        }
    };
    let durability = match raw
        .durability
        .as_deref()
        .map(crate::state::Durability::parse)
    {
        None => crate::state::Durability::default(),
        Some(Ok(d)) => d,
        Some(Err(m)) => {
            v.error("durability", m);
            crate::state::Durability::default()
        }
    };
    let timing = validate_timing(
        &mut v.key("refresh"),
        raw.refresh.as_ref(),
        &Timing::default(),
    );
    let retry = validate_retry(&mut v.key("retry"), raw.retry.as_ref());
    Daemon {
        state_dir,
        listen,
        log_format,
        log_level,
        max_concurrent_requests,
        durability,
        timing,
        retry,
    }
}

/// Validates refresh timing over `base` (the daemon's, for an account).
pub fn validate_timing(v: &mut Validator<'_>, raw: Option<&TimingConfig>, base: &Timing) -> Timing {
    let Some(raw) = raw else { return *base };
    let mut t = *base;
    if let Some(r) = raw.ratio {
        if r > 0.0 && r < 1.0 {
            t.ratio = r;
        } else {
            v.error(
                "ratio",
                format!("{r} is out of range: expected a fraction between 0 and 1, e.g. 0.75"),
            );
        }
    }
    if let Some(j) = raw.jitter {
        if (0.0..0.5).contains(&j) {
            t.jitter = j;
        } else {
            v.error(
                "jitter",
                format!("{j} is out of range: expected a fraction from 0 to 0.5, e.g. 0.05"),
            );
        }
    }
    if t.ratio - t.jitter <= 0.0 || t.ratio + t.jitter >= 1.0 {
        v.error(
            "jitter",
            format!(
                "ratio {} ± jitter {} must stay between 0 and 1",
                t.ratio, t.jitter
            ),
        );
    }
    t.min_margin = duration(
        v,
        "min_margin",
        raw.min_margin.as_ref(),
        base.min_margin,
        (Duration::ZERO, MAX_CONFIG_DURATION),
    );
    // A token must live 2 s after receipt (SPEC §4), so a shorter default could never
    // be accepted.
    t.default_lifetime = duration(
        v,
        "default_lifetime",
        raw.default_lifetime.as_ref(),
        base.default_lifetime,
        (MIN_DEFAULT_LIFETIME, MAX_LIFETIME),
    );
    t
}

fn validate_retry(v: &mut Validator<'_>, raw: Option<&RetryConfig>) -> Retry {
    let base = Retry::default();
    let Some(raw) = raw else { return base };
    let range = (Duration::ZERO, MAX_CONFIG_DURATION);
    let initial = duration(v, "initial", raw.initial.as_ref(), base.initial, range);
    let max = duration(v, "max", raw.max.as_ref(), base.max, range);
    // At least 1 s: below that the 1 s spacing binds anyway, and 0 would read as "at once".
    let at_least_1s = (Duration::from_secs(1), MAX_CONFIG_DURATION);
    let max_expired = duration(
        v,
        "max_expired",
        raw.max_expired.as_ref(),
        base.max_expired,
        at_least_1s,
    );
    let rejected = duration(
        v,
        "rejected",
        raw.rejected.as_ref(),
        base.rejected,
        at_least_1s,
    );
    if initial.is_zero() {
        v.error("initial", "must be more than 0s");
    }
    if max < initial {
        v.error(
            "max",
            format!(
                "{} is less than initial ({})",
                humantime::format_duration(max),
                humantime::format_duration(initial)
            ),
        );
    }
    Retry {
        initial,
        max,
        max_expired,
        rejected,
    }
}

/// Validates one `[[account.notify]]`.
pub fn validate_notify(v: &mut Validator<'_>, raw: &NotifyConfig) -> Option<Notify> {
    let timeout = duration(
        v,
        "timeout",
        raw.timeout.as_ref(),
        Duration::from_secs(30),
        TIMEOUT_RANGE,
    );
    match (&raw.command, &raw.signal, &raw.pid_file) {
        (Some(argv), None, None) => {
            if argv.is_empty() || argv[0].is_empty() {
                v.error(
                    "command",
                    "must name a program, e.g. [\"systemctl\", \"reload\", \"myapp\"]",
                );
                return None;
            }
            Some(Notify::Command {
                argv: argv.clone(),
                timeout,
            })
        }
        (None, Some(signal), Some(pid_file)) => {
            let name = signal.trim().to_ascii_uppercase();
            let name = if name.starts_with("SIG") {
                name
            } else {
                format!("SIG{name}")
            };
            match name.parse::<nix::sys::signal::Signal>() {
                Ok(signal) => Some(Notify::Signal {
                    signal,
                    pid_file: v.base_dir().join(pid_file),
                }),
                Err(_) => {
                    v.error(
                        "signal",
                        format!(
                            "{signal:?} is not a signal name: expected e.g. \"HUP\" or \"USR1\""
                        ),
                    );
                    None
                }
            }
        }
        _ => {
            v.error(
                "",
                "expected either command = [...] or signal = \"…\" with pid_file = \"…\"",
            );
            None
        }
    }
}

/// `state_dir`: a directory path, not empty and without NUL bytes (an empty one would
/// silently mean the config file's directory).
pub fn state_dir(dir: &Path) -> Result<(), String> {
    let bytes = dir.as_os_str().as_encoded_bytes();
    if bytes.is_empty() {
        return Err("must not be empty: give a directory, e.g. \"/var/lib/tokend\"".into());
    }
    if bytes.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    Ok(())
}
