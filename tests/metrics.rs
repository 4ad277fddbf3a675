//! The `[daemon] listen` endpoint of the real daemon: `/metrics` is valid exposition text
//! (checked by an independent parser, Python's prometheus_client) with the SPEC's metric
//! names and account labels; `/readyz` turns 503 when a provider fails past expiry and
//! back to 200 when it recovers; no response holds a token.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::Duration;

use tokend::emulator::{self, Emulator, Fault, Options, Provider};

use crate::support::{TestDir, block_on, free_port, tokend_cmd, tool, wait_for};

/// The daemon as a child process, killed on drop (log printed if the test failed).
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- tokend log\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn get(url: &str) -> (u16, String, String) {
    block_on(async {
        match reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let ctype = r
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("").to_string())
                    .unwrap_or_default();
                (status, ctype, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new(), String::new()),
        }
    })
}

/// Parses the exposition with prometheus_client's OpenMetrics parser; returns
/// `name{labels}` lines for every sample.
fn parse_with_prometheus_client(text: &str) -> Vec<String> {
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nfor f in p(sys.stdin.read()):\n    for s in f.samples:\n        print(s.name, sorted(s.labels.items()))\n";
    let mut child = std::process::Command::new(tool("python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn metrics_parse_and_readyz_follows_token_validity() {
    // Proves: valid exposition with SPEC names and account labels; /healthz 200; /readyz
    // 200 while tokens are valid, 503 naming the account once its token expired during a
    // provider outage, 200 again after recovery; no token in any response.
    let emu = Emulator::start(Options {
        access_lifetime: Duration::from_secs(3),
        ..Options::default()
    })
    .unwrap();
    let dir = TestDir::new("metrics");
    let port = free_port();
    let cfg = dir.write(
        "tokend.toml",
        &format!(
            "[daemon]\nstate_dir = \"state\"\nlog_format = \"text\"\nlisten = \"127.0.0.1:{port}\"\n[daemon.retry]\ninitial = \"200ms\"\nmax = \"1s\"\n\n\
             [[account]]\nname = \"pt\"\nprovider = \"pontotel\"\nbase_url = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n\
             [[account.sink]]\ntype = \"file\"\npath = \"pt.token\"\n",
            emu.base_url(Provider::Pontotel),
            emulator::USERNAME,
            emulator::PASSWORD
        ),
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = dir.join("tokend.log");
    let mut cmd = tokend_cmd(&["-c", cfg.to_str().unwrap(), "run"]);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _daemon = Daemon {
        child: cmd.spawn().unwrap(),
        log: log.clone(),
    };
    let base = format!("http://127.0.0.1:{port}");

    wait_for("readyz 200", Duration::from_secs(20), || {
        get(&format!("{base}/readyz")).0 == 200
    });
    assert_eq!(get(&format!("{base}/healthz")).0, 200);
    let (status, ctype, text) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let samples = parse_with_prometheus_client(&text);
    for name in [
        "tokend_token_expiry_timestamp_seconds [('account', 'pt')]",
        "tokend_refresh_total [('account', 'pt'), ('result', 'success')]",
        "tokend_refresh_duration_seconds_count [('account', 'pt')]",
        "tokend_sink_write_total [('account', 'pt'), ('result', 'written'), ('sink', 'file:",
    ] {
        assert!(
            samples.iter().any(|s| s.starts_with(name)),
            "no sample {name}:\n{}",
            samples.join("\n")
        );
    }
    let token = std::fs::read_to_string(dir.join("pt.token"))
        .unwrap()
        .trim()
        .to_string();
    assert!(!text.contains(&token));

    // Outage: every request fails until the token has expired → 503 naming the account.
    emu.set_random_faults(Provider::Pontotel, 1.0, vec![Fault::Status(503)]);
    wait_for("readyz 503", Duration::from_secs(20), || {
        let (s, _, body) = get(&format!("{base}/readyz"));
        s == 503 && body.contains("pt")
    });
    let (_, _, text) = get(&format!("{base}/metrics"));
    assert!(parse_with_prometheus_client(&text).iter().any(|s| {
        s.starts_with("tokend_refresh_total [('account', 'pt'), ('result', 'transient')]")
    }));
    // Recovery.
    emu.clear_faults(Provider::Pontotel);
    wait_for("readyz 200 again", Duration::from_secs(20), || {
        get(&format!("{base}/readyz")).0 == 200
    });
    for path in ["/metrics", "/readyz", "/healthz"] {
        let now = std::fs::read_to_string(dir.join("pt.token"))
            .unwrap()
            .trim()
            .to_string();
        assert!(
            !get(&format!("{base}{path}")).2.contains(&now),
            "{path} holds the token"
        );
    }
}
