//! Launcher for the real OAuth2 authorization server the `oauth2` provider's tests run
//! against: django-oauth-toolkit (DOT) served by waitress, both installed into
//! `.tools/venv` by `scripts/install-test-deps`. `tests/oauth_server/serve.py` is its
//! configuration; `docs/TESTING-OAUTH2.md` records how it answers, errors included.
//!
//! Each [`OAuthServer`] is a fresh process with its own SQLite DB, one user and two
//! confidential clients, because a DOT client allows exactly one grant (plus refresh):
//! [`OAuthServer::client_id`] for client_credentials and
//! [`OAuthServer::password_client_id`] for the password grant. Refresh tokens rotate and
//! a spent one is rejected at once. Dropping the server kills it.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestDir, tool};

/// The client_credentials client (HTTP Basic or body authentication).
const CLIENT_ID: &str = "tokend-service";
const CLIENT_SECRET: &str = "tokend-service-secret";
/// The password-grant client; its tokens come with refresh tokens.
const PASSWORD_CLIENT_ID: &str = "tokend-app";
const PASSWORD_CLIENT_SECRET: &str = "tokend-app-secret";
const USERNAME: &str = "alice";
const PASSWORD: &str = "alice-password";

/// Startup takes about 0.3 s (measured on a loaded 2-core machine); leave room for a CI
/// that is compiling and running other servers at the same time.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How the server is configured; [`OAuthServer::start`] sets only the access lifetime.
#[derive(Clone, Debug)]
pub struct OAuthServerOptions {
    /// `expires_in` of every access token, in seconds.
    pub access_lifetime_secs: u64,
    /// Replaying a spent refresh token also revokes the tokens rotated from it
    /// (RFC 9700 §4.14.2).
    pub reuse_protection: bool,
}

/// A running django-oauth-toolkit server on 127.0.0.1; killed on drop.
pub struct OAuthServer {
    child: Child,
    port: u16,
    dir: TestDir,
}

impl OAuthServer {
    /// Starts a server whose access tokens live `access_lifetime_secs` seconds, and
    /// returns once it accepts connections. Panics with the server's log if it cannot
    /// start: a missing server fails the test, it never skips it.
    pub fn start(access_lifetime_secs: u64) -> OAuthServer {
        OAuthServer::start_with(OAuthServerOptions {
            access_lifetime_secs,
            reuse_protection: false,
        })
    }

    /// Starts a server configured by `options`; see [`OAuthServer::start`].
    pub fn start_with(options: OAuthServerOptions) -> OAuthServer {
        let dir = TestDir::new("oauth-server");
        let serve = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth_server/serve.py");
        let log = File::create(dir.join("server.log")).expect("create server.log");
        let mut cmd = Command::new(tool("python"));
        cmd.arg(&serve)
            .arg("--data-dir")
            .arg(dir.path())
            // Port 0: the server binds a free port and writes it to DATA_DIR/port, so
            // no other process can take the port between picking and binding it.
            .args(["--port", "0"])
            .args([
                "--access-lifetime",
                &options.access_lifetime_secs.to_string(),
            ])
            .args(["--user", &format!("{USERNAME}:{PASSWORD}")])
            .args([
                "--client",
                &format!("{CLIENT_ID}:{CLIENT_SECRET}:client-credentials"),
            ])
            .args([
                "--client",
                &format!("{PASSWORD_CLIENT_ID}:{PASSWORD_CLIENT_SECRET}:password"),
            ])
            // Keep __pycache__ out of the source tree; flush log lines as written.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        if options.reuse_protection {
            cmd.arg("--reuse-protection");
        }
        let child = cmd.spawn().expect("spawn tests/oauth_server/serve.py");
        let mut server = OAuthServer {
            child,
            port: 0,
            dir,
        };
        server.port = server.await_port();
        server
    }

    /// Polls for the port file serve.py writes once its socket listens, failing fast
    /// with the log if the process exits first.
    fn await_port(&mut self) -> u16 {
        let port_file = self.dir.join("port");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                return text.trim().parse().expect("port file holds a port number");
            }
            if let Some(status) = self.child.try_wait().expect("poll oauth server") {
                panic!(
                    "oauth server exited with {status} before listening; log:\n{}",
                    self.log()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "oauth server not listening after {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The token endpoint (RFC 6749 §3.2), e.g. `http://127.0.0.1:PORT/o/token/`.
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/o/token/", self.port)
    }

    /// The introspection endpoint (RFC 7662); authenticate with either client's
    /// credentials to ask whether an access token is still active.
    pub fn introspect_url(&self) -> String {
        format!("http://127.0.0.1:{}/o/introspect/", self.port)
    }

    /// The revocation endpoint (RFC 7009).
    pub fn revoke_url(&self) -> String {
        format!("http://127.0.0.1:{}/o/revoke_token/", self.port)
    }

    /// Id of the confidential client allowed the client_credentials grant.
    pub fn client_id(&self) -> &'static str {
        CLIENT_ID
    }

    /// Secret of [`OAuthServer::client_id`].
    pub fn client_secret(&self) -> &'static str {
        CLIENT_SECRET
    }

    /// Id of the confidential client allowed the password grant (and refresh_token).
    pub fn password_client_id(&self) -> &'static str {
        PASSWORD_CLIENT_ID
    }

    /// Secret of [`OAuthServer::password_client_id`].
    pub fn password_client_secret(&self) -> &'static str {
        PASSWORD_CLIENT_SECRET
    }

    /// The resource owner for the password grant.
    pub fn username(&self) -> &'static str {
        USERNAME
    }

    /// Password of [`OAuthServer::username`].
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// What the server has logged so far (startup line, rejected requests, warnings).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // port 0: startup failed and its panic message already holds the log.
        if std::thread::panicking() && self.port != 0 {
            eprintln!("--- oauth server log ---\n{}", self.log());
        }
    }
}
