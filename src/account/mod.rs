//! Work on one account, shared by `tokend once` and the daemon's account tasks:
//! [`obtain`] a token (refresh token first, login when it is rejected, SPEC §4), persist it,
//! [`publish`] it to the sinks and run the `notify` hooks. Every timing decision is made by
//! [`policy`] (pure, table-tested); [`task`] is the daemon's per-account loop that runs
//! what the policy decides.

pub mod policy;
pub mod shared;
pub mod task;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::config::Notify;
use crate::http_client::HttpClients;
use crate::provider::{Obtained, ProviderError, Via};
use crate::settings::Account;
use crate::sink::{Sink, SinkError, TokenDocument, WriteOutcome};
use crate::state::{
    AccountState, FailureKind, StateStore, StoredSecret, StoredToken, from_ms, to_ms,
};
use policy::{Decision, Event, Facts, Samples};

/// What every account's work shares: the state store, HTTP clients and the global bound on
/// requests in flight (`max_concurrent_requests`).
#[derive(Debug, Clone)]
pub struct Services {
    /// State files.
    pub store: StateStore,
    /// HTTP clients.
    pub clients: Arc<HttpClients>,
    /// Bound on provider requests in flight across the daemon.
    pub limiter: Arc<Semaphore>,
    /// The coordination store, when instances share the accounts (docs/HA.md).
    pub coordination: Option<Arc<crate::coordination::Coordinator>>,
}

impl Services {
    /// Services for a state dir and a request bound.
    pub fn new(state_dir: &Path, max_concurrent_requests: usize) -> Self {
        Services {
            store: StateStore::new(state_dir),
            clients: Arc::new(HttpClients::default()),
            limiter: Arc::new(Semaphore::new(max_concurrent_requests)),
            coordination: None,
        }
    }
}

/// Loads an account's state, starting afresh (and saying why) when it is missing, corrupt
/// or from other credentials.
pub fn load_state(account: &Account, store: &StateStore) -> AccountState {
    let (state, why) = store.load(&account.name, &account.fingerprint);
    if let Some(s) = &state {
        // Tokens read back from state are redacted like freshly obtained ones.
        if let Some(t) = &s.token {
            crate::redact::register(&account.name, t.access_token.0.expose_secret());
        }
        if let Some(rt) = &s.refresh_token {
            crate::redact::register(&account.name, rt.0.expose_secret());
        }
    }
    if let Some(why) = why {
        warn!(account = %account.name, "{why}");
    }
    // A token of another provider is no token for this one.
    let state = state.filter(|s| s.provider == account.provider.name);
    let mut state = state.unwrap_or_else(|| {
        AccountState::new(&account.name, &account.provider.name, &account.fingerprint)
    });
    // Sinks that are no longer configured leave status.
    let labels: Vec<String> = account.sinks.iter().map(|s| s.label()).collect();
    state.sinks.retain(|k, _| labels.contains(k));
    state
}

/// Saves the account's state on the blocking pool, as durably as [`StateStore::persist`]
/// decides for its provider (fsync when it holds a rotating refresh token, or with
/// `[daemon] durability = "all"`).
pub async fn persist(
    account: &Account,
    store: &StateStore,
    state: &AccountState,
) -> std::io::Result<()> {
    store.persist(state, account.provider.rotates()).await
}

/// An attempt's outcome and the policy's decision about the next one (already saved as
/// the state's `next_refresh_ms`).
#[derive(Debug)]
pub struct Attempt {
    /// The token, or why there is none.
    pub result: Result<Obtained, ProviderError>,
    /// When to try next, and why.
    pub decision: Decision,
}

