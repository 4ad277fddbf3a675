//! `type = "aws_secrets_manager"`: the token as an AWS Secrets Manager secret value
//! (SPEC §3 `[[account.sink]]`, "Sink formats"; §4 "Sinks are independent"). The account task
//! calls [`AwsSecretsManagerSink::write`] (through [`super::Sink::write`]) after every new
//! token; `tokend check` calls [`AwsSecretsManagerSinkConfig::build`], which only validates.
//!
//! # Credentials and region
//!
//! The standard AWS chain of `aws-config` (environment, shared profile, web identity, ECS,
//! IMDS), with the sink's `region` and `profile` overriding it. `role_arn` wraps the chain's
//! credentials in an STS `AssumeRole` provider (session `tokend-<account>`); STS is reached at
//! its standard endpoint, `endpoint_url` only redirects Secrets Manager. Loading is async and
//! may touch the network (IMDS), so it happens on the first write, once, never in `build`.
//! [`AwsSecretsManagerSink::with_sdk_config`] replaces the chain with a given
//! [`SdkConfig`], which is how the tests inject static credentials without touching the
//! process environment.
//!
//! # One write
//!
//! 1. `GetSecretValue` (AWSCURRENT): its version id and value. A missing secret or value is
//!    "nothing stored".
//! 2. Decide with the sinks' one publish-order rule, [`crate::sink::decide_publish`] (see
//!    [`super`], "Publishing in generation order"): skip with [`WriteOutcome::Unchanged`]
//!    when AWSCURRENT holds this token; skip with [`WriteOutcome::KeptNewer`] when it holds
//!    an unexpired token of a higher generation; otherwise write. The stored generation and
//!    expiry come from the `json` document's `generation` and `expires_at` fields, and for
//!    `format = "raw"` (nothing but the token is stored) from the version id ("Version
//!    ids"). A value with neither is generation 0.
//! 3. `PutSecretValue` with our `ClientRequestToken` and `VersionStages = ["tokend-pending"]`:
//!    the new version exists but AWSCURRENT has not moved. (Not `AWSPENDING`, which belongs
//!    to Secrets Manager rotation.)
//! 4. `UpdateSecretVersionStage` moves AWSCURRENT to the new version with
//!    `RemoveFromVersionId` = the version read in step 1. If another writer moved AWSCURRENT
//!    in between, AWS refuses (`InvalidParameterException`; moto enforces this too), and the
//!    sink goes back to step 1 and decides again, at most [`crate::sink::MAX_CAS_ATTEMPTS`]
//!    times; a refusal while AWSCURRENT did not move is a permanent error. A write that loses
//!    leaves its version behind as `tokend-pending` only, which no default reader sees, and
//!    the next staged version takes the label over.
//! 5. On `ResourceNotFoundException` in step 3: with `create = true`, `CreateSecret` (with
//!    `kms_key_id`, `description`, `tags`; these apply only at creation and are never changed
//!    afterwards), which makes our version AWSCURRENT; if that races into
//!    `ResourceExistsException`, back to step 1. With `create = false`, a permanent error that
//!    names the secret and the `create = true` option.
//!
//! # Version ids
//!
//! Secrets Manager uses the `ClientRequestToken` as the new version's id. [`client_request_token`]
//! makes it `g<generation>-e<expiry>-<hash>` (20 and 12 digits, 24 hex; 61 characters), the
//! hash over the account, the format and the token. It is how a `raw` value carries its
//! generation and expiry ([`parse_version_id`] reads them back), and it makes writes
//! idempotent: a repeated request token with the same value returns the existing version
//! instead of adding one, so every retry of one token's write, by the SDK after a lost
//! response or by the sink's backoff, lands on the same version; a token is stored at most
//! once per secret. The version id is visible to principals that may only describe the
//! secret: a generation and an expiry are no secrets, and a truncated hash of a high-entropy
//! access token tells them nothing usable. The `json` value's `expires_in` depends on the
//! write time, so a later retry of the same token can carry a different value; Secrets
//! Manager then answers `ResourceExistsException`, which means "this token's version
//! exists", and step 4 moves AWSCURRENT to it instead of failing.
//!
//! # Why unchanged writes are skipped
//!
//! Each stored value is a new secret version and a billed API call. Secrets Manager keeps the
//! 100 most recent versions but also every version created in the last 24 hours, so its
//! `PutSecretValue` reference asks for no more than one write per secret every 10 minutes
//! (144 a day); faster writers run into the versions quota. A restart that reuses a
//! still-fresh token and a reload that only changed sinks write the same token again; the
//! read in step 1 (one call, no new version) turns those into no-ops. Tokens that
//! live less than about 10 minutes still cause one version per refresh: the sink logs a
//! warning (once) when the version it replaces is younger than that, and
//! `LimitExceededException` is transient because the quota frees up as versions age out.
//!
//! # Timeouts and retries
//!
//! `timeout` bounds each HTTP attempt. Within one write the SDK's standard retry (3 attempts
//! for throttling, 5xx and connection errors) applies, which the request token makes safe;
//! across writes the account task's sink backoff retries (SPEC §4).
//!
//! # Errors
//!
//! Classified by the SDK error kind and the AWS error code, never by HTTP status (moto says 404
//! where AWS says 400 for a missing secret) or message text: throttling, `InternalServiceError`,
//! timeouts, connection and dispatch failures and credential providers that failed or timed out
//! are [`SinkError::Transient`]; access denied, KMS failures, invalid parameters or requests,
//! rejected credentials, no credentials or region at all, and a missing secret with
//! `create = false` are [`SinkError::Permanent`]. Only a response that carries no error code
//! at all falls back to its status (5xx and 429 transient). Messages start with the label
//! (`aws:<secret_id>`), name the API call, and never contain the token or AWS keys.
//!
//! IAM permissions needed: `secretsmanager:GetSecretValue`, `PutSecretValue`,
//! `UpdateSecretVersionStage`; with `create = true` also `CreateSecret` (and `TagResource`
//! with `tags`); with a customer KMS key, `kms:Decrypt` and `kms:GenerateDataKey` on it.
//!
//! [`WriteOutcome::Unchanged`]: super::WriteOutcome::Unchanged
//! [`WriteOutcome::KeptNewer`]: super::WriteOutcome::KeptNewer
//! [`SinkError::Transient`]: super::SinkError::Transient
//! [`SinkError::Permanent`]: super::SinkError::Permanent

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::SinkContext;
use crate::config::error::Validator;

