//! The `aws_secrets_manager` sink against a real `moto_server`, one server per test. Sinks
//! are built from TOML like the daemon builds them, with `endpoint_url` pointing at moto and
//! an injected `SdkConfig` holding static test credentials (the process environment is
//! never touched). SDK retries are off, so each `write` is one attempt per call and a failure
//! shows at once; retrying is the daemon's job, played here by `wait_for_async`.

use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::Client;
use secrecy::SecretString;
use tokend::sink::aws_secrets_manager::{
    AwsSecretsManagerSink, Format, client_request_token, parse_version_id,
};
use tokend::sink::{Sink, SinkConfig, SinkContext, SinkError, TokenDocument, WriteOutcome};

use crate::support::interpose::Interpose;
use crate::support::moto::Moto;
use crate::support::wait_for_async;

const ACCOUNT: &str = "acct-test";
/// Distinctive test credentials, searched for in every error and Debug string.
const ACCESS_KEY: &str = "AKIATOKENDLEAKCHECK7";
const SECRET_KEY: &str = "tokend/secret-key/leak-check/0123456789abcdef";

/// The injected replacement for the AWS chain: static keys, a fixed region, no SDK retries.
/// `endpoint` redirects every other AWS service (here: STS for `role_arn`).
async fn sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "tokend-tests",
        ))
        .retry_config(RetryConfig::disabled());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// A sink built from `[[account.sink]]` TOML (`type` and `endpoint_url` added).
async fn sink(moto: &Moto, body: &str) -> Sink {
    sink_with(moto, body, sdk_config(None).await)
}

fn sink_with(moto: &Moto, body: &str, sdk: SdkConfig) -> Sink {
    sink_at(&moto.endpoint(), body, sdk)
}

/// A sink whose `endpoint_url` is `endpoint` (moto, or a proxy in front of it).
fn sink_at(endpoint: &str, body: &str, sdk: SdkConfig) -> Sink {
    let text = format!("type = \"aws_secrets_manager\"\nendpoint_url = \"{endpoint}\"\n{body}");
    let config: SinkConfig = toml::from_str(&text).expect("sink TOML parses");
    let SinkConfig::AwsSecretsManager(config) = config else {
        panic!("not an aws_secrets_manager sink: {config:?}");
    };
    let ctx = SinkContext {
        account: ACCOUNT.into(),
    };
    Sink::AwsSecretsManager(
        AwsSecretsManagerSink::with_sdk_config(&config, &ctx, sdk).expect("valid sink config"),
    )
}

/// A plain SDK client on the same moto, to set up and inspect secrets.
async fn admin(moto: &Moto) -> Client {
    let sdk = sdk_config(None).await;
    Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .endpoint_url(moto.endpoint())
            .build(),
    )
}

/// A token document of generation 1 expiring `expires_in` seconds from now.
fn doc(token: &str, expires_in: u64) -> TokenDocument {
    doc_gen(
        token,
        1,
        i64::try_from(expires_in).expect("a test lifetime"),
    )
}

/// A token document of `generation` expiring `expires_in` seconds from now (negative:
/// expired that long ago).
fn doc_gen(token: &str, generation: u64, expires_in: i64) -> TokenDocument {
    let now = SystemTime::now();
    let offset = Duration::from_secs(expires_in.unsigned_abs());
    TokenDocument {
        account: ACCOUNT.into(),
        provider: "pontotel".into(),
        access_token: SecretString::from(token.to_owned()),
        token_type: "Bearer".into(),
        expires_at: if expires_in >= 0 {
            now + offset
        } else {
            now - offset
        },
        generation,
    }
}

/// The token and generation AWSCURRENT holds, read as the sink reads them: the `json`
/// document's fields, or for `raw` the value and the version id.
async fn current_token(client: &Client, id: &str, format: Format) -> (String, u64) {
    let (value, version) = stage(client, id, "AWSCURRENT").await;
    match format {
        Format::Json => {
            let doc: serde_json::Value = serde_json::from_str(&value).expect("a json document");
            (
                doc["access_token"]
                    .as_str()
                    .expect("access_token")
                    .to_owned(),
                doc["generation"].as_u64().expect("a generation field"),
            )
        }
        Format::Raw => {
            let (generation, _) = parse_version_id(&version)
                .unwrap_or_else(|| panic!("not a tokend version id: {version}"));
            (value, generation)
        }
    }
}

