//! `tokend demo`: the real daemon against the built-in emulator of the provider APIs
//! (`crate::emulator`) on loopback, with 20-second tokens so refreshes show within a
//! minute. It writes its config, state and token files under one directory
//! (`./tokend-demo/` by default) so a new user can look at every artefact.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::emulator::{Emulator, Options, Provider};

/// Runs the demo until Ctrl-C.
pub fn run_blocking(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let emu = Emulator::start(Options::default()).context("cannot start the provider emulator")?;
    let config_path = dir.join("tokend.toml");
    let text = demo_config(&emu);
    crate::fsutil::atomic_write(
        &config_path,
        text.as_bytes(),
        crate::fsutil::FileAttrs::PRIVATE,
    )?;
    let cfg = crate::startup::load(&config_path)?;
    crate::observability::logging::init(crate::config::LogFormat::Text, "info");
    println!(
        "tokend demo: provider emulator on http://{} (tokens live 20 s, refreshed at ~75 %)",
        emu.addr()
    );
    println!("  config: {}", config_path.display());
    println!(
        "  tokens: {}/tokens/ (try: watch -n1 cat {}/tokens/zarv.token)",
        dir.display(),
        dir.display()
    );
    println!("  status: tokend -c {} status", config_path.display());
    println!("  Ctrl-C to stop\n");
    let rt = crate::startup::runtime()?;
    let code = rt.block_on(async move {
        let (tx, rx) = mpsc::channel(64);
        let signals = crate::daemon::signals::spawn_signals(tx.clone())?;
        let result = crate::daemon::run(config_path, cfg, tx, rx).await;
        signals.close();
        result
    })?;
    emu.shutdown();
    Ok(code)
}

/// The demo's config: one account per emulated provider, each with a different sink format.
pub fn demo_config(emu: &Emulator) -> String {
    let mut t = String::from(
        "# Written by `tokend demo`: one account per provider emulated on loopback.\n\
         [daemon]\nstate_dir = \"state\"\nlog_format = \"text\"\n\n\
         [daemon.refresh]\nmin_margin = \"3s\"   # 20 s demo tokens: refresh at ~75 %, not at the L/2 cap\n\n",
    );
    let file = |name: &str, format: &str| {
        format!(
            "\n[[account.sink]]\ntype = \"file\"\npath = \"tokens/{name}.token\"\nformat = \"{format}\"\n"
        )
    };
    let formats = [
        (Provider::Pontotel, "raw"),
        (Provider::Funcional, "bearer"),
        (Provider::Hubsoft, "json"),
        (Provider::Zarv, "raw"),
        (Provider::Itflex, "env"),
        (Provider::Oauth2, "json"),
    ];
    for (provider, format) in formats {
        let name = provider.name();
        let _ = write!(
            t,
            "[[account]]\nname = \"{name}\"\nprovider = \"{name}\"\n{}{}\n",
            emu.account_settings(provider),
            file(name, format)
        );
    }
    t
}
