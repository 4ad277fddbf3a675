//! The coordination protocol's decisions, as pure functions tested as tables (STYLE.md
//! "Decisions as data"): whether to adopt the record's tokens, what state a claim is in
//! as this instance sees it, whether a won claim leaves time for the provider call, and
//! what an account does while the store cannot be reached. The account's coordinated
//! attempt (`crate::account::shared`) runs them; docs/HA.md explains each rule.

use std::time::{Duration, SystemTime};

use super::record::{Claim, Record};
use crate::bounds::from_ms;

/// Whether to take the record's tokens instead of the held ones: the record's are of the
/// same credentials and still valid, and either newer (a higher generation) or the only
/// valid ones (a new or wiped instance, a restart after expiry).
pub fn adopt(
    record: &Record,
    fingerprint_matches: bool,
    held_generation: u64,
    holds_valid: bool,
    now: SystemTime,
) -> bool {
    let Some(tokens) = &record.tokens else {
        return false;
    };
    let valid = from_ms(tokens.expires_at_ms) > now;
    fingerprint_matches && valid && (record.generation > held_generation || !holds_valid)
}

/// A claim as this instance sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// Nobody claims the refresh.
    Free,
    /// This process's own claim (a commit or release that did not reach the store).
    Mine,
    /// Another instance is refreshing: wait for its commit.
    Live,
    /// The claim's record has not changed for a whole TTL on this instance's monotonic
    /// clock: its holder is dead or cut off, and may have spent the refresh token.
    Stale,
}

/// What this instance makes of `claim` on a record at `version`, having first seen that
/// version `seen_for` ago (`None`: it just did). Only this instance's own monotonic clock
/// counts; the claim's `since_ms` is another host's clock and is ignored.
pub fn claim_state(
    claim: Option<&Claim>,
    my_nonce: &str,
    seen_for: Option<Duration>,
    ttl: Duration,
) -> ClaimState {
    match claim {
        None => ClaimState::Free,
        Some(c) if c.nonce == my_nonce => ClaimState::Mine,
        Some(_) if seen_for.is_some_and(|d| d >= ttl) => ClaimState::Stale,
        Some(_) => ClaimState::Live,
    }
}

/// Extra time a claim must have left beyond the provider exchange itself: the local state
/// save (fsync) and the commit.
pub const COMMIT_MARGIN: Duration = Duration::from_millis(500);

/// Whether a claim with `left` of its TTL remaining covers an exchange with this request
/// `timeout`: a refresh whose token is rejected is followed by a login, so two requests.
pub fn may_call(left: Duration, timeout: Duration) -> bool {
    left > timeout.saturating_mul(2).saturating_add(COMMIT_MARGIN)
}

/// The shortest `claim_ttl` a config may set for an account with this request `timeout`:
/// [`may_call`] must be able to pass on a claim just taken.
pub fn min_claim_ttl(timeout: Duration) -> Duration {
    timeout
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(1))
}

/// How soon to look at the record again while another instance holds a live claim: its
/// commit normally follows within a request's time; a dead holder is found stale after
/// the TTL.
pub fn recheck(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(1))
}

/// What an account does when the store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenStoreDown {
    /// No provider call: a rotating refresh token spent here could be spent again by
    /// another instance (and the provider would revoke the family). The held token is
    /// served; the store is retried on the transient backoff.
    Wait,
    /// Log in or refresh locally without committing: nothing shared is spent, and each
    /// instance's tokens stay valid alongside the others'.
    GoLocal,
}

/// [`WhenStoreDown`] for a provider that does or does not rotate its refresh token.
pub fn when_store_down(rotates: bool) -> WhenStoreDown {
    if rotates {
        WhenStoreDown::Wait
    } else {
        WhenStoreDown::GoLocal
    }
}

