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
//! 1. `GetSecretValue` (AWSCURRENT). A missing secret or value is "nothing stored".
//! 2. `decide`: skip with [`WriteOutcome::Unchanged`] when AWSCURRENT already holds this
//!    token (its version id is this token's request token, or its value carries the token);
//!    skip with [`WriteOutcome::KeptNewer`] when AWSCURRENT holds a `json` document whose
//!    `expires_at` is later than ours (another writer has a fresher token: never roll back).
//!    With `format = "raw"` nothing but the token is stored, so there is no expiry to compare
//!    and only the unchanged check applies: a raw sink always publishes its own new token.
//! 3. `PutSecretValue` with a `ClientRequestToken` derived from the account, the format and
//!    the token ([`client_request_token`]).
//! 4. On `ResourceNotFoundException`: with `create = true`, `CreateSecret` (with `kms_key_id`,
//!    `description`, `tags`; these apply only at creation and are never changed afterwards);
//!    if that races into `ResourceExistsException`, put once more. With `create = false`,
//!    a permanent error that names the secret and the `create = true` option.
//! 5. When the put did not leave our version as AWSCURRENT (our version already existed, see
//!    below), `UpdateSecretVersionStage` moves AWSCURRENT to it.
//!
//! # Idempotency
//!
//! Secrets Manager uses the `ClientRequestToken` as the new version's id, and a repeated
//! request token with the same value returns the existing version instead of adding one.
//! Deriving it from (account, format, token) makes every retry of one token's write, by the
//! SDK after a lost response or by the sink's backoff, land on the same version: a token is
//! stored at most once per secret. The token is a SHA-256 hash, shaped as a UUID (version 8,
//! RFC 9562); the version id is visible to principals that may only describe the secret, and
//! a truncated hash of a high-entropy access token tells them nothing usable. The `json`
//! value's `expires_in` depends on the write time, so a later retry of the same token can
//! carry a different value; Secrets Manager then answers `ResourceExistsException`, which
//! means "this token's version exists", and step 5 makes it current instead of failing.
//!
//! # Why unchanged writes are skipped
//!
//! Each stored value is a new secret version and a billed API call. Secrets Manager keeps the
//! 100 most recent versions but also every version created in the last 24 hours, so its
//! `PutSecretValue` reference asks for no more than one write per secret every 10 minutes
//! (144 a day); faster writers run into the versions quota. A restart that reuses a
//! still-fresh token, a reload that only changed sinks and SIGUSR1 all write the same token
//! again; the read in step 1 (one call, no new version) turns those into no-ops. Tokens that
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

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::timeout::TimeoutConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{SinkContext, SinkError, TokenDocument, WriteOutcome, parse_rfc3339};
use crate::config::error::{Problem, Source, Validator};

/// The staging label of the value readers get by default.
const AWSCURRENT: &str = "AWSCURRENT";
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

