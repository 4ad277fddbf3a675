//! Unit tests of the sink: config validation, request tokens, `decide` and the error
//! table (the writes themselves are tested against moto, in tests/aws.rs).

use std::sync::Arc;
use std::time::SystemTime;

use secrecy::SecretString;

use super::decide::{Decision, Stored, decide};
use super::errors::{Class, Failure, classify};
use super::write::session_name;
use super::*;
use crate::config::error::Source;
use crate::sink::{SinkConfig, WriteOutcome};

/// Parses a sink table (without `type`) and builds it, returning every problem.
fn build(body: &str) -> Result<AwsSecretsManagerSink, Vec<String>> {
    let text = format!("type = \"aws_secrets_manager\"\n{body}");
    let config: SinkConfig = toml::from_str(&text).map_err(|e| vec![e.to_string()])?;
    let SinkConfig::AwsSecretsManager(config) = config else {
        panic!("parsed as another sink type");
    };
    let mut problems = Vec::new();
    let source = Arc::new(Source {
        path: "t.toml".into(),
        text,
    });
    let ctx = SinkContext {
        account: "acct".into(),
    };
    let built = config.build(&mut Validator::new(&mut problems, source), &ctx);
    match built {
        Some(sink) if problems.is_empty() => Ok(sink),
        _ => Err(problems
            .into_iter()
            .map(|p| format!("{}: {}", p.shown, p.message))
            .collect()),
    }
}

#[test]
fn a_full_config_builds_with_its_settings() {
    let sink = build(
        r#"
            secret_id = "tokend/acct"
            region = "sa-east-1"
            profile = "prod"
            endpoint_url = "https://secretsmanager.sa-east-1.amazonaws.com"
            role_arn = "arn:aws:iam::123456789012:role/tokend"
            create = true
            format = "raw"
            kms_key_id = "alias/tokend"
            description = "pontotel token"
            tags = { team = "integrations" }
            timeout = "3s"
            "#,
    )
    .expect("valid config");
    assert_eq!(sink.label(), "aws:tokend/acct");
    assert_eq!(sink.format, Format::Raw);
    assert_eq!(sink.client_settings.timeout, Duration::from_secs(3));
    let create = sink.create.as_ref().expect("create = true");
    assert_eq!(
        create.tags.get("team").map(String::as_str),
        Some("integrations")
    );
    let minimal = build("secret_id = \"x\"").expect("minimal config");
    assert_eq!(
        (
            minimal.format,
            minimal.create.is_none(),
            minimal.client_settings.timeout
        ),
        (Format::Json, true, DEFAULT_TIMEOUT)
    );
}

#[test]
fn unknown_and_missing_keys_are_errors() {
    let e = build("secret_id = \"x\"\nsecret = \"y\"").unwrap_err();
    assert!(e[0].contains("unknown field `secret`"), "{e:?}");
    let e = build("region = \"us-east-1\"").unwrap_err();
    assert!(e[0].contains("missing field `secret_id`"), "{e:?}");
    let e = build("secret_id = \"x\"\ntags = { a = 1 }").unwrap_err();
    assert!(e[0].contains("invalid type"), "{e:?}");
}

#[test]
fn every_bad_setting_is_reported_at_once() {
    let e = build(
        r#"
            secret_id = "bad name!"
            region = "Sa East"
            profile = ""
            endpoint_url = "http://10.0.0.1:5000"
            role_arn = "arn:aws:iam::1:user/x"
            format = "env"
            kms_key_id = "k"
            description = "d"
            tags = { "aws:x" = "y" }
            timeout = "0s"
            "#,
    )
    .unwrap_err();
    let fields: Vec<&str> = e.iter().map(|m| m.split(':').next().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "secret_id",
            "region",
            "profile",
            "endpoint_url",
            "role_arn",
            "format",
            "kms_key_id",
            "description",
            "tags",
            "tags",
            "timeout"
        ],
        "{e:#?}"
    );
    assert!(e[6].contains("create = true"), "{e:?}");
    let e = build("secret_id = \"x\"\ntimeout = \"soon\"").unwrap_err();
    assert!(e[0].contains("\"soon\" is not a duration"), "{e:?}");
}

#[test]
fn secret_ids_endpoints_and_role_arns_are_checked() {
    assert!(check_secret_id("tokend/pontotel-prod_1+=.@", true).is_ok());
    let arn = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:tokend/x-AbCdEf";
    assert!(check_secret_id(arn, false).is_ok());
    assert!(
        check_secret_id(arn, true)
            .unwrap_err()
            .contains("needs a secret name")
    );
    assert!(check_secret_id("arn:aws:s3:::bucket", false).is_err());
    assert!(check_secret_id("", false).is_err());
    assert!(check_endpoint_url("http://127.0.0.1:5000").is_ok());
    assert!(check_endpoint_url("http://localhost:4566").is_ok());
    assert!(check_endpoint_url("http://[::1]:5000").is_ok());
    assert!(check_endpoint_url("https://vpce.example.com").is_ok());
    assert!(
        check_endpoint_url("http://moto:5000")
            .unwrap_err()
            .contains("https")
    );
    assert!(check_endpoint_url("ftp://127.0.0.1").is_err());
    assert!(check_endpoint_url("not a url").is_err());
    assert!(is_role_arn("arn:aws-cn:iam::123456789012:role/path/tokend"));
    assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
    assert!(!is_role_arn("arn:aws:sts::123456789012:role/x"));
    assert_eq!(session_name("pontotel-prod"), "tokend-pontotel-prod");
    assert_eq!(session_name(&"a".repeat(80)).len(), 64);
}

