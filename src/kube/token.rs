/*!
The EKS bearer token, minted in-process the way aws-iam-authenticator does it
(`pkg/token/token.go`): a SigV4-presigned STS `GetCallerIdentity` URL whose
signed headers include `x-k8s-aws-id: <cluster>`, base64url-encoded without
padding behind `k8s-aws-v1.`. The API server replays the URL against STS to learn
who we are, so nothing here talks to AWS except the credentials provider.

The request is built from explicit credentials and an explicit time
([`presigned_url`], [`token_at`]) so tests can check it byte for byte;
[`token`] only adds "now" and the SDK's credentials chain.
*/

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Prefix of every EKS token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header that binds a token to one cluster; it must be signed.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// `X-Amz-Expires` of the presigned URL (the server accepts 0–900 and otherwise ignores it).
pub const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);
/// The server honours a token for 15 minutes after `X-Amz-Date`; report one less as margin.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// SigV4's unreserved characters stay as they are; everything else is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no AWS credentials provider is configured (needed to mint a token for cluster `{cluster}`)")]
    NoCredentialsProvider { cluster: String },
    #[error("loading AWS credentials to mint a token for cluster `{cluster}`")]
    Credentials {
        cluster: String,
        #[source]
        source: aws_credential_types::provider::error::CredentialsError,
    },
    #[error("presigning the STS GetCallerIdentity request for cluster `{cluster}` in `{region}`: {reason}")]
    Presign { cluster: String, region: String, reason: String },
}

/// A bearer token and the time after which it should no longer be used.
#[derive(Clone)]
pub struct EksToken {
    pub token: String,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for EksToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EksToken").field("token", &"<redacted>").field("expires_at", &self.expires_at).finish()
    }
}

/// The regional STS URL for `GetCallerIdentity`, before signing.
pub fn sts_url(region: &str) -> String {
    format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15")
}

/// The presigned STS URL for `cluster`, signed with `creds` at `now`.
pub fn presigned_url(creds: &Credentials, region: &str, cluster: &str, now: SystemTime) -> Result<String, TokenError> {
    let err = |reason: String| TokenError::Presign { cluster: cluster.to_string(), region: region.to_string(), reason };
    let url = sts_url(region);
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| err(e.to_string()))?
        .into();
    let request = SignableRequest::new("GET", url.as_str(), [(CLUSTER_ID_HEADER, cluster)].into_iter(), SignableBody::Bytes(&[]))
        .map_err(|e| err(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params).map_err(|e| err(e.to_string()))?.into_parts();
    let mut out = url;
    for (name, value) in instructions.params() {
        out.push('&');
        out.push_str(name);
        out.push('=');
        out.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    Ok(out)
}

/// `k8s-aws-v1.` + unpadded base64url of the presigned URL.
pub fn encode_token(presigned: &str) -> String {
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned))
}

/// The token for `cluster` as minted at `now` (pure: no clock, no network).
pub fn token_at(creds: &Credentials, region: &str, cluster: &str, now: SystemTime) -> Result<EksToken, TokenError> {
    let url = presigned_url(creds, region, cluster, now)?;
    Ok(EksToken { token: encode_token(&url), expires_at: now + TOKEN_LIFETIME })
}

/// Mints a token for `cluster` now, with the credentials `cfg` resolves
/// (profile, SSO, web identity …; a session token is included when present).
pub async fn token(cfg: &aws_config::SdkConfig, region: &str, cluster: &str) -> Result<EksToken, TokenError> {
    let provider = cfg.credentials_provider().ok_or_else(|| TokenError::NoCredentialsProvider { cluster: cluster.to_string() })?;
    let creds = provider
        .provide_credentials()
        .await
        .map_err(|source| TokenError::Credentials { cluster: cluster.to_string(), source })?;
    token_at(&creds, region, cluster, SystemTime::now())
}
