//! Reading a provider's response: classify the outcome (success, transient, rejected,
//! misconfigured) and pull the access token, refresh token and expiry out of it. Pure:
//! [`interpret`] takes the response as data, so every quirk is unit-tested without a server.
//!
//! Expiry (SPEC §3): `expires_in` → the JWT's `exp` claim (decoded, not verified) → the
//! token cookie's `Max-Age`/`Expires` → `default_lifetime`.
//!
//! Every value here comes from a server tokend does not control, so each is bounded
//! before any arithmetic (issue 11; ranges in [`crate::bounds`]):
//! - a lifetime (`expires_in`, `refresh_expires_in`, `Max-Age`) is a number of seconds
//!   ≥ 0, as a JSON number or a numeric string; more than a year is clamped to a year;
//!   negative, NaN, infinite or non-numeric is a *malformed answer* (never silently the
//!   default). `null` counts as absent;
//! - an absolute expiry (JWT `exp`, cookie `Expires`) is clamped to a year after the
//!   request; an `exp` that is not a number is a malformed answer. An `exp` in
//!   milliseconds (or 1e20, 9.3e18) thus means "a year", not an overflow;
//! - a token that expires less than 2 s after it was received (`expires_in: 0`, an `exp`
//!   in the past, `Max-Age=0`, an `Expires` in 2015) is a malformed answer;
//! - the access and the refresh token must pass [`accept_token`]: 1 to 16 KiB of visible
//!   ASCII, so a newline can never reach an `env` sink.
//!
//! A malformed answer is [`ProviderError::malformed_answer`]: transient (back off, no
//! login at once) and "maybe processed" (a rotating refresh token sent may be spent). Its
//! message never quotes the token. HTTP 404 and 405 are
//! [`ProviderError::Misconfigured`]: the URL is wrong, not the credentials.

use std::time::{Duration, SystemTime};

use base64::Engine;
use secrecy::SecretString;
use serde_json::Value;

use super::{Obtained, ProviderError, ResponseSpec, Source, Via};
use crate::bounds::{self, MAX_LIFETIME, MAX_TOKEN_LEN, MIN_REMAINING};

/// A cookie from a `Set-Cookie` header.
#[derive(Debug, Clone)]
pub struct Cookie {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// `Max-Age`.
    pub max_age: Option<Duration>,
    /// `Expires`.
    pub expires: Option<SystemTime>,
}

/// A response as data.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Cookies set.
    pub cookies: Vec<Cookie>,
    /// The body.
    pub body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether `token` may be saved and published (SPEC §4 "Only good tokens are published"):
/// non-empty, at most [`MAX_TOKEN_LEN`] bytes, and only visible ASCII (0x21..=0x7e), what
/// an HTTP header value carries without spaces. The error says what is wrong without
/// quoting the token (it names a byte offset at most).
pub fn accept_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("is empty".into());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "is {} bytes long: at most {MAX_TOKEN_LEN} are accepted",
            token.len()
        ));
    }
    if let Some(at) = token.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(format!(
            "has a byte outside visible ASCII at offset {at}: spaces, control characters and non-ASCII are not accepted"
        ));
    }
    Ok(())
}

