//! The `[daemon] listen` endpoint (axum): `/metrics` (Prometheus/OpenMetrics text),
//! `/healthz` (the process is alive) and `/readyz` (200 only when every account holds an
//! unexpired token, else 503 listing the accounts that do not). Bind it to loopback unless
//! a scraper elsewhere needs it; no response ever contains a token. Started by the daemon.
//!
//! # Holding up under a connection flood (issue 12 finding 6)
//!
//! Anyone who can reach the port can open connections, and every open connection is a file
//! descriptor of the daemon. `axum::serve` accepted without limit and kept idle connections
//! forever: 1,100 idle connections from an unprivileged user used up the daemon's
//! descriptors, every state save then failed with EMFILE and `/healthz` hung. So this
//! module runs its own accept loop, serving each connection with hyper:
//!
//! - at most [`MAX_CONNECTIONS`] are served at once. A connection beyond that is accepted
//!   and closed at once rather than left waiting: waiting ones would fill the kernel's
//!   accept queue, and a health probe would queue behind hundreds of idle sockets, while a
//!   closed one costs a descriptor for a moment and leaves the queue empty, so the probe is
//!   accepted at once and served as soon as a slot is free;
//! - a slot is freed within [`HEADER_READ_TIMEOUT`] by a client that sends no complete
//!   request (hyper's header-read timeout, which also bounds the idle wait between two
//!   keep-alive requests), and within [`MAX_CONNECTION_TIME`] by any client (one that
//!   stops reading its response).
//!
//! The other defence, `RLIMIT_NOFILE` raised to its hard limit at start, is in
//! [`crate::process`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::board::Board;

/// Most connections served at once (a scraper or two and health probes need a handful).
pub const MAX_CONNECTIONS: usize = 64;

/// A client must send a request's headers within this long after connecting or after its
/// previous response; otherwise the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// No connection lives longer than this, whatever the client does.
pub const MAX_CONNECTION_TIME: Duration = Duration::from_secs(30);

/// How long open connections may finish their response once the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Binds `addr` now (so a busy port fails the start) and serves until `stop`.
pub async fn serve(
    addr: SocketAddr,
    board: Arc<Board>,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(board);
    // The bound address, not the configured one: with port 0 (tests, ad-hoc runs) this
    // line is how a client learns the port.
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(accept_loop(listener, app, stop)))
}

/// Accepts connections until `stop`, then waits for the open ones (at most
/// [`SHUTDOWN_GRACE`]).
async fn accept_loop(listener: TcpListener, app: Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors and the like: back off briefly instead of spinning.
                tracing::debug!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(
                limit = MAX_CONNECTIONS,
                "metrics endpoint: too many connections, closing a new one"
            );
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            http.clone(),
            stream,
            app.clone(),
            stop.clone(),
            slot,
        ));
    }
    // Every slot back: every connection task has ended.
    let all = u32::try_from(MAX_CONNECTIONS).expect("the connection cap fits in u32");
    let _ = slots.acquire_many(all).await;
}

/// Serves one connection until the client is done, [`MAX_CONNECTION_TIME`] has passed, or
/// `stop` (then it finishes the response in progress, within [`SHUTDOWN_GRACE`]).
async fn connection(
    http: http1::Builder,
    stream: TcpStream,
    app: Router,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "metrics endpoint: connection closed");
            }
            return;
        }
        () = tokio::time::sleep(MAX_CONNECTION_TIME) => return,
        () = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
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
