//! Configuration: TOML as written (`raw`) → validated [`Config`] (`validate`).

pub mod error;
pub mod secret;