/// Obtains a new token: the refresh exchange with a held, unexpired refresh token first; a
/// full login when there is none or the provider rejects it. The state, with the outcome,
/// any rotated refresh token and the next attempt the policy planned from the outcome
/// (`next_refresh_ms`), is saved before this returns, i.e. before anything is published:
/// one write per exchange, fsynced when it holds what a login cannot restore
/// (`StateStore::persist`, `[daemon] durability`). A state that cannot be saved turns success
/// into a transient failure, so nothing is published that a crash could lose.
pub async fn obtain(account: &Account, state: &mut AccountState, svc: &Services) -> Attempt {
    let started = Instant::now();
    let mut result = obtain_inner(account, state, svc).await;
    if let Err(e) = &result {
        record_failure(state, e);
    }
    let mut decision = after(account, state, result.as_ref(), started);
    state.next_refresh_ms = Some(crate::bounds::to_ms_ceil(decision.next));
    let saved = svc.store.persist(state, account.provider.rotates()).await;
    state.unsaved = saved.is_err();
    if let Err(e) = saved {
        let e = save_failed(&e);
        record_failure(state, &e);
        decision = after(account, state, Err(&e), started);
        state.next_refresh_ms = Some(crate::bounds::to_ms_ceil(decision.next));
        result = Err(e);
    }
    let m = crate::observability::metrics::metrics();
    match &result {
        Ok(o) => {
            m.refresh(&account.name, "success", started.elapsed());
            m.expiry(&account.name, o.expires_at);
            m.last_success(&account.name, SystemTime::now());
        }
        Err(e) => m.refresh(&account.name, e.kind(), started.elapsed()),
    }
    Attempt { result, decision }
}

/// The policy's decision after an attempt that started at `started`.
fn after(
    account: &Account,
    state: &AccountState,
    result: Result<&Obtained, &ProviderError>,
    started: Instant,
) -> Decision {
    let event = match result {
        Ok(o) => Event::Obtained {
            obtained_at: o.obtained_at,
            expires_at: o.expires_at,
        },
        Err(e) => Event::Failed {
            kind: failure_kind(e),
            retry_after: e.retry_after(),
        },
    };
    let facts = facts(state, SystemTime::now(), Some(started.elapsed()));
    policy::decide(
        &facts,
        event,
        &account.timing,
        &account.retry,
        Samples::for_token(&account.name, state.generation),
    )
}

/// What the policy knows of an account: its state at `now`, and how long ago its last
/// request started (`None`: none in this process).
pub fn facts(state: &AccountState, now: SystemTime, since_last_request: Option<Duration>) -> Facts {
    Facts {
        now,
        since_last_request,
        token: state
            .token
            .as_ref()
            .map(|t| (from_ms(t.obtained_at_ms), from_ms(t.expires_at_ms))),
        failures: state.failures,
        superseded: state.superseded,
        last_failure: state.last_failure.filter(|_| state.failures > 0),
        planned: state.next_refresh_ms.map(from_ms),
    }
}

/// How a provider error counts for the policy.
pub fn failure_kind(e: &ProviderError) -> FailureKind {
    match e {
        ProviderError::Transient { .. } => FailureKind::Transient,
        ProviderError::Rejected { .. } => FailureKind::Rejected,
        ProviderError::Misconfigured { .. } | ProviderError::Malformed { .. } => {
            FailureKind::Misconfigured
        }
    }
}

/// A state save that failed (disk full, permissions): transient, nothing was sent.
fn save_failed(e: &std::io::Error) -> ProviderError {
    ProviderError::Transient {
        message: format!("cannot save state: {e}"),
        retry_after: None,
        maybe_processed: false,
    }
}

/// The exchange itself; persists only the in-flight marker (before a rotating refresh).
async fn obtain_inner(
    account: &Account,
    state: &mut AccountState,
    svc: &Services,
) -> Result<Obtained, ProviderError> {
    let provider = &account.provider;
    let client = svc
        .clients
        .get(account.ca_file.as_deref())
        .map_err(|message| ProviderError::Malformed { message })?;
    let _permit = svc
        .limiter
        .acquire()
        .await
        .expect("the request semaphore is never closed");
    let now = SystemTime::now();
    if state.refresh_in_flight && provider.login_sends_refresh_token() {
        // Logging in would send an even older token: retry the held one.
        state.refresh_in_flight = false;
    }
    let held = state.usable_refresh_token(now).cloned();
    if let (Some(refresh_token), true) = (held, provider.can_refresh()) {
        if provider.rotates() {
            // Mark the token as possibly spent before sending it: if we crash or lose the
            // answer, it is never sent again (SPEC §4 "never reuses a spent one").
            state.refresh_in_flight = true;
            svc.store
                .persist(state, provider.rotates())
                .await
                .map_err(|e| save_failed(&e))?;
        }
        match provider.refresh(&client, &refresh_token).await {
            Ok(obtained) => {
                state.refreshes += 1;
                apply(state, &obtained);
                return Ok(obtained);
            }
            Err(ProviderError::Rejected { message }) => {
                warn!(account = %account.name, error = %message, "refresh token rejected; logging in");
                state.refresh_token = None;
                state.refresh_expires_at_ms = None;
                state.refresh_in_flight = false;
            }
            Err(e) => {
                if !e.maybe_processed() {
                    state.refresh_in_flight = false;
                }
                return Err(e);
            }
        }
    }
    let obtained = provider.login(&client).await?;
    state.logins += 1;
    apply(state, &obtained);
    Ok(obtained)
}

