//! The crate's one public error type, and the per-source error that pollers report as data.

use std::fmt;

/// Everything that can go wrong in ecs-peers outside a single source's poll.
///
/// A failing *source* is not an `Error`: it is reported in
/// [`SourceStatus`](crate::SourceStatus) while the source keeps its last-known peers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected. `key` is the path of the offending key
    /// (`sources[1].region`, `polling_interval`), and the message names the bad value and what
    /// is expected instead.
    #[error("{key}: {message}")]
    Config {
        /// Path of the offending key, e.g. `sources[0].cluster`.
        key: String,
        /// What was wrong and what is expected.
        message: String,
    },
    /// A configuration file could not be read or parsed.
    #[error("cannot read config file {path}: {message}")]
    ConfigFile {
        /// The file that was given.
        path: String,
        /// The I/O or syntax error.
        message: String,
    },
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// What kind of failure a source hit. Drives back-off and the suggested fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The API throttled us (ThrottlingException, HTTP 429, ...). The source backs off.
    Throttled,
    /// IAM denied the call.
    AccessDenied,
    /// No usable, valid or unexpired credentials.
    Credentials,
    /// The cluster, namespace or service does not exist (in that region).
    NotFound,
    /// AWS rejected the request's parameters.
    InvalidRequest,
    /// No answer in time.
    Timeout,
    /// The endpoint could not be reached (DNS, TCP, TLS).
    Unreachable,
    /// AWS answered with a server error (5xx).
    Service,
    /// The answer could not be understood (truncated or malformed body).
    Malformed,
}

impl ErrorKind {
    /// A short stable name, as used in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::Credentials => "credentials",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Service => "service",
            ErrorKind::Malformed => "malformed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed poll of one source: which AWS action failed, why, and what to do about it.
/// Serialized as data, `{"kind", "action", "message", "fix"}`, so nothing parses the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{action} failed ({kind}): {}{}", message.trim_end_matches('.'), fix.as_ref().map(|f| format!(". Fix: {f}")).unwrap_or_default())]
pub struct SourceError {
    /// The failure's class.
    pub kind: ErrorKind,
    /// The IAM action that failed, e.g. `ecs:ListTasks`.
    pub action: &'static str,
    /// What AWS (or the network) said.
    pub message: String,
    /// The likely fix, when one can be named.
    pub fix: Option<String>,
}

impl SourceError {
    pub(crate) fn new(kind: ErrorKind, action: &'static str, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            action,
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Classifies an AWS SDK error into a [`SourceError`].
///
/// `resource` is the IAM resource (and condition) the action needs, used in the AccessDenied fix;
/// `not_found` is the fix to name when the target does not exist.
pub(crate) fn classify<E, R>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
    action: &'static str,
    resource: &str,
    not_found: &str,
) -> SourceError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    tracing::debug!(action, error = %aws_smithy_types::error::display::DisplayErrorContext(err), "AWS call failed");
    let detail = chain(err);
    match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let code = e.code().unwrap_or("Unknown");
            let message = format!("{code}: {}", e.message().unwrap_or("(no message)"));
            classify_code(code, action, message, resource, not_found)
        }
        SdkError::TimeoutError(_) => SourceError::new(ErrorKind::Timeout, action, detail)
            .with_fix("the AWS endpoint did not answer in time; check the route to it (NAT gateway or VPC endpoint) or raise poll_timeout"),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            SourceError::new(ErrorKind::Timeout, action, detail)
                .with_fix("the AWS endpoint did not answer in time; check the route to it (NAT gateway or VPC endpoint)")
        }
        SdkError::DispatchFailure(_) => {
            if mentions_credentials(&detail) {
                credentials_error(action, detail)
            } else {
                let cause = innermost(err);
                SourceError::new(ErrorKind::Unreachable, action, format!("cannot connect to the AWS endpoint: {cause}"))
                    .with_fix("the AWS endpoint cannot be reached; check DNS, the NAT gateway or VPC endpoint, and endpoint_url")
            }
        }
        SdkError::ConstructionFailure(_) if mentions_credentials(&detail) => {
            credentials_error(action, detail)
        }
        SdkError::ResponseError(_) => SourceError::new(ErrorKind::Malformed, action, detail),
        _ if mentions_credentials(&detail) => credentials_error(action, detail),
        _ => SourceError::new(ErrorKind::Service, action, detail),
    }
}

