//! State files: `state_dir/<account>.json` (0600 in a 0700 directory, written atomically)
//! keep the access token, the refresh token and their expiries, so a restart reuses a fresh
//! token instead of logging in again, and a rotated refresh token survives a crash (it is
//! persisted before the new access token is published). They also carry what
//! `tokend status` shows: last success, last error, next refresh, per-sink results.
//!
//! The directory is opened once, without following symlinks, and refused when another
//! user could write it or it is not tokend's user's (as root: one root made for the
//! service user is accepted, and its files are given to that user, so `sudo tokend once`
//! leaves state the service's daemon can still read). Every file in it is opened relative
//! to that descriptor with `O_NOFOLLOW` (`fsutil::ensure_private_dir`, issue 12).
//!
//! A state file written under another fingerprint (provider settings or credentials
//! changed) is discarded on load. A state file that cannot be used (not JSON, wrong
//! types, a time after 9999-12-31, a token that [`accept_token`] refuses, more than
//! [`MAX_STATE_FILE`] bytes) is *corrupt*: [`StateStore::load`] moves it aside to
//! `<account>.json.corrupt` (one rename, replacing an older corrupt copy, so the newest
//! is kept for inspection), says so for the log, and the account starts clean. Corrupt
//! values are refused rather than clamped: a clamped expiry would be a guess, and a fresh
//! login costs one request. [`StateStore::peek`] (`status`, `token`) reports the same
//! problem as an error and never panics.
//!
//! [`accept_token`]: crate::provider::extract::accept_token
//!
//! Two files per account, for two kinds of durability:
//! - `<account>.json` holds the tokens, the in-flight marker, counters and the next
//!   refresh: written atomically, once per exchange, before anything is published, and
//!   fsynced (file and directory) when a power loss would cost more than one login
//!   (`durability`'s [`save_fsync`]: a rotating refresh token, the in-flight marker, or
//!   `[daemon] durability = "all"`). Directory fsyncs are shared by saves close together
//!   (`fsutil` group commit);
//! - `<account>.sinks` holds only what each sink last did, for `tokend status`: rewritten in
//!   place after every publish without rename or fsync (8 µs instead of ~200 µs of CPU
//!   here, docs/BENCHMARKS.md). A torn or lost one only costs `status` its sink lines until
//!   the next write; readers retry a torn read and otherwise fall back to the copy in
//!   `<account>.json`.
//!
//! Layout: this file is the store (the directory, the lock, loading, saving, moving a
//! corrupt file aside); `types` holds what a state file contains; `durability` decides
//! which saves are fsynced.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fsutil::{FileAttrs, Fsync, SafeDir, ensure_private_dir};

mod durability;
mod types;

pub use durability::{Durability, save_fsync};
pub use types::{
    AccountState, FailureKind, Fingerprint, SharedStatus, SinkStatus, StoredSecret, StoredToken,
};

/// Format version of state files.
const VERSION: u32 = 1;

/// The largest state file read: a state holds two tokens of at most 16 KiB each and a few
/// short strings; anything larger is corrupt (and must not be read into memory whole).
pub const MAX_STATE_FILE: u64 = 1 << 20;

/// Milliseconds since the Unix epoch, clamped to the epoch .. 9999-12-31 (never overflows).
pub use crate::bounds::to_ms;

/// The inverse of [`to_ms`], clamped to 9999-12-31 (never overflows).
pub use crate::bounds::from_ms;

/// What a lock holder wrote into `state_dir/.lock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Its process id.
    pub pid: u32,
    /// When it took the lock (ms since the epoch).
    pub since_ms: u64,
    /// `run`, `once` or `demo`.
    pub command: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    /// The directory, opened once (without following symlinks) by the first call that
    /// needs it; every file operation is relative to it (issue 12, finding 5).
    opened: Arc<Mutex<Option<Arc<SafeDir>>>>,
    /// Per account: held while a save is queued or running (see [`StateStore::write_lock`]).
    writes: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// `[daemon] durability = "all"` (see [`set_durability`](Self::set_durability)).
    fsync_all: Arc<AtomicBool>,
}