/// The `ClientRequestToken` (and so the version id) for one token written by one account in
/// one format: SHA-256 over a domain tag, the account, the format and the token, truncated to
/// 128 bits and shaped as a version-8 UUID (36 characters; AWS wants 32 to 64). Stable across
/// restarts and hosts, so every retry of one token's write is the same request.
pub fn client_request_token(account: &str, format: Format, token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tokend aws_secrets_manager v1\0");
    hash.update(account.as_bytes());
    hash.update([0]);
    hash.update(format.name().as_bytes());
    hash.update([0]);
    hash.update(token.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom (RFC 9562 §5.8)
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 10
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What AWSCURRENT holds, as far as [`decide`] cares.
struct Stored {
    version_id: Option<String>,
    /// Absent for a binary secret.
    value: Option<SecretString>,
    created: Option<SystemTime>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Store a new value.
    Write,
    /// Leave the secret as it is.
    Skip(WriteOutcome),
}

/// Whether to write `token` (expiring at `expires_at`) over what AWSCURRENT holds. Pure; see
/// the module doc, "One write", step 2.
fn decide(
    stored: Option<&Stored>,
    format: Format,
    request_token: &str,
    token: &str,
    expires_at: SystemTime,
) -> Decision {
    let Some(stored) = stored else {
        return Decision::Write;
    };
    if stored.version_id.as_deref() == Some(request_token) {
        return Decision::Skip(WriteOutcome::Unchanged);
    }
    let Some(value) = &stored.value else {
        return Decision::Write;
    };
    match format {
        Format::Raw => {
            if value.expose_secret() == token {
                Decision::Skip(WriteOutcome::Unchanged)
            } else {
                Decision::Write
            }
        }
        Format::Json => {
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(value.expose_secret()) else {
                return Decision::Write;
            };
            if doc["access_token"].as_str() == Some(token) {
                return Decision::Skip(WriteOutcome::Unchanged);
            }
            // Compare at the document's precision (whole seconds), so equal means equal.
            let ours = parse_rfc3339(&super::rfc3339(expires_at)).unwrap_or(expires_at);
            match doc["expires_at"].as_str().and_then(parse_rfc3339) {
                Some(theirs) if theirs > ours => Decision::Skip(WriteOutcome::KeptNewer),
                _ => Decision::Write,
            }
        }
    }
}

/// How a failed call should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Transient,
    Permanent,
}

/// A failed SDK call reduced to what classification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure<'a> {
    /// The service answered with an error; `code` is the AWS error code when it had one.
    Service { code: Option<&'a str>, status: u16 },
    /// A response that could not be parsed.
    Response,
    /// The request or attempt timed out.
    Timeout,
    /// Could not send: connection refused or reset, DNS, TLS; `user` for a malformed request.
    Dispatch { user: bool },
    /// The request could not be built.
    Construction,
    /// No credentials configured at all, or a broken credentials configuration.
    CredentialsMissing,
    /// A credentials provider failed or timed out (STS, IMDS, SSO).
    CredentialsUnavailable,
}

/// AWS error codes worth retrying: the SDK's throttling and transient codes
/// (`aws-runtime` `retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS}`) plus server
/// faults and expired session credentials, which the identity cache renews.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalServiceError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
];

/// Transient or permanent, by error kind and AWS error code (module doc, "Errors").
fn classify(failure: Failure<'_>) -> Class {
    match failure {
        Failure::Service {
            code: Some(code), ..
        } => {
            if TRANSIENT_CODES.contains(&code) {
                Class::Transient
            } else {
                Class::Permanent
            }
        }
        // No code to go by (a proxy's HTML page, an empty body): the status is all there is.
        Failure::Service { code: None, status } => {
            if status >= 500 || status == 429 {
                Class::Transient
            } else {
                Class::Permanent
            }
        }
        Failure::Response
        | Failure::Timeout
        | Failure::Dispatch { user: false }
        | Failure::CredentialsUnavailable => Class::Transient,
        Failure::Dispatch { user: true } | Failure::Construction | Failure::CredentialsMissing => {
            Class::Permanent
        }
    }
}

/// Reduces an SDK error to a [`Failure`]. A credentials error anywhere in the source chain
/// wins: the SDK reports it as a dispatch failure.
fn failure_of<E>(err: &SdkError<E, HttpResponse>) -> Failure<'_>
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return match c {
                CredentialsError::CredentialsNotLoaded(_)
                | CredentialsError::InvalidConfiguration(_) => Failure::CredentialsMissing,
                _ => Failure::CredentialsUnavailable,
            };
        }
        source = e.source();
    }
    match err {
        SdkError::ServiceError(ctx) => Failure::Service {
            code: ctx.err().code(),
            status: ctx.raw().status().as_u16(),
        },
        SdkError::ResponseError(_) => Failure::Response,
        SdkError::TimeoutError(_) => Failure::Timeout,
        SdkError::DispatchFailure(d) => Failure::Dispatch { user: d.is_user() },
        _ => Failure::Construction,
    }
}

/// The error's code when the service sent one.
fn code_of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// Every message of an error chain, joined with ": " (repeats dropped).
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

