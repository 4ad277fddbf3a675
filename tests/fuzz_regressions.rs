//! Every input the fuzzers ever crashed on (`fuzz/regressions/<target>/`, minimised) and
//! every seed (`fuzz/corpus/<target>/`) replayed through the same `tokend::fuzzing`
//! function the cargo-fuzz target calls, under `cargo test` (stable, no cargo-fuzz): a
//! fixed crash stays fixed. docs/FUZZING.md says how a crash becomes a file here.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, sorted (none if the directory does not exist).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `run` on every regression and seed of `target`; fails listing each input that
/// panicked with its panic message.
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = inputs("corpus", target);
    assert!(!seeds.is_empty(), "no seeds in fuzz/corpus/{target}");
    let mut failures = Vec::new();
    for file in inputs("regressions", target).into_iter().chain(seeds) {
        let data = std::fs::read(&file).unwrap();
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into());
            let name = file.strip_prefix(root).unwrap_or(&file);
            failures.push(format!("{}: {message}", name.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} input(s) of fuzz target {target} panic:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Provider answers: extraction, expiry, formatting, refresh planning and backoff.
#[test]
fn response_fuzz_inputs_do_not_panic() {
    replay("response", tokend::fuzzing::run_response);
}

/// Config files: load, located errors and, when one loads, its timing and retry.
#[test]
fn config_fuzz_inputs_do_not_panic() {
    replay("config", tokend::fuzzing::run_config);
}

/// State files: peek, load and what a restart and `status` do with them.
#[test]
fn state_fuzz_inputs_do_not_panic() {
    replay("state", tokend::fuzzing::run_state);
}
