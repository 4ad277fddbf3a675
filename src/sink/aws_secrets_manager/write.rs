//! One write of the sink (the module doc of [`super`], "One write"): the SDK client made
//! on first use, the read of AWSCURRENT, the put, create and stage calls, and errors
//! turned into [`SinkError`]s without the token. Called through [`crate::sink::Sink::write`].

use std::error::Error as StdError;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::timeout::TimeoutConfig;
use secrecy::{ExposeSecret, SecretString};

use super::decide::{Current, client_request_token, stored_token};
use super::errors::{Class, Failure, chain, classify, code_of, failure_of};
use super::{
    ADVISED_WRITE_INTERVAL, AWSCURRENT, AwsSecretsManagerSink, AwsSecretsManagerSinkConfig,
    CreateOptions, Format, PENDING,
};
use crate::config::error::{Problem, Source, Validator};
use crate::sink::{
    MAX_CAS_ATTEMPTS, Publish, SinkContext, SinkError, TokenDocument, WriteOutcome, decide_publish,
};

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

    /// Publishes the token unless AWSCURRENT already holds it or an unexpired token of a
    /// higher generation (module doc, "One write"). Safe to retry: a token is stored at
    /// most once.
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
                    "the current version holds a token of a higher generation: kept"
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

    /// Read, decide, stage, move AWSCURRENT with check-and-set; again when another writer
    /// moved AWSCURRENT in between (module doc, "One write").
    async fn try_write(&self, doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        let client = self.client().await?;
        let token = doc.access_token.expose_secret();
        let request_token = client_request_token(
            &self.account,
            self.format,
            token,
            doc.generation,
            doc.expires_at,
        );
        // The version a move of AWSCURRENT was refused off, and AWS's words: finding
        // AWSCURRENT still there on the next read means the refusal was no conflict.
        let mut refused: Option<(Option<String>, String)> = None;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = self.current(client).await?;
            let stored = current
                .as_ref()
                .map(|c| stored_token(c, self.format, token, SystemTime::now()));
            match decide_publish(stored.as_ref(), doc.generation) {
                Publish::Unchanged => return Ok(WriteOutcome::Unchanged),
                Publish::KeptNewer => return Ok(WriteOutcome::KeptNewer),
                Publish::Write => {}
            }
            let read_version = current.as_ref().and_then(|c| c.version_id.clone());
            if let Some((version, detail)) = &refused
                && *version == read_version
            {
                return Err(SinkError::Permanent(format!(
                    "{}: UpdateSecretVersionStage: AWS refused to move {AWSCURRENT} although \
                     it had not moved: {detail}",
                    self.label()
                )));
            }
            self.warn_if_too_frequent(current.as_ref());
            let value = match self.format {
                Format::Json => SecretString::from(doc.json(SystemTime::now())),
                Format::Raw => SecretString::from(token.to_owned()),
            };

            match self.stage(client, &value, &request_token).await {
                // The secret had no version at all: AWS made ours current.
                Ok(true) => return Ok(WriteOutcome::Written),
                Ok(false) => {}
                // Our version exists already with another value (a `json` retry whose
                // `expires_in` moved on): the same token, generation and expiry, so stage it.
                Err(e) if code_of(&e) == Some("ResourceExistsException") => {}
                Err(e) if code_of(&e) == Some("ResourceNotFoundException") => {
                    match self.create_missing(client, &value, &request_token).await? {
                        true => return Ok(WriteOutcome::Written),
                        // Created meanwhile by another writer: read and decide again.
                        false => continue,
                    }
                }
                Err(e) => return Err(self.error("PutSecretValue", &e)),
            }

            match self
                .move_current(client, &request_token, read_version.clone())
                .await
            {
                Ok(()) => return Ok(WriteOutcome::Written),
                Err(e)
                    if matches!(
                        code_of(&e),
                        Some("InvalidParameterException" | "InvalidRequestException")
                    ) =>
                {
                    tracing::debug!(
                        account = %self.account,
                        sink = %self.label(),
                        "AWSCURRENT was not on the version read: reading again"
                    );
                    let detail = e.message().unwrap_or("no message").to_owned();
                    refused = Some((read_version, detail));
                }
                Err(e) => return Err(self.error("UpdateSecretVersionStage", &e)),
            }
        }
        Err(SinkError::Transient(format!(
            "{}: gave up after {MAX_CAS_ATTEMPTS} check-and-set conflicts with other writers",
            self.label()
        )))
    }

    /// `CreateSecret` for a secret that does not exist (module doc, "One write" step 5):
    /// `Ok(true)` when created (our version is AWSCURRENT), `Ok(false)` when another writer
    /// created it meanwhile.
    async fn create_missing(
        &self,
        client: &Client,
        value: &SecretString,
        request_token: &str,
    ) -> Result<bool, SinkError> {
        let Some(create) = &self.create else {
            return Err(SinkError::Permanent(format!(
                "{}: secret {:?} does not exist: create it, or set create = true in this sink",
                self.label(),
                self.secret_id
            )));
        };
        match self
            .create_secret(client, create, value, request_token)
            .await
        {
            Ok(()) => {
                let (account, sink) = (self.account.as_str(), self.label());
                tracing::info!(account, sink, "created the secret");
                Ok(true)
            }
            Err(e) if code_of(&e) == Some("ResourceExistsException") => Ok(false),
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
    async fn current(&self, client: &Client) -> Result<Option<Current>, SinkError> {
        match client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(AWSCURRENT)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Current {
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

    /// `PutSecretValue` staging our version with [`PENDING`] only, so AWSCURRENT stays
    /// where it is until [`Self::move_current`] moves it with check-and-set. `Ok(true)` when
    /// AWS made the version AWSCURRENT anyway (the secret had no version yet).
    async fn stage(
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
            .version_stages(PENDING)
            .send()
            .await?;
        Ok(out.version_stages().iter().any(|s| s == AWSCURRENT))
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

    /// Moves AWSCURRENT to our staged version, off `read_version` (the version it was on
    /// when we read it). AWS refuses when AWSCURRENT is no longer there: that is the
    /// check-and-set.
    async fn move_current(
        &self,
        client: &Client,
        request_token: &str,
        read_version: Option<String>,
    ) -> Result<
        (),
        SdkError<
            aws_sdk_secretsmanager::operation::update_secret_version_stage::UpdateSecretVersionStageError,
        >,
    >{
        client
            .update_secret_version_stage()
            .secret_id(&self.secret_id)
            .version_stage(AWSCURRENT)
            .move_to_version_id(request_token)
            .set_remove_from_version_id(read_version)
            .send()
            .await
            .map(|_| ())
    }

    /// Warns once when the current version is younger than AWS's advised write interval.
    fn warn_if_too_frequent(&self, current: Option<&Current>) {
        let Some(age) = current
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
pub(super) fn session_name(account: &str) -> String {
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
