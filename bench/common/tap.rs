//! A recording HTTP/1.1 proxy between tokend and the emulator. Every account's URLs carry
//! `?a=NAME` (the emulator routes on the path and ignores the query), so the tap knows
//! which account sent each request, when it arrived, and how it was answered: OK, rejected
//! by the API, or a fault (5xx, 429, a garbage or GraphQL-error body, a connection the
//! server dropped, or one tokend gave up on after its timeout). That is what the lateness
//! figures and the fault harness's "was the provider reachable" rule are computed from.
//!
//! It relays bytes unchanged on its own thread (single-threaded Tokio runtime, like the
//! emulator), parsing both directions only to find message boundaries. An optional hook
//! runs when a request is complete but before it is forwarded: the fleet benchmark reads
//! the account's state file there, whose `next_refresh_ms` is the due time that made
//! tokend send it.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not answered yet.
    Pending,
    /// 200 with a JSON body without GraphQL `errors`.
    Ok,
    /// Refused by the API (a 4xx other than 408/429).
    Rejected(u16),
    /// An injected fault or a transient failure: 5xx, 408, 429, a non-JSON 200 body or a
    /// GraphQL `errors` array.
    Fault(u16),
    /// The server closed the connection without answering (injected `Drop`).
    Dropped,
    /// tokend closed the connection before an answer came (its timeout, on `Delay`).
    GaveUp,
}

impl Outcome {
    /// Whether the provider answered this request usefully (OK or a deliberate refusal,
    /// which makes tokend log in at once).
    pub fn reachable(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Rejected(_))
    }
}

/// One request tokend sent.
#[derive(Debug, Clone)]
pub struct Record {
    /// The `a` query parameter.
    pub account: String,
    /// Request path (without the query).
    pub path: String,
    /// When the complete request had arrived at the tap.
    pub arrived: Instant,
    /// Same, wall clock.
    pub arrived_wall: SystemTime,
    /// What the hook returned (the fleet: `next_refresh_ms` of the state file).
    pub due_ms: Option<u64>,
    /// How it was answered.
    pub outcome: Outcome,
    /// When the answer (or the close) came.
    pub answered: Option<Instant>,
}

/// The hook run on each complete request before it is forwarded.
pub type Hook = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// A running tap; dropping it stops it.
pub struct Tap {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Tap {
    /// Listens on a free loopback port and relays to `upstream`.
    pub fn start(upstream: SocketAddr, hook: Option<Hook>) -> Tap {
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tap listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("tap addr");
        let records = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let (r, c) = (records.clone(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name("bench-tap".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tap runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tap listener");
                    loop {
                        let accepted = tokio::select! {
                            () = c.cancelled() => return,
                            a = listener.accept() => a,
                        };
                        let Ok((client, _)) = accepted else {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        };
                        let (r, h, c) = (r.clone(), hook.clone(), c.clone());
                        tokio::spawn(async move {
                            tokio::select! {
                                () = c.cancelled() => {}
                                () = relay(client, upstream, r, h) => {}
                            }
                        });
                    }
                });
            })
            .expect("spawn tap thread");
        Tap {
            addr,
            records,
            cancel,
            thread: Some(thread),
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests recorded so far.
    pub fn len(&self) -> usize {
        self.records.lock().expect("tap records").len()
    }

    /// A copy of the records from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Record> {
        let r = self.records.lock().expect("tap records");
        r.get(from..).map(<[Record]>::to_vec).unwrap_or_default()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    hook: Option<Hook>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut requests = Parser::default();
    let mut responses = Parser::default();
    let mut pending: VecDeque<usize> = VecDeque::new();
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut sbuf = vec![0u8; 16 * 1024];
    let finish = |pending: &mut VecDeque<usize>, outcome: Outcome| {
        let now = Instant::now();
        let mut r = records.lock().expect("tap records");
        for i in pending.drain(..) {
            r[i].outcome = outcome;
            r[i].answered = Some(now);
        }
    };
    loop {
        tokio::select! {
            read = cr.read(&mut cbuf) => {
                let n = match read { Ok(0) | Err(_) => { finish(&mut pending, Outcome::GaveUp); return; } Ok(n) => n };
                let now = Instant::now();
                let wall = SystemTime::now();
                for (head, _) in requests.feed(&cbuf[..n]) {
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                    let account = query.split('&').find_map(|kv| kv.strip_prefix("a=")).unwrap_or("").to_string();
                    let due_ms = hook.as_ref().and_then(|h| h(&account));
                    let mut r = records.lock().expect("tap records");
                    pending.push_back(r.len());
                    r.push(Record { account, path: path.to_string(), arrived: now, arrived_wall: wall, due_ms, outcome: Outcome::Pending, answered: None });
                }
                if sw.write_all(&cbuf[..n]).await.is_err() { finish(&mut pending, Outcome::Dropped); return; }
            }
            read = sr.read(&mut sbuf) => {
                let n = match read { Ok(0) | Err(_) => { finish(&mut pending, Outcome::Dropped); return; } Ok(n) => n };
                for (head, body) in responses.feed(&sbuf[..n]) {
                    let outcome = classify(&head, &body);
                    if let Some(i) = pending.pop_front() {
                        let mut r = records.lock().expect("tap records");
                        r[i].outcome = outcome;
                        r[i].answered = Some(Instant::now());
                    }
                }
                if cw.write_all(&sbuf[..n]).await.is_err() { finish(&mut pending, Outcome::GaveUp); return; }
            }
        }
    }
}

fn classify(head: &str, body: &[u8]) -> Outcome {
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match status {
        200 => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) if v.get("errors").is_some_and(|e| !e.is_null()) => Outcome::Fault(200),
            Ok(_) => Outcome::Ok,
            Err(_) => Outcome::Fault(200),
        },
        408 | 429 => Outcome::Fault(status),
        400..=499 => Outcome::Rejected(status),
        _ => Outcome::Fault(status),
    }
}

/// Splits a byte stream into HTTP/1.1 messages (Content-Length or chunked bodies).
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    /// Adds bytes; returns every message completed by them as (head, body).
    fn feed(&mut self, data: &[u8]) -> Vec<(String, Vec<u8>)> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(end) = find(&self.buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let lower = head.to_ascii_lowercase();
            let body_start = end + 4;
            let header = |name: &str| {
                lower
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            let total = if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
                match find(&self.buf[body_start..], b"0\r\n\r\n") {
                    Some(i) => body_start + i + 5,
                    None => break,
                }
            } else {
                let len: usize = header("content-length:")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if self.buf.len() < body_start + len {
                    break;
                }
                body_start + len
            };
            let body = self.buf[body_start..total].to_vec();
            self.buf.drain(..total);
            out.push((head, body));
        }
        out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
