//! Signals → [`Control`] messages (STYLE "One control channel"): SIGHUP reloads, SIGUSR1
//! refreshes every account, SIGTERM/SIGINT stop; a second SIGTERM/SIGINT exits at once.
//! Called by `tokend run` and `tokend demo`.

use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Control;

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
