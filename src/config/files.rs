//! Reading the files a config names, safely: the config file and its includes, secret files
//! (`{ file = … }`, `{ credential = … }`) and `ca_file` (issue 12, findings 5 and 8). Called
//! by `crate::settings` (config files, includes, `ca_file`), [`super::secret`], the Vault
//! sink and `crate::http_client`, at `check`, start and every reload.
//!
//! A file is read only when it is a regular file that tokend can trust:
//! - it is opened with `O_NONBLOCK` and checked with `fstat` on the open descriptor, so a FIFO
//!   cannot block and a device (`/dev/zero`) or directory is refused before any read;
//! - at most its cap plus one byte is read, so a growing or endless file cannot exhaust memory;
//! - it is refused when group or others can write it, or when a user other than root and
//!   tokend's effective user owns it ([`trust`]): such a user could put a `notify` command
//!   that root would run, or point a secret at a root-only file.
//!
//! Symlinks are followed (Kubernetes mounts ConfigMaps and Secrets as symlinks into `..data`);
//! the checks apply to the final target, as opened. The directories above a file are not
//! checked: whoever can replace a file there creates a file they own, which the owner rule
//! refuses. POSIX ACLs are not consulted.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Cap for a secret file: far above any password, token or key tokend sends.
pub const SECRET_CAP: u64 = 64 * 1024;

/// Cap for a config file or an include. Larger than the secrets' cap: a 10,000-account config
/// (docs/BENCHMARKS.md) is a few MB in one file.
pub const CONFIG_CAP: u64 = 16 * 1024 * 1024;

/// Cap for `ca_file`: a PEM bundle of the whole Mozilla root store is about 220 KB.
pub const CA_FILE_CAP: u64 = 1024 * 1024;

/// A file read by [`read_trusted`].
pub struct TrustedFile {
    /// The content (at most the cap).
    pub bytes: Vec<u8>,
    /// The permission bits, as opened.
    pub mode: u32,
}

impl TrustedFile {
    /// Whether group or others may read it (SPEC §3: warn for files that hold secrets).
    pub fn readable_by_others(&self) -> bool {
        self.mode & 0o044 != 0
    }
}

/// Reads `path` when it is a regular file of at most `cap` bytes that passes [`trust`].
/// `what` names the file in errors ("secret file", "config file", "ca_file"); errors never
/// hold the content.
pub fn read_trusted(path: &Path, what: &str, cap: u64) -> Result<TrustedFile, String> {
    let shown = path.display();
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (forever).
    let mut file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read {what} {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {what} {shown}: {e}"))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let is = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!("{what} {shown} is {is}: expected a regular file"));
    }
    trust(meta.uid(), meta.mode(), nix::unistd::geteuid().as_raw())
        .map_err(|why| format!("{what} {shown} {why}"))?;
    if meta.len() > cap {
        return Err(too_large(what, path, cap));
    }
    let mut bytes = Vec::new();
    // cap + 1: a file that grew past its stat size is caught too.
    (&mut file)
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what} {shown}: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(what, path, cap));
    }
    Ok(TrustedFile {
        bytes,
        mode: meta.mode() & 0o7777,
    })
}

fn too_large(what: &str, path: &Path, cap: u64) -> String {
    format!(
        "{what} {} is larger than {cap} bytes (the limit for this kind of file)",
        path.display()
    )
}

/// Reads `ca_file` (PEM) under the 1 MiB cap and the trust rule: the same function serves
/// `check` and the provider's HTTP client, so both refuse the same files.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    read_trusted(path, "ca_file", CA_FILE_CAP).map(|f| f.bytes)
}

/// The trust rule for a file tokend reads its configuration from, given the file's owner
/// `uid`, its `mode` and tokend's effective uid: nobody but its owner may write it (no group
/// or other write bit), and its owner is root or tokend's own user. Root is trusted (SPEC
/// threat model); any other user could edit what tokend, maybe running as root, does.
/// The error completes "<file> …".
pub fn trust(uid: u32, mode: u32, euid: u32) -> Result<(), String> {
    if mode & 0o022 != 0 {
        return Err(format!(
            "is writable by group or others (mode {:04o}): other users could change what tokend does; run chmod go-w",
            mode & 0o7777
        ));
    }
    if uid != 0 && uid != euid {
        return Err(format!(
            "is owned by uid {uid}, neither root nor tokend's user (uid {euid}): that user could change what tokend does; chown it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_rule_table() {
        // (owner uid, mode, tokend's euid, trusted?)
        let cases = [
            (0, 0o600, 0, true),
            (0, 0o644, 0, true),
            (0, 0o640, 1000, true), // root-owned, tokend runs as a service user
            (1000, 0o600, 1000, true), // tokend's own file
            (1000, 0o400, 1000, true),
            (1000, 0o600, 0, false), // another user's file, root tokend
            (65534, 0o600, 1000, false),
            (0, 0o620, 0, false), // group-writable
            (0, 0o602, 0, false), // world-writable
            (0, 0o666, 0, false),
            (1000, 0o660, 1000, false),
            (0, 0o1644, 0, true), // sticky is irrelevant on files
        ];
        for (uid, mode, euid, want) in cases {
            let got = trust(uid, mode, euid);
            assert_eq!(
                got.is_ok(),
                want,
                "uid {uid} mode {mode:o} euid {euid}: {got:?}"
            );
        }
    }

    #[test]
    fn reads_a_regular_file_and_refuses_devices_directories_and_oversize() {
        let dir = std::env::temp_dir().join(format!("tokend-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok");
        std::fs::write(&ok, "abc").unwrap();
        std::fs::set_permissions(&ok, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let f = read_trusted(&ok, "secret file", 3).unwrap();
        assert_eq!(f.bytes, b"abc");
        assert!(f.readable_by_others());
        let e = read_trusted(&ok, "secret file", 2).err().unwrap();
        assert!(e.contains("larger than 2 bytes"), "{e}");
        let e = read_trusted(Path::new("/dev/zero"), "secret file", 10)
            .err()
            .unwrap();
        assert!(e.contains("a character device"), "{e}");
        let e = read_trusted(&dir, "secret file", 10).err().unwrap();
        assert!(e.contains("a directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
