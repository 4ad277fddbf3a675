//! The refresh policy: every decision about *when* an account talks to its provider, as one
//! pure function, [`decide`]. Its input is what the account knows ([`Facts`]: the held
//! token's times, the failures so far and their kind, the planned attempt, how long ago the
//! last request started) and what just happened ([`Event`]: start, the planned time, a cron
//! time, SIGUSR1, a reload that changed the timing, or an answer). Its output is a
//! [`Decision`]: request now or wait, and until when.
//!
//! The daemon's account task (`super::task`), `tokend once` (through [`once_retry`]) and
//! `tokend status` (its "next refresh") all ask this module; nothing else computes a wait.
//! No I/O, no clock, no randomness: the caller passes `now` and the random [`Samples`], so
//! each rule below is a row in the table tests and an invariant in the property tests.
//!
//! The rules (SPEC §4, issue 11):
//! - **Spacing.** Never two requests for one account within [`MIN_INTERVAL`] (1 s). The one
//!   exception is inside a single attempt: a rejected refresh token is followed by a login at
//!   once (`super::obtain`), which this module never sees as two decisions.
//! - **Refresh ahead.** After a success, the next attempt is the jittered refresh-ahead time
//!   (`schedule::refresh_due`).
//! - **Never asleep past expiry.** After a transient failure while a valid token is held,
//!   the wait is capped at half the time left (and the 1 s spacing), so attempts keep landing
//!   before expiry however long the backoff has grown, and even when `Retry-After` asks for
//!   longer: apps must not be left on an expired token because of one server's hint.
//! - **Expired: at most `retry.max_expired` apart.** With no valid token, a transient wait
//!   longer than `retry.max_expired` is drawn from `[max_expired / 2, max_expired]` (so a
//!   fleet does not retry in lockstep), `Retry-After` included: nothing is served meanwhile.
//! - **Rejected credentials or a configuration error** (401/403 at login, 404/405, a request
//!   that cannot be built) wait at least `retry.rejected`, doubling per consecutive failure up
//!   to `retry.max`; while that wait runs, SIGUSR1, cron times, restarts and reloads that keep
//!   the credentials do not bypass it (a provider that locks accounts after a few failed
//!   logins must not lock this one). A credentials change starts a new task with a clean
//!   state, which is the one way out.
//! - **Bounded.** Every time is computed with checked arithmetic and clamped: no input can
//!   make this module panic.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::schedule::{self, MIN_INTERVAL, Retry, Timing};
use crate::state::FailureKind;

/// What the account knows when a decision is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts {
    /// The wall-clock time of the decision.
    pub now: SystemTime,
    /// Monotonic time since the last request for this account started (`None`: none yet in
    /// this process). Monotonic, so a wall-clock jump cannot shorten the 1 s spacing.
    pub since_last_request: Option<Duration>,
    /// The held access token's (obtained_at, expires_at), expired or not.
    pub token: Option<(SystemTime, SystemTime)>,
    /// Consecutive failed attempts, including the one an [`Event::Failed`] reports.
    pub failures: u32,
    /// The held token was obtained with credentials that have since changed.
    pub superseded: bool,
    /// The kind of the last failure, if the last attempt failed.
    pub last_failure: Option<FailureKind>,
    /// The attempt planned by the previous decision (saved as `next_refresh_ms`).
    pub planned: Option<SystemTime>,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// The account task started (daemon start, an added account, a credentials change) or
    /// `tokend once`/`status` looks at a saved state.
    Start,
    /// The planned time came.
    Due,
    /// A cron `schedule` time came.
    Cron,
    /// SIGUSR1: refresh now.
    Nudge,
    /// A reload changed the refresh timing or retry settings (not the credentials).
    TimingChanged,
    /// An attempt obtained a token.
    Obtained {
        /// When its request started.
        obtained_at: SystemTime,
        /// When it expires.
        expires_at: SystemTime,
    },
    /// Another instance holds a live claim on this account's refresh (docs/HA.md): look
    /// at the coordination record again after `recheck`, for its commit.
    ClaimHeld {
        /// How soon (`coordination::decide::recheck`).
        recheck: Duration,
    },
    /// An attempt failed.
    Failed {
        /// How.
        kind: FailureKind,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// The random draws a decision may use, passed in so decisions are reproducible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Samples {
    /// Uniform in `[-1, 1]`: the refresh-ahead jitter.
    pub jitter: f64,
    /// Uniform in `[0, 1]`: the backoff's full jitter.
    pub backoff: f64,
}

