//! The one redaction rule (SPEC §4 "Secrets never leak", "Boundaries"; issue 12 findings 2
//! and 4). Every string that leaves the process passes through here: log lines (the writer
//! in `observability::logging`), provider and secret-store error messages
//! (`provider::http`, the Vault and AWS sinks), the `last_error` texts of state files
//! (`state`) and what `tokend status` prints ([`text`]).
//!
//! Two jobs, always in this order, and always before any truncation:
//! 1. [`clean`]: control characters and terminal escapes go (ESC/CSI/OSC sequences, C1
//!    controls, bidi overrides); `\r`, `\n`, `\t` and line separators become a space, so a
//!    hostile text can neither forge a log line nor retitle or clear a terminal.
//! 2. Redaction: every occurrence of a known secret, in every form a server or a formatter
//!    may echo it ([`forms`]: raw, JSON-escaped once and twice, Rust-`Debug`-escaped,
//!    percent- and form-encoded, base64 standard and URL-safe, and `base64(id:secret)` as in
//!    a `Basic` header), becomes [`MARKER`]. Overlapping matches are merged, so a short
//!    secret (`client_id = "acme"`) can never leave part of a longer one in clear.
//!
//! The secrets come from a process-wide registry: the config loader replaces its set on
//! every successful load ([`collect`], [`replace_config`]), and run-time secrets (tokens
//! obtained from providers, Vault tokens) are added with [`register`].
//!
//! Matching is a Rabin–Karp search over hashes, not an automaton: the registry keeps a
//! length and two 64-bit hashes per form and no copy of any secret, so 10 000 accounts
//! (a password, a client secret, kilobyte-long access tokens and refresh tokens, ~90 000
//! forms) take a few MB, where an Aho–Corasick automaton over those JWTs in eight
//! encodings would take hundreds. A hash collision can only redact text that is not a
//! secret.
//!
//! Layout: this file holds the registry and the public rule; `forms` the encoders (every
//! form of a secret) and `matcher` the hash search and the replacement.

mod forms;
mod matcher;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, RwLock};

use matcher::{FormKey, Matcher, hash, keys, replace};

/// What replaces a secret.
pub const MARKER: &str = "[REDACTED]";

/// Secrets shorter than this are not matched. A one- or two-character "secret" would blank
/// out common letters in every line, and protects nothing: it is guessed in a few thousand
/// tries. Three is the rule tokend has always applied.
pub const MIN_LEN: usize = 3;

/// Run-time values kept per registration key (an account's access and refresh tokens,
/// current and previous): the previous ones stay redacted while a server may still echo
/// them, and a long-running daemon does not collect every token it ever held.
const HELD_PER_KEY: usize = 4;

/// A secret registered by the config loader: alone, or as `id:secret` in a `Basic` header.
#[derive(Clone, PartialEq, Eq)]
enum Entry {
    One(String),
    Pair(String, String),
}

/// The secrets of one config load ([`collect`]).
#[derive(Default)]
pub struct Secrets(Vec<Entry>);

impl Secrets {
    /// Adds a secret value.
    pub fn add(&mut self, secret: &str) {
        if secret.len() >= MIN_LEN {
            self.0.push(Entry::One(secret.to_string()));
        }
    }

    /// Adds `id:secret` as a `Basic` header would carry it (base64 only: the id alone is
    /// not a secret, and `secret` is added on its own by [`Secrets::add`]).
    pub fn add_pair(&mut self, id: &str, secret: &str) {
        if !id.is_empty() && secret.len() >= MIN_LEN {
            self.0.push(Entry::Pair(id.to_string(), secret.to_string()));
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} entries)", self.0.len())
    }
}

/// The process-wide secrets.
#[derive(Default)]
struct Registry {
    matcher: Matcher,
    /// The forms the last config load added (removed on the next one).
    config: Vec<FormKey>,
    /// Run-time values by key, newest last: the hash of the value and its forms.
    held: HashMap<String, VecDeque<(u64, Vec<FormKey>)>>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(RwLock::default);

fn read() -> std::sync::RwLockReadGuard<'static, Registry> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that
    // matters here (at worst a form too many), so a poisoned lock is used as it is.
    REGISTRY.read().unwrap_or_else(|e| e.into_inner())
}

fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// The set a config load on this thread is collecting ([`collect`]).
    static COLLECTING: RefCell<Option<Secrets>> = const { RefCell::new(None) };
}

