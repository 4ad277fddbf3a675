//! The encoders: every form in which a server or a formatter may echo a secret (JSON-escaped
//! once and twice, `Debug`-escaped, percent- and form-encoded in both hex cases, cleaned,
//! base64 standard and URL-safe, and `base64(id:secret)` as in a `Basic` header). Called by
//! [`super::matcher`] when a secret is registered.

use base64::Engine;

use super::{Entry, MIN_LEN, clean};

/// Every form in which `entry` may be echoed.
pub(super) fn forms(entry: &Entry) -> Vec<String> {
    let b64 = |s: &str| {
        [
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(s),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s),
        ]
    };
    let mut out = Vec::new();
    match entry {
        Entry::One(s) => {
            let json = json_escape(s);
            out.push(json_escape(&json));
            out.push(json);
            out.push(format!("{s:?}").trim_matches('"').to_string());
            for (encoded, lower) in [percent(s, false), percent(s, true)]
                .into_iter()
                .map(|e| (e.clone(), lower_hex(&e)))
            {
                out.push(encoded);
                out.push(lower);
            }
            out.push(clean(s));
            // Without padding: the padded form starts with it, and base64 inside a longer
            // value (`Basic` with an id) is covered by the pairs.
            out.extend(b64(s));
            out.push(s.clone());
        }
        Entry::Pair(id, s) => {
            out.extend(b64(&format!("{id}:{s}")));
            // RFC 6749 §2.3.1: both parts form-encoded before base64.
            let (fid, fs) = (percent(id, true), percent(s, true));
            out.extend(b64(&format!("{fid}:{fs}")));
        }
    }
    out.retain(|f| f.len() >= MIN_LEN);
    out.sort();
    out.dedup();
    out
}

pub(super) fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string always serialises");
    quoted[1..quoted.len() - 1].to_string()
}

/// RFC 3986 percent-encoding (`%20`), or `application/x-www-form-urlencoded` (`+`).
pub(super) fn percent(s: &str, form: bool) -> String {
    if form {
        return url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
    }
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The same percent-encoding with lower-case hex digits (`%2f`), which some servers write.
pub(super) fn lower_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut hex_left = 0;
    for c in s.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}
