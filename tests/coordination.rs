//! Issue 14, the basic contract of `[daemon.coordination]` against a real OpenBao and the
//! real binary: two instances sharing a rotating (Zarv) account refresh it about as often
//! as one would, never reuse a rotated refresh token, and both publish the newest token;
//! the record and `status` show generations, the claim and who refreshed. (The failure
//! cases, kills, a sealed store, clock skew and a partition, are in `ha.rs`.)

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokend::emulator::{Emulator, Options, PASSWORD, Provider, USERNAME};

use crate::support::openbao::OpenBao;
use crate::support::process::TokendProcess;
use crate::support::{TestDir, tokend_cmd, wait_for};

fn config(dir: &TestDir, n: usize, emu: &Emulator, bao: &OpenBao) -> std::path::PathBuf {
    let text = format!(
        r#"[daemon]
state_dir = "{state}"
log_format = "json"
log_level = "info,tokend=debug"
[daemon.refresh]
min_margin = "1s"
[daemon.coordination]
store = "vault"
address = "{addr}"
mount = "secret"
prefix = "tokend/smoke"
auth = {{ token = "root" }}
claim_ttl = "3s"
instance = "instance-{n}"

[[account]]
name = "zarv"
provider = "zarv"
base_url = "{base}"
username = "{USERNAME}"
password = "{PASSWORD}"
timeout = "1s"
[[account.sink]]
type = "file"
path = "{sink}"
format = "raw"
"#,
        state = dir.join(&format!("state-{n}")).display(),
        addr = bao.addr(),
        base = emu.base_url(Provider::Zarv),
        sink = dir.join(&format!("token-{n}")).display(),
    );
    let path = dir.join(&format!("tokend-{n}.toml"));
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn token(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_string())
}

#[test]
fn two_instances_share_a_rotating_account_without_reuse_or_double_refresh() {
    let dir = TestDir::new("coordination-smoke");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bao = rt.block_on(OpenBao::start("coordination-smoke"));
    let emu = Emulator::start(Options {
        access_lifetime: Duration::from_secs(4),
        ..Options::default()
    })
    .unwrap();
    let configs: Vec<_> = (0..2).map(|n| config(&dir, n, &emu, &bao)).collect();
    let mut daemons: Vec<TokendProcess> = configs
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let logs = dir.join(&format!("log-{n}"));
            std::fs::create_dir_all(&logs).unwrap();
            TokendProcess::run(c, &logs)
        })
        .collect();
    let started = Instant::now();
    // Six lifetimes of 4 s: one instance refreshes at 75 %, about every 3 s.
    wait_for("8 refreshes", Duration::from_secs(60), || {
        emu.stats(Provider::Zarv).refreshes >= 8
    });
    let elapsed = started.elapsed();
    let stats = emu.stats(Provider::Zarv);
    assert_eq!(stats.spent_refresh_reuses, 0, "{stats:?}");
    // One instance alone: 1 login + one refresh per ~3 s.
    let one = 1.0 + elapsed.as_secs_f64() / 3.0;
    let made = (stats.logins + stats.refreshes) as f64;
    assert!(
        made <= one * 1.5 + 2.0,
        "{made} requests in {elapsed:?} (one instance: {one:.1})"
    );
    // Both files end on the same, valid token.
    wait_for(
        "both sinks hold the newest valid token",
        Duration::from_secs(10),
        || {
            let (a, b) = (token(&dir.join("token-0")), token(&dir.join("token-1")));
            a.is_some() && a == b && emu.token_is_valid(Provider::Zarv, a.as_deref().unwrap())
        },
    );
    // A graceful stop lets a claimed flight commit or release: no claim is left behind.
    for d in &daemons {
        d.signal(nix::sys::signal::Signal::SIGTERM);
    }
    for d in &mut daemons {
        assert!(d.wait_exit(Duration::from_secs(10)).success());
    }
    // The record and `status` say who did what.
    let record = rt.block_on(bao.call_in(
        None,
        reqwest::Method::GET,
        "secret/data/tokend/smoke/zarv",
        None,
    ));
    let data = &record.body["data"]["data"];
    let generation = data["generation"].as_u64().unwrap();
    assert!(generation >= 8, "{data}");
    assert!(data["claim"].is_null(), "{data}");
    let by = data["refreshed_by"].as_str().unwrap();
    assert!(by == "instance-0" || by == "instance-1", "{by}");
    let out = tokend_cmd(&["status", "--json", "-c", configs[0].to_str().unwrap()])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &status["accounts"][0]["coordination"];
    assert!(c["generation"].as_u64().unwrap() >= 8, "{status}");
    assert!(c["refreshed_by"].is_string(), "{status}");
    assert!(c["record_generation"].as_u64().unwrap() >= 8, "{status}");
    assert!(c["claim"].is_null(), "{status}");
    let text = tokend_cmd(&["status", "-c", configs[0].to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("coordination: generation "), "{text}");
}
