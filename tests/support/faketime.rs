//! Running the real `tokend` with its wall clock moved: libfaketime (Debian's `faketime`
//! package, installed by `scripts/install-test-deps`) preloaded into the child with a
//! fixed offset, for the clock-skew test of issue 14.
//!
//! Only the wall clock (`CLOCK_REALTIME`, `time()`, `gettimeofday`) moves: two hosts whose
//! clocks disagree still each have a monotonic clock that counts real seconds, and a claim
//! must go stale by that clock alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`). The library is
//! found in the usual multiarch places or at `$TOKEND_TEST_LIBFAKETIME`; a machine without
//! it fails the test with the command that installs it: a skew test that silently ran
//! without skew would prove nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian and others put the multi-threaded library (tokend runs Tokio's threads,
/// and the MT build locks its shared state).
const CANDIDATES: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/lib64/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
];

/// The path of libfaketime; panics with the install command when there is none.
pub fn library() -> PathBuf {
    if let Some(path) = std::env::var_os("TOKEND_TEST_LIBFAKETIME") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "TOKEND_TEST_LIBFAKETIME={} does not exist",
            path.display()
        );
        return path;
    }
    CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            panic!(
                "libfaketime is missing (looked in {CANDIDATES:?}): run scripts/install-test-deps \
                 (apt-get install -y faketime), or set TOKEND_TEST_LIBFAKETIME"
            )
        })
}

/// Makes `cmd` run with its wall clock `offset` ahead (`"+30s"`) or behind (`"-30s"`),
/// in libfaketime's syntax; the clock keeps moving at the normal rate.
pub fn skew(cmd: &mut Command, offset: &str) {
    cmd.env("LD_PRELOAD", library())
        .env("FAKETIME", offset)
        // Take the offset from the environment on every call, never from a cache.
        .env("FAKETIME_NO_CACHE", "1")
        .env("DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}
