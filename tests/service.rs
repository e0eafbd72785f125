//! The reference service (`examples/service`) driven over HTTP with hyper's client,
//! against a real redis-server: normal requests, Redis frozen with SIGSTOP and thawed,
//! the search route's own policy (its deadline and its bulkhead), the upstream's client
//! stack (reqwest under `PolicyLayer`: each attempt's timeout, the retries, the breaker),
//! and a graceful shutdown under load.
//!
//! Wall-clock bounds get 250 ms of slack; the measured figures are printed
//! (`cargo test --test service -- --nocapture`).

#[path = "../examples/service/server/mod.rs"]
mod server;
mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode,
    body::Bytes,
    header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use stayfast::{
    Settings, ShutdownReport, Stayfast, config::RetryConfig, fs::FsyncPolicy, test_util::RedisServer,
    transcripts::TranscriptStore,
};
use tokio::{sync::oneshot, task::JoinHandle};

use server::{
    route_policy::{SEARCH_CONCURRENCY, SEARCH_DEADLINE, SEARCH_QUEUE_WAIT},
    upstream::{ATTEMPT_TIMEOUT, SlowUpstream, UpstreamClient},
};
use support::TempDir;

/// The Redis commands' deadline (`timeouts.redis.operations.default`).
const REDIS_DEADLINE: Duration = Duration::from_millis(250);
/// `timeouts.redis.connection.health_check`: the bound of `/health/ready`'s PING.
const HEALTH_DEADLINE: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_millis(250);

/// The tests share the process's metrics recorder, where both apps' `redis.main`
/// breakers write the same gauge: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type HttpClient = Client<HttpConnector, Full<Bytes>>;
/// Per session, the ids of the appends answered 200, and when.
type Acked = BTreeMap<String, Vec<(String, Instant)>>;

/// A running service and what the test needs to drive and stop it.
struct Running {
    base: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<ShutdownReport>>,
    upstream: SlowUpstream,
}

impl Running {
    async fn start(settings: &Settings, upstream_delay: Duration) -> Self {
        let app = Stayfast::from_settings(settings).await.expect("the app starts");
        let upstream = SlowUpstream::start(upstream_delay)
            .await
            .expect("the upstream starts");
        let client = UpstreamClient::new(upstream.url(), settings).expect("the upstream client");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("its address");
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = settings.clone();
        let served = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            server::serve(listener, app, &settings, client, shutdown, Duration::from_secs(5)).await
        });
        Self {
            base: format!("http://{addr}"),
            addr,
            stop: Some(stop),
            served,
            upstream,
        }
    }

    /// Triggers the graceful shutdown (what SIGTERM does in the example).
    fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    async fn shutdown(mut self) -> ShutdownReport {
        self.trigger_shutdown();
        tokio::time::timeout(Duration::from_secs(15), self.served)
            .await
            .expect("the service stops within 15 s")
            .expect("the serve task does not panic")
            .expect("serve returns Ok")
    }
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request: its status, headers, JSON body (or the text as a JSON string) and
/// how long it took.
async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<(StatusCode, HeaderMap, Value, Duration), hyper_util::client::legacy::Error> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("a valid request");
    let started = Instant::now();
    let response = client.request(request).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&body).into_owned();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, headers, value, took))
}

async fn get(client: &HttpClient, url: &str) -> (StatusCode, HeaderMap, Value, Duration) {
    send(client, Method::GET, url, None)
        .await
        .expect("the service answers")
}

async fn post(client: &HttpClient, url: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, value, _) = send(client, Method::POST, url, Some(body))
        .await
        .expect("the service answers");
    (status, value)
}

/// Settings for a service on `server`: short deadlines and a breaker that opens after
/// two failed attempts and probes again soon, so the outage and the recovery are quick.
fn settings(server: &RedisServer, dir: &TempDir) -> Settings {
    let mut s = support::settings(Some(server.url()), dir);
    s.timeouts.redis.operations.default = REDIS_DEADLINE;
    s.timeouts.redis.connection.health_check = HEALTH_DEADLINE;
    s.redis.reconnect_max_delay = Duration::from_millis(200);
    s.breaker.consecutive_failures = Some(2);
    s.breaker.open_for = Duration::from_millis(300);
    s.breaker.max_open_for = Duration::from_secs(1);
    s
}