impl Samples {
    /// Fresh random draws.
    pub fn random() -> Samples {
        Samples {
            jitter: schedule::jitter_sample(),
            backoff: rand::random::<f64>(),
        }
    }

    /// Draws for an account holding the token of `generation`: the refresh-ahead jitter is
    /// a hash of the two, so every instance sharing the account (docs/HA.md) plans the
    /// same refresh time for the same token and the first to wake claims it while the
    /// others find its commit moments later; across accounts it spreads like a random
    /// draw. The backoff stays random.
    pub fn for_token(account: &str, generation: u64) -> Samples {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(account.as_bytes());
        hash.update(generation.to_le_bytes());
        let digest = hash.finalize();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        // 53 bits, as a uniform draw in [0, 1), mapped to [-1, 1).
        let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
        Samples {
            jitter: unit * 2.0 - 1.0,
            backoff: rand::random::<f64>(),
        }
    }

    /// No jitter (the middle of each range): `status` and documentation examples.
    pub const MIDDLE: Samples = Samples {
        jitter: 0.0,
        backoff: 0.5,
    };
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a request now (refresh token first, else log in).
    Request,
    /// Sleep until [`Decision::next`] unless something else happens.
    Wait,
}

/// Why the next attempt is when it is: the words the logs and `status` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The held token is fresh; refresh ahead of its expiry.
    RefreshAhead,
    /// The planned time came.
    Due,
    /// A cron time came.
    Cron,
    /// SIGUSR1.
    Nudge,
    /// No usable token is held.
    NoToken,
    /// The credentials changed: the held token is served until a new login succeeds.
    Superseded,
    /// A request started less than 1 s ago.
    Spacing,
    /// Exponential backoff after a transient failure.
    Backoff,
    /// The server's `Retry-After`.
    RetryAfter,
    /// The backoff was cut so that the next attempt lands before the held token expires.
    BeforeExpiry,
    /// No valid token is held: at most `retry.max_expired` between attempts.
    Expired,
    /// The credentials were rejected: `retry.rejected`, doubling.
    Rejected,
    /// Another instance is refreshing (a live claim): look again shortly.
    ClaimHeld,
    /// A configuration error (404/405, a request that cannot be built): like rejected.
    Misconfigured,
}

impl Reason {
    /// One lower-case word for log fields (`why=backoff`); the `Display` text explains it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RefreshAhead => "refresh_ahead",
            Reason::Due => "due",
            Reason::Cron => "cron",
            Reason::Nudge => "sigusr1",
            Reason::NoToken => "no_token",
            Reason::Superseded => "superseded",
            Reason::Spacing => "spacing",
            Reason::Backoff => "backoff",
            Reason::RetryAfter => "retry_after",
            Reason::BeforeExpiry => "before_expiry",
            Reason::Expired => "expired",
            Reason::Rejected => "rejected",
            Reason::ClaimHeld => "claim_held",
            Reason::Misconfigured => "misconfigured",
        }
    }
}

/// A wait as logged: seconds to the millisecond without spaces (`3.996s`, `300s`), so a
/// log field holds exactly the wait the task uses and reads as one token.
pub fn wait_text(d: Duration) -> String {
    let ms = d.as_millis();
    let text = format!("{}.{:03}", ms / 1000, ms % 1000);
    format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::RefreshAhead => "refresh ahead of expiry",
            Reason::Due => "refresh due",
            Reason::Cron => "cron schedule",
            Reason::Nudge => "SIGUSR1",
            Reason::NoToken => "no valid token held",
            Reason::Superseded => "credentials changed: new login",
            Reason::Spacing => "at least 1s between requests",
            Reason::Backoff => "backoff",
            Reason::RetryAfter => "the server's Retry-After",
            Reason::BeforeExpiry => "backoff cut to land before the held token expires",
            Reason::Expired => "token expired: at most retry.max_expired between attempts",
            Reason::Rejected => "credentials rejected: retry.rejected, doubling to retry.max",
            Reason::Misconfigured => "configuration error: retry.rejected, doubling to retry.max",
            Reason::ClaimHeld => "another instance is refreshing: waiting for its commit",
        })
    }
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Request now, or wait.
    pub action: Action,
    /// When the next attempt is due if nothing else happens (`now` for a request). This is
    /// the time the task sleeps until and the time the logs and `status` show.
    pub next: SystemTime,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// How long from `now` until [`next`](Self::next) (zero if it is past).
    pub fn wait(&self, now: SystemTime) -> Duration {
        self.next.duration_since(now).unwrap_or(Duration::ZERO)
    }
}

