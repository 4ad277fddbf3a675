//! File operations that cannot be redirected, shared by the file sink and the state files.
//!
//! - **Directories are opened once, without following symbolic links** ([`open_dir`]):
//!   the path is walked from `/` one component at a time with
//!   `openat(O_NOFOLLOW|O_DIRECTORY)`, and every component is judged ([`judge_dir`]): a
//!   directory that users other than root and tokend's own can write is refused, unless it
//!   is sticky and owned by root or tokend's user (`/tmp`). Everything after that works
//!   relative to the opened descriptor ([`SafeDir`]), so a symlink or a renamed directory
//!   planted later cannot redirect it (issue 12, finding 5).
//! - **Crash-safe replacement** ([`SafeDir::write_atomic`], SPEC §4 "Atomic writes"): a
//!   temporary file in the same directory (`O_CREAT|O_EXCL|O_NOFOLLOW`), mode and owner set
//!   on its descriptor (never chmod or chown by path), fsync, `renameat` over the target,
//!   fsync the directory. A reader sees the old complete file or the new complete file,
//!   never a partial or empty one, even after SIGKILL or on a full disk (the temporary file
//!   is removed and the old file stays). With [`Fsync::Skip`] both fsyncs are left out: the
//!   replacement is as atomic for readers and survives a crash of the process, only not a
//!   power loss (issue 16: state that a login can restore).
//! - **Directory fsyncs are shared** (group commit, issue 16): writers that rename files in
//!   one directory while its fsync is running share the next one (`group`).
//!
//! Layout: this file opens and judges directories ([`SafeDir`]); `atomic` holds the
//! replacement, `group` the shared directory fsyncs and `temps` the sweep of leftover
//! temporary files.
//!
//! The walk is done by hand rather than with `openat2(RESOLVE_NO_SYMLINKS)`: one call would
//! refuse symlinks too, but could neither say which component is one nor let each
//! directory's owner and mode be checked, and it needs Linux 5.6.

mod atomic;
mod group;
mod temps;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, fchown, geteuid};

pub use atomic::{Fsync, atomic_write};
pub use temps::sweep_stale_temps_once;

/// Mode and ownership applied to every write, not only the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttrs {
    /// Permission bits, e.g. `0o600`. Applied with fchmod, so the umask does not matter.
    pub mode: u32,
    /// Owner to set with fchown (needs privilege).
    pub uid: Option<u32>,
    /// Group to set with fchown (needs privilege or membership).
    pub gid: Option<u32>,
    /// When `uid` or `gid` is `None` and the file already exists, keep its owner or group
    /// (as root only): `sudo tokend once` must not turn an app user's token file into
    /// `root:root`. Never taken from a file in a shared (sticky) directory, where another
    /// user may have planted it.
    pub keep_owner: bool,
}

impl FileAttrs {
    /// `0600`, owner unchanged: the default for token files and state.
    pub const PRIVATE: FileAttrs = FileAttrs {
        mode: 0o600,
        uid: None,
        gid: None,
        keep_owner: false,
    };
}

/// How far a directory on a path can be trusted, as [`judge_dir`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirTrust {
    /// Only root or tokend's user can write it.
    Private,
    /// Other users can write it, but it is sticky and owned by root or tokend's user
    /// (`/tmp`): they cannot rename or remove entries that are not theirs, but they can
    /// take a name first. Files found in it are not trusted.
    Shared,
    /// Owned by another user, in a parent that only root or tokend's user can write: root
    /// made it for that user (systemd `StateDirectory=`, `/var/lib/myapp`). Only ever the
    /// last directory of a path.
    Foreign,
}

/// Where a directory sits on the path being opened, for [`judge_dir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirRole {
    /// A directory on the way.
    Ancestor,
    /// The directory tokend works in. `shared_ok`: a sticky world-writable one is accepted
    /// (a sink in `/tmp`); `must_own`: it must belong to tokend's user, or, when tokend
    /// runs as root, to a user root made it for (the state directory).
    Last {
        /// Accept [`DirTrust::Shared`].
        shared_ok: bool,
        /// Refuse a directory tokend's user does not own (see above).
        must_own: bool,
    },
}

