//! Issue 12, finding 5, as attacks on a tokend that runs as root (CI runs as root): an
//! unprivileged user (`nobody`, through `setpriv` or files chowned to it) who can write
//! somewhere in a path tokend uses tries to make it overwrite, create or chown a file it
//! should not, or signal a process it should not. Each test runs the real binary (or, for
//! the pid-file checks, the real function on real processes) and fails without the fix.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokend::emulator::{Emulator, Options, PASSWORD, Provider, USERNAME};

use crate::support::process::TokendProcess;
use crate::support::{Run, TestDir, run_cmd, tokend_cmd, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// `nobody`'s uid and `nogroup`'s gid.
fn nobody() -> (u32, u32) {
    let uid = nix::unistd::User::from_name("nobody")
        .expect("look up nobody")
        .expect("user nobody exists")
        .uid
        .as_raw();
    let gid = nix::unistd::Group::from_name("nogroup")
        .expect("look up nogroup")
        .expect("group nogroup exists")
        .gid
        .as_raw();
    (uid, gid)
}

/// Runs `argv` as `nobody` and asserts that it succeeded (the attacker's own actions).
fn as_nobody(argv: &[&str]) {
    let status = Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .args(argv)
        .status()
        .expect("run setpriv");
    assert!(status.success(), "as nobody: {argv:?}: {status}");
}

fn mkdir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_path_buf()
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Content, mode, owner and group of a file.
fn snapshot(path: &Path) -> (String, u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).expect("stat");
    (
        std::fs::read_to_string(path).expect("read"),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid(),
    )
}

fn emulator() -> Emulator {
    Emulator::start(Options {
        access_lifetime: Duration::from_secs(300),
        ..Options::default()
    })
    .expect("start the emulator")
}

/// A config (root-owned, 0644 so `nobody` can read it too) with one Pontotel account per
/// `(name, sink path)` and `extra` account keys/tables appended to each.
fn config(
    dir: &TestDir,
    emu: &Emulator,
    state: &Path,
    sinks: &[(&str, &Path)],
    extra: &str,
) -> PathBuf {
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\nlog_format = \"text\"\n",
        state.display()
    );
    for (name, sink) in sinks {
        text += &format!(
            "\n[[account]]\nname = \"{name}\"\nprovider = \"pontotel\"\nbase_url = \"{}\"\n\
             username = \"{USERNAME}\"\npassword = \"{PASSWORD}\"\n\n[[account.sink]]\n\
             type = \"file\"\npath = \"{}\"\n{extra}",
            emu.base_url(Provider::Pontotel),
            sink.display()
        );
    }
    let path = dir.join("tokend.toml");
    write(&path, &text, 0o644);
    path
}

fn once(config: &Path) -> Run {
    run_cmd(tokend_cmd(&["once", "-c", &config.display().to_string()]))
}

// ---------------------------------------------------------------------------------------
// Sink paths
// ---------------------------------------------------------------------------------------

#[test]
fn a_symlinked_sink_directory_leaves_the_victim_file_untouched() {
    // Proves that no symlink in a sink's directories is followed: `nobody` plants
    // `victim-dir-link` → a root-only directory in a sticky world-writable directory, as
    // the last and as a deeper component of two sink paths. Root tokend's `once` fails
    // with an error naming the link, and the root-only files keep content, mode and owner.
    let dir = TestDir::new("attack-sink-link");
    let emu = emulator();
    let victim = mkdir(&dir.join("victim"), 0o700);
    mkdir(&victim.join("sub"), 0o700);
    write(&victim.join("app.token"), "root only\n", 0o600);
    write(&victim.join("sub/app.token"), "root only, deeper\n", 0o600);
    let before = [
        snapshot(&victim.join("app.token")),
        snapshot(&victim.join("sub/app.token")),
    ];
    let shared = mkdir(&dir.join("shared"), 0o1777);
    let link = shared.join("victim-dir-link");
    as_nobody(&[
        "ln",
        "-s",
        &victim.display().to_string(),
        &link.display().to_string(),
    ]);
    let cfg = config(
        &dir,
        &emu,
        &dir.join("state"),
        &[
            ("last", &link.join("app.token")),
            ("deeper", &link.join("sub/app.token")),
        ],
        "",
    );
    let run = once(&cfg);
    let after = [
        snapshot(&victim.join("app.token")),
        snapshot(&victim.join("sub/app.token")),
    ];
    assert_eq!(after, before, "the victim files changed: {run:?}");
    assert_eq!(run.code, 1, "{run:?}");
    let message = format!("{} is a symbolic link", link.display());
    assert!(
        run.stderr.contains(&message),
        "expected {message:?}: {run:?}"
    );
    assert!(
        std::fs::read_dir(&victim).unwrap().count() == 2,
        "a file appeared in the victim dir"
    );
}

