//! The template language of exchanges (minijinja): how a request's URL, body leaves and
//! headers are rendered from an account's fields. Undefined variables are errors when
//! printed (a typo never sends an empty password) but may be tested (`is defined`).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use minijinja::{Environment, UndefinedBehavior, Value};
use secrecy::{ExposeSecret, SecretString};

/// Template variables: an account's fields and `[account.vars]`. Every value is kept as a
/// secret; only rendering exposes it. Plain ones (URLs, grant, scope) are not redacted
/// from messages.
#[derive(Clone, Default)]
pub struct Vars(pub BTreeMap<String, SecretString>, BTreeSet<String>);

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Vars {
    /// Sets a variable.
    pub fn set(&mut self, name: &str, value: SecretString) {
        self.0.insert(name.to_string(), value);
        self.1.remove(name);
    }

    /// Sets a plain (non-secret) variable.
    pub fn set_plain(&mut self, name: &str, value: &str) {
        self.0
            .insert(name.to_string(), SecretString::from(value.to_string()));
        self.1.insert(name.to_string());
    }

    /// A copy with one variable replaced (the held refresh token for a refresh exchange).
    pub fn with(&self, name: &str, value: SecretString) -> Vars {
        let mut v = self.clone();
        v.set(name, value);
        v
    }

    /// The names defined.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The values templates see, built once per request (not once per template).
    pub fn context(&self) -> Context {
        let map: BTreeMap<String, Value> = self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.expose_secret())))
            .collect();
        Context(Value::from(map))
    }

    /// Every secret value, to redact them from messages.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(|(k, _)| !self.1.contains(*k))
            .map(|(_, v)| v.expose_secret())
    }
}

/// What a template renders with (from [`Vars::context`]); holds exposed secrets, so it is
/// never printed.
pub struct Context(Value);

/// The environment every exchange template renders in (built once per process).
pub fn environment() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(build_environment)
}

fn build_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    // RFC 6749 §2.3.1: id and secret are form-urlencoded, joined by ':', then base64.
    env.add_function("basic_auth", |id: String, secret: String| -> String {
        let pair = format!("{}:{}", form_encode(&id), form_encode(&secret));
        base64::engine::general_purpose::STANDARD.encode(pair)
    });
    env
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Checks a template's syntax and returns the variables it reads that `known` lacks.
pub fn check(
    env: &Environment<'static>,
    source: &str,
    known: &[&str],
) -> Result<Vec<String>, String> {
    let template = env
        .template_from_str(source)
        .map_err(|e| format!("invalid template: {}", e.detail().unwrap_or("syntax error")))?;
    let mut missing: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| !known.contains(&name.as_str()) && !env.globals().any(|(g, _)| g == name))
        .collect();
    missing.sort();
    Ok(missing)
}

/// Whether a template reads the variable `name` (minijinja's own analysis of the
/// template, not a text search). A template that does not parse reads nothing.
pub fn reads(source: &str, name: &str) -> bool {
    environment()
        .template_from_str(source)
        .is_ok_and(|t| t.undeclared_variables(false).contains(name))
}

/// Renders a template. The error never includes variable values.
pub fn render(env: &Environment<'static>, source: &str, ctx: &Context) -> Result<String, String> {
    if !source.contains("{{") && !source.contains("{%") {
        return Ok(source.to_string());
    }
    env.render_str(source, &ctx.0).map_err(|e| match e.kind() {
        minijinja::ErrorKind::UndefinedError => {
            format!("template {source:?} uses a variable that is not set")
        }
        kind => format!("template {source:?} failed: {kind}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.set_plain("username", "ana \"x\"");
        v.set_plain("client_id", "id:1");
        v.set_plain("client_secret", "s&c");
        v
    }

    #[test]
    fn renders_graphql_literals_and_basic_auth() {
        let env = environment();
        let out = render(
            env,
            "createToken(login: {{ username | tojson }})",
            &vars().context(),
        )
        .unwrap();
        assert_eq!(out, r#"createToken(login: "ana \"x\"")"#);
        let out = render(
            env,
            "{{ basic_auth(client_id, client_secret) }}",
            &vars().context(),
        )
        .unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(out)
                .unwrap(),
            b"id%3A1:s%26c"
        );
    }

    #[test]
    fn printing_an_unset_variable_fails_but_testing_it_does_not() {
        let env = environment();
        assert!(
            render(env, "{{ password }}", &vars().context())
                .unwrap_err()
                .contains("not set")
        );
        assert_eq!(
            render(
                env,
                "{% if password is defined %}x{% endif %}",
                &vars().context()
            )
            .unwrap(),
            ""
        );
        assert_eq!(
            render(env, "{{ scope | default('') }}", &vars().context()).unwrap(),
            ""
        );
    }

    #[test]
    fn only_secret_values_are_listed_for_redaction() {
        let mut v = Vars::default();
        v.set_plain("base_url", "https://api.example.com");
        v.set("password", SecretString::from("hunter22"));
        assert_eq!(v.secrets().collect::<Vec<_>>(), vec!["hunter22"]);
        // A secret replacing a plain value is redacted again.
        v.set("base_url", SecretString::from("https://secret.example.com"));
        assert_eq!(v.secrets().count(), 2);
    }

    #[test]
    fn check_lists_unknown_variables() {
        let env = environment();
        assert_eq!(
            check(env, "{{ pasword }} {{ username }}", &["username"]).unwrap(),
            vec!["pasword"]
        );
        assert!(check(env, "{{ x", &[]).is_err());
    }
}
