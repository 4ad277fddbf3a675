//! The config watcher: inotify on the directories of the config files and include globs,
//! turned into [`Control::FileChanged`] for the supervisor, which debounces and reloads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::warn;

use super::Control;
use crate::settings::Config;

/// Watches the directories of the config files and include globs (not the files: editors
/// rename-save and Kubernetes swaps a `..data` symlink) and sends [`Control::FileChanged`].
/// inotify-driven, no polling; the supervisor debounces.
pub struct ConfigWatcher {
    tx: mpsc::Sender<Control>,
    watcher: Option<notify::RecommendedWatcher>,
    dirs: Vec<PathBuf>,
    relevant: Arc<Mutex<(HashSet<PathBuf>, HashSet<PathBuf>)>>,
}

impl ConfigWatcher {
    /// A watcher that reports to `tx`; it watches nothing until [`update`](Self::update).
    pub fn new(tx: mpsc::Sender<Control>) -> Self {
        ConfigWatcher {
            tx,
            watcher: None,
            dirs: Vec::new(),
            relevant: Arc::new(Mutex::new((HashSet::new(), HashSet::new()))),
        }
    }

    /// Watches what `cfg` was loaded from (files and include directories).
    pub fn update(&mut self, cfg: &Config) {
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
