//! Group commit of directory fsyncs (issue 16, part 2): when several files in one directory
//! are renamed while a directory fsync is running, the next fsync covers them all. Called
//! by [`SafeDir::write_atomic`](super::SafeDir::write_atomic) (file sinks and durable state
//! saves) after its rename.
//!
//! A rename is durable only once an fsync of its directory that *started after the
//! rename* has completed; an fsync already under way may have read the directory before
//! the rename. So each writer, under one lock, notes the number of the next fsync to start
//! (`started + 1`) and waits until that one has finished:
//! - no fsync running: the writer starts it at once and waits for nothing else, so a lone
//!   writer pays one uncontended lock and no wake-up (the cost it had before);
//! - one running: the writer waits for it to end; then the first waiter to wake starts the
//!   next one, for everyone who arrived meanwhile.
//!
//! Nothing sleeps on a timer and the lock is never held across the fsync. At most one
//! fsync per directory runs at a time, every writer is served by the first or second
//! fsync after its arrival (no starvation), and a waiter only ever waits for a thread that
//! is inside `fsync` itself, never for a task or a pool slot, so it works from a blocking
//! pool of any size (no deadlock). Waiters are woken only when there are any, which keeps
//! the lone writer free of futex calls.
//!
//! Directories are told apart by device and inode: a file sink opens its directory anew
//! for every write, and all the descriptors of one directory share one [`DirSync`] through
//! a registry of weak references (an inode cannot be reused while a descriptor holds it).

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};

use nix::errno::Errno;

/// The group-commit state of one directory.
#[derive(Debug, Default)]
pub struct DirSync {
    round: Mutex<Round>,
    finished: Condvar,
    /// Directory fsyncs issued (for tests and benchmarks).
    fsyncs: AtomicU64,
}

/// What [`DirSync`] guards.
#[derive(Debug, Default)]
struct Round {
    /// Number of the last fsync started (fsyncs are numbered from 1).
    started: u64,
    /// Number of the last fsync finished; equals `started` when none is running.
    finished: u64,
    /// Number of the last fsync that succeeded.
    last_ok: u64,
    /// The error of the last fsync that failed.
    last_error: Option<Errno>,
    /// Writers waiting on the condition variable.
    waiters: usize,
}

impl DirSync {
    /// Returns once an fsync of the directory that started after this call began has
    /// completed: `fsync` is run by this writer or by another one waiting on the same
    /// directory. Call it after the rename. An error is that of the fsync that covered
    /// this writer (every fsync since its arrival failed).
    pub fn after_rename(&self, fsync: &dyn Fn() -> Result<(), Errno>) -> io::Result<()> {
        let mut round = self.round.lock().expect("dir sync lock is never poisoned");
        // Any fsync numbered above `started` starts after this point, i.e. after the rename.
        let need = round.started.saturating_add(1);
        loop {
            if round.finished >= need {
                return if round.last_ok >= need {
                    Ok(())
                } else {
                    Err(io::Error::from(round.last_error.unwrap_or(Errno::EIO)))
                };
            }
            if round.started == round.finished {
                // None running: this writer starts the one it needs (number `need`).
                round.started = need;
                drop(round);
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                let result = fsync();
                round = self.round.lock().expect("dir sync lock is never poisoned");
                round.finished = need;
                match result {
                    Ok(()) => round.last_ok = need,
                    Err(e) => round.last_error = Some(e),
                }
                if round.waiters > 0 {
                    self.finished.notify_all();
                }
            } else {
                round.waiters += 1;
                round = self
                    .finished
                    .wait(round)
                    .expect("dir sync lock is never poisoned");
                round.waiters -= 1;
            }
        }
    }

