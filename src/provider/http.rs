//! The one engine: renders an [`Exchange`] with an account's variables, sends it with
//! reqwest (rustls), and hands the response to [`extract::interpret`]. Plain `http://` is
//! refused unless the host is loopback or the account sets `insecure_http` (SPEC §4 "TLS").

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::extract::{self, redact};
use super::template::{self, Vars};
use super::{Body, Exchange, Obtained, ProviderError, ProviderSpec, Via};

/// Largest response body read (a token response is a few KiB).
const MAX_BODY: usize = 1 << 20;

/// An account's provider, ready to call: the exchange spec plus everything needed to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// `pontotel`, …, `oauth2`, `http`.
    pub name: String,
    /// The exchanges.
    pub spec: ProviderSpec,
    /// Template variables (credentials, base_url, vars).
    pub vars: VarsEq,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Allow `http://` to non-loopback hosts.
    pub insecure_http: bool,
    /// Lifetime assumed when the response has no expiry.
    pub default_lifetime: Duration,
}

/// [`Vars`] compared by value (for reload diffs), never printed.
#[derive(Debug, Clone, Default)]
pub struct VarsEq(pub Vars);

impl PartialEq for VarsEq {
    fn eq(&self, other: &Self) -> bool {
        self.0.0.len() == other.0.0.len()
            && self
                .0
                .0
                .iter()
                .zip(other.0.0.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && va.expose_secret() == vb.expose_secret())
    }
}

impl Provider {
    /// Logs in with the credentials.
    pub async fn login(&self, client: &reqwest::Client) -> Result<Obtained, ProviderError> {
        self.run(client, &self.spec.login, &self.vars.0, Via::Login)
            .await
    }

    /// Uses a held refresh token. Without a refresh exchange this logs in.
    pub async fn refresh(
        &self,
        client: &reqwest::Client,
        refresh_token: &SecretString,
    ) -> Result<Obtained, ProviderError> {
        match &self.spec.refresh {
            Some(exchange) => {
                let vars = self.vars.0.with("refresh_token", refresh_token.clone());
                self.run(client, exchange, &vars, Via::Refresh).await
            }
            None => self.login(client).await,
        }
    }

    /// Whether the provider has a refresh exchange.
    pub fn can_refresh(&self) -> bool {
        self.spec.refresh.is_some()
    }

    /// Whether refresh responses carry a new refresh token (which may replace, i.e. spend,
    /// the one sent).
    pub fn rotates(&self) -> bool {
        self.can_refresh() && !self.spec.response.refresh_token.is_empty()
    }

    /// Whether logging in means sending the configured refresh token, which a rotating
    /// provider has spent after the first refresh: OAuth2 `grant = "refresh_token"`, or an
    /// `http` login that uses `refresh_token`. (iTFLEX's integrator key is pre-shared and
    /// never spent.) Then a possibly spent held token is retried rather than "logging in".
    pub fn login_sends_refresh_token(&self) -> bool {
        match self.name.as_str() {
            "oauth2" => self
                .vars
                .0
                .0
                .get("grant")
                .is_some_and(|g| g.expose_secret() == "refresh_token"),
            "http" => format!("{:?}", self.spec.login).contains("refresh_token"),
            _ => false,
        }
    }