/// Settings for the search route's tests: Redis's own bounds at their defaults (2 s per
/// command and per search), past the route's deadline, so that a 504 in time can only
/// come from the route's policy.
fn route_settings(server: &RedisServer, dir: &TempDir) -> Settings {
    let s = support::settings(Some(server.url()), dir);
    assert!(
        s.timeouts.redis.operations.default >= SEARCH_DEADLINE * 2
            && s.knowledge.search_timeout >= SEARCH_DEADLINE * 2,
        "the store's bounds are not past the route's deadline"
    );
    s
}

/// The value of the search route's `calls_total` sample for `outcome` on `/metrics`
/// (the process's recorder: counts of earlier tests included).
async fn route_calls(http: &HttpClient, base: &str, outcome: &str) -> f64 {
    calls(http, base, "http.facts.search", "http.facts.search", outcome).await
}

/// The value of the `calls_total` sample of `operation` on `target` for `outcome` on
/// `/metrics` (the process's recorder: counts of earlier tests included).
async fn calls(http: &HttpClient, base: &str, operation: &str, target: &str, outcome: &str) -> f64 {
    let (_, _, page, _) = get(http, &format!("{base}/metrics")).await;
    let sample =
        format!(r#"stayfast_calls_total{{operation="{operation}",target="{target}",outcome="{outcome}"}} "#);
    page.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(sample.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A service on `server` with one fact stored, and a client.
async fn start_with_a_fact(server: &RedisServer, dir: &TempDir) -> (Running, HttpClient) {
    let running = Running::start(&route_settings(server, dir), Duration::from_millis(100)).await;
    let http = client();
    let (status, stored) = post(
        &http,
        &format!("{}/facts", running.base),
        json!({"content": "The shop opens at 9."}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    (running, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_route_answers_504_at_its_deadline_while_redis_is_frozen() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.expect("redis-server starts");
    let dir = TempDir::new("service-route-deadline");
    let (running, http) = start_with_a_fact(&server, &dir).await;
    let search = format!("{}/facts/search?q=shop", running.base);

    let (status, _, found, took) = get(&http, &search).await;
    eprintln!("GET /facts/search through the route's policy: {status} in {took:?}");
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["facts"][0]["content"], "The shop opens at 9.", "{found}");

    // Redis frozen: the store would wait out its own 2 s; the route answers at its
    // deadline.
    server.pause().expect("SIGSTOP");
    let (status, _, body, took) = get(&http, &search).await;
    server.resume().expect("SIGCONT");
    let bound = SEARCH_DEADLINE + SLACK;
    eprintln!(
        "GET /facts/search, Redis frozen: {status} in {took:?} (deadline {SEARCH_DEADLINE:?}, bound {bound:?}): {body}"
    );
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        took >= SEARCH_DEADLINE && took < bound,
        "answered in {took:?}, not at the route's deadline"
    );
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("http.facts.search timed out after 1s"),
        "the route's deadline answered: {body}"
    );
    assert!(
        route_calls(&http, &running.base, "timeout").await >= 1.0,
        "/metrics counts the route's timeout"
    );

    // Thawed: the route serves again.
    let started = Instant::now();
    loop {
        let (status, _, found, _) = get(&http, &search).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not served again after 10 s: {status} {found}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = running.shutdown().await;
    assert_eq!(report.aborted, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_route_sheds_past_its_bulkhead_while_admitted_searches_complete() {
    /// Searches past the bulkhead's slots.
    const EXTRA: u32 = 16;
    /// How long Redis stays frozen, holding the admitted searches: well past the
    /// bulkhead's queue wait, well within the route's deadline.
    const HOLD: Duration = Duration::from_millis(500);
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.expect("redis-server starts");
    let dir = TempDir::new("service-route-bulkhead");
    let (running, _) = start_with_a_fact(&server, &dir).await;
    let search = format!("{}/facts/search?q=shop", running.base);

    // Redis frozen, so that every admitted search holds its slot until SIGCONT.
    server.pause().expect("SIGSTOP");
    let started = Instant::now();
    let calls: Vec<_> = (0..SEARCH_CONCURRENCY + EXTRA)
        .map(|_| {
            let (http, url) = (client(), search.clone());
            tokio::spawn(async move { send(&http, Method::GET, &url, None).await })
        })
        .collect();
    tokio::time::sleep(HOLD.saturating_sub(started.elapsed())).await;
    server.resume().expect("SIGCONT");
    let (mut admitted, mut shed, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for call in calls {
        let (status, headers, body, took) =
            call.await.expect("the call's task").expect("the service answers");
        match status {
            StatusCode::OK => {
                assert_eq!(body["facts"][0]["content"], "The shop opens at 9.", "{body}");
                admitted.push(took);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(headers[RETRY_AFTER], "1", "a shed search says when to retry");
                shed.push(took);
            }
            _ => other.push((status, body)),
        }
    }
    let range = |t: &[Duration]| (t.iter().min().copied(), t.iter().max().copied());
    eprintln!(
        "{} searches, {SEARCH_CONCURRENCY} slots, Redis frozen for {HOLD:?}: {} answered 200 in {:?}, {} shed 503 in {:?}, others {other:?}",
        SEARCH_CONCURRENCY + EXTRA,
        admitted.len(),
        range(&admitted),
        shed.len(),
        range(&shed),
    );
    assert!(other.is_empty(), "other answers: {other:?}");
    assert_eq!(shed.len(), EXTRA as usize, "the searches past the slots are shed");
    assert_eq!(
        admitted.len(),
        SEARCH_CONCURRENCY as usize,
        "the admitted searches complete"
    );
    let shed_bound = SEARCH_QUEUE_WAIT + SLACK;
    assert!(
        shed.iter().all(|t| *t < shed_bound),
        "a shed search waited past {shed_bound:?}: {shed:?}"
    );
    assert!(
        admitted
            .iter()
            .all(|t| *t >= HOLD.saturating_sub(Duration::from_millis(50))),
        "the admitted searches waited for Redis: {admitted:?}"
    );
    let counted = route_calls(&client(), &running.base, "shed").await;
    assert!(
        counted >= f64::from(EXTRA),
        "/metrics counts {counted} shed searches"
    );
    let report = running.shutdown().await;
    assert_eq!(report.aborted, 0, "{report:?}");
}

/// The outgoing call runs through the policy around the reqwest client: an upstream that
/// hangs is cut at each attempt's timeout and retried, the call answers 504 at its last
/// attempt's timeout, and the failed attempts open the upstream's breaker, which then
/// answers 503 at once, with `Retry-After`, without calling the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hanging_is_cut_at_each_attempt_retried_answered_504_and_opens_its_breaker() {
    /// Far past every attempt's timeout.
    const HANG: Duration = Duration::from_secs(10);
    /// The default `RetryConfig`'s backoffs between three attempts: 50 ms, then 100 ms,
    /// at most.
    const BACKOFFS: Duration = Duration::from_millis(150);
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.expect("redis-server starts");
    let dir = TempDir::new("service-upstream-hang");
    let attempts = RetryConfig::default().max_attempts;
    let mut settings = support::settings(Some(server.url()), &dir);
    // The breaker opens on the call's last failed attempt: the call itself still ends
    // in its own timeout.
    settings.breaker.consecutive_failures = Some(attempts);
    settings.breaker.open_for = Duration::from_secs(30);
    let running = Running::start(&settings, HANG).await;
    let (http, base) = (client(), running.base.clone());

    let (status, _, body, took) = get(&http, &format!("{base}/upstream/hangs")).await;
    let (from, bound) = (
        ATTEMPT_TIMEOUT * attempts,
        ATTEMPT_TIMEOUT * attempts + BACKOFFS + SLACK,
    );
    eprintln!(
        "GET /upstream/hangs, {attempts} attempts of {ATTEMPT_TIMEOUT:?}: {status} in {took:?} (bound {bound:?}): {body}"
    );
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        took >= from && took < bound,
        "answered in {took:?}, not at the last attempt's timeout"
    );
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("upstream.get timed out after 1s"),
        "the upstream policy's timeout answered: {body}"
    );
    assert_eq!(
        running.upstream.calls(),
        u64::from(attempts),
        "each attempt called the upstream"
    );
    assert!(
        calls(&http, &base, "upstream.get", "upstream", "timeout").await >= 1.0,
        "/metrics counts the upstream call's timeout"
    );

    // The breaker is open: refused at once, the upstream not called.
    let (status, headers, body, took) = get(&http, &format!("{base}/upstream/refused")).await;
    eprintln!("GET /upstream/refused, the upstream's breaker open: {status} in {took:?}: {body}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        headers.contains_key(RETRY_AFTER),
        "an open circuit says when to retry"
    );
    assert!(took < SLACK, "an open circuit answered in {took:?}");
    assert_eq!(
        running.upstream.calls(),
        u64::from(attempts),
        "the open circuit kept the call from the upstream"
    );
    // Shown on /health/ready, open, without taking the instance out of service.
    let (status, _, ready, _) = get(&http, &format!("{base}/health/ready")).await;
    let shown = ready["breakers"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["target"] == "upstream"));
    assert_eq!(
        shown,
        Some(&json!({"target": "upstream", "state": "open", "gates_readiness": false})),
        "{ready}"
    );
    assert_eq!(
        (status, &ready["ready"]),
        (StatusCode::OK, &json!(true)),
        "{ready}"
    );

    let report = running.shutdown().await;
    assert_eq!(report.aborted, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_degrades_while_redis_is_frozen_and_recovers() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.expect("redis-server starts");
    let dir = TempDir::new("service-freeze");
    let running = Running::start(&settings(&server, &dir), Duration::from_millis(100)).await;
    let (http, base) = (client(), running.base.clone());

    // Normal requests.
    for (n, text) in ["hello", "how are you?", "bye"].into_iter().enumerate() {
        let (status, receipt) = post(
            &http,
            &format!("{base}/chat/s1"),
            json!({"role": "user", "content": text}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{receipt}");
        assert_eq!(receipt["seq"], json!(n + 1));
        assert_eq!(receipt["durability"], "synced");
    }
    let (status, _, history, _) = get(&http, &format!("{base}/chat/s1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["degraded"], false, "{history}");
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(3), "{history}");
    let (status, stored) = post(
        &http,
        &format!("{base}/facts"),
        json!({"content": "The shop opens at 9."}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let (status, _, found, _) = get(&http, &format!("{base}/facts/search?q=shop")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["facts"][0]["content"], "The shop opens at 9.", "{found}");
    for _ in 0..2 {
        let (status, _, value, took) = get(&http, &format!("{base}/upstream/lisbon")).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        eprintln!("GET /upstream/lisbon: {took:?}");
    }
    assert_eq!(
        running.upstream.calls(),
        1,
        "the second answer came from the cache"
    );
    let (status, _, ready, _) = get(&http, &format!("{base}/health/ready")).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["ready"], true);
    assert_eq!(get(&http, &format!("{base}/health/live")).await.0, StatusCode::OK);

    // Redis frozen: connections stay open, nothing answers.
    server.pause().expect("SIGSTOP");
    let history_bound = REDIS_DEADLINE + Duration::from_millis(50) + SLACK;
    let (status, _, history, took) = get(&http, &format!("{base}/chat/s1")).await;
    eprintln!("GET /chat/s1, Redis frozen, breaker closed: {status} in {took:?} (bound {history_bound:?})");
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["degraded"], true, "{history}");
    assert_eq!(history["source"], "file", "{history}");
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(3), "{history}");
    assert!(took < history_bound, "history took {took:?}");

    let mut searches = Vec::new();
    loop {
        let (status, headers, body, took) = get(&http, &format!("{base}/facts/search?q=shop")).await;
        eprintln!("GET /facts/search, Redis frozen: {status} in {took:?}");
        assert!(took < history_bound, "a search took {took:?}: {body}");
        searches.push(status);
        match status {
            StatusCode::GATEWAY_TIMEOUT if searches.len() < 5 => continue,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    headers.contains_key(RETRY_AFTER),
                    "an open circuit says when to retry"
                );
                break;
            }
            other => panic!("a search answered {other} ({body}) after {searches:?}"),
        }
    }
    let (status, _, history, took) = get(&http, &format!("{base}/chat/s1")).await;
    eprintln!("GET /chat/s1, Redis frozen, breaker open: {status} in {took:?}");
    assert_eq!(
        (status, &history["degraded"]),
        (StatusCode::OK, &json!(true)),
        "{history}"
    );
    assert!(took < history_bound, "history took {took:?}");

    let (status, _, ready, took) = get(&http, &format!("{base}/health/ready")).await;
    eprintln!("GET /health/ready, Redis frozen: {status} in {took:?}: {ready}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["ready"], false);
    assert!(took < HEALTH_DEADLINE + SLACK, "readiness took {took:?}");
    let (_, _, metrics, _) = get(&http, &format!("{base}/metrics")).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"stayfast_circuit_state{target="redis.main"} 1"#),
        "the open circuit shows in /metrics:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("circuit_state"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(get(&http, &format!("{base}/health/live")).await.0, StatusCode::OK);

    // Thawed: everything recovers.
    server.resume().expect("SIGCONT");
    let started = Instant::now();
    loop {
        let ready = get(&http, &format!("{base}/health/ready")).await.0;
        let search = get(&http, &format!("{base}/facts/search?q=shop")).await.0;
        let (_, _, history, _) = get(&http, &format!("{base}/chat/s1")).await;
        if ready == StatusCode::OK && search == StatusCode::OK && history["degraded"] == false {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not recovered after 15 s: ready {ready}, search {search}, history {history}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("recovered {:?} after SIGCONT", started.elapsed());
    let (status, _, ready, _) = get(&http, &format!("{base}/health/ready")).await;
    assert_eq!(
        (status, &ready["ready"]),
        (StatusCode::OK, &json!(true)),
        "{ready}"
    );

    let report = running.shutdown().await;
    assert_eq!(report.aborted, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_finishes_requests_and_keeps_every_acknowledged_append() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.expect("redis-server starts");
    let dir = TempDir::new("service-stop");
    let mut settings = settings(&server, &dir);
    // Appends are acknowledged before their fsync: the shutdown's flush makes them
    // durable, and this test checks that it ran.
    settings.transcripts.fsync = FsyncPolicy::Never;
    let mut running = Running::start(&settings, Duration::from_millis(400)).await;
    let base = running.base.clone();

    // Writers: each appends to its own session until the service stops answering,
    // keeping the ids of the appends it got a 200 for, and when it got it.
    let acked: Arc<StdMutex<Acked>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, base, acked) = (client(), base.clone(), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            let session = format!("load-{w}");
            for n in 0.. {
                let id = format!("w{w}-m{n}");
                let body = json!({"role": "user", "content": format!("message {n}"), "id": id});
                match send(&http, Method::POST, &format!("{base}/chat/{session}"), Some(body)).await {
                    Ok((StatusCode::OK, _, _, _)) => {
                        let mut acked = acked.lock().unwrap_or_else(|e| e.into_inner());
                        acked
                            .entry(session.clone())
                            .or_default()
                            .push((id, Instant::now()));
                    }
                    Ok((status, _, body, _)) => panic!("an append answered {status}: {body}"),
                    Err(_) => return, // the service stopped: this one was not acknowledged
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Slow upstream calls in flight when the shutdown starts: they must be answered,
    // and before the service reports itself stopped.
    let slow: Vec<_> = (0..4)
        .map(|k| {
            let (http, url) = (client(), format!("{base}/upstream/slow-{k}"));
            tokio::spawn(async move { (send(&http, Method::GET, &url, None).await, Instant::now()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    running.trigger_shutdown();
    let addr = running.addr;
    let stopping = tokio::spawn(async move {
        let report = running.shutdown().await;
        (report, Instant::now())
    });
    let mut answered = Vec::new();
    for call in slow {
        let (answer, at) = call.await.expect("the call's task");
        let (status, _, body, took) = answer.expect("an in-flight request is answered, not cut");
        assert_eq!(status, StatusCode::OK, "{body}");
        eprintln!("in-flight upstream call answered {status} in {took:?}");
        answered.push(at);
    }
    let (report, stopped) = stopping.await.expect("the shutdown does not panic");
    eprintln!("shut down in {:?}: {report:?}", stopped - started);
    assert!(
        answered.iter().all(|at| *at <= stopped),
        "the service stopped before answering the requests in flight"
    );
    assert_eq!(report.aborted, 0, "background work drained: {report:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the shutdown"
    );
    for writer in writers {
        writer.await.expect("a writer does not panic");
    }

    // Every acknowledged append is in its file: read back by a fresh, file-only store.
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|e| e.into_inner()));
    let store = TranscriptStore::builder(&settings.transcripts)
        .open()
        .await
        .expect("the transcripts reopen");
    let mut total = 0;
    for (session, ids) in &acked {
        let history = store
            .history(session, 100_000)
            .await
            .expect("the history reads back");
        let stored: Vec<&str> = history.records.iter().map(|r| r.id.as_str()).collect();
        for (id, at) in ids {
            assert!(
                stored.contains(&id.as_str()),
                "{session}: acknowledged {id} is not in the file"
            );
            assert!(
                *at <= stopped,
                "{session}: {id} was acknowledged after the shutdown"
            );
        }
        total += ids.len();
    }
    eprintln!("{total} acknowledged appends, all in the files");
    assert!(total > 100, "the load ran: {total} appends acknowledged");
}