#[test]
fn request_tokens_are_stable_uuids_per_account_format_and_token() {
    let t = client_request_token("acct", Format::Json, "tok-1");
    assert_eq!(t, client_request_token("acct", Format::Json, "tok-1"));
    // Pinned (checked with Python hashlib): a change would make every deployed sink write
    // each token once more.
    assert_eq!(t, "7e0d0cc9-73d8-8698-8c1f-3b72971dd8bd");
    assert_eq!(t.len(), 36);
    let groups: Vec<usize> = t.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12]);
    assert_eq!(&t[14..15], "8", "version 8");
    assert!("89ab".contains(&t[19..20]), "variant 10");
    assert!(!t.contains("tok-1"));
    for other in [
        client_request_token("acct2", Format::Json, "tok-1"),
        client_request_token("acct", Format::Raw, "tok-1"),
        client_request_token("acct", Format::Json, "tok-2"),
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        client_request_token("acc", Format::Json, "ttok-1"),
    ] {
        assert_ne!(t, other);
    }
}

fn stored(version: &str, value: &str) -> Stored {
    Stored {
        version_id: Some(version.into()),
        value: Some(SecretString::from(value.to_owned())),
        created: None,
    }
}

#[test]
fn decide_skips_unchanged_keeps_newer_and_writes_otherwise() {
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
    let json = |token: &str, exp: u64| {
        serde_json::json!({"access_token": token, "expires_at": super::super::rfc3339(at(exp))})
            .to_string()
    };
    let ours = "req-ours";
    use Decision::*;
    use WriteOutcome::*;
    let cases: Vec<(&str, Option<Stored>, Format, Decision)> = vec![
        ("nothing stored", None, Format::Json, Write),
        (
            "our version is current",
            Some(stored(ours, "whatever")),
            Format::Json,
            Skip(Unchanged),
        ),
        (
            "same token, other writer",
            Some(stored("v", &json("T", 100))),
            Format::Json,
            Skip(Unchanged),
        ),
        (
            "stored expires later",
            Some(stored("v", &json("OLD", 200))),
            Format::Json,
            Skip(KeptNewer),
        ),
        (
            "stored expires earlier",
            Some(stored("v", &json("OLD", 50))),
            Format::Json,
            Write,
        ),
        (
            "same expiry, other token",
            Some(stored("v", &json("OLD", 100))),
            Format::Json,
            Write,
        ),
        (
            "stored is not json",
            Some(stored("v", "T")),
            Format::Json,
            Write,
        ),
        (
            "json without expires_at",
            Some(stored("v", r#"{"access_token":"X"}"#)),
            Format::Json,
            Write,
        ),
        (
            "raw: same token",
            Some(stored("v", "T")),
            Format::Raw,
            Skip(Unchanged),
        ),
        // Raw values carry no expiry: a newer-looking json document is not consulted.
        (
            "raw: other token",
            Some(stored("v", &json("OLD", 200))),
            Format::Raw,
            Write,
        ),
        (
            "binary secret",
            Some(Stored {
                version_id: Some("v".into()),
                value: None,
                created: None,
            }),
            Format::Json,
            Write,
        ),
    ];
    for (what, stored, format, expected) in cases {
        let got = decide(stored.as_ref(), format, ours, "T", at(100));
        assert_eq!(got, expected, "{what}");
    }
    // Sub-second precision of our expiry does not beat an equal stored second.
    let got = decide(
        Some(&stored("v", &json("OLD", 100))),
        Format::Json,
        ours,
        "T",
        at(100) + Duration::from_millis(400),
    );
    assert_eq!(got, Write);
}

#[test]
fn errors_are_classified_by_code_and_kind_not_status() {
    use Class::*;
    let service = |code, status| Failure::Service { code, status };
    let cases = [
        (service(Some("ThrottlingException"), 400), Transient),
        (service(Some("LimitExceededException"), 400), Transient),
        (service(Some("InternalServiceError"), 500), Transient),
        (service(Some("ExpiredTokenException"), 400), Transient),
        (service(Some("AccessDeniedException"), 400), Permanent),
        (service(Some("UnrecognizedClientException"), 400), Permanent),
        (service(Some("DecryptionFailure"), 400), Permanent),
        (service(Some("EncryptionFailure"), 400), Permanent),
        (service(Some("KMSAccessDeniedException"), 400), Permanent),
        (service(Some("InvalidParameterException"), 400), Permanent),
        (service(Some("InvalidRequestException"), 400), Permanent),
        (service(Some("ResourceNotFoundException"), 404), Permanent),
        // A code decides even when the status would say otherwise.
        (service(Some("AccessDeniedException"), 503), Permanent),
        (service(None, 502), Transient),
        (service(None, 429), Transient),
        (service(None, 403), Permanent),
        (Failure::Response, Transient),
        (Failure::Timeout, Transient),
        (Failure::Dispatch { user: false }, Transient),
        (Failure::Dispatch { user: true }, Permanent),
        (Failure::Construction, Permanent),
        (Failure::CredentialsMissing, Permanent),
        (Failure::CredentialsUnavailable, Transient),
    ];
    for (failure, expected) in cases {
        assert_eq!(classify(failure), expected, "{failure:?}");
    }
}

#[test]
fn debug_shows_settings_only() {
    let sink =
        build("secret_id = \"tokend/acct\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"")
            .expect("valid");
    let debug = format!("{sink:?}");
    assert!(debug.contains("tokend/acct"), "{debug}");
    assert!(debug.contains("standard chain"), "{debug}");
    assert!(debug.contains("client_loaded: false"), "{debug}");
}
