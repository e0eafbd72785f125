//! `GET /upstream/{key}`: a slow upstream called through a tower client stack —
//! hyper's client inside stayfast's `PolicyLayer` (deadline, retry, breaker, metrics) —
//! its answers cached in Redis through `Cache`, so only a miss pays for the upstream.

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
    http::{Request, StatusCode},
    routing::get as get_route,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, Error as ClientError, connect::HttpConnector},
    rt::TokioExecutor,
};
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
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a cached upstream answer is served before it is fetched again.
const CACHE_TTL: Duration = Duration::from_secs(60);

type UpstreamRequest = Request<Full<Bytes>>;
/// Plain function pointers, so the stack's type can be written down.
type Classify = fn(&ClientError) -> Verdict;
type Replay = fn(&UpstreamRequest) -> UpstreamRequest;
type Stack = PolicyService<Client<HttpConnector, Full<Bytes>>, Classify, Replay>;

/// A refused connection never reached the upstream: retry it. Anything later may have
/// been processed; a GET may be sent again anyway (the policy is idempotent).
fn classify(e: &ClientError) -> Verdict {
    if e.is_connect() {
        Verdict::transient()
    } else {
        Verdict::indeterminate()
    }
}

/// `http::Request` is not `Clone`; a retry rebuilds it from its parts (the body is
/// `Full<Bytes>`, which is).
fn replay(r: &UpstreamRequest) -> UpstreamRequest {
    let mut copy = Request::new(r.body().clone());
    *copy.method_mut() = r.method().clone();
    *copy.uri_mut() = r.uri().clone();
    *copy.headers_mut() = r.headers().clone();
    copy
}

/// The outgoing side: hyper's client under stayfast's `PolicyLayer`.
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
        let client = Client::builder(TokioExecutor::new()).build_http();
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
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = format!("{}/slow/{key}", self.base)
            .parse()
            .map_err(|_| UpstreamError::BadKey)?;
        // tower's contract: a clone of its own, driven ready, then called.
        let mut service = self.stack.clone();
        poll_fn(|cx| service.poll_ready(cx)).await?;
        let response = service.call(request).await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status()));
        }
        // The policy bounds the wait for the headers; the body gets its own bound.
        let body = tokio::time::timeout(ATTEMPT_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| UpstreamError::BodyTimeout)?
            .map_err(UpstreamError::Body)?;
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    }
}

/// Why the upstream's answer could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the key does not make a valid URI")]
    BadKey,
    #[error(transparent)]
    Call(#[from] Error<ClientError>),
    #[error("the upstream answered {0}")]
    Status(StatusCode),
    #[error("the upstream's body could not be read")]
    Body(#[source] hyper::Error),
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
