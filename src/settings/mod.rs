//! The whole configuration, assembled: [`load()`] reads the main file and its includes
//! ([`load`](mod@load)), validates every account ([`account`]: provider from
//! `crate::provider`, sinks from `crate::sink`) and runs the cross-account [`checks`];
//! [`diff`] turns two loaded configs into a reload plan. This module sits above `config`
//! (raw tables, located errors, secrets, durations), `provider` and `sink`, which never
//! import it: that keeps each of them usable on its own and the imports one-way.
//! Called by `crate::startup` (every command) and the daemon's reload.

pub mod account;
pub mod checks;
pub mod diff;
pub mod fingerprint;
pub mod load;
pub mod raw;

use std::path::PathBuf;

pub use load::{load, load_structure};

use crate::config::{Daemon, Notify};
use crate::provider::http::Provider;
use crate::schedule::{Retry, Timing};
use crate::sink::ConfiguredSink;

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
    /// `[daemon.coordination]`: several instances share the accounts (docs/HA.md).
    pub coordination: Option<std::sync::Arc<crate::coordination::Coordinator>>,
    /// The accounts, in file order.
    pub accounts: Vec<Account>,
    /// Non-fatal findings (literal secrets in a group/world-readable file).
    pub warnings: Vec<String>,
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
    pub schedule: Option<crate::schedule::Schedule>,
    /// Extra CA file for the provider's TLS.
    pub ca_file: Option<PathBuf>,
    /// The sinks, each config with the sink built from it.
    pub sinks: Vec<ConfiguredSink>,
    /// Notifications after the sinks were written.
    pub notify: Vec<Notify>,
    /// Hash of provider settings and credentials: state written under another fingerprint
    /// is discarded (SPEC §4 "State").
    pub fingerprint: crate::state::Fingerprint,
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