/// Classifies `resp` and, on success, extracts the token. `what` names the exchange for
/// messages (e.g. `login to https://host/path`). Relative lifetimes count from
/// `requested_at` (the earliest the server can have issued the token); the 2 s minimum
/// counts from `received_at`. Messages quote the server's text whole: the caller redacts,
/// cleans and only then cuts it (`crate::redact::excerpt_with`).
pub fn interpret(
    resp: &Response,
    spec: &ResponseSpec,
    requested_at: SystemTime,
    received_at: SystemTime,
    default_lifetime: Duration,
    via: Via,
    what: &str,
) -> Result<Obtained, ProviderError> {
    let json: Option<Value> = serde_json::from_str(&resp.body).ok();
    let status = resp.status;
    if !(200..300).contains(&status) {
        let detail = json
            .as_ref()
            .map(describe_error)
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| snippet(&resp.body, resp.header("content-type")));
        let message = format!(
            "{what}: HTTP {status}{}{detail}",
            if detail.is_empty() { "" } else { ": " }
        );
        let retry_after = resp
            .header("retry-after")
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let transient_oauth = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .is_some_and(|e| matches!(e, "temporarily_unavailable" | "server_error" | "slow_down"));
        return Err(match status {
            408 | 425 | 429 | 500..=599 => ProviderError::transient(message, retry_after),
            // No such endpoint (or not for POST): the URL is wrong, the credentials may be
            // fine, and retrying soon does not help (SPEC §4 "never a lockout").
            404 | 405 => ProviderError::Misconfigured {
                message: format!("{what}: HTTP {status}: check base_url/token_url"),
            },
            _ if transient_oauth => ProviderError::transient(message, retry_after),
            300..=399 => ProviderError::Rejected {
                message: format!(
                    "{what}: redirected (HTTP {status}); set the URL to the final address"
                ),
            },
            _ => ProviderError::Rejected { message },
        });
    }
    if let (Some(pointer), Some(body)) = (&spec.error, &json)
        && let Some(err) = body.pointer(pointer).filter(|v| !is_empty_value(v))
    {
        let detail = describe_error(err);
        let message =
            format!("{what}: the response reports an error at {pointer} (HTTP {status}): {detail}");
        return Err(if error_is_transient(err) {
            ProviderError::transient(message, None)
        } else {
            ProviderError::Rejected { message }
        });
    }
    let Some(access_token) = find_string(resp, json.as_ref(), &spec.access_token) else {
        let looked: Vec<String> = spec.access_token.iter().map(show_source).collect();
        let why = if json.is_none() && !resp.body.trim().is_empty() {
            "the body is not JSON and "
        } else {
            ""
        };
        return Err(ProviderError::transient(
            format!(
                "{what}: {why}no access token at {} (HTTP {status})",
                looked.join(" or ")
            ),
            None,
        ));
    };
    let malformed = |detail: String| ProviderError::malformed_answer(what, &detail);
    accept_token(&access_token).map_err(|m| malformed(format!("the access token {m}")))?;
    // The latest expiry accepted: a year after the request (see the module doc).
    let latest = bounds::add(requested_at, MAX_LIFETIME);
    let lifetime = find_seconds(resp, json.as_ref(), &spec.expires_in).map_err(&malformed)?;
    let (expires_at, expiry_source) = if let Some(secs) = lifetime {
        (bounds::add(requested_at, secs), "expires_in")
    } else if let Some(exp) = jwt_exp(&access_token).map_err(&malformed)? {
        (exp.min(latest), "jwt")
    } else if let Some(at) = cookie_expiry(resp, &access_token, requested_at) {
        (at, "cookie")
    } else {
        (
            bounds::add(requested_at, default_lifetime.min(MAX_LIFETIME)),
            "default",
        )
    };
    if expires_at < bounds::add(received_at, MIN_REMAINING) {
        return Err(malformed(format!(
            "the token expires at {} (from {expiry_source}), less than {}s after it was received",
            bounds::rfc3339(expires_at),
            MIN_REMAINING.as_secs()
        )));
    }
    let refresh_token = find_string(resp, json.as_ref(), &spec.refresh_token);
    if let Some(rt) = &refresh_token {
        accept_token(rt).map_err(|m| malformed(format!("the refresh token {m}")))?;
    }
    let refresh_lifetime =
        find_seconds(resp, json.as_ref(), &spec.refresh_expires_in).map_err(&malformed)?;
    // A refresh token's own `exp` is only a hint (it may be opaque and merely look like a
    // JWT): unreadable means unknown.
    let refresh_expires_at = refresh_lifetime
        .map(|s| bounds::add(requested_at, s))
        .or_else(|| {
            refresh_token
                .as_deref()
                .and_then(|t| jwt_exp(t).ok().flatten())
                .map(|t| t.min(latest))
        });
    let token_type = find_string(resp, json.as_ref(), &spec.token_type)
        .filter(|t| t.len() <= 64 && accept_token(t).is_ok())
        .map(|t| {
            if t.eq_ignore_ascii_case("bearer") {
                "Bearer".to_string()
            } else {
                t
            }
        })
        .unwrap_or_else(|| "Bearer".to_string());
    Ok(Obtained {
        access_token: SecretString::from(access_token),
        token_type,
        obtained_at: requested_at,
        expires_at,
        expiry_source,
        refresh_token: refresh_token.map(SecretString::from),
        refresh_expires_at,
        via,
    })
}

