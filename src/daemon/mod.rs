//! `tokend run`: the supervisor (SPEC §4). One task per account sleeps until its refresh is
//! due, a cron time comes, or it is nudged (SIGUSR1), and does all of that account's work
//! itself, so coinciding triggers make one request ("one flight per account"). SIGHUP, the
//! config watcher, SIGUSR1 and SIGTERM all become a [`Control`] message handled in one
//! place. Reloads validate the whole new config and apply a pure diff
//! (`settings::diff`); systemd hears `READY=1` after the first round of attempts,
//! `STATUS=` with fresh/total counts, `WATCHDOG=1` and `RELOADING=1`.

pub mod signals;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use crate::account::Services;
use crate::account::task::AccountTask;
use crate::board::Board;
use crate::config;
use crate::settings::diff::{Change, diff};
use crate::settings::{self, Account, Config};
use watch::ConfigWatcher;

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
    let cfg = crate::startup::load(path)?;
    crate::observability::logging::init(cfg.daemon.log_format, &cfg.daemon.log_level);
    let rt = crate::startup::runtime()?;
    rt.block_on(async move {
        let (tx, rx) = mpsc::channel(64);
        let signals = signals::spawn_signals(tx.clone())?;
        let result = run(path.to_path_buf(), cfg, tx, rx).await;
        signals.close();
        result
    })
}

fn sd_notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

struct AccountHandle {
    account: Arc<Account>,
    cancel: CancellationToken,
    nudge: Arc<Notify>,
    update: tokio::sync::watch::Sender<Arc<Account>>,
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
    let mut svc = Services::new(&cfg.daemon.state_dir, cfg.daemon.max_concurrent_requests);
    svc.coordination = cfg.coordination.clone();
    svc.store.set_durability(cfg.daemon.durability);
    let _lock = svc.store.lock("run").context("refusing to start")?;
    if let Some(c) = &cfg.coordination {
        crate::observability::metrics::metrics().coordinated();
        info!(store = %c.store.describe(), instance = %c.instance, claim_ttl = %crate::account::policy::wait_text(c.claim_ttl), "sharing accounts through the coordination store");
    }
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
        // Why a reload happens now, for its log lines (SIGHUP or a file change).
        let mut reload_now: Option<&'static str> = None;
        tokio::select! {
            control = control_rx.recv() => match control {
                Some(Control::Shutdown) | None => break,
                Some(Control::Reload) => reload_now = Some("SIGHUP"),
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
            () = reload_sleep => reload_now = Some("config file changed"),
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
        if let Some(trigger) = reload_now {
            reload_at = None;
            // RELOADING=1 … READY=1 only once READY=1 was sent: before that, READY=1
            // still waits for the first round (SPEC §4), which a reload must not cut short.
            if ready_sent {
                let mut states = vec![NotifyState::Reloading];
                states.extend(NotifyState::monotonic_usec_now().ok());
                sd_notify(&states);
            }
            // Every line the reload logs carries its trigger (the span's field).
            reload(
                &path,
                &daemon_settings,
                &mut accounts,
                &svc,
                &root,
                &board,
                &mut watcher,
            )
            .instrument(tracing::info_span!("reload", trigger))
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
    let (update, updates) = tokio::sync::watch::channel(account.clone());
    board.add(&account.name, first_round);
    let sinks: Vec<String> = account.sinks.iter().map(|s| s.label()).collect();
    crate::observability::metrics::metrics().track(&account.name, &sinks);
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
        crate::observability::metrics::metrics().forget(name);
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
    let new = match settings::load(path) {
        Ok(c) => c,
        Err(errors) => {
            // One event per error: a record is one line (the log writer keeps it so).
            for e in &errors.0 {
                error!(config = %path.display(), "reload failed: {e}");
            }
            error!(config = %path.display(), errors = errors.0.len(), "reload failed; keeping the running config");
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
        info!(account = %name, change = %change, "reload");
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
                for s in &mut a.sinks {
                    if let Some(running) = h.account.sinks.iter().find(|r| *r == s) {
                        s.sink = running.sink.clone();
                    }
                }
                let sinks: Vec<String> = a.sinks.iter().map(|s| s.label()).collect();
                crate::observability::metrics::metrics().track(name, &sinks);
                let a = Arc::new(a);
                h.account = a.clone();
                let _ = h.update.send(a);
            }
        }
    }
    // Removed accounts' tokens need no redaction any more (the registry stays small).
    crate::redact::retain_accounts(accounts.keys().map(String::as_str));
    crate::observability::metrics::metrics().reload("success");
    info!(
        changes = plan.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "config reloaded"
    );
    board.changed.notify_one();
}
