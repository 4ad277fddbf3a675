//! Unit tests of the sink: config validation, version ids, what AWSCURRENT holds and the error
//! table (the writes themselves are tested against moto, in tests/aws.rs).

use std::sync::Arc;
use std::time::SystemTime;

use secrecy::SecretString;

use super::decide::{Current, stored_token};
use super::errors::{Class, Failure, classify};
use super::write::session_name;
use super::*;
use crate::config::error::Source;
use crate::sink::{SinkConfig, StoredToken};

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
fn request_tokens_state_generation_and_expiry_and_are_stable_per_token() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let t = client_request_token("acct", Format::Json, "tok-1", 5, at);
    assert_eq!(
        t,
        client_request_token("acct", Format::Json, "tok-1", 5, at)
    );
    // Pinned (checked with Python hashlib): a change would make every deployed sink write
    // each token once more.
    assert_eq!(
        t,
        "g00000000000000000005-e001800000000-2190dc2c03006b9cf600bed5"
    );
    assert!(
        (32..=64).contains(&t.len()),
        "AWS wants 32 to 64: {}",
        t.len()
    );
    assert!(!t.contains("tok-1"));
    assert_eq!(parse_version_id(&t), Some((5, at)));
    for other in [
        client_request_token("acct2", Format::Json, "tok-1", 5, at),
        client_request_token("acct", Format::Raw, "tok-1", 5, at),
        client_request_token("acct", Format::Json, "tok-2", 5, at),
        client_request_token("acct", Format::Json, "tok-1", 6, at),
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        client_request_token("acc", Format::Json, "ttok-1", 5, at),
    ] {
        assert_ne!(t, other);
    }
    // The largest values still fit.
    let max = client_request_token(
        "a",
        Format::Raw,
        "t",
        u64::MAX,
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 2),
    );
    assert!(max.len() <= 64, "{max}");
    assert_eq!(
        parse_version_id(&max),
        Some((u64::MAX, crate::bounds::max_time()))
    );
    // Anything else reads as no generation.
    for id in [
        "7e0d0cc9-73d8-8698-8c1f-3b72971dd8bd",
        "",
        "g5-e1-abc",
        "g0000000000000000000x-e001800000000-2190dc2c03006b9cf600bed5",
        "g00000000000000000005-e001800000000-5D8BB8AA1A31C8B24EBEF6B1",
        "g00000000000000000005-e001800000000-5d8bb8aa1a31c8b24ebef6b1ff",
        "g99999999999999999999-e001800000000-2190dc2c03006b9cf600bed5",
    ] {
        assert_eq!(parse_version_id(id), None, "{id:?}");
    }
}

fn current(version: &str, value: Option<&str>) -> Current {
    Current {
        version_id: Some(version.into()),
        value: value.map(|v| SecretString::from(v.to_owned())),
        created: None,
    }
}

#[test]
fn stored_generation_comes_from_the_document_or_the_version_id() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let later = now + Duration::from_secs(60);
    let earlier = now - Duration::from_secs(60);
    let id = |generation, at| client_request_token("acct", Format::Raw, "x", generation, at);
    let json = |token: &str, generation: u64, at| {
        serde_json::json!({
            "access_token": token,
            "generation": generation,
            "expires_at": crate::sink::rfc3339(at),
        })
        .to_string()
    };
    let view = |generation, same_token, unexpired| StoredToken {
        generation,
        same_token,
        unexpired,
    };
    let cases: Vec<(&str, Current, Format, StoredToken)> = vec![
        (
            "json: the document's fields, not the version id",
            current(&id(3, earlier), Some(&json("T", 9, later))),
            Format::Json,
            view(9, true, true),
        ),
        (
            "json: an older tokend's document",
            current(
                &id(3, later),
                Some(r#"{"access_token":"X","expires_at":"2027-01-15T08:06:00Z"}"#),
            ),
            Format::Json,
            view(0, false, true),
        ),
        (
            "json: not a document, a tokend version id",
            current(&id(4, later), Some("T")),
            Format::Json,
            view(4, false, true),
        ),
        (
            "json: a binary secret",
            current("7e0d0cc9-73d8-8698-8c1f-3b72971dd8bd", None),
            Format::Json,
            view(0, false, false),
        ),
        (
            "raw: the version id's generation and expiry",
            current(&id(7, later), Some("T")),
            Format::Raw,
            view(7, true, true),
        ),
        (
            "raw: an expired version",
            current(&id(7, earlier), Some("OTHER")),
            Format::Raw,
            view(7, false, false),
        ),
        (
            "raw: a version id from the console",
            current("7e0d0cc9-73d8-8698-8c1f-3b72971dd8bd", Some("OTHER")),
            Format::Raw,
            view(0, false, false),
        ),
        (
            "raw: a json value is not our token",
            current(&id(2, later), Some(&json("T", 9, later))),
            Format::Raw,
            view(2, false, true),
        ),
    ];
    for (what, current, format, expected) in cases {
        assert_eq!(stored_token(&current, format, "T", now), expected, "{what}");
    }
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