/// A source for messages: a pointer quoted (it may be empty), the others as written.
fn show_source(s: &Source) -> String {
    match s {
        Source::Pointer(p) => format!("{p:?}"),
        other => other.to_string(),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(_) => false,
    }
}

fn lookup(resp: &Response, json: Option<&Value>, source: &Source) -> Option<Value> {
    match source {
        Source::Pointer(p) => json?.pointer(p).cloned(),
        Source::Cookie(name) => resp
            .cookies
            .iter()
            .find(|c| &c.name == name)
            .map(|c| Value::String(c.value.clone())),
        Source::Header(name) => resp.header(name).map(|v| Value::String(v.to_string())),
    }
}

fn find_string(resp: &Response, json: Option<&Value>, sources: &[Source]) -> Option<String> {
    sources.iter().find_map(|s| match lookup(resp, json, s)? {
        Value::String(v) if !v.is_empty() => Some(v),
        _ => None,
    })
}

/// The first present lifetime among `sources`, bounded ([`bounds::lifetime_from_secs`]).
/// A present value that is not a number of seconds ≥ 0 is an error (a malformed answer),
/// not a reason to try the next source: the server said something, and it was wrong.
fn find_seconds(
    resp: &Response,
    json: Option<&Value>,
    sources: &[Source],
) -> Result<Option<Duration>, String> {
    for source in sources {
        let secs = match lookup(resp, json, source) {
            None | Some(Value::Null) => continue,
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(v)) => v.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        let why = match secs {
            None => "is not a number",
            Some(s) if s.is_nan() => "is NaN",
            Some(s) if s.is_infinite() => "is infinite",
            Some(s) if s < 0.0 => "is negative",
            Some(s) => return Ok(bounds::lifetime_from_secs(s)),
        };
        return Err(format!(
            "the lifetime at {} {why}: expected seconds ≥ 0",
            show_source(source)
        ));
    }
    Ok(None)
}

/// The `exp` claim of a JWT, decoded without verification (tokend only needs the time),
/// clamped to the epoch .. 9999-12-31. `Ok(None)` when `token` is not a JWT or has no
/// `exp`; an error when `exp` is there but not a number.
pub fn jwt_exp(token: &str) -> Result<Option<SystemTime>, String> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))
    else {
        return Ok(None);
    };
    let Ok(claims) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    match claims.get("exp") {
        None | Some(Value::Null) => Ok(None),
        Some(exp) => exp
            .as_f64()
            .and_then(bounds::time_from_secs)
            .map(Some)
            .ok_or_else(|| "the JWT exp claim is not a number".to_string()),
    }
}

/// The expiry the token's own cookie gives: `Max-Age` (clamped to a year) before
/// `Expires` (clamped to a year after the request).
fn cookie_expiry(resp: &Response, token: &str, requested_at: SystemTime) -> Option<SystemTime> {
    let cookie = resp.cookies.iter().find(|c| c.value == token)?;
    match (cookie.max_age, cookie.expires) {
        (Some(age), _) => Some(bounds::add(requested_at, age.min(MAX_LIFETIME))),
        (None, Some(at)) => Some(at.min(bounds::add(requested_at, MAX_LIFETIME))),
        (None, None) => None,
    }
}

/// A short description of an error body: RFC 6749 `error`/`error_description`, GraphQL
/// `errors[0].message` and `extensions.code`, or a `message`/`msg` field.
fn describe_error(v: &Value) -> String {
    let v = match v {
        Value::Array(items) => match items.first() {
            Some(first) => first,
            None => return String::new(),
        },
        Value::Object(o) if o.contains_key("errors") => return describe_error(&o["errors"]),
        other => other,
    };
    if let Value::String(s) = v {
        return s.clone();
    }
    let mut parts = Vec::new();
    for key in [
        "error",
        "code",
        "message",
        "msg",
        "error_description",
        "detail",
    ] {
        // Each thing once: servers often repeat one text in `error` and `message`.
        if let Some(Value::String(s)) = v.get(key)
            && !s.trim().is_empty()
            && !parts
                .iter()
                .any(|p: &String| p.eq_ignore_ascii_case(s.trim()))
        {
            parts.push(s.trim().to_string());
        }
    }
    if let Some(Value::String(code)) = v.pointer("/extensions/code")
        && !parts.iter().any(|p| p == code)
    {
        parts.push(format!("({code})"));
    }
    parts.join(": ")
}