/// The times an adopted token is held with: the writer's, but never later than this
/// instance's `now` plus the token's lifetime (a difference of the writer's two times, so
/// clock-neutral). A writer whose clock runs ahead cannot make a token look valid longer
/// than it was issued for; one that runs behind makes it look older, which is safe.
pub fn adopted_times(obtained_ms: u64, expires_ms: u64, now_ms: u64) -> (u64, u64) {
    let lifetime = expires_ms.saturating_sub(obtained_ms);
    (
        obtained_ms.min(now_ms),
        expires_ms.min(now_ms.saturating_add(lifetime)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::to_ms;
    use crate::coordination::record::{FORMAT, Tokens};

    fn record(generation: u64, expires_in_s: i64, now: SystemTime) -> Record {
        let at = |s: i64| {
            let ms = to_ms(now) as i64 + s * 1000;
            ms.max(0) as u64
        };
        Record {
            format: FORMAT,
            generation,
            fingerprint: "fp".into(),
            tokens: Some(Tokens {
                access_token: "a".into(),
                token_type: "Bearer".into(),
                obtained_at_ms: at(-10),
                expires_at_ms: at(expires_in_s),
                expiry_source: "expires_in".into(),
                refresh_token: None,
                refresh_expires_at_ms: None,
            }),
            refreshed_by: None,
            claim: None,
        }
    }

    #[test]
    fn adopt_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let empty = Record {
            generation: 9,
            ..Record::default()
        };
        // (record, fingerprint matches, held generation, holds a valid token) → adopt
        let rows = [
            (record(5, 60, now), true, 4, true, true),   // newer
            (record(5, 60, now), true, 5, true, false),  // same generation
            (record(5, 60, now), true, 6, true, false),  // older
            (record(5, 60, now), true, 6, false, true),  // older, but ours expired
            (record(5, -1, now), true, 4, true, false),  // newer, but expired
            (record(5, -1, now), true, 4, false, false), // expired is never adopted
            (record(5, 60, now), false, 4, true, false), // other credentials
            (record(5, 60, now), false, 0, false, false),
            (empty, true, 0, false, false), // no tokens
        ];
        for (i, (rec, fp, held, valid, want)) in rows.into_iter().enumerate() {
            assert_eq!(adopt(&rec, fp, held, valid, now), want, "row {i}");
        }
    }

    #[test]
    fn claim_state_table() {
        let ttl = Duration::from_secs(60);
        let claim = |nonce: &str| Claim {
            instance: "host-a".into(),
            nonce: nonce.into(),
            since_ms: 0,
        };
        let (mine, theirs) = (claim("me"), claim("them"));
        let s = Duration::from_secs;
        let rows = [
            (None, None, ClaimState::Free),
            (None, Some(s(600)), ClaimState::Free),
            (Some(&mine), None, ClaimState::Mine),
            (Some(&mine), Some(s(600)), ClaimState::Mine),
            (Some(&theirs), None, ClaimState::Live),
            (Some(&theirs), Some(s(59)), ClaimState::Live),
            (Some(&theirs), Some(s(60)), ClaimState::Stale),
            (Some(&theirs), Some(s(3600)), ClaimState::Stale),
        ];
        for (i, (c, seen, want)) in rows.into_iter().enumerate() {
            assert_eq!(claim_state(c, "me", seen, ttl), want, "row {i}");
        }
    }

    #[test]
    fn may_call_table() {
        let ms = Duration::from_millis;
        // (left, timeout) → may call
        let rows = [
            (ms(3000), ms(1000), true),
            (ms(2500), ms(1000), false),
            (ms(2501), ms(1000), true),
            (ms(0), ms(0), false),
            (Duration::MAX, Duration::MAX, false),
            (ms(60_000), ms(15_000), true),
        ];
        for (i, (left, timeout, want)) in rows.into_iter().enumerate() {
            assert_eq!(may_call(left, timeout), want, "row {i}");
        }
        // A claim of the shortest allowed TTL passes when taken within half a second.
        for timeout in [ms(1), ms(1000), ms(15_000), ms(300_000)] {
            let ttl = min_claim_ttl(timeout);
            assert!(may_call(ttl - ms(499), timeout), "{timeout:?}");
        }
    }

    #[test]
    fn recheck_and_store_down_tables() {
        let s = Duration::from_secs;
        for (ttl, want) in [
            (s(3), Duration::from_millis(750)),
            (s(60), s(1)),
            (Duration::from_millis(100), Duration::from_millis(250)),
        ] {
            assert_eq!(recheck(ttl), want, "{ttl:?}");
        }
        assert_eq!(when_store_down(true), WhenStoreDown::Wait);
        assert_eq!(when_store_down(false), WhenStoreDown::GoLocal);
    }

    #[test]
    fn adopted_times_table() {
        // (obtained, expires, now) → (obtained, expires)
        let rows = [
            ((1000, 4000, 1000), (1000, 4000)),     // same clock
            ((31_000, 34_000, 1000), (1000, 4000)), // writer 30 s ahead: capped
            ((0, 3000, 30_000), (0, 3000)),         // writer behind: its (earlier) times
            ((5, 1, 10), (5, 1)),                   // nonsense stays nonsense, no panic
            ((0, u64::MAX, u64::MAX), (0, u64::MAX)),
        ];
        for (i, ((o, e, n), want)) in rows.into_iter().enumerate() {
            assert_eq!(adopted_times(o, e, n), want, "row {i}");
        }
    }
}
