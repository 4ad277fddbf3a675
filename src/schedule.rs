//! Pure timing maths (SPEC §4): when a token is due for refresh, and how long to back off
//! after a failure. Callers pass the random samples in, so every rule is unit-tested.

use std::time::{Duration, SystemTime};

/// Never two requests for one account closer than this (SPEC §4 "Never a tight loop").
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Refresh timing: `[daemon.refresh]` merged with `[account.refresh]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Refresh once this fraction of the lifetime has passed.
    pub ratio: f64,
    /// ± this fraction of the lifetime.
    pub jitter: f64,
    /// Never later than this before expiry (capped at half the lifetime).
    pub min_margin: Duration,
    /// Lifetime assumed when a response carries no expiry.
    pub default_lifetime: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ratio: 0.75,
            jitter: 0.05,
            min_margin: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Retry settings: `[daemon.retry]` (the rules that use them are in
/// `crate::account::policy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// First backoff ceiling after a transient failure.
    pub initial: Duration,
    /// Largest backoff ceiling, and the ceiling of the rejected-credentials wait.
    pub max: Duration,
    /// Once the held token has expired, attempts are at most this far apart.
    pub max_expired: Duration,
    /// The first wait after the provider rejected the credentials at login (or a
    /// configuration error); it doubles per consecutive failure up to `max`.
    pub rejected: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            max_expired: Duration::from_secs(10),
            rejected: Duration::from_secs(60),
        }
    }
}

/// When a token obtained at `obtained_at` and expiring at `expires_at` should be refreshed.
/// `sample` is uniform in `[-1, 1]` and scales the jitter. The result is at least
/// [`MIN_INTERVAL`] after `obtained_at`, and otherwise never later than
/// `expires_at - min(min_margin, lifetime / 2)`.
pub fn refresh_due(
    obtained_at: SystemTime,
    expires_at: SystemTime,
    timing: &Timing,
    sample: f64,
) -> SystemTime {
    let lifetime = expires_at
        .duration_since(obtained_at)
        .unwrap_or(Duration::ZERO);
    let life = lifetime.as_secs_f64();
    // NaN-safe: a NaN sample or ratio counts as 0, and the offset stays within the lifetime.
    let fraction = timing.ratio + timing.jitter * sample.clamp(-1.0, 1.0);
    let offset = Duration::try_from_secs_f64((life * fraction).clamp(0.0, life))
        .unwrap_or(Duration::ZERO)
        .min(lifetime);
    let planned = later(obtained_at, offset);
    let margin = timing.min_margin.min(lifetime / 2);
    let latest = expires_at.checked_sub(margin).unwrap_or(expires_at);
    planned.min(latest).max(later(obtained_at, MIN_INTERVAL))
}