fn error_is_transient(v: &Value) -> bool {
    let first = match v {
        Value::Array(items) => items.first().unwrap_or(v),
        other => other,
    };
    let status = [
        "/statusCode",
        "/extensions/statusCode",
        "/extensions/originalError/statusCode",
        "/status",
    ]
    .iter()
    .find_map(|p| first.pointer(p).and_then(Value::as_u64));
    if let Some(s) = status {
        return s == 429 || s >= 500;
    }
    let code = ["/extensions/code", "/code", "/error"]
        .iter()
        .find_map(|p| first.pointer(p).and_then(Value::as_str));
    matches!(
        code.map(str::to_ascii_uppercase).as_deref(),
        Some(
            "INTERNAL_SERVER_ERROR"
                | "SERVICE_UNAVAILABLE"
                | "TOO_MANY_REQUESTS"
                | "TEMPORARILY_UNAVAILABLE"
                | "SERVER_ERROR"
        )
    )
}

/// A non-JSON error body in a few words. Plain text is quoted whole (it is redacted before
/// it is cut, issue 12); an HTML page (a proxy's error page) is summarised, never pasted:
/// its size and its `<title>` (issue 13). A body that only repeats the status text says
/// nothing more and is left out.
fn snippet(body: &str, content_type: Option<&str>) -> String {
    let text = body.trim();
    let html = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("html"))
        || text.starts_with('<');
    if html {
        let lower = text.to_ascii_lowercase();
        let title = lower
            .find("<title>")
            .map(|start| start + "<title>".len())
            .and_then(|start| {
                lower[start..]
                    .find("</title>")
                    .map(|end| (start, start + end))
            })
            .map(|(start, end)| {
                text[start..end]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|t| !t.is_empty());
        return match title {
            Some(title) => format!("an HTML page ({} bytes) titled {title:?}", body.len()),
            None => format!("an HTML page ({} bytes)", body.len()),
        };
    }
    match text.split_once('\n') {
        Some((first, _)) => format!("{} ({} bytes in all)", first.trim(), body.len()),
        None => text.to_string(),
    }
}

