//! tokend keeps API access tokens fresh: it reads a TOML list of provider accounts, obtains
//! each token, refreshes it before it expires and writes it atomically to files, Vault or
//! AWS Secrets Manager.
//!
//! # Layout
//! - [`config`] — TOML as written (`raw`) → validated [`config::Config`] (`validate`), secret
//!   values, located errors.
//! - [`provider`] — the one HTTP exchange engine and the presets (data).
//! - [`sink`] — file, Vault and AWS Secrets Manager sinks behind one enum.
//! - [`bounds`] — the documented ranges of every value from outside; saturating time maths.
//! - [`fsutil`] — atomic file replacement shared by the file sink and the state files;
//!   directories opened without following symlinks.
//! - [`notify_signal`] — `notify` signals: pid-file and process-owner checks, pidfd.
//! - [`http_client`] — the one builder of HTTP clients (no redirects, capped `ca_file`).
//! - [`process`] — process hardening at start: not dumpable, file descriptor limit raised.
//! - [`schedule`] — pure timing maths (refresh due time, backoff, cron).
//! - [`state`] — per-account state files (tokens, rotated refresh tokens, status).
//! - [`account`] — obtain → persist → publish → notify for one account; `account::policy`
//!   makes every refresh-timing decision (pure), `account::task` is the daemon's loop per
//!   account.
//! - [`board`] — the readiness board the account tasks write and `/readyz` reads (a leaf).
//! - [`daemon`] — `tokend run`: supervisor, reload, `daemon::signals`, `daemon::watch`,
//!   sd_notify.
//! - [`startup`] — config loading and the runtime, shared by every command.
//! - [`cli`] — the command line; [`demo`] — `tokend demo`.
//! - [`emulator`] — loopback emulator of the provider APIs (demo and tests).
//! - [`observability`] — logging.
//! - [`redact`] — the one redaction rule: secrets in every encoding, control characters.

pub mod account;
pub mod board;
pub mod bounds;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod emulator;
pub mod fsutil;
pub mod http_client;
pub mod notify_signal;
pub mod observability;
pub mod process;
pub mod provider;
pub mod redact;
pub mod schedule;
pub mod settings;
pub mod sink;
pub mod startup;
pub mod state;
