//! `GET /upstream/{key}`: a slow upstream called through a tower client stack —
//! `reqwest::Client`, a `tower::Service<reqwest::Request>`, inside stayfast's
//! `PolicyLayer` (deadline, retry, breaker, metrics) — its answers cached in Redis
//! through `Cache`, so only a miss pays for the upstream.

use std::{
    future::poll_fn,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get as get_route,
};
use reqwest::{Client, Error as ClientError, Method, Request, Url};
use serde_json::{Value, json};
use stayfast::{
    CircuitBreaker, Error, ErrorChain, Policy, Settings, Verdict,
    cache::CoalescedError,
    config::{ConfigError, RetryConfig},
    http::HttpFailure,
    tower::{PolicyLayer, PolicyService},
};
use tower_layer::Layer;
use tower_service::Service;

use super::{Shared, failure::ApiError};

/// Each attempt's bound: the slow upstream answers well within it.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a cached upstream answer is served before it is fetched again.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// Plain function pointers, so the stack's type can be written down.
type Classify = fn(&ClientError) -> Verdict;
type Replay = fn(&Request) -> Request;
type Stack = PolicyService<Client, Classify, Replay>;

/// A refused connection never reached the upstream: retry it. Anything later may have
/// been processed; a GET may be sent again anyway (the policy is idempotent).
fn classify(e: &ClientError) -> Verdict {
    if e.is_connect() {
        Verdict::transient()
    } else {
        Verdict::indeterminate()
    }
}

/// `reqwest::Request` is not `Clone`: `try_clone` copies it, unless its body is a
/// stream. These GETs have no body at all, so the copy never fails; were it to, the
/// request is rebuilt from its method, URL, headers, version and timeout.
fn replay(r: &Request) -> Request {
    r.try_clone().unwrap_or_else(|| {
        let mut copy = Request::new(r.method().clone(), r.url().clone());
        *copy.headers_mut() = r.headers().clone();
        *copy.version_mut() = r.version();
        *copy.timeout_mut() = r.timeout().copied();
        copy
    })
}

/// The outgoing side: reqwest's client under stayfast's `PolicyLayer`.
#[derive(Debug)]
pub(crate) struct UpstreamClient {
    base: String,
    stack: Stack,
    breaker: Option<CircuitBreaker>,
}

impl UpstreamClient {
    /// A client of the upstream at `base` (`http://host:port`), with the breaker
    /// settings and metrics prefix of `settings` (target `upstream`).
    pub(crate) fn new(base: String, settings: &Settings) -> Result<Self, ConfigError> {
        let prefix = settings.metrics.prefix.as_str();
        let breaker = CircuitBreaker::builder("upstream")
            .config(&settings.breaker)
            .metrics_prefix(prefix)
            .build()?;
        let policy = Policy::builder("upstream.get")
            .target("upstream")
            .timeout(ATTEMPT_TIMEOUT)
            .retry(&RetryConfig::default())
            .idempotent(true)
            .breaker(breaker)
            .metrics_prefix(prefix)
            .classify(classify as Classify)
            .build()?;
        // The policy bounds and retries every attempt: the client sets no timeout and
        // retries nothing of its own. A redirect is answered as the upstream's status, as
        // any other non-2xx, rather than followed outside the policy's view. The upstream
        // is on loopback: no proxy from the environment gets in between.
        let client = Client::builder()
            .retry(reqwest::retry::never())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| ConfigError::new("upstream.client", ErrorChain(&e).to_string()))?;
        let stack = PolicyLayer::new(policy)
            .replay_with(replay as Replay)
            .layer(client);
        let breaker = stack.policy().breaker().cloned();
        Ok(Self { base, stack, breaker })
    }

    /// The upstream's breaker.
    pub(crate) fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    async fn fetch(&self, key: &str) -> Result<String, UpstreamError> {
        let url = Url::parse(&format!("{}/slow/{key}", self.base)).map_err(|_| UpstreamError::BadKey)?;
        let request = Request::new(Method::GET, url);
        // tower's contract: a clone of its own, driven ready, then called.
        let mut service = self.stack.clone();
        poll_fn(|cx| service.poll_ready(cx)).await?;
        let response = service.call(request).await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status()));
        }
        // The policy bounds the wait for the headers; the body gets its own bound.
        let body = tokio::time::timeout(ATTEMPT_TIMEOUT, response.bytes())
            .await
            .map_err(|_| UpstreamError::BodyTimeout)?
            .map_err(UpstreamError::Body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// Why the upstream's answer could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the key does not make a valid URL")]
    BadKey,
    #[error(transparent)]
    Call(#[from] Error<ClientError>),
    #[error("the upstream answered {0}")]
    Status(StatusCode),
    #[error("the upstream's body could not be read")]
    Body(#[source] ClientError),
    #[error("the upstream's body did not arrive in time")]
    BodyTimeout,
    /// A concurrent call for the same key loaded it, and that load failed.
    #[error(transparent)]
    Coalesced(#[from] CoalescedError),
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        let status = match &e {
            UpstreamError::BadKey => StatusCode::BAD_REQUEST,
            UpstreamError::Call(call) => {
                return ApiError::of(HttpFailure::of(call, |_| StatusCode::BAD_GATEWAY), &e);
            }
            UpstreamError::BodyTimeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Coalesced(c) if c.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Status(_) | UpstreamError::Body(_) | UpstreamError::Coalesced(_) => {
                StatusCode::BAD_GATEWAY
            }
        };
        ApiError::new(status, ErrorChain(&e).to_string())
    }
}

pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "keys are [A-Za-z0-9_-]+"));
    }
    let started = Instant::now();
    let upstream = &shared.upstream;
    let value: String = match shared.app.cache() {
        // Redis down costs one Redis deadline, then the upstream is called directly.
        Some(cache) => {
            cache
                .get_or_insert_with(&("upstream", &key), Some(CACHE_TTL), || upstream.fetch(&key))
                .await?
        }
        None => upstream.fetch(&key).await?,
    };
    Ok(Json(json!({
        "key": key,
        "value": value,
        "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
    })))
}

/// The slow upstream: an HTTP server on a free loopback port whose every answer takes
/// `delay`, counting the calls it serves. Stopped when dropped.
#[derive(Debug)]
pub(crate) struct SlowUpstream {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowUpstream {
    pub(crate) async fn start(delay: Duration) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&calls);
        let router = Router::new().route(
            "/slow/{key}",
            get_route(move |Path(key): Path<String>| async move {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                format!("the upstream's value for {key}")
            }),
        );
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "the slow upstream stopped");
            }
        });
        Ok(Self { addr, calls, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests it has served.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
