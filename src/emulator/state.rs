//! State shared between the [`Emulator`](super::Emulator) handle (test or demo thread) and
//! the server thread: settings, per-provider counters and switches, and the token store.
//! Handlers reach it through [`Api`], which also knows which provider it serves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::response::Response;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::fault::FaultPlan;
use super::stats::Stats;
use super::token::{self, TokenStore};
use super::{Options, Provider};

/// Lifetimes are whole seconds because `expires_in` is; at least one.
pub(crate) fn whole_secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// What the emulator last received on a provider's token endpoint: enough for a test to
/// check which grant, client authentication, scope, audience or extra parameters tokend
/// sent. Values of secret fields read `<redacted>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The request path, e.g. `/oauth2/token`.
    pub path: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The scheme of the `Authorization` header (`Basic`, `Bearer`), if any.
    pub authorization_scheme: Option<String>,
    /// Top-level body fields (form parameters or JSON members; JSON non-strings as JSON
    /// text). Secret values (`password`, `client_secret`, refresh tokens, GraphQL
    /// `variables`) are replaced by `<redacted>`.
    pub fields: BTreeMap<String, String>,
    /// When the handler saw the request (monotonic: tests measure the gap between two).
    pub received_at: std::time::Instant,
}

/// Everything mutable behind one `Arc`.
pub(crate) struct Shared {
    pub(crate) access_lifetime_secs: AtomicU64,
    pub(crate) refresh_lifetime_secs: AtomicU64,
    pub(crate) itflex_cookie_only: AtomicBool,
    providers: [ProviderState; 6],
    tokens: Mutex<TokenStore>,
    fault_rng: Mutex<StdRng>,
}

/// Counters and switches of one provider.
#[derive(Default)]
pub(crate) struct ProviderState {
    pub(crate) stats: Stats,
    pub(crate) reject_credentials: AtomicBool,
    /// Reuse detection: a spent refresh token presented again revokes its family.
    pub(crate) reuse_revokes_family: AtomicBool,
    pub(crate) last_request: Mutex<Option<RequestRecord>>,
    faults: Mutex<FaultPlan>,
}

impl ProviderState {
    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultPlan> {
        self.faults.lock().expect("fault plan lock poisoned")
    }
}

impl Shared {
    pub(crate) fn new(options: &Options) -> Shared {
        let shared = Shared {
            access_lifetime_secs: AtomicU64::new(whole_secs(options.access_lifetime)),
            refresh_lifetime_secs: AtomicU64::new(whole_secs(options.refresh_lifetime)),
            itflex_cookie_only: AtomicBool::new(options.itflex_cookie_only),
            providers: Default::default(),
            tokens: Mutex::new(TokenStore::default()),
            fault_rng: Mutex::new(StdRng::seed_from_u64(options.fault_seed)),
        };
        // Zarv's rule (issue 14): reusing a rotated refresh token revokes its family.
        shared
            .provider(Provider::Zarv)
            .reuse_revokes_family
            .store(true, Ordering::SeqCst);
        shared
    }

    pub(crate) fn provider(&self, provider: Provider) -> &ProviderState {
        &self.providers[provider.index()]
    }

    pub(crate) fn tokens(&self) -> MutexGuard<'_, TokenStore> {
        self.tokens.lock().expect("token store lock poisoned")
    }
}

/// The state a handler of one provider's routes works with (axum router state).
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) shared: Arc<Shared>,
    pub(crate) provider: Provider,
}

/// What kind of token a provider hands out; decides how tokend can learn its expiry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TokenFormat {
    /// `header.payload.signature` with `exp`, `iat`, `sub` in the payload.
    Jwt,
    /// Random base64url; nothing to decode (OAuth2, and iTFLEX in three dotted parts).
    Opaque { parts: usize },
    /// Laravel Passport's encrypted refresh token: `def50200` and hex.
    Passport,
}

/// A request for new tokens, built by a handler after it accepted the credentials.
pub(crate) struct IssueSpec<'a> {
    pub(crate) subject: &'a str,
    pub(crate) access: TokenFormat,
    /// Format of the refresh token, if one is issued.
    pub(crate) refresh: Option<TokenFormat>,
    /// OAuth2: the client the refresh token is bound to.
    pub(crate) client_id: Option<&'a str>,
    /// OAuth2: the granted scope, kept for a later refresh.
    pub(crate) scope: Option<&'a str>,
    /// The family of the refresh token just spent ([`token::Redeemed::family`]); `None`
    /// for a login, which starts a new family.
    pub(crate) family: Option<token::Family>,
}