impl AwsSecretsManagerSink {
    /// Validates `config` like [`AwsSecretsManagerSinkConfig::build`] and uses `sdk_config`
    /// instead of the standard AWS chain (region, credentials, retry and timeout settings).
    /// The sink's `region`, `endpoint_url`, `role_arn` and `timeout` still apply on top;
    /// `profile` does not (there is no chain to load it from). Pass a config made by
    /// `aws_config::defaults(..)…load()`: `role_arn` needs its time source. The error lists
    /// every problem found.
    pub fn with_sdk_config(
        config: &AwsSecretsManagerSinkConfig,
        ctx: &SinkContext,
        sdk_config: SdkConfig,
    ) -> Result<AwsSecretsManagerSink, String> {
        let mut problems: Vec<Problem> = Vec::new();
        let source = std::sync::Arc::new(Source {
            path: "aws_secrets_manager sink".into(),
            text: String::new(),
        });
        let built = config.build(&mut Validator::new(&mut problems, source), ctx);
        match built {
            Some(mut sink) if problems.is_empty() => {
                sink.client_settings.sdk_config = Some(sdk_config);
                Ok(sink)
            }
            _ => Err(problems
                .iter()
                .map(|p| format!("{}: {}", p.shown, p.message))
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// `aws:<secret_id>`.
    pub fn label(&self) -> String {
        format!("aws:{}", self.secret_id)
    }

    /// Publishes the token unless AWSCURRENT already holds it or a token that expires later
    /// (module doc, "One write"). Safe to retry: a token is stored at most once.
    pub async fn write(&self, doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        let result = self.try_write(doc).await.map_err(|e| self.scrub(e, doc));
        let (account, sink) = (self.account.as_str(), self.label());
        match &result {
            Ok(WriteOutcome::Written) => {
                tracing::info!(
                    account,
                    sink,
                    "stored the token as the current secret version"
                );
            }
            Ok(WriteOutcome::Unchanged) => {
                tracing::debug!(
                    account,
                    sink,
                    "the current version holds this token: not written"
                );
            }
            Ok(WriteOutcome::KeptNewer) => {
                tracing::info!(
                    account,
                    sink,
                    "the current version holds a later-expiring token: kept"
                );
            }
            // The caller logs failures with its retry plan; this line adds the sink's view.
            Err(e) => {
                let transient = e.is_transient();
                tracing::debug!(account, sink, transient, error = %e, "write failed");
            }
        }
        result
    }

    async fn try_write(&self, doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        let client = self.client().await?;
        let token = doc.access_token.expose_secret();
        let request_token = client_request_token(&self.account, self.format, token);
        let stored = self.stored(client).await?;
        if let Decision::Skip(outcome) = decide(
            stored.as_ref(),
            self.format,
            &request_token,
            token,
            doc.expires_at,
        ) {
            return Ok(outcome);
        }
        self.warn_if_too_frequent(stored.as_ref());
        let value = match self.format {
            Format::Json => SecretString::from(doc.json(SystemTime::now())),
            Format::Raw => SecretString::from(token.to_owned()),
        };
        let current_version = stored.and_then(|s| s.version_id);

        match self.put(client, &value, &request_token).await {
            Ok(true) => return Ok(WriteOutcome::Written),
            Ok(false) => {
                return self
                    .make_current(client, &request_token, current_version)
                    .await;
            }
            Err(e) if code_of(&e) == Some("ResourceExistsException") => {
                return self
                    .make_current(client, &request_token, current_version)
                    .await;
            }
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(self.error("PutSecretValue", &e)),
        }

        // The secret does not exist (step 4).
        let Some(create) = &self.create else {
            return Err(SinkError::Permanent(format!(
                "{}: secret {:?} does not exist: create it, or set create = true in this sink",
                self.label(),
                self.secret_id
            )));
        };
        match self
            .create_secret(client, create, &value, &request_token)
            .await
        {
            Ok(()) => {
                let (account, sink) = (self.account.as_str(), self.label());
                tracing::info!(account, sink, "created the secret");
                Ok(WriteOutcome::Written)
            }
            // Created meanwhile by another writer (or our version exists): put once more.
            Err(e) if code_of(&e) == Some("ResourceExistsException") => {
                match self.put(client, &value, &request_token).await {
                    Ok(true) => Ok(WriteOutcome::Written),
                    Ok(false) => self.make_current_now(client, &request_token).await,
                    Err(e) if code_of(&e) == Some("ResourceExistsException") => {
                        self.make_current_now(client, &request_token).await
                    }
                    Err(e) => Err(self.error("PutSecretValue", &e)),
                }
            }
            Err(e) => Err(self.error("CreateSecret", &e)),
        }
    }

    /// The client, created on first use from the sink's settings and the AWS chain.
    async fn client(&self) -> Result<&Client, SinkError> {
        self.client.get_or_try_init(|| self.load_client()).await
    }

    async fn load_client(&self) -> Result<Client, SinkError> {
        let settings = &self.client_settings;
        let region = settings.region.clone().map(Region::new);
        let mut base = match &settings.sdk_config {
            Some(config) => config.clone(),
            None => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &region {
                    loader = loader.region(region.clone());
                }
                if let Some(profile) = &settings.profile {
                    loader = loader.profile_name(profile);
                }
                loader.load().await
            }
        };
        if let Some(region) = region {
            base = base.into_builder().region(region).build();
        }
        if base.region().is_none() {
            return Err(SinkError::Permanent(format!(
                "{}: no AWS region: set region in this sink, or AWS_REGION, or a profile region",
                self.label()
            )));
        }
        if let Some(role_arn) = &settings.role_arn {
            if base.time_source().is_none() {
                return Err(SinkError::Permanent(format!(
                    "{}: the SDK config has no time source, which assuming role_arn needs",
                    self.label()
                )));
            }
            let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
                .configure(&base)
                .session_name(session_name(&self.account))
                .build()
                .await;
            base = base
                .into_builder()
                .credentials_provider(SharedCredentialsProvider::new(provider))
                .build();
        }
        let mut config = aws_sdk_secretsmanager::config::Builder::from(&base).timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(settings.timeout)
                .build(),
        );
        if let Some(url) = &settings.endpoint_url {
            config = config.endpoint_url(url);
        }
        let (account, sink) = (self.account.as_str(), self.label());
        tracing::debug!(account, sink, "aws sdk config loaded");
        Ok(Client::from_conf(config.build()))
    }

    /// AWSCURRENT, or `None` when the secret or its current value does not exist.
    async fn stored(&self, client: &Client) -> Result<Option<Stored>, SinkError> {
        match client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(AWSCURRENT)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Stored {
                version_id: out.version_id().map(str::to_owned),
                value: out
                    .secret_string()
                    .map(|s| SecretString::from(s.to_owned())),
                created: out
                    .created_date()
                    .and_then(|d| SystemTime::try_from(*d).ok()),
            })),
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(self.error("GetSecretValue", &e)),
        }
    }

    /// `PutSecretValue`; `Ok(true)` when the resulting version is AWSCURRENT. `Ok(false)`
    /// means the request token matched an existing version with the same value, which AWS
    /// returns as it is, current or not.
    async fn put(
        &self,
        client: &Client,
        value: &SecretString,
        request_token: &str,
    ) -> Result<
        bool,
        SdkError<aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError>,
    > {
        let out = client
            .put_secret_value()
            .secret_id(&self.secret_id)
            .secret_string(value.expose_secret())
            .client_request_token(request_token)
            .send()
            .await?;
        let stages = out.version_stages();
        Ok(stages.is_empty() || stages.iter().any(|s| s == AWSCURRENT))
    }

    async fn create_secret(
        &self,
        client: &Client,
        create: &CreateOptions,
        value: &SecretString,
        request_token: &str,
    ) -> Result<(), SdkError<aws_sdk_secretsmanager::operation::create_secret::CreateSecretError>>
    {
        let mut request = client
            .create_secret()
            .name(&self.secret_id)
            .secret_string(value.expose_secret())
            .client_request_token(request_token)
            .set_kms_key_id(create.kms_key_id.clone())
            .set_description(create.description.clone());
        for (key, value) in &create.tags {
            request = request.tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(key)
                    .value(value)
                    .build(),
            );
        }
        request.send().await.map(|_| ())
    }

    /// Moves AWSCURRENT to our (already existing) version, off `current_version`.
    async fn make_current(
        &self,
        client: &Client,
        request_token: &str,
        current_version: Option<String>,
    ) -> Result<WriteOutcome, SinkError> {
        if current_version.as_deref() == Some(request_token) {
            return Ok(WriteOutcome::Unchanged);
        }
        tracing::debug!(
            account = %self.account,
            sink = %self.label(),
            "this token's version exists but is not current: restaging it"
        );
        client
            .update_secret_version_stage()
            .secret_id(&self.secret_id)
            .version_stage(AWSCURRENT)
            .move_to_version_id(request_token)
            .set_remove_from_version_id(current_version)
            .send()
            .await
            .map_err(|e| self.error("UpdateSecretVersionStage", &e))?;
        Ok(WriteOutcome::Written)
    }

    /// [`Self::make_current`] after looking up which version is current now.
    async fn make_current_now(
        &self,
        client: &Client,
        request_token: &str,
    ) -> Result<WriteOutcome, SinkError> {
        let current = self.stored(client).await?.and_then(|s| s.version_id);
        self.make_current(client, request_token, current).await
    }

    /// Warns once when the current version is younger than AWS's advised write interval.
    fn warn_if_too_frequent(&self, stored: Option<&Stored>) {
        let Some(age) = stored
            .and_then(|s| s.created)
            .and_then(|created| SystemTime::now().duration_since(created).ok())
        else {
            return;
        };
        if age < ADVISED_WRITE_INTERVAL && !self.warned_rate.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                account = %self.account,
                sink = %self.label(),
                previous_write_secs_ago = age.as_secs(),
                "this secret is written more often than the once per 10 minutes AWS advises: \
                 every refresh adds a version, and too many in 24 hours hit the versions quota"
            );
        }
    }

    /// A [`SinkError`] for a failed call, classified (module doc, "Errors").
    fn error<E>(&self, operation: &str, err: &SdkError<E, HttpResponse>) -> SinkError
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let failure = failure_of(err);
        let detail = match failure {
            Failure::Service { code, status } => {
                // The status only describes a response without a code; it decides nothing.
                let code = code.map_or_else(
                    || format!("HTTP {status} without an AWS error code"),
                    str::to_owned,
                );
                match err.message() {
                    Some(m) => format!("{code}: {m}"),
                    None => code,
                }
            }
            _ => chain(err),
        };
        let message = format!("{}: {operation}: {detail}", self.label());
        match classify(failure) {
            Class::Transient => SinkError::Transient(message),
            Class::Permanent => SinkError::Permanent(message),
        }
    }

    /// Belt and braces: no error message may carry the token, whatever a server echoes.
    fn scrub(&self, err: SinkError, doc: &TokenDocument) -> SinkError {
        let token = doc.access_token.expose_secret();
        // The one redaction rule (every registered secret, every encoding, no control
        // characters), plus the token being written.
        let clean = |m: String| crate::redact::excerpt_with(&m, [token], usize::MAX);
        match err {
            SinkError::Transient(m) => SinkError::Transient(clean(m)),
            SinkError::Permanent(m) => SinkError::Permanent(clean(m)),
        }
    }
}

