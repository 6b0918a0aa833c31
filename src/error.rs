//! The crate's one public error type, and the per-source error that pollers report as data.

use std::fmt;
use std::sync::Arc;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

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

/// What kind of failure a source hit, by what happened (not by which call failed). Drives
/// back-off ([`ErrorKind::backs_off`]) and the suggested fix.
///
/// An AWS error is classified by its error code when the code is known (the codes are those the
/// AWS SDKs and the ECS and Cloud Map API references document), and otherwise by its HTTP status
/// ([`ErrorKind::from_http_status`]): an unknown code with a 4xx status is a [`ErrorKind::Client`]
/// error, not a server fault. In JSON each kind is its [`as_str`](ErrorKind::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// `throttled`: the API throttled us (ThrottlingException, HTTP 429, ...). The source backs
    /// off.
    Throttled,
    /// `access_denied`: IAM denied the call (AccessDeniedException, or HTTP 403 with an unknown
    /// code).
    AccessDenied,
    /// `credentials`: no usable, valid or unexpired credentials (ExpiredTokenException, HTTP 401).
    Credentials,
    /// `not_found`: the cluster, namespace or service does not exist (in that region), or the
    /// endpoint answered HTTP 404.
    NotFound,
    /// `invalid_request`: the request's parameters were rejected (InvalidParameterException,
    /// ValidationException), or the request could not be built.
    InvalidRequest,
    /// `client`: the remote refused the request as the caller's fault, for a reason not
    /// classified above: AWS's `ClientException`, any error code this crate does not know with a
    /// 4xx status, or a 4xx answer of the task metadata endpoint. Retrying sooner cannot help, so
    /// it does not back off.
    Client,
    /// `timeout`: no answer in time.
    Timeout,
    /// `unreachable`: the endpoint could not be reached (DNS, TCP, TLS): no HTTP answer at all.
    Unreachable,
    /// `service`: the remote answered with a server fault (HTTP 5xx, ServerException). The
    /// source backs off.
    Service,
    /// `malformed`: the answer could not be understood (truncated or malformed body).
    Malformed,
}

