//! The `[daemon] listen` endpoint of the real daemon: `/metrics` is valid exposition text
//! (checked by an independent parser, Python's prometheus_client) with the SPEC's metric
//! names and account labels; `/readyz` turns 503 when a provider fails past expiry and
//! back to 200 when it recovers; no response holds a token.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::Duration;

use tokend::emulator::{self, Emulator, Fault, Options, Provider};

use crate::support::{TestDir, block_on, listen_port, tokend_cmd, tool, wait_for};

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

/// Runs `script` (Python, reading the exposition on stdin) against prometheus_client's
/// OpenMetrics parser, an independent check of tokend's output; its stdout's lines.
fn prometheus_client(script: &str, text: &str) -> Vec<String> {
    let script = format!(
        "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nfor f in p(sys.stdin.read()):\n    for s in f.samples:\n        {script}\n"
    );
    let mut child = std::process::Command::new(tool("python"))
        .args(["-c", &script])
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

/// `name [labels]` lines for every sample.
fn parse_with_prometheus_client(text: &str) -> Vec<String> {
    prometheus_client("print(s.name, sorted(s.labels.items()))", text)
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
    let cfg = dir.write(
        "tokend.toml",
        &format!(
            "[daemon]\nstate_dir = \"state\"\nlog_format = \"text\"\nlisten = \"127.0.0.1:0\"\n[daemon.retry]\ninitial = \"200ms\"\nmax = \"1s\"\n\n\
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
    let base = format!("http://127.0.0.1:{}", listen_port(&log));

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

/// Every `name{labels} value` sample of an exposition, parsed by prometheus_client.
fn samples(text: &str) -> Vec<(String, f64)> {
    prometheus_client(
        "print(s.name + '{' + ','.join(k + '=' + v for k, v in sorted(s.labels.items())) + '}', s.value)",
        text,
    )
    .iter()
    .filter_map(|l| l.rsplit_once(' '))
    .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
    .collect()
}

/// The value of the one sample whose name and labels contain every part of `want`.
fn value(samples: &[(String, f64)], want: &[&str]) -> Option<f64> {
    samples
        .iter()
        .find(|(k, _)| want.iter().all(|w| k.contains(w)))
        .map(|(_, v)| *v)
}

/// The alert rules of docs/OPERATIONS.md: (name, expr).
fn alert_rules() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md"))
        .expect("docs/OPERATIONS.md");
    let mut rules = Vec::new();
    let mut name = None;
    for line in doc.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = Some(n.to_string());
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            let n = name.take().expect("an expr belongs to an alert");
            rules.push((n, expr.to_string()));
        }
    }
    rules
}

#[test]
fn every_alert_rule_is_seen_moving_the_way_it_expects() {
    // Proves (issue 13): each alert of docs/OPERATIONS.md watches a series that exists from
    // the first scrape (a counter that appeared at 1 would show no increase(), and the
    // alert would never fire on the first failure), and the real daemon moves it the way
    // the rule expects when its fault happens: rejected credentials, any failed refresh,
    // a failing sink, an invalid reload, a token expiring soon and an expired one.
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "TokendTokenExpiringSoon",
            "TokendTokenExpired",
            "TokendRefreshFailing",
            "TokendCredentialsRejected",
            "TokendSinkWriteFailing",
            "TokendReloadFailed",
            "TokendDown",
        ],
        "an alert was added or renamed: show it here too"
    );
    let long = Emulator::start(Options {
        access_lifetime: Duration::from_secs(3600),
        ..Options::default()
    })
    .unwrap();
    let short = Emulator::start(Options {
        access_lifetime: Duration::from_secs(4),
        ..Options::default()
    })
    .unwrap();
    let dir = TestDir::new("alerts");
    let account = |name: &str, emu: &Emulator, sink: &str| {
        format!(
            "[[account]]\nname = \"{name}\"\nprovider = \"pontotel\"\nbase_url = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n[[account.sink]]\ntype = \"file\"\npath = \"{sink}\"\n",
            emu.base_url(Provider::Pontotel),
            emulator::USERNAME,
            emulator::PASSWORD
        )
    };
    let config = format!(
        "[daemon]\nstate_dir = \"state\"\nlog_format = \"text\"\nlisten = \"127.0.0.1:0\"\n[daemon.retry]\nmax_expired = \"1s\"\n\n{}{}",
        account("steady", &long, "out/steady.token"),
        account("brief", &short, "brief.token")
    );
    let cfg = dir.write("tokend.toml", &config);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = dir.join("tokend.log");
    let mut cmd = tokend_cmd(&["-c", cfg.to_str().unwrap(), "run"]);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let daemon = Daemon {
        child: cmd.spawn().unwrap(),
        log: log.clone(),
    };
    let base = format!("http://127.0.0.1:{}", listen_port(&log));
    wait_for("readyz 200", Duration::from_secs(20), || {
        get(&format!("{base}/readyz")).0 == 200
    });
    let scrape = || samples(&get(&format!("{base}/metrics")).2);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let first = scrape();
    // Present at 0 from the first scrape: the series every increase() alert watches.
    let rejected = ["tokend_refresh_total{", "account=steady", "result=rejected"];
    let transient = ["tokend_refresh_total{", "account=brief", "result=transient"];
    let sink_error = ["tokend_sink_write_total{", "account=steady", "result=error"];
    let reload_error = ["tokend_config_reload_total{", "result=error"];
    for series in [&rejected[..], &transient, &sink_error, &reload_error] {
        assert_eq!(
            value(&first, series),
            Some(0.0),
            "{series:?} at the first scrape"
        );
    }
    assert_eq!(value(&first, &["tokend_build_info{"]), Some(1.0));
    // TokendTokenExpiringSoon: expiry - time() < 300 holds for the 4 s token, not the 1 h one.
    let expiry = |s: &[(String, f64)], a: &str| {
        value(
            s,
            &[
                "tokend_token_expiry_timestamp_seconds{",
                &format!("account={a}"),
            ],
        )
        .expect("expiry gauge")
    };
    assert!(expiry(&first, "brief") - now() < 300.0);
    assert!(expiry(&first, "steady") - now() >= 300.0);
    let usr1 = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.child.id() as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap()
    };
    // TokendSinkWriteFailing: the sink's directory becomes a file; SIGUSR1 brings a new
    // token that cannot be written.
    std::fs::remove_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out"), "not a directory").unwrap();
    usr1();
    wait_for("sink error counted", Duration::from_secs(20), || {
        value(&scrape(), &sink_error) >= Some(1.0)
    });
    // TokendCredentialsRejected and TokendRefreshFailing: a rejected login.
    long.reject_credentials(Provider::Pontotel, true);
    long.revoke_all(Provider::Pontotel);
    usr1();
    wait_for("rejected counted", Duration::from_secs(20), || {
        value(&scrape(), &rejected) >= Some(1.0)
    });
    // TokendReloadFailed: an invalid edit.
    std::fs::write(&cfg, config.replace("[daemon]", "[daemon]\nbogus = 1")).unwrap();
    wait_for("reload error counted", Duration::from_secs(20), || {
        value(&scrape(), &reload_error) >= Some(1.0)
    });
    // TokendTokenExpired and TokendRefreshFailing: the 4 s token's provider goes down.
    short.set_random_faults(Provider::Pontotel, 1.0, vec![Fault::Status(503)]);
    wait_for(
        "an expired token in the gauge",
        Duration::from_secs(20),
        || {
            let s = scrape();
            expiry(&s, "brief") - now() < 0.0 && value(&s, &transient) >= Some(1.0)
        },
    );
    drop(daemon);
}
