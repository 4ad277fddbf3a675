//! Process-wide hardening applied once at start, before the Tokio runtime and before any
//! secret is resolved (issue 12 findings 6 and 7). `main` calls [`harden_process`] for
//! every command: all of them but `status` may resolve secrets, and none needs to be
//! dumpable.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Makes the process non-dumpable and raises its soft file-descriptor limit to the hard
/// limit. Failures are returned as warnings for the caller to log once logging is set up;
/// neither is a reason not to start.
///
/// - **Not dumpable** (`prctl(PR_SET_DUMPABLE, 0)`): no core dump is written (it would hold
///   every secret and token), and another process of the same uid can no longer attach
///   with ptrace or read `/proc/<pid>/mem` or `/proc/<pid>/environ` (where `{ env = … }`
///   secrets live): the kernel makes those files root's and refuses access without
///   `CAP_SYS_PTRACE`. The attribute is reset on `execve`, so `notify` commands are not
///   affected. Assumes root is trusted: root can still read everything.
/// - **`RLIMIT_NOFILE` soft = hard**: the soft limit is often 1024 while the hard one is far
///   higher (systemd's default is 1024:524288), and each account, sink connection and
///   metrics connection costs descriptors. Together with the metrics listener's connection
///   cap ([`crate::observability::http`]) this keeps state saves from failing with EMFILE.
pub fn harden_process() -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        warnings.push(format!("cannot make the process non-dumpable: {e}"));
    }
    if let Err(e) = raise_fd_limit() {
        warnings.push(format!("cannot raise the open file limit: {e}"));
    }
    warnings
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}
