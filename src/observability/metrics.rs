//! Prometheus metrics (SPEC §4 "Metrics"), recorded by the account work and the reload
//! path and served by [`super::http`] at `/metrics`. One process-wide registry, so the
//! recording call sites need no plumbing. Labels never hold a secret: account names,
//! sink labels (paths, mounts, secret ids) and result words only.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The metric families.
pub struct Metrics {
    registry: Registry,
    expiry: Family<Labels, Gauge<f64, AtomicU64>>,
    refresh: Family<Labels, Counter>,
    refresh_duration: Family<Labels, Histogram, fn() -> Histogram>,
    sink_write: Family<Labels, Counter>,
    reload: Family<Labels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let expiry = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let refresh = Family::<Labels, Counter>::default();
        let refresh_duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let sink_write = Family::<Labels, Counter>::default();
        let reload = Family::<Labels, Counter>::default();
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
        Metrics {
            registry,
            expiry,
            refresh,
            refresh_duration,
            sink_write,
            reload,
        }
    })
}

fn account(name: &str) -> Labels {
    vec![("account".into(), name.into())]
}

impl Metrics {
    /// An attempt to obtain a token ended.
    pub fn refresh(&self, name: &str, result: &str, took: Duration) {
        let mut labels = account(name);
        self.refresh_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        labels.push(("result".into(), result.into()));
        self.refresh.get_or_create(&labels).inc();
    }

    /// The account now holds a token expiring at `at`.
    pub fn expiry(&self, name: &str, at: SystemTime) {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.expiry.get_or_create(&account(name)).set(secs);
    }

    /// A sink write ended.
    pub fn sink_write(&self, name: &str, sink: &str, result: &str) {
        let mut labels = account(name);
        labels.push(("sink".into(), sink.into()));
        labels.push(("result".into(), result.into()));
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
        self.expiry.remove(&account(name));
    }

    /// The exposition (OpenMetrics text, which Prometheus scrapes natively).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
