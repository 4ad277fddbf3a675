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
//!
//! Every record leaves through [`crate::redact`] (issue 12): text and JSON lines through
//! [`Redacting`], a writer that redacts each formatted record and keeps it on one line (a
//! provider text holding "\n… INFO token obtained" cannot forge a line), and journald
//! records, which go to the journal's socket and not through a writer, through
//! [`RedactedFields`], which rewrites each event's field values first.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;
use crate::redact::LogStyle;

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
            .with(RedactedFields(
                layer.with_syslog_identifier("tokend".into()),
            ))
            .try_init();
        return;
    }
    match format {
        LogFormat::Json => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(Redacting::new(std::io::stderr, LogStyle::Json))
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
                        .with_writer(Redacting::new(std::io::stderr, LogStyle::Text(ansi)))
                        .with_target(false)
                        .with_ansi(ansi),
                )
                .try_init();
        }
    }
}

/// A [`MakeWriter`] whose writers hold one formatted record and pass it, redacted and on
/// one line ([`crate::redact::log_line`]), to the inner writer in one write when dropped
/// (the fmt layer makes one writer per record).
#[derive(Clone)]
pub struct Redacting<M> {
    inner: M,
    style: LogStyle,
}

impl<M> Redacting<M> {
    /// Wraps `inner`, which receives records formatted in `style`.
    pub fn new(inner: M, style: LogStyle) -> Self {
        Redacting { inner, style }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = Record<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Record {
            inner: self.inner.make_writer(),
            buf: Vec::new(),
            style: self.style,
        }
    }
}

/// One record on its way out (see [`Redacting`]).
pub struct Record<W: Write> {
    inner: W,
    buf: Vec<u8>,
    style: LogStyle,
}

impl<W: Write> Write for Record<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for Record<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = crate::redact::log_line(&String::from_utf8_lossy(&self.buf), self.style);
        // Nowhere to report a failed log write.
        let _ = self.inner.write_all(line.as_bytes());
        let _ = self.inner.flush();
    }
}

/// Most fields one event may carry through [`RedactedFields`] (tokend's have under ten).
const MAX_FIELDS: usize = 32;

/// A layer that hands its inner layer each event with every field value as text, cleaned
/// and redacted ([`crate::redact::text`]): for journald, whose layer writes fields to the
/// journal's socket itself.
pub struct RedactedFields<L>(pub L);

/// The values of an event's fields, as text.
#[derive(Default)]
struct FieldTexts(Vec<(Field, String)>);

impl Visit for FieldTexts {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.clone(), crate::redact::text(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.clone(), crate::redact::text(&format!("{value:?}"))));
    }
}

impl<S: Subscriber, L: Layer<S>> Layer<S> for RedactedFields<L> {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(id, values, ctx);
    }

    fn on_follows_from(&self, id: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(id, follows, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut texts = FieldTexts::default();
        event.record(&mut texts);
        let metadata = event.metadata();
        let Some(first) = metadata.fields().iter().next() else {
            self.0.on_event(event, ctx);
            return;
        };
        let values: Vec<(Field, tracing::field::DisplayValue<&String>)> = texts
            .0
            .iter()
            .take(MAX_FIELDS)
            .map(|(f, t)| (f.clone(), tracing::field::display(t)))
            .collect();
        // `ValueSet` takes an array; unused slots repeat a field with no value.
        let slots: [(&Field, Option<&dyn tracing::Value>); MAX_FIELDS] =
            std::array::from_fn(|i| match values.get(i) {
                Some((f, v)) => (f, Some(v as &dyn tracing::Value)),
                None => (&first, None),
            });
        let value_set = metadata.fields().value_set(&slots);
        let redacted = if event.is_contextual() {
            Event::new(metadata, &value_set)
        } else {
            Event::new_child_of(event.parent().cloned(), metadata, &value_set)
        };
        self.0.on_event(&redacted, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
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
    fn records_are_redacted_and_stay_on_one_line() {
        let secret = "logging-unit-secret-\"q\"-42";
        crate::redact::register("logging-unit-test", secret);
        let forged = "\n2026-11-30T00:00:00Z  INFO token obtained account=prod-bank";
        let captured = Captured::default();
        let writer = captured.clone();
        let text = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Redacting::new(
                move || writer.clone(),
                LogStyle::Text(false),
            ));
        let json_captured = Captured::default();
        let json_writer = json_captured.clone();
        let json = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(Redacting::new(move || json_writer.clone(), LogStyle::Json));
        // The journald path: field values rewritten before the inner layer sees them.
        let fields_captured = Captured::default();
        let fields_writer = fields_captured.clone();
        let fields = RedactedFields(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || fields_writer.clone()),
        );
        let subscriber = tracing_subscriber::registry()
            .with(text)
            .with(json)
            .with(fields);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(account = "a", error = %format!("echo {secret}{forged}\x1b]0;pwned\x07"), "login failed {secret}");
        });
        for (what, c) in [
            ("text", captured),
            ("json", json_captured),
            ("fields", fields_captured),
        ] {
            let out = String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
            assert_eq!(out.lines().count(), 1, "{what}: {out}");
            assert!(!out.contains("logging-unit-secret"), "{what}: {out}");
            assert!(
                !out.contains('\x1b') && !out.contains("\\u001b"),
                "{what}: {out}"
            );
            assert!(out.contains("[REDACTED]"), "{what}: {out}");
        }
    }

    #[test]
    fn filters_silence_vaultrs_but_follow_the_operator() {
        assert_eq!(passes("info"), "tokend-event");
        assert_eq!(passes("trace"), "tokend-event");
        assert_eq!(passes("debug,vaultrs=error"), "vaultrs-event tokend-event");
        assert_eq!(passes("warn,rustify=debug"), "rustify-event");
    }
}
