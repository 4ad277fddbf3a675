//! tokend keeps API access tokens fresh: it reads a TOML list of provider accounts, obtains
//! each token, refreshes it before it expires and writes it atomically to files, Vault or
//! AWS Secrets Manager.
//!
//! # Layout
//! - [`config`] — the bottom of configuration: raw tables (`raw`), located errors and the
//!   `Validator`, secret values, trusted file reads, includes, durations and `[daemon]`
//!   (`validate`). Imports neither `provider` nor `sink`.
//! - [`provider`] — the one HTTP exchange engine, the presets (data) and their checks
//!   (`provider::validate`: preset merging, templates, oauth2).
//! - [`sink`] — file, Vault and AWS Secrets Manager sinks behind one enum; each sink's
//!   config builds (and checks) its sink.
//! - [`coordination`] — several instances sharing accounts (docs/HA.md): the store trait
//!   and its Vault KV v2 implementation (on the vault sink's client), the record, and the
//!   protocol's pure decisions (`coordination::decide`).
//! - [`settings`] — the whole config assembled above those three: `settings::load` (files,
//!   includes), `settings::account` (one account), cross-account checks, the state
//!   fingerprint and the reload diff → [`settings::Config`].
//! - [`bounds`] — the documented ranges of every value from outside; saturating time maths.
//! - [`fsutil`] — directories opened without following symlinks (`SafeDir`), atomic file
//!   replacement shared by the file sink and the state files, the stale temp-file sweep.
//! - [`notify_signal`] — `notify` signals: pid-file and process-owner checks, pidfd.
//! - [`http_client`] — the one builder of HTTP clients (no redirects, capped `ca_file`).
//! - [`process`] — process hardening at start: not dumpable, file descriptor limit raised.
//! - [`schedule`] — pure timing maths (refresh due time, backoff, cron).
//! - [`state`] — per-account state files (tokens, rotated refresh tokens, status): the
//!   store, and what a file holds (`state::types`).
//! - [`account`] — obtain → persist → publish → notify for one account; `account::policy`
//!   makes every refresh-timing decision (pure), `account::task` is the daemon's loop per
//!   account, `account::shared` the coordinated attempt (claim, adopt, commit).
//! - [`board`] — the readiness board the account tasks write and `/readyz` reads (a leaf).
//! - [`daemon`] — `tokend run`: supervisor, reload, `daemon::signals`, `daemon::watch`,
//!   sd_notify.
//! - [`startup`] — config loading and the runtime, shared by every command.
//! - [`cli`] — the command line (`cli::status` renders `tokend status`); [`demo`] —
//!   `tokend demo`.
//! - [`emulator`] — loopback emulator of the provider APIs (demo and tests); its GraphQL
//!   is parsed by `apollo-parser`.
//! - [`observability`] — logging.
//! - [`redact`] — the one redaction rule: secrets in every encoding (`forms`, found by a
//!   hash `matcher`), control characters.
//! - `fuzzing` (hidden) — one fuzz input through the daemon's handling, for `fuzz/` and its
//!   regression tests.

pub mod account;
pub mod board;
pub mod bounds;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod daemon;
pub mod demo;
pub mod emulator;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
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
