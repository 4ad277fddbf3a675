//! One account's life in the daemon: sleep until something is due, ask the refresh policy
//! ([`super::policy`]) what to do about it, and do it. Started and stopped by the
//! supervisor (`crate::daemon`), one task per account.
//!
//! The task owns the account's state and does all of its work itself, so a timer, a cron
//! time, SIGUSR1 and a reload that coincide make one request ("one flight per account",
//! SPEC §4). It decides nothing about timing on its own: every wake-up becomes a policy
//! [`Event`], and the [`Decision`]'s `next` is both what the task sleeps until and what it
//! saves (`next_refresh_ms`) and logs. Sinks are written after every new token and retried
//! on their own backoff (`policy::sink_retry`), independently of each other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::policy::{self, Action, Decision, Event, Reason, Samples};
use super::shared::{Outcome, Watch};
use super::{Attempt, Services};
use crate::board::Board;
use crate::provider::ProviderError;
use crate::schedule;
use crate::settings::Account;
use crate::sink::{ConfiguredSink, rfc3339};
use crate::state::{AccountState, from_ms};

/// One account's task: what it needs from the supervisor.
pub struct AccountTask {
    /// The account as configured (replaced in place by reloads through `updates`).
    pub account: Arc<Account>,
    /// State store, HTTP clients, request limiter.
    pub svc: Services,
    /// SIGUSR1.
    pub nudge: Arc<Notify>,
    /// Reloads that change the account without a new login (sinks, timing, settings).
    pub updates: watch::Receiver<Arc<Account>>,
    /// Stops the task (account removed, shutdown).
    pub cancel: CancellationToken,
    /// Where the task reports its token's expiry.
    pub board: Arc<Board>,
}

/// How long a shutdown waits for a shared account's flight to commit or release its claim
/// (within the daemon's 10 s shutdown budget).
const CLAIM_GRACE: Duration = Duration::from_secs(5);

/// A sink waiting for a (re)write.
#[derive(Debug, Clone, Copy)]
struct PendingSink {
    at: Instant,
    attempt: u32,
}

