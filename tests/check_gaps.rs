//! `tokend check` refuses what it used to accept, and returns on what used to hang it
//! (issue 12, findings 5 "include and secret files" and 8): every refusal exits 2 with an
//! error naming file:line:column and the key; FIFOs, `/dev/zero` and `/**` globs return at
//! once; files other users control are refused; secret files others can read warn.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{Run, TestDir, tokend_cmd, wait_for};

/// A valid `http` account named `name` writing `name.token`; `extra` goes at the end of the
/// account table (before its sink), `sink_extra` into its sink.
fn account(name: &str, extra: &str, sink_extra: &str) -> String {
    format!(
        "[[account]]\nname = \"{name}\"\nprovider = \"http\"\nusername = \"u\"\npassword = {{ env = \"HOME\" }}\n{extra}\n[account.login]\nurl = \"https://api.example.com/auth\"\njson = {{ user = \"{{{{ username }}}}\", pass = \"{{{{ password }}}}\" }}\n[account.response]\naccess_token = \"/accessToken\"\n[[account.sink]]\ntype = \"file\"\npath = \"{name}.token\"\n{sink_extra}\n"
    )
}

/// Kills the child if the test fails while it runs (a hanging `check`).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tokend -c CFG check`, which must exit within 10 s (a hang fails the test, not CI).
fn check(cfg: &Path) -> Run {
    let child = tokend_cmd(&["-c", cfg.to_str().unwrap(), "check"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tokend check");
    let mut child = Reaper(child);
    wait_for("tokend check to exit", Duration::from_secs(10), || {
        child.0.try_wait().expect("try_wait").is_some()
    });
    let code = child.0.wait().expect("wait").code().unwrap_or(-1);
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code,
        stdout,
        stderr,
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
        + 1
}

/// Asserts exit 2 and an error line `FILE:LINE:COL: KEY: …NEEDLE…`.
fn assert_refused(run: &Run, file: &Path, line: usize, key: &str, needle: &str) {
    assert_eq!(run.code, 2, "expected exit 2, got {run:?}");
    let start = format!("{}:{line}:", file.display());
    assert!(
        run.stderr.lines().any(|l| l.starts_with(&start)
            && l.contains(&format!(" {key}: "))
            && l.contains(needle)),
        "expected a line starting with {start:?} naming {key:?} and {needle:?} in:\n{}",
        run.stderr
    );
}

#[test]
fn check_refuses_plain_http_and_other_schemes_in_every_url() {
    // Proves: login.url, refresh.url, base_url and token_url all follow the one scheme rule
    // at check time: plain http only to loopback, and no other scheme at all.
    let dir = TestDir::new("gap-schemes");
    let login = |url: &str| account("a", "", "").replace("https://api.example.com/auth", url);
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (login("http://api.example.com/auth"), "url = \"http://api", "account \"a\" login.url", "plain http"),
        (login("http://api.example.com/{{ username }}/auth"), "url = \"http://api", "account \"a\" login.url", "plain http"),
        (login("ftp://api.example.com/auth"), "url = \"ftp://", "account \"a\" login.url", "unsupported scheme"),
        (login("ftp://{{ username }}/auth"), "url = \"ftp://", "account \"a\" login.url", "unsupported scheme"),
        (
            account("a", "", "").replace(
                "[account.response]",
                "[account.refresh]\nurl = \"http://api.example.com/refresh\"\n[account.response]",
            ),
            "url = \"http://api.example.com/refresh",
            "account \"a\" refresh.url",
            "plain http",
        ),
        (
            "[[account]]\nname = \"a\"\nprovider = \"pontotel\"\nbase_url = \"ftp://p.example\"\nusername = \"u\"\npassword = { env = \"HOME\" }\n".into(),
            "base_url",
            "account \"a\" base_url",
            "unsupported scheme",
        ),
        (
            "[[account]]\nname = \"a\"\nprovider = \"oauth2\"\ntoken_url = \"ftp://auth.example/token\"\nclient_id = \"c\"\nclient_secret = { env = \"HOME\" }\n".into(),
            "token_url",
            "account \"a\" token_url",
            "unsupported scheme",
        ),
    ];
    for (text, at, key, needle) in cases {
        let cfg = dir.write("t.toml", &text);
        assert_refused(&check(&cfg), &cfg, line_of(&text, at), key, needle);
    }
    // Loopback in plain http stays accepted, in any spelling RFC 6761 reserves.
    for url in [
        "http://127.0.0.1:1/auth",
        "http://LOCALHOST:1/auth",
        "http://api.localhost/auth",
    ] {
        let cfg = dir.write("t.toml", &login(url));
        let run = check(&cfg);
        assert_eq!(run.code, 0, "{url}: {run:?}");
    }
}

#[test]
fn check_refuses_dangerous_sink_modes() {
    // Proves: setuid/setgid/sticky, world-writable and owner-unreadable modes are refused
    // at the mode key; ordinary ones pass.
    let dir = TestDir::new("gap-modes");
    for mode in ["4755", "7777", "0000", "0666", "1600", "0200"] {
        let text = account("a", "", &format!("mode = \"{mode}\""));
        let cfg = dir.write("t.toml", &text);
        assert_refused(
            &check(&cfg),
            &cfg,
            line_of(&text, "mode ="),
            "account \"a\" sink[0].mode",
            mode,
        );
    }
    for mode in ["0600", "0640", "0644", "0400"] {
        let cfg = dir.write("t.toml", &account("a", "", &format!("mode = \"{mode}\"")));
        let run = check(&cfg);
        assert_eq!(run.code, 0, "{mode}: {run:?}");
    }
}

#[test]
fn check_refuses_sink_paths_that_are_not_files() {
    // Proves: a sink path ending in `/`, naming an existing directory, holding a NUL or
    // empty is refused at the path key.
    let dir = TestDir::new("gap-sink-paths");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let slash = format!("{}/", dir.path().display());
    for (path, needle) in [
        (slash.as_str(), "names a directory"),
        ("sub", "is a directory"),
        ("a\\u0000b", "NUL"),
        ("", "must not be empty"),
    ] {
        let text =
            account("a", "", "").replace("path = \"a.token\"", &format!("path = \"{path}\""));
        let cfg = dir.write("t.toml", &text);
        assert_refused(
            &check(&cfg),
            &cfg,
            line_of(&text, "path ="),
            "account \"a\" sink[0].path",
            needle,
        );
    }
}

#[test]
fn check_refuses_an_empty_state_dir() {
    // Proves: state_dir = "" is an error, not the config file's directory.
    let dir = TestDir::new("gap-state-dir");
    let text = format!("[daemon]\nstate_dir = \"\"\n\n{}", account("a", "", ""));
    let cfg = dir.write("t.toml", &text);
    assert_refused(
        &check(&cfg),
        &cfg,
        2,
        "daemon.state_dir",
        "must not be empty",
    );
}

#[test]
fn check_refuses_an_unknown_durability() {
    // Proves: `[daemon] durability` takes "refresh_tokens" or "all", and anything else is an
    // error at its file:line:column naming the choices (issue 16).
    let dir = TestDir::new("gap-durability");
    let text = format!(
        "[daemon]\ndurability = \"always\"\n\n{}",
        account("a", "", "")
    );
    let cfg = dir.write("t.toml", &text);
    assert_refused(
        &check(&cfg),
        &cfg,
        2,
        "daemon.durability",
        "\"always\" is not a durability: expected \"refresh_tokens\" or \"all\"",
    );
    let good = dir.write("ok.toml", &text.replace("always", "all"));
    assert_eq!(check(&good).code, 0, "durability = \"all\" is valid");
}

#[test]
fn check_locates_coordination_mistakes_and_prints_the_store() {
    // Proves: `[daemon.coordination]` (issue 14) is validated like every other table: an
    // unknown store, a claim that could not cover an account's requests, and a bad instance
    // name are errors at their file:line:column; a good table is printed by `check`.
    let dir = TestDir::new("gap-coordination");
    let table = "[daemon.coordination]\nstore = \"vault\"\naddress = \"http://127.0.0.1:8200\"\nmount = \"secret\"\nprefix = \"tokend/t\"\nauth = { token = { env = \"HOME\" } }\n";
    let cases = [
        (
            "store = \"vault\"",
            "store = \"etcd\"",
            "daemon.coordination.store",
            "\"etcd\" is not a coordination store",
        ),
        (
            "prefix = \"tokend/t\"",
            "prefix = \"tokend/t\"\nclaim_ttl = \"20s\"",
            "daemon.coordination.claim_ttl",
            "too short for an account timeout of 15s",
        ),
        (
            "prefix = \"tokend/t\"",
            "prefix = \"tokend/t\"\ninstance = \"a\\nb\"",
            "daemon.coordination.instance",
            "printable",
        ),
        (
            "prefix = \"tokend/t\"",
            "prefix = \"tokend/t\"\nclaim_ttl = \"2h\"",
            "daemon.coordination.claim_ttl",
            "out of range",
        ),
    ];
    for (i, (from, to, key, needle)) in cases.into_iter().enumerate() {
        let text = format!("{}\n{}", table.replace(from, to), account("a", "", ""));
        let cfg = dir.write(&format!("t{i}.toml"), &text);
        let field = key.rsplit('.').next().unwrap();
        let line = line_of(&text, &format!("{field} = "));
        assert_refused(&check(&cfg), &cfg, line, key, needle);
    }
    let good = dir.write(
        "ok.toml",
        &format!("{table}instance = \"host-a\"\n\n{}", account("a", "", "")),
    );
    let run = check(&good);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "coordination: shared with other instances through vault:secret/tokend/t as \"host-a\""
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn check_refuses_two_sinks_writing_one_file() {
    // Proves: two accounts whose file sinks name one file (spelled differently) are refused,
    // and the error names both locations.
    let dir = TestDir::new("gap-same-file");
    let second = account("b", "", "").replace("path = \"b.token\"", "path = \"./x/../a.token\"");
    let text = format!("{}\n{second}", account("a", "", ""));
    let cfg = dir.write("t.toml", &text);
    let run = check(&cfg);
    let first_line = line_of(&text, "path = \"a.token\"");
    assert_refused(
        &run,
        &cfg,
        line_of(&text, "path = \"./x/../a.token\""),
        "account \"b\" sink[0].path",
        &format!("account \"a\" sink[0] ({}:{first_line}:", cfg.display()),
    );
}

#[test]
fn check_refuses_a_schedule_that_never_fires() {
    // Proves: a cron expression with no occurrence (February 31st) is refused, promptly.
    let dir = TestDir::new("gap-cron");
    let text = account("a", "schedule = \"0 0 0 31 2 *\"", "");
    let cfg = dir.write("t.toml", &text);
    assert_refused(
        &check(&cfg),
        &cfg,
        line_of(&text, "schedule ="),
        "account \"a\" schedule",
        "never fires",
    );
}

#[test]
fn check_returns_promptly_on_fifo_dev_zero_and_root_globs() {
    // Proves: a FIFO or /dev/zero as a secret or ca_file, and an include glob from `/`,
    // give a located error within seconds instead of blocking or eating memory.
    let dir = TestDir::new("gap-hangs");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let secret = |path: &str| {
        account("a", "", "").replace(
            "password = { env = \"HOME\" }",
            &format!("password = {{ file = \"{path}\" }}"),
        )
    };
    let fifo_text = secret(fifo.to_str().unwrap());
    let zero_text = secret("/dev/zero");
    let ca_text = account("a", "ca_file = \"/dev/zero\"", "");
    for (text, at, key, needle) in [
        (&fifo_text, "password =", "account \"a\" password", "a FIFO"),
        (
            &zero_text,
            "password =",
            "account \"a\" password",
            "a character device",
        ),
        (
            &ca_text,
            "ca_file =",
            "account \"a\" ca_file",
            "a character device",
        ),
    ] {
        let cfg = dir.write("t.toml", text);
        assert_refused(&check(&cfg), &cfg, line_of(text, at), key, needle);
    }
    let text = format!("include = [\"/**/*.x\"]\n{}", account("a", "", ""));
    let cfg = dir.write("t.toml", &text);
    assert_refused(&check(&cfg), &cfg, 1, "include", "whole file system");
}

/// `nobody`'s uid, to give files a non-root, non-tokend owner (CI runs as root).
fn nobody() -> Option<u32> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to chown files to nobody");
        return None;
    }
    Some(
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody")
            .uid
            .as_raw(),
    )
}

