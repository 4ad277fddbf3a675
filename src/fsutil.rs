//! Crash-safe file replacement, shared by the file sink and the state files (SPEC §4
//! "Atomic writes"): write a temporary file in the same directory (`O_EXCL`), set mode and
//! owner on its descriptor, fsync, rename over the target, fsync the directory. A reader
//! sees the old complete file or the new complete file, never a partial or empty one, even
//! after SIGKILL or on a full disk (the temporary file is removed and the old file stays).

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode and ownership applied to every write, not only the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttrs {
    /// Permission bits, e.g. `0o600`. Applied with fchmod, so the umask does not matter.
    pub mode: u32,
    /// Owner to set with fchown (needs privilege).
    pub uid: Option<u32>,
    /// Group to set with fchown (needs privilege or membership).
    pub gid: Option<u32>,
}

impl FileAttrs {
    /// `0600`, owner unchanged: the default for token files and state.
    pub const PRIVATE: FileAttrs = FileAttrs {
        mode: 0o600,
        uid: None,
        gid: None,
    };
}

/// Atomically replaces `path` with `contents`. Errors name the path.
pub fn atomic_write(path: &Path, contents: &[u8], attrs: FileAttrs) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let tmp = temp_path(dir, &name.to_string_lossy());
    let result = write_then_rename(&tmp, path, dir, contents, attrs);
    if result.is_err() {
        // Best effort: never leave a stray temporary file (it may hold a token).
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

fn write_then_rename(
    tmp: &Path,
    path: &Path,
    dir: &Path,
    contents: &[u8],
    attrs: FileAttrs,
) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true) // O_EXCL: never follow or reuse someone else's file
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(tmp)?;
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(&file, attrs.uid, attrs.gid)?;
    }
    // After fchown, which may clear set-id bits; fchmod ignores the umask.
    file.set_permissions(Permissions::from_mode(attrs.mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Removes the temporary files of [`atomic_write`] in `dir` that are older than `age`:
/// what a SIGKILL between create and rename leaves behind (they may hold a token). Younger
/// ones may belong to a write in progress (another process) and are left alone. Only names
/// of [`temp_path`]'s shape are touched. Best effort; returns how many were removed.
pub fn remove_stale_temps(dir: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !is_temp_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() >= age)
            .unwrap_or(false);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// [`remove_stale_temps`] for the directory of `path`, once per directory per process:
/// called for every state file and sink at start, it must not read a directory of 10,000
/// files 10,000 times.
pub fn sweep_stale_temps_once(path: &Path, age: std::time::Duration) {
    static SWEPT: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let dir = parent_dir(path);
    let first = SWEPT
        .lock()
        .expect("sweep set lock is never poisoned")
        .insert(dir.to_path_buf());
    if first {
        remove_stale_temps(dir, age);
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.NAME.PID.NONCE.tmp`, as [`temp_path`] makes them.
fn is_temp_name(name: &str) -> bool {
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

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let nonce: u64 = rand::random();
    dir.join(format!(".{name}.{}.{nonce:016x}.tmp", std::process::id()))
}

/// Creates `dir` (and parents) if missing and sets its mode (state dir: `0700`).
pub fn ensure_private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, Permissions::from_mode(mode)))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create directory {}: {e}", dir.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_with_exact_mode_whatever_the_umask_and_leaves_no_temp_files() {
        let dir = std::env::temp_dir().join(format!("tokend-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.token");
        atomic_write(
            &path,
            b"one\n",
            FileAttrs {
                mode: 0o640,
                uid: None,
                gid: None,
            },
        )
        .unwrap();
        atomic_write(
            &path,
            b"two\n",
            FileAttrs {
                mode: 0o604,
                uid: None,
                gid: None,
            },
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o604);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temporary_files_are_removed_but_fresh_ones_kept() {
        let dir = std::env::temp_dir().join(format!("tokend-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ours = [
            ".a.token.1.00000000000000ab.tmp",
            ".b.json.77.0123456789abcdef.tmp",
        ];
        let others = [
            ".a.token.tmp",
            ".bashrc",
            "x.1.0123456789abcdef.tmp",
            ".a.x.0123456789abcdef.tmp",
        ];
        for name in ours.iter().chain(&others) {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        assert_eq!(
            remove_stale_temps(&dir, std::time::Duration::from_secs(3600)),
            0
        );
        assert_eq!(remove_stale_temps(&dir, std::time::Duration::ZERO), 2);
        for name in others {
            assert!(dir.join(name).exists(), "{name}");
        }
        // A real temporary name is recognised.
        let tmp = temp_path(&dir, "c.token");
        assert!(is_temp_name(&tmp.file_name().unwrap().to_string_lossy()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failure_names_the_path() {
        let e =
            atomic_write(Path::new("/nonexistent-dir/x"), b"x", FileAttrs::PRIVATE).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/x"), "{e}");
    }
}
