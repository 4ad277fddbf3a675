//! `Proxy`: a loopback TCP proxy in front of one server (OpenBao, the emulator) for one
//! tokend instance, so a test can cut that instance off and heal it again: the partition
//! of issue 14. It also counts the bytes it forwards in each direction, which tells a test
//! whether the instance sent anything at all (e.g. no provider request while cut off).
//!
//! Why a proxy and not network namespaces: it needs no privilege and no veth set-up, each
//! instance gets its own link that the test switches in one call, and the byte counters
//! come for free. What it models is the same: with [`Link::Blackhole`] nothing crosses, in
//! either direction, on old or new connections, and the client's requests time out, as
//! when packets are dropped; [`Link::Reset`] closes every connection and refuses new ones,
//! as when a host answers with resets.
//!
//! The proxy runs on its own thread with a single-threaded Tokio runtime (like the
//! emulator), so a blocking test can drive it. Dropping it closes every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the link between the client and the server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Bytes flow both ways.
    Up,
    /// Nothing flows: connections stay open but silent, new ones are accepted (the kernel
    /// completes the handshake) and never reach the server. Healing resumes them.
    Blackhole,
    /// Every connection is closed; new ones are closed right after they are accepted.
    Reset,
}

/// Bytes and connections seen by a proxy.
#[derive(Debug, Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    accepted: AtomicU64,
}

/// A running proxy (see the module comment).
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    link: watch::Sender<Link>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener).expect("register the proxy listener")
        };
        let (link, watcher) = watch::channel(Link::Up);
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let thread = {
            let counters = Arc::clone(&counters);
            let cancel = cancel.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{addr}"))
                .spawn(move || {
                    runtime.block_on(accept_loop(listener, target, watcher, counters, cancel));
                })
                .expect("spawn the proxy thread")
        };
        Proxy {
            addr,
            target,
            link,
            counters,
            cancel,
            thread: Some(thread),
        }
    }

    /// Starts a proxy in front of the server at `url` (`http://127.0.0.1:PORT…`).
    pub fn for_url(url: &str) -> Proxy {
        Proxy::start(socket_of(url))
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `127.0.0.1:PORT` of the target replaced by this proxy's address.
    pub fn url(&self, url: &str) -> String {
        let target = self.target.to_string();
        assert!(url.contains(&target), "{url} does not name {target}");
        url.replacen(&target, &self.addr.to_string(), 1)
    }

    /// Switches the link (takes effect at once on every connection).
    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    /// [`Link::Blackhole`]: the partition.
    pub fn cut(&self) {
        self.set(Link::Blackhole);
    }

    /// [`Link::Up`]: the partition heals.
    pub fn heal(&self) {
        self.set(Link::Up);
    }

    /// Bytes forwarded from clients to the server so far.
    pub fn bytes_up(&self) -> u64 {
        self.counters.up.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the server to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.counters.down.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (including those held or refused).
    pub fn connections(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `127.0.0.1:PORT` of an `http://127.0.0.1:PORT/…` URL.
pub fn socket_of(url: &str) -> SocketAddr {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    rest.parse()
        .unwrap_or_else(|e| panic!("{url}: not a loopback address with a port: {e}"))
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    link: watch::Receiver<Link>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        let link = link.clone();
        let counters = Arc::clone(&counters);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = forward(client, target, link, counters) => {}
            }
        });
    }
}

/// Waits until the link is up; false when it is (or becomes) [`Link::Reset`], or the
/// proxy is going away.
async fn until_up(link: &mut watch::Receiver<Link>) -> bool {
    loop {
        let now = *link.borrow_and_update();
        match now {
            Link::Up => return true,
            Link::Reset => return false,
            Link::Blackhole => {
                if link.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// One connection: connects to the target once the link is up, then copies bytes both
/// ways while it stays up. Any end closing closes both (HTTP/1.1 clients never half-close).
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut link: watch::Receiver<Link>,
    counters: Arc<Counters>,
) {
    if !until_up(&mut link).await {
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    loop {
        if !until_up(&mut link).await {
            return;
        }
        tokio::select! {
            // Counted before they are passed on, so whoever sees them arrive sees them
            // counted too.
            read = client.read(&mut from_client) => {
                let Ok(n @ 1..) = read else { return };
                counters.up.fetch_add(n as u64, Ordering::SeqCst);
                if server.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
            }
            read = server.read(&mut from_server) => {
                let Ok(n @ 1..) = read else { return };
                counters.down.fetch_add(n as u64, Ordering::SeqCst);
                if client.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
            // A change of the link is looked at before the next read.
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
