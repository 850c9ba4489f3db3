/*!
Building AWS clients: the standard credential chain and profiles, region from
flag, config or environment, `--endpoint-url` for emulators, and retries with
capped exponential backoff for throttling and server errors (see [`retry_config`]).
Clients are built only when a command needs them. [`AwsError`] carries the
service's code, message and request id, and says whether the failure was
transient (throttling, 5xx, no answer) so polling loops can keep going and the
`help:` line can tell "try again" from "fix something first".
*/

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryClassifierPriority};

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

/// A failed DNS lookup of the endpoint's host is not retried: the host of a region
/// AWS does not have never resolves, and without DNS at all the next attempt fails
/// the same way — eight attempts only added 12–20 s of backoff before the same error.
/// (The SDK retries every transport error, this one included.)
#[derive(Debug, Default)]
pub struct NoRetryWithoutDns;

impl ClassifyRetry for NoRetryWithoutDns {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.output_or_error() {
            Some(Err(e)) if e.as_connector_error().is_some_and(|c| dns_failure(c)) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }
    fn name(&self) -> &'static str {
        "karpctl: no retry without DNS"
    }
    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// Whether an error's chain holds a failed DNS lookup: the SDK's own resolver
/// error, or hyper-util's connector error for it (the default HTTPS client's,
/// whose type is not public: it says `dns error`).
fn dns_failure(e: &(dyn StdError + 'static)) -> bool {
    chain(e).any(|c| c.is::<aws_smithy_runtime_api::client::dns::ResolveDnsError>() || c.to_string() == "dns error")
}

fn chain<'a>(e: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |c: &&'a (dyn StdError + 'static)| (*c).source())
}

/// Where the AWS settings of this run come from, for error messages: the region and
/// whose credentials (`region us-west-2 (cluster.region), profile default`).
static ORIGIN: Mutex<Option<String>> = Mutex::new(None);

/// `-v`: AWS errors end with the SDK's own description of the failure.
static SDK_DETAIL: AtomicBool = AtomicBool::new(false);

/// Set once by `main` from `-v`.
pub fn show_sdk_detail(on: bool) {
    SDK_DETAIL.store(on, Ordering::Relaxed);
}

fn origin(g: &Global, config_region: Option<&str>, resolved: Option<&str>) -> String {
    let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let region = match (g.region.as_deref(), config_region, resolved) {
        (Some(r), _, _) => format!("region {r} (--region)"),
        (None, Some(r), _) => format!("region {r} (cluster.region)"),
        (None, None, Some(r)) if env("AWS_REGION") => format!("region {r} (AWS_REGION)"),
        (None, None, Some(r)) if env("AWS_DEFAULT_REGION") => format!("region {r} (AWS_DEFAULT_REGION)"),
        (None, None, Some(r)) => format!("region {r} (from the profile)"),
        (None, None, None) => "no region".to_string(),
    };
    let who = match &g.profile {
        Some(p) => format!("profile {p}"),
        None if env("AWS_ACCESS_KEY_ID") => "credentials from AWS_ACCESS_KEY_ID".to_string(),
        None => "profile default".to_string(),
    };
    match &g.endpoint_url {
        Some(e) => format!("{region}, {who}, endpoint {e}"),
        None => format!("{region}, {who}"),
    }
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
    let sdk = loader.load().await;
    let resolved = sdk.region().map(|r| r.to_string());
    *ORIGIN.lock().unwrap_or_else(|p| p.into_inner()) = Some(origin(g, region, resolved.as_deref()));
    sdk
}

/// An S3 client; path-style addressing when an endpoint override is set (emulators).
pub fn s3(cfg: &SdkConfig, g: &Global) -> aws_sdk_s3::Client {
    let conf =
        aws_sdk_s3::config::Builder::from(cfg).force_path_style(g.endpoint_url.is_some()).retry_classifier(NoRetryWithoutDns).build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub fn eks(cfg: &SdkConfig) -> aws_sdk_eks::Client {
    aws_sdk_eks::Client::from_conf(aws_sdk_eks::config::Builder::from(cfg).retry_classifier(NoRetryWithoutDns).build())
}

pub fn ssm(cfg: &SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::from_conf(aws_sdk_ssm::config::Builder::from(cfg).retry_classifier(NoRetryWithoutDns).build())
}

/// Why AWS could not be asked at all. None of these is the service's answer
/// about a resource, so they are reported in words with the region and profile
/// used, and the `help:` line says what to fix rather than which step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials anywhere in the chain (environment, profile, SSO, web identity, instance role).
    NoCredentials,
    /// A credential provider failed (an expired SSO session, a failing `credential_process`).
    CredentialsFailed,
    /// AWS refused the credentials (expired, unknown or wrongly signed).
    CredentialsRefused,
    /// No region is configured anywhere.
    NoRegion,
    /// The endpoint's host name does not resolve: a region AWS does not have, or no DNS.
    NoSuchHost,
    /// Nothing answered at the endpoint (connection refused, timed out), after every retry.
    Unreachable,
}

/// Error codes with which AWS refuses the credentials themselves.
const CREDENTIAL_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "AuthFailure",
    "IncompleteSignature",
];

