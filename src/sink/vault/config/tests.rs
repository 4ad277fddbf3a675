//! Unit tests of the vault sink's settings: every field checked and located, defaults.

use super::*;
use crate::config::error::{Source, locate};
use crate::sink::SinkConfig;

/// Parses and builds a sink table, returning the located errors as text.
fn build(text: &str) -> Result<VaultSink, String> {
    let config: SinkConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    let SinkConfig::Vault(config) = config else {
        panic!("not a vault sink: {text}");
    };
    let source = Arc::new(Source {
        path: "/etc/tokend/tokend.toml".into(),
        text: text.into(),
    });
    let mut problems = Vec::new();
    let sink = {
        let mut v = Validator::new(&mut problems, source);
        config.build(
            &mut v,
            &SinkContext {
                account: "acct".into(),
            },
        )
    };
    if problems.is_empty() {
        Ok(sink.expect("no problems means a sink"))
    } else {
        assert!(sink.is_none(), "a sink despite problems");
        Err(locate(problems).to_string())
    }
}

fn err(text: &str) -> String {
    build(text).expect_err("expected a config error")
}

const BASE: &str = "type = \"vault\"\naddress = \"https://vault.example:8200\"\n";

#[test]
fn builds_with_defaults_and_labels_mount_and_path() {
    let sink = build(&format!(
        "{BASE}path = \"/tokend/a/\"\nauth = {{ token = \"hvs.x\" }}\n"
    ))
    .unwrap();
    assert_eq!(sink.label(), "vault:secret/tokend/a");
    let debug = format!("{sink:?}");
    assert!(
        debug.contains("vault token from the config file"),
        "{debug}"
    );
    assert!(!debug.contains("hvs.x"), "{debug}");
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    for text in [
        format!("{BASE}path = \"p\"\nauth = {{ token = \"t\" }}\nmout = \"x\"\n"),
        format!("{BASE}path = \"p\"\nauth = {{ tokn = \"t\" }}\n"),
        format!(
            "{BASE}path = \"p\"\nauth = {{ approle = {{ role_id = \"r\", secret_id = \"s\", mnt = \"x\" }} }}\n"
        ),
        format!("{BASE}path = \"p\"\nauth = {{ kubernetes = {{ role = \"r\", jwt = \"x\" }} }}\n"),
        format!("{BASE}path = \"p\"\nauth = {{ token = {{ evn = \"X\" }} }}\n"),
    ] {
        let e = err(&text);
        assert!(e.contains("unknown"), "{text}\n→ {e}");
    }
    // Two methods at once, or none.
    let e = err(&format!(
        "{BASE}path = \"p\"\nauth = {{ token = \"t\", approle = {{ role_id = \"r\", secret_id = \"s\" }} }}\n"
    ));
    assert!(
        e.contains(":4:1: auth: expected exactly one of token, approle or kubernetes"),
        "{e}"
    );
    let e = err(&format!("{BASE}path = \"p\"\nauth = {{}}\n"));
    assert!(e.contains("auth: expected exactly one"), "{e}");
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let e = err(concat!(
        "type = \"vault\"\n",
        "address = \"http://vault.example:8200\"\n",
        "mount = \"/\"\n",
        "path = \"a//b\"\n",
        "timeout = \"soon\"\n",
        "namespace = \"\"\n",
        "auth = { approle = { role_id = \"\", secret_id = { env = \"TOKEND_TEST_SURELY_UNSET\" } } }\n",
    ));
    for expected in [
        "address: \"http://vault.example:8200\": plain http is only allowed to a loopback address",
        "mount: must not be empty",
        "path: \"a//b\" has an empty",
        "timeout: \"soon\" is not a duration",
        "namespace: must not be empty",
        "auth.approle.role_id: is empty",
        "auth.approle.secret_id: environment variable \"TOKEND_TEST_SURELY_UNSET\" is not set",
    ] {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
    assert!(e.starts_with("/etc/tokend/tokend.toml:"), "{e}");
}

#[test]
fn tls_settings_are_checked() {
    let e = err(&format!(
        "{BASE}path = \"p\"\nca_file = \"/nonexistent/ca.pem\"\ntls_server_name = \"10.0.0.1\"\nauth = {{ token = \"t\" }}\n"
    ));
    assert!(
        e.contains("ca_file: cannot read ca_file /nonexistent/ca.pem"),
        "{e}"
    );
    assert!(
        e.contains("tls_server_name: \"10.0.0.1\" is an ip address"),
        "{e}"
    );
    let e = err(
        "type = \"vault\"\naddress = \"http://127.0.0.1:8200\"\npath = \"p\"\ntls_server_name = \"vault\"\nauth = { token = \"t\" }\n",
    );
    assert!(
        e.contains("tls_server_name: only used with an https:// address"),
        "{e}"
    );
    let sink = build(&format!(
        "{BASE}path = \"p\"\ntls_server_name = \"Vault-1.Internal\"\nauth = {{ token = \"t\" }}\n"
    ))
    .unwrap();
    assert_eq!(sink.api_base_host(), "vault-1.internal");
}

#[test]
fn kubernetes_needs_a_readable_jwt_file() {
    let e = err(&format!(
        "{BASE}path = \"p\"\nauth = {{ kubernetes = {{ role = \"tokend\", jwt_file = \"/nonexistent/jwt\" }} }}\n"
    ));
    assert!(
        e.contains("auth.kubernetes.jwt_file: cannot read jwt_file /nonexistent/jwt"),
        "{e}"
    );
    let config: SinkConfig = toml::from_str(&format!(
        "{BASE}path = \"p\"\nauth = {{ kubernetes = {{ role = \"tokend\" }} }}\n"
    ))
    .unwrap();
    let SinkConfig::Vault(VaultSinkConfig {
        auth: Some(VaultAuthConfig {
            kubernetes: Some(k),
            ..
        }),
        ..
    }) = config
    else {
        panic!("not parsed as kubernetes auth");
    };
    assert_eq!(k.jwt_file, Path::new(DEFAULT_JWT_FILE));
    assert_eq!(k.mount, "kubernetes");
}

#[test]
fn addresses_default_to_vault_addr_and_refuse_plain_http_off_loopback() {
    assert_eq!(
        parse_address(None, Some("https://v.example:8200"))
            .unwrap()
            .as_str(),
        "https://v.example:8200/"
    );
    assert_eq!(
        parse_address(Some("https://v.example/"), Some("https://other"))
            .unwrap()
            .as_str(),
        "https://v.example/"
    );
    // vaultrs sends every request to /v1/… at the root: a path prefix would be dropped.
    for with_path in ["https://v.example/prefix", "https://v.example/vault/"] {
        let e = parse_address(Some(with_path), None).unwrap_err();
        assert!(e.contains("has a path"), "{with_path}: {e}");
    }
    assert!(
        parse_address(None, None)
            .unwrap_err()
            .contains("$VAULT_ADDR is not set")
    );
    assert!(
        parse_address(None, Some("http://10.1.1.1:8200"))
            .unwrap_err()
            .starts_with("$VAULT_ADDR (\"http://10.1.1.1:8200\"): plain http")
    );
    for ok in [
        "http://127.0.0.1:8200",
        "http://127.8.9.1",
        "http://[::1]:8200",
        "http://LocalHost:8200",
    ] {
        assert!(parse_address(Some(ok), None).is_ok(), "{ok}");
    }
    let e = parse_address(Some("https://user:hunter2@v.example"), None).unwrap_err();
    assert!(!e.contains("hunter2"), "{e}");
    assert!(parse_address(Some("ftp://v.example"), None).is_err());
    assert!(parse_address(Some("https://v.example/?x=1"), None).is_err());
    assert!(parse_address(Some("vault:8200"), None).is_err());
}

#[test]
fn the_default_auth_is_the_vault_token_variable() {
    let e = err(&format!("{BASE}path = \"p\"\n"));
    // The test environment has no $VAULT_TOKEN (scripts/test does not set one).
    if std::env::var_os("VAULT_TOKEN").is_none() {
        assert!(
            e.contains("auth: not set, and the default $VAULT_TOKEN"),
            "{e}"
        );
    }
}

#[test]
fn tokens_must_fit_in_a_header() {
    let e = err(&format!(
        "{BASE}path = \"p\"\nauth = {{ token = \"hvs.a\\nb\" }}\n"
    ));
    assert!(e.contains("auth.token: holds characters"), "{e}");
    assert!(!e.contains("hvs.a"), "{e}");
}

#[test]
fn clean_paths() {
    assert_eq!(clean_path("/team/kv/").unwrap(), "team/kv");
    assert!(clean_path("a/../b").is_err());
    assert!(clean_path("a/./b").is_err());
    assert!(clean_path("a\tb").is_err());
}

impl VaultSink {
    fn api_base_host(&self) -> String {
        self.api.base_host()
    }
}
