//! Configuration (SPEC §3), the bottom layer: what `provider`, `sink` and `crate::settings`
//! share. [`raw`] is the TOML as written (serde only, unknown keys rejected), [`validate`]
//! checks durations, `[daemon]`, timing, retry and notify, [`error`] locates every problem
//! as `file:line:column: key.path: message` (the [`error::Validator`] the sinks and the
//! provider checks report through), [`secret`] handles secret values, [`files`] reads the
//! config, include, secret and CA files (regular, bounded, trusted owner) and [`include`]
//! expands include globs within bounds. Nothing here touches the network, and nothing here
//! imports `provider` or `sink`: the whole config (accounts with providers and sinks) is
//! assembled a layer up, in `crate::settings`.

pub mod error;
pub mod files;
pub mod include;
pub mod raw;
pub mod secret;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};

use crate::schedule::{Retry, Timing};

/// Where `tokend` looks when neither `-c` nor `$TOKEND_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/tokend/tokend.toml";

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
    /// Which state saves are fsynced (`crate::state::save_fsync`).
    pub durability: crate::state::Durability,
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