#[test]
fn check_refuses_config_and_include_files_other_users_control() {
    // Proves: a world-writable include (whose notify would run as root), an include owned by
    // nobody and a group-writable main config are refused; the include at its `include` key.
    let dir = TestDir::new("gap-include-trust");
    let main_text = "include = [\"inc/*.toml\"]\n";
    let main = dir.write("t.toml", main_text);
    let inc = dir.write("inc/a.toml", &account("a", "", ""));
    assert_eq!(check(&main).code, 0, "baseline must pass");

    std::fs::set_permissions(&inc, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_refused(
        &check(&main),
        &main,
        1,
        "include",
        "writable by group or others",
    );
    std::fs::set_permissions(&inc, std::fs::Permissions::from_mode(0o644)).unwrap();

    if let Some(uid) = nobody() {
        std::os::unix::fs::chown(&inc, Some(uid), None).unwrap();
        assert_refused(
            &check(&main),
            &main,
            1,
            "include",
            &format!("owned by uid {uid}"),
        );
        std::os::unix::fs::chown(&inc, Some(0), None).unwrap();
    }

    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o664)).unwrap();
    let run = check(&main);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("{}:1:1: config file", main.display()))
            && run.stderr.contains("writable by group or others"),
        "{run:?}"
    );
}

#[test]
fn check_refuses_secret_files_other_users_control_and_warns_when_others_can_read() {
    // Proves: a secret file others can write, or that nobody owns, is refused at its key;
    // one that its group can read passes with a warning that never shows the secret.
    let dir = TestDir::new("gap-secret-trust");
    let pw = dir.write("pw", "S3CR3T-PASSWORD\n");
    let text = account("a", "", "").replace(
        "password = { env = \"HOME\" }",
        "password = { file = \"pw\" }",
    );
    let cfg = dir.write("t.toml", &text);
    let line = line_of(&text, "password =");

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o646)).unwrap();
    assert_refused(
        &check(&cfg),
        &cfg,
        line,
        "account \"a\" password",
        "writable by group or others",
    );

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some(uid) = nobody() {
        std::os::unix::fs::chown(&pw, Some(uid), None).unwrap();
        assert_refused(
            &check(&cfg),
            &cfg,
            line,
            "account \"a\" password",
            "owned by uid",
        );
        std::os::unix::fs::chown(&pw, Some(0), None).unwrap();
    }

    let run = check(&cfg);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        !run.stderr.contains("readable by group"),
        "0600 must not warn: {run:?}"
    );

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
    let run = check(&cfg);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("warning: account \"a\" password: secret file")
            && run
                .stderr
                .contains("readable by group or others (mode 0640)"),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains("S3CR3T") && !run.stdout.contains("S3CR3T"),
        "{run:?}"
    );
}
