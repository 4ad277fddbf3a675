//! The `tokend` binary: parses the command line and maps errors to exit codes
//! (0 ok, 1 runtime failure, 2 usage or configuration error).

use std::process::ExitCode;

use clap::Parser;
use tokend::cli::{self, Cli};
use tokend::config::ConfigErrors;
use tokend::startup::UsageError;

fn main() -> ExitCode {
    // Before the runtime's threads exist and before any secret is read (docs/SECURITY.md).
    for warning in tokend::process::harden_process() {
        eprintln!("tokend: warning: {warning}");
    }
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `tokend status | head` closing the pipe early is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            if let Some(errors) = e.downcast_ref::<ConfigErrors>() {
                eprintln!("tokend: {}:", e);
                for err in &errors.0 {
                    eprintln!("{err}");
                }
                return ExitCode::from(2);
            }
            eprintln!("tokend: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
