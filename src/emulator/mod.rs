//! The loopback provider emulator: an in-process HTTP server that answers like the five
//! provider auth APIs and a generic RFC 6749 token endpoint, with switches for the faults
//! tokend must survive. `tokend demo` runs the daemon against it, and the integration tests
//! use it to watch what the daemon sends (statistics) and to break things on purpose
//! (faults, revocation, rejected credentials).
//!
//! Each API lives under a path prefix, so one listener serves all of them. The paths and
//! shapes follow the provider documents in `shared/seeds/` and SPEC §3 "Providers":
//!
//! | provider | endpoint (`base_url` in bold) | follows |
//! |---|---|---|
//! | Pontotel | POST **`/pontotel/api/v4`**`/login/` | seed 000, "Endpoint de Login" |
//! | Funcional | POST **`/funcional/graphql`**, mutation `createToken` | seed 001; errors as Apollo Server |
//! | HubSoft | POST **`/hubsoft`**`/oauth/token`, grants `password`, `refresh_token` | seed 002; Laravel Passport (league/oauth2-server 8) |
//! | Zarv | POST **`/zarv`**`/api/v1/authentication` and `…/authentication/refresh` | seed 003 "Autenticação v2" |
//! | iTFLEX | POST **`/itflex`**`/api/v1/oauth2/token` | seed 004 "Processo de Autenticação" |
//! | OAuth2 | POST `/oauth2/token` (the `token_url`), form-encoded | RFC 6749 §2.3.1, §4.3, §4.4, §5, §6 |
//!
//! Every provider also has a protected resource, `GET /{provider}/whoami` (Bearer token per
//! RFC 6750; iTFLEX also takes its `access-token` cookie), answering 200 for a token this
//! emulator issued that is unexpired and unrevoked, else 401.
//!
//! The server runs on its own thread with a single-threaded Tokio runtime, so it keeps
//! answering whether the caller is async, blocking (`wait_for`) or the demo's runtime.
//! Faults and statistics apply to the token endpoints only; `whoami` calls are counted
//! apart and never faulted.
//!
//! Use: `let emu = Emulator::start(Options::default())?;`, configure tokend with
//! `emu.base_url(Provider::Zarv)` (or `emu.token_url()`) and the public credentials
//! [`USERNAME`], [`PASSWORD`], [`CLIENT_ID`], [`CLIENT_SECRET`], [`INTEGRATOR_KEY`]; then
//! arm faults ([`Emulator::fail_next`]) and read [`Emulator::stats`].
//!
//! Layout: `server` (router, accept loop, connection drops), `fault`, `stats`, `state`
//! (shared state; issuing and redeeming), `token` (minting, the token store), `graphql`
//! (the parser), and `api/`, one file per provider document.

mod api;
mod fault;
mod graphql;
mod server;
mod state;
mod stats;
mod token;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use fault::Fault;
pub use state::RequestRecord;
pub use stats::StatsSnapshot;

/// The username every emulated API accepts (Pontotel, Funcional's `login`, HubSoft, Zarv
/// and the OAuth2 `password` grant).
pub const USERNAME: &str = "demo";
/// The password that goes with [`USERNAME`].
pub const PASSWORD: &str = "demo-password";
/// The client id of HubSoft and of the OAuth2 endpoint.
pub const CLIENT_ID: &str = "demo-client";
/// The client secret that goes with [`CLIENT_ID`]. It holds `+`, `/` and `=` on purpose:
/// RFC 6749 §2.3.1 form-encodes id and secret before HTTP Basic, and a client that skips
/// that step is rejected here as it would be by a strict server.
pub const CLIENT_SECRET: &str = "demo-secret+/=";
/// The iTFLEX integrator key (sent as `refresh_token`; it never rotates).
pub const INTEGRATOR_KEY: &str = "itflex-demo.integrator-key.0123456789abcdef";
/// `Max-Age` of iTFLEX's `refresh-token` cookie (30 days, as in the document's example).
pub const ITFLEX_REFRESH_COOKIE_MAX_AGE: u64 = 2_592_000;

/// One of the emulated APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Pontotel: JSON login, access token only.
    Pontotel,
    /// Funcional: GraphQL `createToken`, expiry only in the JWT.
    Funcional,
    /// HubSoft: Laravel Passport password and refresh_token grants.
    Hubsoft,
    /// Zarv: JSON login plus a rotating refresh token.
    Zarv,
    /// iTFLEX: a fixed integrator key exchanged for an access token (body and cookie).
    Itflex,
    /// A generic RFC 6749 token endpoint.
    Oauth2,
}

