//! The vault sink's own Vault token: obtained by logging in (AppRole, Kubernetes) or read
//! from its secret value (token auth), kept alive by a background task, and replaced by a
//! new login when it can no longer be renewed. Called by [`super::VaultSink`]: `token()`
//! before a write, `reauth()` after a 403.
//!
//! The background task is started lazily, by the first write that holds an expiring token,
//! and aborted when the sink is dropped. It sleeps until two thirds of the token's remaining
//! TTL have passed (the rule of Vault's own lifetime watcher), then renews it. A token that
//! is not renewable, whose renewal came back shorter than its normal TTL (the max TTL is
//! near) or that Vault no longer accepts (403) is replaced instead: a new login, or for
//! token auth a fresh read of its secret value (which picks up a token that Vault Agent
//! rewrote in a file). A failed step is retried with backoff while the token is still
//! alive; once it has expired the task stops, so an idle daemon does not poll a Vault that
//! is down, and the next write logs in again. Writes check the token too: they log in when
//! it has expired or is about to (less than a fifth of its TTL, at most 10 s, left).
//!
//! The Vault calls are vaultrs's (`auth::approle::login`, `auth::kubernetes::login`,
//! `token::lookup_self`, `token::renew_self`, through [`super::api`]). A vaultrs login only
//! returns the token: it does not put it on the client, and nothing in vaultrs renews it,
//! so this module holds it as a [`Session`] (a vaultrs client with that token set, built
//! once per token) and hands that to each write.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::api::{Api, ApiError, Lease, Session, colon, describe_unavailable};
use super::config::Auth;
use crate::sink::SinkError;

/// The shortest sleep between two steps of the renewal task (guards against a TTL of a
/// few milliseconds turning into a busy loop).
const MIN_STEP: Duration = Duration::from_millis(250);
/// The longest wait between two attempts after a failed renewal or login.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Writes log in again when less than this much of the token's life is left.
const MAX_WRITE_MARGIN: Duration = Duration::from_secs(10);

/// Names used in log lines and error messages.
pub(super) struct Names {
    /// The account, for the `account` field of log lines.
    pub account: String,
    /// The sink label, `vault:secret/tokend/x`.
    pub label: String,
    /// The server, as configured.
    pub address: String,
}

/// What the sink knows about its own Vault token, for `status` and tests. Never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultTokenStatus {
    /// The token's accessor, or empty before the first write. An accessor identifies a
    /// token (lookup, renew, revoke with a policy on `auth/token/*-accessor`) but cannot
    /// authenticate.
    pub accessor: String,
    /// When the token expires; `None` for a token without TTL or before the first write.
    pub expires_at: Option<SystemTime>,
    /// Whether Vault allows renewing it.
    pub renewable: bool,
    /// How many tokens were obtained: logins, or reads of the token for token auth.
    pub logins: u64,
    /// How many renewals succeeded.
    pub renewals: u64,
}

/// Keeps the sink's token fresh. Dropping it stops the renewal task.
pub(super) struct Keeper {
    shared: Arc<Shared>,
}

struct Shared {
    api: Api,
    auth: Auth,
    names: Names,
    state: Mutex<State>,
    /// Serialises logins and renewals, so concurrent writes and the task log in once.
    gate: tokio::sync::Mutex<()>,
    /// Wakes the task when a write replaced the token, so it plans for the new one.
    changed: Notify,
}

#[derive(Default)]
struct State {
    held: Option<Held>,
    /// The running renewal task; `None` when there is none (it clears this as it exits).
    task: Option<AbortHandle>,
    logins: u64,
    renewals: u64,
}

struct Held {
    /// The token, and the vaultrs client that sends it.
    session: Session,
    accessor: String,
    renewable: bool,
    full_ttl: Duration,
    /// `None`: the token never expires.
    expires: Option<(Instant, SystemTime)>,
    /// A renewal granted less than `full_ttl`: the max TTL is near, renewing is pointless.
    capped: bool,
    /// Token auth only: re-reading the source gave this same token, so nothing better can
    /// be had until the operator provides one.
    stuck: bool,
}

/// The facts about the held token that decide the next step (the pure part of the
/// schedule, see [`next_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lifetime {
    /// Time left; `None` for a token that never expires.
    pub remaining: Option<Duration>,
    /// Vault allows renewing it.
    pub renewable: bool,
    /// The last renewal hit the max TTL.
    pub capped: bool,
    /// A different token can be obtained (a login, or token auth not yet stuck).
    pub replaceable: bool,
}

