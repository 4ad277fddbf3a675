//! Issue 13's smaller operator findings, each through the real binary: a closed pipe is not
//! an error, `once` does not promise a retry it will not make, `check` says what the daemon
//! does first, and the README documents `demo --dir`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use tokend::emulator::{Emulator, Options, Provider};

use crate::support::{TestDir, tokend, tokend_cmd};

fn config(dir: &TestDir, emu: &Emulator, provider: Provider, sink: &str) -> String {
    let name = provider.name();
    let text = format!(
        "[daemon]\nstate_dir = \"state\"\nlog_format = \"text\"\n\n[[account]]\nname = \"{name}\"\nprovider = \"{name}\"\n{}\n[[account.sink]]\ntype = \"file\"\npath = \"{sink}\"\n",
        emu.account_settings(provider)
    );
    let path = dir.write("tokend.toml", &text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn status_json_into_a_closed_pipe_is_not_an_error() {
    // Proves: `tokend status --json | head -c 1` ends quietly: no "Broken pipe" message
    // and the documented exit code (3: no daemon runs), not 1.
    // 400 accounts: the document (~250 KB) is larger than a pipe's buffer (64 KiB), so
    // the write really meets the closed pipe.
    let emu = Emulator::start(Options::default()).unwrap();
    let dir = TestDir::new("closed-pipe");
    let mut text = "[daemon]\nstate_dir = \"state\"\n".to_string();
    for i in 0..400 {
        text += &format!(
            "\n[[account]]\nname = \"a{i}\"\nprovider = \"pontotel\"\n{}\n[[account.sink]]\ntype = \"file\"\npath = \"t/{i}.token\"\n",
            emu.account_settings(Provider::Pontotel)
        );
    }
    let cfg = dir.write("tokend.toml", &text);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let mut child = tokend_cmd(&["-c", &cfg, "status", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then close the pipe before the rest is written.
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    stdout.read_exact(&mut byte).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(matches!(status.code(), Some(0 | 3)), "{status:?} {stderr}");
}

#[test]
fn once_reports_a_failed_sink_without_promising_a_retry() {
    // Proves: `once` (which exits) does not log "will retry" for a sink it cannot write;
    // it exits 1 and names the sink.
    let emu = Emulator::start(Options::default()).unwrap();
    let dir = TestDir::new("once-sink");
    dir.write("blocked", "a file where a directory should be");
    let cfg = config(&dir, &emu, Provider::Pontotel, "blocked/p.token");
    let run = tokend(&["-c", &cfg, "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("sink write failed"), "{run:?}");
    assert!(!run.stderr.contains("will retry"), "{run:?}");
}

#[test]
fn check_says_every_account_logs_in_first() {
    // Proves: `check` no longer says "refresh token first" for iTFLEX, whose first call
    // is a login (its integrator key), like every provider's.
    let emu = Emulator::start(Options::default()).unwrap();
    let dir = TestDir::new("check-words");
    let cfg = config(&dir, &emu, Provider::Itflex, "i.token");
    let run = tokend(&["-c", &cfg, "check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("refresh token first"), "{run:?}");
    assert!(run.stdout.contains("log in, then refresh"), "{run:?}");
}

#[test]
fn the_readme_documents_demo_dir() {
    // Proves: `demo --dir` is in the README's command table, not only in the man page.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    assert!(readme.contains("tokend demo [--dir DIR]"));
}

#[test]
fn an_unknown_oauth2_grant_or_client_auth_is_a_located_error() {
    // Proves (issue 15): `grant` and `client_auth` are enums parsed by serde, so a wrong
    // word is refused where it is written, with the words that are accepted.
    let dir = TestDir::new("grant-words");
    for (key, word, expected) in [
        ("grant", "implicit", "client_credentials"),
        ("client_auth", "jwt", "basic"),
    ] {
        let text = format!(
            "[daemon]\nstate_dir = \"state\"\n\n[[account]]\nname = \"o\"\nprovider = \"oauth2\"\ntoken_url = \"https://auth.example/token\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{key} = \"{word}\"\n"
        );
        let cfg = dir.write("tokend.toml", &text);
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        let run = tokend(&["-c", cfg.to_str().unwrap(), "check"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(
            run.stderr.contains("tokend.toml:10:")
                && run.stderr.contains(word)
                && run.stderr.contains(expected),
            "{run:?}"
        );
    }
}
