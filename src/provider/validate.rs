//! The provider half of account validation, called by `crate::settings::account`: a
//! preset's exchanges merged with the account's overrides, then each exchange and the
//! response spec checked (templates against the variables the account sets, methods,
//! header names, JSON pointers), and the `oauth2` options (grant, client authentication,
//! the credentials they need). Works on `crate::config::raw` types and reports through the
//! config [`Validator`], so it needs neither the whole config nor the sinks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use crate::config::error::Validator;
use crate::config::raw::{ExchangeConfig, ResponseConfig, Sources};
use crate::provider::template::{self, Vars};
use crate::provider::{Body, ClientAuth, Exchange, Grant, ResponseSpec, Source as ValueSource};

/// The preset's exchange with the account's overrides applied.
pub fn merge_exchange(
    base: Option<&ExchangeConfig>,
    over: Option<&ExchangeConfig>,
) -> ExchangeConfig {
    let mut merged = base.cloned().unwrap_or_default();
    let Some(over) = over else { return merged };
    if over.url.is_some() {
        merged.url = over.url.clone();
    }
    if over.method.is_some() {
        merged.method = over.method.clone();
    }
    // A body given by the account replaces the preset's body, whatever its kind.
    if over.json.is_some() || over.form.is_some() {
        merged.json = over.json.clone();
        merged.form = over.form.clone();
    }
    if let Some(headers) = &over.headers {
        let mut all = merged.headers.take().unwrap_or_default();
        all.extend(headers.clone());
        merged.headers = Some(all);
    }
    merged
}

/// The preset's response spec with the account's overrides applied.
pub fn merge_response(
    base: Option<&ResponseConfig>,
    over: Option<&ResponseConfig>,
) -> ResponseConfig {
    let mut merged = base.cloned().unwrap_or_default();
    let Some(over) = over else { return merged };
    macro_rules! take {
        ($($f:ident),*) => { $( if over.$f.is_some() { merged.$f = over.$f.clone(); } )* };
    }
    take!(
        access_token,
        refresh_token,
        expires_in,
        refresh_expires_in,
        token_type,
        error
    );
    merged
}

/// Checks one template; a variable the account does not set is an error only where the
/// user wrote the template (a preset's optional variables are fine).
pub fn check_template(
    v: &mut Validator<'_>,
    field: &str,
    source: &str,
    known: &[&str],
    user_written: bool,
) -> bool {
    let env = template::environment();
    match template::check(env, source, known) {
        Err(m) => {
            v.error(field, m);
            false
        }
        Ok(missing) if user_written && !missing.is_empty() => {
            v.error(
                field,
                format!(
                    "template uses {}, which this account does not set (known: {})",
                    missing.join(", "),
                    known.join(", ")
                ),
            );
            false
        }
        Ok(_) => true,
    }
}

/// Checks a merged exchange; `user` is what the account itself wrote.
pub fn validate_exchange(
    v: &mut Validator<'_>,
    raw: &ExchangeConfig,
    user: Option<&ExchangeConfig>,
    known: &[&str],
) -> Option<Exchange> {
    let mut ok = true;
    let url = match &raw.url {
        Some(u) => u.clone(),
        None => {
            v.error("url", "missing: the exchange needs a url");
            return None;
        }
    };
    ok &= check_template(v, "url", &url, known, user.is_some_and(|u| u.url.is_some()));
    let method = raw
        .method
        .clone()
        .unwrap_or_else(|| "POST".into())
        .to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH") {
        v.error(
            "method",
            format!("{method:?} is not supported: expected GET, POST, PUT or PATCH"),
        );
        ok = false;
    }
    let user_body = user.is_some_and(|u| u.json.is_some() || u.form.is_some());
    let body = match (&raw.json, &raw.form) {
        (Some(_), Some(_)) => {
            v.error("form", "set either json or form, not both");
            ok = false;
            Body::Empty
        }
        (Some(json), None) => {
            let value = serde_json::to_value(json).unwrap_or(serde_json::Value::Null);
            ok &= check_json_templates(&mut v.key("json"), &value, known, user_body);
            Body::Json(shared_json(value))
        }
        (None, Some(form)) => {
            let mut fv = v.key("form");
            for (k, val) in form {
                ok &= check_template(&mut fv, k, val, known, user_body);
            }
            Body::Form(form.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        (None, None) => Body::Empty,
    };
    let headers: BTreeMap<String, String> = raw.headers.clone().unwrap_or_default();
    let user_headers = user.and_then(|u| u.headers.as_ref());
    let mut hv = v.key("headers");
    for (name, value) in &headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            hv.error(name, format!("{name:?} is not a header name"));
            ok = false;
        }
        ok &= check_template(
            &mut hv,
            name,
            value,
            known,
            user_headers.is_some_and(|h| h.contains_key(name)),
        );
    }
    ok.then(|| Exchange {
        url,
        method,
        body,
        headers: headers.into_iter().collect(),
    })
}

