//! Reading a provider's response: classify the outcome (success, transient, rejected) and
//! pull the access token, refresh token and expiry out of it. Pure: [`interpret`] takes the
//! response as data, so every quirk is unit-tested without a server.
//!
//! Expiry (SPEC §3): `expires_in` → the JWT's `exp` claim (decoded, not verified) → the
//! token cookie's `Max-Age`/`Expires` → `default_lifetime`.

use std::time::{Duration, SystemTime};

use base64::Engine;
use secrecy::SecretString;
use serde_json::Value;

use super::{Obtained, ProviderError, ResponseSpec, Source, Via};

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

/// Classifies `resp` and, on success, extracts the token. `what` names the exchange for
/// messages (e.g. `login to https://host/path`). Messages quote the server's text whole:
/// the caller redacts, cleans and only then cuts it (`crate::redact::excerpt_with`).
pub fn interpret(
    resp: &Response,
    spec: &ResponseSpec,
    requested_at: SystemTime,
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
            .unwrap_or_else(|| snippet(&resp.body));
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
    let (expires_at, expiry_source) =
        if let Some(secs) = find_seconds(resp, json.as_ref(), &spec.expires_in) {
            (requested_at + secs, "expires_in")
        } else if let Some(exp) = jwt_exp(&access_token) {
            (exp, "jwt")
        } else if let Some(at) = cookie_expiry(resp, &access_token, requested_at) {
            (at, "cookie")
        } else {
            (requested_at + default_lifetime, "default")
        };
    let refresh_token = find_string(resp, json.as_ref(), &spec.refresh_token);
    let refresh_expires_at = find_seconds(resp, json.as_ref(), &spec.refresh_expires_in)
        .map(|s| requested_at + s)
        .or_else(|| refresh_token.as_deref().and_then(jwt_exp));
    let token_type = find_string(resp, json.as_ref(), &spec.token_type)
        .filter(|t| t.len() <= 64)
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

fn show_source(s: &Source) -> String {
    match s {
        Source::Pointer(p) => format!("{p:?}"),
        Source::Cookie(c) => format!("cookie:{c}"),
        Source::Header(h) => format!("header:{h}"),
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

fn find_seconds(resp: &Response, json: Option<&Value>, sources: &[Source]) -> Option<Duration> {
    sources.iter().find_map(|s| {
        let secs = match lookup(resp, json, s)? {
            Value::Number(n) => n.as_f64()?,
            Value::String(v) => v.trim().parse::<f64>().ok()?,
            _ => return None,
        };
        (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(10.0 * 365.0 * 86400.0)))
    })
}

/// The `exp` claim of a JWT, decoded without verification (tokend only needs the time).
pub fn jwt_exp(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp.is_finite() && exp > 0.0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(exp))
}

fn cookie_expiry(resp: &Response, token: &str, requested_at: SystemTime) -> Option<SystemTime> {
    let cookie = resp.cookies.iter().find(|c| c.value == token)?;
    cookie
        .max_age
        .map(|age| requested_at + age)
        .or(cookie.expires)
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
        if let Some(Value::String(s)) = v.get(key) {
            parts.push(s.clone());
        }
    }
    if let Some(Value::String(code)) = v.pointer("/extensions/code") {
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

/// A non-JSON error body, whole: it is redacted before it is cut (issue 12).
fn snippet(body: &str) -> String {
    body.trim().to_string()
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
            Duration::from_secs(3600),
            Via::Login,
            "login",
        )
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