impl ErrorKind {
    /// A short stable name, as used in the JSON output (`throttled`, `access_denied`,
    /// `credentials`, `not_found`, `invalid_request`, `client`, `timeout`, `unreachable`,
    /// `service`, `malformed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::Credentials => "credentials",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Client => "client",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Service => "service",
            ErrorKind::Malformed => "malformed",
        }
    }

    /// Whether a source that failed this way backs off (skips polls for one to two intervals):
    /// only when the remote is overloaded, i.e. throttling and server faults. Every other kind is
    /// polled again at the next interval, since waiting longer does not change its answer.
    ///
    /// ```
    /// use ecs_peers::ErrorKind;
    /// assert!(ErrorKind::Throttled.backs_off() && ErrorKind::Service.backs_off());
    /// assert!(!ErrorKind::Client.backs_off() && !ErrorKind::AccessDenied.backs_off());
    /// ```
    pub fn backs_off(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Service)
    }

    /// The kind of an HTTP answer that carries no error code this crate knows, by its status
    /// (RFC 9110): 429 throttled, 401 credentials, 403 access denied, 404 not found, 408 timeout,
    /// any other 4xx a client error, 5xx a server fault. A 1xx-3xx status where an error was
    /// expected means the answer was not understood (malformed).
    ///
    /// ```
    /// use ecs_peers::ErrorKind;
    /// assert_eq!(ErrorKind::from_http_status(400), ErrorKind::Client);
    /// assert_eq!(ErrorKind::from_http_status(429), ErrorKind::Throttled);
    /// assert_eq!(ErrorKind::from_http_status(503), ErrorKind::Service);
    /// ```
    pub fn from_http_status(status: u16) -> ErrorKind {
        match status {
            429 => ErrorKind::Throttled,
            401 => ErrorKind::Credentials,
            403 => ErrorKind::AccessDenied,
            404 => ErrorKind::NotFound,
            408 => ErrorKind::Timeout,
            400..=499 => ErrorKind::Client,
            500..=599 => ErrorKind::Service,
            _ => ErrorKind::Malformed,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The underlying error a [`SourceError`] was made from (an SDK error, an I/O error).
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// One failed poll of one source: which AWS action failed, why, and what to do about it.
///
/// Displayed as `<action> failed (<kind>): <message>. Fix: <fix>`. Serialised as data,
/// `{"kind", "action", "message", "fix"}` (`fix` null when none can be named); the cause chain
/// is reachable through [`std::error::Error::source`] (the SDK's or the I/O layer's own error),
/// as `object_store` keeps it, and is not part of the JSON.
///
/// Two `SourceError`s are equal when they say the same thing (kind, action, message and fix);
/// the cause is not compared.
///
/// ```
/// use ecs_peers::{ErrorKind, SourceError};
/// let e = SourceError::new(ErrorKind::Client, "ecs:ListTasks", "ClientException: nope")
///     .with_fix("check the cluster name");
/// assert_eq!(e.to_string(), "ecs:ListTasks failed (client): ClientException: nope. Fix: check the cluster name");
/// assert_eq!(
///     serde_json::to_value(&e).unwrap(),
///     serde_json::json!({"kind": "client", "action": "ecs:ListTasks",
///                        "message": "ClientException: nope", "fix": "check the cluster name"})
/// );
/// ```
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceError {
    /// The failure's class.
    pub kind: ErrorKind,
    /// The IAM action that failed, e.g. `ecs:ListTasks` (`ecs:task-metadata` for the task
    /// metadata endpoint, `poll` for a poll that did not finish).
    pub action: &'static str,
    /// What the remote (AWS, the ECS agent) or the network said, in its own words.
    pub message: String,
    /// The likely fix, when one can be named.
    pub fix: Option<String>,
    /// The error this one was made from.
    #[serde(skip)]
    cause: Option<Cause>,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed ({}): {}",
            self.action,
            self.kind,
            self.message.trim_end_matches('.')
        )?;
        match &self.fix {
            Some(fix) => write!(f, ". Fix: {fix}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for SourceError {
    /// The error this one was made from (the SDK's error, an I/O error), itself, not wrapped.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for SourceError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.action == other.action
            && self.message == other.message
            && self.fix == other.fix
    }
}

impl Eq for SourceError {}

impl SourceError {
    /// An error of `kind` for `action`, with the remote's or the network's `message` (no fix,
    /// no cause yet).
    pub fn new(kind: ErrorKind, action: &'static str, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            action,
            message: message.into(),
            fix: None,
            cause: None,
        }
    }

    /// The same error, naming the fix.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// The credentials were sent and AWS did not recognise them where they were sent (one of
    /// [`UNRECOGNIZED_CREDENTIALS`]): invalid credentials, or a region that refuses valid ones
    /// (see [`region_refused_fix`]). Read from the code [`classify`] puts first in the message,
    /// so a failure received from another node (sharing) reads the same.
    pub(crate) fn unrecognized_credentials(&self) -> bool {
        self.kind == ErrorKind::Credentials
            && UNRECOGNIZED_CREDENTIALS.iter().any(|code| {
                self.message
                    .strip_prefix(code)
                    .is_some_and(|rest| rest.starts_with(':') || rest.starts_with(" ("))
            })
    }

    /// The same error, keeping the error it was made from as its
    /// [`source`](std::error::Error::source).
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }
}

