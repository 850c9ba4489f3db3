/*!
Bearer tokens that stay current for the life of a client. An EKS token is a
presigned STS URL the API server honours for 15 minutes, while waits and drains
can keep one client busy for longer, so the token is not baked into the
`kube::Config`: a tower layer on the outside of kube-rs's usual stack
([`RefreshingAuthLayer`]) sets `Authorization: Bearer …` on every request from a
[`TokenCache`].

The cache mints through a [`TokenSource`] when it holds no token, when its token
is older than `refresh_after` ([`REFRESH_AFTER`] for real clients), or when the
server refused the token it holds (401). Minting happens under a
`tokio::sync::Mutex`, so concurrent requests that find the token stale wait for
one mint and share its result instead of each calling STS, and a burst of 401s
for the same token replaces it once (each token carries a generation number; a
refusal only replaces the generation it was sent with).

On a 401 the request is sent once more with the new token when its body can be
replayed ([`::kube::client::Body::try_clone`]: every request kube-rs's `Api`
builds has an in-memory body). A streaming body cannot be replayed: then the
401 is returned as it is and the next request uses a new token. A second 401
is returned to the caller; there is no further retry.
*/

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::{header::AUTHORIZATION, HeaderValue, Request, Response, StatusCode};
use ::kube::client::Body;
use tower::{buffer::Buffer, BoxError, Layer, Service, ServiceExt as _};

/// Age after which a cached token is replaced before use: well inside the 15
/// minutes EKS honours a token for ([`super::token::TOKEN_LIFETIME`] is 14).
pub const REFRESH_AFTER: Duration = Duration::from_secs(10 * 60);

/// Queue bound of the buffer that lets a request be sent a second time.
const BUFFER_BOUND: usize = 1024;

/// Something that mints bearer tokens (the token only, without `Bearer `).
pub trait TokenSource: Send + Sync {
    fn mint(&self) -> BoxFuture<'_, anyhow::Result<String>>;
}

/// Mints EKS tokens for one cluster from an SDK config's credentials ([`super::token::token`]).
pub struct EksTokenSource {
    cfg: aws_config::SdkConfig,
    region: String,
    cluster: String,
}

impl EksTokenSource {
    pub fn new(cfg: &aws_config::SdkConfig, region: &str, cluster: &str) -> EksTokenSource {
        EksTokenSource { cfg: cfg.clone(), region: region.to_string(), cluster: cluster.to_string() }
    }
}

impl TokenSource for EksTokenSource {
    fn mint(&self) -> BoxFuture<'_, anyhow::Result<String>> {
        Box::pin(async move {
            let t = super::token::token(&self.cfg, &self.region, &self.cluster).await?;
            Ok(t.token)
        })
    }
}

struct Cached {
    header: HeaderValue,
    minted_at: Instant,
    generation: u64,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// Generation of the last token minted (the first is 1).
    minted: u64,
}

/// The current token of one client; see the module docs for when it is replaced.
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    refresh_after: Duration,
    /// What the source mints, for errors: "an EKS token for cluster `x`".
    what: String,
    state: tokio::sync::Mutex<State>,
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>, refresh_after: Duration, what: impl Into<String>) -> TokenCache {
        TokenCache { source, refresh_after, what: what.into(), state: tokio::sync::Mutex::new(State::default()) }
    }

    /// Mints now and keeps the result, so that a client can fail at construction
    /// when no token can be had at all.
    pub async fn prime(&self) -> anyhow::Result<()> {
        let mut state = self.state.lock().await;
        self.mint_into(&mut state).await.map(drop)
    }

    /// The header to send and its generation: the cached one while it is younger
    /// than `refresh_after`, otherwise a new one.
    async fn current(&self) -> anyhow::Result<(HeaderValue, u64)> {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.token {
            if c.minted_at.elapsed() < self.refresh_after {
                return Ok((c.header.clone(), c.generation));
            }
        }
        self.mint_into(&mut state).await
    }

    /// A header to replace `rejected`: a new mint, unless another request has already replaced it.
    async fn replace(&self, rejected: u64) -> anyhow::Result<(HeaderValue, u64)> {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.token {
            if c.generation != rejected && c.minted_at.elapsed() < self.refresh_after {
                return Ok((c.header.clone(), c.generation));
            }
        }
        self.mint_into(&mut state).await
    }

    /// Drops the token of generation `rejected` so the next request mints.
    async fn forget(&self, rejected: u64) {
        let mut state = self.state.lock().await;
        if state.token.as_ref().is_some_and(|c| c.generation == rejected) {
            state.token = None;
        }
    }

    async fn mint_into(&self, state: &mut State) -> anyhow::Result<(HeaderValue, u64)> {
        use anyhow::Context as _;
        // A failed mint leaves nothing cached: the next request tries again.
        state.token = None;
        let token = self.source.mint().await.with_context(|| format!("minting {}", self.what))?;
        let mut header = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("{} holds characters not allowed in an HTTP header", self.what))?;
        header.set_sensitive(true);
        state.minted += 1;
        state.token = Some(Cached { header: header.clone(), minted_at: Instant::now(), generation: state.minted });
        Ok((header, state.minted))
    }
}

/// Wraps a kube-rs service stack with [`RefreshingAuth`].
#[derive(Clone)]
pub struct RefreshingAuthLayer {
    cache: Arc<TokenCache>,
}

impl RefreshingAuthLayer {
    pub fn new(cache: Arc<TokenCache>) -> RefreshingAuthLayer {
        RefreshingAuthLayer { cache }
    }
}

impl<S, B> Layer<S> for RefreshingAuthLayer
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Service = RefreshingAuth<S::Future>;

    fn layer(&self, inner: S) -> Self::Service {
        // The buffer makes the inner stack cloneable, so a request's future can send it twice.
        RefreshingAuth { inner: Buffer::new(inner, BUFFER_BOUND), cache: self.cache.clone() }
    }
}

/// Sets `Authorization` from a [`TokenCache`] and resends once after a 401.
pub struct RefreshingAuth<F> {
    inner: Buffer<Request<Body>, F>,
    cache: Arc<TokenCache>,
}

impl<F: Send + 'static> Clone for RefreshingAuth<F> {
    fn clone(&self) -> Self {
        RefreshingAuth { inner: self.inner.clone(), cache: self.cache.clone() }
    }
}

impl<F, B, E> Service<Request<Body>> for RefreshingAuth<F>
where
    F: std::future::Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited on a clone inside the future, once per send.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let cache = self.cache.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let replay = body.try_clone().map(|b| Request::from_parts(parts.clone(), b));
            let (header, generation) = cache.current().await?;
            let res = send(inner.clone(), Request::from_parts(parts, body), header).await?;
            if res.status() != StatusCode::UNAUTHORIZED {
                return Ok(res);
            }
            match replay {
                Some(again) => {
                    drop(res);
                    let (header, _) = cache.replace(generation).await?;
                    send(inner, again, header).await
                }
                None => {
                    cache.forget(generation).await;
                    Ok(res)
                }
            }
        })
    }
}

async fn send<F, B, E>(inner: Buffer<Request<Body>, F>, mut req: Request<Body>, header: HeaderValue) -> Result<Response<B>, BoxError>
where
    F: std::future::Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<BoxError> + Send + Sync,
{
    req.headers_mut().insert(AUTHORIZATION, header);
    inner.oneshot(req).await
}
