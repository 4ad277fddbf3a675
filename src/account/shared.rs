//! An account's attempt when several instances share it through a coordination store
//! (`[daemon.coordination]`, docs/HA.md). The store and the protocol's pure decisions are
//! in `crate::coordination`; this runs them around the ordinary exchange ([`super::obtain`]):
//!
//! 1. Read the account's record. Tokens newer than the held ones (a higher generation) are
//!    adopted: saved, then published by the task, with no provider call.
//! 2. A live claim of another instance means it is refreshing: look again shortly
//!    ([`Outcome::Busy`]). A claim whose record has not changed for a whole `claim_ttl` on
//!    this instance's monotonic clock is stale and is taken over; its holder may have
//!    spent the refresh token, so that token is never sent again (a login follows).
//! 3. Take the claim with check-and-set, read the record again, and call the provider only
//!    if the claim is still ours and has time left for the exchange.
//! 4. [`super::obtain`] saves a rotated refresh token locally (fsync) before anything else;
//!    then the new tokens are committed with the next generation and the claim cleared.
//!    A failed attempt releases the claim (dropping a refresh token it may have spent).
//!
//! Without the store, a provider whose refresh token rotates is not called (it would be
//! spent twice); others log in locally ([`decide::when_store_down`]).

use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use tracing::{debug, error, info, warn};

use super::policy::{self, Decision, Event, Samples};
use super::{Attempt, Services, facts, persist, record_failure};
use crate::coordination::decide::{self, ClaimState, WhenStoreDown};
use crate::coordination::record::FORMAT;
use crate::coordination::{Claim, Coordinator, Record, Tokens, Written};
use crate::provider::ProviderError;
use crate::settings::Account;
use crate::state::{AccountState, SharedStatus, StoredSecret, StoredToken, from_ms, to_ms};

/// What one account remembers between attempts: the record version it last saw and since
/// when (its own monotonic clock), which is all a claim's staleness is judged by.
#[derive(Debug, Default)]
pub struct Watch {
    seen: Option<(u64, Instant)>,
}

impl Watch {
    /// Notes that the record is at `version`; returns for how long this version has been
    /// seen (`None`: it is new).
    fn observe(&mut self, version: u64) -> Option<Duration> {
        match self.seen {
            Some((v, since)) if v == version => Some(since.elapsed()),
            _ => {
                self.seen = Some((version, Instant::now()));
                None
            }
        }
    }
}

/// How a coordinated attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The provider was called (a claim won, or a non-rotating account while the store is
    /// unreachable): the ordinary attempt.
    Provider(Attempt),
    /// The record held newer tokens, now held and saved; `Decision` plans their refresh.
    Adopted(Decision),
    /// Another instance holds a live claim: look again at `Decision::next`.
    Busy(Decision),
    /// The store could not be reached and the account's refresh token rotates: nothing
    /// was sent; a transient failure with its backoff.
    StoreDown(Attempt),
}