impl AccountTask {
    /// Runs until cancelled.
    ///
    /// The exchange, publish and notify futures are boxed: they are large (a reqwest
    /// request in flight) and live only while they run, while this task's own future
    /// lives as long as the account (10,000 accounts × the largest of them, otherwise).
    pub async fn run(mut self) {
        let name = self.account.name.clone();
        let mut state = super::load_state(&self.account, &self.svc.store);
        let mut cron = self
            .account
            .schedule
            .as_ref()
            .map(|s| Box::new(s.cron.clone()));
        let mut next_cron = cron
            .as_ref()
            .and_then(|c| schedule::next_cron(c, SystemTime::now()));
        let mut last_request: Option<Instant> = None;
        // A saved fresh token is reused (no login on restart), with its saved plan when the
        // timing could have drawn it: a restart of N accounts then rewrites no state file.
        let start = self.decide(&state, Event::Start, last_request);
        match (start.action, start.reason) {
            (Action::Wait, Reason::RefreshAhead) => {
                info!(account = %name, expires_at = %expiry_text(&state), next_refresh = %rfc3339(start.next), "reusing the saved token");
            }
            (Action::Wait, reason) => {
                warn!(account = %name, next_attempt = %rfc3339(start.next), why = %reason.as_str(), last_error = state.last_error.as_deref().unwrap_or(""), "waiting before asking the provider again");
            }
            (Action::Request, _) => {}
        }
        let mut replanned = plan(&mut state, &start);
        // Shared accounts: a restarted or new instance first takes newer tokens from the
        // coordination store, without a provider call (docs/HA.md).
        let mut watch = Watch::default();
        let mut adopted_at_start = false;
        if start.action == Action::Wait
            && let Some(coord) = self.svc.coordination.clone()
            && let Some(Outcome::Adopted(_)) = Box::pin(super::shared::attempt(
                &self.account,
                &mut state,
                &self.svc,
                &coord,
                &mut watch,
                false,
            ))
            .await
        {
            replanned = false;
            adopted_at_start = true;
        }
        if let Some(ms) = state.last_success_ms {
            crate::observability::metrics::metrics().last_success(&name, from_ms(ms));
        }
        // A saved valid token, fresh or already due, is written to every sink: a sink
        // under /run may be gone after a reboot, and when the provider is down the due
        // refresh may take until expiry. A new token obtained first replaces it unwritten.
        let mut pending: BTreeMap<usize, PendingSink> =
            if adopted_at_start || state.valid_token(SystemTime::now()).is_some() {
                self.all_sinks_now()
            } else {
                BTreeMap::new()
            };
        let mut notify_pending = false;
        let mut sinks_changed = false;
        loop {
            // When must we wake? The planned attempt, the next cron time, sink retries.
            let planned = state.next_refresh_ms.map_or_else(SystemTime::now, from_ms);
            let mut wake = instant_at(planned);
            if let Some(c) = next_cron {
                wake = wake.min(instant_at(c));
            }
            if let Some(p) = pending.values().map(|p| p.at).min() {
                wake = wake.min(p);
            }
            let mut event = None;
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let new = self.updates.borrow_and_update().clone();
                    let old = std::mem::replace(&mut self.account, new);
                    if old.timing != self.account.timing || old.retry != self.account.retry {
                        let d = self.decide(&state, Event::TimingChanged, last_request);
                        replanned |= plan(&mut state, &d);
                    }
                    if old.schedule != self.account.schedule {
                        cron = self.account.schedule.as_ref().map(|s| Box::new(s.cron.clone()));
                        next_cron = cron.as_ref().and_then(|c| schedule::next_cron(c, SystemTime::now()));
                    }
                    if old.sinks != self.account.sinks {
                        // New sinks get the current token now, no login (SPEC §4).
                        pending = carry_pending(&old.sinks, &self.account.sinks, &pending);
                        let labels: Vec<String> = self.account.sinks.iter().map(|s| s.label()).collect();
                        state.sinks.retain(|k, _| labels.contains(k));
                        sinks_changed = true;
                    }
                    continue;
                }
                () = self.nudge.notified() => event = Some(Event::Nudge),
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = SystemTime::now();
            if next_cron.is_some_and(|c| c <= now) {
                next_cron = cron.as_ref().and_then(|c| schedule::next_cron(c, now));
                event = event.or(Some(Event::Cron));
            }
            if event.is_none() && now >= planned {
                event = Some(Event::Due);
            }
            if let Some(event) = event {
                let d = self.decide(&state, event, last_request);
                if d.action == Action::Request {
                    last_request = Some(Instant::now());
                    self.board.refreshing(&name);
                    let outcome = {
                        let mut flight = Box::pin(self.attempt(&mut state, &mut watch));
                        tokio::select! {
                            o = &mut flight => o,
                            () = self.cancel.cancelled() => {
                                // A shared account's flight may hold a claim: let it commit
                                // or release (briefly), or the others wait `claim_ttl`.
                                if self.svc.coordination.is_some() {
                                    let _ = tokio::time::timeout(CLAIM_GRACE, flight).await;
                                }
                                break;
                            }
                        }
                    };
                    // A nudge (SIGUSR1) that arrived while this flight waited or was in the
                    // air is answered by it: one flight per account (SPEC §4). `Notify`
                    // stored it as a permit; polling once consumes it.
                    let _ = self.nudge.notified().now_or_never();
                    match outcome {
                        Outcome::Provider(attempt) | Outcome::StoreDown(attempt) => {
                            // `obtain` saved the state with the plan it made.
                            replanned = false;
                            if self.answered(&attempt, &state) {
                                pending = self.all_sinks_now();
                                notify_pending = !self.account.notify.is_empty();
                            }
                        }
                        Outcome::Adopted(_) => {
                            // Saved with its plan; published like a token of our own.
                            replanned = false;
                            pending = self.all_sinks_now();
                            notify_pending = !self.account.notify.is_empty();
                        }
                        Outcome::Busy(d) => replanned |= plan(&mut state, &d),
                    }
                } else {
                    if event == Event::Nudge
                        && matches!(d.reason, Reason::Rejected | Reason::Misconfigured)
                    {
                        warn!(account = %name, next_attempt = %rfc3339(d.next), why = %d.reason.as_str(), "SIGUSR1 does not cut this wait short; change the credentials to retry at once");
                    }
                    replanned |= plan(&mut state, &d);
                }
            }
            // Sinks whose (re)write is due get the current token, if it is still valid.
            let now_i = Instant::now();
            let due_sinks: Vec<usize> = pending
                .iter()
                .filter(|(_, p)| p.at <= now_i)
                .map(|(i, _)| *i)
                .collect();
            if !due_sinks.is_empty() {
                match super::document(&self.account, &state)
                    .filter(|d| d.expires_at > SystemTime::now())
                {
                    Some(doc) => {
                        let results =
                            Box::pin(super::publish(&self.account, &doc, &mut state, &due_sinks))
                                .await;
                        sinks_changed = true;
                        for r in results {
                            match r.result {
                                Ok(_) => {
                                    pending.remove(&r.index);
                                    if pending.is_empty() {
                                        // An emptied BTreeMap keeps its node (~370 bytes).
                                        pending = BTreeMap::new();
                                    }
                                }
                                Err(e) => {
                                    let attempt = pending.get(&r.index).map_or(0, |p| p.attempt);
                                    let wait = policy::sink_retry(
                                        attempt,
                                        e.is_transient(),
                                        &self.account.retry,
                                        rand::random(),
                                    );
                                    info!(account = %name, sink = %r.label, retry_in = %human(wait), "sink write will be retried");
                                    pending.insert(
                                        r.index,
                                        PendingSink {
                                            at: instant_after(wait),
                                            attempt: attempt.saturating_add(1),
                                        },
                                    );
                                }
                            }
                        }
                        if pending.is_empty() && notify_pending {
                            notify_pending = false;
                            Box::pin(super::notify(&self.account, &doc)).await;
                        }
                    }
                    // An expired token is never published; the sinks wait for the next one.
                    None => pending.clear(),
                }
            }
            // Sink results go to the cheap status file; the state file is rewritten only
            // when the plan changed outside an exchange (a restart, a reload's new timing).
            if sinks_changed {
                sinks_changed = false;
                if let Err(e) = self.svc.store.save_sinks(&name, &state.sinks) {
                    warn!(account = %name, error = %e, "cannot save the sink status");
                }
            }
            if replanned {
                replanned = false;
                match super::persist(&self.account, &self.svc.store, &state).await {
                    Ok(()) => state.unsaved = false,
                    Err(e) => error!(account = %name, error = %e, "cannot save state"),
                }
            }
            let expires_at = state
                .valid_token(SystemTime::now())
                .map(|t| from_ms(t.expires_at_ms));
            if let Some(at) = expires_at {
                // Also after a restart that reused a saved token (no obtain, so no other update).
                crate::observability::metrics::metrics().expiry(&name, at);
            }
            self.board.report(&name, expires_at, state.failures > 0);
        }
        debug!(account = %name, "account task stopped");
    }

    /// One attempt: through the coordination store when instances share the account,
    /// else the ordinary exchange.
    async fn attempt(&self, state: &mut AccountState, watch: &mut Watch) -> Outcome {
        if let Some(coord) = &self.svc.coordination
            && let Some(outcome) =
                super::shared::attempt(&self.account, state, &self.svc, coord, watch, true).await
        {
            return outcome;
        }
        Outcome::Provider(super::obtain(&self.account, state, &self.svc).await)
    }

    /// The policy's decision about `event` for this account now.
    fn decide(
        &self,
        state: &AccountState,
        event: Event,
        last_request: Option<Instant>,
    ) -> Decision {
        let facts = super::facts(state, SystemTime::now(), last_request.map(|t| t.elapsed()));
        policy::decide(
            &facts,
            event,
            &self.account.timing,
            &self.account.retry,
            Samples::for_token(&self.account.name, state.generation),
        )
    }

    /// Logs an attempt's outcome with the wait the policy chose (the one the task uses);
    /// true when a token was obtained.
    fn answered(&self, attempt: &Attempt, state: &AccountState) -> bool {
        let name = &self.account.name;
        let d = &attempt.decision;
        let retry_in = human(d.wait(SystemTime::now()));
        match &attempt.result {
            Ok(o) => {
                info!(account = %name, via = %o.via.as_str(), expires_at = %rfc3339(o.expires_at), expiry_from = %o.expiry_source, next_refresh = %rfc3339(d.next), "token obtained");
                true
            }
            Err(e) => {
                let valid_until = state
                    .valid_token(SystemTime::now())
                    .map_or_else(|| "none".to_string(), |t| rfc3339(from_ms(t.expires_at_ms)));
                match e {
                    ProviderError::Transient { .. } => {
                        warn!(account = %name, error = %e, retry_in = %retry_in, why = %d.reason.as_str(), sinks_keep_token_until = %valid_until, "refresh failed (transient)");
                    }
                    ProviderError::Rejected { .. } => {
                        error!(account = %name, error = %e, retry_in = %retry_in, why = %d.reason.as_str(), sinks_keep_token_until = %valid_until, "credentials rejected by the provider: check the account's credentials");
                    }
                    ProviderError::Misconfigured { .. } | ProviderError::Malformed { .. } => {
                        error!(account = %name, error = %e, retry_in = %retry_in, why = %d.reason.as_str(), sinks_keep_token_until = %valid_until, "configuration error: fix the config");
                    }
                }
                false
            }
        }
    }

    fn all_sinks_now(&self) -> BTreeMap<usize, PendingSink> {
        (0..self.account.sinks.len())
            .map(|i| {
                (
                    i,
                    PendingSink {
                        at: Instant::now(),
                        attempt: 0,
                    },
                )
            })
            .collect()
    }
}

