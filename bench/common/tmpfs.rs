//! tmpfs directories for the benchmarks: the fault harness's small full-disk sink
//! (`bench/faults.rs`) and the fleet benchmark's token files in the deployed layout
//! (`bench/fleet.rs`: `/run/tokend` is a tmpfs where tokend is deployed). Mounting needs
//! root; the fleet benchmark falls back to a directory under `/dev/shm` when it can't.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs this process mounted (unmounted on drop, whatever happened), or a directory on
/// an existing tmpfs (`/dev/shm`, removed on drop).
pub struct Tmpfs {
    path: PathBuf,
    mounted: bool,
    /// How the directory came to be, for the report.
    pub note: String,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `64k`, `100m`) on `path` (created
    /// if missing). A tmpfs left mounted there by an aborted run is unmounted first.
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("create {}: {e}", path.display()))?;
        if is_mount_point(path) {
            unmount(path);
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
            mounted: true,
            note: format!("tmpfs mounted by the benchmark (size={size})"),
        })
    }

    /// [`Tmpfs::mount`] on `path`, or else (not root) a fresh directory under `/dev/shm` if
    /// that is a tmpfs; `None` with the reason when neither works.
    pub fn mount_or_shm(path: &Path, size: &str) -> Result<Tmpfs, String> {
        let mount_error = match Tmpfs::mount(path, size) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        let shm = Path::new("/dev/shm");
        if fs_type(shm).as_deref() != Some("tmpfs") {
            return Err(format!("{mount_error}; /dev/shm is not a tmpfs"));
        }
        let dir = shm.join(format!("tokend-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("{mount_error}; create {}: {e}", dir.display()))?;
        Ok(Tmpfs {
            path: dir.clone(),
            mounted: false,
            note: format!(
                "{} on /dev/shm's tmpfs (could not mount one: {mount_error})",
                dir.display()
            ),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            unmount(&self.path);
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `umount PATH`, lazily (`-l`) if it is busy.
fn unmount(path: &Path) {
    let ok = Command::new("umount")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// `(mount point, filesystem type, options)` of the mount holding `path`: the longest
/// mount point of `/proc/mounts` that prefixes it.
pub fn mount_of(path: &Path) -> Option<(String, String, String)> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && path.starts_with(f[1]))
                .then(|| (f[1].to_string(), f[2].to_string(), f[3].to_string()))
        })
        .max_by_key(|(point, _, _)| point.len())
}

/// The filesystem type holding `path` (`ext4`, `tmpfs`, …).
pub fn fs_type(path: &Path) -> Option<String> {
    mount_of(path).map(|(_, t, _)| t)
}

fn is_mount_point(path: &Path) -> bool {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mount_of(&path).is_some_and(|(point, _, _)| Path::new(&point) == path)
}