/// Puts `token` of `generation` as AWSCURRENT directly with the SDK, as another tokend
/// would store it: a `json` document, or a `raw` value under a version id stating the
/// generation.
async fn put_as_other_writer(
    client: &Client,
    id: &str,
    format: Format,
    token: &str,
    generation: u64,
) {
    let other = doc_gen(token, generation, 3600);
    let request = client.put_secret_value().secret_id(id);
    let request = match format {
        Format::Json => request.secret_string(other.json(SystemTime::now())),
        Format::Raw => request
            .secret_string(token)
            .client_request_token(client_request_token(
                ACCOUNT,
                Format::Raw,
                token,
                generation,
                other.expires_at,
            )),
    };
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("the other writer's PutSecretValue: {e:?}"));
}

/// The value and version id at `stage`.
async fn stage(client: &Client, id: &str, stage: &str) -> (String, String) {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .version_stage(stage)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetSecretValue {id} {stage}: {e:?}"));
    (
        out.secret_string().expect("a string secret").to_owned(),
        out.version_id().expect("a version id").to_owned(),
    )
}

/// The `access_token` of the `json` document at `stage`.
async fn token_at(client: &Client, id: &str, stage_name: &str) -> String {
    let (value, _) = stage(client, id, stage_name).await;
    let doc: serde_json::Value = serde_json::from_str(&value).expect("a json document");
    doc["access_token"]
        .as_str()
        .expect("an access_token field")
        .to_owned()
}