/// The latest time any decision returns: decisions further out than this are clamped, so
/// a state file or clock with absurd values cannot overflow a timer.
pub const HORIZON: Duration = Duration::from_secs(366 * 86_400);

/// Decides what to do about `event`, given `facts`. Pure and total: see the module doc for
/// the rules.
pub fn decide(
    facts: &Facts,
    event: Event,
    timing: &Timing,
    retry: &Retry,
    samples: Samples,
) -> Decision {
    let now = facts.now;
    // When the next request may start at the earliest (1 s spacing).
    let earliest = add(
        now,
        facts
            .since_last_request
            .map_or(Duration::ZERO, |d| MIN_INTERVAL.saturating_sub(d)),
    );
    let decision = match event {
        Event::Obtained {
            obtained_at,
            expires_at,
        } => wait_until(
            schedule::refresh_due(obtained_at, expires_at, timing, samples.jitter),
            Reason::RefreshAhead,
        ),
        Event::Failed { kind, retry_after } => {
            let (wait, reason) = failure_wait(facts, kind, retry_after, retry, samples);
            wait_until(add(now, wait), reason)
        }
        Event::ClaimHeld { recheck } => wait_until(add(now, recheck), Reason::ClaimHeld),
        Event::Start => match hold(facts, retry) {
            Some(d) => d,
            // New credentials: log in now (the old token is served meanwhile).
            None if facts.superseded => request(Reason::Superseded),
            None => match fresh_plan(facts, timing, samples) {
                Some(d) => d,
                None => request(Reason::NoToken),
            },
        },
        Event::TimingChanged => match hold(facts, retry) {
            Some(d) => d,
            // A success is the last word: re-draw its refresh time under the new timing.
            None if facts.last_failure.is_none() => match facts.token {
                Some((obtained_at, expires_at)) => wait_until(
                    schedule::refresh_due(obtained_at, expires_at, timing, samples.jitter),
                    Reason::RefreshAhead,
                ),
                None => request(Reason::NoToken),
            },
            // A backoff is running: keep it.
            None => match facts.planned {
                Some(at) => wait_until(at, Reason::Backoff),
                None => request(Reason::Due),
            },
        },
        Event::Due => match facts.planned {
            Some(at) if at > now => wait_until(at, Reason::Due),
            _ => request(Reason::Due),
        },
        Event::Cron | Event::Nudge => match hold(facts, retry) {
            Some(d) => d,
            None => request(if event == Event::Cron {
                Reason::Cron
            } else {
                Reason::Nudge
            }),
        },
    };
    // Spacing and the horizon apply to every decision.
    let next = clamp(decision.next, now).max(earliest);
    if decision.action == Action::Request && next > now {
        return Decision {
            action: Action::Wait,
            next,
            reason: Reason::Spacing,
        };
    }
    Decision { next, ..decision }
}

/// `tokend once` retries an attempt that failed transiently while the wait is short: at
/// most `ONCE_ATTEMPTS` attempts in all, waiting at most `ONCE_MAX_WAIT` each. Returns how
/// long to wait before the next attempt, or `None` to give up.
pub fn once_retry(decision: &Decision, now: SystemTime, attempts: u32) -> Option<Duration> {
    let transient = matches!(
        decision.reason,
        Reason::Backoff | Reason::RetryAfter | Reason::BeforeExpiry | Reason::Expired
    );
    let wait = decision.wait(now);
    (transient && attempts < ONCE_ATTEMPTS && wait <= ONCE_MAX_WAIT).then_some(wait)
}

/// The next attempt `tokend status` shows: the saved plan (bounded), or, without one, what
/// a start would decide (`now` when a request would be made at once).
pub fn planned_attempt(facts: &Facts, timing: &Timing, retry: &Retry) -> SystemTime {
    match facts.planned {
        Some(at) => clamp(at, facts.now),
        None => decide(facts, Event::Start, timing, retry, Samples::MIDDLE).next,
    }
}

/// The wait before a failed sink write is retried (`attempt` counts that sink's
/// consecutive failures from 0). Sinks retry on their own backoff, never touching the
/// provider (SPEC §4 "Sinks are independent"); a permanent error (permission denied, an
/// access policy) waits at least a minute (or `retry.max` if that is shorter): only an
/// operator fixes it, so retrying fast would only fill the log.
pub fn sink_retry(attempt: u32, transient: bool, retry: &Retry, sample: f64) -> Duration {
    let wait = schedule::backoff(attempt, retry, sample, None);
    if transient {
        wait
    } else {
        wait.max(retry.max.min(Duration::from_secs(60)))
    }
}

