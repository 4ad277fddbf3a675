//! Shared code of the benchmarks (`bench/fleet.rs`) and the fault harness
//! (`bench/faults.rs`), documented in `docs/BENCHMARKS.md`. Both run the real release
//! `tokend run` (Cargo builds it for `cargo bench` and passes its path as
//! `CARGO_BIN_EXE_tokend`) against the in-process loopback emulator, through a [`tap`]
//! that tells which account sent each request.
//!
//! Layout: `machine` (what the machine is, how busy), `process` (the tokend child and what
//! `/proc` says of it), `notify` (a test `NOTIFY_SOCKET`), `tap` (the recording proxy),
//! `fleet_config` (configs of N accounts), `memory` (RSS alone, `--only-rss`), `baseline`
//! (curl|jq and the Python loops), `report` (percentiles and tables), `tmpfs` (token files
//! on tmpfs), `counted` (instruction and system-call counts per refresh under valgrind and
//! strace).

#![allow(dead_code)]

pub mod baseline;
pub mod counted;
pub mod fleet_config;
pub mod machine;
pub mod memory;
pub mod notify;
pub mod process;
pub mod report;
pub mod tap;
pub mod tmpfs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A scratch directory for one benchmark under Cargo's target tmp dir, emptied first.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("tokend-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Polls `condition` every `every` until it holds or `timeout` passes; returns whether it
/// held. Every wait in the benchmarks is bounded.
pub fn wait_until(timeout: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Writes `text` to `path` atomically (temporary file and rename), as an editor or a
/// config-management tool would.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write temporary config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}

/// Parses `--name value` from the command line (Cargo passes `--bench` too; ignored).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}