/// What the renewal task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// `renew-self`.
    Renew,
    /// A new login (or a re-read of the token's source).
    Replace,
}

/// When (after how long) and how to act on the held token, given how many attempts in a row
/// failed; `None` when there is nothing to do (the token never expires, nothing can improve
/// it, or it will be dead before the next attempt).
pub(super) fn next_step(life: Lifetime, failures: u32) -> Option<(Duration, Action)> {
    let remaining = life.remaining?;
    let action = if life.renewable && !life.capped {
        Action::Renew
    } else if life.replaceable {
        Action::Replace
    } else {
        return None;
    };
    let delay = if failures == 0 {
        remaining * 2 / 3
    } else {
        backoff(failures)
    }
    .max(MIN_STEP);
    (delay < remaining).then_some((delay, action))
}

/// 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF)
}

/// How much life a token must have left for a write to use it rather than log in first.
fn write_margin(full_ttl: Duration) -> Duration {
    (full_ttl / 5).min(MAX_WRITE_MARGIN)
}

impl Keeper {
    /// A keeper that has no token yet: the first `token()` obtains one.
    pub fn new(api: Api, auth: Auth, names: Names) -> Keeper {
        Keeper {
            shared: Arc::new(Shared {
                api,
                auth,
                names,
                state: Mutex::new(State::default()),
                gate: tokio::sync::Mutex::new(()),
                changed: Notify::new(),
            }),
        }
    }

    /// How the token is obtained, for messages.
    pub fn describe(&self) -> String {
        self.shared.auth.describe()
    }

    /// A token to write with: the held one while it has life left, else a new one.
    /// Starts the renewal task if it is not running.
    pub async fn token(&self) -> Result<Session, SinkError> {
        if let Some(token) = self.shared.usable() {
            return Ok(token);
        }
        let _gate = self.shared.gate.lock().await;
        if let Some(token) = self.shared.usable() {
            return Ok(token);
        }
        self.shared.obtain().await
    }

    /// Called after Vault refused `failed` with 403: obtains a new token, unless another
    /// write or the task already replaced it.
    pub async fn reauth(&self, failed: &Session) -> Result<Session, SinkError> {
        let _gate = self.shared.gate.lock().await;
        if let Some(held) = &self.shared.lock().held
            && !held.session.same_token(failed)
        {
            return Ok(held.session.clone());
        }
        tracing::info!(
            account = %self.shared.names.account,
            sink = %self.shared.names.label,
            "vault refused the sink's token (http 403); obtaining a new one"
        );
        self.shared.obtain().await
    }

