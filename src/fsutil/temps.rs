//! Leftover temporary files: what a SIGKILL between create and rename leaves behind (they
//! may hold a token), removed once per directory per process when it is old enough.
//! Called at start for the state directory and every file sink's directory.

use std::path::PathBuf;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::SafeDir;

impl SafeDir {
    /// Removes the temporary files of [`write_atomic`](Self::write_atomic) here that are
    /// older than `age`: what a SIGKILL between create and rename leaves behind (they may
    /// hold a token). Younger ones may belong to a write in progress (another process) and
    /// are left alone. Only names of `temp_name`'s shape are touched. Best effort;
    /// returns how many were removed.
    pub fn remove_stale_temps(&self, age: std::time::Duration) -> usize {
        let Ok(mut dir) = nix::dir::Dir::openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return 0;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let names: Vec<std::ffi::CString> = dir
            .iter()
            .flatten()
            .map(|entry| entry.file_name().to_owned())
            .filter(|name| is_temp_name(&name.to_string_lossy()))
            .collect();
        let mut removed = 0;
        for name in names {
            let old =
                fstatat(&self.fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
                    now.saturating_sub(u64::try_from(st.st_mtime).unwrap_or(0)) >= age.as_secs()
                });
            if old && unlinkat(&self.fd, name.as_c_str(), UnlinkatFlags::NoRemoveDir).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// [`SafeDir::remove_stale_temps`] once per directory per process: called for every state
/// file and sink at start, it must not read a directory of 10,000 files 10,000 times.
pub fn sweep_stale_temps_once(dir: &SafeDir, age: std::time::Duration) {
    static SWEPT: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let first = SWEPT
        .lock()
        .expect("sweep set lock is never poisoned")
        .insert(dir.path().to_path_buf());
    if first {
        dir.remove_stale_temps(age);
    }
}

/// `.NAME.PID.NONCE.tmp`, as [`temp_name`] makes them.
pub(super) fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((rest, nonce)) = rest.rsplit_once('.') else {
        return false;
    };
    let Some((stem, pid)) = rest.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && nonce.len() == 16
        && nonce.bytes().all(|b| b.is_ascii_hexdigit())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
}
