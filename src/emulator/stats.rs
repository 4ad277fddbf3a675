//! Per-provider counters: what tokend asked for and how the emulator answered. Tests read
//! them through [`Emulator::stats`](super::Emulator::stats) to check request rates, single
//! flight, rotation discipline (no spent refresh token reused) and fault handling.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many request times are kept; older ones are dropped first.
const MAX_REQUEST_TIMES: usize = 1024;

/// The live counters (atomics; request times behind a lock).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) logins: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) issued: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) spent_refresh_reuses: AtomicU64,
    pub(crate) families_revoked: AtomicU64,
    pub(crate) resource_requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    request_times: Mutex<VecDeque<Instant>>,
}

/// A copy of one provider's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests to the token endpoint(s), faulted or not.
    pub requests: u64,
    /// Requests answered by an injected fault (a `Delay` counts, then is answered normally).
    pub faults: u64,
    /// Requests handled as a login: credentials exchanged for tokens (includes iTFLEX's
    /// integrator-key call and OAuth2 `client_credentials`/`password`), accepted or not.
    pub logins: u64,
    /// Requests handled as a refresh-token exchange, accepted or not.
    pub refreshes: u64,
    /// Successful answers that issued tokens.
    pub issued: u64,
    /// Requests refused by the API itself (wrong credentials, bad or spent refresh token,
    /// malformed body), not by a fault.
    pub rejected: u64,
    /// Presentations of a refresh token that had already been exchanged (rotation
    /// violated). A correct client keeps this at 0.
    pub spent_refresh_reuses: u64,
    /// Token families (a login and every token refreshed from it) revoked because one of
    /// their spent refresh tokens was presented again (reuse detection, on for Zarv).
    pub families_revoked: u64,
    /// Calls to the protected resource (`whoami`); not part of `requests`.
    pub resource_requests: u64,
    /// Token-endpoint requests in progress right now.
    pub in_flight: u64,
    /// The most token-endpoint requests ever in progress at once.
    pub max_in_flight: u64,
    /// Arrival times of the last 1024 token-endpoint requests, oldest first.
    pub request_times: Vec<Instant>,
}

impl StatsSnapshot {
    /// The shortest interval between two consecutive requests, if there were two.
    pub fn min_request_gap(&self) -> Option<Duration> {
        self.request_times
            .windows(2)
            .map(|w| w[1].saturating_duration_since(w[0]))
            .min()
    }
}

/// Marks a request in progress until dropped.
pub(crate) struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stats {
    /// Counts a token-endpoint request; the guard keeps it "in flight" until dropped.
    pub(crate) fn begin_request(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight
            .fetch_max(now_in_flight, Ordering::SeqCst);
        let mut times = self
            .request_times
            .lock()
            .expect("request times lock poisoned");
        if times.len() == MAX_REQUEST_TIMES {
            times.pop_front();
        }
        times.push_back(Instant::now());
        InFlight(self)
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        StatsSnapshot {
            requests: get(&self.requests),
            faults: get(&self.faults),
            logins: get(&self.logins),
            refreshes: get(&self.refreshes),
            issued: get(&self.issued),
            rejected: get(&self.rejected),
            spent_refresh_reuses: get(&self.spent_refresh_reuses),
            families_revoked: get(&self.families_revoked),
            resource_requests: get(&self.resource_requests),
            in_flight: get(&self.in_flight),
            max_in_flight: get(&self.max_in_flight),
            request_times: self
                .request_times
                .lock()
                .expect("request times lock poisoned")
                .iter()
                .copied()
                .collect(),
        }
    }
}
