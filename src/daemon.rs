//! `tokend run`: the supervisor (SPEC §4). One task per account sleeps until its refresh is
//! due, a cron time comes, or it is nudged (SIGUSR1), and does all of that account's work
//! itself, so coinciding triggers make one request ("one flight per account"). SIGHUP, the
//! config watcher, SIGUSR1 and SIGTERM all become a [`Control`] message handled in one
//! place. Reloads validate the whole new config and apply a pure diff
//! (`config::diff`); systemd hears `READY=1` after the first round of attempts,
//! `STATUS=` with fresh/total counts, `WATCHDOG=1` and `RELOADING=1`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures_util::{FutureExt, StreamExt};
use sd_notify::NotifyState;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::account::{self, Services};
use crate::config::diff::{Change, diff};
use crate::config::{self, Account, Config};
use crate::provider::{Obtained, ProviderError};
use crate::schedule::{self, MIN_INTERVAL};
use crate::sink::{SinkConfig, SinkError, rfc3339};
use crate::state::{AccountState, from_ms, to_ms};

/// How long file events are collected before a reload (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(250);
/// `STATUS=` is sent at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Graceful shutdown budget (SPEC §4: exit within 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Everything that steers the daemon, from signals, the watcher and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGHUP: reload now.
    Reload,
    /// A watched config file changed: reload after the debounce.
    FileChanged,
    /// SIGUSR1: refresh every account now.
    RefreshAll,
    /// SIGTERM/SIGINT: stop.
    Shutdown,
}

/// `tokend run`: loads the config (exit 2 if invalid), then runs until SIGTERM/SIGINT.
pub fn run_blocking(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = crate::cli::load(path)?;
    crate::observability::logging::init(cfg.daemon.log_format, &cfg.daemon.log_level);
    let rt = crate::cli::runtime()?;
    rt.block_on(async move {
        let (tx, rx) = mpsc::channel(64);
        let signals = spawn_signals(tx.clone())?;
        let result = run(path.to_path_buf(), cfg, tx, rx).await;
        signals.close();
        result
    })
}

/// Handle to the signal listener.
pub struct SignalsHandle(signal_hook_tokio::Handle);

impl SignalsHandle {
    /// Stops listening.
    pub fn close(&self) {
        self.0.close();
    }
}

/// Routes SIGTERM, SIGINT, SIGHUP and SIGUSR1 into the control channel. A second
/// SIGTERM/SIGINT during shutdown exits at once.
pub fn spawn_signals(tx: mpsc::Sender<Control>) -> anyhow::Result<SignalsHandle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let term_now = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        // The first signal arms the flag; the second one, while the flag is set, exits.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&term_now))
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(&term_now))
            .context("cannot install signal handlers")?;
    }
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;
    let handle = signals.handle();
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            let control = match sig {
                SIGHUP => Control::Reload,
                SIGUSR1 => Control::RefreshAll,
                _ => Control::Shutdown,
            };
            if tx.send(control).await.is_err() {
                break;
            }
        }
    });
    Ok(SignalsHandle(handle))
}

fn sd_notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Each account's token expiry and first-round bookkeeping, shared by the account tasks,
/// the supervisor (`STATUS=`, `READY=1`) and `/readyz`.
#[derive(Debug, Default)]
pub struct Board {
    inner: Mutex<BoardInner>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct BoardInner {
    expires: HashMap<String, Option<SystemTime>>,
    awaiting_first_round: HashSet<String>,
}

impl Board {
    fn add(&self, name: &str, first_round: bool) {
        let mut b = self.inner.lock().expect("board lock");
        b.expires.insert(name.to_string(), None);
        if first_round {
            b.awaiting_first_round.insert(name.to_string());
        }
    }

    fn remove(&self, name: &str) {
        let mut b = self.inner.lock().expect("board lock");
        b.expires.remove(name);
        b.awaiting_first_round.remove(name);
        drop(b);
        crate::observability::metrics::metrics().forget(name);
        self.changed.notify_one();
    }

    fn report(&self, name: &str, expires_at: Option<SystemTime>) {
        if let Some(at) = expires_at {
            // Also after a restart that reused a saved token (no obtain, so no other update).
            crate::observability::metrics::metrics().expiry(name, at);
        }
        let mut b = self.inner.lock().expect("board lock");
        let first = b.awaiting_first_round.remove(name);
        let changed = b.expires.insert(name.to_string(), expires_at) != Some(expires_at);
        drop(b);
        if first || changed {
            self.changed.notify_one();
        }
    }