/// The regions AWS had when this list was written (2026-12), to tell a mistyped
/// region from a network without DNS when an endpoint does not resolve. A region
/// added later still works; it only gets the "no DNS" wording if DNS fails.
const KNOWN_REGIONS: &[&str] = &[
    "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
    "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
    "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1",
    "eu-west-2", "eu-west-3", "eusc-de-east-1", "il-central-1", "me-central-1", "me-south-1", "mx-central-1", "sa-east-1",
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "us-gov-east-1", "us-gov-west-1", "cn-north-1", "cn-northwest-1",
];

/// Whether `region` is one AWS had when karpctl was written ([`KNOWN_REGIONS`]).
pub fn known_region(region: &str) -> bool {
    KNOWN_REGIONS.contains(&region)
}

/// The region of the last SDK config loaded, as `origin` named it.
fn origin_region() -> Option<String> {
    let o = ORIGIN.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
    o.strip_prefix("region ")?.split_whitespace().next().map(String::from)
}

/// A failure before any answer, in words: which [`Access`] problem (if it is
/// one) and a one-line message.
fn classify_no_answer(e: &(dyn StdError + 'static)) -> (Option<Access>, String) {
    use aws_credential_types::provider::error::CredentialsError;
    for c in chain(e) {
        if let Some(ce) = c.downcast_ref::<CredentialsError>() {
            return match ce {
                CredentialsError::CredentialsNotLoaded(_) => (Some(Access::NoCredentials), "no AWS credentials found".into()),
                other => {
                    let inner = chain(other).last().map(|i| i.to_string()).unwrap_or_default();
                    (Some(Access::CredentialsFailed), format!("the AWS credentials could not be loaded: {}", first_line(&inner)))
                }
            };
        }
    }
    let texts: Vec<String> = chain(e).map(|c| c.to_string().to_lowercase()).collect();
    if texts.iter().any(|t| t.contains("missing region") || t.contains("region must be set") || t.contains("no region")) {
        return (Some(Access::NoRegion), "no AWS region is set".into());
    }
    if dns_failure(e) {
        let why = match origin_region() {
            Some(r) if !known_region(&r) => format!("the endpoint does not resolve: {r} is not an AWS region karpctl knows"),
            Some(r) => format!("the endpoint for {r} does not resolve (no DNS answer: offline, or a proxy is needed?)"),
            None => "the endpoint does not resolve (no DNS answer)".into(),
        };
        return (Some(Access::NoSuchHost), why);
    }
    for c in chain(e) {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            let what = match io.kind() {
                ConnectionRefused => Some("connection refused"),
                TimedOut => Some("timed out"),
                ConnectionReset | ConnectionAborted => Some("connection reset"),
                HostUnreachable | NetworkUnreachable => Some("network unreachable"),
                _ => None,
            };
            if let Some(w) = what {
                return (Some(Access::Unreachable), format!("no answer from the endpoint ({w})"));
            }
        }
    }
    let innermost = chain(e).last().map(|i| i.to_string()).unwrap_or_default();
    (None, format!("the request failed without an answer: {}", first_line(&innermost)))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// An AWS call that failed, with the service's error code, message and request id;
/// or, when AWS could not be asked at all, what stood in the way ([`Access`]) in
/// words, with the region and profile used. The SDK's own description of the
/// failure (`detail`) is shown only with `-v`.
#[derive(Debug, Clone)]
pub struct AwsError {
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    /// The HTTP status of the last attempt, when there was an answer.
    pub status: Option<u16>,
    /// Set when the call never reached a service that could answer it.
    pub access: Option<Access>,
    /// Where the call went and the SDK's own words (boxed: errors travel in `Result`s).
    pub context: Box<CallContext>,
}

/// What an [`AwsError`] says beyond the service's answer.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Region, credentials and endpoint of the call (`region x (--region), profile p`).
    pub origin: Option<String>,
    /// The SDK's error with all its causes (shown with `-v`).
    pub detail: String,
}

