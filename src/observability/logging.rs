//! Log setup (SPEC §3 `log_format`, `log_level`): journald when stderr *is* the journal
//! (`$JOURNAL_STREAM` names stderr's device and inode; `tracing_journald::layer()` alone
//! succeeds on any host with journald), else text or JSON lines on stderr. `RUST_LOG`
//! overrides `log_level`.

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")));
    let registry = tracing_subscriber::registry().with(filter);
    let use_journald = format == LogFormat::Auto && stderr_is_journal();
    if use_journald && let Ok(layer) = tracing_journald::layer() {
        // Fields become journal fields: account → ACCOUNT=.
        let _ = registry
            .with(layer.with_syslog_identifier("tokend".into()))
            .try_init();
        return;
    }
    match format {
        LogFormat::Json => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(std::io::stderr)
                        .with_current_span(false),
                )
                .try_init();
        }
        _ => {
            use std::io::IsTerminal;
            // Colours only for a person at a terminal, never into files or the journal.
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_target(false)
                        .with_ansi(ansi),
                )
                .try_init();
        }
    }
}

/// True when `$JOURNAL_STREAM` (`dev:inode`) matches stderr.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let value = value.to_string_lossy();
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}
