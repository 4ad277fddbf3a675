//! A hostile token endpoint for `tests/hostile.rs`: a loopback axum server that answers
//! `ANY /case/{name}` with a scripted answer (status, headers including `Set-Cookie`,
//! body) and counts the requests per case. The provider emulator plays by the rules; this
//! server sends what issue 11 found tokend could not survive or should not accept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers, sent as given (repeat a name for several `Set-Cookie`s).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// 200 with a JSON body.
    pub fn json(body: serde_json::Value) -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    /// 200 with `{}` and one `Set-Cookie` header.
    pub fn cookie(set_cookie: &str) -> Answer {
        Answer {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("set-cookie".into(), set_cookie.into()),
            ],
            body: "{}".into(),
        }
    }

    /// A status with an empty body.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: vec![],
            body: String::new(),
        }
    }
}

#[derive(Default)]
struct Shared {
    answers: HashMap<String, Answer>,
    hits: Mutex<HashMap<String, u64>>,
}

/// The running server; dropping it stops it.
pub struct HostileServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HostileServer {
    /// Serves `answers` (case name → answer) on 127.0.0.1 at a free port.
    pub fn start(answers: impl IntoIterator<Item = (String, Answer)>) -> HostileServer {
        let shared = Arc::new(Shared {
            answers: answers.into_iter().collect(),
            hits: Mutex::default(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("tokio listener")
        };
        let router = Router::new()
            .route("/case/{name}", axum::routing::any(answer))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("hostile server");
            });
        });
        HostileServer {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The URL of a case.
    pub fn url(&self, case: &str) -> String {
        format!("http://{}/case/{case}", self.addr)
    }

    /// Requests made to a case so far.
    pub fn hits(&self, case: &str) -> u64 {
        let hits = self.shared.hits.lock().expect("hits lock");
        hits.get(case).copied().unwrap_or(0)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    *shared
        .hits
        .lock()
        .expect("hits lock")
        .entry(name.clone())
        .or_default() += 1;
    let Some(a) = shared.answers.get(&name) else {
        return (StatusCode::NOT_FOUND, "no such case").into_response();
    };
    let mut response = a.body.clone().into_response();
    *response.status_mut() = StatusCode::from_u16(a.status).expect("a valid status");
    response
        .headers_mut()
        .remove(axum::http::header::CONTENT_TYPE);
    for (name, value) in &a.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
    }
    response
}