/// The staging label of the value readers get by default.
const AWSCURRENT: &str = "AWSCURRENT";
/// The staging label of a version put but not yet made current (module doc, "One write").
const PENDING: &str = "tokend-pending";
/// Per-request timeout when `timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout` accepted: beyond it a hung request would stall the account's sinks.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// AWS asks for at most one `PutSecretValue` per secret every 10 minutes.
const ADVISED_WRITE_INTERVAL: Duration = Duration::from_secs(600);

/// `[[account.sink]] type = "aws_secrets_manager"` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSecretsManagerSinkConfig {
    /// The secret's name or ARN (a name when `create = true`).
    pub secret_id: String,
    /// AWS region; default from the standard chain (`AWS_REGION`, profile, IMDS).
    #[serde(default)]
    pub region: Option<String>,
    /// Shared-config profile to load credentials and settings from.
    #[serde(default)]
    pub profile: Option<String>,
    /// Secrets Manager endpoint override (VPC endpoint, moto, LocalStack).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// A role to assume through STS with the chain's credentials.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Create the secret when it does not exist (default false).
    #[serde(default)]
    pub create: bool,
    /// `json` (default): the SPEC §3 document; `raw`: the token alone, no newline.
    #[serde(default)]
    pub format: Option<String>,
    /// KMS key for a secret this sink creates.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Description for a secret this sink creates.
    #[serde(default)]
    pub description: Option<String>,
    /// Tags for a secret this sink creates.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// Per-request timeout, a human duration such as `"10s"` (default 10 s).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// What the secret value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The `json` document of SPEC §3 "Sink formats".
    Json,
    /// The access token alone, without a trailing newline.
    Raw,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Raw => "raw",
        }
    }
}

