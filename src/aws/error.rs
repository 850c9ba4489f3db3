/*!
What a failed AWS call means, in one place: [`AwsError`] (the service's code,
message and request id, or the [`Access`] problem that kept the call from any
service, in words with the region and profile used) and every question karpctl
asks of one — transient or not, "no such thing", "already exists", "no updates",
"in use", and the `help:` line that says what to do next.
*/

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::MAX_ATTEMPTS;

/// Whether an error's chain holds a failed DNS lookup: the SDK's own resolver
/// error, or hyper-util's connector error for it (the default HTTPS client's,
/// whose type is not public: it says `dns error`).
pub(super) fn dns_failure(e: &(dyn StdError + 'static)) -> bool {
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

/// Recorded by [`super::sdk_config`] for the messages of calls that found no service.
pub(super) fn set_origin(origin: String) {
    *ORIGIN.lock().unwrap_or_else(|p| p.into_inner()) = Some(origin);
}

/// Set once by `main` from `-v`.
pub fn show_sdk_detail(on: bool) {
    SDK_DETAIL.store(on, Ordering::Relaxed);
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
    e.chain().find_map(|c| c.downcast_ref::<AwsError>().filter(|a| a.access.is_some()))
}

/// Whether an error (anywhere in its chain) is a transient AWS failure, so a
/// polling loop may ask again instead of failing the step.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(AwsError::is_transient))
}

/// Whether an error (anywhere in its chain) is AWS refusing a create because the
/// thing exists: after a retried create, usually what the first attempt made
/// (its answer was lost), so the step should look again rather than fail.
pub fn is_already_exists(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(AwsError::is_already_exists))
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


/// Codes with which a service says the thing asked about does not exist.
const NOT_FOUND_CODES: &[&str] = &[
    "NoSuchEntity",              // IAM
    "ResourceNotFoundException", // EKS, SSM
    "NotFoundException",         // EKS add-ons and associations on some paths
    "NoSuchBucket",              // S3
    "NoSuchKey",                 // S3
    "ParameterNotFound",         // SSM GetParameter
];

impl AwsError {
    /// The service's answer that the resource does not exist: IAM's
    /// `NoSuchEntity`, EKS's `ResourceNotFoundException`, CloudFormation's
    /// `ValidationError` "Stack with id X does not exist", EC2's `*.NotFound`.
    pub fn is_not_found(&self) -> bool {
        NOT_FOUND_CODES.contains(&self.code.as_str())
            || self.code.ends_with(".NotFound")
            || (self.code == "ValidationError" && self.message.contains("does not exist"))
    }

    /// CloudFormation's refusal of an update that changes nothing.
    pub fn is_no_updates(&self) -> bool {
        self.code == "ValidationError" && self.message.contains("No updates are to be performed")
    }

    /// A create refused because the thing exists (IAM says so of a service-linked
    /// role with `InvalidInput` "has been taken").
    pub fn is_already_exists(&self) -> bool {
        const CODES: &[&str] = &["EntityAlreadyExists", "ResourceInUseException", "AlreadyExistsException", "ResourceAlreadyExistsException"];
        CODES.contains(&self.code.as_str()) || (self.code == "InvalidInput" && self.message.contains("has been taken"))
    }

    /// The resource is busy with another operation (EKS nodegroup and cluster updates).
    pub fn is_in_use(&self) -> bool {
        self.code == "ResourceInUseException"
    }
}

/// A call's answer, `None` when the service says the thing does not exist, or the error.
/// For deletes, `found(...)?;` makes "already gone" a success.
pub fn found<T>(r: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, message: &str) -> AwsError {
        AwsError { operation: "x:Y", code: code.into(), message: message.into(), request_id: None, status: Some(400), access: None, context: Box::default() }
    }

    #[test]
    fn each_services_way_of_saying_not_found_is_one_answer() {
        for (code, msg) in [
            ("NoSuchEntity", "The role with name x cannot be found."),
            ("ResourceNotFoundException", "No cluster found for name: x."),
            ("ValidationError", "Stack with id Karpenter-x does not exist"),
            ("InvalidGroup.NotFound", "The security group 'sg-1' does not exist"),
        ] {
            assert!(err(code, msg).is_not_found(), "{code}");
        }
        for (code, msg) in [("ValidationError", "Template format error"), ("AccessDenied", "no"), ("ThrottlingException", "slow down")] {
            assert!(!err(code, msg).is_not_found(), "{code}: {msg}");
        }
        assert!(err("ValidationError", "No updates are to be performed.").is_no_updates());
        assert!(!err("ValidationError", "Stack with id x does not exist").is_no_updates());
        assert!(err("ResourceInUseException", "busy").is_in_use());
        assert!(err("InvalidInput", "Service role name AWSServiceRoleForEC2Spot has been taken in this account").is_already_exists());
        assert!(!err("InvalidInput", "bad name").is_already_exists());
    }

    #[test]
    fn found_turns_only_not_found_into_none() {
        assert_eq!(found(Ok::<_, AwsError>(3)).unwrap(), Some(3));
        assert_eq!(found::<u8>(Err(err("NoSuchEntity", "gone"))).unwrap(), None);
        assert_eq!(found::<u8>(Err(err("AccessDenied", "no"))).unwrap_err().code, "AccessDenied");
    }
}
