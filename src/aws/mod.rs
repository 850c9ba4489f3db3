/*!
Building AWS clients: the standard credential chain and profiles, region from
flag, config or environment, `--endpoint-url` for emulators, and retries with
capped exponential backoff for throttling and server errors (see [`retry_config`]).
Clients are built only when a command needs them. What a failed call means
(transient, not found, the `help:` line) is [`error`]'s one job.
*/

mod error;

pub use error::{access_failure, found, is_already_exists, is_transient, known_region, show_sdk_detail, Access, AwsError, CallContext};

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryClassifierPriority};


/// Where AWS calls go, as the user said: `--region` (over the config's
/// `cluster.region`), `--profile`, `--endpoint-url`; unset ones come from the
/// SDK's standard chain.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

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
            Some(Err(e)) if e.as_connector_error().is_some_and(|c| error::dns_failure(c)) => RetryAction::RetryForbidden,
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

fn origin(g: &Settings, config_region: Option<&str>, resolved: Option<&str>) -> String {
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
pub async fn sdk_config(g: &Settings, region: Option<&str>) -> SdkConfig {
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
    error::set_origin(origin(g, region, resolved.as_deref()));
    sdk
}

/// An S3 client; path-style addressing when an endpoint override is set (emulators).
pub fn s3(cfg: &SdkConfig, g: &Settings) -> aws_sdk_s3::Client {
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
