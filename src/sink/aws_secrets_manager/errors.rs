//! The error table: a failed SDK call classified as transient or permanent by error kind
//! and AWS error code, never by status or message text (the module doc of [`super`],
//! "Errors"). Called by [`super::write`] for every failed call.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// How a failed call should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Transient,
    Permanent,
}

/// A failed SDK call reduced to what classification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure<'a> {
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
pub(super) const TRANSIENT_CODES: &[&str] = &[
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
pub(super) fn classify(failure: Failure<'_>) -> Class {
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
pub(super) fn failure_of<E>(err: &SdkError<E, HttpResponse>) -> Failure<'_>
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
pub(super) fn code_of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// Every message of an error chain, joined with ": " (repeats dropped).
pub(super) fn chain(err: &(dyn StdError + 'static)) -> String {
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
