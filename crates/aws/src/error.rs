//! The adapter's one error type, [`AwsError`], and the classification of SDK and
//! EC2-query failures into it. Retrying happens below this layer (the SDK's standard
//! retry strategy, `ec2::Ec2Client`'s own loop): an `AwsError` is what is left after
//! the retries gave up.

use crate::config::ConfigError;
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use model::Region;

/// A failed AWS call (after retries) or a refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// `Throttling`, `RequestLimitExceeded` and friends, still throttled after retries.
    #[error("{operation} in {region}: throttled by AWS after retries: {message}")]
    Throttled {
        region: Region,
        operation: &'static str,
        message: String,
    },
    /// 5xx, timeouts and connection failures, still failing after retries.
    #[error("{operation} in {region}: AWS unavailable after retries: {message}")]
    Unavailable {
        region: Region,
        operation: &'static str,
        message: String,
    },
    /// The group, instance or launch template does not exist.
    #[error("{what} not found: {message}")]
    NotFound { what: String, message: String },
    /// The group or instance is not owned by this cluster: the adapter never touches it.
    #[error("{what} is not managed by this autoscaler: {why}")]
    Unowned { what: String, why: String },
    /// AWS refused the request as invalid (`ValidationError`), or the adapter refused
    /// it before sending (a target above the group's max).
    #[error("{operation} rejected: {message}")]
    Rejected {
        operation: &'static str,
        message: String,
    },
    /// The adapter refused, before sending, a desired capacity below the instances the
    /// group has live (InService or Pending, in the fresh read just made): EC2 Auto
    /// Scaling would then choose instances to terminate itself, and those may run pods.
    #[error("SetDesiredCapacity refused: target {target} of group {group} is below its {live} live instances; AWS would choose which to terminate")]
    BelowLiveInstances {
        group: String,
        target: u32,
        live: u32,
    },
    /// Credentials missing or refused, or the IAM policy lacks an action.
    #[error("{operation} in {region}: not authorised: {message}")]
    Denied {
        region: Region,
        operation: &'static str,
        message: String,
    },
    /// The adapter's configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else, with the operation and AWS's message.
    #[error("{operation} in {region} failed: {message}")]
    Other {
        region: Region,
        operation: &'static str,
        message: String,
    },
}

impl AwsError {
    /// A short, stable label for the `errors_total{kind=...}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::NotFound { .. } => "not_found",
            Self::Unowned { .. } => "unowned",
            Self::Rejected { .. } => "rejected",
            Self::BelowLiveInstances { .. } => "below_live_instances",
            Self::Denied { .. } => "denied",
            Self::Config(_) => "config",
            Self::Other { .. } => "other",
        }
    }

    /// Whether trying again later may succeed (throttling, unavailability).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable { .. })
    }
}

/// Error codes AWS uses for throttling (the SDK's list, plus EC2's).
pub(crate) const THROTTLING_CODES: &[&str] = &[
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
    "KmsThrottled",
];

const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "MissingAuthenticationToken",
    "OptInRequired",
    "KmsAccessDenied",
    "InvalidSecurity",
];

/// Codes that mean the named object does not exist, beyond the `…NotFound` family.
const NOT_FOUND_CODES: &[&str] = &[
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
];

/// Requests AWS refuses as invalid (the query protocols' validation codes and SQS's).
const REJECTED_CODES: &[&str] = &[
    "ValidationError",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "MissingParameter",
    "ReceiptHandleIsInvalid",
    "InvalidIdFormat",
    "InvalidAddress",
];