/// Decides whether a directory with owner `uid` and `mode` may be used in `role`, given
/// how its parent was judged (`None` for `/`) and tokend's effective uid. Pure: the
/// policy of this module, tested as a table. The error says why, without the path.
///
/// - Owned by root or tokend's user (with `must_own`: by tokend's user) and not writable
///   by group or others: [`DirTrust::Private`].
/// - The same but writable by others: [`DirTrust::Shared`] if sticky and allowed there,
///   else refused (another user could rename a directory on the way, or plant files).
/// - Owned by another user: only as the last directory, not writable by group or others,
///   in a [`DirTrust::Private`] parent, and with `must_own` only when tokend is root:
///   [`DirTrust::Foreign`]. Anything else is refused: such a user could swap a directory
///   on the way, and a name squatted in a shared parent is not one root made.
pub fn judge_dir(
    role: DirRole,
    uid: u32,
    mode: u32,
    parent: Option<DirTrust>,
    euid: u32,
) -> Result<DirTrust, String> {
    let others_write = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    let (shared_ok, must_own) = match role {
        DirRole::Ancestor => (true, false),
        DirRole::Last {
            shared_ok,
            must_own,
        } => (shared_ok, must_own),
    };
    let trusted = if must_own {
        uid == euid
    } else {
        uid == 0 || uid == euid
    };
    let is_last = role != DirRole::Ancestor;
    let foreign_ok = is_last && (!must_own || euid == 0) && parent == Some(DirTrust::Private);
    match (trusted, others_write) {
        (true, false) => Ok(DirTrust::Private),
        (true, true) if sticky && shared_ok => Ok(DirTrust::Shared),
        (true, true) => Err(format!(
            "is writable by other users (mode {:04o}){}",
            mode & 0o7777,
            if sticky { "" } else { " and not sticky" }
        )),
        (false, false) if foreign_ok => Ok(DirTrust::Foreign),
        (false, true) => Err(format!(
            "is owned by uid {uid} and writable by other users (mode {:04o})",
            mode & 0o7777
        )),
        (false, false) => Err(
            if is_last && uid != 0 && parent != Some(DirTrust::Private) {
                format!(
                    "is owned by uid {uid}, not by tokend's user (uid {euid}), and its parent can be written by other users"
                )
            } else if must_own {
                format!("is owned by uid {uid}, not by tokend's user (uid {euid})")
            } else {
                format!("is owned by uid {uid}, neither root nor tokend's user (uid {euid})")
            },
        ),
    }
}

/// What to do about missing directories in [`open_dir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewDirs {
    /// Exact mode of the last directory when it is created (directories on the way get
    /// `0755` less the umask, as `mkdir -p` gives them).
    pub mode: u32,
    /// Group of the last directory when it is created.
    pub gid: Option<u32>,
}

/// How [`open_dir`] opens a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirOptions {
    /// Create missing directories (relative to their opened parent, with `mkdirat`).
    pub create: Option<NewDirs>,
    /// Accept a sticky directory others can write as the last one (see [`DirRole`]).
    pub shared_ok: bool,
    /// The last directory must belong to tokend's user (see [`DirRole`]).
    pub must_own: bool,
}

/// A directory opened by [`open_dir`]: every file operation is relative to its descriptor.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
    uid: u32,
    gid: u32,
    mode: u32,
    trust: DirTrust,
    /// The group-commit state of this directory, shared with every other descriptor of it.
    sync: std::sync::Arc<group::DirSync>,
}

