//! The command line (SPEC §2): clap types and one function per command. Errors carry
//! context for humans; `main` maps them to exit codes (0 ok, 1 runtime failure, 2 usage or
//! configuration error).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use crate::account::policy::{self, Action, Event, Reason, Samples};
use crate::account::shared::Outcome;
use crate::account::{self, Services};
use crate::config;
use crate::settings;
use crate::sink::rfc3339;
use crate::startup::{UsageError, load, load_structure, runtime};

mod status;

pub use status::STATUS_NOT_RUNNING;
use status::status;

/// Keeps API access tokens fresh: obtains each account's token, refreshes it before it
/// expires and writes it atomically to files, Vault or AWS Secrets Manager.
#[derive(Debug, Parser)]
#[command(name = "tokend", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $TOKEND_CONFIG, else /etc/tokend/tokend.toml].
    #[arg(short, long, global = true, env = "TOKEND_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd Type=notify).
    Run,
    /// Parse and validate the config and print each account; no network. Exit 2 if invalid.
    Check,
    /// Make sure every (or each named) account has a valid token, write all sinks, exit.
    Once {
        /// Only this account (repeatable).
        #[arg(long = "account", value_name = "NAME")]
        accounts: Vec<String>,
    },
    /// Show each account's token expiry, next refresh, last success and error, and sinks.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the current valid access token of an account (exit 1 if none).
    Token {
        /// The account.
        name: String,
    },
    /// Run the daemon against a built-in emulator of the provider APIs, writing into
    /// ./tokend-demo/ (Ctrl-C to stop).
    Demo {
        /// Where to write the demo config, state and token files.
        #[arg(long, default_value = "tokend-demo")]
        dir: PathBuf,
    },
    /// Write the man page (DIR/tokend.1) and bash, zsh and fish completions
    /// (DIR/completions/) for packaging; see packaging/build-deb.
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    match cli.command {
        Command::Check => check(&path),
        Command::Once { accounts } => once(&path, &accounts),
        Command::Status { json } => status(&path, json),
        Command::Token { name } => token(&path, &name),
        Command::Run => crate::daemon::run_blocking(&path),
        Command::Demo { dir } => crate::demo::run_blocking(&dir),
        Command::GenerateAssets { dir } => generate_assets(&dir),
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let mut out = std::io::stdout().lock();
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    writeln!(
        out,
        "{}: ok, {} account(s), state in {}",
        cfg.path.display(),
        cfg.accounts.len(),
        cfg.daemon.state_dir.display()
    )?;
    if let Some(c) = &cfg.coordination {
        writeln!(
            out,
            "coordination: shared with other instances through {} as {:?}; a claim stands {} (docs/HA.md)",
            c.store.describe(),
            c.instance,
            humantime::format_duration(c.claim_ttl)
        )?;
    }
    for a in &cfg.accounts {
        let t = &a.timing;
        writeln!(out, "account {:?}: provider {}", a.name, a.provider.name)?;
        writeln!(
            out,
            "  refresh: at {:.0}% ± {:.0}% of the lifetime, at the latest {} before expiry{}; {}",
            t.ratio * 100.0,
            t.jitter * 100.0,
            humantime::format_duration(t.min_margin),
            a.schedule
                .as_ref()
                .map(|s| format!(", and on cron {:?} (UTC)", s.text))
                .unwrap_or_default(),
            // What the daemon really does (its first call is always a login).
            match (a.provider.can_refresh(), a.provider.rotates()) {
                (true, true) => {
                    "log in, then refresh with the rotating refresh token each answer brings (log in again when it is rejected)"
                }
                (true, false) => {
                    "log in, then refresh with the refresh token it returns (log in again when it is rejected)"
                }
                (false, _) => "log in again each time",
            }
        )?;
        if a.sinks.is_empty() {
            writeln!(
                out,
                "  sinks: none (state only; read it with `tokend token {}`)",
                a.name
            )?;
        }
        for s in &a.sinks {
            writeln!(out, "  sink: {}", s.label())?;
        }
        for n in &a.notify {
            match n {
                config::Notify::Command { argv, .. } => writeln!(out, "  notify: run {argv:?}")?,
                config::Notify::Signal { signal, pid_file } => writeln!(
                    out,
                    "  notify: {signal} to the pid in {}",
                    pid_file.display()
                )?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn once(path: &std::path::Path, names: &[String]) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    crate::observability::logging::init(cfg.daemon.log_format, &cfg.daemon.log_level);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    for n in names {
        if !cfg.accounts.iter().any(|a| &a.name == n) {
            return Err(UsageError(format!("no account named {n:?} in {}", path.display())).into());
        }
    }
    let mut svc = Services::new(&cfg.daemon.state_dir, cfg.daemon.max_concurrent_requests);
    svc.coordination = cfg.coordination.clone();
    svc.store.set_durability(cfg.daemon.durability);
    let _lock = svc.store.lock("once").map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            anyhow::anyhow!("{e}; to refresh a running daemon's accounts now, send it SIGUSR1")
        } else {
            anyhow::anyhow!("{e}")
        }
    })?;
    let selected: Vec<&settings::Account> = cfg
        .accounts
        .iter()
        .filter(|a| names.is_empty() || names.contains(&a.name))
        .collect();
    let rt = runtime()?;
    let results = rt.block_on(futures_util::future::join_all(
        selected.iter().map(|a| once_account(a, &svc)),
    ));
    let failed: Vec<&str> = selected
        .iter()
        .zip(&results)
        .filter(|(_, ok)| !**ok)
        .map(|(a, _)| a.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("tokend: failed: {}", failed.join(", "));
        Ok(ExitCode::from(1))
    }
}

