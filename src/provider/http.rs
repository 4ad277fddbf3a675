//! The one engine: renders an [`Exchange`] with an account's variables, sends it with
//! reqwest (rustls), and hands the response to [`extract::interpret`]. Plain `http://` is
//! refused unless the host is loopback or the account sets `insecure_http` (SPEC §4 "TLS").

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::extract;
use super::template::{self, Vars};
use super::{Body, Exchange, Obtained, ProviderError, ProviderSpec, Via};

/// Largest response body read (a token response is a few KiB).
const MAX_BODY: usize = 1 << 20;

/// Characters of an error message kept (after redaction): the exchange, the status and
/// about 250 characters of what the server said.
const MAX_MESSAGE: usize = 320;

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
    /// `oauth2`'s grant (`None` for the other providers).
    pub grant: Option<super::Grant>,
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
            "oauth2" => self.grant == Some(super::Grant::RefreshToken),
            "http" => self
                .spec
                .login
                .templates()
                .into_iter()
                .any(|t| template::reads(t, "refresh_token")),
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
        // Messages pass through redaction, whole, before the cut: a server may echo a
        // credential back, in any encoding, anywhere in its answer (issue 12). The
        // account's own values are passed too, in case the registry does not hold them.
        self.send(client, exchange, vars, via).await.map_err(|e| {
            e.map_message(|m| crate::redact::excerpt_with(m, vars.secrets(), MAX_MESSAGE))
        })
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
            SystemTime::now(),
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
    // reqwest parses `Set-Cookie` with the `cookie` crate, which maps a negative `Max-Age`
    // to 0 and one too large for an i64 to i64::MAX seconds; `extract` bounds both.
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

/// The one loopback rule (providers, the Vault sink, the AWS endpoint): `127.0.0.0/8`, `::1`,
/// and the name `localhost` or any name under it (`api.localhost`), in any case, with or
/// without the root's trailing dot: RFC 6761 §6.3 reserves them for loopback. Other names
/// (even ones that resolve to 127.0.0.1) and IPv4-mapped IPv6 addresses are not loopback.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
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
    fn loopback_rule_table() {
        // (URL, loopback?): RFC 6761 names in any case, 127.0.0.0/8 and ::1; nothing else.
        let cases = [
            ("http://127.0.0.1/", true),
            ("http://127.255.255.254:8/", true),
            ("http://127.1/", true), // the URL parser reads it as 127.0.0.1
            ("http://[::1]:9/", true),
            ("http://localhost/", true),
            ("http://LOCALHOST/", true),
            ("http://localhost./", true),
            ("http://api.localhost/", true),
            ("http://API.LocalHost/", true),
            ("http://a.b.localhost/", true),
            ("http://128.0.0.1/", false),
            ("http://0.0.0.0/", false),
            ("http://[::]/", false),
            ("http://[::ffff:127.0.0.1]/", false),
            ("http://localhost.example.com/", false),
            ("http://notlocalhost/", false),
            ("http://localhostx/", false),
            ("http://example.com/", false),
            ("http://10.0.0.1/", false),
        ];
        for (url, want) in cases {
            let got = is_loopback(&url::Url::parse(url).unwrap());
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn a_login_sends_the_refresh_token_when_a_template_reads_it() {
        // Typed (minijinja's variable analysis), not a search of the spec's Debug text.
        let account = |login_json: &str| {
            let text = format!(
                "[[account]]\nname = \"h\"\nprovider = \"http\"\nrefresh_token = \"seed\"\nusername = \"u\"\n\
                 [account.login]\nurl = \"https://h.example/auth\"\nmethod = \"POST\"\njson = {login_json}\n\
                 [account.response]\naccess_token = \"/t\"\n"
            );
            crate::settings::load_str_for_tests(&text).remove(0)
        };
        for (json, sends) in [
            (r#"{ token = "{{ refresh_token }}" }"#, true),
            (r#"{ nested = { t = "{{refresh_token|trim}}" } }"#, true),
            (
                r#"{ user = "{{ username }}", note = "refresh_token" }"#,
                false,
            ),
        ] {
            assert_eq!(
                account(json).provider.login_sends_refresh_token(),
                sends,
                "{json}"
            );
        }
    }

    #[test]
    fn display_url_drops_query_and_userinfo() {
        let u = reqwest::Url::parse("https://u:p@h.example/a?key=secret#f").unwrap();
        assert_eq!(display_url(&u), "https://h.example/a");
    }
}
