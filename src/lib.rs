//! tokend keeps API access tokens fresh: it reads a TOML list of provider accounts, obtains
//! each token, refreshes it before it expires and writes it atomically to files, Vault or
//! AWS Secrets Manager.

pub mod config;
pub mod emulator;
pub mod fsutil;
pub mod sink;