/// Classifies an AWS SDK error into a [`SourceError`], keeping the SDK error as its cause.
///
/// `resource` is the IAM resource (and condition) the action needs, used in the AccessDenied fix;
/// `not_found` is the fix to name when the target does not exist.
pub(crate) fn classify<E>(
    err: SdkError<E, HttpResponse>,
    action: &'static str,
    resource: &str,
    not_found: &str,
) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    tracing::debug!(action, error = %aws_smithy_types::error::display::DisplayErrorContext(&err), "AWS call failed");
    let detail = chain(&err);
    let classified = match &err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let status = ctx.raw().status().as_u16();
            let message = match (e.code(), e.message()) {
                (Some(code), Some(m)) => format!("{code}: {m}"),
                (Some(code), None) => format!("{code} (HTTP {status}, no message)"),
                // No error code: the answer is not an AWS error document (a proxy, a load
                // balancer); keep what it said.
                (None, m) => format!(
                    "HTTP {status}: {}",
                    m.map(str::to_string)
                        .unwrap_or_else(|| excerpt(ctx.raw().body().bytes().unwrap_or_default()))
                ),
            };
            classify_code(e.code(), Some(status), action, message, resource, not_found)
        }
        SdkError::TimeoutError(_) => SourceError::new(ErrorKind::Timeout, action, detail)
            .with_fix(TIMEOUT_FIX),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            SourceError::new(ErrorKind::Timeout, action, detail).with_fix(TIMEOUT_FIX)
        }
        SdkError::DispatchFailure(_) => {
            if mentions_credentials(&detail) {
                credentials_error(action, detail)
            } else {
                let cause = innermost(&err);
                SourceError::new(ErrorKind::Unreachable, action, format!("cannot connect to the AWS endpoint: {cause}"))
                    .with_fix("the AWS endpoint cannot be reached; check DNS, the NAT gateway or VPC endpoint, and endpoint_url")
            }
        }
        // An error status whose body is not an AWS error document (a proxy's or a load
        // balancer's page): what happened is the status; keep what the body said.
        SdkError::ResponseError(ctx) if ctx.raw().status().is_client_error() || ctx.raw().status().is_server_error() => {
            let status = ctx.raw().status().as_u16();
            let message = format!(
                "HTTP {status}: {}",
                excerpt(ctx.raw().body().bytes().unwrap_or_default())
            );
            classify_code(None, Some(status), action, message, resource, not_found)
        }
        SdkError::ResponseError(_) => {
            SourceError::new(ErrorKind::Malformed, action, detail).with_fix(malformed_fix(action))
        }
        _ if mentions_credentials(&detail) => credentials_error(action, detail),
        // Built wrong, never sent: nothing the remote did, so nothing to back off from.
        SdkError::ConstructionFailure(_) => SourceError::new(ErrorKind::InvalidRequest, action, detail)
            .with_fix("the request could not be built (it was not sent); check endpoint_url and this source's settings"),
        _ => SourceError::new(ErrorKind::Service, action, detail)
            .with_fix(SERVICE_FIX),
    };
    classified.with_cause(err)
}

/// The error codes with which AWS says it does not recognise the credentials of a request:
/// awsJson services (ECS, Cloud Map) `UnrecognizedClientException` (HTTP 400, "The security
/// token included in the request is invalid"), query services `InvalidClientTokenId` (HTTP 403),
/// EC2 `AuthFailure` (HTTP 401). Invalid credentials are answered so, and so, with valid ones, is
/// every call to a region the account has not enabled, and every call with a version-1 session
/// token of the global STS endpoint to a region that is not enabled by default
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_region-endpoints.html>,
/// <https://docs.aws.amazon.com/accounts/latest/reference/manage-acct-regions.html>).
pub(crate) const UNRECOGNIZED_CREDENTIALS: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "AuthFailure",
];

/// The fix of unrecognised credentials when nothing shows whether they work elsewhere.
const UNRECOGNIZED_FIX: &str = "AWS did not recognise the credentials in this region. If they fail in every region, they are invalid: check the task role, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN. If they work in other regions, this region refuses them: either the account has not enabled it (every region launched since 2019 is opt-in: enable it under Account > AWS Regions in the console, or with aws account enable-region --region-name REGION), or they are version-1 session tokens from the global STS endpoint, which opt-in regions refuse (take them from a regional STS endpoint, e.g. AWS_STS_REGIONAL_ENDPOINTS=regional, or make the global endpoint issue version-2 tokens: aws iam set-security-token-service-preferences --global-endpoint-token-version v2Token)";

