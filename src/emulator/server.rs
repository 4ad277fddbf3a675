//! The HTTP side: the axum router that puts each API under its prefix, and the accept loop
//! that serves connections with hyper directly. axum's own `serve` can't close a
//! connection without answering, which [`Fault::Drop`](super::Fault::Drop) needs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use axum::middleware::from_fn_with_state;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Provider;
use super::api;
use super::fault::{DropConnection, inject};
use super::state::{Api, Shared};

/// Every provider's routes. Token endpoints sit behind the fault middleware; `whoami` does
/// not, so tests can probe tokens while faults are armed.
pub(crate) fn router(shared: &Arc<Shared>) -> Router {
    Provider::ALL
        .into_iter()
        .map(|provider| {
            let state = Api {
                shared: Arc::clone(shared),
                provider,
            };
            api::token_routes(provider)
                .route_layer(from_fn_with_state(state.clone(), inject))
                .route(
                    &format!("/{}/whoami", provider.name()),
                    axum::routing::get(api::whoami),
                )
                .with_state(state)
        })
        .fold(Router::new(), Router::merge)
}

/// Accepts connections until `cancel` fires.
pub(crate) async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::debug!(%error, "emulator accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = DropAware(TowerToHyperService::new(router.clone()));
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "emulator connection closed");
            }
        });
    }
}

/// The error that makes hyper drop a connection without answering.
#[derive(Debug)]
struct DroppedOnPurpose;

impl std::fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DroppedOnPurpose {}

/// Runs the router; a response marked [`DropConnection`] becomes an error instead.
#[derive(Clone)]
struct DropAware(TowerToHyperService<Router>);

impl hyper::service::Service<Request<Incoming>> for DropAware {
    type Response = Response<Body>;
    type Error = DroppedOnPurpose;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, DroppedOnPurpose>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let response = answer
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            if response.extensions().get::<DropConnection>().is_some() {
                Err(DroppedOnPurpose)
            } else {
                Ok(response)
            }
        })
    }
}