/// Classifies an error response by code, status and message. `what` names the
/// object for `NotFound`.
pub(crate) fn classify_response(
    region: &Region,
    operation: &'static str,
    status: Option<u16>,
    code: Option<&str>,
    message: String,
    what: impl FnOnce() -> String,
) -> AwsError {
    let region = region.clone();
    match code {
        Some(code) if THROTTLING_CODES.contains(&code) => AwsError::Throttled {
            region,
            operation,
            message: format!("{code}: {message}"),
        },
        Some(code) if DENIED_CODES.contains(&code) => AwsError::Denied {
            region,
            operation,
            message: format!("{code}: {message}"),
        },
        Some(code)
            if code.ends_with("NotFound")
                || code.contains("NotFoundException")
                || NOT_FOUND_CODES.contains(&code) =>
        {
            AwsError::NotFound {
                what: what(),
                message: format!("{code}: {message}"),
            }
        }
        Some("ValidationError") if message.contains("not found") => AwsError::NotFound {
            what: what(),
            message,
        },
        Some(code) if REJECTED_CODES.contains(&code) => AwsError::Rejected { operation, message },
        _ if status.is_some_and(|s| s >= 500) => AwsError::Unavailable {
            region,
            operation,
            message,
        },
        Some(code) => AwsError::Other {
            region,
            operation,
            message: format!("{code}: {message}"),
        },
        None => AwsError::Other {
            region,
            operation,
            message,
        },
    }
}

/// Classifies an SDK error (after the SDK's own retries).
pub(crate) fn from_sdk<E>(
    region: &Region,
    operation: &'static str,
    error: SdkError<E, HttpResponse>,
    what: impl FnOnce() -> String,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    match &error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let message = inner.message().unwrap_or("no message").to_owned();
            classify_response(region, operation, status, inner.code(), message, what)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            let message = DisplayErrorContext(&error).to_string();
            if message.contains("credentials") || message.contains("identity") {
                AwsError::Denied {
                    region: region.clone(),
                    operation,
                    message,
                }
            } else {
                AwsError::Unavailable {
                    region: region.clone(),
                    operation,
                    message,
                }
            }
        }
        SdkError::ResponseError(_) if status.is_some_and(|s| s >= 500) => AwsError::Unavailable {
            region: region.clone(),
            operation,
            message: DisplayErrorContext(&error).to_string(),
        },
        _ => {
            let message = DisplayErrorContext(&error).to_string();
            if message.contains("credentials") || message.contains("identity") {
                AwsError::Denied {
                    region: region.clone(),
                    operation,
                    message,
                }
            } else {
                AwsError::Other {
                    region: region.clone(),
                    operation,
                    message,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let r = Region::new("us-west-2");
        let what = || "group g".to_owned();
        let kind = |status, code, message: &str| {
            classify_response(&r, "Op", status, code, message.to_owned(), what).metric_label()
        };
        assert_eq!(
            kind(Some(400), Some("Throttling"), "Rate exceeded"),
            "throttled"
        );
        assert_eq!(
            kind(
                Some(503),
                Some("RequestLimitExceeded"),
                "Request limit exceeded."
            ),
            "throttled"
        );
        assert_eq!(kind(Some(500), Some("InternalFailure"), "x"), "unavailable");
        assert_eq!(kind(Some(502), None, "bad gateway"), "unavailable");
        assert_eq!(
            kind(
                Some(400),
                Some("ValidationError"),
                "New SetDesiredCapacity value 6 is above max value 5 for the AutoScalingGroup."
            ),
            "rejected"
        );
        assert_eq!(
            kind(
                Some(400),
                Some("ValidationError"),
                "AutoScalingGroup name not found - x"
            ),
            "not_found"
        );
        assert_eq!(
            kind(Some(400), Some("InvalidLaunchTemplateId.NotFound"), "x"),
            "not_found"
        );
        assert_eq!(kind(Some(403), Some("AccessDenied"), "x"), "denied");
        assert_eq!(kind(Some(400), Some("Weird"), "x"), "other");
        // SQS (JSON protocol codes).
        assert_eq!(
            kind(
                Some(400),
                Some("QueueDoesNotExist"),
                "The specified queue does not exist."
            ),
            "not_found"
        );
        assert_eq!(kind(Some(400), Some("RequestThrottled"), "x"), "throttled");
        assert_eq!(kind(Some(400), Some("KmsThrottled"), "x"), "throttled");
        assert_eq!(kind(Some(400), Some("KmsAccessDenied"), "x"), "denied");
        assert_eq!(
            kind(Some(400), Some("ReceiptHandleIsInvalid"), "x"),
            "rejected"
        );
        assert_eq!(kind(Some(500), Some("InternalError"), "x"), "unavailable");
    }
}
