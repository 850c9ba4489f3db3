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
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::adaptive().with_max_attempts(8));
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
