/*!
Building AWS clients: the standard credential chain and profiles, region from
flag, config or environment, `--endpoint-url` for emulators, and adaptive retries
with backoff for throttling. Clients are built only when a command needs them.
*/

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::cli::Global;

/// Loads the shared SDK config. `region` is the config file's region, used when
/// no `--region` flag is given.
pub async fn sdk_config(g: &Global, region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::adaptive().with_max_attempts(5));
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
        AwsError { operation, code, message, request_id }
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