/// Tokens just issued, with their lifetimes in seconds.
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) expires_in: u64,
    pub(crate) refresh_token: Option<String>,
    pub(crate) refresh_expires_in: u64,
}

impl Api {
    pub(crate) fn state(&self) -> &ProviderState {
        self.shared.provider(self.provider)
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.state().stats
    }

    /// Draws the fault for the next request, if any.
    pub(crate) fn next_fault(&self) -> Option<super::Fault> {
        let mut rng = self
            .shared
            .fault_rng
            .lock()
            .expect("fault rng lock poisoned");
        self.state().faults().next(&mut rng)
    }

    pub(crate) fn credentials_rejected(&self) -> bool {
        self.state().reject_credentials.load(Ordering::SeqCst)
    }

    /// The user credentials check shared by every provider that has a user.
    pub(crate) fn password_ok(&self, username: &str, password: &str) -> bool {
        !self.credentials_rejected() && username == super::USERNAME && password == super::PASSWORD
    }

    /// Counts a rejected request and passes the response through.
    pub(crate) fn reject(&self, response: Response) -> Response {
        self.stats().rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            provider = %self.provider,
            status = %response.status(),
            "emulator rejected request"
        );
        response
    }

    /// Remembers the request for [`super::Emulator::last_request`].
    pub(crate) fn record(&self, record: RequestRecord) {
        *self
            .state()
            .last_request
            .lock()
            .expect("last_request lock poisoned") = Some(record);
    }

    /// Spends a refresh token of this provider (see [`TokenStore::redeem`]) and counts
    /// an attempt to spend one twice; with reuse detection on, that attempt also revokes
    /// the token's whole family.
    pub(crate) fn redeem(
        &self,
        token: &str,
        client_id: Option<&str>,
        requested_scope: Option<&str>,
        revoke_paired_access: bool,
    ) -> Result<token::Redeemed, token::Refused> {
        // One lock for the check and the revocation: no refresh of the family can slip
        // in between.
        let mut store = self.shared.tokens();
        let result = store.redeem(
            self.provider,
            token,
            client_id,
            requested_scope,
            revoke_paired_access,
            Instant::now(),
        );
        if let Err(token::Refused::Spent) = result {
            self.stats()
                .spent_refresh_reuses
                .fetch_add(1, Ordering::SeqCst);
            tracing::debug!(provider = %self.provider, "emulator saw a spent refresh token reused");
            if self.state().reuse_revokes_family.load(Ordering::SeqCst)
                && store.revoke_family_of(self.provider, token)
            {
                self.stats().families_revoked.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(provider = %self.provider, "emulator revoked a token family");
            }
        }
        result
    }

    /// Mints and stores tokens with the current lifetimes and counts the issue.
    pub(crate) fn issue(&self, spec: IssueSpec<'_>) -> Issued {
        let expires_in = self.shared.access_lifetime_secs.load(Ordering::SeqCst);
        let refresh_expires_in = self.shared.refresh_lifetime_secs.load(Ordering::SeqCst);
        let now = Instant::now();
        let access_token = token::mint(spec.access, self.provider, spec.subject, expires_in);
        let refresh_token = spec
            .refresh
            .map(|format| token::mint(format, self.provider, spec.subject, refresh_expires_in));
        let mut store = self.shared.tokens();
        store.prune(now);
        let family = spec.family.unwrap_or_else(|| store.new_family());
        store.insert_access(
            self.provider,
            &access_token,
            spec.subject,
            now + Duration::from_secs(expires_in),
            family,
        );
        if let Some(refresh) = &refresh_token {
            store.insert_refresh(
                refresh,
                token::RefreshEntry::new(
                    self.provider,
                    spec.subject,
                    &access_token,
                    spec.client_id,
                    spec.scope,
                    now + Duration::from_secs(refresh_expires_in),
                    family,
                ),
            );
        }
        drop(store);
        self.stats().issued.fetch_add(1, Ordering::Relaxed);
        Issued {
            access_token,
            expires_in,
            refresh_token,
            refresh_expires_in,
        }
    }
}