/// Runs `load` (a config load) while collecting every secret it resolves ([`note`],
/// [`note_pair`]); returns its result and the secrets, for [`replace_config`] on success.
pub fn collect<T>(load: impl FnOnce() -> T) -> (T, Secrets) {
    let outer = COLLECTING.with(|c| c.replace(Some(Secrets::default())));
    let result = load();
    let secrets = COLLECTING
        .with(|c| c.replace(outer))
        .expect("set at the start of collect");
    (result, secrets)
}

/// Notes a secret value just resolved: into the config load running on this thread, else
/// (a secret re-read at run time, e.g. a Vault token file) registered under `key`.
pub fn note(key: &str, secret: &str) {
    let collected = COLLECTING.with(|c| match c.borrow_mut().as_mut() {
        Some(set) => {
            set.add(secret);
            true
        }
        None => false,
    });
    if !collected {
        register(key, secret);
    }
}

/// Notes an `id:secret` pair of the config load running on this thread (no-op outside one).
pub fn note_pair(id: &str, secret: &str) {
    COLLECTING.with(|c| {
        if let Some(set) = c.borrow_mut().as_mut() {
            set.add_pair(id, secret);
        }
    });
}

/// Replaces the config's secrets with those of a new, valid config.
pub fn replace_config(secrets: Secrets) {
    let new: Vec<FormKey> = secrets.0.iter().flat_map(keys).collect();
    let mut r = write();
    r.matcher.add_all(&new);
    let old = std::mem::replace(&mut r.config, new);
    r.matcher.remove_all(&old);
}

/// Registers a secret obtained at run time (an access or refresh token, a Vault token)
/// under `key`: the account's name, or `<account>/<what>` for its sinks' secrets, so that
/// [`retain_accounts`] drops them with the account. The last four values per key stay
/// registered; older ones are forgotten.
pub fn register(key: &str, secret: &str) {
    if secret.len() < MIN_LEN {
        return;
    }
    let id = hash(secret.as_bytes());
    let new = keys(&Entry::One(secret.to_string()));
    let mut r = write();
    let held = r.held.entry(key.to_string()).or_default();
    if held.iter().any(|(h, _)| *h == id) {
        return;
    }
    held.push_back((id, new.clone()));
    let gone = (held.len() > HELD_PER_KEY)
        .then(|| held.pop_front())
        .flatten();
    r.matcher.add_all(&new);
    if let Some((_, gone)) = gone {
        r.matcher.remove_all(&gone);
    }
}

/// Forgets the run-time values of accounts not in `accounts` (removed by a reload): keys
/// that are an account's name or start with `<name>/`.
pub fn retain_accounts<'a>(accounts: impl IntoIterator<Item = &'a str>) {
    let names: std::collections::HashSet<&str> = accounts.into_iter().collect();
    let mut r = write();
    let gone: Vec<String> = r
        .held
        .keys()
        .filter(|k| !names.contains(k.split('/').next().unwrap_or(k)))
        .cloned()
        .collect();
    for key in gone {
        if let Some(entries) = r.held.remove(&key) {
            entries.iter().for_each(|(_, k)| r.matcher.remove_all(k));
        }
    }
}

/// Removes control characters and terminal escapes (module docs): ESC sequences (CSI up
/// to its final byte, OSC/DCS/SOS/PM/APC up to BEL or ST, others one character), C0 and C1
/// controls and bidi overrides are dropped; `\r`, `\n`, `\t` and U+2028/U+2029 become a
/// space.
pub fn clean(text: &str) -> String {
    clean_keeping(text, false)
}

/// [`clean`], but keeping SGR sequences (`ESC [ … m`, colours only) when `keep_colours`:
/// the log formatter's own colours for a person at a terminal.
fn clean_keeping(text: &str, keep_colours: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\n' | '\t' | '\u{2028}' | '\u{2029}' => out.push(' '),
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    let mut seq = String::from("\u{1b}[");
                    for c in chars.by_ref() {
                        seq.push(c);
                        if ('\u{40}'..='\u{7e}').contains(&c) || !(' '..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                    let sgr = seq.ends_with('m')
                        && seq[2..seq.len() - 1]
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == ';');
                    if keep_colours && sgr {
                        out.push_str(&seq);
                    }
                }
                // String sequences: up to BEL or ESC \ (ST).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || c == '\u{9c}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                _ => {}
            },
            c if c.is_control() => {}
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Redacts every registered secret from `text`, unchanged otherwise (no cleaning).
pub fn redact(text: &str) -> String {
    let r = read();
    if r.matcher.forms == 0 {
        return text.to_string();
    }
    replace(text, &[&r.matcher], usize::MAX).0
}

