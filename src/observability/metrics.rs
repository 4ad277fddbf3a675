//! Prometheus metrics (SPEC §4 "Metrics"), recorded by the account work and the reload
//! path and served by [`super::http`] at `/metrics`. One process-wide registry, so the
//! recording call sites need no plumbing. Labels never hold a secret: account names,
//! sink labels (paths, mounts, secret ids) and result words only.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The label set of a per-account series. An account has about a dozen series (five
/// refresh results, four per sink, a histogram, two gauges); with one `String` per label
/// they took ~3 KiB per account (30 MB at 10,000 accounts, docs/BENCHMARKS.md "Memory at
/// 10,000 accounts"). Here the account name and the sink label are one shared allocation
/// each ([`Metrics::known`]) and the result words are `'static`. The fields encode in
/// declaration order, as the label vectors did.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: Arc<str>,
}

/// `tokend_refresh_total`'s labels ([`AccountLabels`] says why not strings).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    account: Arc<str>,
    result: &'static str,
}

/// `tokend_sink_write_total`'s labels ([`AccountLabels`] says why not strings).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    account: Arc<str>,
    sink: Arc<str>,
    result: &'static str,
}

/// A known account's shared name and sink labels.
type Known = HashMap<Arc<str>, Vec<Arc<str>>>;

/// Every `result` of `tokend_refresh_total` (`ProviderError::kind` plus success).
pub const REFRESH_RESULTS: [&str; 5] = [
    "success",
    "transient",
    "rejected",
    "misconfigured",
    "malformed",
];
/// Every `result` of `tokend_sink_write_total`.
pub const SINK_RESULTS: [&str; 4] = ["written", "unchanged", "kept_newer", "error"];
/// Every `result` of `tokend_config_reload_total`.
pub const RELOAD_RESULTS: [&str; 2] = ["success", "error"];
/// Every `state` of `tokend_accounts`: `fresh` (a valid token, the last attempt
/// succeeded), `refreshing` (a request in flight), `failing` (a valid token, the last
/// attempt failed), `expired` (no valid token).
pub const ACCOUNT_STATES: [&str; 4] = ["fresh", "refreshing", "failing", "expired"];
/// Every `result` of `tokend_coordination_claims_total`: `won` (this instance refreshes),
/// `lost` (another holds a live claim, or wrote first), `stale` (a claim found dead and
/// taken over).
pub const CLAIM_RESULTS: [&str; 3] = ["won", "lost", "stale"];
/// Every `op` of `tokend_coordination_store_requests_total`.
pub const STORE_OPS: [&str; 2] = ["read", "write"];