    async fn run(
        &self,
        client: &reqwest::Client,
        exchange: &Exchange,
        vars: &Vars,
        via: Via,
    ) -> Result<Obtained, ProviderError> {
        // Messages pass through redaction: a server may echo a credential back.
        self.send(client, exchange, vars, via)
            .await
            .map_err(|e| e.map_message(|m| redact(m, vars.secrets())))
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        exchange: &Exchange,
        vars: &Vars,
        via: Via,
    ) -> Result<Obtained, ProviderError> {
        let env = template::environment();
        let ctx = vars.context();
        let malformed = |message: String| ProviderError::Malformed { message };
        let url_text = template::render(env, &exchange.url, &ctx)
            .map_err(|m| malformed(format!("{} url: {m}", via.as_str())))?;
        let url = reqwest::Url::parse(&url_text)
            .map_err(|e| malformed(format!("{} url: {e}", via.as_str())))?;
        check_scheme(&url, self.insecure_http).map_err(malformed)?;
        let what = format!("{} to {}", via.as_str(), display_url(&url));
        let method = reqwest::Method::from_bytes(exchange.method.as_bytes())
            .map_err(|_| malformed(format!("{what}: bad method {:?}", exchange.method)))?;
        let mut request = client
            .request(method, url)
            .timeout(self.timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        for (name, value) in &exchange.headers {
            let value = template::render(env, value, &ctx)
                .map_err(|m| malformed(format!("{what}: header {name}: {m}")))?;
            if !value.is_empty() {
                request = request.header(name.as_str(), value);
            }
        }
        request = match &exchange.body {
            Body::Empty => request,
            Body::Json(tree) => {
                let rendered = render_json(env, tree, &ctx)
                    .map_err(|m| malformed(format!("{what}: json body: {m}")))?;
                request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(rendered.to_string())
            }
            Body::Form(fields) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (name, value) in fields {
                    let value = template::render(env, value, &ctx)
                        .map_err(|m| malformed(format!("{what}: form field {name}: {m}")))?;
                    if !value.is_empty() {
                        form.append_pair(name, &value);
                    }
                }
                request
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.finish())
            }
        };
        let requested_at = SystemTime::now();
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&what, e, self.timeout))?;
        let resp = read_response(response)
            .await
            .map_err(|e| transport_error(&what, e, self.timeout))?;
        extract::interpret(
            &resp,
            &self.spec.response,
            requested_at,
            self.default_lifetime,
            via,
            &what,
        )
    }
}

fn render_json(
    env: &minijinja::Environment<'static>,
    tree: &Value,
    ctx: &template::Context,
) -> Result<Value, String> {
    Ok(match tree {
        Value::String(s) => Value::String(template::render(env, s, ctx)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_json(env, v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(env, v, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

pub(crate) async fn read_response(
    mut response: reqwest::Response,
) -> Result<extract::Response, reqwest::Error> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let cookies = response
        .cookies()
        .map(|c| extract::Cookie {
            name: c.name().to_string(),
            value: c.value().to_string(),
            max_age: c.max_age(),
            expires: c.expires(),
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            body.truncate(MAX_BODY);
            break;
        }
    }
    Ok(extract::Response {
        status,
        headers,
        cookies,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn transport_error(what: &str, e: reqwest::Error, timeout: Duration) -> ProviderError {
    let is_connect = e.is_connect();
    let message = if e.is_timeout() {
        format!(
            "{what}: timed out after {}",
            humantime::format_duration(timeout)
        )
    } else if e.is_connect() {
        format!("{what}: cannot connect: {}", error_chain(&e.without_url()))
    } else {
        format!("{what}: {}", error_chain(&e.without_url()))
    };
    // A refused connection never reached the server; anything later may have been processed.
    ProviderError::Transient {
        message,
        retry_after: None,
        maybe_processed: !is_connect,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// The URL without query or fragment (which may carry keys), for messages.
pub fn display_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// `https` always; `http` only to loopback, unless `insecure_http`.
pub fn check_scheme(url: &url::Url, insecure_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "{}: plain http is only allowed to loopback addresses; use https or set insecure_http = true",
            display_url(url)
        )),
        other => Err(format!(
            "{}: unsupported scheme {other:?}",
            display_url(url)
        )),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        let ok = |u: &str, insecure| check_scheme(&url::Url::parse(u).unwrap(), insecure).is_ok();
        assert!(ok("http://127.0.0.1:8/x", false));
        assert!(ok("http://[::1]/x", false));
        assert!(ok("http://localhost/x", false));
        assert!(ok("https://api.example.com", false));
        assert!(!ok("http://api.example.com", false));
        assert!(ok("http://api.example.com", true));
        assert!(!ok("ftp://127.0.0.1", true));
    }

    #[test]
    fn display_url_drops_query_and_userinfo() {
        let u = reqwest::Url::parse("https://u:p@h.example/a?key=secret#f").unwrap();
        assert_eq!(display_url(&u), "https://h.example/a");
    }
}