/// Settings used only by `CreateSecret`.
#[derive(Debug, Clone, PartialEq)]
struct CreateOptions {
    kms_key_id: Option<String>,
    description: Option<String>,
    tags: BTreeMap<String, String>,
}

/// How the SDK client is made (used once, on the first write).
struct ClientSettings {
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    role_arn: Option<String>,
    timeout: Duration,
    /// Replaces the standard chain when set ([`AwsSecretsManagerSink::with_sdk_config`]).
    sdk_config: Option<SdkConfig>,
}

/// A built aws_secrets_manager sink. The SDK client is created on the first write.
pub struct AwsSecretsManagerSink {
    account: String,
    secret_id: String,
    format: Format,
    /// `Some` when `create = true`.
    create: Option<Box<CreateOptions>>,
    /// Boxed, like `create`: an `SdkConfig` alone is several hundred bytes, and every
    /// [`super::Sink`] would pay for it.
    client_settings: Box<ClientSettings>,
    client: OnceCell<Client>,
    /// Whether the "writes faster than AWS advises" warning was logged already.
    warned_rate: AtomicBool,
}

impl std::fmt::Debug for AwsSecretsManagerSink {
    // By hand: the SDK config and client hold the credentials provider, whose Debug shows
    // the access key id. Only settings are printed here.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSecretsManagerSink")
            .field("account", &self.account)
            .field("secret_id", &self.secret_id)
            .field("region", &self.client_settings.region)
            .field("profile", &self.client_settings.profile)
            .field("endpoint_url", &self.client_settings.endpoint_url)
            .field("role_arn", &self.client_settings.role_arn)
            .field("format", &self.format)
            .field("create", &self.create)
            .field("timeout", &self.client_settings.timeout)
            .field(
                "credentials",
                &if self.client_settings.sdk_config.is_some() {
                    "injected"
                } else {
                    "standard chain"
                },
            )
            .field("client_loaded", &self.client.initialized())
            .finish()
    }
}

impl AwsSecretsManagerSinkConfig {
    /// Validates and builds the sink: pure, no network, no credential look-up.
    pub fn build(&self, v: &mut Validator<'_>, ctx: &SinkContext) -> Option<AwsSecretsManagerSink> {
        let mut ok = true;
        let mut fail = |v: &mut Validator<'_>, field: &str, message: String| {
            v.error(field, message);
            ok = false;
        };