/// `t + d`, or `t` itself when that would overflow the clock's range (never panics).
pub fn later(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

/// The `attempt`-th (0-based) backoff with full jitter: uniform in
/// `[0, min(max, initial × 2^attempt)]` (`sample` uniform in `[0, 1]`), raised to
/// `retry_after` when the server asked for that, and never below [`MIN_INTERVAL`].
pub fn backoff(
    attempt: u32,
    retry: &Retry,
    sample: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let ceiling = retry.initial.as_secs_f64() * 2f64.powi(attempt.min(62) as i32);
    let ceiling = ceiling.min(retry.max.as_secs_f64()).max(0.0);
    let wait = Duration::try_from_secs_f64(ceiling * sample.clamp(0.0, 1.0))
        .unwrap_or(retry.max)
        .min(retry.max);
    wait.max(retry_after.unwrap_or(Duration::ZERO))
        .max(MIN_INTERVAL)
}

/// An account's cron `schedule`, parsed once (at config load) and kept with the text it
/// was written as (compared by text: a reload that keeps the text keeps the schedule).
#[derive(Clone)]
pub struct Schedule {
    /// As written in the config.
    pub text: String,
    /// Parsed.
    pub cron: croner::Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// Parses a `schedule`: 6 or 7 fields, seconds first, both day-of-month and day-of-week
/// must match when both are set: the options tokio-cron-scheduler gives the same parser
/// (croner). tokend computes the next time itself rather than running that crate's
/// scheduler, which wakes every 500 ms: an idle daemon must not poll (SPEC §4).
pub fn parse_cron(s: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(s)
        .map_err(|e| format!("{s:?} is not a cron schedule ({e}): expected 6 or 7 fields, seconds first (sec min hour day-of-month month day-of-week), e.g. \"0 0 3 * * *\""))
}

/// The first time strictly after `after` that `cron` names (UTC).
pub fn next_cron(cron: &croner::Cron, after: SystemTime) -> Option<SystemTime> {
    let after: chrono::DateTime<chrono::Utc> = after.into();
    cron.find_next_occurrence(&after, false)
        .ok()
        .map(SystemTime::from)
}

/// Uniform sample in `[-1, 1]` for [`refresh_due`].
pub fn jitter_sample() -> f64 {
    rand::random::<f64>() * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn refresh_at_ratio_with_jitter() {
        let t = Timing::default();
        // 1 h token: 75 % ± 5 % → 2700 s ± 180 s; margin 30 s does not bind.
        assert_eq!(refresh_due(at(0), at(3600), &t, 0.0), at(2700));
        assert_eq!(refresh_due(at(0), at(3600), &t, 1.0), at(2880));
        assert_eq!(refresh_due(at(0), at(3600), &t, -1.0), at(2520));
    }

    #[test]
    fn min_margin_binds_and_is_capped_at_half_the_lifetime() {
        let t = Timing {
            ratio: 0.99,
            jitter: 0.0,
            min_margin: Duration::from_secs(30),
            ..Timing::default()
        };
        assert_eq!(refresh_due(at(0), at(100), &t, 0.0), at(70));
        // 20 s token: margin capped at 10 s.
        assert_eq!(refresh_due(at(0), at(20), &t, 0.0), at(10));
    }

    #[test]
    fn never_sooner_than_one_second_even_for_expired_or_tiny_lifetimes() {
        let t = Timing::default();
        assert_eq!(refresh_due(at(100), at(100), &t, 0.0), at(101));
        assert_eq!(refresh_due(at(100), at(50), &t, -1.0), at(101));
    }

    #[test]
    fn extreme_inputs_never_panic() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2);
        let t = Timing {
            ratio: f64::NAN,
            jitter: f64::INFINITY,
            ..Timing::default()
        };
        for (a, b, s) in [(at(0), far, f64::NAN), (far, far, 1.0), (far, at(0), -1.0)] {
            let due = refresh_due(a, b, &t, s);
            assert!(due >= a.min(b), "{due:?}");
        }
        let r = Retry {
            initial: Duration::MAX,
            max: Duration::MAX,
            ..Retry::default()
        };
        assert_eq!(backoff(u32::MAX, &r, 1.0, None), Duration::MAX);
    }

    #[test]
    fn cron_needs_seconds_and_finds_the_next_time() {
        assert!(parse_cron("0 3 * * *").is_err());
        let c = parse_cron("0 0 3 * * *").unwrap();
        assert_eq!(next_cron(&c, at(0)), Some(at(3 * 3600)));
        assert_eq!(next_cron(&c, at(3 * 3600)), Some(at(27 * 3600)));
    }

    #[test]
    fn backoff_grows_to_max_and_honours_retry_after() {
        let r = Retry {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            ..Retry::default()
        };
        assert_eq!(backoff(0, &r, 1.0, None), Duration::from_secs(1));
        assert_eq!(backoff(3, &r, 1.0, None), Duration::from_secs(8));
        assert_eq!(backoff(30, &r, 1.0, None), Duration::from_secs(300));
        assert_eq!(backoff(3, &r, 0.5, None), Duration::from_secs(4));
        assert_eq!(backoff(3, &r, 0.0, None), MIN_INTERVAL);
        assert_eq!(
            backoff(0, &r, 0.0, Some(Duration::from_secs(42))),
            Duration::from_secs(42)
        );
    }
}