/// Opens `path` as a directory without following a symbolic link anywhere in it, judging
/// every component with [`judge_dir`]. Errors name the offending directory;
/// `ErrorKind::NotFound` when it is missing and `create` is `None`, `PermissionDenied` when
/// a component is refused.
pub fn open_dir(path: &Path, options: DirOptions) -> io::Result<SafeDir> {
    let path = std::path::absolute(path)?;
    // Lexical `..` is exact here: no symlink is ever followed, so `a/b/..` is `a`.
    let mut names: Vec<&OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::ParentDir => {
                names.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let euid = geteuid().as_raw();
    let role = |last: bool| {
        if last {
            DirRole::Last {
                shared_ok: options.shared_ok,
                must_own: options.must_own,
            }
        } else {
            DirRole::Ancestor
        }
    };
    let mut current = PathBuf::from("/");
    let flags = |last: bool| {
        // O_PATH on the way: search permission is enough, as for a normal lookup. The last
        // one is opened for reading, which fsync and fchmod need.
        let access = if last { OFlag::O_RDONLY } else { OFlag::O_PATH };
        access | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
    };
    let mut fd = nix::fcntl::open("/", flags(names.is_empty()), Mode::empty())
        .map_err(|e| refused(&current, &format!("cannot be opened: {e}"), kind(e)))?;
    let mut st = fstat(&fd).map_err(io::Error::from)?;
    let mut trust = judge_dir(role(names.is_empty()), st.st_uid, st.st_mode, None, euid)
        .map_err(|why| refused(&current, &why, io::ErrorKind::PermissionDenied))?;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        current.push(name);
        let mut created = false;
        let next = match openat(&fd, *name, flags(last), Mode::empty()) {
            Err(Errno::ENOENT) if options.create.is_some() => {
                let mode = match (last, options.create) {
                    (true, Some(new)) => new.mode,
                    _ => 0o755,
                };
                match mkdirat(&fd, *name, Mode::from_bits_truncate(mode)) {
                    Ok(()) => created = true,
                    // Someone else made it meanwhile: it is judged like any other.
                    Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(refused(
                            &current,
                            &format!("cannot be created: {e}"),
                            kind(e),
                        ));
                    }
                }
                openat(&fd, *name, flags(last), Mode::empty())
            }
            other => other,
        };
        let next = next.map_err(|e| component_error(&fd, name, &current, e))?;
        st = fstat(&next).map_err(io::Error::from)?;
        if created
            && last
            && let Some(new) = options.create
        {
            if new.gid.is_some_and(|g| g != st.st_gid) {
                fchown(&next, None, new.gid.map(Gid::from_raw)).map_err(|e| {
                    refused(
                        &current,
                        &format!("could not be given its group: {e}"),
                        kind(e),
                    )
                })?;
            }
            // The umask narrowed mkdirat's mode; fchown may have cleared set-id bits.
            fchmod(&next, Mode::from_bits_truncate(new.mode)).map_err(|e| {
                refused(
                    &current,
                    &format!("could not be given its mode: {e}"),
                    kind(e),
                )
            })?;
            st = fstat(&next).map_err(io::Error::from)?;
        }
        trust = judge_dir(role(last), st.st_uid, st.st_mode, Some(trust), euid)
            .map_err(|why| refused(&current, &why, io::ErrorKind::PermissionDenied))?;
        fd = next;
    }
    Ok(SafeDir {
        fd,
        path: current,
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
        trust,
        sync: group::for_dir(st.st_dev, st.st_ino),
    })
}

/// The `io::ErrorKind` of an errno.
fn kind(e: Errno) -> io::ErrorKind {
    io::Error::from(e).kind()
}

/// `PATH WHY` (`WHY` reads as a predicate: "is …", "cannot be …"), as an error of `kind`.
fn refused(dir: &Path, why: &str, kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, format!("{} {why}", dir.display()))
}

/// Explains why `name` (at `path`) could not be opened as a directory under `parent`.
fn component_error(parent: &OwnedFd, name: &OsStr, path: &Path, e: Errno) -> io::Error {
    if matches!(e, Errno::ELOOP | Errno::ENOTDIR) {
        let kind = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT);
        if kind == Ok(SFlag::S_IFLNK) {
            return refused(
                path,
                "is a symbolic link; tokend does not follow symbolic links in the directories it writes to",
                io::ErrorKind::PermissionDenied,
            );
        }
        return refused(path, "is not a directory", io::ErrorKind::NotADirectory);
    }
    refused(path, &format!("cannot be opened: {e}"), kind(e))
}