/// The metric families.
pub struct Metrics {
    registry: Registry,
    expiry: Family<AccountLabels, Gauge<f64, AtomicU64>>,
    last_success: Family<AccountLabels, Gauge<f64, AtomicU64>>,
    refresh: Family<RefreshLabels, Counter>,
    refresh_duration: Family<AccountLabels, Histogram, fn() -> Histogram>,
    sink_write: Family<SinkLabels, Counter>,
    reload: Family<Labels, Counter>,
    accounts: Family<Labels, Gauge>,
    claims: Family<Labels, Counter>,
    adopted: Family<Labels, Counter>,
    store_errors: Family<Labels, Counter>,
    store_requests: Family<Labels, Counter>,
    /// `[daemon.coordination]` is configured: accounts get the coordination series.
    coordinated: std::sync::atomic::AtomicBool,
    /// The sink labels each known account's series were made for, so that removing an
    /// account (or a sink) removes exactly its series; also the one copy of each name and
    /// sink label that the series share.
    known: Mutex<Known>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let expiry = Family::<AccountLabels, Gauge<f64, AtomicU64>>::default();
        let refresh = Family::<RefreshLabels, Counter>::default();
        let refresh_duration =
            Family::<AccountLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        let sink_write = Family::<SinkLabels, Counter>::default();
        let reload = Family::<Labels, Counter>::default();
        let last_success = Family::<AccountLabels, Gauge<f64, AtomicU64>>::default();
        let accounts = Family::<Labels, Gauge>::default();
        let build_info = Family::<Labels, Gauge>::default();
        let claims = Family::<Labels, Counter>::default();
        let adopted = Family::<Labels, Counter>::default();
        let store_errors = Family::<Labels, Counter>::default();
        let store_requests = Family::<Labels, Counter>::default();
        registry.register(
            "tokend_coordination_claims",
            "Refresh claims on the coordination store by result (won, lost, stale)",
            claims.clone(),
        );
        registry.register(
            "tokend_coordination_adopted",
            "Tokens taken from the coordination store without calling the provider",
            adopted.clone(),
        );
        registry.register(
            "tokend_coordination_store_errors",
            "Coordination store requests that failed (unreachable, sealed, denied)",
            store_errors.clone(),
        );
        registry.register(
            "tokend_coordination_store_requests",
            "Requests to the coordination store by op (read, write)",
            store_requests.clone(),
        );
        registry.register(
            "tokend_token_expiry_timestamp_seconds",
            "When the account's held access token expires (Unix time)",
            expiry.clone(),
        );
        registry.register(
            "tokend_refresh",
            "Token refresh attempts by result (success, transient, rejected, malformed, misconfigured)",
            refresh.clone(),
        );
        registry.register(
            "tokend_refresh_duration_seconds",
            "Time to obtain a token (refresh or login), successful or not",
            refresh_duration.clone(),
        );
        registry.register(
            "tokend_sink_write",
            "Sink writes by result (written, unchanged, kept_newer, error)",
            sink_write.clone(),
        );
        registry.register(
            "tokend_config_reload",
            "Config reloads by result (success, error)",
            reload.clone(),
        );
        registry.register(
            "tokend_last_success_timestamp_seconds",
            "When the account last obtained a token (Unix time)",
            last_success.clone(),
        );
        registry.register(
            "tokend_accounts",
            "Accounts by state (fresh, refreshing, failing, expired)",
            accounts.clone(),
        );
        registry.register(
            "tokend_build_info",
            "The running tokend's version (always 1)",
            build_info.clone(),
        );
        // Every known label set exists from the first scrape: a counter that appears at 1
        // shows no `increase()`, so an alert on the first failure would never fire.
        build_info
            .get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())])
            .set(1);
        for result in RELOAD_RESULTS {
            drop(reload.get_or_create(&vec![("result".into(), result.into())]));
        }
        for state in ACCOUNT_STATES {
            drop(accounts.get_or_create(&vec![("state".into(), state.into())]));
        }
        Metrics {
            registry,
            expiry,
            last_success,
            refresh,
            refresh_duration,
            sink_write,
            reload,
            accounts,
            claims,
            adopted,
            store_errors,
            store_requests,
            coordinated: std::sync::atomic::AtomicBool::new(false),
            known: Mutex::default(),
        }
    })
}

fn sink_labels(account: &Arc<str>, sink: &Arc<str>, result: &'static str) -> SinkLabels {
    SinkLabels {
        account: account.clone(),
        sink: sink.clone(),
        result,
    }
}

fn claim_labels(name: &str, result: &str) -> Labels {
    vec![
        ("account".into(), name.into()),
        ("result".into(), result.into()),
    ]
}

/// The `account` label alone, for the coordination families (only with coordination).
fn account_label(name: &str) -> Labels {
    vec![("account".into(), name.into())]
}