impl StateStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: &Path) -> Self {
        StateStore {
            dir: dir.to_path_buf(),
            opened: Arc::default(),
            writes: Arc::default(),
            fsync_all: Arc::default(),
        }
    }

    /// Applies `[daemon] durability` to every save from now on, through this store and
    /// every clone of it. The default is [`Durability::RefreshTokens`].
    pub fn set_durability(&self, durability: Durability) {
        self.fsync_all
            .store(durability == Durability::All, Ordering::Relaxed);
    }

    /// The `[daemon] durability` in force.
    pub fn durability(&self) -> Durability {
        if self.fsync_all.load(Ordering::Relaxed) {
            Durability::All
        } else {
            Durability::RefreshTokens
        }
    }

    /// Saves `state` on the blocking pool (an fsync takes milliseconds, which would stall
    /// every other account on a Tokio worker), fsynced or not as [`save_fsync`] decides
    /// for a provider that does (`rotates`) or does not rotate its refresh tokens. Saves
    /// of one account are ordered by its [`write_lock`](Self::write_lock), which the
    /// blocking write holds until it is done even if this future is dropped (a cancelled
    /// task).
    pub async fn persist(&self, state: &AccountState, rotates: bool) -> io::Result<()> {
        let fsync = save_fsync(
            self.durability(),
            rotates,
            state.refresh_token.is_some(),
            state.refresh_in_flight,
        );
        let guard = self.write_lock(&state.account).lock_owned().await;
        let (store, snapshot) = (self.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            store.save_with(&snapshot, fsync)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
    }

    /// How many fsyncs the state directory has had in this process (tests, benchmarks).
    pub fn dir_fsyncs(&self) -> u64 {
        self.opened(false)
            .ok()
            .flatten()
            .map_or(0, |dir| dir.dir_fsyncs())
    }

    /// The lock an asynchronous save of `account` holds until its file is renamed. Saves
    /// run on the blocking pool and outlive a cancelled account task; taking this lock
    /// orders them, and [`writes_done`](Self::writes_done) lets a replacement task start
    /// only after the old task's last save landed (never to be overwritten by it).
    pub fn write_lock(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.writes
            .lock()
            .expect("state write map lock is never poisoned")
            .entry(account.to_string())
            .or_default()
            .clone()
    }

    /// Waits until no save of `account` is queued or running.
    pub async fn writes_done(&self, account: &str) {
        drop(self.write_lock(account).lock().await);
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of an account's state file.
    pub fn path(&self, account: &str) -> PathBuf {
        self.dir.join(format!("{account}.json"))
    }

    /// Path of an account's sink-status file (no account's state file ends in `.sinks`).
    pub fn sinks_path(&self, account: &str) -> PathBuf {
        self.dir.join(format!("{account}.sinks"))
    }

    /// The opened state directory. With `create`, a missing one is created (0700);
    /// without, a missing one is `None`. Errors start with `state_dir PATH:`.
    fn opened(&self, create: bool) -> io::Result<Option<Arc<SafeDir>>> {
        let mut slot = self
            .opened
            .lock()
            .expect("state dir lock is never poisoned");
        if let Some(dir) = slot.as_ref() {
            return Ok(Some(dir.clone()));
        }
        match ensure_private_dir(&self.dir, 0o700, create) {
            Ok(dir) => Ok(Some(slot.insert(Arc::new(dir)).clone())),
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("state_dir {}: {e}", self.dir.display()),
            )),
        }
    }

    /// Reads the file `name` of the state directory; missing (or no directory) → `None`.
    fn read_text(&self, name: &str) -> io::Result<Option<String>> {
        let Some(dir) = self.opened(false)? else {
            return Ok(None);
        };
        match dir.read(name, MAX_STATE_FILE)? {
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not UTF-8", dir.path().join(name).display()),
                )
            }),
            None => Ok(None),
        }
    }

    /// Owner and group of a state file: as root, those of the state directory, so that
    /// after `sudo tokend once` the service user's daemon can still read and replace them
    /// (issue 12, finding 5); otherwise tokend's own.
    fn owner_of_files(dir: &SafeDir) -> (Option<u32>, Option<u32>) {
        if nix::unistd::geteuid().is_root() {
            (Some(dir.uid()), Some(dir.gid()))
        } else {
            (None, None)
        }
    }

    /// Opens (creating, 0600) the file `name` in the state directory for writing without
    /// truncating it, owned as [`owner_of_files`](Self::owner_of_files) says.
    fn open_owned(&self, dir: &SafeDir, name: &str) -> io::Result<File> {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::MetadataExt;
        let file = dir.open_file(name, OFlag::O_RDWR | OFlag::O_CREAT, 0o600)?;
        let (uid, gid) = Self::owner_of_files(dir);
        let meta = file.metadata()?;
        if uid.is_some_and(|u| u != meta.uid()) || gid.is_some_and(|g| g != meta.gid()) {
            std::os::unix::fs::fchown(&file, uid, gid).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot set the owner of {}: {e}",
                        dir.path().join(name).display()
                    ),
                )
            })?;
        }
        Ok(file)
    }

    /// Rewrites the sink-status file in place: no fsync, no rename (see the module docs).
    pub fn save_sinks(
        &self,
        account: &str,
        sinks: &BTreeMap<String, SinkStatus>,
    ) -> io::Result<()> {
        let json = serde_json::to_vec(sinks).map_err(io::Error::other)?;
        self.rewrite_in_place(&format!("{account}.sinks"), &json)
    }

    /// Rewrites `<account>.shared`, what this instance last saw of the account's
    /// coordination record (docs/HA.md), in place like the sink statuses: it is for
    /// `status` only, and a torn read just falls back to the state file's copy.
    pub fn save_shared(&self, account: &str, shared: &SharedStatus) -> io::Result<()> {
        let json = serde_json::to_vec(shared).map_err(io::Error::other)?;
        self.rewrite_in_place(&format!("{account}.shared"), &json)
    }

    /// Writes `bytes` over the file `name` in the state dir: no fsync, no rename.
    fn rewrite_in_place(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(name);
        let write = || -> io::Result<()> {
            let dir = self.opened(true)?.expect("created when missing");
            let file = self.open_owned(&dir, name)?;
            file.write_all_at(bytes, 0)?;
            file.set_len(bytes.len() as u64)
        };
        write()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
    }

    /// The coordination status last written by [`save_shared`](Self::save_shared), if
    /// readable and sane.
    fn load_shared(&self, account: &str) -> Option<SharedStatus> {
        let name = format!("{account}.shared");
        for _ in 0..3 {
            let text = self.read_text(&name).ok()??;
            if let Ok(shared) = serde_json::from_str::<SharedStatus>(&text) {
                return shared.check().is_ok().then_some(shared);
            }
        }
        None
    }

    /// The sink statuses last written by [`save_sinks`](Self::save_sinks), if readable.
    fn load_sinks(&self, account: &str) -> Option<BTreeMap<String, SinkStatus>> {
        let name = format!("{account}.sinks");
        // A read racing the in-place rewrite may see a mix: read again.
        for _ in 0..3 {
            let text = self.read_text(&name).ok()??;
            if let Ok(sinks) = serde_json::from_str::<BTreeMap<String, SinkStatus>>(&text) {
                let sane = sinks.values().all(|s| {
                    [s.last_write_ms, s.holds_expires_at_ms, s.last_error_ms]
                        .iter()
                        .all(|ms| ms.is_none_or(|ms| ms <= crate::bounds::MAX_TIME_MS))
                });
                return sane.then_some(sinks);
            }
        }
        None
    }

    fn with_sinks(&self, mut state: AccountState) -> AccountState {
        if let Some(sinks) = self.load_sinks(&state.account) {
            state.sinks = sinks;
        }
        if let Some(shared) = self.load_shared(&state.account) {
            state.coordination = Some(shared);
        }
        state
    }

    /// Reads and checks a state file: `Ok(None)` when missing, `Err((corrupt, why))`
    /// when unreadable (`corrupt` = the content is bad, not the I/O).
    fn read(&self, account: &str) -> Result<Option<AccountState>, (bool, String)> {
        let path = self.path(account);
        let text = match self.read_text(&format!("{account}.json")) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err((true, format!("{}: {e}", path.display())));
            }
            Err(e) => return Err((false, format!("cannot read {}: {e}", path.display()))),
        };
        // serde's own message may quote a value (a token): name only where it broke.
        let state = serde_json::from_str::<AccountState>(&text)
            .map_err(|e| {
                format!(
                    "{:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                )
                .to_lowercase()
            })
            .and_then(|s| s.check().map(|()| s));
        match state {
            Ok(s) => Ok(Some(self.with_sinks(s))),
            Err(e) => Err((
                true,
                format!("{} is not a valid state file ({e})", path.display()),
            )),
        }
    }

    /// Loads an account's state. Missing → `None`. Written for another fingerprint →
    /// `None` with the reason. Corrupt → moved aside to `<account>.json.corrupt`, `None`
    /// with the reason (naming both files). The caller logs the reason and starts afresh.
    pub fn load(
        &self,
        account: &str,
        fingerprint: &Fingerprint,
    ) -> (Option<AccountState>, Option<String>) {
        // Leftovers of a crash between create and rename (they hold tokens).
        if let Ok(Some(dir)) = self.opened(false) {
            crate::fsutil::sweep_stale_temps_once(&dir, Duration::from_secs(60));
        }
        match self.read(account) {
            Ok(None) => (None, None),
            Ok(Some(s)) if !fingerprint.matches(&s.fingerprint) => {
                let valid = s.valid_token(SystemTime::now()).is_some();
                let why = if valid {
                    "provider settings or credentials changed: the saved token is served until a new login succeeds or it expires (superseded)"
                } else {
                    "provider settings or credentials changed; discarding the saved state"
                };
                (
                    valid.then(|| s.superseded_by(fingerprint)),
                    Some(why.into()),
                )
            }
            Ok(Some(mut s)) => {
                // Saved under the legacy alias: carry on under the current fingerprint.
                s.fingerprint = fingerprint.current.clone();
                (Some(s), None)
            }
            Err((false, why)) => (None, Some(why)),
            Err((true, why)) => {
                // Renamed inside the opened directory: no path lookup a symlink could divert.
                let aside = self.dir.join(format!("{account}.json.corrupt"));
                let renamed = self.opened(false).and_then(|dir| match dir {
                    Some(dir) => dir.rename(
                        &format!("{account}.json"),
                        &format!("{account}.json.corrupt"),
                    ),
                    None => Err(io::Error::from(io::ErrorKind::NotFound)),
                });
                let moved = match renamed {
                    Ok(()) => format!("moved it to {}", aside.display()),
                    Err(e) => format!("cannot move it to {}: {e}", aside.display()),
                };
                (None, Some(format!("{why}; {moved}; starting afresh")))
            }
        }
    }

    /// Reads a state file regardless of fingerprint (for `status` and `token`). Never
    /// moves anything (the daemon may be running); a corrupt file is an error naming it.
    pub fn peek(&self, account: &str) -> io::Result<Option<AccountState>> {
        self.read(account).map_err(|(corrupt, why)| {
            let kind = if corrupt {
                io::ErrorKind::InvalidData
            } else {
                io::ErrorKind::Other
            };
            io::Error::new(kind, why)
        })
    }

    /// Saves atomically with fsync (0600, owned as the directory; directory 0700), here
    /// and now: for callers that know nothing of the provider. The daemon and `once` save
    /// through [`persist`](Self::persist).
    pub fn save(&self, state: &AccountState) -> io::Result<()> {
        self.save_with(state, Fsync::Durable)
    }

    /// Saves atomically, with fsync or not.
    fn save_with(&self, state: &AccountState, fsync: Fsync) -> io::Result<()> {
        let dir = self.opened(true)?.expect("created when missing");
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        let (uid, gid) = Self::owner_of_files(&dir);
        let attrs = FileAttrs {
            uid,
            gid,
            ..FileAttrs::PRIVATE
        };
        dir.replace(&format!("{}.json", state.account), &json, attrs, fsync)
    }

    /// Takes the exclusive lock that keeps two daemons (or a daemon and `once`) off the same
    /// state, and writes who holds it (`command`, pid, since) into the lock file for
    /// `tokend status` ([`holder`](Self::holder)). Held until the returned value is dropped.
    pub fn lock(&self, command: &str) -> io::Result<nix::fcntl::Flock<File>> {
        use std::io::Write;
        let mut lock = self.lock_only()?;
        let holder = LockHolder {
            pid: std::process::id(),
            since_ms: to_ms(SystemTime::now()),
            command: command.to_string(),
        };
        // Best effort: the lock itself is what keeps a second daemon out.
        let line = serde_json::to_string(&holder).map_err(io::Error::other)?;
        let _ = lock
            .set_len(0)
            .and_then(|()| lock.write_all(format!("{line}\n").as_bytes()));
        Ok(lock)
    }

    /// Who holds the state lock, if anyone: tries a shared lock on the lock file without
    /// waiting (read-only, so `status` needs no write access), and reads what the holder
    /// wrote. `Ok(None)`: nothing holds it (or there is no state yet).
    pub fn holder(&self) -> io::Result<Option<LockHolder>> {
        use nix::fcntl::OFlag;
        let Some(dir) = self.opened(false)? else {
            return Ok(None);
        };
        let file = match dir.open_file(".lock", OFlag::O_RDONLY, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
            Ok(_free) => Ok(None),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let text = dir.read(".lock", 4096)?.unwrap_or_default();
                let holder = serde_json::from_slice::<LockHolder>(text.trim_ascii())
                    .ok()
                    .filter(|h| h.since_ms <= crate::bounds::MAX_TIME_MS)
                    .unwrap_or(LockHolder {
                        pid: 0,
                        since_ms: 0,
                        command: "unknown".into(),
                    });
                Ok(Some(holder))
            }
            Err((_, errno)) => Err(io::Error::other(format!(
                "cannot test the lock {}: {errno}",
                self.dir.join(".lock").display()
            ))),
        }
    }

    fn lock_only(&self) -> io::Result<nix::fcntl::Flock<File>> {
        let dir = self.opened(true)?.expect("created when missing");
        let path = self.dir.join(".lock");
        // O_NOFOLLOW: a planted `.lock` symlink must not make tokend create a file elsewhere.
        let file = self.open_owned(&dir, ".lock").map_err(|e| {
            io::Error::new(e.kind(), format!("state_dir {}: {e}", self.dir.display()))
        })?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                io::Error::new(io::ErrorKind::WouldBlock, format!("another tokend holds the lock on {} (a daemon is running on this state_dir)", self.dir.display()))
            } else {
                io::Error::other(format!("cannot lock {}: {errno}", path.display()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::*;

    #[test]
    fn state_round_trips_and_fingerprint_mismatch_discards() {
        let dir = std::env::temp_dir().join(format!("tokend-state-{}", std::process::id()));
        let store = StateStore::new(&dir);
        let mut s = AccountState::new("a", "zarv", "fp1");
        s.refresh_token = Some(StoredSecret(SecretString::from("rt-secret")));
        store.save(&s).unwrap();
        assert!(!format!("{s:?}").contains("rt-secret"));
        let (loaded, why) = store.load("a", &Fingerprint::new("fp1"));
        assert!(why.is_none());
        assert_eq!(
            loaded.unwrap().refresh_token.unwrap().0.expose_secret(),
            "rt-secret"
        );
        let (loaded, why) = store.load("a", &Fingerprint::new("fp2"));
        assert!(loaded.is_none() && why.unwrap().contains("changed"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(store.path("a"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // The sink statuses come from `<account>.sinks`; a torn one falls back to the
        // copy in the state file.
        let mut sinks = BTreeMap::new();
        sinks.insert(
            "file:/t".to_string(),
            SinkStatus {
                last_outcome: Some("written".into()),
                ..Default::default()
            },
        );
        store.save_sinks("a", &sinks).unwrap();
        let peeked = store.peek("a").unwrap().unwrap();
        assert_eq!(peeked.sinks, sinks);
        std::fs::write(store.sinks_path("a"), b"{\"file:/t\": {\"last_out").unwrap();
        assert!(store.peek("a").unwrap().unwrap().sinks.is_empty());
        // A shorter rewrite in place leaves no tail of the longer one.
        store.save_sinks("a", &sinks).unwrap();
        store.save_sinks("a", &BTreeMap::new()).unwrap();
        assert_eq!(std::fs::read(store.sinks_path("a")).unwrap(), b"{}");
        let _lock = store.lock("test").unwrap();
        assert_eq!(
            store.lock("test").unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 16: a save that a login can restore is not fsynced, one that holds a rotating
    /// refresh token (or the in-flight marker, or any with `durability = "all"`) is, with
    /// its directory, before `persist` returns.
    #[tokio::test]
    async fn only_saves_holding_a_rotating_refresh_token_are_fsynced() {
        let dir = std::env::temp_dir().join(format!("tokend-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = StateStore::new(&dir);
        let mut plain = AccountState::new("p", "pontotel", "fp");
        plain.next_refresh_ms = Some(1);
        let mut rotating = AccountState::new("z", "zarv", "fp");
        rotating.refresh_token = Some(StoredSecret(SecretString::from("rt-1")));
        // (what is saved, rotates, setting, fsyncs of the directory it costs)
        let cases = [
            (&plain, false, Durability::RefreshTokens, 0),
            (&rotating, false, Durability::RefreshTokens, 0),
            (&rotating, true, Durability::RefreshTokens, 1),
            (&plain, false, Durability::All, 1),
        ];
        store.save_sinks("x", &BTreeMap::new()).unwrap();
        for (i, (state, rotates, setting, fsyncs)) in cases.into_iter().enumerate() {
            store.set_durability(setting);
            let before = store.dir_fsyncs();
            store.persist(state, rotates).await.unwrap();
            assert_eq!(
                store.dir_fsyncs() - before,
                fsyncs,
                "case {i}: {} rotates={rotates} {setting:?}",
                state.account
            );
            let saved = store.peek(&state.account).unwrap().unwrap();
            assert_eq!(saved.next_refresh_ms, state.next_refresh_ms, "case {i}");
        }
        let mut in_flight = rotating.clone();
        in_flight.refresh_in_flight = true;
        store.set_durability(Durability::RefreshTokens);
        let before = store.dir_fsyncs();
        store.persist(&in_flight, true).await.unwrap();
        assert_eq!(store.dir_fsyncs() - before, 1, "in-flight marker");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 11: a state file that cannot be used is moved aside (the newest corrupt copy
    /// kept), the reason names it, the account starts clean, and `peek` reports an error
    /// instead of panicking.
    #[test]
    fn corrupt_state_files_are_moved_aside_and_peek_never_panics() {
        let dir = std::env::temp_dir().join(format!("tokend-corrupt-{}", std::process::id()));
        let store = StateStore::new(&dir);
        let fp = Fingerprint::new("fp");
        let good = |token: &str, expires_at_ms: &str| {
            format!(
                r#"{{"version":1,"account":"a","provider":"zarv","fingerprint":"fp","token":{{"access_token":{token},"token_type":"Bearer","obtained_at_ms":1,"expires_at_ms":{expires_at_ms},"expiry_source":"jwt"}},"refresh_token":null,"refresh_expires_at_ms":null,"last_success_ms":null,"last_error":null,"last_error_ms":null,"next_refresh_ms":null}}"#
            )
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not JSON", b"{\"version\":1,".to_vec()),
            ("not UTF-8", vec![0xff, 0xfe, 0x00]),
            ("wrong type", good("\"tok\"", "\"soon\"").into_bytes()),
            (
                "number beyond u64",
                good("\"tok\"", "99999999999999999999").into_bytes(),
            ),
            (
                "expiry after 9999",
                good("\"tok\"", "18446744073709551615").into_bytes(),
            ),
            (
                "token with a newline",
                good("\"abc\\nLD_PRELOAD=/tmp/evil.so\"", "1").into_bytes(),
            ),
            ("empty token", good("\"\"", "1").into_bytes()),
            ("huge file", vec![b' '; MAX_STATE_FILE as usize + 1]),
        ];
        std::fs::create_dir_all(&dir).unwrap();
        for (case, bytes) in cases {
            std::fs::write(store.path("a"), &bytes).unwrap();
            let e = store.peek("a").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{case}: {e}");
            assert!(e.to_string().contains("a.json"), "{case}: {e}");
            assert!(!e.to_string().contains("LD_PRELOAD"), "{case}: {e}");
            let (loaded, why) = store.load("a", &fp);
            let why = why.unwrap_or_default();
            assert!(loaded.is_none(), "{case}");
            assert!(why.contains("a.json.corrupt"), "{case}: {why}");
            assert!(!store.path("a").exists(), "{case}");
            assert_eq!(
                std::fs::read(dir.join("a.json.corrupt")).unwrap(),
                bytes,
                "{case}"
            );
            assert!(store.peek("a").unwrap().is_none(), "{case}");
        }
        // A good file with the largest time loads; so does the legacy alias, re-keyed.
        std::fs::write(store.path("a"), good("\"tok\"", "253402300799000")).unwrap();
        assert!(store.load("a", &fp).0.is_some());
        let renamed = Fingerprint {
            current: "new".into(),
            legacy: Some("fp".into()),
        };
        assert_eq!(store.load("a", &renamed).0.unwrap().fingerprint, "new");
        assert!("fp".to_string() == renamed && "new".to_string() == renamed);
        assert!("other".to_string() != renamed);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