    /// How many directory fsyncs this directory has had in this process.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

/// The [`DirSync`] of the directory with device `dev` and inode `ino`, shared by every
/// descriptor of it that is open in this process.
pub fn for_dir(dev: u64, ino: u64) -> Arc<DirSync> {
    static REGISTRY: Mutex<BTreeMap<(u64, u64), Weak<DirSync>>> = Mutex::new(BTreeMap::new());
    let mut map = REGISTRY
        .lock()
        .expect("dir sync registry lock is never poisoned");
    if let Some(sync) = map.get(&(dev, ino)).and_then(Weak::upgrade) {
        return sync;
    }
    // Entries of directories no longer open go here, so the map holds only live ones.
    map.retain(|_, sync| sync.strong_count() > 0);
    let sync = Arc::new(DirSync::default());
    map.insert((dev, ino), Arc::downgrade(&sync));
    sync
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Duration;

    /// A clock of events: every rename, fsync start and fsync end takes the next number.
    #[derive(Default)]
    struct Log {
        clock: AtomicU64,
        /// (start, end) of every fsync.
        fsyncs: Mutex<Vec<(u64, u64)>>,
    }

    impl Log {
        fn tick(&self) -> u64 {
            self.clock.fetch_add(1, Ordering::SeqCst) + 1
        }
    }

    /// Runs `writers` threads that "rename" (take a tick) and then wait on one
    /// [`DirSync`] whose fsync takes `fsync_time`. Returns the log and, per writer, its
    /// (rename, return) ticks.
    fn run(writers: usize, fsync_time: Duration) -> (Arc<DirSync>, Arc<Log>, Vec<(u64, u64)>) {
        let sync = Arc::new(DirSync::default());
        let log = Arc::new(Log::default());
        let barrier = Arc::new(Barrier::new(writers));
        let threads: Vec<_> = (0..writers)
            .map(|_| {
                let (sync, log, barrier) = (sync.clone(), log.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let renamed = log.tick();
                    let fsync = || {
                        let start = log.tick();
                        std::thread::sleep(fsync_time);
                        let end = log.tick();
                        log.fsyncs.lock().unwrap().push((start, end));
                        Ok(())
                    };
                    sync.after_rename(&fsync).unwrap();
                    (renamed, log.tick())
                })
            })
            .collect();
        let times = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (sync, log, times)
    }

    #[test]
    fn concurrent_writers_share_directory_fsyncs() {
        // Proves group commit: 32 writers in one directory need far fewer than 32 fsyncs.
        let (sync, log, _) = run(32, Duration::from_millis(20));
        let count = log.fsyncs.lock().unwrap().len() as u64;
        assert_eq!(sync.fsyncs(), count);
        assert!(
            count < 32 / 2,
            "expected fewer than 16 fsyncs for 32 writers, got {count}"
        );
    }

    #[test]
    fn every_writer_waits_for_an_fsync_that_started_after_its_rename() {
        // Proves durability: a writer returns only after an fsync that began after its
        // rename has ended (not one already running when it renamed).
        for _ in 0..5 {
            let (_, log, times) = run(16, Duration::from_millis(5));
            let fsyncs = log.fsyncs.lock().unwrap().clone();
            for (renamed, returned) in times {
                let covered = fsyncs
                    .iter()
                    .any(|&(start, end)| start > renamed && end < returned);
                assert!(
                    covered,
                    "writer renamed at {renamed} and returned at {returned}; fsyncs (start, end): {fsyncs:?}"
                );
            }
        }
    }

    #[test]
    fn a_lone_writer_runs_one_fsync_and_errors_reach_the_writers_they_cover() {
        // Proves the lone writer's path (one fsync, no waiting) and error reporting.
        let sync = DirSync::default();
        sync.after_rename(&|| Ok(())).unwrap();
        assert_eq!(sync.fsyncs(), 1);
        let e = sync.after_rename(&|| Err(Errno::EIO)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::EIO as i32));
        // A later success is not spoiled by the earlier failure.
        sync.after_rename(&|| Ok(())).unwrap();
        assert_eq!(sync.fsyncs(), 3);
    }

    #[test]
    fn descriptors_of_one_directory_share_its_sync() {
        // Proves the registry: same inode, same DirSync; dropped ones are forgotten.
        let a = for_dir(u64::MAX, 1);
        let b = for_dir(u64::MAX, 1);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &for_dir(u64::MAX, 2)));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none());
    }
}