impl AwsError {
    /// What went wrong without the operation: the code and message, or for an
    /// [`Access`] problem the words with the region and profile used; with `-v`
    /// the SDK's own description on a second line.
    pub fn words(&self) -> String {
        let mut s = match self.access {
            Some(_) => self.message.clone(),
            None => format!("{}: {}", self.code, self.message),
        };
        if let Some(r) = &self.request_id {
            s.push_str(&format!(" (request id {r})"));
        }
        if let (Some(_), Some(o)) = (self.access, &self.context.origin) {
            s.push_str(&format!(" ({o})"));
        }
        if SDK_DETAIL.load(Ordering::Relaxed) && !self.context.detail.is_empty() {
            s.push_str(&format!("\n  AWS SDK: {}", self.context.detail));
        }
        s
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.operation, self.words())
    }
}

impl StdError for AwsError {}

/// The [`Access`] problem behind an error, if any (anywhere in its chain).
pub fn access_failure(e: &anyhow::Error) -> Option<&AwsError> {
    e.chain().find_map(|c| {
        c.downcast_ref::<AwsError>()
            .or_else(|| match c.downcast_ref::<crate::amis::AmiError>() {
                Some(crate::amis::AmiError::Aws(a)) => Some(a),
                _ => None,
            })
            .filter(|a| a.access.is_some())
    })
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
    /// A transient error never means "not found" or "refused". Missing
    /// credentials, a region, or a host name that does not resolve are not.
    pub fn is_transient(&self) -> bool {
        if matches!(self.access, Some(a) if a != Access::Unreachable) {
            return false;
        }
        TRANSIENT_CODES.contains(&self.code.as_str()) || self.status.is_some_and(|s| s >= 500 || s == 429)
    }

    /// `cloudformation` of `cloudformation:CreateStack`.
    pub fn service(&self) -> &str {
        self.operation.split(':').next().unwrap_or(self.operation)
    }

    /// The next thing to do, for the `help:` line.
    pub fn help(&self) -> Option<String> {
        match self.access {
            Some(Access::NoCredentials | Access::CredentialsFailed | Access::CredentialsRefused) => {
                return Some(
                    "log in (`aws sso login --profile NAME`, or export AWS_PROFILE / AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), then `karpctl doctor` checks the credentials"
                        .into(),
                )
            }
            Some(Access::NoRegion) => return Some("set cluster.region in the config file, or pass --region (or export AWS_REGION)".into()),
            Some(Access::NoSuchHost) => {
                return Some(match origin_region() {
                    Some(r) if !known_region(&r) => {
                        format!("correct the region ({r}): --region, cluster.region or AWS_REGION, e.g. us-west-2; `karpctl doctor` checks it")
                    }
                    _ => "check the network and DNS (or HTTPS_PROXY), then `karpctl doctor`".into(),
                })
            }
            Some(Access::Unreachable) => {
                return Some("check the network, or the endpoint (--endpoint-url, AWS_ENDPOINT_URL), then `karpctl doctor`".into())
            }
            None => {}
        }
        if CREDENTIAL_CODES.contains(&self.code.as_str()) {
            return Some("log in again (`aws sso login --profile NAME`, or fresh AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN), then `karpctl doctor`".into());
        }
        if self.is_transient() {
            return Some(format!(
                "AWS kept failing {} ({}) through {MAX_ATTEMPTS} attempts; this is on the {} side and usually passes: \
                 run the same command again in a minute (`karpctl up` and `karpctl rollback` skip the steps that finished)",
                self.operation,
                self.code,
                self.service()
            ));
        }
        if self.code.contains("AccessDenied") || self.code == "UnauthorizedOperation" || self.code == "AuthorizationError" {
            return Some(format!(
                "allow {} for the caller karpctl runs as (`aws sts get-caller-identity` shows it), then run the same command again",
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
        use aws_sdk_ssm::error::SdkError;
        use aws_sdk_ssm::operation::RequestId;
        let status = e.raw_response().map(|r| r.status().as_u16());
        let detail = format!("{}", aws_sdk_ssm::error::DisplayErrorContext(e));
        let (code, message, access) = match e {
            SdkError::ServiceError(_) => {
                let se = e.as_service_error().expect("a service error");
                let code = se.code().unwrap_or("Unknown").to_string();
                let message = match se.message() {
                    Some(m) => m.to_string(),
                    // No AWS error in the answer: a proxy's page, or not an AWS endpoint.
                    None => format!("HTTP {} without an AWS error in the answer", status.map(|s| s.to_string()).unwrap_or_else(|| "?".into())),
                };
                let access = CREDENTIAL_CODES.contains(&code.as_str()).then_some(Access::CredentialsRefused);
                (code, message, access)
            }
            SdkError::TimeoutError(_) => ("RequestFailed".to_string(), "no answer from the endpoint (timed out)".to_string(), Some(Access::Unreachable)),
            SdkError::ResponseError(_) => (
                "RequestFailed".to_string(),
                format!("an answer karpctl could not read (HTTP {})", status.map(|s| s.to_string()).unwrap_or_else(|| "?".into())),
                None,
            ),
            _ => {
                let (access, message) = match e.source() {
                    Some(src) => classify_no_answer(src),
                    None => (None, first_line(&e.to_string()).to_string()),
                };
                let code = match access {
                    Some(Access::NoCredentials | Access::CredentialsFailed) => "NoCredentials",
                    Some(Access::NoRegion) => "NoRegion",
                    Some(Access::NoSuchHost) => "NoSuchHost",
                    _ => "RequestFailed",
                };
                (code.to_string(), message, access)
            }
        };
        let request_id = e.request_id().map(String::from);
        let origin = access.and(ORIGIN.lock().unwrap_or_else(|p| p.into_inner()).clone());
        AwsError { operation, code, message, request_id, status, access, context: Box::new(CallContext { origin, detail }) }
    }
}

pub fn cloudformation(cfg: &SdkConfig) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::from_conf(aws_sdk_cloudformation::config::Builder::from(cfg).retry_classifier(NoRetryWithoutDns).build())
}

pub fn ec2(cfg: &SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::config::Builder::from(cfg).retry_classifier(NoRetryWithoutDns).build())
}

pub fn iam(cfg: &SdkConfig) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::from_conf(aws_sdk_iam::config::Builder::from(cfg).retry_classifier(NoRetryWithoutDns).build())
}

pub fn sts(cfg: &SdkConfig) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(cfg).retry_classifier(NoRetryWithoutDns).build())
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