/// A text from outside (a provider or secret store) or about to be shown: [`clean`], then
/// redacted. What `tokend status` prints for `last_error`.
pub fn text(text: &str) -> String {
    excerpt_with(text, std::iter::empty(), usize::MAX)
}

/// [`text`], cut to `max_chars` (plus `…`) only after redaction.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    excerpt_with(text, std::iter::empty(), max_chars)
}

/// [`excerpt`], also redacting `extra` secrets (an account's own values, in case the
/// registry does not hold them yet).
pub fn excerpt_with<'a>(
    text: &str,
    extra: impl IntoIterator<Item = &'a str>,
    max_chars: usize,
) -> String {
    let cleaned = clean(text);
    let mut local = Matcher::default();
    for s in extra {
        if s.len() >= MIN_LEN {
            local.add_all(&keys(&Entry::One(s.to_string())));
        }
    }
    let r = read();
    let (mut out, cut) = if r.matcher.forms == 0 && local.forms == 0 {
        let cut = cleaned.chars().count() > max_chars;
        (cleaned.chars().take(max_chars).collect(), cut)
    } else {
        replace(&cleaned, &[&r.matcher, &local], max_chars)
    };
    if cut {
        out = out.chars().take(max_chars).collect::<String>() + "…";
    }
    out
}

/// How a log record is formatted, for [`log_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// Text; `true` keeps the formatter's own SGR colour sequences.
    Text(bool),
    /// One JSON object: control characters inside strings are JSON escapes.
    Json,
}

/// One formatted log record (the log writer): secrets redacted and the record kept on one
/// line, whatever its fields hold, even for a reader that decodes JSON strings.
pub fn log_line(record: &str, style: LogStyle) -> String {
    let body = record.strip_suffix('\n').unwrap_or(record);
    let cleaned = match style {
        LogStyle::Text(colours) => clean_keeping(body, colours),
        LogStyle::Json => clean(&clean_json_escapes(body)),
    };
    let mut line = redact(&cleaned);
    line.push('\n');
    line
}

/// [`clean`] for what JSON strings encode: `\n`, `\r`, `\t` escapes become a space and
/// `\u` escapes of control characters (ESC, C1, bidi overrides) go.
fn clean_json_escapes(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let mut chars = escape.chars();
        chars.next();
        match chars.next() {
            Some('n' | 'r' | 't') => {
                out.push(' ');
                rest = &escape[2..];
            }
            Some('u') if escape.len() >= 6 && escape.is_char_boundary(6) => {
                let decoded = u32::from_str_radix(&escape[2..6], 16)
                    .ok()
                    .and_then(char::from_u32);
                if decoded.is_some_and(|c| clean(&c.to_string()) != c.to_string()) {
                    out.push(' ');
                } else {
                    out.push_str(&escape[..6]);
                }
                rest = &escape[6..];
            }
            Some(c) => {
                out.push('\\');
                out.push(c);
                rest = &escape[1 + c.len_utf8()..];
            }
            None => {
                out.push('\\');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A URL as a message may quote it (issue 12 finding 3): quoted, without its user info and
/// with its query and fragment replaced by `…`, parsed or not, so an address that carries
/// a password or a key is never repeated, not even in a "not a URL" error.
pub fn url_for_message(url: &str) -> String {
    let (main, tail) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], "?…"),
        None => (url, ""),
    };
    let (scheme, rest) = match main.find("://") {
        Some(at) => (&main[..at + 3], &main[at + 3..]),
        None => ("", main),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let shown = match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}…@{}{tail}", &rest[at + 1..]),
        None => format!("{main}{tail}"),
    };
    format!("{:?}", text(&shown))
}