/// Attempts `tokend once` makes per account at most.
pub const ONCE_ATTEMPTS: u32 = 3;
/// Longest wait `tokend once` accepts between two attempts.
pub const ONCE_MAX_WAIT: Duration = Duration::from_secs(10);

fn request(reason: Reason) -> Decision {
    Decision {
        action: Action::Request,
        next: SystemTime::UNIX_EPOCH,
        reason,
    }
}

fn wait_until(next: SystemTime, reason: Reason) -> Decision {
    Decision {
        action: Action::Wait,
        next,
        reason,
    }
}

/// A running rejected/misconfigured wait, which only a credentials change ends.
fn hold(facts: &Facts, retry: &Retry) -> Option<Decision> {
    let reason = match facts.last_failure? {
        FailureKind::Rejected => Reason::Rejected,
        FailureKind::Misconfigured => Reason::Misconfigured,
        FailureKind::Transient => return None,
    };
    let at = facts.planned.filter(|at| *at > facts.now)?;
    // A planned time from a state file is bounded by the longest wait this rule can give.
    let longest = add(facts.now, retry.max.max(retry.rejected));
    Some(wait_until(at.min(longest), reason))
}

/// At start: a held token that is still fresh keeps its saved plan when the timing could
/// have drawn it (a restart then rewrites no state file), else a new draw.
fn fresh_plan(facts: &Facts, timing: &Timing, samples: Samples) -> Option<Decision> {
    let (obtained_at, expires_at) = facts.token?;
    let unjittered = schedule::refresh_due(obtained_at, expires_at, timing, 0.0);
    if expires_at <= facts.now || unjittered <= facts.now {
        return None;
    }
    let earliest = schedule::refresh_due(obtained_at, expires_at, timing, -1.0);
    // Plans are saved rounded up to the millisecond and times truncated to it: a saved
    // plan may lie up to 1 ms past the range recomputed from the saved times.
    let latest = add(
        schedule::refresh_due(obtained_at, expires_at, timing, 1.0),
        Duration::from_millis(1),
    );
    let at = facts
        .planned
        .filter(|p| (earliest..=latest).contains(p))
        .unwrap_or_else(|| schedule::refresh_due(obtained_at, expires_at, timing, samples.jitter));
    Some(wait_until(at, Reason::RefreshAhead))
}

/// The wait after a failed attempt, and why.
fn failure_wait(
    facts: &Facts,
    kind: FailureKind,
    retry_after: Option<Duration>,
    retry: &Retry,
    samples: Samples,
) -> (Duration, Reason) {
    let attempt = facts.failures.saturating_sub(1);
    match kind {
        FailureKind::Rejected | FailureKind::Misconfigured => {
            let ceiling = retry.max.max(retry.rejected);
            let wait = retry
                .rejected
                .checked_mul(1u32 << attempt.min(20))
                .unwrap_or(ceiling)
                .min(ceiling);
            let reason = if kind == FailureKind::Rejected {
                Reason::Rejected
            } else {
                Reason::Misconfigured
            };
            (wait.max(MIN_INTERVAL), reason)
        }
        FailureKind::Transient => {
            let backoff = schedule::backoff(attempt, retry, samples.backoff, None);
            let (mut wait, mut reason) = match retry_after {
                Some(ra) if ra > backoff => (ra, Reason::RetryAfter),
                _ => (backoff, Reason::Backoff),
            };
            let valid_until = facts
                .token
                .map(|(_, expires_at)| expires_at)
                .filter(|e| *e > facts.now);
            match valid_until {
                Some(expires_at) => {
                    let left = expires_at.duration_since(facts.now).unwrap_or_default();
                    // The 1 s spacing is counted from the request's start by `decide`.
                    let cap = left / 2;
                    if wait > cap {
                        (wait, reason) = (cap, Reason::BeforeExpiry);
                    }
                }
                None => {
                    if wait > retry.max_expired {
                        let factor = 0.5 + 0.5 * samples.backoff.clamp(0.0, 1.0);
                        wait = scale(retry.max_expired, factor);
                        reason = Reason::Expired;
                    }
                }
            }
            (wait, reason)
        }
    }
}

/// `d × factor` for a factor in `[0, 1]`, without a conversion that could panic.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor.clamp(0.0, 1.0)).unwrap_or(d)
}

/// `t + d`, saturating at the horizon instead of overflowing.
fn add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d.min(HORIZON)).unwrap_or(t)
}

/// A decision time clamped to `[UNIX_EPOCH, now + HORIZON]`.
fn clamp(t: SystemTime, now: SystemTime) -> SystemTime {
    t.min(add(now, HORIZON))
}

#[cfg(test)]
mod tests;
