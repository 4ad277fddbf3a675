//! What every command does first, shared by the command line (`crate::cli`), `tokend run`
//! (`crate::daemon`) and `tokend demo`: load the config (any error is an exit-2
//! [`UsageError`] or located `ConfigErrors`) and build the async runtime.

use anyhow::Context;

use crate::config;
use crate::settings::{self, Config};

/// An error that exits with status 2 (usage or configuration).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Loads the config; errors become exit-2 errors listing every problem.
pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    load_with(path, settings::load)
}

/// [`load`] without reading any secret (`settings::load_structure`): for `status` and
/// `token`, which work from an operator's shell.
pub fn load_structure(path: &std::path::Path) -> anyhow::Result<Config> {
    load_with(path, settings::load_structure)
}

fn load_with(
    path: &std::path::Path,
    load: fn(&std::path::Path) -> Result<Config, config::ConfigErrors>,
) -> anyhow::Result<Config> {
    if !path.exists() && path == std::path::Path::new(config::DEFAULT_PATH) {
        return Err(UsageError(format!(
            "no config at {}: pass -c FILE or set $TOKEND_CONFIG (try `tokend demo` for a tour, or start from examples/quickstart.toml)",
            config::DEFAULT_PATH
        ))
        .into());
    }
    load(path).map_err(|e| {
        anyhow::Error::new(e).context(format!("invalid configuration ({})", path.display()))
    })
}

/// The async runtime of every command. File writes (fsync) run on the blocking pool; 32
/// threads keep up with hundreds of writes a second on one disk, while Tokio's default of
/// 512 let bursts start hundreds of threads, each with its own malloc arena (~36 MB RSS at
/// 10,000 accounts, docs/BENCHMARKS.md).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()
        .context("cannot start the async runtime")
}
