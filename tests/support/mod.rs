//! What the facade's test files share: a scratch directory, a free loopback port, a
//! `/metrics` scrape over plain HTTP, a Redis handle on a test server, the settings of
//! a whole service, and (in [`cache`]) a cache whose counters can be read back. Each
//! test binary uses only a part of it.
#![allow(dead_code)]

pub(crate) mod acl;
pub(crate) mod cache;
pub(crate) mod deployment;

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fresh directory under the system's temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// `stayfast-<tag>-<pid>-<n>`: unique per process and call.
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "stayfast-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The body of `GET /metrics` at `addr`; panics unless the answer is 200.
pub(crate) async fn scrape(addr: SocketAddr) -> String {
    // The listener renders on its own; the Redis handle's batched call records reach
    // the recorder within a second. Flush them so the scrape counts every call so far.
    stayfast_core::telemetry::flush();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{}",
        &response[..response.len().min(200)]
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// A handle on `redis`, the deployment under test: the default config, then `tweak`
/// (each test file sets the bounds its faults need). On a cluster or a sentinel
/// deployment it returns once a command goes through (fred learns the slots or the
/// primary after connecting).
pub(crate) async fn connect(
    redis: &deployment::TestRedis,
    tweak: impl FnOnce(&mut stayfast::redis::RedisConfig),
) -> stayfast::redis::Redis {
    let mut c = stayfast::redis::RedisConfig::default();
    redis.configure(&mut c);
    tweak(&mut c);
    let handle = stayfast::redis::Redis::connect(&c)
        .await
        .expect("connect to the test deployment");
    if redis.learnt_after_connecting() {
        // SCARD: a command no suite counts.
        let started = std::time::Instant::now();
        while let Err(e) = handle.scard("{stayfast:probe}").await {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "no command went through: {e}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    handle
}

/// Default settings with the transcripts under `dir`, and Redis at `url` or, with
/// `None`, file-only.
pub(crate) fn settings(url: Option<String>, dir: &TempDir) -> stayfast::Settings {
    let mut s = stayfast::Settings::default();
    match url {
        Some(url) => s.redis.url = stayfast::settings::RedisUrl::new(url),
        None => s.redis.enabled = false,
    }
    s.transcripts.dir = dir.0.join("tx");
    s
}

/// A whole service on `server`, its transcripts under `dir`, `/metrics` on a free
/// loopback port: GETs bounded by `get_timeout`, other commands by 1 s, and a breaker
/// that opens after two failed attempts and probes again soon, so faults and recovery
/// are quick to watch.
pub(crate) fn service_settings(
    server: &stayfast::test_util::RedisServer,
    dir: &TempDir,
    get_timeout: std::time::Duration,
) -> stayfast::Settings {
    use std::time::Duration;
    let mut s = settings(Some(server.url()), dir);
    s.redis.reconnect_max_delay = Duration::from_millis(200);
    s.metrics.http_listener = true;
    s.metrics.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    s.timeouts.redis.operations.get = Some(get_timeout);
    s.timeouts.redis.operations.default = Duration::from_secs(1);
    s.breaker.consecutive_failures = Some(2);
    s.breaker.open_for = Duration::from_millis(300);
    s.breaker.max_open_for = Duration::from_secs(1);
    s
}

/// `session`'s last `limit` messages once they are served from Redis, complete (not
/// degraded) and with no background push in flight; panics after `within`.
pub(crate) async fn history_from_redis(
    store: &stayfast::TranscriptStore,
    background: &stayfast::FireAndForget,
    session: &str,
    limit: usize,
    within: std::time::Duration,
) -> stayfast::transcripts::History {
    let started = std::time::Instant::now();
    loop {
        let history = store.history(session, limit).await.expect("history");
        if history.source == stayfast::transcripts::HistorySource::Redis
            && !history.degraded
            && background.in_flight() == 0
        {
            return history;
        }
        assert!(
            started.elapsed() < within,
            "{session} not served from Redis within {within:?} ({:?}, degraded {})",
            history.source,
            history.degraded
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `e` and each of its sources, joined by ": " (what a log line shows).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
