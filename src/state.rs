//! State files: `state_dir/<account>.json` (0600 in a 0700 directory, written atomically)
//! keep the access token, the refresh token and their expiries, so a restart reuses a fresh
//! token instead of logging in again, and a rotated refresh token survives a crash (it is
//! persisted before the new access token is published). They also carry what
//! `tokend status` shows: last success, last error, next refresh, per-sink results.
//!
//! A state file written under another fingerprint (provider settings or credentials
//! changed) is discarded on load.
//!
//! Two files per account, for two kinds of durability:
//! - `<account>.json` holds what must survive a power cut (tokens, the in-flight marker,
//!   counters, the next refresh): written atomically with fsync, once per exchange, before
//!   anything is published;
//! - `<account>.sinks` holds only what each sink last did, for `tokend status`: rewritten in
//!   place after every publish without rename or fsync (8 µs instead of ~200 µs of CPU
//!   here, docs/BENCHMARKS.md). A torn or lost one only costs `status` its sink lines until
//!   the next write; readers retry a torn read and otherwise fall back to the copy in
//!   `<account>.json`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fsutil::{FileAttrs, atomic_write, ensure_private_dir};

/// Format version of state files.
const VERSION: u32 = 1;

/// A secret that is written to the (0600) state file but never printed.
#[derive(Clone)]
pub struct StoredSecret(pub SecretString);

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for StoredSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

impl<'de> Deserialize<'de> for StoredSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| StoredSecret(SecretString::from(s)))
    }
}

/// Milliseconds since the Unix epoch.
pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The inverse of [`to_ms`].
pub fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The held access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    /// The token.
    pub access_token: StoredSecret,
    /// Usually `Bearer`.
    pub token_type: String,
    /// When it was obtained.
    pub obtained_at_ms: u64,
    /// When it expires.
    pub expires_at_ms: u64,
    /// Where the expiry came from.
    pub expiry_source: String,
}

/// What one sink last did, for `tokend status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SinkStatus {
    /// Last successful write (or confirmed unchanged).
    pub last_write_ms: Option<u64>,
    /// `written`, `unchanged` or `kept_newer`.
    pub last_outcome: Option<String>,
    /// Expiry of the token the sink holds (as far as tokend knows).
    pub holds_expires_at_ms: Option<u64>,
    /// Last error, if the last attempt failed (cleaned and redacted in and out).
    #[serde(default, with = "crate::redact::stored_text")]
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_ms: Option<u64>,
}

/// One account's state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountState {
    /// Format version.
    pub version: u32,
    /// The account name.
    pub account: String,
    /// The provider name.
    pub provider: String,
    /// Fingerprint of provider settings and credentials.
    pub fingerprint: String,
    /// The held access token.
    pub token: Option<StoredToken>,
    /// The held refresh token.
    pub refresh_token: Option<StoredSecret>,
    /// Its expiry, if known.
    pub refresh_expires_at_ms: Option<u64>,
    /// A refresh with `refresh_token` was sent and its outcome is unknown (crash, timeout):
    /// a rotating provider may have spent it, so it is not sent again; log in instead.
    #[serde(default)]
    pub refresh_in_flight: bool,
    /// Last successful obtain.
    pub last_success_ms: Option<u64>,
    /// Last error (cleaned and redacted in and out).
    #[serde(default, with = "crate::redact::stored_text")]
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_ms: Option<u64>,
    /// Consecutive failed attempts.
    #[serde(default)]
    pub failures: u32,
    /// When the next refresh is planned.
    pub next_refresh_ms: Option<u64>,
    /// Logins made (lifetime of this state file).
    #[serde(default)]
    pub logins: u64,
    /// Refreshes made.
    #[serde(default)]
    pub refreshes: u64,
    /// Per sink label.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkStatus>,
    /// In memory only: the last save failed, so the held token (and any rotated refresh
    /// token) is not on disk yet and must not be published (SPEC §4: persisted before
    /// anything else).
    #[serde(skip)]
    pub unsaved: bool,
}

impl AccountState {
    /// Empty state for an account.
    pub fn new(account: &str, provider: &str, fingerprint: &str) -> Self {
        AccountState {
            version: VERSION,
            account: account.to_string(),
            provider: provider.to_string(),
            fingerprint: fingerprint.to_string(),
            ..Default::default()
        }
    }

    /// The access token if it is still valid at `now`.
    pub fn valid_token(&self, now: SystemTime) -> Option<&StoredToken> {
        self.token
            .as_ref()
            .filter(|t| from_ms(t.expires_at_ms) > now)
    }