/// The error's messages, outermost first, joined with ": " (no Debug dumps).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if parts.last() != Some(&msg) && !msg.is_empty() {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The innermost cause's message, e.g. `Connection refused (os error 111)`.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn mentions_credentials(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("credential") || d.contains("no provider")
}

fn credentials_error(action: &'static str, detail: String) -> SourceError {
    SourceError::new(ErrorKind::Credentials, action, detail).with_fix(
        "provide AWS credentials: the ECS task role (task definition taskRoleArn), AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    )
}

/// Maps an AWS error code to a kind and a fix.
pub(crate) fn classify_code(
    code: &str,
    action: &'static str,
    message: String,
    resource: &str,
    not_found: &str,
) -> SourceError {
    let kind = match code {
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "SlowDown"
        | "PriorRequestNotComplete"
        | "ProvisionedThroughputExceededException"
        | "BandwidthLimitExceeded"
        | "LimitExceededException"
        | "EC2ThrottledException"
        | "TransactionInProgressException"
        | "RequestLimitExceededException" => ErrorKind::Throttled,
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
            ErrorKind::AccessDenied
        }
        "ExpiredTokenException"
        | "ExpiredToken"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "InvalidClientTokenId"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "SignatureDoesNotMatch"
        | "RequestExpired" => ErrorKind::Credentials,
        "ClusterNotFoundException"
        | "ServiceNotFoundException"
        | "ServiceNotFound"
        | "NamespaceNotFound"
        | "ResourceNotFoundException" => ErrorKind::NotFound,
        "InvalidParameterException" | "InvalidInput" | "ValidationException" => {
            ErrorKind::InvalidRequest
        }
        "RequestTimeout" | "RequestTimeoutException" => ErrorKind::Timeout,
        "ServerException"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalServiceError"
        | "InternalError" => ErrorKind::Service,
        _ => ErrorKind::Service,
    };
    let err = SourceError::new(kind, action, message);
    match kind {
        ErrorKind::AccessDenied => err.with_fix(format!(
            "grant {action} to the task role, with {resource} (see examples/iam-policy.json)"
        )),
        ErrorKind::Credentials => err.with_fix(
            "the AWS credentials are invalid or expired: check the task role, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN",
        ),
        ErrorKind::NotFound => err.with_fix(not_found.to_string()),
        ErrorKind::Throttled => err.with_fix(
            "AWS is rate-limiting this account and region; ecs-peers backs off by itself (up to two intervals); if it persists, raise polling_interval: every node calls every region about once per 100 tasks per interval",
        ),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_denied_names_action_and_resource() {
        let e = classify_code(
            "AccessDeniedException",
            "ecs:ListTasks",
            "User: x is not authorized".into(),
            "Resource \"arn:aws:ecs:eu-west-2:*:task/web/*\"",
            "",
        );
        assert_eq!(e.kind, ErrorKind::AccessDenied);
        let text = e.to_string();
        assert!(
            text.contains(
                "Fix: grant ecs:ListTasks to the task role, with Resource \"arn:aws:ecs:eu-west-2:*:task/web/*\""
            ),
            "{text}"
        );
    }

    #[test]
    fn throttling_codes_are_throttled() {
        for code in [
            "ThrottlingException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
        ] {
            let e = classify_code(code, "ecs:ListTasks", String::new(), "", "");
            assert_eq!(e.kind, ErrorKind::Throttled, "{code}");
        }
        let e = classify_code("ServerException", "ecs:ListTasks", String::new(), "", "");
        assert_eq!(e.kind, ErrorKind::Service);
    }

    #[test]
    fn not_found_carries_the_given_fix() {
        let e = classify_code(
            "ClusterNotFoundException",
            "ecs:ListTasks",
            "Cluster not found.".into(),
            "",
            "cluster \"web\" does not exist in eu-west-2",
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e
            .to_string()
            .ends_with("Fix: cluster \"web\" does not exist in eu-west-2"));
    }
}
