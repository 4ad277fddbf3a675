//! The `[daemon] listen` endpoint (axum): `/metrics` (Prometheus/OpenMetrics text),
//! `/healthz` (the process is alive) and `/readyz` (200 only when every account holds an
//! unexpired token, else 503 listing the accounts that do not). Bind it to loopback unless
//! a scraper elsewhere needs it; no response ever contains a token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::board::Board;

/// Binds `addr` now (so a busy port fails the start) and serves until `stop`.
pub async fn serve(
    addr: SocketAddr,
    board: Arc<Board>,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(board);
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    }))
}

async fn metrics(State(board): State<Arc<Board>>) -> impl IntoResponse {
    let m = super::metrics::metrics();
    // Account states are computed when scraped, like /readyz: expiry is a matter of time.
    m.accounts(board.states(std::time::SystemTime::now()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn readyz(State(board): State<Arc<Board>>) -> impl IntoResponse {
    let not_ready = board.not_ready(std::time::SystemTime::now());
    if not_ready.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: no unexpired token for {}\n",
                not_ready.join(", ")
            ),
        )
    }
}