fn apply(state: &mut AccountState, o: &Obtained) {
    // From now on these are redacted wherever a server or a sink echoes them.
    crate::redact::register(&state.account, o.access_token.expose_secret());
    if let Some(rt) = &o.refresh_token {
        crate::redact::register(&state.account, rt.expose_secret());
    }
    state.token = Some(StoredToken {
        access_token: StoredSecret(o.access_token.clone()),
        token_type: o.token_type.clone(),
        obtained_at_ms: to_ms(o.obtained_at),
        expires_at_ms: to_ms(o.expires_at),
        expiry_source: o.expiry_source.to_string(),
    });
    match (&o.refresh_token, o.via) {
        (Some(rt), _) => {
            state.refresh_token = Some(StoredSecret(rt.clone()));
            state.refresh_expires_at_ms = o.refresh_expires_at.map(to_ms);
        }
        // A login that issues no refresh token leaves none to use.
        (None, Via::Login) => {
            state.refresh_token = None;
            state.refresh_expires_at_ms = None;
        }
        // A refresh that returns none keeps the current one (non-rotating providers).
        (None, Via::Refresh) => {}
    }
    state.refresh_in_flight = false;
    state.generation = state.generation.saturating_add(1);
    state.superseded = false;
    state.last_success_ms = Some(to_ms(SystemTime::now()));
    state.last_error = None;
    state.last_error_ms = None;
    state.failures = 0;
    state.last_failure = None;
}

/// Records a failed attempt in the state (the caller saves it).
fn record_failure(state: &mut AccountState, e: &ProviderError) {
    state.failures = state.failures.saturating_add(1);
    state.last_failure = Some(failure_kind(e));
    state.last_error = Some(format!("{}: {e}", e.kind()));
    state.last_error_ms = Some(to_ms(SystemTime::now()));
}

/// The document sinks publish for the held token, if any and if it is saved.
pub fn document(account: &Account, state: &AccountState) -> Option<TokenDocument> {
    if state.unsaved {
        return None;
    }
    let t = state.token.as_ref()?;
    Some(TokenDocument {
        account: account.name.clone(),
        provider: account.provider.name.clone(),
        access_token: t.access_token.0.clone(),
        token_type: t.token_type.clone(),
        expires_at: from_ms(t.expires_at_ms),
        generation: state.generation,
    })
}

/// The result of writing one sink.
#[derive(Debug)]
pub struct SinkResult {
    /// Index in the account's sinks.
    pub index: usize,
    /// The sink's label.
    pub label: String,
    /// What happened.
    pub result: Result<WriteOutcome, SinkError>,
}

