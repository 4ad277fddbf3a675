//! Configuration (SPEC §3), loaded in two steps: [`raw`] is the TOML as written (serde only,
//! unknown keys rejected), [`validate`] turns it into a [`Config`] and reports *every*
//! problem as `file:line:column: key.path: message`. Neither step touches the network;
//! `tokend check` is validation plus printing. [`secret`] handles secret values and
//! [`error`] the located errors; [`files`] reads the config, include, secret and CA files
//! (regular, bounded, trusted owner), [`include`] expands include globs within bounds and
//! [`checks`] holds the rules `check` once missed (issue 12).

pub mod checks;
pub mod diff;
pub mod error;
pub mod files;
pub mod include;
pub mod raw;
pub mod secret;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};
pub use validate::{load, load_structure};

use crate::provider::http::Provider;
use crate::schedule::{Retry, Timing};
use crate::sink::{Sink, SinkConfig};

/// Where `tokend` looks when neither `-c` nor `$TOKEND_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/tokend/tokend.toml";

/// A validated config.
#[derive(Debug)]
pub struct Config {
    /// The main file.
    pub path: PathBuf,
    /// Every file read (main file first, then includes, then secret files), for the
    /// reload watcher.
    pub files: Vec<PathBuf>,
    /// Directories the include globs point into (watched for new files).
    pub include_dirs: Vec<PathBuf>,
    /// `[daemon]`.
    pub daemon: Daemon,
    /// The accounts, in file order.
    pub accounts: Vec<Account>,
    /// Non-fatal findings (literal secrets in a group/world-readable file).
    pub warnings: Vec<String>,
}

/// `[daemon]`, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Daemon {
    /// State directory.
    pub state_dir: PathBuf,
    /// Metrics/health listener.
    pub listen: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Bound on HTTP requests in flight.
    pub max_concurrent_requests: usize,
    /// Refresh timing defaults.
    pub timing: Timing,
    /// Backoff.
    pub retry: Retry,
}

/// `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// journald when stderr is the journal, else text.
    Auto,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
}

/// A validated account.
#[derive(Debug)]
pub struct Account {
    /// Unique name.
    pub name: String,
    /// The provider, ready to call.
    pub provider: Provider,
    /// Refresh timing.
    pub timing: Timing,
    /// Backoff.
    pub retry: Retry,
    /// Extra refresh times (cron, UTC).
    pub schedule: Option<String>,
    /// Extra CA file for the provider's TLS.
    pub ca_file: Option<PathBuf>,
    /// The sinks as written (for reload diffs).
    pub sink_configs: Vec<SinkConfig>,
    /// The built sinks.
    pub sinks: Vec<Arc<Sink>>,
    /// Notifications after the sinks were written.
    pub notify: Vec<Notify>,
    /// Hash of provider settings and credentials: state written under another fingerprint
    /// is discarded (SPEC §4 "State").
    pub fingerprint: crate::state::Fingerprint,
}

/// A validated `[[account.notify]]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Notify {
    /// Run a command (argv, no shell).
    Command {
        /// argv.
        argv: Vec<String>,
        /// Time limit.
        timeout: Duration,
    },
    /// Send a signal to the pid in a file.
    Signal {
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// The pid file.
        pid_file: PathBuf,
    },
}

/// The accounts of a config given as text (written to a temporary file, since includes and
/// errors are relative to one), for unit tests.
#[cfg(test)]
pub(crate) fn load_str_for_tests(text: &str) -> Vec<Account> {
    let dir = std::env::temp_dir().join(format!(
        "tokend-config-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();
    cfg.accounts
}
