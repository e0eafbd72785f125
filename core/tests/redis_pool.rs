//! Redis pool saturation gauges against a real redis-server, read through the Prometheus
//! recorder as a scrape would see them: pool size, connected clients, commands in flight
//! through the handle, and commands buffered inside fred.
//!
//! The gauges are sampled once a second, so every check polls the rendered exposition
//! with a bound rather than reading it once. Real time, one test at a time; measured
//! figures printed (`--nocapture`).
#![allow(clippy::unwrap_used)]

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use fred::interfaces::KeysInterface;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use stayfast_core::{
    redis::{Redis, RedisConfig},
    telemetry::{DEFAULT_PREFIX, describe_metrics},
    test_util::RedisServer,
};
use tokio::task::JoinSet;

const IN_FLIGHT: &str = "stayfast_redis_commands_in_flight";
const BUFFERED: &str = "stayfast_redis_commands_buffered";
const POOL_SIZE: &str = "stayfast_redis_pool_size";
const CONNECTIONS: &str = "stayfast_redis_connections";

/// Two sampling periods and some slack: long enough for any sample to be taken.
const SAMPLED_WITHIN: Duration = Duration::from_millis(2500);

/// One real-server test at a time: SIGSTOP and wall-clock bounds on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process-wide Prometheus recorder, installed (and every metric described) before
/// any handle is built: the sampler resolves its gauges when it starts.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new().install_recorder().unwrap();
        describe_metrics(DEFAULT_PREFIX);
        handle
    })
}

/// The value of the series `name{labels…}` in the rendered exposition, if present.
fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = recorder().render();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?.strip_prefix('{')?.strip_suffix('}')?;
            let mut pairs: Vec<(&str, &str)> = rest
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            pairs.sort_unstable();
            let mut wanted = labels.to_vec();
            wanted.sort_unstable();
            (pairs == wanted).then(|| value.parse().ok())?
        })
}

