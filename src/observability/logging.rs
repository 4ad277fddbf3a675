//! Log setup (SPEC §3 `log_format`, `log_level`): journald when stderr *is* the journal
//! (`$JOURNAL_STREAM` names stderr's device and inode; `tracing_journald::layer()` alone
//! succeeds on any host with journald), else text or JSON lines on stderr. `RUST_LOG`
//! overrides `log_level`.
//!
//! Whichever filter is used, the `vaultrs` and `rustify` targets are off unless it names
//! them ([`with_quiet_defaults`]). vaultrs, the vault sink's Vault client, and rustify, its
//! HTTP layer, log every non-2xx answer as an ERROR event (`#[instrument(err)]`), and for
//! the sink most of those are expected: the 404 before a secret's first write, the 400 of
//! a check-and-set conflict, the 403 that makes it log in again. Their other events are
//! request tracing. ERROR is their highest level, so no level short of `off` silences the
//! noise; the sink logs and reports the failures that matter itself, naming the address,
//! mount and path. An operator who wants vaultrs's view, say while debugging a proxy, names
//! the target: `RUST_LOG=info,vaultrs=debug,rustify=debug`. Its events never hold a token
//! (see `sink::vault::api`).

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Targets that are off unless a filter directive names them (module doc).
const QUIET_TARGETS: [&str; 2] = ["vaultrs", "rustify"];

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat, level: &str) {
    let filter = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .and_then(|spec| filter(&spec))
        .or_else(|| filter(level))
        .unwrap_or_else(|| filter("info").expect("\"info\" is a valid filter"));
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

/// The filter for `spec` (`RUST_LOG` or `log_level`) with [`with_quiet_defaults`]; `None`
/// when `spec` is not a valid filter.
fn filter(spec: &str) -> Option<EnvFilter> {
    EnvFilter::try_new(with_quiet_defaults(spec)).ok()
}

/// `spec` preceded by `<target>=off` for each of [`QUIET_TARGETS`] that none of its
/// directives names (as itself, a module of it, or with span and field filters), so a
/// global level (`debug`, `trace`) leaves them off and `vaultrs=debug` turns one on.
pub fn with_quiet_defaults(spec: &str) -> String {
    let named = |target: &str| {
        spec.split(',').any(|directive| {
            let name = directive
                .trim()
                .split(['[', '='])
                .next()
                .unwrap_or_default();
            name == target
                || name
                    .strip_prefix(target)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
    };
    QUIET_TARGETS
        .iter()
        .filter(|target| !named(target))
        .map(|target| format!("{target}=off"))
        .chain((!spec.trim().is_empty()).then(|| spec.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn vaultrs_and_rustify_are_off_unless_named() {
        assert_eq!(with_quiet_defaults("info"), "vaultrs=off,rustify=off,info");
        assert_eq!(
            with_quiet_defaults("trace,tokend=debug"),
            "vaultrs=off,rustify=off,trace,tokend=debug"
        );
        assert_eq!(
            with_quiet_defaults("info,vaultrs=debug"),
            "rustify=off,info,vaultrs=debug"
        );
        assert_eq!(
            with_quiet_defaults("vaultrs::api[request]=trace, rustify"),
            "vaultrs::api[request]=trace, rustify"
        );
        // Only whole crate names count.
        assert_eq!(
            with_quiet_defaults("vaultrsx=debug"),
            "vaultrs=off,rustify=off,vaultrsx=debug"
        );
        assert_eq!(with_quiet_defaults(""), "vaultrs=off,rustify=off");
        assert!(filter("info,=x=").is_none());
    }

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the filter for `spec` lets through of an ERROR event from vaultrs, a DEBUG
    /// event from rustify and an INFO event from tokend.
    fn passes(spec: &str) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(filter(spec).unwrap())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            // Interest is cached per callsite for all dispatchers; a second one makes
            // tracing ask this subscriber every time (see tests/vault.rs).
            let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
            tracing::callsite::rebuild_interest_cache();
            tracing::error!(target: "vaultrs::api", "vaultrs-event");
            tracing::debug!(target: "rustify::client", "rustify-event");
            tracing::info!(target: "tokend::sink", "tokend-event");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        ["vaultrs-event", "rustify-event", "tokend-event"]
            .into_iter()
            .filter(|e| text.contains(e))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn filters_silence_vaultrs_but_follow_the_operator() {
        assert_eq!(passes("info"), "tokend-event");
        assert_eq!(passes("trace"), "tokend-event");
        assert_eq!(passes("debug,vaultrs=error"), "vaultrs-event tokend-event");
        assert_eq!(passes("warn,rustify=debug"), "rustify-event");
    }
}
