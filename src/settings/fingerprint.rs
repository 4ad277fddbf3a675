//! The state fingerprint of an account (which saved state belongs to it), computed from
//! the validated provider spec and variables by [`super::account`]. It lives here, above
//! `provider` and `state`, because it joins the two.

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::provider::template::Vars;
use crate::provider::{Body, Exchange, ProviderSpec, ResponseSpec, Source as ValueSource};
use crate::state::Fingerprint;

/// The state fingerprint of an account: which saved state belongs to it (SPEC §4 "State
/// for an account whose provider settings or credentials changed is discarded").
///
/// Version 1 hashes an explicit serialisation, [`FingerprintV1`] as JSON: the provider
/// name, both exchanges (url, method, body, headers), the response spec and every variable
/// (credentials included, so a changed password discards the state), each in a fixed
/// order. SHA-256, hex of the first 16 bytes. Never `Debug` text: that changes with any
/// new field or dependency bump, and an upgrade would then silently discard every state
/// file (a lockout for `grant = "refresh_token"` accounts). A change to this format must
/// bump `version` and keep accepting the old value as a legacy alias.
///
/// The legacy alias is the value releases before version 1 wrote: a hash of the provider
/// name, the `Debug` text of the [`ProviderSpec`] and the variables. It is computed the
/// same way here, so state from those releases still loads without a login as long as
/// `ProviderSpec`'s `Debug` output is unchanged; `legacy_fingerprint_matches_todays_release`
/// pins it against state files that release wrote (`tests/data/state-v1/`).
pub fn fingerprint(provider: &str, spec: &ProviderSpec, vars: &Vars) -> Fingerprint {
    let v1 = FingerprintV1 {
        version: 1,
        provider,
        login: ExchangeV1::of(&spec.login),
        refresh: spec.refresh.as_ref().map(ExchangeV1::of),
        response: ResponseV1::of(&spec.response),
        vars: vars
            .0
            .iter()
            .map(|(k, val)| (k.as_str(), val.expose_secret()))
            .collect(),
    };
    let bytes = serde_json::to_vec(&v1).expect("a fingerprint serialises: strings and JSON only");
    Fingerprint {
        current: hex::encode(&Sha256::digest(&bytes)[..16]),
        legacy: Some(legacy_fingerprint(provider, spec, vars)),
    }
}

/// The fingerprint as releases before version 1 computed it (see [`fingerprint`]).
fn legacy_fingerprint(provider: &str, spec: &ProviderSpec, vars: &Vars) -> String {
    let mut h = Sha256::new();
    h.update(provider.as_bytes());
    h.update([0]);
    h.update(format!("{spec:?}").as_bytes());
    for (k, val) in &vars.0 {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([0]);
        h.update(val.expose_secret().as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// What version 1 of the fingerprint hashes. Field order is the serialisation order.
#[derive(serde::Serialize)]
struct FingerprintV1<'a> {
    version: u32,
    provider: &'a str,
    login: ExchangeV1<'a>,
    refresh: Option<ExchangeV1<'a>>,
    response: ResponseV1<'a>,
    /// Name → value, sorted by name (a `BTreeMap`).
    vars: Vec<(&'a str, &'a str)>,
}

#[derive(serde::Serialize)]
struct ExchangeV1<'a> {
    url: &'a str,
    method: &'a str,
    body: BodyV1<'a>,
    headers: Vec<(&'a str, &'a str)>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum BodyV1<'a> {
    Empty,
    /// Keys sorted at every level, whatever order serde_json's map keeps.
    Json(serde_json::Value),
    Form(Vec<(&'a str, &'a str)>),
}

#[derive(serde::Serialize)]
struct ResponseV1<'a> {
    access_token: Vec<String>,
    refresh_token: Vec<String>,
    expires_in: Vec<String>,
    refresh_expires_in: Vec<String>,
    token_type: Vec<String>,
    error: Option<&'a str>,
}