/// Polls the gauge until it reads `expected` or `bound` passes; the time it took.
async fn sampled(name: &str, labels: &[(&str, &str)], expected: f64, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if gauge(name, labels) == Some(expected) {
            return Some(started.elapsed());
        }
        if started.elapsed() >= bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `name{target}` to read `expected`, failing with what it read instead.
async fn expect_sampled(name: &str, target: &str, expected: usize) -> Duration {
    let labels = [("target", target)];
    match sampled(name, &labels, expected as f64, SAMPLED_WITHIN).await {
        Some(took) => took,
        None => panic!(
            "{name}{{target={target}}} never read {expected} within {SAMPLED_WITHIN:?}; it reads {:?}",
            gauge(name, &labels)
        ),
    }
}

/// A handle whose breaker never trips and whose connections are not reset while the
/// server is stopped: only the gauges under test change.
fn config(url: &str, pool_size: u32, timeout: Duration) -> RedisConfig {
    let mut c = RedisConfig::default();
    c.url = url.to_owned();
    c.pool_size = pool_size;
    c.command_timeout = timeout;
    c.operations.scan = Some(timeout);
    c.unresponsive_timeout = Duration::from_secs(60);
    c.breaker.consecutive_failures = None;
    c.breaker.failure_rate = None;
    c
}

async fn connect(config: &RedisConfig, target: &'static str) -> Redis {
    recorder();
    Redis::connect_named(config, target, DEFAULT_PREFIX)
        .await
        .unwrap()
}

/// Waits until `read` (a count read directly, not sampled) returns `n`.
async fn until(what: &str, n: usize, read: impl Fn() -> usize) {
    let started = Instant::now();
    while read() != n {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{} {what}, expected {n}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `redis` counts `n` commands in flight (read directly, not sampled).
async fn until_in_flight(redis: &Redis, n: usize) {
    until("in flight", n, || redis.commands_in_flight()).await;
}

/// An idle pool: its configured size, every client connected, nothing in flight or
/// buffered — also after calls have come and gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pool_reports_its_size_and_nothing_in_flight() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let target = "redis.pool_idle";
    let redis = connect(&config(&server.url(), 3, Duration::from_secs(2)), target).await;
    for i in 0..50 {
        redis.set(format!("k{i}"), i, None).await.unwrap();
        let _: Option<i64> = redis.get(format!("k{i}")).await.unwrap();
    }

    let took = expect_sampled(POOL_SIZE, target, 3).await;
    let connected = [("target", target), ("state", "connected")];
    let up = sampled(CONNECTIONS, &connected, 3.0, SAMPLED_WITHIN).await;
    assert!(
        up.is_some(),
        "connected reads {:?}",
        gauge(CONNECTIONS, &connected)
    );
    expect_sampled(IN_FLIGHT, target, 0).await;
    expect_sampled(BUFFERED, target, 0).await;
    assert_eq!(
        gauge(CONNECTIONS, &[("target", target), ("state", "disconnected")]),
        Some(0.0)
    );
    assert_eq!((redis.commands_in_flight(), redis.commands_buffered()), (0, 0));
    assert_eq!(redis.connected(), (3, 3));

    let text = recorder().render();
    for name in [IN_FLIGHT, BUFFERED] {
        assert!(
            text.contains(&format!("# TYPE {name} gauge")),
            "{name} is a gauge"
        );
        assert!(text.contains(&format!("# HELP {name} ")), "{name} is described");
    }
    eprintln!("idle: pool_size 3, connected 3, in_flight 0, buffered 0 (first read after {took:?})");
}

/// Calls stalled by a stopped server are in flight — GETs, a pipeline and a SCAN, the
/// last two counting one each — but not buffered: they were written. After SIGCONT they
/// all succeed and the gauge returns to 0. Calls then cancelled (their futures dropped)
/// while the server is still stopped leave nothing counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_calls_are_in_flight_until_answered_or_cancelled() {
    const N: usize = 20;
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let target = "redis.pool_stall";
    let redis = connect(&config(&server.url(), 2, Duration::from_secs(10)), target).await;
    redis.set("k", "v", None).await.unwrap();
    expect_sampled(IN_FLIGHT, target, 0).await;

    // Answered after a resume.
    server.pause().unwrap();
    let mut calls = JoinSet::new();
    for _ in 0..N {
        let redis = redis.clone();
        calls.spawn(async move { redis.get::<Option<String>>("k").await.map(drop) });
    }
    let r = redis.clone();
    calls.spawn(async move {
        r.pipeline(|p| async move {
            let () = p.get("k").await?;
            let () = p.get("k").await?;
            let () = p.get("k").await?;
            Ok(p)
        })
        .await
        .map(|_: Vec<Option<String>>| ())
    });
    let r = redis.clone();
    calls.spawn(async move { r.scan_keys("k*", 100, 1000).await.map(drop) });
    until_in_flight(&redis, N + 2).await;
    let rose = expect_sampled(IN_FLIGHT, target, N + 2).await;
    expect_sampled(BUFFERED, target, 0).await; // written, only waiting for replies
    let resumed = Instant::now();
    server.resume().unwrap();
    while let Some(call) = calls.join_next().await {
        call.unwrap().unwrap();
    }
    let answered = resumed.elapsed();
    let fell = expect_sampled(IN_FLIGHT, target, 0).await;
    eprintln!(
        "stall: {N} GETs + 1 pipeline (3 commands) + 1 SCAN → in_flight {} sampled after {rose:?}; \
         answered {answered:?} after SIGCONT; in_flight 0 sampled {fell:?} later",
        N + 2
    );

    // Cancelled while the server is still stopped.
    server.pause().unwrap();
    let mut calls = JoinSet::new();
    for _ in 0..N {
        let redis = redis.clone();
        calls.spawn(async move { redis.get::<Option<String>>("k").await.map(drop) });
    }
    until_in_flight(&redis, N).await;
    expect_sampled(IN_FLIGHT, target, N).await;
    calls.abort_all();
    while let Some(call) = calls.join_next().await {
        assert!(call.unwrap_err().is_cancelled());
    }
    assert_eq!(
        redis.commands_in_flight(),
        0,
        "a dropped call is uncounted at once"
    );
    let fell = expect_sampled(IN_FLIGHT, target, 0).await;
    server.resume().unwrap();
    assert_eq!(
        redis.get::<Option<String>>("k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(redis.commands_in_flight(), 0);
    eprintln!("cancel: {N} GETs aborted under SIGSTOP → in_flight 0 sampled after {fell:?}");
}

/// Calls that time out while the server is stopped leave the in-flight count at 0,
/// the server still stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_calls_leave_nothing_in_flight() {
    const N: usize = 20;
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let target = "redis.pool_timeout";
    let timeout = Duration::from_millis(1500);
    let redis = connect(&config(&server.url(), 2, timeout), target).await;
    redis.set("k", "v", None).await.unwrap();

    server.pause().unwrap();
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for _ in 0..N {
        let redis = redis.clone();
        calls.spawn(async move { redis.get::<Option<String>>("k").await });
    }
    until_in_flight(&redis, N).await;
    expect_sampled(IN_FLIGHT, target, N).await;
    while let Some(call) = calls.join_next().await {
        let error = call.unwrap().unwrap_err();
        assert!(error.is_timeout(), "{error}");
    }
    let timed_out = started.elapsed();
    assert_eq!(redis.commands_in_flight(), 0);
    let fell = expect_sampled(IN_FLIGHT, target, 0).await;
    server.resume().unwrap();
    eprintln!("timeout: {N} GETs timed out after {timed_out:?} → in_flight 0 sampled {fell:?} later");
}

/// Buffered: a 32 MiB SET to a stopped server fills the socket's buffers (a few MiB on
/// loopback: `tcp_wmem` max 4 MiB, and the stopped server's receive buffer stops
/// growing), so fred's writer blocks on it and the writes sent after it wait in fred's queue, unwritten:
/// buffered = the writes, in flight = the writes and the SET. When their callers time out,
/// nothing is in flight, yet the writes stay buffered until fred dequeues them — and then
/// skips them (their deadline is in fred): after SIGCONT the server never runs one (no
/// ghost write), and buffered returns to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_behind_a_blocked_write_are_buffered() {
    const M: usize = 10;
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let target = "redis.pool_buffer";
    let redis = connect(&config(&server.url(), 1, Duration::from_secs(2)), target).await;
    redis.set("k", "v", None).await.unwrap();
    let sets_before = server.executions("set").await.unwrap();
    expect_sampled(BUFFERED, target, 0).await;

    server.pause().unwrap();
    let started = Instant::now();
    let mut calls = JoinSet::new();
    let r = redis.clone();
    let big = "x".repeat(32 << 20);
    calls.spawn(async move { r.set("big", big, None).await });
    until_in_flight(&redis, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the writer is stuck in the SET
    for i in 0..M {
        let redis = redis.clone();
        calls.spawn(async move { redis.set(format!("queued:{i}"), "1", None).await });
    }
    until_in_flight(&redis, M + 1).await;
    until("buffered: the writes wait behind the SET", M, || {
        redis.commands_buffered()
    })
    .await;
    let buffered_after = expect_sampled(BUFFERED, target, M).await;
    expect_sampled(IN_FLIGHT, target, M + 1).await;

    while let Some(call) = calls.join_next().await {
        let error = call.unwrap().unwrap_err();
        assert!(error.is_timeout(), "{error}");
    }
    let timed_out = started.elapsed();
    assert_eq!(redis.commands_in_flight(), 0, "every caller gave up");
    assert_eq!(redis.commands_buffered(), M, "still queued inside fred");
    expect_sampled(IN_FLIGHT, target, 0).await;
    expect_sampled(BUFFERED, target, M).await;

    let resumed = Instant::now();
    server.resume().unwrap();
    let drained = expect_sampled(BUFFERED, target, 0).await;
    assert_eq!(redis.commands_buffered(), 0);
    let len: i64 = redis
        .run(stayfast_core::redis::Command::Other, |c| async move {
            c.strlen("big").await
        })
        .await
        .unwrap();
    assert_eq!(len, 32 << 20, "the SET written before the stop was applied");
    assert_eq!(
        server.executions("set").await.unwrap(),
        sets_before + 1,
        "a timed-out write still in fred's queue is skipped, never sent"
    );
    eprintln!(
        "buffered: {M} SETs behind a 32 MiB SET → buffered {M} sampled after {buffered_after:?}; \
         callers timed out after {timed_out:?} (buffered still {M}); \
         buffered 0 sampled {:?} after SIGCONT ({drained:?} polling); queued SETs executed: 0",
        resumed.elapsed()
    );
}