// ---------------------------------------------------------------------------------------
// The state directory
// ---------------------------------------------------------------------------------------

#[test]
fn a_planted_lock_symlink_is_refused_and_its_target_not_created() {
    // Proves O_NOFOLLOW on `state_dir/.lock`: a planted `.lock` symlink makes `once` fail
    // with an error naming it, and the file it points to is not created.
    let dir = TestDir::new("attack-lock-link");
    let emu = emulator();
    let state = mkdir(&dir.join("state"), 0o700);
    let target = dir.join("created-by-root");
    std::os::unix::fs::symlink(&target, state.join(".lock")).expect("plant .lock");
    let cfg = config(&dir, &emu, &state, &[("a", &dir.join("a.token"))], "");
    let run = once(&cfg);
    assert!(
        !target.exists(),
        "root created {}: {run:?}",
        target.display()
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "{} is a symbolic link",
            state.join(".lock").display()
        )),
        "unclear refusal: {run:?}"
    );
}

#[test]
fn a_world_writable_or_squatted_state_dir_is_refused_and_left_alone() {
    // Proves the state directory's checks: a sticky world-writable one (what
    // `state_dir = "/tmp"` is) is refused and keeps its mode 1777 (it used to be chmodded
    // to 0700), and one `nobody` made first in such a directory (a squatted name) is
    // refused before any token is written into it.
    let dir = TestDir::new("attack-state-dir");
    let emu = emulator();
    let tmp = mkdir(&dir.join("tmp"), 0o1777);
    let cfg = config(&dir, &emu, &tmp, &[("a", &dir.join("a.token"))], "");
    let run = once(&cfg);
    assert_eq!(
        std::fs::metadata(&tmp).unwrap().mode() & 0o7777,
        0o1777,
        "{run:?}"
    );
    assert_eq!(run.code, 1, "{run:?}");
    let expected = format!(
        "state_dir {}: {} is writable by other users (mode 1777)",
        tmp.display(),
        tmp.display()
    );
    assert!(
        run.stderr.contains(&expected),
        "expected {expected:?}: {run:?}"
    );
    assert!(!tmp.join("a.json").exists() && !tmp.join(".lock").exists());

    let squatted = tmp.join("tokend");
    as_nobody(&["mkdir", "-m", "0700", &squatted.display().to_string()]);
    let cfg = config(&dir, &emu, &squatted, &[("a", &dir.join("a.token"))], "");
    let run = once(&cfg);
    assert_eq!(run.code, 1, "{run:?}");
    let (nobody_uid, _) = nobody();
    assert!(
        run.stderr.contains(&format!(
            "state_dir {}: {} is owned by uid {nobody_uid}",
            squatted.display(),
            squatted.display()
        )),
        "unclear refusal: {run:?}"
    );
    assert_eq!(
        std::fs::read_dir(&squatted).unwrap().count(),
        0,
        "root wrote into nobody's directory: {run:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Root-owned state and token files
// ---------------------------------------------------------------------------------------

#[test]
fn sudo_once_keeps_the_service_users_files_and_its_daemon_reuses_the_token() {
    // Proves that files keep their owner: `sudo tokend once` on a state directory and a
    // token file owned by the service user (`nobody`) leaves them nobody's, so `tokend run`
    // as nobody then starts on the saved token without logging in again.
    let dir = TestDir::new("attack-sudo-once");
    let emu = emulator();
    let (uid, gid) = nobody();
    let state = mkdir(&dir.join("state"), 0o700);
    let out = mkdir(&dir.join("out"), 0o755);
    let token = out.join("app.token");
    write(&token, "old\n", 0o640);
    for path in [&state, &out, &token] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to nobody");
    }
    let cfg = config(&dir, &emu, &state, &[("a", &token)], "mode = \"0640\"\n");
    let run = once(&cfg);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(emu.stats(Provider::Pontotel).logins, 1);
    let (text, mode, file_uid, file_gid) = snapshot(&token);
    assert_ne!(text, "old\n", "the token was not written");
    assert_eq!((mode, file_uid, file_gid), (0o640, uid, gid), "token file");
    for name in ["a.json", "a.sinks", ".lock"] {
        let meta = std::fs::metadata(state.join(name)).expect("state file");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (uid, gid, 0o600),
            "owner, group and mode of {name}"
        );
    }

    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_tokend"))
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .env("NO_COLOR", "1");
    for var in [
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
        "STATE_DIRECTORY",
        "RUST_LOG",
        "TOKEND_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    let mut daemon = TokendProcess::start(cmd, dir.path());
    daemon.wait_for_log("first round done; ready", WAIT);
    assert!(daemon.is_running(), "{}", daemon.output());
    assert_eq!(
        emu.stats(Provider::Pontotel).logins,
        1,
        "nobody's daemon logged in again: {}",
        daemon.output()
    );
    daemon.kill();
}

// ---------------------------------------------------------------------------------------
// notify signals
// ---------------------------------------------------------------------------------------

/// A `sleep` owned by root (the test), killed and reaped on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("300")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_pid_file_others_could_write_does_not_get_a_root_process_signalled() {
    // Proves the pid-file checks of `notify` signals on real processes: a pid file nobody
    // can write (mode 0666, or owned by nobody) naming a root `sleep` gets it no SIGHUP,
    // with a reason; a symlink is not followed; a root-owned 0644 pid file does.
    let dir = TestDir::new("attack-pid-file");
    let (uid, gid) = nobody();
    let mut sleeper = Sleeper::start();
    let pid = format!("{}\n", sleeper.pid());

    let writable = dir.join("writable.pid");
    write(&writable, &pid, 0o666);
    let owned = dir.join("nobody.pid");
    write(&owned, &pid, 0o644);
    std::os::unix::fs::chown(&owned, Some(uid), Some(gid)).expect("chown");
    let proper = dir.join("proper.pid");
    write(&proper, &pid, 0o644);
    let link = dir.join("link.pid");
    std::os::unix::fs::symlink(&proper, &link).expect("symlink");

    for (path, why) in [
        (
            &writable,
            "can be written by users other than its owner (mode 0666)",
        ),
        (
            &owned,
            &format!("belongs to uid 0, not to uid {uid} who owns the pid file"),
        ),
        (&link, "is a symbolic link"),
    ] {
        let result = tokend::notify_signal::signal_pid_file(Signal::SIGHUP, path);
        let e = result.expect_err("must refuse");
        assert!(
            e.contains(why),
            "{}: expected {why:?} in {e:?}",
            path.display()
        );
        assert!(
            sleeper.alive(),
            "{} got the sleep signalled",
            path.display()
        );
    }
    tokend::notify_signal::signal_pid_file(Signal::SIGHUP, &proper).expect("a proper pid file");
    wait_for("the sleep to die of SIGHUP", WAIT, || !sleeper.alive());
}