impl Provider {
    /// Every provider, in declaration order.
    pub const ALL: [Provider; 6] = [
        Provider::Pontotel,
        Provider::Funcional,
        Provider::Hubsoft,
        Provider::Zarv,
        Provider::Itflex,
        Provider::Oauth2,
    ];

    /// The provider's name as written in tokend's config, which is also its path prefix.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Pontotel => "pontotel",
            Provider::Funcional => "funcional",
            Provider::Hubsoft => "hubsoft",
            Provider::Zarv => "zarv",
            Provider::Itflex => "itflex",
            Provider::Oauth2 => "oauth2",
        }
    }

    /// Position in [`Provider::ALL`], used to index per-provider state.
    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An issued access token as the emulator sees it ([`Emulator::access_token_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessTokenInfo {
    /// When it expires (or expired).
    pub expires_at: Instant,
    /// Whether it was revoked before its expiry.
    pub revoked: bool,
}

/// How an emulator starts. Everything except `listen` can be changed later at runtime.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to bind; default `127.0.0.1:0` (a free port; see [`Emulator::addr`]).
    pub listen: SocketAddr,
    /// Lifetime of access tokens, whole seconds (rounded down, at least 1 s). Default 20 s,
    /// short enough for the demo to show refreshes.
    pub access_lifetime: Duration,
    /// Lifetime of refresh tokens (HubSoft, Zarv, OAuth2), same rounding. Default 5 min.
    pub refresh_lifetime: Duration,
    /// iTFLEX answers with the token and its lifetime only in the `access-token` cookie:
    /// the body then lacks `access_token` and `expires_in`.
    pub itflex_cookie_only: bool,
    /// Seed of the generator behind random faults ([`Emulator::set_random_faults`]), so a
    /// failing run can be replayed. Tokens always come from the thread's secure generator.
    pub fault_seed: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            access_lifetime: Duration::from_secs(20),
            refresh_lifetime: Duration::from_secs(300),
            itflex_cookie_only: false,
            fault_seed: 0x746f_6b65_6e64,
        }
    }
}

/// A running emulator. Dropping it (or [`Emulator::shutdown`]) stops the server and closes
/// every open connection.
pub struct Emulator {
    shared: Arc<state::Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds `options.listen` and starts serving on a background thread. Fails only when
    /// the address cannot be bound or the thread or runtime cannot be created.
    pub fn start(options: Options) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(options.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            // `from_std` registers the socket with this runtime's reactor.
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let shared = Arc::new(state::Shared::new(&options));
        let cancel = CancellationToken::new();
        let router = server::router(&shared);
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("tokend-emulator".into())
            .spawn(move || {
                runtime.block_on(server::serve(listener, router, stop));
                // Dropping the runtime here drops every connection task still running.
            })?;
        tracing::debug!(%addr, "emulator listening");
        Ok(Emulator {
            shared,
            addr,
            cancel,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `base_url` tokend is configured with for `provider`, as SPEC §3 defines it
    /// (for [`Provider::Oauth2`], the prefix of [`Emulator::token_url`]).
    pub fn base_url(&self, provider: Provider) -> String {
        let suffix = match provider {
            Provider::Pontotel => "/api/v4",
            Provider::Funcional => "/graphql",
            Provider::Hubsoft | Provider::Zarv | Provider::Itflex | Provider::Oauth2 => "",
        };
        format!("http://{}/{}{suffix}", self.addr, provider.name())
    }

    /// The OAuth2 `token_url`.
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/token", self.addr)
    }

    /// The protected resource of `provider`: `GET` it with `Authorization: Bearer <token>`.
    pub fn whoami_url(&self, provider: Provider) -> String {
        format!("http://{}/{}/whoami", self.addr, provider.name())
    }

    /// Whether `token` is an access token this emulator issued for `provider` that is
    /// neither expired nor revoked: what `whoami` answers, without HTTP.
    pub fn token_is_valid(&self, provider: Provider, token: &str) -> bool {
        self.shared
            .tokens()
            .access_subject(provider, token, Instant::now())
            .is_some()
    }

    /// What the emulator knows of an access token it issued for `provider`, valid or not:
    /// its expiry and whether it was revoked (HubSoft revokes the paired access token when
    /// a refresh token is spent). `None` for a token it never issued (or forgot, an hour
    /// after expiry). The fault harness uses it to tell an expired token from a revoked,
    /// unknown or torn one, and a token that expired while it was being checked.
    pub fn access_token_info(&self, provider: Provider, token: &str) -> Option<AccessTokenInfo> {
        self.shared
            .tokens()
            .access_info(provider, token)
            .map(|(expires_at, revoked)| AccessTokenInfo {
                expires_at,
                revoked,
            })
    }

    /// The TOML lines of a tokend `[[account]]` for `provider` against this emulator: its
    /// `base_url` (or `token_url` and `grant = "password"` for OAuth2) and the demo
    /// credentials it accepts. Used by `tokend demo` and the tests.
    pub fn account_settings(&self, provider: Provider) -> String {
        let user = format!("username = \"{USERNAME}\"\npassword = \"{PASSWORD}\"\n");
        let client = format!("client_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n");
        match provider {
            Provider::Itflex => format!(
                "base_url = \"{}\"\nrefresh_token = \"{INTEGRATOR_KEY}\"\n",
                self.base_url(provider)
            ),
            Provider::Hubsoft => {
                format!("base_url = \"{}\"\n{user}{client}", self.base_url(provider))
            }
            Provider::Oauth2 => format!(
                "token_url = \"{}\"\ngrant = \"password\"\n{user}{client}",
                self.token_url()
            ),
            _ => format!("base_url = \"{}\"\n{user}", self.base_url(provider)),
        }
    }

    /// A copy of `provider`'s counters.
    pub fn stats(&self, provider: Provider) -> StatsSnapshot {
        self.shared.provider(provider).stats.snapshot()
    }

    /// The last request that reached `provider`'s token endpoint logic (faulted requests
    /// other than `Delay` never do), with secret values redacted.
    pub fn last_request(&self, provider: Provider) -> Option<RequestRecord> {
        self.shared
            .provider(provider)
            .last_request
            .lock()
            .expect("last_request lock poisoned")
            .clone()
    }

    /// Answers the next `n` token-endpoint requests to `provider` with `fault`. Queued
    /// faults run in order and before any random fault.
    pub fn fail_next(&self, provider: Provider, n: usize, fault: Fault) {
        self.shared.provider(provider).faults().queue(n, fault);
    }

    /// From now on, each token-endpoint request to `provider` fails with probability `rate`
    /// (clamped to 0.0–1.0) with a fault drawn uniformly from `kinds`, using the seeded
    /// generator of [`Options::fault_seed`]. An empty `kinds` or a rate of 0 turns it off.
    pub fn set_random_faults(&self, provider: Provider, rate: f64, kinds: Vec<Fault>) {
        self.shared
            .provider(provider)
            .faults()
            .set_random(rate, kinds);
    }

    /// Removes queued and random faults of `provider`.
    pub fn clear_faults(&self, provider: Provider) {
        self.shared.provider(provider).faults().clear();
    }

    /// Revokes every access and refresh token issued so far for `provider`. Using a revoked
    /// refresh token is rejected like an unknown one and does not count as a reuse.
    pub fn revoke_all(&self, provider: Provider) {
        self.shared.tokens().revoke_all(provider);
    }

    /// While `reject` holds, `provider` refuses its long-lived credentials as if they were
    /// wrong: username/password, Funcional's login, iTFLEX's integrator key, and for OAuth2
    /// the client of a `client_credentials` grant. Refresh tokens keep working.
    pub fn reject_credentials(&self, provider: Provider, reject: bool) {
        self.shared
            .provider(provider)
            .reject_credentials
            .store(reject, Ordering::SeqCst);
    }

    /// Switches reuse detection for `provider`: while on, presenting a refresh token that
    /// was already spent revokes its whole family, every access and refresh token
    /// descended from the same login (OAuth 2.0 Security BCP, RFC 9700 §4.14.2), and
    /// [`StatsSnapshot::families_revoked`] counts it. On for Zarv from the start, as Zarv
    /// does it; off for the others.
    pub fn set_reuse_revokes_family(&self, provider: Provider, on: bool) {
        self.shared
            .provider(provider)
            .reuse_revokes_family
            .store(on, Ordering::SeqCst);
    }

    /// Sets the lifetime of access tokens issued from now on (see [`Options`]).
    pub fn set_access_lifetime(&self, lifetime: Duration) {
        self.shared
            .access_lifetime_secs
            .store(state::whole_secs(lifetime), Ordering::SeqCst);
    }

    /// Sets the lifetime of refresh tokens issued from now on (see [`Options`]).
    pub fn set_refresh_lifetime(&self, lifetime: Duration) {
        self.shared
            .refresh_lifetime_secs
            .store(state::whole_secs(lifetime), Ordering::SeqCst);
    }

    /// Switches iTFLEX's cookie-only answers on or off (see [`Options::itflex_cookie_only`]).
    pub fn set_itflex_cookie_only(&self, cookie_only: bool) {
        self.shared
            .itflex_cookie_only
            .store(cookie_only, Ordering::SeqCst);
    }

    /// Stops the server, closes every connection and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been printed; nothing more to do.
            let _ = thread.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish()
    }
}
