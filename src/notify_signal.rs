//! `[[account.notify]] signal = "HUP", pid_file = "…"`: sends the signal to the process a
//! pid file names, only when no other user can have chosen that process (issue 12,
//! finding 5: a pid file `nobody` could write made root tokend send SIGHUP to a root
//! process). Called by the account task after every sink of the account was written
//! (src/account.rs).
//!
//! The pid file must be a regular file (not a symlink, one link, at most
//! [`MAX_PID_FILE`] bytes) that no one but its owner can write, and the process must
//! belong to that owner (its real uid). So a pid file only ever makes tokend signal its
//! owner's own processes, which that owner could signal itself.
//!
//! The check and the signal cannot race with pid reuse: `/proc/PID` is opened first and
//! a pidfd second, and the owner is read through the `/proc/PID` descriptor after that.
//! If the read succeeds, the process was still alive when the pidfd was made, so both name
//! the same process, and `pidfd_send_signal` reaches that process or none.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::sys::signal::Signal;

/// Largest pid file read: a pid and a newline are at most 11 bytes.
pub const MAX_PID_FILE: u64 = 64;

/// Sends `signal` to the process named in `pid_file` if the checks in the module docs
/// pass; otherwise, or if it cannot be sent, says why.
pub fn signal_pid_file(signal: Signal, pid_file: &Path) -> Result<(), String> {
    let (owner, pid) = read_pid_file(pid_file)?;
    let shown = pid_file.display();
    let proc_dir = File::open(format!("/proc/{pid}"))
        .map_err(|e| format!("pid {pid} (from {shown}) is not running: {e}"))?;
    let pidfd = rustix::process::Pid::from_raw(pid)
        .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()));
    let pidfd = match pidfd {
        Some(Ok(fd)) => Some(fd),
        // Kernels before 5.3: fall back to kill(2) below, after the same check (the one
        // residual race: the pid is reused between the check and the kill).
        Some(Err(rustix::io::Errno::NOSYS)) => None,
        Some(Err(e)) => return Err(format!("pid {pid} (from {shown}) is not running: {e}")),
        None => return Err(format!("{shown} does not hold a pid")),
    };
    let uid = real_uid(&proc_dir)
        .map_err(|e| format!("cannot read the owner of pid {pid} (from {shown}): {e}"))?;
    if uid != owner {
        return Err(format!(
            "pid {pid} (from {shown}) belongs to uid {uid}, not to uid {owner} who owns the pid file; not sending {signal}"
        ));
    }
    let sent = match pidfd {
        Some(fd) => {
            let sig = rustix::process::Signal::from_named_raw(signal as i32)
                .ok_or_else(|| format!("{signal} cannot be sent"))?;
            rustix::process::pidfd_send_signal(&fd, sig).map_err(|e| e.to_string())
        }
        None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| e.to_string()),
    };
    sent.map_err(|e| format!("cannot send {signal} to pid {pid} (from {shown}): {e}"))
}

/// The owner of `pid_file` and the pid it holds, if it passes the checks in the module
/// docs.
fn read_pid_file(pid_file: &Path) -> Result<(u32, i32), String> {
    let shown = pid_file.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A symlink is not followed; a FIFO does not block the open.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(pid_file)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => format!(
                "pid file {shown} is a symbolic link, which tokend does not follow; not signalling"
            ),
            _ => format!("cannot read pid file {shown}: {e}"),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read pid file {shown}: {e}"))?;
    let refuse = |why: String| Err(format!("pid file {shown} {why}; not signalling"));
    if !meta.file_type().is_file() {
        return refuse("is not a regular file".into());
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "can be written by users other than its owner (mode {:04o})",
            meta.mode() & 0o7777
        ));
    }
    if meta.nlink() != 1 {
        // A hard link another user made to someone else's pid file.
        return refuse(format!("has {} hard links", meta.nlink()));
    }
    let mut text = String::new();
    file.take(MAX_PID_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read pid file {shown}: {e}"))?;
    if text.len() as u64 > MAX_PID_FILE {
        return refuse(format!("is larger than {MAX_PID_FILE} bytes"));
    }
    let digits = text.trim();
    let pid = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<i32>().ok())
        .flatten()
        .ok_or_else(|| format!("{shown} does not hold a pid"))?;
    if pid <= 1 {
        return refuse(format!("holds pid {pid}"));
    }
    Ok((meta.uid(), pid))
}

/// The real uid of the process whose `/proc/PID` directory is `proc_dir` (the first field
/// of `Uid:` in its `status`).
fn real_uid(proc_dir: &File) -> Result<u32, String> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let fd = openat(
        proc_dir,
        "status",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| e.to_string())?;
    let mut status = String::new();
    File::from(fd)
        .take(64 * 1024)
        .read_to_string(&mut status)
        .map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .ok_or_else(|| "no Uid line in its status".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_small_private_regular_file_with_a_pid_is_read() {
        let dir = std::env::temp_dir().join(format!("tokend-pidfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            path
        };
        let cases = [
            (file("ok", "4242\n"), Ok(4242)),
            (file("minus", "-1\n"), Err("does not hold a pid")),
            (file("init", "1\n"), Err("holds pid 1")),
            (file("zero", "0"), Err("holds pid 0")),
            (file("big", &"7".repeat(65)), Err("larger than 64 bytes")),
            (file("word", "12 34"), Err("does not hold a pid")),
        ];
        for (path, expected) in cases {
            let got = read_pid_file(&path).map(|(_, pid)| pid);
            let ok = match (&got, &expected) {
                (Ok(g), Ok(e)) => g == e,
                (Err(g), Err(e)) => g.contains(e),
                _ => false,
            };
            assert!(ok, "{}: expected {expected:?}, got {got:?}", path.display());
        }
        // A FIFO neither blocks nor counts as a pid file.
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = read_pid_file(&fifo).unwrap_err();
        assert!(e.contains("is not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
