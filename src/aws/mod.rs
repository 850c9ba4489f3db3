/*!
Building AWS clients: the standard credential chain and profiles, region from
flag, config or environment, `--endpoint-url` for emulators, and retries with
capped exponential backoff for throttling and server errors (see [`retry_config`]).
Clients are built only when a command needs them. [`AwsError`] carries the
service's code, message and request id, and says whether the failure was
transient (throttling, 5xx, no answer) so polling loops can keep going and the
`help:` line can tell "try again" from "fix something first".
*/

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::cli::Global;

/// Attempts per AWS call (the first one included).
pub const MAX_ATTEMPTS: u32 = 8;

/// Standard retry mode: every call is retried on throttling, 5xx and transport
/// errors up to [`MAX_ATTEMPTS`] times, with full-jitter exponential backoff from
/// 500 ms capped at 10 s (at most about 40 s of waiting per call). The SDK's default
/// of 3 attempts fails a run of ~60 calls often when a fifth of them are throttled;
/// with 8, a call fails only after 8 faults in a row. Standard rather than adaptive
/// mode: karpctl makes few calls, and adaptive's client-side rate limiter would
/// only add waits after the first throttle.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(500))
        .with_max_backoff(Duration::from_secs(10))
}

/// Loads the shared SDK config. `region` is the config file's region, used when
/// no `--region` flag is given.
pub async fn sdk_config(g: &Global, region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry_config());
    if let Some(p) = &g.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = g.region.as_deref().or(region) {
        loader = loader.region(Region::new(r.to_string()));
    }
    if let Some(e) = &g.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

/// An S3 client; path-style addressing when an endpoint override is set (emulators).
pub fn s3(cfg: &SdkConfig, g: &Global) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(cfg).force_path_style(g.endpoint_url.is_some()).build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub fn eks(cfg: &SdkConfig) -> aws_sdk_eks::Client {
    aws_sdk_eks::Client::new(cfg)
}

pub fn ssm(cfg: &SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(cfg)
}

/// An AWS call that failed, with the service's error code, message and request id.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {code}: {message}{}", request_id.as_deref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
pub struct AwsError {
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    /// The HTTP status of the last attempt, when there was an answer.
    pub status: Option<u16>,
}

/// Whether an error (anywhere in its chain) is a transient AWS failure, so a
/// polling loop may ask again instead of failing the step.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(AwsError::is_transient))
}

/// The fields of an ARN, `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE` (the
/// resource keeps any further colons). Parsing does not check the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// `None` when `s` has fewer than six colon-separated fields.
    pub fn parse(s: &'a str) -> Option<Arn<'a>> {
        let mut f = s.splitn(6, ':').skip(1);
        Some(Arn { partition: f.next()?, service: f.next()?, region: f.next()?, account: f.next()?, resource: f.next()? })
    }
}

/// Whether an error (anywhere in its chain) is AWS refusing a create because the
/// thing exists: after a retried create, usually what the first attempt made
/// (its answer was lost), so the step should look again rather than fail.
pub fn is_already_exists(e: &anyhow::Error) -> bool {
    const CODES: &[&str] = &["EntityAlreadyExists", "ResourceInUseException", "AlreadyExistsException", "ResourceAlreadyExistsException"];
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(|a| CODES.contains(&a.code.as_str())))
}

/// Error codes AWS services use for throttling and for their own failures.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "PriorConcurrentModificationException",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "InternalServerErrorException",
    "ServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServiceFailure",
    "RequestTimeout",
    "RequestTimeoutException",
    // No answer at all: connection refused or reset, a timeout.
    "RequestFailed",
];

impl AwsError {
    /// Throttling, a server error or no answer: the same call can succeed later.
    /// A transient error never means "not found" or "refused".
    pub fn is_transient(&self) -> bool {
        TRANSIENT_CODES.contains(&self.code.as_str()) || self.status.is_some_and(|s| s >= 500 || s == 429)
    }

    /// `cloudformation` of `cloudformation:CreateStack`.
    pub fn service(&self) -> &str {
        self.operation.split(':').next().unwrap_or(self.operation)
    }

    /// The next thing to do, for the `help:` line.
    pub fn help(&self) -> Option<String> {
        if self.is_transient() {
            return Some(format!(
                "AWS kept failing {} ({}) through {MAX_ATTEMPTS} attempts; this is on the {} side and usually passes: \
                 run `karpctl up` again in a minute (finished steps are skipped)",
                self.operation,
                self.code,
                self.service()
            ));
        }
        if self.code.contains("AccessDenied") || self.code == "UnauthorizedOperation" || self.code == "AuthorizationError" {
            return Some(format!(
                "allow {} for the caller karpctl runs as (`aws sts get-caller-identity` shows it), then run `karpctl up` again",
                self.operation
            ));
        }
        None
    }
}

impl AwsError {
    pub fn from_sdk<E>(operation: &'static str, e: &aws_sdk_ssm::error::SdkError<E, aws_sdk_ssm::config::http::HttpResponse>) -> AwsError
    where
        E: aws_sdk_ssm::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        use aws_sdk_ssm::operation::RequestId;
        let (code, message) = match e.as_service_error() {
            Some(se) => (
                se.code().unwrap_or("Unknown").to_string(),
                se.message().map(String::from).unwrap_or_else(|| se.to_string()),
            ),
            None => ("RequestFailed".to_string(), format!("{}", aws_sdk_ssm::error::DisplayErrorContext(e))),
        };
        let request_id = e.request_id().map(String::from);
        let status = e.raw_response().map(|r| r.status().as_u16());
        AwsError { operation, code, message, request_id, status }
    }
}

pub fn cloudformation(cfg: &SdkConfig) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::new(cfg)
}

pub fn ec2(cfg: &SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(cfg)
}

pub fn iam(cfg: &SdkConfig) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(cfg)
}

pub fn sts(cfg: &SdkConfig) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::new(cfg)
}

#[cfg(test)]
mod tests {
    use super::Arn;

    #[test]
    fn an_arn_splits_into_its_six_fields_and_the_resource_keeps_its_colons() {
        let a = Arn::parse("arn:aws-cn:eks:cn-north-1:123456789012:cluster/prod").unwrap();
        assert_eq!((a.partition, a.service, a.region, a.account, a.resource), ("aws-cn", "eks", "cn-north-1", "123456789012", "cluster/prod"));
        let iam = Arn::parse("arn:aws:iam::1:role/x").unwrap();
        assert_eq!((iam.region, iam.account, iam.resource), ("", "1", "role/x"));
        assert_eq!(Arn::parse("arn:aws:logs:us-east-1:1:log-group:g:*").unwrap().resource, "log-group:g:*");
        assert_eq!(Arn::parse("arn:aws:iam::1"), None);
        assert_eq!(Arn::parse(""), None);
    }
}
