//! The config contract through the real binary: every example passes `check`, an unknown
//! key in any table is rejected with its file and line, and a broken config names file,
//! line and field and exits 2.

use crate::support::{TestDir, run_cmd, tokend_cmd};
use std::path::{Path, PathBuf};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 7,
        "expected an example per provider plus quickstart: {files:?}"
    );
    files
}

/// `tokend check` with the environment the examples' secrets come from.
fn check(path: &Path, creds: &TestDir) -> crate::support::Run {
    let mut cmd = tokend_cmd(&["-c", path.to_str().unwrap(), "check"]);
    for var in [
        "PONTOTEL_PASSWORD",
        "FUNCIONAL_PASSWORD",
        "HUBSOFT_CLIENT_SECRET",
        "HUBSOFT_PASSWORD",
        "ITFLEX_INTEGRATOR_KEY",
        "BILLING_CLIENT_SECRET",
        "CUSTOM_PASSWORD",
        "CUSTOM_API_KEY",
        "VAULT_TOKEN",
        "VAULT_ROLE_ID",
        "VAULT_SECRET_ID",
    ] {
        cmd.env(var, "example-secret");
    }
    cmd.env("VAULT_ADDR", "https://vault.example.com:8200");
    cmd.env("CREDENTIALS_DIRECTORY", creds.path());
    run_cmd(cmd)
}

#[test]
fn every_example_passes_check() {
    // Proves: the shipped examples are valid configs (what users copy must work).
    let creds = TestDir::new("example-creds");
    creds.write("zarv-password", "pw\n");
    for example in examples() {
        let run = check(&example, &creds);
        assert_eq!(run.code, 0, "{}: {run:?}", example.display());
        assert!(run.stdout.contains("ok,"), "{run:?}");
    }
}