/// One account for `once`: reuse a fresh token or obtain one (retrying a transient failure
/// while the policy's wait is short, `policy::once_retry`), then write every sink. True
/// when the account ends with a valid token in every sink.
async fn once_account(account: &settings::Account, svc: &Services) -> bool {
    let name = &account.name;
    let mut state = account::load_state(account, &svc.store);
    let facts = account::facts(&state, SystemTime::now(), None);
    let start = policy::decide(
        &facts,
        Event::Start,
        &account.timing,
        &account.retry,
        Samples::random(),
    );
    match (start.action, start.reason) {
        (Action::Wait, Reason::RefreshAhead) => {
            tracing::info!(account = %name, "saved token is still fresh; reusing it");
        }
        (Action::Wait, reason) => {
            // A rejected-credentials wait holds for `once` too: a provider that locks
            // accounts after a few failed logins must not see one per invocation.
            tracing::error!(account = %name, next_attempt = %rfc3339(start.next), why = %reason.as_str(), last_error = state.last_error.as_deref().unwrap_or(""), "not asking the provider again yet; change the credentials to retry at once");
        }
        (Action::Request, _) => {
            let mut attempts = 0;
            let mut watch = account::shared::Watch::default();
            let mut busy_since: Option<std::time::Instant> = None;
            loop {
                let outcome = match &svc.coordination {
                    Some(coord) => {
                        account::shared::attempt(account, &mut state, svc, coord, &mut watch, true)
                            .await
                    }
                    None => None,
                };
                let attempt = match outcome {
                    Some(Outcome::Provider(a) | Outcome::StoreDown(a)) => a,
                    Some(Outcome::Adopted(_)) => break,
                    Some(Outcome::Busy(d)) => {
                        // Another instance is refreshing: wait for its commit, or for its
                        // claim to go stale, and no longer.
                        let since = *busy_since.get_or_insert_with(std::time::Instant::now);
                        let limit = svc
                            .coordination
                            .as_ref()
                            .map_or(Duration::ZERO, |c| c.claim_ttl.saturating_mul(2));
                        if since.elapsed() > limit {
                            tracing::error!(account = %name, "another instance still holds the refresh claim; giving up");
                            break;
                        }
                        tokio::time::sleep(d.wait(SystemTime::now())).await;
                        continue;
                    }
                    None => account::obtain(account, &mut state, svc).await,
                };
                attempts += 1;
                match &attempt.result {
                    Ok(o) => {
                        tracing::info!(account = %name, via = %o.via.as_str(), expires_at = %rfc3339(o.expires_at), expiry_from = %o.expiry_source, "token obtained");
                        break;
                    }
                    Err(e) => {
                        let now = SystemTime::now();
                        match policy::once_retry(&attempt.decision, now, attempts) {
                            Some(wait) => {
                                tracing::warn!(account = %name, error = %e, retry_in = %policy::wait_text(wait), why = %attempt.decision.reason.as_str(), "attempt failed");
                                tokio::time::sleep(wait).await;
                            }
                            None => {
                                tracing::error!(account = %name, kind = %e.kind(), error = %e, "cannot obtain a token");
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    let Some(doc) = account::document(account, &state).filter(|d| d.expires_at > SystemTime::now())
    else {
        tracing::error!(account = %name, "no valid token");
        return false;
    };
    let all: Vec<usize> = (0..account.sinks.len()).collect();
    let results = account::publish(account, &doc, &mut state, &all).await;
    if let Err(e) = svc.store.save_sinks(&account.name, &state.sinks) {
        tracing::warn!(account = %account.name, error = %e, "cannot save the sink status");
    }
    let ok = results.iter().all(|r| r.result.is_ok());
    if ok && !results.is_empty() {
        account::notify(account, &doc).await;
    }
    ok
}

fn token(path: &std::path::Path, name: &str) -> anyhow::Result<ExitCode> {
    // The structure only, like `status`: the token comes from the state, not a provider.
    let cfg = load_structure(path)?;
    let Some(a) = cfg.accounts.iter().find(|a| a.name == name) else {
        return Err(UsageError(format!("no account named {name:?} in {}", path.display())).into());
    };
    let store = crate::state::StateStore::new(&cfg.daemon.state_dir);
    let state = store.peek(name)?.filter(|s| s.provider == a.provider.name);
    match state
        .as_ref()
        .and_then(|s| account::token_text(s, SystemTime::now()))
    {
        Some(token) => {
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "tokend: account {name:?} holds no valid token (run `tokend once --account {name}` or start the daemon)"
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The man page text clap cannot derive: what the daemon does, and what an operator
/// looks for (exit codes, signals, environment, files).
const MAN_DESCRIPTION: &str = r#".SH DESCRIPTION
\fBtokend\fR reads a TOML list of provider accounts, obtains a token for each, refreshes
it before it expires and writes it atomically to its sinks (files, HashiCorp Vault KV v2,
AWS Secrets Manager). It runs as a systemd \fBType=notify\fR service
(\fBtokend.service\fR) and reloads its configuration when the file changes.
"#;

/// See [`MAN_DESCRIPTION`]; rendered after the commands.
const MAN_OPERATOR: &str = r#".SH "EXIT STATUS"
0 on success (and on SIGTERM or SIGINT for \fBrun\fR), 1 on a runtime failure (\fBonce\fR: any
account failed; \fBtoken\fR: no valid token), 2 on a usage or configuration error.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reload the configuration; an invalid one is reported and the old one keeps running.
.TP
\fBSIGUSR1\fR
Refresh every account now.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop after in-flight writes finish; a second one exits at once.
.SH ENVIRONMENT
.TP
\fBTOKEND_CONFIG\fR
Config file when \fB\-c\fR is not given.
.TP
\fBSTATE_DIRECTORY\fR, \fBCREDENTIALS_DIRECTORY\fR
Set by systemd: the default state dir, and where \fB{ credential = "name" }\fR secrets are read.
.TP
\fBRUST_LOG\fR
Overrides \fBlog_level\fR.
.SH FILES
.TP
\fI/etc/tokend/tokend.toml\fR
The configuration (root:tokend 0640 in the packages).
.TP
\fI/var/lib/tokend/\fR
State: one \fIACCOUNT\fR.json per account (tokens and expiries, 0600).
.TP
\fI/run/tokend/\fR
Token files of the shipped example configuration.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBsystemd.exec\fR(5), \fI/usr/share/doc/tokend/examples/\fR
"#;

/// Escapes text for roff: backslashes, hyphens (so options copy-paste as ASCII) and a
/// leading control character.
fn roff_escape(text: &str) -> String {
    let s = text.replace('\\', "\\\\").replace('-', "\\-");
    if s.starts_with(['.', '\'']) {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The command line as users see it: [`Cli`] without its hidden commands, so the man page
/// and the completions never offer `generate-assets` (clap_complete ignores `hide`).
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("tokend")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd.build();
    cmd
}

/// `tokend generate-assets DIR` (hidden): writes the man page and the bash, zsh and fish
/// completions from the clap definition, so they never drift from the binary. Called by
/// `packaging/build-deb` before `cargo deb`, which cannot run code.
fn generate_assets(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    let cmd = visible_command();

    // One page: clap's synopsis and options, then each command with its usage and
    // arguments (clap_mangen's own section would list only their names).
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    page.write_all(MAN_DESCRIPTION.as_bytes())?;
    man.render_options_section(&mut page)?;
    writeln!(page, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let usage = sub.clone().render_usage().to_string();
        let about = sub.get_long_about().or(sub.get_about());
        writeln!(
            page,
            ".TP\n\\fB{}\\fR",
            roff_escape(usage.trim_start_matches("Usage: "))
        )?;
        writeln!(
            page,
            "{}",
            roff_escape(&about.map(|a| a.to_string()).unwrap_or_default())
        )?;
        let own_args = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_id() != "help");
        for arg in own_args {
            let value = match arg.get_value_names() {
                Some(names) if arg.get_action().takes_values() => names.join(" "),
                _ => String::new(),
            };
            let name = match arg.get_long() {
                Some(long) => format!("--{long} {value}"),
                None => value,
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let (name, help) = (roff_escape(name.trim()), roff_escape(&help));
            writeln!(page, ".br\n\\ \\ \\fB{name}\\fR: {help}")?;
        }
    }
    page.write_all(MAN_OPERATOR.as_bytes())?;
    man.render_version_section(&mut page)?;
    let man_path = dir.join("tokend.1");
    std::fs::write(&man_path, page)
        .with_context(|| format!("cannot write {}", man_path.display()))?;

    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "tokend.bash"),
        (Shell::Zsh, "_tokend"),
        (Shell::Fish, "tokend.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "tokend", &mut script);
        let path = completions.join(file);
        std::fs::write(&path, script)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "wrote {} and {}/{{tokend.bash,_tokend,tokend.fish}}",
        man_path.display(),
        completions.display()
    );
    Ok(ExitCode::SUCCESS)
}