/// Makes `d` the account's plan; true when that changed the saved plan.
fn plan(state: &mut AccountState, d: &Decision) -> bool {
    let ms = Some(crate::bounds::to_ms_ceil(d.next));
    let changed = state.next_refresh_ms != ms;
    state.next_refresh_ms = ms;
    changed
}

fn expiry_text(state: &AccountState) -> String {
    state
        .token
        .as_ref()
        .map_or_else(|| "none".into(), |t| rfc3339(from_ms(t.expires_at_ms)))
}

fn human(d: Duration) -> String {
    policy::wait_text(d)
}

/// The sinks pending after the sink list changed from `old` to `new`: a kept sink keeps
/// its pending retry (sinks are independent, SPEC §4), re-indexed to the new list; a new
/// sink is due now.
fn carry_pending(
    old: &[ConfiguredSink],
    new: &[ConfiguredSink],
    pending: &BTreeMap<usize, PendingSink>,
) -> BTreeMap<usize, PendingSink> {
    new.iter()
        .enumerate()
        .filter_map(|(i, c)| match old.iter().position(|o| o == c) {
            Some(j) => pending.get(&j).map(|p| (i, *p)),
            None => Some((
                i,
                PendingSink {
                    at: Instant::now(),
                    attempt: 0,
                },
            )),
        })
        .collect()
}

/// The `Instant` `d` from now, clamped to the policy's horizon (never overflows).
fn instant_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(policy::HORIZON)).unwrap_or(now)
}

/// The `Instant` corresponding to a wall-clock time (now if past).
fn instant_at(t: SystemTime) -> Instant {
    instant_after(t.duration_since(SystemTime::now()).unwrap_or_default())
}