/// `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86400)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86400)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn spec(access: &[&str]) -> ResponseSpec {
        ResponseSpec {
            access_token: access.iter().map(|s| Source::parse(s).unwrap()).collect(),
            refresh_token: vec![Source::parse("/refresh_token").unwrap()],
            expires_in: vec![Source::parse("/expires_in").unwrap()],
            refresh_expires_in: vec![],
            token_type: vec![Source::parse("/token_type").unwrap()],
            error: Some("/errors".into()),
        }
    }

    fn ok(body: &str) -> Response {
        Response {
            status: 200,
            body: body.into(),
            ..Default::default()
        }
    }

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn run(resp: &Response, spec: &ResponseSpec) -> Result<Obtained, ProviderError> {
        interpret(
            resp,
            spec,
            SystemTime::UNIX_EPOCH + T0,
            SystemTime::UNIX_EPOCH + T0 + Duration::from_millis(300),
            Duration::from_secs(3600),
            Via::Login,
            "login",
        )
    }

    fn jwt(claims: &str) -> String {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig")
    }

    fn cookie(value: &str, max_age: Option<Duration>, expires: Option<SystemTime>) -> Response {
        let mut resp = ok("{}");
        resp.cookies.push(Cookie {
            name: "access-token".into(),
            value: value.into(),
            max_age,
            expires,
        });
        resp
    }

    /// Issue 11: each expiry source is bounded (no overflow, no panic) and anything that
    /// is not a usable lifetime is a malformed answer, never the default.
    #[test]
    fn expiry_sources_are_bounded_and_bad_ones_are_malformed_answers() {
        let t0 = SystemTime::UNIX_EPOCH + T0;
        let year = t0 + MAX_LIFETIME;
        let s = spec(&["/access_token", "cookie:access-token"]);
        let body = |extra: &str| ok(&format!(r#"{{"access_token":"tok",{extra}}}"#));
        let with_token = |token: &str| ok(&format!(r#"{{"access_token":"{token}"}}"#));
        let days = |d: u64| Duration::from_secs(d * 86_400);
        // (case, response, Some(expected expiry) or None for a malformed answer)
        let cases: Vec<(&str, Response, Option<SystemTime>)> = vec![
            (
                "expires_in 60",
                body(r#""expires_in":60"#),
                Some(t0 + Duration::from_secs(60)),
            ),
            (
                "expires_in \"60\"",
                body(r#""expires_in":" 60 ""#),
                Some(t0 + Duration::from_secs(60)),
            ),
            ("expires_in 1e20", body(r#""expires_in":1e20"#), Some(year)),
            (
                "expires_in 2 years",
                body(r#""expires_in":63072000"#),
                Some(year),
            ),
            (
                "expires_in null is absent",
                body(r#""expires_in":null"#),
                Some(t0 + Duration::from_secs(3600)),
            ),
            ("expires_in 0", body(r#""expires_in":0"#), None),
            ("expires_in 1.5", body(r#""expires_in":1.5"#), None),
            ("expires_in negative", body(r#""expires_in":-60"#), None),
            ("expires_in NaN", body(r#""expires_in":"NaN""#), None),
            ("expires_in inf", body(r#""expires_in":"inf""#), None),
            (
                "expires_in -infinity",
                body(r#""expires_in":"-infinity""#),
                None,
            ),
            ("expires_in text", body(r#""expires_in":"soon""#), None),
            ("expires_in object", body(r#""expires_in":{}"#), None),
            (
                "jwt exp",
                with_token(&jwt(r#"{"exp":1700000500}"#)),
                Some(t0 + Duration::from_secs(500)),
            ),
            (
                "jwt exp in ms",
                with_token(&jwt(r#"{"exp":1700000500000}"#)),
                Some(year),
            ),
            (
                "jwt exp 1e20",
                with_token(&jwt(r#"{"exp":1e20}"#)),
                Some(year),
            ),
            (
                "jwt exp 9.3e18",
                with_token(&jwt(r#"{"exp":9.3e18}"#)),
                Some(year),
            ),
            (
                "jwt exp in the past",
                with_token(&jwt(r#"{"exp":1600000000}"#)),
                None,
            ),
            (
                "jwt exp now",
                with_token(&jwt(r#"{"exp":1700000001}"#)),
                None,
            ),
            ("jwt exp negative", with_token(&jwt(r#"{"exp":-5}"#)), None),
            (
                "jwt exp text",
                with_token(&jwt(r#"{"exp":"tomorrow"}"#)),
                None,
            ),
            (
                "jwt without exp",
                with_token(&jwt(r#"{"sub":"x"}"#)),
                Some(t0 + Duration::from_secs(3600)),
            ),
            (
                "max-age 15",
                cookie("c", Some(Duration::from_secs(15)), None),
                Some(t0 + Duration::from_secs(15)),
            ),
            (
                "max-age i64::MAX",
                cookie("c", Some(Duration::from_secs(i64::MAX as u64)), None),
                Some(year),
            ),
            (
                "max-age u64::MAX",
                cookie("c", Some(Duration::MAX), None),
                Some(year),
            ),
            (
                "max-age 300000000000",
                cookie("c", Some(Duration::from_secs(300_000_000_000)), None),
                Some(year),
            ),
            ("max-age 0", cookie("c", Some(Duration::ZERO), None), None),
            (
                "expires tomorrow",
                cookie("c", None, Some(t0 + days(1))),
                Some(t0 + days(1)),
            ),
            (
                "expires in 9999",
                cookie("c", None, Some(bounds::max_time())),
                Some(year),
            ),
            (
                "expires in 2015",
                cookie(
                    "c",
                    None,
                    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)),
                ),
                None,
            ),
        ];
        for (case, resp, want) in cases {
            let got = run(&resp, &s);
            match (want, got) {
                (Some(at), Ok(o)) => assert_eq!(o.expires_at, at, "{case}"),
                (None, Err(e)) => {
                    assert_eq!(
                        (e.kind(), e.maybe_processed()),
                        ("transient", true),
                        "{case}: {e}"
                    );
                    assert!(
                        e.to_string().starts_with("malformed answer: login: "),
                        "{case}: {e}"
                    );
                }
                (want, got) => panic!("{case}: expected {want:?}, got {got:?}"),
            }
        }
        // The refresh token's lifetime is bounded the same way.
        let mut s = spec(&["/access_token"]);
        s.refresh_expires_in = vec![Source::parse("/refresh_expires_in").unwrap()];
        let o = run(
            &body(r#""refresh_token":"r","refresh_expires_in":1e300"#),
            &s,
        )
        .unwrap();
        assert_eq!(o.refresh_expires_at, Some(year));
        let e = run(&body(r#""refresh_token":"r","refresh_expires_in":-1"#), &s).unwrap_err();
        assert!(e.to_string().starts_with("malformed answer: "), "{e}");
    }

    /// SPEC §4: a token is 1 byte to 16 KiB of visible ASCII; anything else is refused with
    /// a message that does not quote it.
    #[test]
    fn tokens_are_non_empty_visible_ascii_of_bounded_length() {
        let long_ok = "a".repeat(MAX_TOKEN_LEN);
        let too_long = "a".repeat(MAX_TOKEN_LEN + 1);
        let cases: [(&str, &str, bool); 13] = [
            ("plain", "abc.DEF-123_~+/=", true),
            (
                "every visible byte",
                "!\"#$%&'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~",
                true,
            ),
            ("16 KiB", &long_ok, true),
            ("empty", "", false),
            ("16 KiB + 1", &too_long, false),
            ("newline injection", "abc\nLD_PRELOAD=/tmp/evil.so", false),
            ("whitespace only", "   ", false),
            ("inner space", "abc def", false),
            ("tab", "abc\tdef", false),
            ("carriage return", "abc\r", false),
            ("escape", "abc\u{1b}[2J", false),
            ("delete", "abc\u{7f}", false),
            ("non-ASCII", "tökén", false),
        ];
        for (case, token, accepted) in cases {
            let got = accept_token(token);
            assert_eq!(got.is_ok(), accepted, "{case}: {got:?}");
            if let Err(m) = got {
                assert!(token.len() < 3 || !m.contains(token), "{case}: {m}");
            }
        }
        // Through `interpret`: the access and the refresh token, never quoted.
        let s = spec(&["/access_token"]);
        let e = run(
            &ok(r#"{"access_token":"abc\nLD_PRELOAD=/tmp/evil.so"}"#),
            &s,
        )
        .unwrap_err();
        assert_eq!((e.kind(), e.maybe_processed()), ("transient", true));
        assert!(e.to_string().starts_with("malformed answer: "), "{e}");
        assert!(!e.to_string().contains("LD_PRELOAD"), "{e}");
        let e = run(&ok(r#"{"access_token":"ok","refresh_token":"r e f"}"#), &s).unwrap_err();
        assert!(e.to_string().contains("refresh token"), "{e}");
        // A token type that could inject is replaced by the default.
        let o = run(
            &ok(r#"{"access_token":"ok","token_type":"Bearer\nX=1"}"#),
            &s,
        )
        .unwrap();
        assert_eq!(o.token_type, "Bearer");
    }

    #[test]
    fn expires_in_wins_and_token_type_is_normalised() {
        let o = run(&ok(r#"{"access_token":"a","expires_in":"60","token_type":"bearer","refresh_token":"r"}"#), &spec(&["/access_token"])).unwrap();
        assert_eq!(
            o.expires_at,
            SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(60)
        );
        assert_eq!(
            (o.token_type.as_str(), o.expiry_source),
            ("Bearer", "expires_in")
        );
        assert_eq!(o.refresh_token.unwrap().expose_secret(), "r");
    }

    #[test]
    fn expiry_falls_back_to_jwt_exp_then_cookie_then_default() {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":1700000500}"#);
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig");
        let o = run(
            &ok(&format!(r#"{{"access_token":"{jwt}"}}"#)),
            &spec(&["/access_token"]),
        )
        .unwrap();
        assert_eq!(
            (o.expires_at, o.expiry_source),
            (
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_500),
                "jwt"
            )
        );

        let mut resp = ok("{}");
        resp.cookies.push(Cookie {
            name: "access-token".into(),
            value: "c".into(),
            max_age: Some(Duration::from_secs(15)),
            expires: None,
        });
        let o = run(&resp, &spec(&["/access_token", "cookie:access-token"])).unwrap();
        assert_eq!(o.access_token.expose_secret(), "c");
        assert_eq!(
            (o.expires_at, o.expiry_source),
            (
                SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(15),
                "cookie"
            )
        );

        let o = run(
            &ok(r#"{"access_token":"opaque"}"#),
            &spec(&["/access_token"]),
        )
        .unwrap();
        assert_eq!(o.expiry_source, "default");
    }

    #[test]
    fn graphql_errors_with_http_200_are_rejections() {
        let body = r#"{"errors":[{"message":"Unauthorized","extensions":{"code":"UNAUTHENTICATED","originalError":{"statusCode":401}}}],"data":null}"#;
        let e = run(&ok(body), &spec(&["/data/createToken/token"])).unwrap_err();
        assert_eq!(e.kind(), "rejected", "{e}");
        assert!(e.to_string().contains("Unauthorized"), "{e}");
        let body = r#"{"errors":[{"message":"boom","extensions":{"code":"INTERNAL_SERVER_ERROR"}}],"data":null}"#;
        assert_eq!(
            run(&ok(body), &spec(&["/x"])).unwrap_err().kind(),
            "transient"
        );
        // An empty errors array or null is not an error.
        assert!(
            run(
                &ok(r#"{"errors":null,"access_token":"a"}"#),
                &spec(&["/access_token"])
            )
            .is_ok()
        );
    }

    #[test]
    fn error_bodies_say_each_thing_once_and_html_is_summarised() {
        let s = spec(&["/access_token"]);
        let resp = |body: &str, ctype: &str| Response {
            status: 502,
            body: body.into(),
            headers: vec![("content-type".into(), ctype.into())],
            cookies: vec![],
        };
        #[rustfmt::skip]
        let rows = [
            (r#"{"error":"Client authentication failed","message":"Client authentication failed"}"#, "application/json",
             "login: HTTP 502: Client authentication failed"),
            ("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
             "text/html", "login: HTTP 502: an HTML page (136 bytes) titled \"502 Bad Gateway\""),
            ("<!DOCTYPE html><p>down</p>", "text/plain", "login: HTTP 502: an HTML page (26 bytes)"),
            ("upstream timed out\nat 10.0.0.1\n", "text/plain", "login: HTTP 502: upstream timed out (31 bytes in all)"),
        ];
        for (body, ctype, expected) in rows {
            let e = run(&resp(body, ctype), &s).unwrap_err();
            assert_eq!(e.to_string(), expected);
        }
    }

    #[test]
    fn statuses_are_classified() {
        let s = spec(&["/access_token"]);
        let resp = |status, body: &str, headers: Vec<(String, String)>| Response {
            status,
            body: body.into(),
            headers,
            cookies: vec![],
        };
        let e = run(&resp(429, "", vec![("retry-after".into(), "7".into())]), &s).unwrap_err();
        assert_eq!(
            (e.kind(), e.retry_after()),
            ("transient", Some(Duration::from_secs(7)))
        );
        assert_eq!(
            run(&resp(503, "<html>", vec![]), &s).unwrap_err().kind(),
            "transient"
        );
        let e = run(
            &resp(
                400,
                r#"{"error":"invalid_grant","error_description":"expired"}"#,
                vec![],
            ),
            &s,
        )
        .unwrap_err();
        assert_eq!(e.kind(), "rejected");
        assert!(e.to_string().contains("invalid_grant: expired"), "{e}");
        assert_eq!(
            run(&resp(401, "", vec![]), &s).unwrap_err().kind(),
            "rejected"
        );
        assert_eq!(
            run(&resp(302, "", vec![]), &s).unwrap_err().kind(),
            "rejected"
        );
        for status in [404, 405] {
            let e = run(&resp(status, "not found", vec![]), &s).unwrap_err();
            assert_eq!(e.kind(), "misconfigured");
            assert_eq!(
                e.to_string(),
                format!("login: HTTP {status}: check base_url/token_url")
            );
        }
        assert_eq!(run(&ok("not json"), &s).unwrap_err().kind(), "transient");
        assert_eq!(
            run(&ok(r#"{"access_token":""}"#), &s).unwrap_err().kind(),
            "transient"
        );
    }

    #[test]
    fn error_text_is_whole_and_retry_after_dates_parse() {
        // The excerpt is cut only after redaction, by the caller.
        let long = format!("{}secret", "x".repeat(200));
        let e = run(
            &Response {
                status: 400,
                body: long.clone(),
                ..Default::default()
            },
            &spec(&["/access_token"]),
        )
        .unwrap_err();
        assert!(e.to_string().ends_with(&long), "{e}");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777 - 30);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
