//! The readiness board: each account's token expiry and first-round bookkeeping, written
//! by the account tasks (`crate::account::task`) and read by the supervisor (`STATUS=`,
//! `READY=1`, `crate::daemon`) and `/readyz` (`crate::observability::http`). A leaf: it
//! imports neither, so both sides can depend on it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::Notify;

/// Each account's token expiry and first-round bookkeeping, shared by the account tasks,
/// the supervisor (`STATUS=`, `READY=1`) and `/readyz`.
#[derive(Debug, Default)]
pub struct Board {
    inner: Mutex<BoardInner>,
    /// Notified whenever an account reports a change (the supervisor listens).
    pub changed: Notify,
}

#[derive(Debug, Default)]
struct BoardInner {
    expires: HashMap<String, Option<SystemTime>>,
    awaiting_first_round: HashSet<String>,
    /// Accounts whose last attempt failed.
    failing: HashSet<String>,
    /// Accounts with a request in flight.
    refreshing: HashSet<String>,
}

impl Board {
    /// Adds an account; `first_round` when `READY=1` should wait for its first attempt.
    pub fn add(&self, name: &str, first_round: bool) {
        let mut b = self.inner.lock().expect("board lock");
        b.expires.insert(name.to_string(), None);
        if first_round {
            b.awaiting_first_round.insert(name.to_string());
        }
    }

    /// Removes an account (stopped by a reload).
    pub fn remove(&self, name: &str) {
        let mut b = self.inner.lock().expect("board lock");
        b.expires.remove(name);
        b.awaiting_first_round.remove(name);
        b.failing.remove(name);
        b.refreshing.remove(name);
        drop(b);
        self.changed.notify_one();
    }

    /// An account's request is in flight (until its next [`report`](Self::report)).
    pub fn refreshing(&self, name: &str) {
        let mut b = self.inner.lock().expect("board lock");
        b.refreshing.insert(name.to_string());
    }

    /// An account's held token now expires at `expires_at` (`None`: it holds none), and
    /// whether its last attempt failed; also ends its first round.
    pub fn report(&self, name: &str, expires_at: Option<SystemTime>, failing: bool) {
        let mut b = self.inner.lock().expect("board lock");
        b.refreshing.remove(name);
        if failing {
            b.failing.insert(name.to_string());
        } else {
            b.failing.remove(name);
        }
        let first = b.awaiting_first_round.remove(name);
        let changed = b.expires.insert(name.to_string(), expires_at) != Some(expires_at);
        drop(b);
        if first || changed {
            self.changed.notify_one();
        }
    }

    /// Whether some account has not yet had its first attempt.
    pub fn in_first_round(&self) -> bool {
        !self
            .inner
            .lock()
            .expect("board lock")
            .awaiting_first_round
            .is_empty()
    }

    /// (accounts holding an unexpired token, total, first round complete).
    pub fn counts(&self) -> (usize, usize, bool) {
        let now = SystemTime::now();
        let b = self.inner.lock().expect("board lock");
        let fresh = b
            .expires
            .values()
            .filter(|e| e.is_some_and(|at| at > now))
            .count();
        (fresh, b.expires.len(), b.awaiting_first_round.is_empty())
    }

    /// How many accounts are fresh, refreshing, failing and expired at `now` (the order of
    /// `tokend_accounts`'s states): no valid token is `expired` whatever else holds, then
    /// a request in flight is `refreshing`, then a failed last attempt is `failing`.
    pub fn states(&self, now: SystemTime) -> [i64; 4] {
        let b = self.inner.lock().expect("board lock");
        let mut counts = [0i64; 4];
        for (name, expires) in &b.expires {
            let i = if !expires.is_some_and(|at| at > now) {
                3
            } else if b.refreshing.contains(name) {
                1
            } else if b.failing.contains(name) {
                2
            } else {
                0
            };
            counts[i] += 1;
        }
        counts
    }

    /// Accounts without an unexpired token at `now`, sorted (for `/readyz`).
    pub fn not_ready(&self, now: SystemTime) -> Vec<String> {
        let b = self.inner.lock().expect("board lock");
        let mut names: Vec<String> = b
            .expires
            .iter()
            .filter(|(_, e)| !e.is_some_and(|at| at > now))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }
}