/// Every table of a document (as key paths), except the free-form ones whose keys are
/// user data (vars, params, headers, json and form bodies, tags).
fn table_paths(value: &toml::Value, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    const FREE_FORM: [&str; 6] = ["vars", "params", "headers", "json", "form", "tags"];
    match value {
        toml::Value::Table(t) => {
            if path.last().is_some_and(|k| FREE_FORM.contains(&k.as_str())) {
                return;
            }
            out.push(path.clone());
            for (k, v) in t {
                let mut p = path.clone();
                p.push(k.clone());
                table_paths(v, p, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let mut p = path.clone();
                p.push(i.to_string());
                table_paths(v, p, out);
            }
        }
        _ => {}
    }
}

fn insert_at(value: &mut toml::Value, path: &[String]) {
    let target = path.iter().fold(value, |v, seg| match v {
        toml::Value::Table(t) => t.get_mut(seg).unwrap(),
        toml::Value::Array(a) => &mut a[seg.parse::<usize>().unwrap()],
        _ => unreachable!(),
    });
    target
        .as_table_mut()
        .unwrap()
        .insert("surprise_key".into(), toml::Value::String("x".into()));
}

#[test]
fn an_unknown_key_in_any_table_of_any_example_is_rejected_with_its_line() {
    // Proves: a typo never passes silently, wherever it is.
    let dir = TestDir::new("unknown-keys");
    let creds = TestDir::new("unknown-keys-creds");
    creds.write("zarv-password", "pw\n");
    let mut tried = 0;
    for example in examples() {
        let doc: toml::Value = toml::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
        let mut paths = Vec::new();
        table_paths(&doc, vec![], &mut paths);
        for path in paths {
            let mut mutated = doc.clone();
            insert_at(&mut mutated, &path);
            let file = dir.write("mutated.toml", &toml::to_string(&mutated).unwrap());
            let run = check(&file, &creds);
            assert_eq!(
                run.code,
                2,
                "{} with surprise_key at {path:?}: {run:?}",
                example.display()
            );
            let line = run
                .stderr
                .lines()
                .find(|l| l.contains("surprise_key"))
                .unwrap_or_else(|| panic!("{path:?}: {run:?}"));
            // It points at the key's own line and names it once in the path.
            let text = std::fs::read_to_string(&file).unwrap();
            let key_line = text
                .lines()
                .position(|l| l.trim_start().starts_with("surprise_key"))
                .unwrap()
                + 1;
            assert!(
                line.starts_with(&format!("{}:{key_line}:", file.display())),
                "not at line {key_line}: {line:?}"
            );
            assert_eq!(
                line.matches("surprise_key").count(),
                2,
                "the path and the message name it once each: {line:?}"
            );
            tried += 1;
        }
    }
    assert!(tried >= 30, "only {tried} tables tried");
}

#[test]
fn a_broken_config_names_file_line_and_field_and_exits_2() {
    // Proves: check reports every problem with file:line:column and the key path.
    let dir = TestDir::new("broken-config");
    dir.write("accounts.d/hub.toml", "[[account]]\nname = \"hub-prod\"\nprovider = \"hubsoft\"\nbase_url = \"https://h.example\"\nclient_id = \"3\"\nclient_secret = \"s\"\nusername = \"u\"\npassword = \"p\"\n\n[[account.sink]]\ntype = \"file\"\npath = \"a\"\n\n[[account.sink]]\ntype = \"file\"\npath = \"b\"\nmode = \"0999\"\n");
    let main = dir.write("tokend.toml", "include = [\"accounts.d/*.toml\"]\n[daemon.refresh]\nratio = 1.5\n\n[[account]]\nname = \"bad name!\"\nprovider = \"pontotel\"\nbase_url = \"https://p.example\"\nusername = \"u\"\npassword = { env = \"TOKEND_TEST_UNSET_VAR\" }\n");
    let run = run_cmd(tokend_cmd(&["-c", main.to_str().unwrap(), "check"]));
    assert_eq!(run.code, 2, "{run:?}");
    let expect = [
        format!(
            "{}:3:9: daemon.refresh.ratio: 1.5 is out of range",
            main.display()
        ),
        format!("{}:6:8: account \"bad name!\" name:", main.display()),
        format!(
            "{}:10:1: account \"bad name!\" password: environment variable \"TOKEND_TEST_UNSET_VAR\" is not set",
            main.display()
        ),
        format!(
            "{}:17:8: account \"hub-prod\" sink[1].mode: \"0999\" is not an octal mode",
            dir.join("accounts.d/hub.toml").display()
        ),
    ];
    for e in &expect {
        assert!(
            run.stderr.lines().any(|l| l.starts_with(e.as_str())),
            "expected a line starting with\n  {e}\nin\n{}",
            run.stderr
        );
    }
}

#[test]
fn a_bare_integer_mode_is_rejected_as_ambiguous() {
    // Proves: mode = 0640 (TOML rejects it) and mode = 640 (decimal) both get a clear hint.
    let dir = TestDir::new("bare-mode");
    for (mode, hint) in [("0640", "octal string"), ("640", "ambiguous")] {
        let cfg = dir.write("t.toml", &format!("[[account]]\nname = \"a\"\nprovider = \"itflex\"\nbase_url = \"https://i.example\"\nrefresh_token = {{ env = \"HOME\" }}\n[[account.sink]]\ntype = \"file\"\npath = \"t\"\nmode = {mode}\n"));
        let run = run_cmd(tokend_cmd(&["-c", cfg.to_str().unwrap(), "check"]));
        assert_eq!(run.code, 2, "{run:?}");
        assert!(
            run.stderr.contains(":9:") && run.stderr.contains(hint),
            "{run:?}"
        );
    }
}

#[test]
fn check_never_quotes_a_secret_in_its_errors() {
    // Proves (issue 12 finding 3): a secret of the wrong type, under a wrong key, or in a
    // URL's user info or query is never echoed by `check`, whatever the error.
    let dir = TestDir::new("check-secrets");
    let account = |extra: &str| {
        format!(
            "[[account]]\nname = \"a\"\nprovider = \"oauth2\"\ntoken_url = \"https://t.example/token\"\nclient_id = \"app\"\n{extra}\n[[account.sink]]\ntype = \"file\"\npath = \"t\"\n"
        )
    };
    let cases = [
        ("12345678", account("client_secret = 12345678")),
        ("8765.4321", account("client_secret = 8765.4321")),
        ("S3CR3T-arr", account("client_secret = [\"S3CR3T-arr\"]")),
        ("77665544", account("client_secret = { value = 77665544 }")),
        (
            "S3CR3T-url",
            account("client_secret = \"s\"\ntoken_url = \"https://user:S3CR3T-url@exa mple.com\"")
                .replacen("token_url = \"https://t.example/token\"\n", "", 1),
        ),
        (
            "S3CR3T-query",
            account("client_secret = \"s\"\nbase_url = \"https://h.example:99999/p?key=S3CR3T-query\"")
                .replace("provider = \"oauth2\"", "provider = \"pontotel\"")
                .replace("client_id = \"app\"", "username = \"u\"\npassword = \"p\"")
                .replace("client_secret = \"s\"\n", "")
                .replacen("token_url = \"https://t.example/token\"\n", "", 1),
        ),
        (
            "S3CR3T-vault",
            account("client_secret = \"s\"").replace(
                "type = \"file\"\npath = \"t\"",
                "type = \"vault\"\naddress = \"ftp://u:S3CR3T-vault@v.example/?x=1\"\nmount = \"secret\"\npath = \"p\"\nauth = { token = \"root-token\" }",
            ),
        ),
        (
            "S3CR3T-aws",
            account("client_secret = \"s\"").replace(
                "type = \"file\"\npath = \"t\"",
                "type = \"aws_secrets_manager\"\nsecret_id = \"x\"\nregion = \"us-east-1\"\nendpoint_url = \"ftp://h.example/?token=S3CR3T-aws\"",
            ),
        ),
    ];
    for (secret, text) in cases {
        let cfg = dir.write("t.toml", &text);
        let run = run_cmd(tokend_cmd(&["-c", cfg.to_str().unwrap(), "check"]));
        assert_eq!(run.code, 2, "{text}\n{run:?}");
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !all.contains(secret),
            "check echoed {secret:?} for\n{text}\n---\n{all}"
        );
        assert!(all.contains("t.toml:"), "located: {all}");
    }
}
