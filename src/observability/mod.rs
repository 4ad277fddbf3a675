//! Logging, Prometheus metrics and the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`). Every log line about an
//! account carries an `account` field (journald: `ACCOUNT=`).

pub mod http;
pub mod logging;
pub mod metrics;
