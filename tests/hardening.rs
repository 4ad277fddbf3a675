//! Process hardening of the real daemon (issue 12 findings 6 and 7, `tokend::process`):
//! another process of the daemon's own uid cannot read its memory or environment, and the
//! soft descriptor limit is raised to the hard one. The daemon runs as `nobody` (CI runs as
//! root; `setpriv` drops to `nobody`), and so does the attacker.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use nix::unistd::{Gid, Uid, chown};
use tokend::emulator::{self, Emulator, Options, Provider};

use crate::support::process::TokendProcess;
use crate::support::{TestDir, wait_for};

/// The `{ env = … }` secret the attacker is after.
const PASSWORD_VAR: &str = "HARDENING_TEST_PASSWORD";

/// `CMD…` as `nobody:nogroup` with no supplementary groups.
fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "nobody",
        "--regid",
        "nogroup",
        "--clear-groups",
        program,
    ]);
    cmd
}

#[test]
fn a_same_uid_process_cannot_read_the_daemons_environment_and_the_fd_limit_is_raised() {
    // Proves: with the daemon running as nobody and holding a password from its
    // environment, `cat /proc/PID/environ` run as nobody fails with "Permission denied"
    // (the process is not dumpable), and a soft RLIMIT_NOFILE of 512 under a hard one of
    // 4096 is raised to 4096.
    assert!(
        Uid::effective().is_root(),
        "this test starts the daemon and the attacker as nobody, which needs root (CI runs as root)"
    );
    let emu = Emulator::start(Options::default()).unwrap();
    let dir = TestDir::new("hardening");
    // The daemon's own files go to a directory nobody owns; the config stays root's.
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    chown(&run, Some(Uid::from_raw(65534)), Some(Gid::from_raw(65534))).unwrap();
    let cfg = dir.write(
        "tokend.toml",
        &format!(
            "[daemon]\nstate_dir = \"{run}/state\"\nlog_format = \"text\"\n\n\
             [[account]]\nname = \"pt\"\nprovider = \"pontotel\"\nbase_url = \"{}\"\n\
             username = \"{}\"\npassword = {{ env = \"{PASSWORD_VAR}\" }}\n\
             [[account.sink]]\ntype = \"file\"\npath = \"{run}/pt.token\"\n",
            emu.base_url(Provider::Pontotel),
            emulator::USERNAME,
            run = run.display(),
        ),
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    for path in [dir.path(), dir.path().parent().unwrap()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    // setpriv and prlimit exec the next program, so the child's pid is the daemon's.
    let mut cmd = as_nobody("prlimit");
    cmd.arg("--nofile=512:4096")
        .arg(env!("CARGO_BIN_EXE_tokend"))
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .env(PASSWORD_VAR, emulator::PASSWORD)
        .env("NO_COLOR", "1")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG");
    let daemon = TokendProcess::start(cmd, dir.path());
    let pid = daemon.pid().as_raw();
    wait_for("the daemon's first token", Duration::from_secs(20), || {
        std::fs::read_to_string(run.join("pt.token")).is_ok_and(|t| !t.is_empty())
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
        "the daemon does not run as nobody:\n{status}"
    );

    // The attack: same uid, read the environment (the password is in it).
    let out = as_nobody("cat")
        .arg(format!("/proc/{pid}/environ"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stdout.contains(emulator::PASSWORD),
        "nobody read the daemon's environment, password included"
    );
    assert!(
        !out.status.success() && stderr.contains("Permission denied"),
        "expected permission denied, got {:?}: {stderr}",
        out.status
    );

    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4096", "4096"],
        "soft limit not raised to the hard one: {files}"
    );
    drop(daemon);
}
