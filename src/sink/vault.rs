//! `type = "vault"` sink (placeholder until its issue lands).

use serde::Deserialize;

use super::{SinkContext, SinkError, TokenDocument, WriteOutcome};
use crate::config::error::Validator;

/// `[[account.sink]] type = "vault"` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSinkConfig {}

/// A built vault sink.
#[derive(Debug)]
pub struct VaultSink {}

impl VaultSinkConfig {
    /// Validates and builds the sink.
    pub fn build(&self, v: &mut Validator<'_>, _ctx: &SinkContext) -> Option<VaultSink> {
        v.error("type", "the vault sink is not available in this build");
        None
    }
}

impl VaultSink {
    /// A label for logs and status.
    pub fn label(&self) -> String {
        "vault:".to_string()
    }

    /// Writes the token.
    pub async fn write(&self, _doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        Err(SinkError::Permanent("not available".into()))
    }
}