/// Every version id of the secret (deprecated ones included), sorted.
async fn versions(client: &Client, id: &str) -> Vec<String> {
    let out = client
        .list_secret_version_ids()
        .secret_id(id)
        .include_deprecated(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListSecretVersionIds {id}: {e:?}"));
    let mut ids: Vec<String> = out
        .versions()
        .iter()
        .filter_map(|v| v.version_id().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

async fn create_secret(client: &Client, id: &str, value: &str) {
    client
        .create_secret()
        .name(id)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateSecret {id}: {e:?}"));
}

#[tokio::test]
async fn create_true_creates_a_missing_secret_with_its_settings() {
    // Proves: with create = true a missing secret is created holding the json document, as the
    // version named by the request token, with kms_key_id, description and tags applied.
    let moto = Moto::start();
    eprintln!("moto_server ready in {:?}", moto.startup);
    let id = "tokend/created";
    let sink = sink(
        &moto,
        &format!(
            r#"secret_id = "{id}"
            create = true
            kms_key_id = "alias/tokend"
            description = "pontotel token, managed by tokend"
            tags = {{ team = "integrations", env = "test" }}"#
        ),
    )
    .await;
    assert_eq!(sink.label(), "aws:tokend/created");

    let created = doc("tok-created", 3600);
    let outcome = sink.write(&created).await.expect("write");

    assert_eq!(outcome, WriteOutcome::Written);
    let admin = admin(&moto).await;
    let (value, version) = stage(&admin, id, "AWSCURRENT").await;
    let stored: serde_json::Value = serde_json::from_str(&value).expect("json document");
    assert_eq!(stored["access_token"], "tok-created");
    assert_eq!(stored["token_type"], "Bearer");
    assert_eq!(stored["account"], ACCOUNT);
    assert_eq!(stored["provider"], "pontotel");
    assert!(
        stored["expires_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    assert_eq!(stored["generation"], 1);
    assert_eq!(
        version,
        client_request_token(ACCOUNT, Format::Json, "tok-created", 1, created.expires_at)
    );
    let described = admin
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .expect("DescribeSecret");
    assert_eq!(described.kms_key_id(), Some("alias/tokend"));
    assert_eq!(
        described.description(),
        Some("pontotel token, managed by tokend")
    );
    let mut tags: Vec<(String, String)> = described
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("env".to_owned(), "test".to_owned()),
            ("team".to_owned(), "integrations".to_owned())
        ]
    );
}

#[tokio::test]
async fn an_existing_secret_gets_a_new_version_with_the_token() {
    // Proves: a secret created by someone else is updated with PutSecretValue (create = false
    // is enough), adding one version and leaving the old one as AWSPREVIOUS.
    let moto = Moto::start();
    let admin = admin(&moto).await;
    let id = "tokend/existing";
    create_secret(&admin, id, "placeholder").await;
    let sink = sink(&moto, &format!("secret_id = \"{id}\"")).await;

    let outcome = sink.write(&doc("tok-update", 3600)).await.expect("write");

    assert_eq!(outcome, WriteOutcome::Written);
    assert_eq!(token_at(&admin, id, "AWSCURRENT").await, "tok-update");
    assert_eq!(stage(&admin, id, "AWSPREVIOUS").await.0, "placeholder");
    assert_eq!(versions(&admin, id).await.len(), 2);
}

#[tokio::test]
async fn a_retried_write_lands_on_the_same_version() {
    // Proves: the ClientRequestToken makes a repeated write of one token idempotent: a replay
    // of the exact request (an SDK retry after a lost response) returns the existing version,
    // and a sink retry after someone moved AWSCURRENT away restores that version instead of
    // adding one.
    let moto = Moto::start();
    let admin = admin(&moto).await;
    let id = "tokend/retry";
    let sink = sink(&moto, &format!("secret_id = \"{id}\"\ncreate = true")).await;
    let token_doc = doc("tok-retry", 3600);
    assert_eq!(
        sink.write(&token_doc).await.expect("first write"),
        WriteOutcome::Written
    );
    let (value, version) = stage(&admin, id, "AWSCURRENT").await;
    let request_token = client_request_token(
        ACCOUNT,
        Format::Json,
        "tok-retry",
        token_doc.generation,
        token_doc.expires_at,
    );
    assert_eq!(version, request_token);

    // The request the sink sent, sent again.
    let replay = admin
        .put_secret_value()
        .secret_id(id)
        .secret_string(&value)
        .client_request_token(&request_token)
        .send()
        .await
        .expect("replayed PutSecretValue");
    assert_eq!(replay.version_id(), Some(request_token.as_str()));
    assert_eq!(
        versions(&admin, id).await,
        std::slice::from_ref(&request_token)
    );

    // Another writer puts an unrelated value; the sink's retry of the same token follows.
    admin
        .put_secret_value()
        .secret_id(id)
        .secret_string("not a token document")
        .send()
        .await
        .expect("foreign PutSecretValue");
    let outcome = sink.write(&token_doc).await.expect("retried write");

    assert_eq!(outcome, WriteOutcome::Written);
    let (_, current) = stage(&admin, id, "AWSCURRENT").await;
    assert_eq!(
        current, request_token,
        "the token's version is current again"
    );
    assert_eq!(
        versions(&admin, id).await.len(),
        2,
        "the token's version and the foreign one, nothing more"
    );
}

#[tokio::test]
async fn an_unchanged_token_is_not_written_again() {
    // Proves: writing the token AWSCURRENT already holds is skipped (Unchanged) and adds no
    // version, in both formats, even through a freshly built sink (a daemon restart).
    let moto = Moto::start();
    let admin = admin(&moto).await;
    for (id, format) in [("tokend/same-json", "json"), ("tokend/same-raw", "raw")] {
        let body = format!("secret_id = \"{id}\"\ncreate = true\nformat = \"{format}\"");
        let first = sink(&moto, &body).await;
        let token_doc = doc("tok-same", 3600);
        assert_eq!(
            first.write(&token_doc).await.expect("first write"),
            WriteOutcome::Written,
            "{format}"
        );

        let again = first.write(&token_doc).await.expect("second write");
        let restarted = sink(&moto, &body)
            .await
            .write(&token_doc)
            .await
            .expect("write after restart");

        assert_eq!(again, WriteOutcome::Unchanged, "{format}");
        assert_eq!(restarted, WriteOutcome::Unchanged, "{format}");
        assert_eq!(versions(&admin, id).await.len(), 1, "{format}");
    }
    assert_eq!(
        stage(&admin, "tokend/same-raw", "AWSCURRENT").await.0,
        "tok-same",
        "raw is the token alone"
    );
}

#[tokio::test]
async fn create_false_on_a_missing_secret_is_a_clear_permanent_error() {
    // Proves: with create = false (the default) a missing secret is not created; the error is
    // permanent, names the secret and points at create = true, although moto answers 404
    // where AWS answers 400 (the decision is on the error code).
    let moto = Moto::start();
    let id = "tokend/missing";
    let sink = sink(&moto, &format!("secret_id = \"{id}\"")).await;

    let err = sink
        .write(&doc("tok-missing", 3600))
        .await
        .expect_err("a missing secret must fail");

    eprintln!("{err}");
    assert!(!err.is_transient(), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("aws:tokend/missing: "), "{message}");
    assert!(
        message.contains("\"tokend/missing\" does not exist"),
        "{message}"
    );
    assert!(message.contains("create = true"), "{message}");
    let listed = admin(&moto)
        .await
        .list_secrets()
        .send()
        .await
        .expect("ListSecrets");
    assert!(listed.secret_list().is_empty(), "nothing was created");
}

#[tokio::test]
async fn two_refreshes_leave_the_new_token_current_and_the_old_previous() {
    // Proves: each refresh becomes AWSCURRENT and the token before it AWSPREVIOUS, so readers
    // that cached the old version id can still fetch it during the switch.
    let moto = Moto::start();
    let admin = admin(&moto).await;
    let id = "tokend/stages";
    let sink = sink(&moto, &format!("secret_id = \"{id}\"\ncreate = true")).await;

    assert_eq!(
        sink.write(&doc("tok-first", 3600)).await.expect("first"),
        WriteOutcome::Written
    );
    assert_eq!(
        sink.write(&doc_gen("tok-second", 2, 7200))
            .await
            .expect("second"),
        WriteOutcome::Written
    );

    assert_eq!(token_at(&admin, id, "AWSCURRENT").await, "tok-second");
    assert_eq!(token_at(&admin, id, "AWSPREVIOUS").await, "tok-first");
    assert_eq!(versions(&admin, id).await.len(), 2);
}

#[tokio::test]
async fn a_lower_generation_never_replaces_a_live_higher_one_in_either_format() {
    // Proves: in both formats the stored generation decides, not expires_at: generation 4
    // with a later expiry is kept out (KeptNewer, no new version), generation 6 with an
    // earlier expiry is written, and an expired generation 9 does not block generation 2 (a
    // wiped state_dir restarts the counter). Raw values carry the generation in the version id.
    let moto = Moto::start();
    let admin = admin(&moto).await;
    for format in [Format::Json, Format::Raw] {
        let name = if format == Format::Json {
            "json"
        } else {
            "raw"
        };
        let id = format!("tokend/order-{name}");
        let sink = sink(
            &moto,
            &format!("secret_id = \"{id}\"\ncreate = true\nformat = \"{name}\""),
        )
        .await;
        let write = |d: TokenDocument| {
            let sink = &sink;
            async move { sink.write(&d).await.expect("write") }
        };

        assert_eq!(
            write(doc_gen("tok-5", 5, 3600)).await,
            WriteOutcome::Written,
            "{name}"
        );
        assert_eq!(
            write(doc_gen("tok-4", 4, 7200)).await,
            WriteOutcome::KeptNewer,
            "{name}: a lower generation expiring later"
        );
        assert_eq!(
            current_token(&admin, &id, format).await,
            ("tok-5".into(), 5),
            "{name}"
        );
        assert_eq!(
            versions(&admin, &id).await.len(),
            1,
            "{name}: nothing staged"
        );

        assert_eq!(
            write(doc_gen("tok-6", 6, 1800)).await,
            WriteOutcome::Written,
            "{name}: a higher generation expiring earlier"
        );
        assert_eq!(
            current_token(&admin, &id, format).await,
            ("tok-6".into(), 6),
            "{name}"
        );
        assert_eq!(token_prev(&admin, &id, format).await, "tok-5", "{name}");

        assert_eq!(
            write(doc_gen("tok-9", 9, -60)).await,
            WriteOutcome::Written,
            "{name}"
        );
        assert_eq!(
            write(doc_gen("tok-2", 2, 3600)).await,
            WriteOutcome::Written,
            "{name}: an expired generation 9 must not block"
        );
        assert_eq!(
            current_token(&admin, &id, format).await,
            ("tok-2".into(), 2),
            "{name}"
        );
    }
}

/// The token at AWSPREVIOUS.
async fn token_prev(client: &Client, id: &str, format: Format) -> String {
    match format {
        Format::Json => token_at(client, id, "AWSPREVIOUS").await,
        Format::Raw => stage(client, id, "AWSPREVIOUS").await.0,
    }
}

#[tokio::test]
async fn another_writer_between_read_and_write_never_leaves_the_lower_generation_current() {
    // Proves: the write is a real check-and-set. A proxy in front of moto lets another writer
    // put a token just before the sink's PutSecretValue or its UpdateSecretVersionStage, i.e.
    // after the sink read AWSCURRENT. A higher generation (7) that got in stays current
    // (KeptNewer: AWS refused to move AWSCURRENT off the version the sink had read, and the
    // re-read kept 7); a lower one (4) that got in is replaced by ours (8) after the re-read.
    // Both formats, both moments.
    let moto = Moto::start();
    let admin = admin(&moto).await;
    for format in [Format::Json, Format::Raw] {
        for call in ["PutSecretValue", "UpdateSecretVersionStage"] {
            let name = if format == Format::Json {
                "json"
            } else {
                "raw"
            };
            let id = format!("tokend/cas-{name}-{call}");
            let body = format!("secret_id = \"{id}\"\ncreate = true\nformat = \"{name}\"");
            let direct = sink(&moto, &body).await;
            assert_eq!(
                direct
                    .write(&doc_gen("tok-5", 5, 3600))
                    .await
                    .expect("gen 5"),
                WriteOutcome::Written
            );

            for (theirs, ours, expected, current) in [
                (7, 6, WriteOutcome::KeptNewer, ("tok-7", 7)),
                (4, 8, WriteOutcome::Written, ("tok-8", 8)),
            ] {
                let target = format!("secretsmanager.{call}");
                let (client, secret) = (admin.clone(), id.clone());
                let proxy = Interpose::start(
                    &moto.endpoint(),
                    move |_, _, headers| {
                        headers
                            .get("x-amz-target")
                            .is_some_and(|v| v.as_bytes() == target.as_bytes())
                    },
                    move |n| {
                        let (client, secret) = (client.clone(), secret.clone());
                        async move {
                            if n == 0 {
                                let token = format!("tok-{theirs}");
                                put_as_other_writer(&client, &secret, format, &token, theirs).await;
                            }
                        }
                    },
                )
                .await;
                let proxied = sink_at(proxy.url(), &body, sdk_config(None).await);

                let outcome = proxied
                    .write(&doc_gen(&format!("tok-{ours}"), ours, 3600))
                    .await
                    .unwrap_or_else(|e| panic!("{name} {call} {theirs}/{ours}: {e}"));

                let what =
                    format!("{name}, other writer before {call}, theirs {theirs}, ours {ours}");
                assert!(
                    proxy.matched() >= 1,
                    "{what}: the other writer never got in"
                );
                assert_eq!(outcome, expected, "{what}");
                assert_eq!(
                    current_token(&admin, &id, format).await,
                    (current.0.to_owned(), current.1),
                    "{what}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_outage_is_transient_and_the_sink_catches_up_after_restart() {
    // Proves: while the endpoint is down a write fails as Transient (retry on backoff), and
    // once a server answers on the same port again the same sink catches up: it recreates the
    // secret on the fresh server and stores the current token.
    let mut moto = Moto::start();
    let id = "tokend/outage";
    let sink = sink(&moto, &format!("secret_id = \"{id}\"\ncreate = true")).await;
    assert_eq!(
        sink.write(&doc("tok-before", 3600)).await.expect("before"),
        WriteOutcome::Written
    );
    let port = moto.port();

    moto.stop();
    let token_doc = doc("tok-after", 3600);
    let err = sink
        .write(&token_doc)
        .await
        .expect_err("nothing listens on the port");
    eprintln!("{err}");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().starts_with("aws:tokend/outage: "), "{err}");

    moto.restart();
    assert_eq!(moto.port(), port);
    let sink = &sink;
    let token_doc = &token_doc;
    wait_for_async(
        "the sink to store the token on the restarted server",
        Duration::from_secs(20),
        || async move { sink.write(token_doc).await.is_ok() },
    )
    .await;

    let admin = admin(&moto).await;
    assert_eq!(token_at(&admin, id, "AWSCURRENT").await, "tok-after");
}

#[tokio::test]
async fn role_arn_assumes_the_role_through_sts_first() {
    // Proves: with role_arn the sink takes its credentials from STS AssumeRole (at the injected
    // config's endpoint): it writes when STS answers, and fails as transient, before any
    // Secrets Manager call, when STS is unreachable.
    let moto = Moto::start();
    let id = "tokend/role";
    let body = format!(
        "secret_id = \"{id}\"\ncreate = true\nrole_arn = \"arn:aws:iam::123456789012:role/tokend\""
    );
    let sink = sink_with(&moto, &body, sdk_config(Some(&moto.endpoint())).await);

    let outcome = sink.write(&doc("tok-role", 3600)).await.expect("write");

    assert_eq!(outcome, WriteOutcome::Written);
    assert_eq!(
        token_at(&admin(&moto).await, id, "AWSCURRENT").await,
        "tok-role"
    );

    let no_sts = format!("http://127.0.0.1:{}", crate::support::free_port());
    let sink = sink_with(&moto, &body, sdk_config(Some(&no_sts)).await);
    let err = sink
        .write(&doc("tok-role-2", 3600))
        .await
        .expect_err("STS is down");
    eprintln!("{err}");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("credentials"), "{err}");
}

#[tokio::test]
async fn rejected_credentials_are_a_permanent_error() {
    // Proves: keys the server rejects (moto with authentication on, where no IAM user exists)
    // give a permanent error naming the secret, without echoing the keys.
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let sink = sink(&moto, "secret_id = \"tokend/denied\"\ncreate = true").await;

    let err = sink
        .write(&doc("tok-denied", 3600))
        .await
        .expect_err("unknown keys must be rejected");
    eprintln!("{err}");

    assert!(!err.is_transient(), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("aws:tokend/denied: "), "{message}");
    for secret in [ACCESS_KEY, SECRET_KEY, "tok-denied"] {
        assert!(!message.contains(secret), "{message}");
    }
}

#[tokio::test]
async fn no_credentials_or_token_in_any_error_or_debug_output() {
    // Proves: neither the AWS keys nor the access token appear in the Debug output of the
    // config or the sink (before and after the client is loaded) or in any error it returns.
    let mut moto = Moto::start();
    let token = "tok-LEAKCHECK-5f2b9c81";
    let body = "secret_id = \"tokend/leak\"";
    let config: SinkConfig = toml::from_str(&format!(
        "type = \"aws_secrets_manager\"\nendpoint_url = \"{}\"\n{body}",
        moto.endpoint()
    ))
    .expect("sink TOML parses");
    let sink = sink(&moto, body).await;
    let token_doc = doc(token, 3600);
    let mut texts = vec![
        format!("{config:?}"),
        format!("{sink:?}"),
        format!("{token_doc:?}"),
    ];
    let mut record = |err: SinkError| {
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
    };

    // The secret is missing and create = false.
    record(sink.write(&token_doc).await.expect_err("missing secret"));
    // The server is gone.
    moto.stop();
    record(sink.write(&token_doc).await.expect_err("server down"));
    texts.push(format!("{sink:?}"));

    assert_eq!(texts.len(), 8);
    // Control: a derived Debug would leak (the SDK's own Debug shows the access key id), so
    // the search below can see a leak.
    assert!(format!("{:?}", sdk_config(None).await).contains(ACCESS_KEY));
    for text in &texts {
        for secret in [ACCESS_KEY, SECRET_KEY, token] {
            assert!(!text.contains(secret), "{secret:?} leaked into: {text}");
        }
    }
}