/// Writes `doc` to the sinks at `indices` concurrently and records each result in `state`.
pub async fn publish(
    account: &Account,
    doc: &TokenDocument,
    state: &mut AccountState,
    indices: &[usize],
) -> Vec<SinkResult> {
    let writes = indices.iter().map(|&i| {
        let sink: Arc<Sink> = account.sinks[i].sink.clone();
        async move {
            let result = sink.write(doc).await;
            SinkResult {
                index: i,
                label: sink.label(),
                result,
            }
        }
    });
    let results = futures_util::future::join_all(writes).await;
    let now = to_ms(SystemTime::now());
    let m = crate::observability::metrics::metrics();
    for r in &results {
        let status = state.sinks.entry(r.label.clone()).or_default();
        let word = match &r.result {
            Ok(outcome) => outcome.as_str(),
            Err(_) => "error",
        };
        m.sink_write(&account.name, &r.label, word);
        match &r.result {
            Ok(outcome) => {
                status.last_write_ms = Some(now);
                status.last_outcome = Some(outcome.as_str().to_string());
                status.holds_expires_at_ms = Some(to_ms(doc.expires_at));
                status.last_error = None;
                status.last_error_ms = None;
                info!(account = %account.name, sink = %r.label, outcome = %outcome.as_str(), expires_at = %doc.expires_at_rfc3339(), "sink written");
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                status.last_error_ms = Some(now);
                // Whether and when it is retried is the caller's to say (the daemon's task
                // logs its wait; `once` does not retry).
                if e.is_transient() {
                    warn!(account = %account.name, sink = %r.label, error = %e, "sink write failed (transient)");
                } else {
                    tracing::error!(account = %account.name, sink = %r.label, error = %e, "sink write failed; needs attention");
                }
            }
        }
    }
    results
}

/// Runs the account's `notify` hooks after its sinks were written. The token is never in
/// argv or the environment: only `TOKEND_ACCOUNT` and `TOKEND_EXPIRES_AT`.
pub async fn notify(account: &Account, doc: &TokenDocument) {
    for hook in &account.notify {
        let result = match hook {
            Notify::Command { argv, timeout } => {
                run_command(argv, *timeout, &account.name, doc).await
            }
            Notify::Signal { signal, pid_file } => {
                crate::notify_signal::signal_pid_file(*signal, pid_file)
            }
        };
        if let Err(e) = result {
            warn!(account = %account.name, error = %e, "notify failed");
        }
    }
}

async fn run_command(
    argv: &[String],
    timeout: Duration,
    account: &str,
    doc: &TokenDocument,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    // A clean environment: tokend's own holds `{ env = "…" }` secrets, Vault and AWS
    // credentials and NOTIFY_SOCKET, none of which a hook may see (SPEC §4).
    cmd.env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| hook_may_inherit(k)));
    cmd.args(&argv[1..])
        .env("TOKEND_ACCOUNT", account)
        .env("TOKEND_EXPIRES_AT", doc.expires_at_rfc3339())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", argv[0]))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{:?} exited with {status}", argv[0])),
        Ok(Err(e)) => Err(format!("{:?}: {e}", argv[0])),
        Err(_) => Err(format!(
            "{:?} did not finish within {}",
            argv[0],
            humantime::format_duration(timeout)
        )),
    }
}

/// The variables a notify command inherits from tokend: what a program needs to run and
/// speak the right language, nothing that could hold a secret.
fn hook_may_inherit(name: &std::ffi::OsStr) -> bool {
    const INHERITED: [&str; 9] = [
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "TMPDIR", "TERM",
    ];
    name.to_str()
        .is_some_and(|n| INHERITED.contains(&n) || n.starts_with("LC_"))
}

/// Exposes the access token of a document (for `tokend token`).
pub fn token_text(state: &AccountState, now: SystemTime) -> Option<String> {
    state
        .valid_token(now)
        .map(|t| t.access_token.0.expose_secret().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        let text = "[[account]]\nname = \"a\"\nprovider = \"zarv\"\nbase_url = \"http://127.0.0.1:1/z\"\nusername = \"u\"\npassword = \"p\"\n[[account.sink]]\ntype = \"file\"\npath = \"a.token\"\n";
        crate::settings::load_str_for_tests(text).remove(0)
    }

    #[test]
    fn a_token_whose_state_is_not_saved_is_never_published() {
        let account = account();
        let mut state = AccountState::new("a", "zarv", &account.fingerprint);
        state.token = Some(StoredToken {
            access_token: StoredSecret("t".to_string().into()),
            token_type: "Bearer".into(),
            obtained_at_ms: 0,
            expires_at_ms: u64::MAX / 2,
            expiry_source: "expires_in".into(),
        });
        assert!(document(&account, &state).is_some());
        state.unsaved = true;
        assert!(document(&account, &state).is_none());
    }
}