    /// Whether some account has not yet had its first attempt.
    fn in_first_round(&self) -> bool {
        !self
            .inner
            .lock()
            .expect("board lock")
            .awaiting_first_round
            .is_empty()
    }

    /// (accounts holding an unexpired token, total, first round complete).
    pub fn counts(&self) -> (usize, usize, bool) {
        let now = SystemTime::now();
        let b = self.inner.lock().expect("board lock");
        let fresh = b
            .expires
            .values()
            .filter(|e| e.is_some_and(|at| at > now))
            .count();
        (fresh, b.expires.len(), b.awaiting_first_round.is_empty())
    }

    /// Accounts without an unexpired token at `now`, sorted (for `/readyz`).
    pub fn not_ready(&self, now: SystemTime) -> Vec<String> {
        let b = self.inner.lock().expect("board lock");
        let mut names: Vec<String> = b
            .expires
            .iter()
            .filter(|(_, e)| !e.is_some_and(|at| at > now))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }
}

struct AccountHandle {
    account: Arc<Account>,
    cancel: CancellationToken,
    nudge: Arc<Notify>,
    update: watch::Sender<Arc<Account>>,
    task: JoinHandle<()>,
}

/// Runs the daemon until a [`Control::Shutdown`] arrives on `control_rx`.
pub async fn run(
    path: PathBuf,
    cfg: Config,
    control_tx: mpsc::Sender<Control>,
    mut control_rx: mpsc::Receiver<Control>,
) -> anyhow::Result<ExitCode> {
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let svc = Services::new(&cfg.daemon.state_dir, cfg.daemon.max_concurrent_requests);
    let _lock = svc.store.lock().context("refusing to start")?;
    let root = CancellationToken::new();
    let board = Arc::new(Board::default());
    let mut accounts: BTreeMap<String, AccountHandle> = BTreeMap::new();
    info!(config = %path.display(), accounts = cfg.accounts.len(), state_dir = %cfg.daemon.state_dir.display(), "tokend starting");
    let http = match cfg.daemon.listen {
        Some(addr) => Some(
            crate::observability::http::serve(addr, board.clone(), root.clone())
                .await
                .context("refusing to start")?,
        ),
        None => None,
    };
    let mut watcher = ConfigWatcher::new(control_tx.clone());
    watcher.update(&cfg);
    let daemon_settings = cfg.daemon.clone();
    for account in cfg.accounts {
        start(&mut accounts, Arc::new(account), &svc, &root, &board, true);
    }
    let mut ready_sent = false;
    if accounts.is_empty() {
        sd_notify(&[
            NotifyState::Ready,
            NotifyState::Status("0/0 accounts fresh"),
        ]);
        ready_sent = true;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick = watchdog.map(|d| tokio::time::interval(d / 2));
    let mut reload_at: Option<tokio::time::Instant> = None;
    // The last `STATUS=` sent and when; the next one is due at `status_at`.
    let mut last_status = (String::new(), tokio::time::Instant::now());
    let mut status_at: Option<tokio::time::Instant> = None;
    loop {
        let reload_sleep = async {
            match reload_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let status_sleep = async {
            match status_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let watchdog_wait = async {
            match watchdog_tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let mut reload_now = false;
        tokio::select! {
            control = control_rx.recv() => match control {
                Some(Control::Shutdown) | None => break,
                Some(Control::Reload) => reload_now = true,
                Some(Control::FileChanged) => {
                    reload_at = Some(tokio::time::Instant::now() + DEBOUNCE);
                }
                Some(Control::RefreshAll) => {
                    info!(accounts = accounts.len(), "refreshing every account now (SIGUSR1)");
                    for h in accounts.values() {
                        h.nudge.notify_one();
                    }
                }
            },
            () = reload_sleep => reload_now = true,
            () = watchdog_wait => sd_notify(&[NotifyState::Watchdog]),
            () = board.changed.notified() => {
                if !ready_sent && !board.in_first_round() {
                    ready_sent = true;
                    let (fresh, total, _) = board.counts();
                    let status = format!("{fresh}/{total} accounts fresh");
                    info!(fresh, total, "first round done; ready");
                    sd_notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                    last_status = (status, tokio::time::Instant::now());
                } else if status_at.is_none() {
                    // Every refresh changes the board: say so at most once per STATUS_EVERY
                    // (sd-notify opens a socket per message) and only when the text changed.
                    status_at = Some(tokio::time::Instant::now().max(last_status.1 + STATUS_EVERY));
                }
            }
            () = status_sleep => {
                status_at = None;
                let (fresh, total, _) = board.counts();
                let status = format!("{fresh}/{total} accounts fresh");
                if status != last_status.0 {
                    sd_notify(&[NotifyState::Status(&status)]);
                }
                last_status = (status, tokio::time::Instant::now());
            }
        }
        if reload_now {
            reload_at = None;
            // RELOADING=1 … READY=1 only once READY=1 was sent: before that, READY=1
            // still waits for the first round (SPEC §4), which a reload must not cut short.
            if ready_sent {
                let mut states = vec![NotifyState::Reloading];
                states.extend(NotifyState::monotonic_usec_now().ok());
                sd_notify(&states);
            }
            reload(
                &path,
                &daemon_settings,
                &mut accounts,
                &svc,
                &root,
                &board,
                &mut watcher,
            )
            .await;
            if ready_sent {
                sd_notify(&[NotifyState::Ready]);
            }
        }
    }
    info!("stopping");
    sd_notify(&[NotifyState::Stopping]);
    root.cancel();
    let names: Vec<String> = accounts.keys().cloned().collect();
    let tasks: Vec<JoinHandle<()>> = accounts.into_values().map(|h| h.task).chain(http).collect();
    // The tasks, then the state saves they left on the blocking pool (a rotated refresh
    // token must not be lost because its save was still queued at exit).
    let store = &svc.store;
    let all_done = async {
        futures_util::future::join_all(tasks).await;
        futures_util::future::join_all(names.iter().map(|n| store.writes_done(n))).await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, all_done)
        .await
        .is_err()
    {
        warn!(
            "some accounts did not stop within {}s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn start(
    accounts: &mut BTreeMap<String, AccountHandle>,
    account: Arc<Account>,
    svc: &Services,
    root: &CancellationToken,
    board: &Arc<Board>,
    first_round: bool,
) {
    let cancel = root.child_token();
    let nudge = Arc::new(Notify::new());
    let (update, updates) = watch::channel(account.clone());
    board.add(&account.name, first_round);
    let task = AccountTask {
        account: account.clone(),
        svc: svc.clone(),
        nudge: nudge.clone(),
        updates,
        cancel: cancel.clone(),
        board: board.clone(),
    };
    let task = tokio::spawn(task.run());
    accounts.insert(
        account.name.clone(),
        AccountHandle {
            account,
            cancel,
            nudge,
            update,
            task,
        },
    );
}

async fn stop(
    accounts: &mut BTreeMap<String, AccountHandle>,
    name: &str,
    board: &Board,
    svc: &Services,
) {
    if let Some(h) = accounts.remove(name) {
        h.cancel.cancel();
        // Wait so that the old task's in-flight request cannot overlap a new task's; a task
        // stuck past the grace period (a hanging sink or hook) is aborted, not left running
        // beside its replacement where it could save stale state over the new one.
        let abort = h.task.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, h.task).await.is_err() {
            abort.abort();
            warn!(
                account = name,
                "account task did not stop within {}s; aborted",
                SHUTDOWN_GRACE.as_secs()
            );
        }
        // Its last state save may still be on the blocking pool: a replacement task must
        // load what it wrote and never be overwritten by it.
        svc.store.writes_done(name).await;
        board.remove(name);
    }
}

async fn reload(
    path: &Path,
    settings: &config::Daemon,
    accounts: &mut BTreeMap<String, AccountHandle>,
    svc: &Services,
    root: &CancellationToken,
    board: &Arc<Board>,
    watcher: &mut ConfigWatcher,
) {
    let started = Instant::now();
    let new = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            error!(config = %path.display(), "reload failed; keeping the running config:\n{errors}");
            crate::observability::metrics::metrics().reload("error");
            return;
        }
    };
    // During the first round, accounts (re)started by the reload join it.
    let first_round = board.in_first_round();
    for w in &new.warnings {
        warn!("{w}");
    }
    if new.daemon != *settings {
        warn!("[daemon] settings changed; they take effect at the next restart");
    }
    watcher.update(&new);
    let old: Vec<&Account> = accounts.values().map(|h| h.account.as_ref()).collect();
    let new_refs: Vec<&Account> = new.accounts.iter().collect();
    let plan = diff(&old, &new_refs);
    let mut new_accounts: HashMap<String, Account> = new
        .accounts
        .into_iter()
        .map(|a| (a.name.clone(), a))
        .collect();
    for (name, change) in &plan {
        info!(account = %name, change = ?change, "reload");
        match change {
            Change::Removed => stop(accounts, name, board, svc).await,
            Change::Added => {
                let a = new_accounts
                    .remove(name)
                    .expect("added accounts are in the new config");
                start(accounts, Arc::new(a), svc, root, board, first_round);
            }
            Change::Credentials => {
                stop(accounts, name, board, svc).await;
                let a = new_accounts
                    .remove(name)
                    .expect("changed accounts are in the new config");
                start(accounts, Arc::new(a), svc, root, board, first_round);
            }
            Change::Update { .. } => {
                let mut a = new_accounts
                    .remove(name)
                    .expect("changed accounts are in the new config");
                let h = accounts
                    .get_mut(name)
                    .expect("updated accounts are running");
                // Keep the running sink objects (Vault login, AWS client) for unchanged sinks.
                for (i, cfg) in a.sink_configs.iter().enumerate() {
                    if let Some(j) = h.account.sink_configs.iter().position(|c| c == cfg) {
                        a.sinks[i] = h.account.sinks[j].clone();
                    }
                }
                let a = Arc::new(a);
                h.account = a.clone();
                let _ = h.update.send(a);
            }
        }
    }
    crate::observability::metrics::metrics().reload("success");
    info!(
        changes = plan.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "config reloaded"
    );
    board.changed.notify_one();
}

/// Watches the directories of the config files and include globs (not the files: editors
/// rename-save and Kubernetes swaps a `..data` symlink) and sends [`Control::FileChanged`].
/// inotify-driven, no polling; the supervisor debounces.
struct ConfigWatcher {
    tx: mpsc::Sender<Control>,
    watcher: Option<notify::RecommendedWatcher>,
    dirs: Vec<PathBuf>,
    relevant: Arc<Mutex<(HashSet<PathBuf>, HashSet<PathBuf>)>>,
}

impl ConfigWatcher {
    fn new(tx: mpsc::Sender<Control>) -> Self {
        ConfigWatcher {
            tx,
            watcher: None,
            dirs: Vec::new(),
            relevant: Arc::new(Mutex::new((HashSet::new(), HashSet::new()))),
        }
    }

    fn update(&mut self, cfg: &Config) {
        use notify::Watcher;
        let files: HashSet<PathBuf> = cfg.files.iter().map(|f| absolute(f)).collect();
        let include_dirs: HashSet<PathBuf> = cfg.include_dirs.iter().map(|d| absolute(d)).collect();
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .chain(include_dirs.iter().cloned())
            .collect();
        dirs.sort();
        dirs.dedup();
        *self.relevant.lock().expect("watch set lock") = (files, include_dirs);
        if self.watcher.is_none() {
            let tx = self.tx.clone();
            let relevant = self.relevant.clone();
            let handler = move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else { return };
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                let (files, include_dirs) = &*relevant.lock().expect("watch set lock");
                let hit = event.paths.iter().any(|p| {
                    files.contains(p)
                        || p.file_name().is_some_and(|n| n == "..data")
                        || (p.parent().is_some_and(|d| include_dirs.contains(d))
                            && p.extension().is_some_and(|e| e == "toml"))
                });
                if hit {
                    // A full channel already holds a pending reload.
                    let _ = tx.try_send(Control::FileChanged);
                }
            };
            match notify::recommended_watcher(handler) {
                Ok(w) => self.watcher = Some(w),
                Err(e) => {
                    warn!(error = %e, "cannot watch the config files; reload with SIGHUP");
                    return;
                }
            }
        }
        let watcher = self.watcher.as_mut().expect("watcher was just created");
        for old in self.dirs.iter().filter(|d| !dirs.contains(d)) {
            let _ = watcher.unwatch(old);
        }
        for dir in dirs.iter().filter(|d| !self.dirs.contains(d)) {
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch directory; reload with SIGHUP");
            }
        }
        self.dirs = dirs;
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One account's life: sleep until something is due, then do it.
struct AccountTask {
    account: Arc<Account>,
    svc: Services,
    nudge: Arc<Notify>,
    updates: watch::Receiver<Arc<Account>>,
    cancel: CancellationToken,
    board: Arc<Board>,
}

/// A sink waiting for a (re)write.
#[derive(Debug, Clone, Copy)]
struct PendingSink {
    at: Instant,
    attempt: u32,
}

impl AccountTask {
    /// The exchange, publish and notify futures are boxed: they are large (a reqwest
    /// request in flight) and live only while they run, while this task's own future
    /// lives as long as the account (10,000 accounts × the largest of them, otherwise).
    async fn run(mut self) {
        let name = self.account.name.clone();
        let mut state = account::load_state(&self.account, &self.svc.store);
        let now = SystemTime::now();
        let mut cron = self
            .account
            .schedule
            .as_deref()
            .and_then(|s| schedule::parse_cron(s).ok());
        let mut next_cron = cron.as_ref().and_then(|c| schedule::next_cron(c, now));
        // A saved fresh token is reused (no login on restart), and so is its planned
        // refresh when the current timing could have drawn it: a restart of N accounts
        // then rewrites no state file.
        let mut due: Option<SystemTime> = if account::is_fresh(&self.account, &state, now) {
            let t = state.token.as_ref().expect("fresh implies a token");
            info!(account = %name, expires_at = %rfc3339(from_ms(t.expires_at_ms)), "reusing the saved token");
            let (obtained, expires) = (from_ms(t.obtained_at_ms), from_ms(t.expires_at_ms));
            let timing = &self.account.timing;
            let (earliest, latest) = (
                to_ms(schedule::refresh_due(obtained, expires, timing, -1.0)),
                to_ms(schedule::refresh_due(obtained, expires, timing, 1.0)),
            );
            Some(
                state
                    .next_refresh_ms
                    .filter(|ms| (earliest..=latest).contains(ms))
                    .map_or_else(
                        || {
                            schedule::refresh_due(
                                obtained,
                                expires,
                                timing,
                                schedule::jitter_sample(),
                            )
                        },
                        from_ms,
                    ),
            )
        } else {
            None
        };
        // A saved valid token, fresh or already due, is written to every sink: a sink
        // under /run may be gone after a reboot, and when the provider is down the due
        // refresh may take until expiry. A new token obtained first replaces it unwritten.
        let mut pending: BTreeMap<usize, PendingSink> = if state.valid_token(now).is_some() {
            self.all_sinks_now()
        } else {
            BTreeMap::new()
        };
        let mut retry_at: Option<Instant> = None;
        let mut last_request: Option<Instant> = None;
        let mut notify_pending = false;
        let mut first_round = true;
        // The plan (`next_refresh_ms`) changed outside an exchange and is not yet saved.
        let mut replanned = due.is_some() && due.map(to_ms) != state.next_refresh_ms;
        let mut sinks_changed = false;
        loop {
            // When must we wake? Token first (due or retry), then cron, then sink retries.
            let token_at: Instant = match (retry_at, due) {
                (Some(r), _) => r,
                (None, Some(d)) => instant_at(d),
                (None, None) => Instant::now(),
            };
            let mut wake = token_at;
            if let Some(c) = next_cron {
                wake = wake.min(instant_at(c));
            }
            if let Some(p) = pending.values().map(|p| p.at).min() {
                wake = wake.min(p);
            }
            let mut forced = false;
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let new = self.updates.borrow_and_update().clone();
                    let old = std::mem::replace(&mut self.account, new);
                    if old.timing != self.account.timing
                        && let Some(t) = &state.token {
                            due = Some(schedule::refresh_due(from_ms(t.obtained_at_ms), from_ms(t.expires_at_ms), &self.account.timing, schedule::jitter_sample()));
                            replanned = true;
                        }
                    if old.schedule != self.account.schedule {
                        cron = self.account.schedule.as_deref().and_then(|s| schedule::parse_cron(s).ok());
                        next_cron = cron.as_ref().and_then(|c| schedule::next_cron(c, SystemTime::now()));
                    }
                    if old.sink_configs != self.account.sink_configs {
                        // New sinks get the current token now, no login (SPEC §4).
                        pending = carry_pending(&old.sink_configs, &self.account.sink_configs, &pending);
                        let labels: Vec<String> = self.account.sinks.iter().map(|s| s.label()).collect();
                        state.sinks.retain(|k, _| labels.contains(k));
                        sinks_changed = true;
                    }
                    continue;
                }
                () = self.nudge.notified() => forced = true,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now_i = Instant::now();
            let now = SystemTime::now();
            let cron_fired = next_cron.is_some_and(|c| c <= now);
            if cron_fired {
                next_cron = cron.as_ref().and_then(|c| schedule::next_cron(c, now));
            }
            if forced || cron_fired || now_i >= token_at {
                // Never two requests for one account within MIN_INTERVAL.
                if let Some(last) = last_request {
                    let earliest = last + MIN_INTERVAL;
                    if now_i < earliest {
                        tokio::select! {
                            () = self.cancel.cancelled() => break,
                            () = tokio::time::sleep_until(earliest.into()) => {}
                        }
                    }
                }
                last_request = Some(Instant::now());
                let for_account = self.account.clone();
                let plan = move |state: &AccountState, r: Result<&Obtained, &ProviderError>| {
                    Some(plan_next(&for_account, state, r))
                };
                let result = tokio::select! {
                    () = self.cancel.cancelled() => break,
                    r = Box::pin(account::obtain(&self.account, &mut state, &self.svc, &plan)) => r,
                };
                // A nudge (SIGUSR1) that arrived while this flight waited or was in the air
                // is answered by it: one flight per account (SPEC §4). `Notify` stored it
                // as a permit; polling once consumes it.
                let _ = self.nudge.notified().now_or_never();
                // `obtain` planned the next attempt and saved it with the outcome.
                let next = state.next_refresh_ms.map_or_else(SystemTime::now, from_ms);
                match result {
                    Ok(o) => {
                        info!(account = %name, via = o.via.as_str(), expires_at = %rfc3339(o.expires_at), expiry_from = o.expiry_source,
                              next_refresh = %rfc3339(next), "token obtained");
                        due = Some(next);
                        retry_at = None;
                        pending = self.all_sinks_now();
                        notify_pending = !self.account.notify.is_empty();
                    }
                    Err(e) => {
                        retry_at = Some(instant_at(next));
                        let wait = next.duration_since(SystemTime::now()).unwrap_or_default();
                        log_failure(&name, &e, wait, &state);
                    }
                }
            }
            // Sinks whose (re)write is due get the current token, if it is still valid.
            let now_i = Instant::now();
            let due_sinks: Vec<usize> = pending
                .iter()
                .filter(|(_, p)| p.at <= now_i)
                .map(|(i, _)| *i)
                .collect();
            if !due_sinks.is_empty() {
                match account::document(&self.account, &state)
                    .filter(|d| d.expires_at > SystemTime::now())
                {
                    Some(doc) => {
                        let results = Box::pin(account::publish(
                            &self.account,
                            &doc,
                            &mut state,
                            &due_sinks,
                        ))
                        .await;
                        sinks_changed = true;
                        for r in results {
                            match r.result {
                                Ok(_) => {
                                    pending.remove(&r.index);
                                }
                                Err(e) => {
                                    let attempt = pending.get(&r.index).map_or(0, |p| p.attempt);
                                    let wait = sink_backoff(&self.account, attempt, &e);
                                    pending.insert(
                                        r.index,
                                        PendingSink {
                                            at: Instant::now() + wait,
                                            attempt: attempt + 1,
                                        },
                                    );
                                }
                            }
                        }
                        if pending.is_empty() && notify_pending {
                            notify_pending = false;
                            Box::pin(account::notify(&self.account, &doc)).await;
                        }
                    }
                    // An expired token is never published; the sinks wait for the next one.
                    None => pending.clear(),
                }
            }
            // Sink results go to the cheap status file; the state file is rewritten only
            // when the plan changed outside an exchange (a restart, a reload's new timing).
            if sinks_changed {
                sinks_changed = false;
                if let Err(e) = self.svc.store.save_sinks(&name, &state.sinks) {
                    warn!(account = %name, error = %e, "cannot save the sink status");
                }
            }
            if replanned {
                replanned = false;
                state.next_refresh_ms = match retry_at {
                    Some(r) => Some(to_ms(
                        SystemTime::now() + r.saturating_duration_since(Instant::now()),
                    )),
                    None => due.map(to_ms),
                };
                match account::persist(&self.svc.store, &state).await {
                    Ok(()) => state.unsaved = false,
                    Err(e) => error!(account = %name, error = %e, "cannot save state"),
                }
            }
            let expires_at = state
                .valid_token(SystemTime::now())
                .map(|t| from_ms(t.expires_at_ms));
            self.board.report(&name, expires_at);
            if first_round {
                first_round = false;
            }
        }
        debug!(account = %name, "account task stopped");
    }

    fn all_sinks_now(&self) -> BTreeMap<usize, PendingSink> {
        (0..self.account.sinks.len())
            .map(|i| {
                (
                    i,
                    PendingSink {
                        at: Instant::now(),
                        attempt: 0,
                    },
                )
            })
            .collect()
    }
}

/// The next attempt after an exchange: the jittered refresh-ahead time after a success,
/// the backoff after a failure.
fn plan_next(
    account: &Account,
    state: &AccountState,
    result: Result<&Obtained, &ProviderError>,
) -> SystemTime {
    match result {
        Ok(o) => schedule::refresh_due(
            o.obtained_at,
            o.expires_at,
            &account.timing,
            schedule::jitter_sample(),
        ),
        Err(e) => SystemTime::now() + failure_backoff(account, state, e),
    }
}

fn failure_backoff(account: &Account, state: &AccountState, e: &ProviderError) -> Duration {
    let attempt = state.failures.saturating_sub(1);
    let retry = &account.retry;
    let mut wait = schedule::backoff(attempt, retry, rand::random(), e.retry_after());
    if matches!(e, ProviderError::Malformed { .. }) {
        // Only a config change helps; don't spin.
        wait = wait.max(retry.max);
    }
    // While the held token is still valid, keep trying before it expires: cap the wait
    // so a retry lands before expiry when the backoff would overshoot it.
    if let Some(t) = state.valid_token(SystemTime::now()) {
        let left = from_ms(t.expires_at_ms)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if wait > left / 2 && left > MIN_INTERVAL * 2 {
            wait = (left / 2)
                .max(MIN_INTERVAL)
                .max(e.retry_after().unwrap_or(Duration::ZERO));
        }
    }
    wait
}

/// The sinks pending after the sink list changed from `old` to `new`: a kept sink keeps
/// its pending retry (sinks are independent, SPEC §4), re-indexed to the new list; a new
/// sink is due now.
fn carry_pending(
    old: &[SinkConfig],
    new: &[SinkConfig],
    pending: &BTreeMap<usize, PendingSink>,
) -> BTreeMap<usize, PendingSink> {
    new.iter()
        .enumerate()
        .filter_map(|(i, c)| match old.iter().position(|o| o == c) {
            Some(j) => pending.get(&j).map(|p| (i, *p)),
            None => Some((
                i,
                PendingSink {
                    at: Instant::now(),
                    attempt: 0,
                },
            )),
        })
        .collect()
}

fn sink_backoff(account: &Account, attempt: u32, e: &SinkError) -> Duration {
    let wait = schedule::backoff(attempt, &account.retry, rand::random(), None);
    if e.is_transient() {
        wait
    } else {
        wait.max(account.retry.max.min(Duration::from_secs(60)))
    }
}

fn log_failure(name: &str, e: &ProviderError, wait: Duration, state: &AccountState) {
    let retry_in =
        humantime::format_duration(Duration::from_secs(wait.as_secs().max(1))).to_string();
    let valid_until = state
        .valid_token(SystemTime::now())
        .map(|t| rfc3339(from_ms(t.expires_at_ms)));
    match e {
        ProviderError::Transient { .. } => {
            warn!(account = %name, error = %e, retry_in, sinks_keep_token_until = ?valid_until, "refresh failed (transient)")
        }
        ProviderError::Rejected { .. } => {
            error!(account = %name, error = %e, retry_in, sinks_keep_token_until = ?valid_until, "credentials rejected by the provider: check the account's credentials")
        }
        ProviderError::Malformed { .. } | ProviderError::Misconfigured { .. } => {
            error!(account = %name, error = %e, retry_in, "cannot build the request: fix the config")
        }
    }
}

/// The `Instant` corresponding to a wall-clock time (now if past).
fn instant_at(t: SystemTime) -> Instant {
    let now_s = SystemTime::now();
    let now_i = Instant::now();
    match t.duration_since(now_s) {
        Ok(d) => now_i + d,
        Err(_) => now_i,
    }
}