impl<'a> ExchangeV1<'a> {
    fn of(e: &'a Exchange) -> Self {
        let pairs = |v: &'a [(String, String)]| -> Vec<(&'a str, &'a str)> {
            v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
        };
        ExchangeV1 {
            url: &e.url,
            method: &e.method,
            body: match &e.body {
                Body::Empty => BodyV1::Empty,
                Body::Json(tree) => BodyV1::Json(sorted_json(tree)),
                Body::Form(fields) => BodyV1::Form(pairs(fields)),
            },
            headers: pairs(&e.headers),
        }
    }
}

impl<'a> ResponseV1<'a> {
    fn of(r: &'a ResponseSpec) -> Self {
        // As written in a config (Source's Display): the golden test pins this text.
        let sources =
            |v: &[ValueSource]| -> Vec<String> { v.iter().map(ToString::to_string).collect() };
        ResponseV1 {
            access_token: sources(&r.access_token),
            refresh_token: sources(&r.refresh_token),
            expires_in: sources(&r.expires_in),
            refresh_expires_in: sources(&r.refresh_expires_in),
            token_type: sources(&r.token_type),
            error: r.error.as_deref(),
        }
    }
}

/// `v` with object keys inserted in sorted order at every level, so the serialisation
/// does not depend on whether serde_json keeps insertion order (`preserve_order`).
fn sorted_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_json).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    /// The accounts of `tokend demo` as the release before the versioned fingerprint ran
    /// them, with the fingerprints it wrote into their state files (tests/data/state-v1).
    const DEMO: &str = include_str!("../../tests/data/state-v1/tokend.toml");
    const RELEASED: [(&str, &str); 6] = [
        ("pontotel", "3a70c9529138d446c4979d7aa1a782b7"),
        ("funcional", "870806b433ebd7ea2885158a8ed3deb4"),
        ("hubsoft", "677bc7ce344dd5aa7f9eac649a1ab822"),
        ("zarv", "1b5b99600409b300d3c41733b4115e10"),
        ("itflex", "4b0276d911a51c521dd07c4da57753bc"),
        ("oauth2", "5078192859bc546b350f6ea894a7c73d"),
    ];

    /// Every preset's state from that release still belongs to its account (legacy alias).
    #[test]
    fn legacy_fingerprint_matches_todays_release() {
        let accounts = crate::settings::load_str_for_tests(DEMO);
        for (name, released) in RELEASED {
            let a = accounts.iter().find(|a| a.name == name).unwrap();
            assert_eq!(a.fingerprint.legacy.as_deref(), Some(released), "{name}");
            assert!(released.to_string() == a.fingerprint, "{name}");
        }
    }

    /// Golden values of version 1: a change here discards every user's saved state, so it
    /// must come with a version bump and a legacy alias.
    #[test]
    fn fingerprint_v1_is_pinned() {
        let accounts = crate::settings::load_str_for_tests(DEMO);
        let got: Vec<(&str, &str)> = accounts
            .iter()
            .map(|a| (a.name.as_str(), a.fingerprint.current.as_str()))
            .collect();
        assert_eq!(got, GOLDEN_V1);
        // Any credential, URL or response change gives another value.
        let changed = crate::settings::load_str_for_tests(
            &DEMO.replace("\"demo-password\"", "\"other-password\""),
        );
        assert_ne!(changed[0].fingerprint.current, GOLDEN_V1[0].1);
        assert_eq!(
            changed[4].fingerprint.current, GOLDEN_V1[4].1,
            "itflex has no password"
        );
    }

    const GOLDEN_V1: [(&str, &str); 6] = [
        ("pontotel", "bc697a3763988b5fb35bf2f325cbb1fd"),
        ("funcional", "83b4794abc29768abe9f183e9f9dd826"),
        ("hubsoft", "742b4bc0a2ef56d8bb0dfc22bcebeee3"),
        ("zarv", "3fc1f4d885f0d3d1c6e26a1fbb02c966"),
        ("itflex", "026e80e60fb46570e0293dd8baa18cc2"),
        ("oauth2", "5186a39990a61053bb59cf309dfc8728"),
    ];
}