        if let Err(message) = check_secret_id(&self.secret_id, self.create) {
            fail(v, "secret_id", message);
        }
        if let Some(region) = &self.region
            && (region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            fail(
                v,
                "region",
                format!("{region:?} is not an AWS region name, e.g. \"sa-east-1\""),
            );
        }
        if self.profile.as_deref() == Some("") {
            fail(v, "profile", "must not be empty".into());
        }
        if let Some(url) = &self.endpoint_url
            && let Err(message) = check_endpoint_url(url)
        {
            fail(v, "endpoint_url", message);
        }
        if let Some(arn) = &self.role_arn
            && !is_role_arn(arn)
        {
            fail(
                v,
                "role_arn",
                format!(
                    "{arn:?} is not an IAM role ARN, e.g. \"arn:aws:iam::123456789012:role/tokend\""
                ),
            );
        }
        let format = match self.format.as_deref().unwrap_or("json") {
            "json" => Format::Json,
            "raw" => Format::Raw,
            other => {
                fail(
                    v,
                    "format",
                    format!("{other:?} is not a format for this sink: expected json or raw"),
                );
                Format::Json
            }
        };
        // Creation settings on a sink that never creates would silently do nothing.
        for (field, set) in [
            ("kms_key_id", self.kms_key_id.is_some()),
            ("description", self.description.is_some()),
            ("tags", self.tags.is_some()),
        ] {
            if set && !self.create {
                fail(
                    v,
                    field,
                    "only used when the sink creates the secret: set create = true".into(),
                );
            }
        }
        if self.kms_key_id.as_deref() == Some("") {
            fail(v, "kms_key_id", "must not be empty".into());
        }
        if let Some(d) = &self.description
            && d.chars().count() > 2048
        {
            fail(
                v,
                "description",
                "is longer than the 2048 characters AWS allows".into(),
            );
        }
        if let Some(tags) = &self.tags
            && let Err(message) = check_tags(tags)
        {
            fail(v, "tags", message);
        }
        let timeout = match &self.timeout {
            None => DEFAULT_TIMEOUT,
            // The shared 1 s lower bound of every timeout; AWS's own cap of 5 min.
            Some(text) => {
                match crate::config::validate::bounded_duration(
                    text,
                    (crate::bounds::TIMEOUT_RANGE.0, MAX_TIMEOUT),
                ) {
                    Ok(d) => d,
                    Err(message) => {
                        fail(v, "timeout", message);
                        DEFAULT_TIMEOUT
                    }
                }
            }
        };
        if !ok {
            return None;
        }
        Some(AwsSecretsManagerSink {
            account: ctx.account.clone(),
            secret_id: self.secret_id.clone(),
            format,
            create: self.create.then(|| {
                Box::new(CreateOptions {
                    kms_key_id: self.kms_key_id.clone(),
                    description: self.description.clone(),
                    tags: self.tags.clone().unwrap_or_default(),
                })
            }),
            client_settings: Box::new(ClientSettings {
                region: self.region.clone(),
                profile: self.profile.clone(),
                endpoint_url: self.endpoint_url.clone(),
                role_arn: self.role_arn.clone(),
                timeout,
                sdk_config: None,
            }),
            client: OnceCell::new(),
            warned_rate: AtomicBool::new(false),
        })
    }
}

/// A secret name (`[A-Za-z0-9/_+=.@-]`, at most 512) or a Secrets Manager ARN; `CreateSecret`
/// takes only a name.
fn check_secret_id(id: &str, create: bool) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.starts_with("arn:") {
        if id.split(':').nth(2) != Some("secretsmanager") || id.len() > 2048 {
            return Err(format!("{id:?} is not a Secrets Manager secret ARN"));
        }
        if create {
            return Err(format!(
                "{id:?} is an ARN, but create = true needs a secret name to create"
            ));
        }
        return Ok(());
    }
    if id.chars().count() > 512
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    {
        return Err(format!(
            "{id:?} is not a secret name: expected at most 512 of A-Z a-z 0-9 / _ + = . @ -"
        ));
    }
    Ok(())
}

/// An absolute http(s) URL; plain http only to a loopback host (SPEC §4 "TLS").
fn check_endpoint_url(text: &str) -> Result<(), String> {
    // Quoted without user info or query: they may carry a secret (issue 12).
    let shown = crate::redact::url_for_message(text);
    let url = url::Url::parse(text).map_err(|e| format!("{shown} is not a URL: {e}"))?;
    if url.host().is_none() {
        return Err(format!("{shown} has no host"));
    }
    let loopback = crate::provider::http::is_loopback(&url);
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "{shown} is plain http to a non-loopback host: use https"
        )),
        other => Err(format!(
            "{shown} has scheme {other:?}: expected https (or http to loopback)"
        )),
    }
}

/// `arn:<partition>:iam::<account>:role/<name>`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && resource.len() > "role/".len()
                && resource.starts_with("role/")
    )
}

/// AWS tag rules: at most 50 tags, keys 1–128 characters, values at most 256, and the `aws:`
/// prefix reserved.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > 50 {
        return Err(format!("{} tags: AWS allows at most 50", tags.len()));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(format!("tag key {key:?} must have 1 to 128 characters"));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!(
                "tag key {key:?}: the aws: prefix is reserved by AWS"
            ));
        }
        if value.chars().count() > 256 {
            return Err(format!(
                "tag {key:?}: the value is longer than 256 characters"
            ));
        }
    }
    Ok(())
}

mod decide;
mod errors;
mod write;

pub use decide::{client_request_token, parse_version_id};

#[cfg(test)]
mod tests;