/// One coordinated attempt (see the module doc). With `claim` false it only reads and
/// adopts (a start with a fresh token): `None` when nothing newer was found.
pub async fn attempt(
    account: &Account,
    state: &mut AccountState,
    svc: &Services,
    coord: &Coordinator,
    watch: &mut Watch,
    claim: bool,
) -> Option<Outcome> {
    let started = Instant::now();
    let m = crate::observability::metrics::metrics();
    let name = &account.name;
    let stored = match coord.store.read(name).await {
        Ok(s) => s,
        Err(e) if claim => return Some(store_down(account, state, svc, &e, started).await),
        Err(e) => {
            m.store_error(name);
            warn!(account = %name, error = %e, "cannot read the coordination record; keeping the saved token");
            return None;
        }
    };
    let seen_for = watch.observe(stored.version);
    let record = match stored.record {
        Ok(r) => r.unwrap_or_default(),
        Err(why) => {
            warn!(account = %name, store = %coord.store.describe(), error = %why, "the coordination record is unusable; it will be overwritten");
            Record::default()
        }
    };
    note(state, &record);
    save_note(&svc.store, name, state);
    let now = SystemTime::now();
    if record.tokens.is_some()
        && record.generation > state.generation
        && !account.fingerprint.matches(&record.fingerprint)
    {
        warn!(account = %name, generation = record.generation, refreshed_by = record.refreshed_by.as_deref().unwrap_or(""), "the coordination record holds tokens of other account settings (provider, base_url or credentials differ between instances); not adopting them: every instance must configure the account identically");
    }
    let adopted = adopt(account, state, &record, now);
    if adopted {
        m.adopted(name);
    }
    let state_of_claim = decide::claim_state(
        record.claim.as_ref(),
        &coord.nonce,
        seen_for,
        coord.claim_ttl,
    );
    if adopted {
        let d = planned(account, state, started);
        if !claim || (d.action == policy::Action::Wait && d.next > now) {
            return Some(saved_adoption(account, state, svc, d).await);
        }
    }
    if !claim {
        return None;
    }
    let stale = match state_of_claim {
        ClaimState::Live => {
            m.claim(name, "lost");
            let holder = record.claim.as_ref().map_or("", |c| c.instance.as_str());
            debug!(account = %name, holder = %holder, "another instance is refreshing; waiting for its commit");
            return Some(busy(account, state, coord, started, adopted, svc).await);
        }
        ClaimState::Stale => {
            m.claim(name, "stale");
            let holder = record.claim.as_ref().map_or("", |c| c.instance.as_str());
            warn!(account = %name, holder = %holder, claim_ttl = %policy::wait_text(coord.claim_ttl), "taking over a stale claim; its refresh token may be spent, so it is not used again");
            true
        }
        ClaimState::Free | ClaimState::Mine => false,
    };

    // Take the claim, then read again: only a claim seen in the store is ours.
    let mut claimed = record.clone();
    claimed.format = FORMAT;
    claimed.claim = Some(Claim {
        instance: coord.instance.clone(),
        nonce: coord.nonce.clone(),
        since_ms: to_ms(SystemTime::now()),
    });
    let taken = Instant::now();
    let version = match coord.store.write(name, &claimed, stored.version).await {
        Ok(Written::Version(v)) => v,
        Ok(Written::Conflict) => {
            m.claim(name, "lost");
            return Some(busy(account, state, coord, started, adopted, svc).await);
        }
        Err(e) => return Some(store_down(account, state, svc, &e, started).await),
    };
    watch.observe(version);
    let ours = match coord.store.read(name).await {
        Ok(s) => {
            s.version == version
                && s.record
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.claim.as_ref().is_some_and(|c| c.nonce == coord.nonce))
        }
        Err(e) => return Some(store_down(account, state, svc, &e, started).await),
    };
    if !ours {
        m.claim(name, "lost");
        return Some(busy(account, state, coord, started, adopted, svc).await);
    }
    let left = coord.claim_ttl.saturating_sub(taken.elapsed());
    if !decide::may_call(left, account.provider.timeout) {
        warn!(account = %name, left = %policy::wait_text(left), "the claim was taken too slowly to cover a provider call; releasing it");
        let mut released = record.clone();
        released.claim = None;
        commit(coord, name, &released, version).await;
        return Some(busy(account, state, coord, started, adopted, svc).await);
    }
    m.claim(name, "won");
    let record_rt = record
        .tokens
        .as_ref()
        .and_then(|t| t.refresh_token.as_deref());
    if stale && account.provider.rotates() && held_refresh_token(state) == record_rt {
        // The dead claimer may have sent it; a rotating provider would revoke the family.
        state.refresh_in_flight = true;
    }
    state.generation = state.generation.max(record.generation);
    let attempt = super::obtain(account, state, svc).await;
    let next = match &attempt.result {
        Ok(_) => Record {
            format: FORMAT,
            generation: state.generation,
            fingerprint: account.fingerprint.current.clone(),
            tokens: tokens_of(state),
            refreshed_by: Some(coord.instance.clone()),
            claim: None,
        },
        Err(_) => {
            let mut released = record.clone();
            released.format = FORMAT;
            released.claim = None;
            if state.refresh_in_flight
                && let Some(t) = &mut released.tokens
            {
                // Sent, answer lost: possibly spent. Nobody may send it again.
                t.refresh_token = None;
                t.refresh_expires_at_ms = None;
            }
            released
        }
    };
    if commit(coord, name, &next, version).await {
        note(state, &next);
    }
    save_note(&svc.store, name, state);
    Some(Outcome::Provider(attempt))
}