fn refresh_labels(account: &Arc<str>, result: &'static str) -> RefreshLabels {
    RefreshLabels {
        account: account.clone(),
        result,
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn account(name: &Arc<str>) -> AccountLabels {
    AccountLabels {
        account: name.clone(),
    }
}

/// The shared copy of `name` (a new one for an account not tracked, which only a series
/// recorded outside `tokend run` would be).
fn shared(known: &Known, name: &str) -> Arc<str> {
    known
        .get_key_value(name)
        .map_or_else(|| Arc::from(name), |(k, _)| k.clone())
}

/// The shared copy of `account`'s sink label `sink`.
fn shared_sink(known: &Known, account: &str, sink: &str) -> Arc<str> {
    known
        .get(account)
        .and_then(|sinks| sinks.iter().find(|s| &***s == sink))
        .map_or_else(|| Arc::from(sink), Arc::clone)
}

impl Metrics {
    /// An account runs with these sinks: every one of its counters exists (at 0) from now
    /// on, and the series of sinks it no longer has are removed. Called when an account
    /// starts and when a reload changes its sinks.
    pub fn track(&self, name: &str, sinks: &[String]) {
        let mut known = self.known.lock().expect("metrics lock");
        let account_name = shared(&known, name);
        let old = known.remove(name).unwrap_or_default();
        for sink in old.iter().filter(|s| !sinks.iter().any(|n| n == &***s)) {
            for result in SINK_RESULTS {
                self.sink_write
                    .remove(&sink_labels(&account_name, sink, result));
            }
        }
        for result in REFRESH_RESULTS {
            drop(
                self.refresh
                    .get_or_create(&refresh_labels(&account_name, result)),
            );
        }
        drop(self.refresh_duration.get_or_create(&account(&account_name)));
        let sinks: Vec<Arc<str>> = sinks
            .iter()
            .map(|s| {
                old.iter()
                    .find(|o| &***o == s)
                    .map_or_else(|| Arc::from(s.as_str()), Arc::clone)
            })
            .collect();
        if self.coordinated.load(std::sync::atomic::Ordering::Relaxed) {
            for result in CLAIM_RESULTS {
                drop(self.claims.get_or_create(&claim_labels(name, result)));
            }
            drop(self.adopted.get_or_create(&account_label(name)));
            drop(self.store_errors.get_or_create(&account_label(name)));
        }
        for sink in &sinks {
            for result in SINK_RESULTS {
                drop(
                    self.sink_write
                        .get_or_create(&sink_labels(&account_name, sink, result)),
                );
            }
        }
        known.insert(account_name, sinks);
    }

    /// The shared name of account `name`.
    fn name(&self, name: &str) -> Arc<str> {
        shared(&self.known.lock().expect("metrics lock"), name)
    }

    /// `[daemon.coordination]` is configured: every account tracked from now on gets the
    /// coordination series (at 0), and so does the store's.
    pub fn coordinated(&self) {
        self.coordinated
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for op in STORE_OPS {
            drop(
                self.store_requests
                    .get_or_create(&vec![("op".into(), op.into())]),
            );
        }
    }

    /// A claim ended as `result` (one of [`CLAIM_RESULTS`]).
    pub fn claim(&self, name: &str, result: &str) {
        self.claims.get_or_create(&claim_labels(name, result)).inc();
    }

    /// A token was taken from the coordination store.
    pub fn adopted(&self, name: &str) {
        self.adopted.get_or_create(&account_label(name)).inc();
    }

    /// A coordination store request for the account failed.
    pub fn store_error(&self, name: &str) {
        self.store_errors.get_or_create(&account_label(name)).inc();
    }

    /// A request to the coordination store was sent.
    pub fn store_request(&self, op: &str) {
        self.store_requests
            .get_or_create(&vec![("op".into(), op.into())])
            .inc();
    }

    /// An attempt to obtain a token ended.
    pub fn refresh(&self, name: &str, result: &'static str, took: Duration) {
        let name = self.name(name);
        self.refresh_duration
            .get_or_create(&account(&name))
            .observe(took.as_secs_f64());
        self.refresh
            .get_or_create(&refresh_labels(&name, result))
            .inc();
    }

    /// The account now holds a token expiring at `at`.
    pub fn expiry(&self, name: &str, at: SystemTime) {
        self.expiry
            .get_or_create(&account(&self.name(name)))
            .set(unix_seconds(at));
    }

    /// The account last obtained a token at `at`.
    pub fn last_success(&self, name: &str, at: SystemTime) {
        self.last_success
            .get_or_create(&account(&self.name(name)))
            .set(unix_seconds(at));
    }

    /// How many accounts are in each of [`ACCOUNT_STATES`] (set at scrape time).
    pub fn accounts(&self, counts: [i64; 4]) {
        for (state, n) in ACCOUNT_STATES.iter().zip(counts) {
            self.accounts
                .get_or_create(&vec![("state".into(), (*state).into())])
                .set(n);
        }
    }

    /// A sink write ended.
    pub fn sink_write(&self, name: &str, sink: &str, result: &'static str) {
        let labels = {
            let known = self.known.lock().expect("metrics lock");
            sink_labels(
                &shared(&known, name),
                &shared_sink(&known, name, sink),
                result,
            )
        };
        self.sink_write.get_or_create(&labels).inc();
    }

    /// A reload ended.
    pub fn reload(&self, result: &str) {
        self.reload
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
    }

    /// An account was removed: its series go away.
    pub fn forget(&self, name: &str) {
        let (name, sinks) = {
            let mut known = self.known.lock().expect("metrics lock");
            let name = shared(&known, name);
            let sinks = known.remove(&name).unwrap_or_default();
            (name, sinks)
        };
        self.expiry.remove(&account(&name));
        self.last_success.remove(&account(&name));
        self.refresh_duration.remove(&account(&name));
        for result in REFRESH_RESULTS {
            self.refresh.remove(&refresh_labels(&name, result));
        }
        for result in CLAIM_RESULTS {
            self.claims.remove(&claim_labels(&name, result));
        }
        self.adopted.remove(&account_label(&name));
        self.store_errors.remove(&account_label(&name));
        for sink in &sinks {
            for result in SINK_RESULTS {
                self.sink_write.remove(&sink_labels(&name, sink, result));
            }
        }
    }

    /// The exposition (OpenMetrics text, which Prometheus scrapes natively).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
