//! A loopback HTTP proxy that forwards every request to a real server and, before
//! forwarding a request a test picked, runs the test's action: another writer that gets in
//! between a sink's read and its write, at exactly that moment, with no hook in tokend
//! (`tests/vault.rs`, `tests/aws.rs`). The sink is pointed at [`Interpose::url`] instead of
//! the server. Runs on the test's own runtime; dropping it stops it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

/// Which requests the action runs before: method, path and headers.
type Matcher = dyn Fn(&Method, &str, &HeaderMap) -> bool + Send + Sync;
/// The action, given how many matching requests came before this one.
type Action = dyn Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

struct Shared {
    upstream: String,
    client: reqwest::Client,
    matches: Box<Matcher>,
    action: Box<Action>,
    matched: AtomicUsize,
}

/// The running proxy.
pub struct Interpose {
    url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Interpose {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`); before forwarding each request for
    /// which `matches` holds, awaits `action(n)`, `n` counting those requests from 0.
    pub async fn start<M, A, F>(upstream: &str, matches: M, action: A) -> Interpose
    where
        M: Fn(&Method, &str, &HeaderMap) -> bool + Send + Sync + 'static,
        A: Fn(usize) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a reqwest client"),
            matches: Box::new(matches),
            action: Box::new(move |n| Box::pin(action(n))),
            matched: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let router = Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("interpose proxy");
        });
        Interpose { url, shared, task }
    }

    /// `http://127.0.0.1:PORT`, to point a sink at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests matched so far (the action ran before each).
    pub fn matched(&self) -> usize {
        self.shared.matched.load(Ordering::SeqCst)
    }
}

impl Drop for Interpose {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("body: {e}")).into_response(),
    };
    let path = parts.uri.path();
    if (shared.matches)(&parts.method, path, &parts.headers) {
        let n = shared.matched.fetch_add(1, Ordering::SeqCst);
        (shared.action)(n).await;
    }
    let target = format!(
        "{}{}",
        shared.upstream,
        parts.uri.path_and_query().map_or(path, |p| p.as_str())
    );
    let mut headers = parts.headers.clone();
    // reqwest sets these for the upstream connection.
    headers.remove(axum::http::header::HOST);
    headers.remove(axum::http::header::CONTENT_LENGTH);
    let answer = match shared
        .client
        .request(parts.method.clone(), target)
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    headers.remove(axum::http::header::CONTENT_LENGTH);
    headers.remove(axum::http::header::TRANSFER_ENCODING);
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