/// `#[serde(with = "crate::redact::stored_text")]` for an `Option<String>` of outside text
/// kept in a file (a state file's `last_error`): [`text`] on the way in and out, so neither
/// a file written by an older tokend nor one edited by hand brings escapes or secrets to
/// `tokend status`.
pub mod stored_text {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the text cleaned and redacted.
    pub fn serialize<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_some(&super::text(v)),
            None => s.serialize_none(),
        }
    }

    /// Reads the text cleaned and redacted.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(|v| super::text(&v)))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::forms::{json_escape, lower_hex, percent};
    use super::*;

    fn with(secrets: &[&str], pairs: &[(&str, &str)], text: &str) -> String {
        let mut m = Matcher::default();
        for s in secrets {
            m.add_entry(&Entry::One(s.to_string()));
        }
        for (id, s) in pairs {
            m.add_entry(&Entry::Pair(id.to_string(), s.to_string()));
        }
        replace(&clean(text), &[&m], usize::MAX).0
    }

    #[test]
    fn every_encoding_of_a_secret_is_redacted() {
        let secret = "p@ss \"w\\rd\"&+%/é=x-long-enough-for-a-prefix";
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let url_b64 = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        let cases = [
            secret.to_string(),
            json_escape(secret),
            json_escape(&json_escape(secret)),
            format!("{secret:?}").trim_matches('"').to_string(),
            percent(secret, false),
            percent(secret, true),
            lower_hex(&percent(secret, true)),
            b64(secret),
            url_b64(secret),
            b64(&format!("app:{secret}")),
            url_b64(&format!("app:{secret}")),
        ];
        for form in cases {
            let out = with(
                &[secret],
                &[("app", secret)],
                &format!("before {form} after"),
            );
            assert!(
                out.starts_with("before [REDACTED]") && out.ends_with(" after"),
                "{form} → {out}"
            );
        }
    }

    #[test]
    fn overlapping_secrets_leave_nothing_in_clear() {
        // A short client id that is a prefix of a longer secret, and two overlapping ones.
        assert_eq!(
            with(
                &["acme", "acme-secret-1234"],
                &[],
                "x acme-secret-1234 y acme z"
            ),
            "x [REDACTED] y [REDACTED] z"
        );
        assert_eq!(
            with(&["zzabc", "abcdef"], &[], "-zzabcdef-"),
            "-[REDACTED]-"
        );
        assert_eq!(with(&["ab"], &[], "ab"), "ab", "below MIN_LEN");
    }

    #[test]
    fn clean_drops_escapes_and_flattens_lines() {
        assert_eq!(
            clean("a\x1b]0;pwned\x07b\x1b[2Jc\r\nd\te\u{9b}f\u{202e}g\x1bPq\x1b\\h"),
            "abc  d efgh"
        );
        assert_eq!(
            clean_keeping("\x1b[1;32mok\x1b[0m\x1b[2J", true),
            "\x1b[1;32mok\x1b[0m"
        );
    }

    #[test]
    fn cutting_happens_after_redaction() {
        let secret = "s3cr3t-value-that-straddles-the-cut";
        let text = format!("{}{secret} and more", "x".repeat(150));
        let mut m = Matcher::default();
        m.add_entry(&Entry::One(secret.into()));
        let (out, cut) = replace(&text, &[&m], 155);
        assert!(cut);
        assert!(out.ends_with("x[REDACTED]"), "{out}");
        assert!(!out.contains("s3c"));
    }

    #[test]
    fn urls_in_messages_lose_user_info_and_query() {
        assert_eq!(
            url_for_message("https://user:S3CR3T@exa mple.com/p?key=K3Y#f"),
            "\"https://…@exa mple.com/p?…\""
        );
        assert_eq!(
            url_for_message("http://127.0.0.1:1/x"),
            "\"http://127.0.0.1:1/x\""
        );
        assert_eq!(url_for_message("u:p@host"), "\"…@host\"");
    }

    #[test]
    fn register_keeps_the_last_values_per_key() {
        let key = "redact-unit-test-key";
        for n in 0..6 {
            register(key, &format!("unit-token-number-{n}-abcdefgh"));
        }
        assert_eq!(redact("unit-token-number-5-abcdefgh"), MARKER);
        assert_eq!(redact("unit-token-number-2-abcdefgh"), MARKER);
        assert_eq!(
            redact("unit-token-number-1-abcdefgh"),
            "unit-token-number-1-abcdefgh"
        );
        register("redact-unit-kept/x", "kept-value-abcdefgh");
        retain_accounts(["redact-unit-kept"]);
        assert_eq!(redact("kept-value-abcdefgh"), MARKER);
        assert_eq!(
            redact("unit-token-number-5-abcdefgh"),
            "unit-token-number-5-abcdefgh"
        );
    }
}