/// Writes `record` over `version` (the claim this instance holds), retrying a store that
/// fails for a few seconds: until it lands, the others wait for the claim to go stale.
/// True when it landed.
async fn commit(coord: &Coordinator, name: &str, record: &Record, version: u64) -> bool {
    let m = crate::observability::metrics::metrics();
    let mut wait = Duration::from_millis(100);
    for attempt in 0..5 {
        match coord.store.write(name, record, version).await {
            Ok(Written::Version(_)) => return true,
            Ok(Written::Conflict) => {
                m.store_error(name);
                error!(account = %name, "the claim was taken over before this instance committed; its tokens stay local and the record's are adopted later");
                return false;
            }
            Err(e) => {
                m.store_error(name);
                warn!(account = %name, error = %e, attempt = attempt + 1, "cannot commit to the coordination store; retrying");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
    error!(account = %name, "cannot commit to the coordination store; the others take over once the claim is stale");
    false
}

/// The store could not be reached during an attempt (see [`decide::when_store_down`]).
async fn store_down(
    account: &Account,
    state: &mut AccountState,
    svc: &Services,
    e: &str,
    started: Instant,
) -> Outcome {
    let name = &account.name;
    crate::observability::metrics::metrics().store_error(name);
    match decide::when_store_down(account.provider.rotates()) {
        WhenStoreDown::GoLocal => {
            warn!(account = %name, error = %e, "coordination store unreachable; its refresh token does not rotate, so refreshing locally");
            Outcome::Provider(super::obtain(account, state, svc).await)
        }
        WhenStoreDown::Wait => {
            let err = ProviderError::Transient {
                message: format!(
                    "coordination store unreachable, so the rotating refresh token is not spent: {e}"
                ),
                retry_after: None,
                maybe_processed: false,
            };
            record_failure(state, &err);
            let decision = super::after(account, state, Err(&err), started);
            state.next_refresh_ms = Some(crate::bounds::to_ms_ceil(decision.next));
            if let Err(e) = persist(account, &svc.store, state).await {
                warn!(account = %name, error = %e, "cannot save state");
            }
            Outcome::StoreDown(Attempt {
                result: Err(err),
                decision,
            })
        }
    }
}

/// Another instance is refreshing: plan a look at the record after the recheck (and save
/// an adoption made on the way).
async fn busy(
    account: &Account,
    state: &mut AccountState,
    coord: &Coordinator,
    started: Instant,
    adopted: bool,
    svc: &Services,
) -> Outcome {
    let f = facts(state, SystemTime::now(), Some(started.elapsed()));
    let d = policy::decide(
        &f,
        Event::ClaimHeld {
            recheck: decide::recheck(coord.claim_ttl),
        },
        &account.timing,
        &account.retry,
        Samples::for_token(&account.name, state.generation),
    );
    if adopted {
        state.next_refresh_ms = Some(crate::bounds::to_ms_ceil(d.next));
        if let Err(e) = persist(account, &svc.store, state).await {
            warn!(account = %account.name, error = %e, "cannot save state");
        }
    }
    Outcome::Busy(d)
}

/// Saves an adopted token with the plan for its refresh.
async fn saved_adoption(
    account: &Account,
    state: &mut AccountState,
    svc: &Services,
    d: Decision,
) -> Outcome {
    state.next_refresh_ms = Some(crate::bounds::to_ms_ceil(d.next));
    let saved = persist(account, &svc.store, state).await;
    state.unsaved = saved.is_err();
    if let Err(e) = saved {
        warn!(account = %account.name, error = %e, "cannot save the adopted token");
    }
    let m = crate::observability::metrics::metrics();
    if let Some(t) = &state.token {
        m.expiry(&account.name, from_ms(t.expires_at_ms));
    }
    info!(account = %account.name, generation = state.generation, refreshed_by = state.coordination.as_ref().and_then(|c| c.refreshed_by.as_deref()).unwrap_or(""), next_refresh = %crate::bounds::rfc3339(d.next), "token taken from the coordination store");
    Outcome::Adopted(d)
}

/// The refresh plan for the held token, as every instance draws it.
fn planned(account: &Account, state: &AccountState, started: Instant) -> Decision {
    let f = facts(state, SystemTime::now(), Some(started.elapsed()));
    let event = match &state.token {
        Some(t) => Event::Obtained {
            obtained_at: from_ms(t.obtained_at_ms),
            expires_at: from_ms(t.expires_at_ms),
        },
        None => Event::Due,
    };
    policy::decide(
        &f,
        event,
        &account.timing,
        &account.retry,
        Samples::for_token(&account.name, state.generation),
    )
}

/// Takes the record's tokens when [`decide::adopt`] says so; true when it did.
fn adopt(account: &Account, state: &mut AccountState, record: &Record, now: SystemTime) -> bool {
    let fingerprint_matches = account.fingerprint.matches(&record.fingerprint);
    let holds_valid = state.valid_token(now).is_some();
    if !decide::adopt(
        record,
        fingerprint_matches,
        state.generation,
        holds_valid,
        now,
    ) {
        return false;
    }
    let Some(t) = &record.tokens else {
        return false;
    };
    crate::redact::register(&account.name, &t.access_token);
    if let Some(rt) = &t.refresh_token {
        crate::redact::register(&account.name, rt);
    }
    let (obtained, expires) = decide::adopted_times(t.obtained_at_ms, t.expires_at_ms, to_ms(now));
    let same_refresh_token = held_refresh_token(state) == t.refresh_token.as_deref();
    state.token = Some(StoredToken {
        access_token: StoredSecret(t.access_token.clone().into()),
        token_type: t.token_type.clone(),
        obtained_at_ms: obtained,
        expires_at_ms: expires,
        expiry_source: t.expiry_source.clone(),
    });
    state.refresh_token = t
        .refresh_token
        .as_ref()
        .map(|rt| StoredSecret(rt.clone().into()));
    state.refresh_expires_at_ms = t.refresh_expires_at_ms;
    // A refresh token this instance may have sent itself stays unusable.
    state.refresh_in_flight = state.refresh_in_flight && same_refresh_token;
    state.generation = record.generation;
    state.superseded = false;
    state.failures = 0;
    state.last_failure = None;
    state.last_error = None;
    state.last_error_ms = None;
    state.last_success_ms = Some(to_ms(now));
    true
}

fn held_refresh_token(state: &AccountState) -> Option<&str> {
    state.refresh_token.as_ref().map(|s| s.0.expose_secret())
}

/// The held tokens as a record carries them.
fn tokens_of(state: &AccountState) -> Option<Tokens> {
    let t = state.token.as_ref()?;
    Some(Tokens {
        access_token: t.access_token.0.expose_secret().to_string(),
        token_type: t.token_type.clone(),
        obtained_at_ms: t.obtained_at_ms,
        expires_at_ms: t.expires_at_ms,
        expiry_source: t.expiry_source.clone(),
        refresh_token: held_refresh_token(state).map(str::to_string),
        refresh_expires_at_ms: state.refresh_expires_at_ms,
    })
}

/// Remembers what the record showed, for `status`.
fn note(state: &mut AccountState, record: &Record) {
    state.coordination = Some(SharedStatus {
        generation: record.generation,
        claim_instance: record.claim.as_ref().map(|c| c.instance.clone()),
        claim_since_ms: record.claim.as_ref().map(|c| c.since_ms),
        refreshed_by: record.refreshed_by.clone(),
        seen_ms: to_ms(SystemTime::now()),
    });
}

/// Writes the noted status for `status` (cheap, in place; a failure only costs display).
fn save_note(store: &crate::state::StateStore, name: &str, state: &AccountState) {
    if let Some(shared) = &state.coordination
        && let Err(e) = store.save_shared(name, shared)
    {
        debug!(account = %name, error = %e, "cannot save the coordination status");
    }
}
