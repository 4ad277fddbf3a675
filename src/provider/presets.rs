//! The named providers as data (`presets.toml`, compiled in): each is an `http` exchange in
//! the shape of an account's `[account.login]`, `[account.refresh]` and `[account.response]`.
//! Validation merges an account's overrides over its preset, field by field.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::config::raw::{ExchangeConfig, ResponseConfig};

/// One preset as written in `presets.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Account fields the preset needs.
    #[serde(default)]
    pub requires: Vec<String>,
    /// The login exchange.
    pub login: ExchangeConfig,
    /// The refresh exchange, if the API has one.
    pub refresh: Option<ExchangeConfig>,
    /// Where results are.
    pub response: ResponseConfig,
}

/// Every provider name users may write, presets first.
pub const PROVIDERS: [&str; 7] = [
    "pontotel",
    "funcional",
    "hubsoft",
    "zarv",
    "itflex",
    "oauth2",
    "http",
];

/// The preset named `name` (`None` for `http` and unknown names).
pub fn preset(name: &str) -> Option<&'static Preset> {
    static PRESETS: OnceLock<BTreeMap<String, Preset>> = OnceLock::new();
    PRESETS
        .get_or_init(|| {
            toml::from_str(include_str!("presets.toml"))
                .expect("presets.toml is valid (unit-tested)")
        })
        .get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_provider_has_a_preset() {
        for name in PROVIDERS.iter().filter(|p| **p != "http") {
            let p = preset(name).unwrap_or_else(|| panic!("no preset {name}"));
            assert!(p.login.url.is_some(), "{name}");
            assert!(p.response.access_token.is_some(), "{name}");
        }
        assert!(preset("http").is_none());
    }
}
