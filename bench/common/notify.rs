//! A test `NOTIFY_SOCKET`: a Unix datagram socket the benchmark binds, read continuously by
//! a thread (as systemd does: an unread socket fills up and blocks tokend's next
//! `sd_notify`), which keeps every message (`READY=1`, `STATUS=…`, `RELOADING=1`) with
//! the time it arrived.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bound socket; removed on drop.
pub struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    /// Binds a fresh socket at `path` (under 108 bytes) and starts reading it.
    pub fn bind(path: &Path) -> NotifySocket {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).expect("bind NOTIFY_SOCKET");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        std::thread::Builder::new()
            .name("bench-notify".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                // Ends when the socket file is removed and the process exits.
                while let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m.lock()
                        .expect("notify messages")
                        .push((Instant::now(), text));
                }
            })
            .expect("spawn notify reader");
        NotifySocket {
            path: path.to_path_buf(),
            messages,
        }
    }

    /// The path to pass as `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Messages received so far.
    pub fn count(&self) -> usize {
        self.messages.lock().expect("notify messages").len()
    }

    /// Waits (at most `timeout`) for a message at index `from` or later holding the line
    /// `line`; returns when it arrived.
    pub fn wait_for(&self, line: &str, from: usize, timeout: Duration) -> Option<Instant> {
        let start = Instant::now();
        loop {
            {
                let m = self.messages.lock().expect("notify messages");
                if let Some((at, _)) = m
                    .get(from..)
                    .unwrap_or_default()
                    .iter()
                    .find(|(_, text)| text.lines().any(|l| l == line))
                {
                    return Some(*at);
                }
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