/// The fix of a source in `region` whose calls are refused as unrecognised credentials while the
/// same credentials work in `working` (other regions of the same partition, in this run): the
/// region is not enabled for the account, or the credentials are version-1 global STS tokens.
pub(crate) fn region_refused_fix(region: &str, working: &[&str]) -> String {
    format!(
        "{region} refuses the credentials that work in {} in this run: enable {region} for the account (regions launched since 2019 are opt-in: Account > AWS Regions in the console, or aws account enable-region --region-name {region}); if it is enabled, the credentials are version-1 session tokens from the global STS endpoint, which only regions enabled by default accept: take them from a regional STS endpoint (AWS_STS_REGIONAL_ENDPOINTS=regional, or sts_regional_endpoints = regional in the AWS config file) or make the global endpoint issue version-2 tokens (aws iam set-security-token-service-preferences --global-endpoint-token-version v2Token)",
        working.join(", ")
    )
}

const TIMEOUT_FIX: &str = "the AWS endpoint did not answer in time; check the route to it (NAT gateway or VPC endpoint) or raise poll_timeout";

const SERVICE_FIX: &str = "AWS answered with a server fault; ecs-peers backs off by itself (one to two intervals) and tries again; if it persists, check the AWS Health Dashboard for the region";

fn malformed_fix(action: &str) -> String {
    format!(
        "the answer was not a valid {action} response; something between ecs-peers and AWS may have altered or cut it (a proxy, or an endpoint_url that is not AWS): check endpoint_url and HTTPS_PROXY"
    )
}

/// At most 200 characters of a body, on one line, or `(empty body)`.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        None if line.is_empty() => "(empty body)".into(),
        None => line,
        Some((i, _)) => format!("{}…", &line[..i]),
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

/// The kind of policy whose explicit Deny AWS names in an AccessDenied message ("... with an
/// explicit deny in a service control policy"), or `None` when the message names none (an
/// implicit deny: no policy allows the action).
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html>
fn explicit_deny(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("explicit deny in ")?;
    let rest = rest
        .strip_prefix("an ")
        .or_else(|| rest.strip_prefix("a "))
        .unwrap_or(rest);
    let policy = rest.split(['.', ':', ';', ',']).next()?.trim();
    (!policy.is_empty()).then_some(policy)
}

/// The kind of a documented AWS error code, or `None` for a code this crate does not know.
fn kind_of_code(code: &str) -> Option<ErrorKind> {
    Some(match code {
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
        | "RequestExpired"
        | "AuthFailure" => ErrorKind::Credentials,
        "ClusterNotFoundException"
        | "ServiceNotFoundException"
        | "ServiceNotFound"
        | "NamespaceNotFound"
        | "InvalidInstanceID.NotFound"
        | "ResourceNotFoundException" => ErrorKind::NotFound,
        "InvalidParameterException" | "InvalidInput" | "ValidationException" => {
            ErrorKind::InvalidRequest
        }
        // ECS: "caused by a client action" (an identifier that is not valid, an action on a
        // resource the caller may not use). The caller must change something.
        "ClientException" | "UnsupportedFeatureException" => ErrorKind::Client,
        "RequestTimeout" | "RequestTimeoutException" => ErrorKind::Timeout,
        "ServerException"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalServiceError"
        | "InternalError" => ErrorKind::Service,
        _ => return None,
    })
}

