//! `type = "aws_secrets_manager"` sink (placeholder until its issue lands).

use serde::Deserialize;

use super::{SinkContext, SinkError, TokenDocument, WriteOutcome};
use crate::config::error::Validator;

/// `[[account.sink]] type = "aws_secrets_manager"` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSecretsManagerSinkConfig {}

/// A built aws_secrets_manager sink.
#[derive(Debug)]
pub struct AwsSecretsManagerSink {}

impl AwsSecretsManagerSinkConfig {
    /// Validates and builds the sink.
    pub fn build(
        &self,
        v: &mut Validator<'_>,
        _ctx: &SinkContext,
    ) -> Option<AwsSecretsManagerSink> {
        v.error(
            "type",
            "the aws_secrets_manager sink is not available in this build",
        );
        None
    }
}

impl AwsSecretsManagerSink {
    /// A label for logs and status.
    pub fn label(&self) -> String {
        "aws:".to_string()
    }

    /// Writes the token.
    pub async fn write(&self, _doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        Err(SinkError::Permanent("not available".into()))
    }
}