    /// The refresh token if it is usable at `now` (unexpired, not possibly spent).
    pub fn usable_refresh_token(&self, now: SystemTime) -> Option<&SecretString> {
        if self.refresh_in_flight {
            return None;
        }
        let unexpired = self
            .refresh_expires_at_ms
            .is_none_or(|ms| from_ms(ms) > now + Duration::from_secs(1));
        self.refresh_token
            .as_ref()
            .filter(|_| unexpired)
            .map(|s| &s.0)
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    /// Per account: held while a save is queued or running (see [`StateStore::write_lock`]).
    writes: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl StateStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: &Path) -> Self {
        StateStore {
            dir: dir.to_path_buf(),
            writes: Arc::default(),
        }
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

    /// Rewrites the sink-status file in place: no fsync, no rename (see the module docs).
    pub fn save_sinks(
        &self,
        account: &str,
        sinks: &BTreeMap<String, SinkStatus>,
    ) -> io::Result<()> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let path = self.sinks_path(account);
        let json = serde_json::to_vec(sinks).map_err(io::Error::other)?;
        let write = || -> io::Result<()> {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&path)?;
            file.write_all_at(&json, 0)?;
            file.set_len(json.len() as u64)
        };
        write()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
    }

    /// The sink statuses last written by [`save_sinks`](Self::save_sinks), if readable.
    fn load_sinks(&self, account: &str) -> Option<BTreeMap<String, SinkStatus>> {
        let path = self.sinks_path(account);
        // A read racing the in-place rewrite may see a mix: read again.
        for _ in 0..3 {
            let bytes = std::fs::read(&path).ok()?;
            if let Ok(sinks) = serde_json::from_slice(&bytes) {
                return Some(sinks);
            }
        }
        None
    }

    fn with_sinks(&self, mut state: AccountState) -> AccountState {
        if let Some(sinks) = self.load_sinks(&state.account) {
            state.sinks = sinks;
        }
        state
    }

    /// Loads an account's state. Missing → `None`. Unreadable or written for another
    /// fingerprint → `None` with the reason, so the caller logs it and starts afresh.
    pub fn load(&self, account: &str, fingerprint: &str) -> (Option<AccountState>, Option<String>) {
        let path = self.path(account);
        // Leftovers of a crash between create and rename (they hold tokens).
        crate::fsutil::sweep_stale_temps_once(&path, Duration::from_secs(60));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (None, None),
            Err(e) => return (None, Some(format!("cannot read {}: {e}", path.display()))),
        };
        match serde_json::from_str::<AccountState>(&text) {
            Ok(s) if s.fingerprint != fingerprint => (
                None,
                Some("provider settings or credentials changed; discarding the saved token".into()),
            ),
            Ok(s) => (Some(self.with_sinks(s)), None),
            Err(e) => (
                None,
                Some(format!(
                    "{} is not a valid state file ({e}); starting afresh",
                    path.display()
                )),
            ),
        }
    }

    /// Reads a state file regardless of fingerprint (for `status` and `token`).
    pub fn peek(&self, account: &str) -> io::Result<Option<AccountState>> {
        let path = self.path(account);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(|s| Some(self.with_sinks(s)))
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    /// Saves atomically with fsync (0600; directory 0700).
    pub fn save(&self, state: &AccountState) -> io::Result<()> {
        if !self.dir.is_dir() {
            ensure_private_dir(&self.dir, 0o700)?;
        }
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        atomic_write(&self.path(&state.account), &json, FileAttrs::PRIVATE)
    }

    /// Takes the exclusive lock that keeps two daemons (or a daemon and `once`) off the same
    /// state. Held until the returned value is dropped.
    pub fn lock(&self) -> io::Result<nix::fcntl::Flock<File>> {
        ensure_private_dir(&self.dir, 0o700)?;
        let path = self.dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
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
    use super::*;

    #[test]
    fn state_round_trips_and_fingerprint_mismatch_discards() {
        let dir = std::env::temp_dir().join(format!("tokend-state-{}", std::process::id()));
        let store = StateStore::new(&dir);
        let mut s = AccountState::new("a", "zarv", "fp1");
        s.refresh_token = Some(StoredSecret(SecretString::from("rt-secret")));
        store.save(&s).unwrap();
        assert!(!format!("{s:?}").contains("rt-secret"));
        let (loaded, why) = store.load("a", "fp1");
        assert!(why.is_none());
        assert_eq!(
            loaded.unwrap().refresh_token.unwrap().0.expose_secret(),
            "rt-secret"
        );
        let (loaded, why) = store.load("a", "fp2");
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
        let _lock = store.lock().unwrap();
        assert_eq!(store.lock().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
