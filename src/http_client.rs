//! The one place that builds tokend's HTTP clients (STYLE "One rule, one place"; issue 12
//! finding 1). Providers get theirs from [`HttpClients`] (one per `ca_file`, shared by the
//! accounts), the Vault sink calls [`build`] with its own [`ClientOptions`] (timeout,
//! `tls_server_name` resolver). Every client built here:
//!
//! - **follows no redirect** (`redirect::Policy::none()`). reqwest's default follows up to
//!   ten, and on a 307/308 it re-sends the method, the body and any header it does not know
//!   to be sensitive: a Vault address that answered 307 to a plain-http host elsewhere got
//!   `X-Vault-Token`, the token document and an AppRole `secret_id` sent there, which also
//!   bypassed the "plain http only to loopback" rule (SPEC §4 "Boundaries"). A 3xx is
//!   therefore an answer like any other; callers report it as a configuration problem.
//! - sends `tokend/<version>` as its user agent, bounds the connection phase (at most
//!   [`MAX_CONNECT_TIMEOUT`]) and drops idle pooled connections after [`POOL_IDLE_TIMEOUT`];
//! - trusts the system roots plus the certificates of an optional `ca_file`, read by
//!   [`load_ca_file`] through `config::files::read_ca_file` (the same rule as `check`: a
//!   regular file of at most 1 MiB that only its owner can write), so that a FIFO or
//!   `/dev/zero` named as `ca_file` can neither block nor exhaust memory.
//!
//! The AWS sink's client is the SDK's own (aws-smithy-http-client on hyper-util's legacy
//! client), which has no redirect support at all: a 3xx comes back to the SDK as an
//! unmodelled error. `tests/redirects.rs` proves that for all three clients.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest the TCP (and TLS) connection phase may take, whatever the request timeout.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle pooled connections are closed after this long (a provider refreshed hourly keeps
/// no socket open in between).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What differs between tokend's HTTP clients; everything else is fixed by [`build`].
#[derive(Default)]
pub struct ClientOptions {
    /// Certificates trusted on top of the system roots (from [`load_ca_file`]).
    pub extra_roots: Vec<reqwest::Certificate>,
    /// Bound on each whole request; `None` leaves it to each request.
    pub timeout: Option<Duration>,
    /// The client only ever speaks plain http (a loopback address): load no TLS roots, so
    /// that a host without system roots does not fail (reqwest issue #2988).
    pub plain_http_only: bool,
    /// A DNS resolver replacing the system one (the Vault sink's `tls_server_name`).
    pub resolver: Option<Arc<dyn reqwest::dns::Resolve>>,
}

/// Builds an HTTP client with tokend's fixed settings (no redirects, user agent, connect
/// and idle timeouts) and `options`.
pub fn build(options: ClientOptions) -> Result<reqwest::Client, String> {
    let connect_timeout = options
        .timeout
        .map_or(MAX_CONNECT_TIMEOUT, |t| t.min(MAX_CONNECT_TIMEOUT));
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);
    if let Some(timeout) = options.timeout {
        builder = builder.timeout(timeout);
    }
    if options.plain_http_only {
        builder = builder.tls_certs_only(Vec::new());
    } else if !options.extra_roots.is_empty() {
        builder = builder.tls_certs_merge(options.extra_roots);
    }
    if let Some(resolver) = options.resolver {
        builder = builder.dns_resolver(resolver);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the http client: {e}"))
}

/// Reads the PEM bundle at `path` (symlinks are followed: the file is the operator's,
/// named in the config). Refuses anything but a regular file, and files larger than
/// [`crate::config::files::CA_FILE_CAP`]; at most `CA_FILE_CAP + 1` bytes are ever read.
pub fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    // One reading rule for `check` and every client: regular file, size cap, trust rule.
    let pem = crate::config::files::read_ca_file(path)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a pem certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no pem certificate", path.display()));
    }
    Ok(certs)
}

/// The providers' clients, one per distinct `ca_file`, so that connections are pooled
/// across the accounts of one provider.
#[derive(Debug, Default)]
pub struct HttpClients {
    cache: Mutex<HashMap<Option<PathBuf>, reqwest::Client>>,
}

impl HttpClients {
    /// The client trusting the system roots plus `ca_file` (built on first use).
    pub fn get(&self, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
        let key = ca_file.map(Path::to_path_buf);
        let mut cache = self
            .cache
            .lock()
            .expect("client cache lock is never poisoned");
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let extra_roots = match ca_file {
            Some(path) => load_ca_file(path).map_err(|e| format!("ca_file: {e}"))?,
            None => Vec::new(),
        };
        let client = build(ClientOptions {
            extra_roots,
            ..ClientOptions::default()
        })?;
        cache.insert(key, client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_refuses_fifos_devices_directories_and_oversized_files() {
        // A FIFO with no writer, /dev/zero and a directory must fail at once, not block or
        // read until memory runs out; a file one byte over the cap is refused by size.
        let dir = std::env::temp_dir().join(format!("tokend-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = dir.join("big.pem");
        std::fs::write(
            &big,
            vec![b'a'; crate::config::files::CA_FILE_CAP as usize + 1],
        )
        .unwrap();
        let cases: [(&Path, &str); 4] = [
            (&fifo, "expected a regular file"),
            (Path::new("/dev/zero"), "expected a regular file"),
            (&dir, "expected a regular file"),
            (&big, "is larger than 1048576 bytes"),
        ];
        for (path, expected) in cases {
            let err = load_ca_file(path).expect_err("refused");
            assert!(
                err.contains(expected),
                "{}: expected {expected:?}, got {err:?}",
                path.display()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
