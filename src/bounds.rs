//! The documented ranges of every value tokend takes from outside (provider answers,
//! config files, state files, the clock), and the saturating time arithmetic that keeps
//! each derived instant inside them. Issue 11: with `panic = "abort"`, one overflowing
//! `SystemTime + Duration` or one unformattable date from one account's answer stopped
//! every account, and kept stopping them after a restart.
//!
//! Used by `provider::extract` (expiries and token acceptance), `config::validate` and
//! `settings::account` (duration ranges), `state` (loaded values) and `sink` (date
//! formatting).
//!
//! The ranges:
//! - **Times** are kept between the Unix epoch and [`max_time`], 9999-12-31T23:59:59Z, the
//!   last second RFC 3339 (four-digit years) can write; every time tokend formats or
//!   stores lies in that range, so formatting cannot fail.
//! - **Token lifetimes** from any expiry source (`expires_in`, JWT `exp`, cookie
//!   `Max-Age`/`Expires`, `default_lifetime`) are at most [`MAX_LIFETIME`], one year: a
//!   longer one is clamped to a year. No access token in the providers' documents lives
//!   longer than days, so a larger value is a unit mistake (an `exp` in milliseconds) or
//!   garbage; a year keeps every derived instant far from the limits of `SystemTime`,
//!   `Instant` and RFC 3339, and tokend still refreshes such a token ahead of that year.
//! - A token must live at least [`MIN_REMAINING`] (2 s) after it is received (SPEC §4
//!   "Only good tokens are published"); less is a malformed answer.
//! - **Config durations**: timeouts [`TIMEOUT_RANGE`] (1 s to 10 min); every other
//!   duration (lifetimes, margins, backoff caps) at most [`MAX_CONFIG_DURATION`], a year.

use std::time::{Duration, SystemTime};

/// 9999-12-31T23:59:59Z: the latest time tokend keeps, stores or formats.
pub const MAX_TIME_SECS: u64 = 253_402_300_799;

/// [`MAX_TIME_SECS`] in milliseconds (state files store milliseconds).
pub const MAX_TIME_MS: u64 = MAX_TIME_SECS * 1000;

/// 9999-12-31T23:59:59Z as a `SystemTime`.
pub fn max_time() -> SystemTime {
    // 64-bit seconds on every platform tokend builds for (Linux).
    SystemTime::UNIX_EPOCH + Duration::from_secs(MAX_TIME_SECS)
}

/// The longest token lifetime accepted; longer ones are clamped to it (see the module doc).
/// One year as humantime counts it (365.25 days), so `"1y"` in a config is in range.
pub const MAX_LIFETIME: Duration = Duration::from_secs(31_557_600);

/// A token must still be valid this long after it is received.
pub const MIN_REMAINING: Duration = Duration::from_secs(2);

/// The longest token (access or refresh) accepted, in bytes: 16 KiB holds any JWT a
/// provider sends (a few KiB at most) and fits in an HTTP header line of common servers.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Per-request timeouts (provider requests, Vault, AWS, `notify` commands).
pub const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));

/// The upper bound of every other configured duration (lifetimes, margins, backoff).
pub const MAX_CONFIG_DURATION: Duration = MAX_LIFETIME;

/// `t` clamped to the epoch .. [`max_time`].
pub fn clamp_time(t: SystemTime) -> SystemTime {
    if t < SystemTime::UNIX_EPOCH {
        SystemTime::UNIX_EPOCH
    } else {
        t.min(max_time())
    }
}

/// `t + d`, saturating at [`max_time`] (and never before the epoch): never panics.
pub fn add(t: SystemTime, d: Duration) -> SystemTime {
    clamp_time(t.checked_add(d).unwrap_or_else(max_time))
}

/// Milliseconds since the epoch of `t`, clamped to the epoch .. [`MAX_TIME_MS`].
pub fn to_ms(t: SystemTime) -> u64 {
    clamp_time(t)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(MAX_TIME_MS))
}

/// [`to_ms`] rounded up: a planned time saved in milliseconds is never earlier than the
/// decision (a wait of at least `retry.rejected` stays at least that long).
pub fn to_ms_ceil(t: SystemTime) -> u64 {
    to_ms(add(t, Duration::from_nanos(999_999)))
}

/// The time `ms` milliseconds after the epoch, clamped to [`max_time`].
pub fn from_ms(ms: u64) -> SystemTime {
    add(
        SystemTime::UNIX_EPOCH,
        Duration::from_millis(ms.min(MAX_TIME_MS)),
    )
}

/// A lifetime in (possibly fractional) seconds from outside: `None` when it is negative,
/// NaN or infinite (a malformed answer); clamped to [`MAX_LIFETIME`].
pub fn lifetime_from_secs(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs.min(MAX_LIFETIME.as_secs_f64()))
        .ok()
        .map(|d| d.min(MAX_LIFETIME))
}

/// An absolute time in seconds since the epoch from outside (a JWT `exp`): `None` when NaN
/// or infinite; clamped to the epoch .. [`max_time`].
pub fn time_from_secs(secs: f64) -> Option<SystemTime> {
    if !secs.is_finite() {
        return None;
    }
    let secs = secs.clamp(0.0, MAX_TIME_SECS as f64);
    Duration::try_from_secs_f64(secs)
        .ok()
        .map(|d| add(SystemTime::UNIX_EPOCH, d))
}

/// Formats `t` as RFC 3339 UTC with whole seconds. Times outside the epoch ..
/// [`max_time`] are clamped first, so this cannot fail (humantime refuses years after 9999
/// and panics before 1970).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(clamp_time(t)).to_string()
}

/// Longest instance name kept from a coordination record or a state file.
pub const MAX_NAME_LEN: usize = 128;

/// A name read from outside (an instance name in a coordination record or state file):
/// 1–128 visible ASCII characters or spaces, so it prints on one line and cannot forge a log
/// field.
pub fn printable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_saturate_instead_of_overflowing() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert_eq!(add(SystemTime::now(), Duration::MAX), max_time());
        assert_eq!(clamp_time(far), max_time());
        assert_eq!(from_ms(u64::MAX), max_time());
        assert_eq!(to_ms(far), MAX_TIME_MS);
        assert_eq!(to_ms(from_ms(1_700_000_000_123)), 1_700_000_000_123);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(from_ms(u64::MAX)), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn lifetimes_and_times_from_floats_are_bounded() {
        let cases: [(f64, Option<Duration>); 8] = [
            (60.0, Some(Duration::from_secs(60))),
            (0.5, Some(Duration::from_millis(500))),
            (0.0, Some(Duration::ZERO)),
            (1e20, Some(MAX_LIFETIME)),
            (f64::MAX, Some(MAX_LIFETIME)),
            (-1.0, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
        ];
        for (secs, want) in cases {
            assert_eq!(lifetime_from_secs(secs), want, "{secs}");
        }
        assert_eq!(time_from_secs(1e20), Some(max_time()));
        assert_eq!(time_from_secs(9.3e18), Some(max_time()));
        assert_eq!(time_from_secs(-5.0), Some(SystemTime::UNIX_EPOCH));
        assert_eq!(time_from_secs(f64::NEG_INFINITY), None);
        assert_eq!(
            time_from_secs(1_700_000_000.0),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }
}