impl SafeDir {
    /// The directory's path as it was opened (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's owner.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The directory's group.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// The directory's permission bits.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// How it was judged.
    pub fn trust(&self) -> DirTrust {
        self.trust
    }

    /// How many fsyncs of this directory (through any descriptor of it) tokend has made
    /// since the directory was last opened by nobody: group commit shows as fewer of them
    /// than durable writes (tests, benchmarks).
    pub fn dir_fsyncs(&self) -> u64 {
        self.sync.fsyncs()
    }

    /// Whether the directory is still what it was judged to be when opened: linked (not
    /// removed) and with the same owner, group and mode. One `fstat`, so a long-lived
    /// handle (the file sink's) can be kept instead of walking the path from `/` again,
    /// and is dropped for a fresh [`open_dir`] (which judges again) when this is false.
    pub fn unchanged(&self) -> bool {
        fstat(&self.fd).is_ok_and(|st| {
            st.st_nlink > 0
                && st.st_uid == self.uid
                && st.st_gid == self.gid
                && (st.st_mode & 0o7777) == self.mode
        })
    }

    /// The descriptor, for calls this type does not wrap.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sets the directory's mode through its descriptor (only one tokend's user owns).
    pub fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        fchmod(&self.fd, Mode::from_bits_truncate(mode)).map_err(|e| {
            refused(
                &self.path,
                &format!("could not be given its mode: {e}"),
                kind(e),
            )
        })?;
        self.mode = mode;
        Ok(())
    }

    /// Opens (or with `O_CREAT`, creates with `mode`) the file `name` here, never through
    /// a symlink (`O_NOFOLLOW|O_CLOEXEC` are added) and without blocking on a FIFO. It must
    /// be a regular file with one link: a hard link planted in a directory another user
    /// can write must not make tokend write to, or chown, someone else's file.
    pub fn open_file(&self, name: &str, flags: OFlag, mode: u32) -> io::Result<File> {
        check_name(name)?;
        let path = self.path.join(name);
        let fd = openat(
            &self.fd,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| {
            if e == Errno::ELOOP {
                let why = "is a symbolic link, which tokend does not follow";
                refused(&path, why, io::ErrorKind::PermissionDenied)
            } else {
                refused(&path, &format!("cannot be opened: {e}"), kind(e))
            }
        })?;
        let st = fstat(&fd).map_err(io::Error::from)?;
        check_regular(&path, &st)?;
        // Reads and writes block as usual from here on.
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(io::Error::from)?;
        Ok(File::from(fd))
    }

    /// Reads the file `name` here (see [`open_file`](Self::open_file)), at most `cap`
    /// bytes. Missing → `None`.
    pub fn read(&self, name: &str, cap: u64) -> io::Result<Option<Vec<u8>>> {
        let file = match self.open_file(name, OFlag::O_RDONLY, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is larger than {cap} bytes",
                    self.path.join(name).display()
                ),
            ));
        }
        Ok(Some(bytes))
    }

    /// Renames `from` to `to` inside this directory.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        renameat(&self.fd, from, &self.fd, to).map_err(|e| {
            io::Error::new(
                kind(e),
                format!(
                    "cannot rename {} to {to}: {e}",
                    self.path.join(from).display()
                ),
            )
        })
    }
}

/// A file name inside a [`SafeDir`]: one component, never `.` or `..`.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    Ok(())
}

/// Refuses anything but a regular file with a single link.
fn check_regular(path: &Path, st: &FileStat) -> io::Result<()> {
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(refused(
            path,
            "is not a regular file",
            io::ErrorKind::InvalidInput,
        ));
    }
    if st.st_nlink != 1 {
        return Err(refused(
            path,
            &format!(
                "has {} hard links; tokend only uses a file with one",
                st.st_nlink
            ),
            io::ErrorKind::PermissionDenied,
        ));
    }
    Ok(())
}

