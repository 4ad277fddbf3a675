//! Unit tests of the Vault calls against a scripted loopback server (axum): what vaultrs
//! sends, and how answers and failures become [`super::ApiError`]s.

use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::json;

use super::*;

#[test]
fn error_words_are_one_short_line() {
    assert_eq!(
        error_words(br#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#),
        "1 error occurred: * permission denied"
    );
    assert_eq!(error_words(br#"{"errors":[]}"#), "");
    assert_eq!(error_words(b"<html>bad gateway</html>"), "");
    let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000));
    assert_eq!(error_words(long.as_bytes()).chars().count(), MAX_DETAIL + 1);
}

/// One request as the scripted server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// `GET /v1/secret/data/x`, with the query if any.
    request: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A loopback server that answers the requests, in order, with the `(status, body)` of its
/// script, and records what it saw.
async fn scripted(script: Vec<(u16, &'static str)>) -> (Url, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let script = Arc::new(Mutex::new(script.into_iter()));
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (log, script) = (Arc::clone(&log), Arc::clone(&script));
            async move {
                // vaultrs sends an empty query (`data/x?`) when it has no parameters.
                let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
                log.lock().unwrap().push(Seen {
                    request: format!("{method} {}", target.trim_end_matches('?')),
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let (status, body) = script
                    .lock()
                    .unwrap()
                    .next()
                    .expect("the script answers every request");
                (
                    StatusCode::from_u16(status).unwrap(),
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn requests(seen: &Mutex<Vec<Seen>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|s| s.request.clone())
        .collect()
}

fn client(base: &Url, namespace: Option<&str>) -> Api {
    Api::new(
        crate::http_client::build(crate::http_client::ClientOptions::default()).unwrap(),
        base,
        namespace.map(str::to_string),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn session(api: &Api, t: &str) -> Session {
    api.session(SecretString::from(t.to_string())).unwrap()
}

const NOT_FOUND: &str = r#"{"errors":[]}"#;
const METADATA_V3_DELETED: &str = r#"{"data":{"cas_required":false,"created_time":"t",
    "current_version":3,"delete_version_after":"0s","max_versions":0,"oldest_version":0,
    "updated_time":"t","custom_metadata":null,"versions":{"3":{"created_time":"t",
    "deletion_time":"t2","destroyed":false}}},"lease_id":"","lease_duration":0,
    "renewable":false,"request_id":"r"}"#;
const DATA_V3: &str = r#"{"data":{"data":{"access_token":"a"},"metadata":{
    "created_time":"t","deletion_time":"","destroyed":false,"version":3}},
    "lease_id":"","lease_duration":0,"renewable":false,"request_id":"r"}"#;

fn metadata_v3_live() -> &'static str {
    let live = METADATA_V3_DELETED.replace(r#""deletion_time":"t2""#, r#""deletion_time":"""#);
    Box::leak(live.into_boxed_str())
}

#[tokio::test]
async fn requests_carry_the_token_and_the_namespace() {
    let (base, seen) = scripted(vec![(200, metadata_v3_live()), (200, DATA_V3)]).await;
    let api = client(&base, Some("team/a"));
    let current = api
        .kv_read(&session(&api, "hvs.secret"), "team/kv", "tokend/a b")
        .await
        .unwrap();
    assert_eq!(current.version, 3);
    assert_eq!(current.data.unwrap()["access_token"], "a");
    assert_eq!(
        requests(&seen),
        [
            "GET /v1/team/kv/metadata/tokend/a%20b",
            "GET /v1/team/kv/data/tokend/a%20b?version=3"
        ]
    );
    for seen in seen.lock().unwrap().iter() {
        assert_eq!(seen.header("x-vault-token"), Some("hvs.secret"));
        assert_eq!(seen.header("x-vault-namespace"), Some("team/a"));
        assert_eq!(seen.header("x-vault-request"), Some("true"));
    }
}

#[tokio::test]
async fn the_version_comes_from_the_metadata() {
    // Never written (or no such mount): metadata 404, nothing else is read.
    let (base, seen) = scripted(vec![(404, NOT_FOUND)]).await;
    let api = client(&base, None);
    let current = api.kv_read(&session(&api, "t"), "secret", "x").await;
    let current = current.unwrap();
    assert_eq!((current.version, current.data.is_none()), (0, true));
    assert_eq!(requests(&seen), ["GET /v1/secret/metadata/x"]);

    // Latest version deleted: the version, no data, and no read of it.
    let (base, seen) = scripted(vec![(200, METADATA_V3_DELETED)]).await;
    let api = client(&base, None);
    let current = api.kv_read(&session(&api, "t"), "secret", "x").await;
    let current = current.unwrap();
    assert_eq!((current.version, current.data.is_none()), (3, true));
    assert_eq!(requests(&seen).len(), 1);

    // Deleted between the two reads: that version, without data.
    let (base, _) = scripted(vec![(200, metadata_v3_live()), (404, NOT_FOUND)]).await;
    let api = client(&base, None);
    let current = api.kv_read(&session(&api, "t"), "secret", "x").await;
    let current = current.unwrap();
    assert_eq!((current.version, current.data.is_none()), (3, true));
}

#[tokio::test]
async fn writes_send_check_and_set_and_spot_kv_v1() {
    let written = r#"{"data":{"created_time":"t","deletion_time":"","destroyed":false,
        "version":4},"lease_id":"","lease_duration":0,"renewable":false,"request_id":"r"}"#;
    let (base, seen) = scripted(vec![(200, written), (204, "")]).await;
    let api = client(&base, None);
    let s = session(&api, "t");
    let data = json!({ "access_token": "a" });
    assert_eq!(api.kv_write(&s, "secret", "x", &data, 3).await.unwrap(), 4);
    let body: Value = serde_json::from_str(&seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(body, json!({ "data": data, "options": { "cas": 3 } }));
    assert_eq!(requests(&seen), ["POST /v1/secret/data/x"]);
    assert!(matches!(
        api.kv_write(&s, "kv1", "x", &data, 0).await,
        Err(ApiError::NotKv2)
    ));
}

#[tokio::test]
async fn errors_keep_the_status_and_vault_words_only() {
    let (base, _) = scripted(vec![
        (503, r#"{"errors":["Vault is sealed"]}"#),
        (502, "<html>bad gateway</html>"),
        (200, r#"{"auth":null,"client_token":"hvs.leaked"}"#),
    ])
    .await;
    let api = client(&base, None);
    let s = session(&api, "t");
    let e = api.kv_read(&s, "secret", "x").await.err().unwrap();
    assert!(
        matches!(&e, ApiError::Status { status: 503, detail } if detail == "Vault is sealed"),
        "{e:?}"
    );
    let e = api.renew_self(&s).await.err().unwrap();
    assert!(
        matches!(&e, ApiError::Status { status: 502, detail } if detail.is_empty()),
        "{e:?}"
    );
    let r = SecretString::from("r".to_string());
    let e = api.approle_login("approle", &r, &r).await.err().unwrap();
    assert!(matches!(&e, ApiError::Malformed(_)), "{e:?}");
    assert!(!format!("{e:?}").contains("hvs.leaked"), "{e:?}");
}

#[tokio::test]
async fn transport_errors_and_unsendable_tokens() {
    // A server that hangs up on every connection (bound here, so no other process can
    // take the port meanwhile).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let base = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let api = client(&base, None);
    let e = api.lookup_self(&session(&api, "t")).await.err().unwrap();
    assert!(
        matches!(&e, ApiError::Transport { timeout: false, detail } if !detail.contains("127.0.0.1")),
        "{e:?}"
    );
    let e = api.session(SecretString::from("a\nb".to_string())).err();
    assert!(matches!(e, Some(ApiError::BadToken)));
}

/// Issue 11: a TTL of u64::MAX from a hostile server once overflowed `Instant + ttl`.
#[test]
fn lease_ttls_are_clamped_to_a_year() {
    assert_eq!(lease_ttl(u64::MAX), crate::bounds::MAX_LIFETIME);
    assert_eq!(lease_ttl(3600), Duration::from_secs(3600));
}