/// Classifies an AWS error answer by its code (when known), else by its HTTP `status` (see
/// [`ErrorKind::from_http_status`]; no status at all counts as a server fault), and names the fix.
pub(crate) fn classify_code(
    code: Option<&str>,
    status: Option<u16>,
    action: &'static str,
    message: String,
    resource: &str,
    not_found: &str,
) -> SourceError {
    let kind = code
        .and_then(kind_of_code)
        .or(status.map(ErrorKind::from_http_status))
        .unwrap_or(ErrorKind::Service);
    let err = SourceError::new(kind, action, message);
    match kind {
        ErrorKind::AccessDenied => match explicit_deny(&err.message) {
            // A Deny wins over every Allow: granting the action cannot help.
            Some(policy) => {
                let fix = format!(
                    "an explicit Deny in {policy} refuses {action}, so granting it to the role cannot help: find that Deny statement (a service control policy often allows only some regions through aws:RequestedRegion) and exempt {resource}"
                );
                err.with_fix(fix)
            }
            None => err.with_fix(format!(
                "grant {action} to the task role, with {resource} (see examples/iam-policy.json)"
            )),
        },
        ErrorKind::Credentials if code.is_some_and(|c| UNRECOGNIZED_CREDENTIALS.contains(&c)) => {
            err.with_fix(UNRECOGNIZED_FIX)
        }
        ErrorKind::Credentials => err.with_fix(
            "the AWS credentials are invalid or expired: check the task role, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN",
        ),
        ErrorKind::NotFound => err.with_fix(not_found.to_string()),
        ErrorKind::Throttled => err.with_fix(
            "AWS is rate-limiting this account and region; ecs-peers backs off by itself (up to two intervals); if it persists, raise polling_interval: every node calls every region about once per 100 tasks per interval",
        ),
        ErrorKind::InvalidRequest => err.with_fix(format!(
            "AWS rejected the parameters of {action}; check this source's settings (cluster, service, family, namespace, region) against AWS's message"
        )),
        ErrorKind::Client => err.with_fix(format!(
            "AWS refused {action} as a client error: act on AWS's message (usually this source's settings, or the account's setup of the service); it is not a rate limit, so ecs-peers does not back off and asks again every interval"
        )),
        ErrorKind::Timeout => err.with_fix(TIMEOUT_FIX),
        ErrorKind::Service => err.with_fix(SERVICE_FIX),
        ErrorKind::Malformed => err.with_fix(malformed_fix(action)),
        ErrorKind::Unreachable => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_denied_names_action_and_resource() {
        let e = classify_code(
            Some("AccessDeniedException"),
            Some(400),
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
    fn unrecognised_credentials_name_the_region_causes_beside_invalid_credentials() {
        for (code, status) in [
            ("UnrecognizedClientException", 400),
            ("InvalidClientTokenId", 403),
            ("AuthFailure", 401),
        ] {
            let e = classify_code(
                Some(code),
                Some(status),
                "ecs:ListTasks",
                format!("{code}: The security token included in the request is invalid."),
                "",
                "",
            );
            assert_eq!(e.kind, ErrorKind::Credentials, "{code}");
            assert!(e.unrecognized_credentials(), "{code}");
            let fix = e.fix.as_deref().unwrap();
            for remedy in [
                "invalid",
                "aws account enable-region",
                "AWS_STS_REGIONAL_ENDPOINTS=regional",
                "--global-endpoint-token-version v2Token",
            ] {
                assert!(fix.contains(remedy), "{code}: {fix}");
            }
        }
        // Expired credentials are not a region's refusal.
        let expired = classify_code(
            Some("ExpiredTokenException"),
            Some(400),
            "ecs:ListTasks",
            "ExpiredTokenException: The security token included in the request is expired".into(),
            "",
            "",
        );
        assert!(!expired.unrecognized_credentials());
        assert!(!expired.fix.unwrap().contains("enable-region"));
    }

    #[test]
    fn an_explicit_deny_is_not_fixed_by_granting_the_action() {
        let e = classify_code(
            Some("AccessDeniedException"),
            Some(400),
            "ecs:ListTasks",
            "AccessDeniedException: User: arn:aws:sts::1:assumed-role/app/t is not authorized to perform: ecs:ListTasks on resource: arn:aws:ecs:ap-east-1:1:container-instance/web/* with an explicit deny in a service control policy".into(),
            "Resource \"arn:aws:ecs:ap-east-1:1:task/web/*\"",
            "",
        );
        let fix = e.fix.unwrap();
        assert!(
            fix.starts_with("an explicit Deny in service control policy refuses ecs:ListTasks, so granting it to the role cannot help"),
            "{fix}"
        );
        assert!(fix.contains("aws:RequestedRegion"), "{fix}");
        assert_eq!(
            explicit_deny("... with an explicit deny in an identity-based policy"),
            Some("identity-based policy")
        );
        assert_eq!(
            explicit_deny("because no identity-based policy allows the ecs:ListTasks action"),
            None
        );
    }

    #[test]
    fn throttling_codes_are_throttled() {
        for code in [
            "ThrottlingException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
        ] {
            let e = classify_code(
                Some(code),
                Some(400),
                "ecs:ListTasks",
                String::new(),
                "",
                "",
            );
            assert_eq!(e.kind, ErrorKind::Throttled, "{code}");
        }
        let e = classify_code(
            Some("ServerException"),
            Some(500),
            "ecs:ListTasks",
            String::new(),
            "",
            "",
        );
        assert_eq!(e.kind, ErrorKind::Service);
    }

    #[test]
    fn not_found_carries_the_given_fix() {
        let e = classify_code(
            Some("ClusterNotFoundException"),
            Some(400),
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

    #[test]
    fn unknown_codes_are_classified_by_http_status_and_only_overload_backs_off() {
        let of = |code: &str, status: u16| {
            classify_code(
                Some(code),
                Some(status),
                "ecs:ListTasks",
                String::new(),
                "",
                "",
            )
        };
        // A documented client error, and codes this crate has never seen: not server faults.
        for (code, status) in [
            ("ClientException", 400),
            ("SomethingNewException", 400),
            ("SomethingNewException", 409),
        ] {
            let e = of(code, status);
            assert_eq!(e.kind, ErrorKind::Client, "{code} {status}");
            assert!(!e.kind.backs_off(), "{code} {status} backs off");
            assert!(
                e.fix.as_deref().unwrap().contains("does not back off"),
                "{e}"
            );
        }
        assert_eq!(of("SomethingNewException", 503).kind, ErrorKind::Service);
        assert_eq!(of("SomethingNewException", 429).kind, ErrorKind::Throttled);
        assert_eq!(
            of("SomethingNewException", 403).kind,
            ErrorKind::AccessDenied
        );
        // A known code wins over its status.
        assert_eq!(of("ThrottlingException", 400).kind, ErrorKind::Throttled);
        assert!(of("ThrottlingException", 400).kind.backs_off());
        assert!(of("ServerException", 500).kind.backs_off());
        // No code and no status: the old rule (a server fault).
        let e = classify_code(None, None, "ecs:ListTasks", String::new(), "", "");
        assert_eq!(e.kind, ErrorKind::Service);
    }

    #[test]
    fn every_kind_has_a_stable_snake_case_name_in_json() {
        let all = [
            (ErrorKind::Throttled, "throttled"),
            (ErrorKind::AccessDenied, "access_denied"),
            (ErrorKind::Credentials, "credentials"),
            (ErrorKind::NotFound, "not_found"),
            (ErrorKind::InvalidRequest, "invalid_request"),
            (ErrorKind::Client, "client"),
            (ErrorKind::Timeout, "timeout"),
            (ErrorKind::Unreachable, "unreachable"),
            (ErrorKind::Service, "service"),
            (ErrorKind::Malformed, "malformed"),
        ];
        for (kind, name) in all {
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
    }

    #[test]
    fn a_source_error_is_data_and_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = SourceError::new(ErrorKind::Unreachable, "ecs:ListTasks", "cannot connect")
            .with_fix("check DNS")
            .with_cause(io);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"kind": "unreachable", "action": "ecs:ListTasks",
                               "message": "cannot connect", "fix": "check DNS"})
        );
        let cause = std::error::Error::source(&e).expect("the cause is kept");
        assert_eq!(cause.to_string(), "refused");
        // Equality is by what the error says; a clone keeps the cause.
        let same = SourceError::new(ErrorKind::Unreachable, "ecs:ListTasks", "cannot connect")
            .with_fix("check DNS");
        assert_eq!(e, same);
        assert!(std::error::Error::source(&e.clone()).is_some());
        assert_ne!(e, same.with_fix("other"));
        let no_fix = SourceError::new(ErrorKind::Unreachable, "x", "y");
        assert_eq!(
            serde_json::to_value(&no_fix).unwrap()["fix"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt(b""), "(empty body)");
        assert_eq!(
            excerpt(b"<html>\n  <b>Forbidden</b>\n</html>"),
            "<html> <b>Forbidden</b> </html>"
        );
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), 201);
    }
}