    /// What the sink knows about its token.
    pub fn status(&self) -> VaultTokenStatus {
        let state = self.shared.lock();
        let held = state.held.as_ref();
        VaultTokenStatus {
            accessor: held.map(|h| h.accessor.clone()).unwrap_or_default(),
            expires_at: held.and_then(|h| h.expires.map(|(_, wall)| wall)),
            renewable: held.is_some_and(|h| h.renewable),
            logins: state.logins,
            renewals: state.renewals,
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(task) = self.shared.lock().task.take() {
            task.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The held token if a write may use it; starts the renewal task when needed.
    fn usable(self: &Arc<Self>) -> Option<Session> {
        let mut state = self.lock();
        let held = state.held.as_ref()?;
        if let Some((at, _)) = held.expires {
            let left = at.saturating_duration_since(Instant::now());
            let margin = if self.auth.can_login() {
                write_margin(held.full_ttl)
            } else {
                // Token auth cannot do better than the token it has.
                Duration::ZERO
            };
            if left <= margin {
                return None;
            }
        }
        let session = held.session.clone();
        self.start_task(&mut state);
        Some(session)
    }

    /// Spawns the renewal task if the held token expires and no task runs.
    fn start_task(self: &Arc<Self>, state: &mut State) {
        let expires = state.held.as_ref().is_some_and(|h| h.expires.is_some());
        if expires && state.task.is_none() {
            let task = tokio::spawn(keep_alive(Arc::clone(self)));
            state.task = Some(task.abort_handle());
        }
    }

    /// The facts [`next_step`] decides on.
    fn lifetime(&self, held: &Held) -> Lifetime {
        Lifetime {
            remaining: held
                .expires
                .map(|(at, _)| at.saturating_duration_since(Instant::now())),
            renewable: held.renewable,
            capped: held.capped,
            replaceable: self.auth.can_login() || !held.stuck,
        }
    }

    /// Obtains a new token and holds it. The caller holds `gate`.
    async fn obtain(self: &Arc<Self>) -> Result<Session, SinkError> {
        let lease = self.fetch().await?;
        let session = lease.session.clone();
        // The sink's own Vault token is a secret like any other (issue 12).
        crate::redact::register(
            &format!("{}/{}", self.names.account, self.names.label),
            session.token().expose_secret(),
        );
        let mut state = self.lock();
        // Token auth: the source still holds the token we had, so there is nothing newer.
        let stuck = !self.auth.can_login()
            && state
                .held
                .as_ref()
                .is_some_and(|h| h.session.same_token(&lease.session));
        tracing::info!(
            account = %self.names.account,
            sink = %self.names.label,
            ttl = %humantime::format_duration(lease.ttl),
            renewable = lease.renewable,
            "{} succeeded",
            if self.auth.can_login() { "vault login" } else { "vault token lookup" },
        );
        state.held = Some(Held::new(lease, stuck));
        state.logins += 1;
        self.start_task(&mut state);
        drop(state);
        self.changed.notify_one();
        Ok(session)
    }

    /// One login (or token read) against Vault.
    async fn fetch(&self) -> Result<Lease, SinkError> {
        let what = self.auth.describe();
        let rejected = |status: u16, detail: &str| {
            SinkError::Permanent(format!(
                "vault {}: {what} was rejected (http {status}{}): {}",
                self.names.address,
                colon(detail),
                match &self.auth {
                    Auth::Token { .. } => "the token expired, was revoked or is wrong",
                    Auth::AppRole { .. } =>
                        "check role_id, secret_id and that the auth mount exists",
                    Auth::Kubernetes { .. } =>
                        "check the role, the service account token and that the auth mount exists",
                },
            ))
        };
        let result = match &self.auth {
            Auth::Token { value, base_dir } => {
                let token = value.resolve(base_dir).map_err(|e| self.unreadable(&e))?;
                crate::redact::note(
                    &format!("{}/vault-token", self.names.account),
                    token.expose_secret(),
                );
                match self.api.session(token) {
                    Ok(session) => self.api.lookup_self(&session).await,
                    Err(e) => Err(e),
                }
            }
            Auth::AppRole {
                mount,
                role_id,
                secret_id,
                base_dir,
            } => {
                let role_id = role_id.resolve(base_dir).map_err(|e| self.unreadable(&e))?;
                let secret_id = secret_id
                    .resolve(base_dir)
                    .map_err(|e| self.unreadable(&e))?;
                crate::redact::note(
                    &format!("{}/vault-secret_id", self.names.account),
                    secret_id.expose_secret(),
                );
                self.api.approle_login(mount, &role_id, &secret_id).await
            }
            Auth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                // The same rules as at `check` (regular file, bounded, trusted owner).
                let file = crate::config::files::read_trusted(
                    jwt_file,
                    "jwt_file",
                    crate::config::files::SECRET_CAP,
                )
                .map_err(|e| self.unreadable(&e))?;
                let jwt = String::from_utf8(file.bytes).map_err(|_| {
                    self.unreadable(&format!(
                        "jwt_file {} is not valid UTF-8",
                        jwt_file.display()
                    ))
                })?;
                let jwt = SecretString::from(jwt.trim().to_string());
                crate::redact::note(
                    &format!("{}/vault-jwt", self.names.account),
                    jwt.expose_secret(),
                );
                self.api.kubernetes_login(mount, role, &jwt).await
            }
        };
        result.map_err(|e| match e {
            ApiError::Status { status, detail } if matches!(status, 400..=499) && status != 429 => {
                rejected(status, &detail)
            }
            ApiError::BadToken => {
                self.unreadable("the token holds characters that cannot be sent in an http header")
            }
            ApiError::Request(what) => self.unreadable(&format!("cannot send the request: {what}")),
            other => self.unavailable(
                &match &self.auth {
                    Auth::Token { .. } => format!("token lookup ({what})"),
                    _ => what.clone(),
                },
                other,
            ),
        })
    }

    fn unreadable(&self, why: &str) -> SinkError {
        SinkError::Permanent(format!(
            "vault {}: {}: {why}",
            self.names.address,
            self.auth.describe()
        ))
    }

    /// A failure that is worth retrying soon: Vault sealed or down, a timeout.
    fn unavailable(&self, what: &str, e: ApiError) -> SinkError {
        SinkError::Transient(format!(
            "vault {}: {what} failed: {}",
            self.names.address,
            describe_unavailable(&e)
        ))
    }

    /// Performs one step of the renewal task on `planned`, the token it was planned for.
    async fn step(self: &Arc<Self>, action: Action, planned: &Session) -> Result<(), SinkError> {
        let _gate = self.gate.lock().await;
        let current = self.lock().held.as_ref().map(|h| h.session.clone());
        if current.is_none_or(|c| !c.same_token(planned)) {
            // A write replaced the token meanwhile; the task plans again.
            return Ok(());
        }
        match action {
            Action::Renew => match self.api.renew_self(planned).await {
                Ok(lease) => {
                    let mut state = self.lock();
                    if let Some(held) = state.held.as_mut() {
                        held.renewed(&lease);
                        tracing::debug!(
                            account = %self.names.account,
                            sink = %self.names.label,
                            ttl = %humantime::format_duration(lease.ttl),
                            capped = held.capped,
                            "vault token renewed"
                        );
                    }
                    state.renewals += 1;
                    Ok(())
                }
                // Revoked, expired or not renewable after all: a new token is the way out.
                Err(ApiError::Status { status, .. }) if matches!(status, 400 | 401 | 403) => {
                    tracing::info!(
                        account = %self.names.account,
                        sink = %self.names.label,
                        status,
                        "vault refused to renew the sink's token; obtaining a new one"
                    );
                    if let Some(held) = self.lock().held.as_mut() {
                        held.renewable = false;
                    }
                    self.obtain().await.map(|_| ())
                }
                Err(e) => Err(self.unavailable("token renewal", e)),
            },
            Action::Replace => {
                self.obtain().await?;
                if self.lock().held.as_ref().is_some_and(|h| h.stuck) {
                    tracing::warn!(
                        account = %self.names.account,
                        sink = %self.names.label,
                        "the {} cannot be renewed any more and its source holds no newer \
                         token; put a new one there before this one expires",
                        self.auth.describe(),
                    );
                }
                Ok(())
            }
        }
    }
}

impl Held {
    fn new(lease: Lease, stuck: bool) -> Held {
        let expires = (lease.ttl > Duration::ZERO)
            .then(|| (Instant::now() + lease.ttl, SystemTime::now() + lease.ttl));
        Held {
            session: lease.session,
            accessor: lease.accessor,
            renewable: lease.renewable,
            full_ttl: lease.full_ttl,
            expires,
            capped: false,
            stuck,
        }
    }

    fn renewed(&mut self, lease: &Lease) {
        self.expires = Some((Instant::now() + lease.ttl, SystemTime::now() + lease.ttl));
        self.renewable = lease.renewable;
        self.capped = lease.ttl < self.full_ttl;
    }
}

/// The renewal task: plans, sleeps, acts, until there is nothing left to do.
async fn keep_alive(shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        let (delay, action, planned) = {
            let mut state = shared.lock();
            let plan = state.held.as_ref().and_then(|held| {
                next_step(shared.lifetime(held), failures)
                    .map(|(delay, action)| (delay, action, held.session.clone()))
            });
            match plan {
                Some(plan) => plan,
                None => {
                    // Decided under the lock, so a write that obtains a token after this
                    // sees `task == None` and starts a new task.
                    state.task = None;
                    if failures > 0 {
                        tracing::warn!(
                            account = %shared.names.account,
                            sink = %shared.names.label,
                            "the sink's vault token could not be kept alive; the next write obtains a new one"
                        );
                    }
                    return;
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.changed.notified() => {
                failures = 0;
                continue;
            }
        }
        match shared.step(action, &planned).await {
            Ok(()) => failures = 0,
            Err(e) if !e.is_transient() => {
                // Credentials rejected: retrying would only hammer Vault. The held token
                // stays usable while it lives; the next write tries again and reports.
                shared.lock().task = None;
                tracing::warn!(
                    account = %shared.names.account,
                    sink = %shared.names.label,
                    error = %e,
                    "cannot replace the sink's vault token; the next write tries again"
                );
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(
                    account = %shared.names.account,
                    sink = %shared.names.label,
                    error = %e,
                    "keeping the sink's vault token alive failed; retrying"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
