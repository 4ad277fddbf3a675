//! The vault sink against a real OpenBao dev server (`support::openbao`): KV v2 writes,
//! the sink's own token (AppRole renewal, max TTL, revocation), outages (sealing),
//! check-and-set between writers, error kinds and messages, TLS, namespaces, and secrets
//! kept out of errors, Debug output and logs.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::Method;
use secrecy::SecretString;
use serde_json::json;
use tokend::config::error::{Source, Validator, locate};
use tokend::sink::vault::VaultSink;
use tokend::sink::{
    Sink, SinkConfig, SinkContext, SinkError, TokenDocument, WriteOutcome, parse_rfc3339, rfc3339,
};

use crate::support::openbao::OpenBao;
use crate::support::{TestDir, wait_for_async};

/// Parses a `[[account.sink]]` table and builds it as `build` does for a config file in
/// `dir`; returns the located config errors as text.
fn build(dir: &TestDir, text: &str) -> Result<Sink, String> {
    let config: SinkConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    let source = Arc::new(Source {
        path: dir.join("tokend.toml"),
        text: text.to_string(),
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
        Ok(sink.expect("a sink when there is no problem"))
    } else {
        Err(locate(problems).to_string())
    }
}

/// [`build`] that must succeed.
fn sink(dir: &TestDir, text: &str) -> Sink {
    build(dir, text).unwrap_or_else(|e| panic!("config rejected:\n{e}\n--- config ---\n{text}"))
}

fn vault(sink: &Sink) -> &VaultSink {
    match sink {
        Sink::Vault(v) => v,
        other => panic!("not a vault sink: {other:?}"),
    }
}

/// A sink table for `bao` with the given extra lines (path, auth, …).
fn table(bao: &OpenBao, rest: &str) -> String {
    format!("type = \"vault\"\naddress = \"{}\"\n{rest}\n", bao.addr())
}

/// AppRole credentials with the role's name (for file names).
struct Role {
    name: String,
    role_id: String,
    secret_id: String,
}

/// An AppRole `auth` line; the secret id is read from a file, as in production.
fn approle_auth(dir: &TestDir, role: &Role) -> String {
    let file = dir.write(&format!("secret-id-{}", role.name), &role.secret_id);
    format!(
        "auth = {{ approle = {{ role_id = \"{}\", secret_id = {{ file = \"{}\" }} }} }}",
        role.role_id,
        file.display()
    )
}

async fn role(bao: &OpenBao, name: &str, ttl: &str, max_ttl: &str) -> Role {
    let creds = bao.approle(name, ttl, max_ttl).await;
    Role {
        name: name.into(),
        role_id: creds.role_id,
        secret_id: creds.secret_id,
    }
}

/// A token document of generation 1 with a unique access token expiring at `expires_at`.
fn doc_at(prefix: &str, expires_at: SystemTime) -> TokenDocument {
    doc_gen_at(prefix, 1, expires_at)
}

/// A token document of `generation` with a unique access token expiring at `expires_at`.
fn doc_gen_at(prefix: &str, generation: u64, expires_at: SystemTime) -> TokenDocument {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    TokenDocument {
        account: "acct".into(),
        provider: "oauth2".into(),
        access_token: SecretString::from(format!("{prefix}-{}-{n}", std::process::id())),
        token_type: "Bearer".into(),
        expires_at,
        generation,
    }
}

/// A token document expiring `secs` from now.
fn doc(prefix: &str, secs: u64) -> TokenDocument {
    doc_at(prefix, SystemTime::now() + Duration::from_secs(secs))
}

fn token_of(doc: &TokenDocument) -> String {
    use secrecy::ExposeSecret;
    doc.access_token.expose_secret().to_string()
}

#[tokio::test]
async fn writes_the_json_document_to_kv_v2_and_skips_an_unchanged_token() {
    // Proves: the sink stores the `json` document at mount/path, and writing the same token again stores nothing.
    let bao = OpenBao::start("vault-roundtrip").await;
    let dir = TestDir::new("vault-roundtrip-config");
    let s = sink(
        &dir,
        &table(
            &bao,
            "path = \"tokend/roundtrip\"\nauth = { token = \"root\" }",
        ),
    );
    assert_eq!(s.label(), "vault:secret/tokend/roundtrip");
    let d = doc("at-roundtrip", 3600);

    assert_eq!(
        s.write(&d).await.expect("first write"),
        WriteOutcome::Written
    );
    let (version, data) = bao
        .read_secret("secret", "tokend/roundtrip")
        .await
        .expect("the secret exists");
    assert_eq!(version, 1);
    assert_eq!(data["access_token"], token_of(&d));
    assert_eq!(data["token_type"], "Bearer");
    assert_eq!(data["account"], "acct");
    assert_eq!(data["provider"], "oauth2");
    assert_eq!(data["expires_at"], rfc3339(d.expires_at));
    assert_eq!(data["generation"], 1);
    let expires_in = data["expires_in"].as_u64().expect("expires_in is a number");
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");

    assert_eq!(
        s.write(&d).await.expect("second write"),
        WriteOutcome::Unchanged
    );
    let (version, _) = bao.read_secret("secret", "tokend/roundtrip").await.unwrap();
    assert_eq!(version, 1, "an unchanged token must not add a version");
}

#[tokio::test]
async fn approle_token_is_renewed_before_its_ttl_and_replaced_after_its_max_ttl() {
    // Proves: the sink renews its AppRole token before the TTL ends, and logs in again once the max TTL stops renewals.
    let bao = OpenBao::start("vault-renewal").await;
    let dir = TestDir::new("vault-renewal-config");
    let r = role(&bao, "short", "4s", "11s").await;
    let s = sink(
        &dir,
        &table(
            &bao,
            &format!("path = \"tokend/renewal\"\n{}", approle_auth(&dir, &r)),
        ),
    );
    let v = vault(&s);
    assert_eq!(
        s.write(&doc("at-renewal", 3600)).await.unwrap(),
        WriteOutcome::Written
    );
    let first = v.token_status();
    assert_eq!(first.logins, 1);
    assert!(first.renewable && !first.accessor.is_empty(), "{first:?}");

    // Renewed without any write: the background task does it.
    wait_for_async(
        "a renewal of the first token",
        Duration::from_secs(15),
        || async { v.token_status().renewals >= 1 },
    )
    .await;
    let info = bao
        .lookup_accessor(&first.accessor)
        .await
        .expect("the first token is alive after its renewal");
    let issued = parse_rfc3339(info["issue_time"].as_str().unwrap()).unwrap();
    let expires = parse_rfc3339(info["expire_time"].as_str().unwrap()).unwrap();
    let life = expires.duration_since(issued).unwrap();
    assert!(
        life > Duration::from_secs(5),
        "a renewed 4s token lives longer than 4s, got {life:?}"
    );

    // The max TTL (11s) caps the renewals; the sink logs in again before it ends.
    wait_for_async("a second login", Duration::from_secs(30), || async {
        v.token_status().logins >= 2
    })
    .await;
    let second = v.token_status();
    assert_ne!(second.accessor, first.accessor);
    assert!(second.renewals >= 2, "{second:?}");
    // Judged on Vault's clock: the new login came before the first token's end, so it was
    // planned, not a reaction to a refused request.
    let info = bao
        .lookup_accessor(&second.accessor)
        .await
        .expect("the second token is alive");
    let second_issued = parse_rfc3339(info["issue_time"].as_str().unwrap()).unwrap();
    assert!(
        second_issued < issued + Duration::from_secs(11),
        "logged in again at {second_issued:?}, after the first token's max ttl ({issued:?} + 11s)"
    );
    let d = doc("at-renewal-2", 3600);
    assert_eq!(s.write(&d).await.unwrap(), WriteOutcome::Written);
    let (_, data) = bao.read_secret("secret", "tokend/renewal").await.unwrap();
    assert_eq!(data["access_token"], token_of(&d));

    // And the first token did end at its max TTL, as Vault decided.
    wait_for_async(
        "the first token expired",
        Duration::from_secs(20),
        || async { bao.lookup_accessor(&first.accessor).await.is_none() },
    )
    .await;
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_a_new_login_and_a_revoked_static_token_is_permanent() {
    // Proves: an AppRole token revoked behind the sink's back (403) is replaced by a new login within one write; a revoked static token, which nothing can replace, is a permanent error.
    let bao = OpenBao::start("vault-revoked").await;
    let dir = TestDir::new("vault-revoked-config");
    let r = role(&bao, "long", "60s", "120s").await;
    let s = sink(
        &dir,
        &table(
            &bao,
            &format!("path = \"tokend/revoked\"\n{}", approle_auth(&dir, &r)),
        ),
    );
    let v = vault(&s);
    assert_eq!(
        s.write(&doc("at-revoked", 3600)).await.unwrap(),
        WriteOutcome::Written
    );
    let first = v.token_status();
    bao.revoke_accessor(&first.accessor).await;

    let d = doc("at-revoked-2", 3600);
    assert_eq!(s.write(&d).await.unwrap(), WriteOutcome::Written);
    let second = v.token_status();
    assert_eq!(second.logins, 2, "{second:?}");
    assert_ne!(second.accessor, first.accessor);
    let (_, data) = bao.read_secret("secret", "tokend/revoked").await.unwrap();
    assert_eq!(data["access_token"], token_of(&d));

    let static_token = bao.create_token("1h").await;
    let s = sink(
        &dir,
        &table(
            &bao,
            &format!("path = \"tokend/revoked-static\"\nauth = {{ token = \"{static_token}\" }}"),
        ),
    );
    assert_eq!(
        s.write(&doc("at-static", 3600)).await.unwrap(),
        WriteOutcome::Written
    );
    bao.revoke_accessor(&vault(&s).token_status().accessor)
        .await;
    let e = s.write(&doc("at-static-2", 3600)).await.unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
    let message = e.to_string();
    assert!(message.contains(bao.addr()), "{message}");
    assert!(message.contains("http 403"), "{message}");
    assert!(
        message.contains("expired, was revoked or is wrong"),
        "{message}"
    );
}

#[tokio::test]
async fn a_sealed_vault_is_transient_and_the_sink_catches_up_after_unsealing() {
    // Proves: writes to a sealed Vault fail as transient, and after unsealing the next write succeeds, logging in again because the token expired during the outage.
    let bao = OpenBao::start("vault-sealed").await;
    let dir = TestDir::new("vault-sealed-config");
    let r = role(&bao, "sealed", "3s", "60s").await;
    let s = sink(
        &dir,
        &table(
            &bao,
            &format!("path = \"tokend/sealed\"\n{}", approle_auth(&dir, &r)),
        ),
    );
    let v = vault(&s);
    assert_eq!(
        s.write(&doc("at-sealed", 3600)).await.unwrap(),
        WriteOutcome::Written
    );

    bao.seal().await;
    let d = doc("at-sealed-2", 3600);
    let e = s.write(&d).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    let message = e.to_string();
    assert!(message.contains("http 503"), "{message}");
    assert!(message.contains(bao.addr()), "{message}");
    assert!(message.contains("\"tokend/sealed\""), "{message}");

    wait_for_async(
        "the sink's token expired while sealed",
        Duration::from_secs(20),
        || async {
            v.token_status()
                .expires_at
                .is_some_and(|at| at < SystemTime::now())
        },
    )
    .await;
    bao.unseal().await;
    assert_eq!(s.write(&d).await.unwrap(), WriteOutcome::Written);
    assert_eq!(v.token_status().logins, 2);
    let (version, data) = bao.read_secret("secret", "tokend/sealed").await.unwrap();
    assert_eq!(
        (version, data["access_token"].as_str()),
        (2, Some(token_of(&d).as_str()))
    );
}

/// `secs` from now (negative: that long ago).
fn at(secs: i64) -> SystemTime {
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::now() + offset
    } else {
        SystemTime::now() - offset
    }
}

/// The stored `access_token` and `generation`.
async fn stored_token(bao: &OpenBao, path: &str) -> (String, u64) {
    let (_, data) = bao
        .read_secret("secret", path)
        .await
        .expect("the secret exists");
    (
        data["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        data["generation"].as_u64().expect("a generation field"),
    )
}

#[tokio::test]
async fn a_lower_generation_never_replaces_a_live_higher_one() {
    // Proves: the stored generation decides, not expires_at: generation 4 with a later expiry is kept out (KeptNewer, no new version), generation 6 with an earlier expiry is written, an expired generation 9 does not block generation 2 (a wiped state_dir restarts the counter), and a document without a generation (an older tokend) counts as 0.
    let bao = OpenBao::start("vault-order").await;
    let dir = TestDir::new("vault-order-config");
    let s = sink(
        &dir,
        &table(&bao, "path = \"tokend/order\"\nauth = { token = \"root\" }"),
    );
    let path = "tokend/order";
    // An older tokend's document: no generation, a token valid for hours.
    bao.ok(
        Method::POST,
        &format!("secret/data/{path}"),
        Some(json!({ "data": {
            "access_token": "from-an-older-tokend",
            "token_type": "Bearer",
            "expires_at": rfc3339(at(7200)),
        }})),
    )
    .await;

    let five = doc_gen_at("at-5", 5, at(3600));
    assert_eq!(s.write(&five).await.unwrap(), WriteOutcome::Written);
    assert_eq!(
        s.write(&doc_gen_at("at-4", 4, at(7200))).await.unwrap(),
        WriteOutcome::KeptNewer
    );
    assert_eq!(stored_token(&bao, path).await, (token_of(&five), 5));
    let (version, _) = bao.read_secret("secret", path).await.unwrap();
    assert_eq!(version, 2, "a kept-out write adds no version");

    let six = doc_gen_at("at-6", 6, at(1800));
    assert_eq!(s.write(&six).await.unwrap(), WriteOutcome::Written);
    assert_eq!(stored_token(&bao, path).await, (token_of(&six), 6));

    let nine_expired = doc_gen_at("at-9", 9, at(-60));
    assert_eq!(s.write(&nine_expired).await.unwrap(), WriteOutcome::Written);
    let two = doc_gen_at("at-2", 2, at(3600));
    assert_eq!(s.write(&two).await.unwrap(), WriteOutcome::Written);
    assert_eq!(stored_token(&bao, path).await, (token_of(&two), 2));
}

#[tokio::test]
async fn another_writer_between_read_and_write_never_leaves_the_lower_generation_current() {
    // Proves: the write is check-and-set on the version read. A proxy in front of OpenBao lets another writer store a document just before the sink's KV write, after the sink's read: a higher generation (7) that got in is kept (the CAS write is refused, the re-read keeps 7), a lower one (4) is replaced by ours (8) after the re-read.
    let bao = OpenBao::start("vault-interpose").await;
    let dir = TestDir::new("vault-interpose-config");
    let path = "tokend/interpose";
    let direct = sink(
        &dir,
        &table(
            &bao,
            &format!("path = \"{path}\"\nauth = {{ token = \"root\" }}"),
        ),
    );
    assert_eq!(
        direct
            .write(&doc_gen_at("at-5", 5, at(3600)))
            .await
            .unwrap(),
        WriteOutcome::Written
    );

    for (theirs, ours, expected) in [
        (7, 6, WriteOutcome::KeptNewer),
        (4, 8, WriteOutcome::Written),
    ] {
        let other = doc_gen_at("at-other", theirs, at(3600));
        let data: serde_json::Value =
            serde_json::from_str(&other.json(SystemTime::now())).expect("a json document");
        let url = format!("{}/v1/secret/data/{path}", bao.addr());
        let proxy = crate::support::interpose::Interpose::start(
            bao.addr(),
            |method, uri_path, _| {
                *method != Method::GET && uri_path.starts_with("/v1/secret/data/")
            },
            move |n| {
                let (url, data) = (url.clone(), data.clone());
                async move {
                    if n == 0 {
                        let status = reqwest::Client::new()
                            .post(url)
                            .header("X-Vault-Token", "root")
                            .json(&json!({ "data": data }))
                            .send()
                            .await
                            .expect("the other writer's write")
                            .status();
                        assert!(status.is_success(), "the other writer's write: {status}");
                    }
                }
            },
        )
        .await;
        let proxied = sink(
            &dir,
            &format!(
                "type = \"vault\"\naddress = \"{}\"\npath = \"{path}\"\nauth = {{ token = \"root\" }}\n",
                proxy.url()
            ),
        );
        let d = doc_gen_at("at-ours", ours, at(3600));

        let outcome = proxied.write(&d).await.unwrap();

        let what = format!("theirs {theirs}, ours {ours}");
        assert!(
            proxy.matched() >= 1,
            "{what}: the other writer never got in"
        );
        assert_eq!(outcome, expected, "{what}");
        let winner = if theirs > ours {
            token_of(&other)
        } else {
            token_of(&d)
        };
        assert_eq!(
            stored_token(&bao, path).await,
            (winner, theirs.max(ours)),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_end_with_the_highest_generation() {
    // Proves: two sinks racing on one secret (check-and-set conflicts, re-reads) leave the highest generation stored, whichever writes last, even though its token expires first.
    let bao = OpenBao::start("vault-race").await;
    let dir = TestDir::new("vault-race-config");
    let text = table(&bao, "path = \"tokend/race\"\nauth = { token = \"root\" }");
    let base = SystemTime::now() + Duration::from_secs(3600);
    // Writer 0 goes up (generations 0, 2 … 18), writer 1 comes down (19, 17 … 1): the last
    // write of either is never the highest generation. Expiries run the other way, so a rule
    // that compared them would keep the wrong token.
    let generations = |writer: u64| -> Vec<u64> {
        (0..10u64)
            .map(|i| match writer {
                0 => 2 * i,
                _ => 2 * (9 - i) + 1,
            })
            .collect()
    };
    let expires = |generation: u64| base + Duration::from_secs(100 - generation);
    let writer = |n: u64| {
        let s = sink(&dir, &text);
        let docs: Vec<TokenDocument> = generations(n)
            .into_iter()
            .map(|g| doc_gen_at(&format!("at-race-{n}-{g}"), g, expires(g)))
            .collect();
        async move {
            for d in docs {
                // Conflicts that exhaust the attempts are transient: retry like the account task.
                let mut tries = 0;
                loop {
                    match s.write(&d).await {
                        Ok(_) => break,
                        Err(e) if e.is_transient() && tries < 5 => tries += 1,
                        Err(e) => panic!("writer {n}: {e}"),
                    }
                }
            }
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(writer(0)), tokio::spawn(writer(1)));
    a.expect("writer 0");
    b.expect("writer 1");
    let (_, data) = bao.read_secret("secret", "tokend/race").await.unwrap();
    assert_eq!(data["generation"], 19);
    assert_eq!(data["expires_at"], rfc3339(expires(19)));
}

#[tokio::test]
async fn a_wrong_mount_is_a_clear_permanent_error() {
    // Proves: a mount that does not exist, or is not KV v2, is a permanent error naming the address, mount and path.
    let bao = OpenBao::start("vault-mount").await;
    let dir = TestDir::new("vault-mount-config");
    let s = sink(
        &dir,
        &table(
            &bao,
            "mount = \"nosuch\"\npath = \"tokend/x\"\nauth = { token = \"root\" }",
        ),
    );
    let e = s.write(&doc("at-mount", 3600)).await.unwrap_err();
    assert!(matches!(e, SinkError::Permanent(_)), "{e:?}");
    let message = e.to_string();
    for part in [
        bao.addr(),
        "mount \"nosuch\"",
        "path \"tokend/x\"",
        "http 404",
    ] {
        assert!(message.contains(part), "{part:?} missing in: {message}");
    }

    bao.ok(
        Method::POST,
        "sys/mounts/kv1",
        Some(json!({ "type": "kv", "options": { "version": "1" } })),
    )
    .await;
    let s = sink(
        &dir,
        &table(
            &bao,
            "mount = \"kv1\"\npath = \"tokend/x\"\nauth = { token = \"root\" }",
        ),
    );
    let e = s.write(&doc("at-kv1", 3600)).await.unwrap_err();
    assert!(matches!(e, SinkError::Permanent(_)), "{e:?}");
    assert!(e.to_string().contains("not a kv v2 secrets engine"), "{e}");

    // A token whose policy does not reach the mount sees 403 instead (Vault hides which
    // mounts exist); the message still names the mount, the path and the policy to check.
    let r = role(&bao, "limited", "60s", "120s").await;
    let s = sink(
        &dir,
        &table(
            &bao,
            &format!(
                "mount = \"nosuch\"\npath = \"tokend/x\"\n{}",
                approle_auth(&dir, &r)
            ),
        ),
    );
    let e = s.write(&doc("at-limited", 3600)).await.unwrap_err();
    let message = e.to_string();
    for part in [
        bao.addr(),
        "mount \"nosuch\"",
        "\"nosuch/data/tokend/x\"",
        "http 403",
    ] {
        assert!(message.contains(part), "{part:?} missing in: {message}");
    }
    assert_eq!(
        vault(&s).token_status().logins,
        2,
        "one new login after the 403"
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_errors_debug_output_or_logs() {
    // Proves: no Vault token, role id, secret id or access token shows up in any error message, Debug string or log line, including on failures.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // With a single scoped dispatcher, tracing-core caches each callsite's interest from
    // whichever thread hits it first (another test's, without a subscriber), and this test
    // would miss events; a second registered dispatcher makes it ask all of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());

    let bao = OpenBao::start("vault-leaks").await;
    let dir = TestDir::new("vault-leaks-config");
    let r = role(&bao, "leaks", "3s", "60s").await;
    let static_token = bao.create_token("1h").await;
    let mut secrets = vec![r.role_id.clone(), r.secret_id.clone(), static_token.clone()];
    let mut seen: Vec<String> = Vec::new();

    // Working sinks: AppRole (literal role id, secret id from a file) and a static token.
    let approle_text = table(
        &bao,
        &format!("path = \"tokend/leaks\"\n{}", approle_auth(&dir, &r)),
    );
    let literal_text = table(
        &bao,
        &format!(
            "path = \"tokend/leaks\"\nauth = {{ approle = {{ role_id = \"{}\", secret_id = \"{}\" }} }}",
            r.role_id, r.secret_id
        ),
    );
    let static_text = table(
        &bao,
        &format!("path = \"tokend/leaks-static\"\nauth = {{ token = \"{static_token}\" }}"),
    );
    let approle = sink(&dir, &approle_text);
    let literal = sink(&dir, &literal_text);
    let fixed = sink(&dir, &static_text);
    for text in [&approle_text, &literal_text, &static_text] {
        let config: SinkConfig = toml::from_str(text).unwrap();
        seen.push(format!("{config:?}"));
    }
    for s in [&approle, &literal, &fixed] {
        let d = doc("at-leaks", 3600);
        secrets.push(token_of(&d));
        seen.push(format!("{:?}", s.write(&d).await));
        seen.push(format!("{d:?}"));
        seen.push(format!("{s:?}"));
        seen.push(format!("{:?}", vault(s).token_status()));
    }
    // Let the AppRole token be renewed at least once, so renewal logs are covered.
    wait_for_async("a renewal", Duration::from_secs(15), || async {
        vault(&approle).token_status().renewals >= 1
    })
    .await;

    // Failures: a wrong secret id, a wrong mount (403 then a new login), a sealed server,
    // a revoked static token, nobody listening.
    let wrong = sink(
        &dir,
        &table(
            &bao,
            &format!(
                "path = \"tokend/leaks\"\nauth = {{ approle = {{ role_id = \"{}\", secret_id = \"{}-wrong\" }} }}",
                r.role_id, r.secret_id
            ),
        ),
    );
    let wrong_mount = sink(
        &dir,
        &table(
            &bao,
            &format!(
                "mount = \"nosuch\"\npath = \"x\"\n{}",
                approle_auth(&dir, &r)
            ),
        ),
    );
    let mut errors = Vec::new();
    let d = doc("at-leaks-fail", 3600);
    secrets.push(token_of(&d));
    errors.push(wrong.write(&d).await.unwrap_err());
    errors.push(wrong_mount.write(&d).await.unwrap_err());
    bao.seal().await;
    errors.push(approle.write(&d).await.unwrap_err());
    errors.push(fixed.write(&d).await.unwrap_err());
    bao.unseal().await;
    bao.revoke_accessor(&vault(&fixed).token_status().accessor)
        .await;
    errors.push(fixed.write(&d).await.unwrap_err());
    let nobody = sink(
        &dir,
        &format!(
            "type = \"vault\"\naddress = \"http://127.0.0.1:{}\"\npath = \"x\"\nauth = {{ token = \"{static_token}\" }}\ntimeout = \"2s\"",
            crate::support::free_port()
        ),
    );
    errors.push(nobody.write(&d).await.unwrap_err());
    for e in &errors {
        seen.push(e.to_string());
        seen.push(format!("{e:?}"));
    }
    // A config error around a literal token.
    let bad = build(
        &dir,
        &format!(
            "type = \"vault\"\naddress = \"http://10.0.0.1\"\npath = \"\"\nauth = {{ token = \"{static_token}\" }}"
        ),
    )
    .unwrap_err();
    seen.push(bad);
    drop((approle, literal, fixed, wrong, wrong_mount, nobody));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "vault login succeeded",
        "vault token renewed",
        "account=acct",
    ] {
        assert!(logs.contains(expected), "{expected:?} not logged:\n{logs}");
    }
    seen.push(logs);
    for text in &seen {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn https_uses_ca_file_and_checks_tls_server_name() {
    // Proves: https works with `ca_file`, the certificate is checked against `tls_server_name` when set, and an untrusted server is a transient error.
    let bao = OpenBao::start_tls("vault-tls").await;
    let dir = TestDir::new("vault-tls-config");
    let ca = bao.ca_file().display().to_string();
    let port = bao.addr().rsplit(':').next().unwrap().to_string();
    let with = |extra: &str| {
        sink(
            &dir,
            &format!(
                "type = \"vault\"\naddress = \"https://127.0.0.1:{port}\"\npath = \"tokend/tls\"\nauth = {{ token = \"root\" }}\n{extra}"
            ),
        )
    };

    let d = doc("at-tls", 3600);
    let s = with(&format!("ca_file = \"{ca}\""));
    assert_eq!(s.write(&d).await.unwrap(), WriteOutcome::Written);

    // The certificate names localhost: checked against that name, the IP address still
    // being where the requests go.
    let s = with(&format!(
        "ca_file = \"{ca}\"\ntls_server_name = \"localhost\""
    ));
    assert_eq!(
        s.write(&doc("at-tls-2", 3600)).await.unwrap(),
        WriteOutcome::Written
    );

    let s = with(&format!(
        "ca_file = \"{ca}\"\ntls_server_name = \"not-in-the-cert.example\""
    ));
    let e = s.write(&doc("at-tls-3", 3600)).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    let s = with("");
    let e = s.write(&doc("at-tls-4", 3600)).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test]
async fn namespace_selects_the_namespace_of_the_mount() {
    // Proves: `namespace` is sent with every request, so the secret lands in that namespace's mount and not in the root one.
    let bao = OpenBao::start("vault-namespace").await;
    let dir = TestDir::new("vault-namespace-config");
    bao.ok(Method::POST, "sys/namespaces/team", None).await;
    let answer = bao
        .call_in(
            Some("team"),
            Method::POST,
            "sys/mounts/secret",
            Some(json!({ "type": "kv", "options": { "version": "2" } })),
        )
        .await;
    assert!((200..300).contains(&answer.status), "{}", answer.body);

    let s = sink(
        &dir,
        &table(
            &bao,
            "namespace = \"team\"\npath = \"tokend/ns\"\nauth = { token = \"root\" }",
        ),
    );
    let d = doc("at-ns", 3600);
    assert_eq!(s.write(&d).await.unwrap(), WriteOutcome::Written);
    let (_, data) = bao
        .read_secret_in(Some("team"), "secret", "tokend/ns")
        .await
        .expect("the secret is in the namespace");
    assert_eq!(data["access_token"], token_of(&d));
    assert!(bao.read_secret("secret", "tokend/ns").await.is_none());
}
