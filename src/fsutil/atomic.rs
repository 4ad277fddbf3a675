//! Crash-safe replacement (the module doc of [`super`], SPEC §4 "Atomic writes"): a
//! temporary file beside the target, mode and owner set through its descriptor, fsync,
//! `renameat`, fsync of the directory (shared with other writers of the directory,
//! `super::group`). Called by the file sink and the state files; a state save that a
//! login could restore skips both fsyncs ([`Fsync::Skip`], issue 16).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fsync, geteuid, unlinkat};

use super::{
    DirOptions, DirTrust, FileAttrs, SafeDir, check_name, file_name, open_dir, parent_dir,
};

/// Whether a replacement must survive a power loss before it is reported done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// fsync the file before the rename and the directory after it (SPEC §4): the new
    /// content survives a power loss once the write returns.
    Durable,
    /// Neither: readers still see the old or the new complete file, and a crash of the
    /// process loses nothing (the page cache outlives it), but a power loss may bring back
    /// the old file or leave an empty one.
    Skip,
}

impl SafeDir {
    /// Atomically and durably replaces the file `name` in this directory with `contents`
    /// ([`Fsync::Durable`]). Errors name the path.
    pub fn write_atomic(&self, name: &str, contents: &[u8], attrs: FileAttrs) -> io::Result<()> {
        self.replace(name, contents, attrs, Fsync::Durable)
    }

    /// Atomically replaces the file `name` in this directory with `contents`, made durable
    /// or not as `fsync` says. Errors name the path.
    pub fn replace(
        &self,
        name: &str,
        contents: &[u8],
        attrs: FileAttrs,
        fsync: Fsync,
    ) -> io::Result<()> {
        let path = self.path.join(name);
        let result = check_name(name).and_then(|()| {
            let tmp = temp_name(name);
            let result = self.write_then_rename(&tmp, name, contents, attrs, fsync);
            if result.is_err() {
                // Best effort: never leave a stray temporary file (it may hold a token).
                let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            }
            result
        });
        result
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
    }

    fn write_then_rename(
        &self,
        tmp: &str,
        name: &str,
        contents: &[u8],
        attrs: FileAttrs,
        sync: Fsync,
    ) -> io::Result<()> {
        // O_EXCL|O_NOFOLLOW: never follow or reuse someone else's file.
        let fd = openat(
            &self.fd,
            tmp,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let mut file = File::from(fd);
        let (uid, gid) = self.owner_for(name, attrs);
        if uid.is_some() || gid.is_some() {
            fchown(&file, uid.map(Uid::from_raw), gid.map(Gid::from_raw))?;
        }
        // After fchown, which may clear set-id bits; fchmod ignores the umask.
        fchmod(&file, Mode::from_bits_truncate(attrs.mode))?;
        file.write_all(contents)?;
        if sync == Fsync::Durable {
            file.sync_all()?;
        }
        drop(file);
        renameat(&self.fd, tmp, &self.fd, name)?;
        if sync == Fsync::Durable {
            // Only the directory fsync is shared: the file's own fsync above stays per file.
            self.sync.after_rename(&|| fsync(&self.fd))?;
        }
        Ok(())
    }

    /// The owner and group to give a new version of `name`: the configured ones, else
    /// (with `keep_owner`, as root) those of the file it replaces, when that file can be
    /// trusted to say whom it belongs to.
    fn owner_for(&self, name: &str, attrs: FileAttrs) -> (Option<u32>, Option<u32>) {
        let (uid, gid) = (attrs.uid, attrs.gid);
        if !attrs.keep_owner || (uid.is_some() && gid.is_some()) || !geteuid().is_root() {
            return (uid, gid);
        }
        let Ok(st) = fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            return (uid, gid);
        };
        let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        // In a shared directory anyone may have put it there; in another user's directory
        // only that user's (or root's) own, unlinked file counts, not a hard link to
        // someone else's.
        let trusted = match self.trust {
            DirTrust::Private => true,
            DirTrust::Shared => false,
            DirTrust::Foreign => st.st_nlink == 1 && (st.st_uid == self.uid || st.st_uid == 0),
        };
        if regular && trusted {
            (uid.or(Some(st.st_uid)), gid.or(Some(st.st_gid)))
        } else {
            (uid, gid)
        }
    }
}

/// Atomically replaces `path` with `contents` in its (existing) directory, opened with
/// [`open_dir`] (a sticky shared directory is accepted). Errors name the path.
pub fn atomic_write(path: &Path, contents: &[u8], attrs: FileAttrs) -> io::Result<()> {
    let name = file_name(path)?;
    let dir = open_dir(
        parent_dir(path),
        DirOptions {
            create: None,
            shared_ok: true,
            must_own: false,
        },
    )
    .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))?;
    dir.write_atomic(name, contents, attrs)
}

/// A fresh temporary name for `name`: `.NAME.PID.NONCE.tmp` ([`super::temps`] knows the shape).
pub(super) fn temp_name(name: &str) -> String {
    let nonce: u64 = rand::random();
    format!(".{name}.{}.{nonce:016x}.tmp", std::process::id())
}