fn check_json_templates(
    v: &mut Validator<'_>,
    value: &serde_json::Value,
    known: &[&str],
    user: bool,
) -> bool {
    match value {
        serde_json::Value::String(s) => check_template(v, "", s, known, user),
        serde_json::Value::Array(items) => {
            let results: Vec<bool> = items
                .iter()
                .map(|i| check_json_templates(v, i, known, user))
                .collect();
            results.into_iter().all(|ok| ok)
        }
        serde_json::Value::Object(map) => {
            // Check every field (report every problem), not just up to the first bad one.
            let results: Vec<bool> = map
                .iter()
                .map(|(k, i)| check_json_templates(&mut v.key(k), i, known, user))
                .collect();
            results.into_iter().all(|ok| ok)
        }
        _ => true,
    }
}

/// Checks a merged response spec.
pub fn validate_response(v: &mut Validator<'_>, raw: &ResponseConfig) -> Option<ResponseSpec> {
    let mut ok = true;
    let mut sources = |field: &str, value: &Option<Sources>| -> Vec<ValueSource> {
        let mut out = Vec::new();
        for s in value.as_ref().map(Sources::to_vec).unwrap_or_default() {
            match ValueSource::parse(&s) {
                Ok(src) => out.push(src),
                Err(m) => {
                    v.error(field, m);
                    ok = false;
                }
            }
        }
        out
    };
    let spec = ResponseSpec {
        access_token: sources("access_token", &raw.access_token),
        refresh_token: sources("refresh_token", &raw.refresh_token),
        expires_in: sources("expires_in", &raw.expires_in),
        refresh_expires_in: sources("refresh_expires_in", &raw.refresh_expires_in),
        token_type: sources("token_type", &raw.token_type),
        error: raw.error.clone(),
    };
    if spec.access_token.is_empty() && ok {
        v.error("access_token", "missing: where is the access token in the response? e.g. access_token = \"/access_token\"");
        ok = false;
    }
    if let Some(p) = &raw.error
        && !p.is_empty()
        && !p.starts_with('/')
    {
        v.error(
            "error",
            format!("{p:?} is not a JSON pointer: expected e.g. \"/errors\""),
        );
        ok = false;
    }
    ok.then_some(spec)
}

/// `provider = "oauth2"`: `grant` and `client_auth` (defaults `client_credentials` and
/// `basic`; serde already refused any other word, with its location) become template
/// variables (the preset's templates branch on them), and the credentials that grant and
/// method send are required. `has_credential` says whether the account sets a credential
/// field. False when something is missing (recorded in `v`).
pub fn oauth2(
    v: &mut Validator<'_>,
    grant: Grant,
    client_auth: ClientAuth,
    has_credential: impl Fn(&str) -> bool,
    vars: &mut Vars,
) -> bool {
    let mut ok = true;
    vars.set_plain("grant", grant.as_str());
    vars.set_plain("client_auth", client_auth.as_str());
    let mut needed: Vec<&str> = grant.credentials().to_vec();
    if client_auth == ClientAuth::Basic && !needed.contains(&"client_secret") {
        needed.push("client_secret");
    }
    for field in needed {
        if !has_credential(field) {
            v.error(
                field,
                format!(
                    "required by grant = {:?} with client_auth = {:?}",
                    grant.as_str(),
                    client_auth.as_str()
                ),
            );
            ok = false;
        }
    }
    ok
}

/// The one copy of a JSON body template that equal bodies share. Every account of a preset
/// sends the same template (`{"username": "{{ username }}", …}`), ~680 bytes as a `Value`:
/// 6.8 MB at 10,000 accounts (docs/BENCHMARKS.md "Memory at 10,000 accounts"). Held
/// weakly, so a body no loaded config uses any more goes with its last account; the map
/// drops such entries whenever it has doubled since it last did (amortised O(1)).
pub(crate) fn shared_json(value: serde_json::Value) -> Arc<serde_json::Value> {
    struct Bodies {
        by_text: HashMap<String, Weak<serde_json::Value>>,
        pruned_at: usize,
    }
    static BODIES: LazyLock<Mutex<Bodies>> = LazyLock::new(|| {
        Mutex::new(Bodies {
            by_text: HashMap::new(),
            pruned_at: 0,
        })
    });
    let text = value.to_string();
    // A panic elsewhere while holding the lock leaves at worst a stale entry.
    let mut bodies = BODIES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = bodies.by_text.get(&text).and_then(Weak::upgrade) {
        return shared;
    }
    if bodies.by_text.len() >= 2 * bodies.pruned_at.max(16) {
        bodies.by_text.retain(|_, w| w.strong_count() > 0);
        bodies.pruned_at = bodies.by_text.len();
    }
    let shared = Arc::new(value);
    bodies.by_text.insert(text, Arc::downgrade(&shared));
    shared
}

#[cfg(test)]
mod shared_json_tests {
    use super::shared_json;
    use std::sync::Arc;

    #[test]
    fn equal_json_bodies_share_one_copy() {
        // Proves the interning: equal templates are one allocation, others are not, and a
        // body whose accounts are gone is built afresh.
        let body = || serde_json::json!({"username": "{{ username }}", "tag": "shared-json-test"});
        let a = shared_json(body());
        let b = shared_json(body());
        assert!(Arc::ptr_eq(&a, &b), "equal bodies must share one copy");
        let other = shared_json(serde_json::json!({"username": "{{ other }}"}));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(*a, body());
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert_eq!(
            weak.strong_count(),
            0,
            "the interner must not keep a body alive"
        );
        assert_eq!(*shared_json(body()), body());
    }
}