#[test]
fn once_does_not_signal_a_root_process_named_in_a_writable_pid_file() {
    // Proves the same through `tokend once`: its notify sends no SIGHUP to a root `sleep`
    // named in a world-writable pid file, and logs why; a proper pid file is signalled.
    let dir = TestDir::new("attack-pid-once");
    let emu = emulator();
    let mut sleeper = Sleeper::start();
    let pid_file = dir.join("app.pid");
    write(&pid_file, &format!("{}\n", sleeper.pid()), 0o666);
    let notify = format!(
        "\n[[account.notify]]\nsignal = \"HUP\"\npid_file = \"{}\"\n",
        pid_file.display()
    );
    let cfg = config(
        &dir,
        &emu,
        &dir.join("state"),
        &[("a", &dir.join("a.token"))],
        &notify,
    );
    let run = once(&cfg);
    assert!(sleeper.alive(), "the root sleep was signalled: {run:?}");
    assert!(
        run.stderr
            .contains("can be written by users other than its owner"),
        "no reason logged: {run:?}"
    );
    std::fs::set_permissions(&pid_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::remove_file(dir.join("state/a.json")).expect("forget the token");
    let run = once(&cfg);
    wait_for("the sleep to die of SIGHUP", WAIT, || !sleeper.alive());
    assert_eq!(run.code, 0, "{run:?}");
}