/// `tokend-<account>` within STS's limits (2–64 of `[\w+=,.@-]`).
fn session_name(account: &str) -> String {
    format!("tokend-{account}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sink::SinkConfig;

    /// Parses a sink table (without `type`) and builds it, returning every problem.
    fn build(body: &str) -> Result<AwsSecretsManagerSink, Vec<String>> {
        let text = format!("type = \"aws_secrets_manager\"\n{body}");
        let config: SinkConfig = toml::from_str(&text).map_err(|e| vec![e.to_string()])?;
        let SinkConfig::AwsSecretsManager(config) = config else {
            panic!("parsed as another sink type");
        };
        let mut problems = Vec::new();
        let source = Arc::new(Source {
            path: "t.toml".into(),
            text,
        });
        let ctx = SinkContext {
            account: "acct".into(),
        };
        let built = config.build(&mut Validator::new(&mut problems, source), &ctx);
        match built {
            Some(sink) if problems.is_empty() => Ok(sink),
            _ => Err(problems
                .into_iter()
                .map(|p| format!("{}: {}", p.shown, p.message))
                .collect()),
        }
    }

    #[test]
    fn a_full_config_builds_with_its_settings() {
        let sink = build(
            r#"
            secret_id = "tokend/acct"
            region = "sa-east-1"
            profile = "prod"
            endpoint_url = "https://secretsmanager.sa-east-1.amazonaws.com"
            role_arn = "arn:aws:iam::123456789012:role/tokend"
            create = true
            format = "raw"
            kms_key_id = "alias/tokend"
            description = "pontotel token"
            tags = { team = "integrations" }
            timeout = "3s"
            "#,
        )
        .expect("valid config");
        assert_eq!(sink.label(), "aws:tokend/acct");
        assert_eq!(sink.format, Format::Raw);
        assert_eq!(sink.client_settings.timeout, Duration::from_secs(3));
        let create = sink.create.as_ref().expect("create = true");
        assert_eq!(
            create.tags.get("team").map(String::as_str),
            Some("integrations")
        );
        let minimal = build("secret_id = \"x\"").expect("minimal config");
        assert_eq!(
            (
                minimal.format,
                minimal.create.is_none(),
                minimal.client_settings.timeout
            ),
            (Format::Json, true, DEFAULT_TIMEOUT)
        );
    }

    #[test]
    fn unknown_and_missing_keys_are_errors() {
        let e = build("secret_id = \"x\"\nsecret = \"y\"").unwrap_err();
        assert!(e[0].contains("unknown field `secret`"), "{e:?}");
        let e = build("region = \"us-east-1\"").unwrap_err();
        assert!(e[0].contains("missing field `secret_id`"), "{e:?}");
        let e = build("secret_id = \"x\"\ntags = { a = 1 }").unwrap_err();
        assert!(e[0].contains("invalid type"), "{e:?}");
    }

    #[test]
    fn every_bad_setting_is_reported_at_once() {
        let e = build(
            r#"
            secret_id = "bad name!"
            region = "Sa East"
            profile = ""
            endpoint_url = "http://10.0.0.1:5000"
            role_arn = "arn:aws:iam::1:user/x"
            format = "env"
            kms_key_id = "k"
            description = "d"
            tags = { "aws:x" = "y" }
            timeout = "0s"
            "#,
        )
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|m| m.split(':').next().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "secret_id",
                "region",
                "profile",
                "endpoint_url",
                "role_arn",
                "format",
                "kms_key_id",
                "description",
                "tags",
                "tags",
                "timeout"
            ],
            "{e:#?}"
        );
        assert!(e[6].contains("create = true"), "{e:?}");
        let e = build("secret_id = \"x\"\ntimeout = \"soon\"").unwrap_err();
        assert!(e[0].contains("\"soon\" is not a duration"), "{e:?}");
    }

    #[test]
    fn secret_ids_endpoints_and_role_arns_are_checked() {
        assert!(check_secret_id("tokend/pontotel-prod_1+=.@", true).is_ok());
        let arn = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:tokend/x-AbCdEf";
        assert!(check_secret_id(arn, false).is_ok());
        assert!(
            check_secret_id(arn, true)
                .unwrap_err()
                .contains("needs a secret name")
        );
        assert!(check_secret_id("arn:aws:s3:::bucket", false).is_err());
        assert!(check_secret_id("", false).is_err());
        assert!(check_endpoint_url("http://127.0.0.1:5000").is_ok());
        assert!(check_endpoint_url("http://localhost:4566").is_ok());
        assert!(check_endpoint_url("http://[::1]:5000").is_ok());
        assert!(check_endpoint_url("https://vpce.example.com").is_ok());
        assert!(
            check_endpoint_url("http://moto:5000")
                .unwrap_err()
                .contains("https")
        );
        assert!(check_endpoint_url("ftp://127.0.0.1").is_err());
        assert!(check_endpoint_url("not a url").is_err());
        assert!(is_role_arn("arn:aws-cn:iam::123456789012:role/path/tokend"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
        assert!(!is_role_arn("arn:aws:sts::123456789012:role/x"));
        assert_eq!(session_name("pontotel-prod"), "tokend-pontotel-prod");
        assert_eq!(session_name(&"a".repeat(80)).len(), 64);
    }

    #[test]
    fn request_tokens_are_stable_uuids_per_account_format_and_token() {
        let t = client_request_token("acct", Format::Json, "tok-1");
        assert_eq!(t, client_request_token("acct", Format::Json, "tok-1"));
        // Pinned (checked with Python hashlib): a change would make every deployed sink write
        // each token once more.
        assert_eq!(t, "7e0d0cc9-73d8-8698-8c1f-3b72971dd8bd");
        assert_eq!(t.len(), 36);
        let groups: Vec<usize> = t.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&t[14..15], "8", "version 8");
        assert!("89ab".contains(&t[19..20]), "variant 10");
        assert!(!t.contains("tok-1"));
        for other in [
            client_request_token("acct2", Format::Json, "tok-1"),
            client_request_token("acct", Format::Raw, "tok-1"),
            client_request_token("acct", Format::Json, "tok-2"),
            // The separator keeps ("ab", "c") and ("a", "bc") apart.
            client_request_token("acc", Format::Json, "ttok-1"),
        ] {
            assert_ne!(t, other);
        }
    }

    fn stored(version: &str, value: &str) -> Stored {
        Stored {
            version_id: Some(version.into()),
            value: Some(SecretString::from(value.to_owned())),
            created: None,
        }
    }

    #[test]
    fn decide_skips_unchanged_keeps_newer_and_writes_otherwise() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let json = |token: &str, exp: u64| {
            serde_json::json!({"access_token": token, "expires_at": super::super::rfc3339(at(exp))})
                .to_string()
        };
        let ours = "req-ours";
        use Decision::*;
        use WriteOutcome::*;
        let cases: Vec<(&str, Option<Stored>, Format, Decision)> = vec![
            ("nothing stored", None, Format::Json, Write),
            (
                "our version is current",
                Some(stored(ours, "whatever")),
                Format::Json,
                Skip(Unchanged),
            ),
            (
                "same token, other writer",
                Some(stored("v", &json("T", 100))),
                Format::Json,
                Skip(Unchanged),
            ),
            (
                "stored expires later",
                Some(stored("v", &json("OLD", 200))),
                Format::Json,
                Skip(KeptNewer),
            ),
            (
                "stored expires earlier",
                Some(stored("v", &json("OLD", 50))),
                Format::Json,
                Write,
            ),
            (
                "same expiry, other token",
                Some(stored("v", &json("OLD", 100))),
                Format::Json,
                Write,
            ),
            (
                "stored is not json",
                Some(stored("v", "T")),
                Format::Json,
                Write,
            ),
            (
                "json without expires_at",
                Some(stored("v", r#"{"access_token":"X"}"#)),
                Format::Json,
                Write,
            ),
            (
                "raw: same token",
                Some(stored("v", "T")),
                Format::Raw,
                Skip(Unchanged),
            ),
            // Raw values carry no expiry: a newer-looking json document is not consulted.
            (
                "raw: other token",
                Some(stored("v", &json("OLD", 200))),
                Format::Raw,
                Write,
            ),
            (
                "binary secret",
                Some(Stored {
                    version_id: Some("v".into()),
                    value: None,
                    created: None,
                }),
                Format::Json,
                Write,
            ),
        ];
        for (what, stored, format, expected) in cases {
            let got = decide(stored.as_ref(), format, ours, "T", at(100));
            assert_eq!(got, expected, "{what}");
        }
        // Sub-second precision of our expiry does not beat an equal stored second.
        let got = decide(
            Some(&stored("v", &json("OLD", 100))),
            Format::Json,
            ours,
            "T",
            at(100) + Duration::from_millis(400),
        );
        assert_eq!(got, Write);
    }

    #[test]
    fn errors_are_classified_by_code_and_kind_not_status() {
        use Class::*;
        let service = |code, status| Failure::Service { code, status };
        let cases = [
            (service(Some("ThrottlingException"), 400), Transient),
            (service(Some("LimitExceededException"), 400), Transient),
            (service(Some("InternalServiceError"), 500), Transient),
            (service(Some("ExpiredTokenException"), 400), Transient),
            (service(Some("AccessDeniedException"), 400), Permanent),
            (service(Some("UnrecognizedClientException"), 400), Permanent),
            (service(Some("DecryptionFailure"), 400), Permanent),
            (service(Some("EncryptionFailure"), 400), Permanent),
            (service(Some("KMSAccessDeniedException"), 400), Permanent),
            (service(Some("InvalidParameterException"), 400), Permanent),
            (service(Some("InvalidRequestException"), 400), Permanent),
            (service(Some("ResourceNotFoundException"), 404), Permanent),
            // A code decides even when the status would say otherwise.
            (service(Some("AccessDeniedException"), 503), Permanent),
            (service(None, 502), Transient),
            (service(None, 429), Transient),
            (service(None, 403), Permanent),
            (Failure::Response, Transient),
            (Failure::Timeout, Transient),
            (Failure::Dispatch { user: false }, Transient),
            (Failure::Dispatch { user: true }, Permanent),
            (Failure::Construction, Permanent),
            (Failure::CredentialsMissing, Permanent),
            (Failure::CredentialsUnavailable, Transient),
        ];
        for (failure, expected) in cases {
            assert_eq!(classify(failure), expected, "{failure:?}");
        }
    }

    #[test]
    fn debug_shows_settings_only() {
        let sink =
            build("secret_id = \"tokend/acct\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"")
                .expect("valid");
        let debug = format!("{sink:?}");
        assert!(debug.contains("tokend/acct"), "{debug}");
        assert!(debug.contains("standard chain"), "{debug}");
        assert!(debug.contains("client_loaded: false"), "{debug}");
    }
}
