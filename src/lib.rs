//! tokend keeps API access tokens fresh: it reads a TOML list of provider accounts, obtains
//! each token, refreshes it before it expires and writes it atomically to files, Vault or
//! AWS Secrets Manager.
//!
//! # Layout
//! - [`config`] — TOML as written (`raw`) → validated [`config::Config`] (`validate`), secret
//!   values, located errors.
//! - [`provider`] — the one HTTP exchange engine and the presets (data).
//! - [`sink`] — file, Vault and AWS Secrets Manager sinks behind one enum.
//! - [`fsutil`] — atomic file replacement shared by the file sink and the state files.
//! - [`schedule`] — pure timing maths (refresh due time, backoff, cron).
//! - [`state`] — per-account state files (tokens, rotated refresh tokens, status).
//! - [`account`] — obtain → persist → publish → notify for one account.
//! - [`daemon`] — `tokend run`: supervisor, account tasks, reload, signals, sd_notify.
//! - [`cli`] — the command line; [`demo`] — `tokend demo`.
//! - [`emulator`] — loopback emulator of the provider APIs (demo and tests).
//! - [`observability`] — logging.
//! - `fuzzing` (hidden) — one fuzz input through the daemon's handling, for `fuzz/` and its
//!   regression tests.

pub mod account;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod emulator;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod observability;
pub mod provider;
pub mod schedule;
pub mod sink;
pub mod state;