/// The last component of `path` as UTF-8 text (every name tokend writes is one).
pub fn file_name(path: &Path) -> io::Result<&str> {
    path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Opens the private directory `dir` (the state directory), creating it with `mode` when
/// missing and `create` is set. Never follows a symlink; refuses a directory tokend's user
/// does not own (as root: one root made for another user is accepted and left as it is)
/// and one that other users can write, such as `/tmp`. Only a directory tokend's user
/// owns gets `mode` set, through its descriptor.
pub fn ensure_private_dir(dir: &Path, mode: u32, create: bool) -> io::Result<SafeDir> {
    let mut opened = open_dir(
        dir,
        DirOptions {
            create: create.then_some(NewDirs { mode, gid: None }),
            shared_ok: false,
            must_own: true,
        },
    )?;
    if opened.uid() == geteuid().as_raw() && opened.mode() != mode {
        opened.set_mode(mode)?;
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::atomic::temp_name;
    use super::temps::is_temp_name;
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tokend-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn directories_are_judged_by_owner_mode_and_parent() {
        use DirTrust::*;
        const SINK: DirRole = DirRole::Last {
            shared_ok: true,
            must_own: false,
        };
        const STATE: DirRole = DirRole::Last {
            shared_ok: false,
            must_own: true,
        };
        const ANC: DirRole = DirRole::Ancestor;
        // (role, owner, mode, parent, euid) → trust or an error containing the text.
        type Case = (
            DirRole,
            u32,
            u32,
            Option<DirTrust>,
            u32,
            Result<DirTrust, &'static str>,
        );
        #[rustfmt::skip]
        let cases: [Case; 17] = [
            (ANC, 0, 0o755, None, 0, Ok(Private)),
            (ANC, 0, 0o1777, Some(Private), 0, Ok(Shared)),
            (ANC, 0, 0o777, Some(Private), 0, Err("writable by other users (mode 0777) and not sticky")),
            (ANC, 0, 0o775, Some(Private), 0, Err("writable by other users")),
            (ANC, 65534, 0o755, Some(Private), 0, Err("owned by uid 65534, neither root nor")),
            (ANC, 65534, 0o1777, Some(Private), 0, Err("owned by uid 65534 and writable")),
            (ANC, 1000, 0o700, Some(Private), 1000, Ok(Private)),
            (SINK, 0, 0o1777, Some(Private), 0, Ok(Shared)),
            (SINK, 65534, 0o755, Some(Private), 0, Ok(Foreign)),
            (SINK, 65534, 0o755, Some(Shared), 0, Err("its parent can be written by other users")),
            (SINK, 65534, 0o770, Some(Private), 0, Err("writable by other users")),
            (STATE, 0, 0o1777, Some(Private), 0, Err("writable by other users (mode 1777)")),
            (STATE, 0, 0o700, Some(Private), 0, Ok(Private)),
            (STATE, 65534, 0o700, Some(Private), 0, Ok(Foreign)),
            (STATE, 65534, 0o700, Some(Shared), 0, Err("its parent can be written")),
            (STATE, 0, 0o700, Some(Private), 1000, Err("owned by uid 0, not by tokend's user (uid 1000)")),
            (STATE, 65534, 0o700, Some(Private), 1000, Err("not by tokend's user")),
        ];
        for (role, uid, mode, parent, euid, expected) in cases {
            let got = judge_dir(role, uid, mode, parent, euid);
            let ok = match (&got, &expected) {
                (Ok(g), Ok(e)) => g == e,
                (Err(g), Err(e)) => g.contains(e),
                _ => false,
            };
            assert!(
                ok,
                "{role:?} uid {uid} mode {mode:o} parent {parent:?} euid {euid}: expected {expected:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn writes_with_exact_mode_whatever_the_umask_and_leaves_no_temp_files() {
        let dir = test_dir("fsutil");
        let path = dir.join("t.token");
        let attrs = |mode| FileAttrs {
            mode,
            ..FileAttrs::PRIVATE
        };
        atomic_write(&path, b"one\n", attrs(0o640)).unwrap();
        atomic_write(&path, b"two\n", attrs(0o604)).unwrap();
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
    fn a_symlinked_directory_is_never_followed() {
        let dir = test_dir("fsutil-link");
        std::fs::create_dir(dir.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        for path in [dir.join("link/t"), dir.join("link/sub/t")] {
            let e = atomic_write(&path, b"x", FileAttrs::PRIVATE).unwrap_err();
            assert!(
                e.to_string().contains(&format!(
                    "{} is a symbolic link",
                    dir.join("link").display()
                )),
                "{e}"
            );
        }
        let create = DirOptions {
            create: Some(NewDirs {
                mode: 0o700,
                gid: None,
            }),
            shared_ok: true,
            must_own: false,
        };
        assert!(open_dir(&dir.join("link/sub"), create).is_err());
        assert!(!dir.join("real/sub").exists());
        // A planted symlink in place of the file itself is replaced, not followed.
        std::fs::write(dir.join("real/victim"), "keep").unwrap();
        std::os::unix::fs::symlink(dir.join("real/victim"), dir.join("t")).unwrap();
        atomic_write(&dir.join("t"), b"new", FileAttrs::PRIVATE).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("real/victim")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_to_string(dir.join("t")).unwrap(), "new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_directories_are_created_with_the_exact_mode() {
        let dir = test_dir("fsutil-create");
        let opened = open_dir(
            &dir.join("a/b/../c"),
            DirOptions {
                create: Some(NewDirs {
                    mode: 0o750,
                    gid: None,
                }),
                shared_ok: false,
                must_own: false,
            },
        )
        .unwrap();
        assert_eq!(opened.path(), dir.join("a/c"));
        assert_eq!(
            std::fs::metadata(dir.join("a/c")).unwrap().mode() & 0o7777,
            0o750
        );
        // `..` is resolved lexically (no symlink is ever followed), so `b` is never made.
        assert!(!dir.join("a/b").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temporary_files_are_removed_but_fresh_ones_kept() {
        let dir = test_dir("stale");
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
        let opened = open_dir(
            &dir,
            DirOptions {
                create: None,
                shared_ok: false,
                must_own: false,
            },
        )
        .unwrap();
        assert_eq!(
            opened.remove_stale_temps(std::time::Duration::from_secs(3600)),
            0
        );
        assert_eq!(opened.remove_stale_temps(std::time::Duration::ZERO), 2);
        for name in others {
            assert!(dir.join(name).exists(), "{name}");
        }
        // A real temporary name is recognised.
        assert!(is_temp_name(&temp_name("c.token")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_durable_writes_in_one_directory_share_its_fsyncs() {
        // Proves the wiring of group commit: every descriptor of a directory (a file sink
        // opens its own per write) counts on one shared sync, every write lands, and no
        // write costs more than one directory fsync.
        let dir = test_dir("group");
        let options = DirOptions {
            create: None,
            shared_ok: false,
            must_own: false,
        };
        let watcher = open_dir(&dir, options).unwrap();
        let writers = 16;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(writers));
        let threads: Vec<_> = (0..writers)
            .map(|i| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let opened = open_dir(&dir, options).unwrap();
                    barrier.wait();
                    let name = format!("{i}.token");
                    opened
                        .write_atomic(&name, name.as_bytes(), FileAttrs::PRIVATE)
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for i in 0..writers {
            let name = format!("{i}.token");
            assert_eq!(std::fs::read_to_string(dir.join(&name)).unwrap(), name);
        }
        let fsyncs = watcher.dir_fsyncs();
        eprintln!("{writers} durable writes, {fsyncs} directory fsyncs");
        assert!(
            (1..=writers as u64).contains(&fsyncs),
            "expected 1 to {writers} directory fsyncs, got {fsyncs}"
        );
        // A replacement without fsync costs none.
        watcher
            .replace("x", b"x", FileAttrs::PRIVATE, Fsync::Skip)
            .unwrap();
        assert_eq!(watcher.dir_fsyncs(), fsyncs);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failure_names_the_path() {
        let e =
            atomic_write(Path::new("/nonexistent-dir/x"), b"x", FileAttrs::PRIVATE).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/x"), "{e}");
    }
}
