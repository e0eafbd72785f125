//! The Redis handle against a real redis-server (C2, C3, C3b, C7 and A5's execution
//! counts in `docs/testing.md`, and a deadline test per fred `WithOptions` trap). Real time,
//! serialised, wall-clock bounds with +250 ms slack; measured figures printed.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use fred::{
    interfaces::{ClientLike, HashesInterface, KeysInterface},
    prelude::{Builder, Config, ReconnectPolicy},
};
use stayfast_core::{
    breaker::State,
    redis::{Command, Redis},
    test_util::RedisServer,
};
use support::redis::config;

const SLACK: Duration = Duration::from_millis(250);

/// One boxed call, so calls of different kinds can be timed in one loop.
type Call<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;

/// One real-server test at a time: wall-clock bounds on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn commands_round_trip() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let redis = Redis::connect(&config(&server.url(), 1000)).await.unwrap();
    assert_eq!(redis.connected(), (2, 2));
    redis.set("k", "v", Some(60)).await.unwrap();
    assert_eq!(
        redis.get::<Option<String>>("k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(redis.get::<Option<String>>("missing").await.unwrap(), None);
    assert!(redis.expire("k", 30).await.unwrap());
    redis.hset("h", vec![("a", "1"), ("b", "2")]).await.unwrap();
    let h: HashMap<String, String> = redis.hgetall("h").await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(redis.rpush("l", vec!["x", "y"]).await.unwrap(), 2);
    assert_eq!(redis.lrange::<Vec<String>>("l", 0, -1).await.unwrap(), ["x", "y"]);
    redis.sadd("{s}:1", vec!["a", "b"]).await.unwrap();
    redis.sadd("{s}:2", vec!["b", "c"]).await.unwrap();
    assert_eq!(
        redis.sinter::<Vec<String>>(vec!["{s}:1", "{s}:2"]).await.unwrap(),
        ["b"]
    );
    let n: i64 = redis
        .eval(
            "return #KEYS + #ARGV",
            vec!["k".into()],
            vec!["1".into(), "2".into()],
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    // No replica: the script's reply, and 0 acknowledgements once WAIT's 10 ms are up.
    let (n, replicas): (i64, u32) = redis
        .eval_then_wait(
            "return #KEYS",
            vec!["k".into()],
            vec![],
            1,
            Duration::from_millis(10),
        )
        .await
        .unwrap();
    assert_eq!((n, replicas), (1, 0));
    let refused = redis
        .eval_then_wait::<i64>(
            "return 1",
            vec!["a".into(), "b".into()],
            vec![],
            0,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(
        refused.attempts() == Some(0) && refused.is_inner(),
        "keys of two slots, unsent: {refused}"
    );
    let (a, b): (Option<String>, HashMap<String, String>) = redis
        .pipeline(|p| async move {
            let () = p.get("k").await?;
            let () = p.hgetall("h").await?;
            Ok(p)
        })
        .await
        .unwrap();
    assert_eq!((a.as_deref(), b.len()), (Some("v"), 2));
    let mut keys = redis.scan_keys("*", 10, 100).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["h", "k", "l", "{s}:1", "{s}:2"]);
    assert_eq!(redis.del(vec!["k", "h"]).await.unwrap(), 2);
    // A caller mistake (WRONGTYPE) is not Redis's fault: the breaker does not count it.
    for _ in 0..10 {
        assert!(redis.get::<Option<String>>("l").await.unwrap_err().is_inner());
    }
    assert_eq!(redis.breaker().state(), State::Closed);
}

/// Redis down at start-up: the handle starts degraded, fails fast, opens its breaker,
/// and recovers by itself once Redis is there.
#[tokio::test]
async fn starts_degraded_and_recovers() {
    let _serial = SERIAL.lock().await;
    let mut server = RedisServer::start().await.unwrap();
    let url = server.url();
    server.kill().unwrap();
    let started = Instant::now();
    let redis = Redis::connect(&config(&url, 300)).await.unwrap();
    let connect_time = started.elapsed();
    assert!(
        connect_time <= Duration::from_millis(500) + SLACK,
        "connect took {connect_time:?}"
    );
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert!(redis.get::<Option<String>>("k").await.is_err());
        worst = worst.max(t.elapsed());
    }
    println!("down at start: connect returned in {connect_time:?}; worst failing call {worst:?}");
    assert!(worst <= Duration::from_millis(300) + SLACK);
    assert_eq!(redis.breaker().state(), State::Open);
    server.restart().await.unwrap();
    let restarted = Instant::now();
    let recovered = loop {
        if redis.set("k", "v", None).await.is_ok() {
            break restarted.elapsed();
        }
        assert!(restarted.elapsed() < Duration::from_secs(10), "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("recovered {recovered:?} after the restart");
}

/// C2 and the `WithOptions` traps: with the server SIGSTOPped (connections open, no
/// reply), every kind of call — plain commands, EVAL, a pipeline, SCAN — really reaches
/// fred (its breaker never trips) and returns within its deadline + slack; a second
/// handle, with a breaker, then fails fast.
#[tokio::test]
async fn sigstop_every_call_returns_within_its_deadline() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let mut no_trip = config(&server.url(), 300);
    no_trip.breaker.consecutive_failures = None;
    no_trip.breaker.failure_rate = None;
    let redis = Redis::connect(&no_trip).await.unwrap();
    let guarded = Redis::connect(&config(&server.url(), 300)).await.unwrap();
    // A GET bounded at 300 ms by a handle whose fred-wide default is 3 s: when a call
    // falls into a `WithOptions` trap (EVAL on the handed pool loses the options), only
    // stayfast's backstop can end it near 300 ms.
    let mut trapped = no_trip.clone();
    trapped.command_timeout = Duration::from_secs(3);
    trapped.operations.get = Some(Duration::from_millis(300));
    let trapped = Redis::connect(&trapped).await.unwrap();
    redis.set("k", "v", None).await.unwrap();
    server.pause().unwrap();
    let mut latencies = Vec::new();
    let bound = Duration::from_millis(300) + SLACK;
    for round in 0..2 {
        let calls: [(&str, Call<'_>); 6] = [
            (
                "get",
                Box::pin(async { redis.get::<Option<String>>("k").await.is_err() }),
            ),
            (
                "rpush",
                Box::pin(async { redis.rpush("l", vec!["x"]).await.is_err() }),
            ),
            (
                "eval",
                Box::pin(async { redis.eval::<i64>("return 1", vec![], vec![]).await.is_err() }),
            ),
            (
                "pipeline",
                Box::pin(async {
                    redis
                        .pipeline::<(Option<String>,), _, _>(|p| async move {
                            let () = p.get("k").await?;
                            Ok(p)
                        })
                        .await
                        .is_err()
                }),
            ),
            (
                "scan",
                Box::pin(async { redis.scan_keys("*", 10, 100).await.is_err() }),
            ),
            (
                "eval in a trap (backstop)",
                Box::pin(async {
                    trapped
                        .run(Command::Get, |c| async move {
                            use fred::interfaces::LuaInterface;
                            c.eval::<i64, _, _, _>("return 1", (), ()).await
                        })
                        .await
                        .is_err_and(|e| e.is_timeout())
                }),
            ),
        ];
        for (name, call) in calls {
            let t = Instant::now();
            assert!(call.await, "{name} succeeded against a stopped server");
            let took = t.elapsed();
            println!("SIGSTOP round {round}: {name} returned in {took:?}");
            assert!(took <= bound, "{name} took {took:?} > {bound:?}");
            assert!(
                took >= Duration::from_millis(200),
                "{name} did not reach the stopped server"
            );
            latencies.push(took);
        }
    }
    latencies.sort();
    println!(
        "SIGSTOP: p99 (max of {}) {:?}",
        latencies.len(),
        latencies.last().unwrap()
    );
    let t = Instant::now();
    let mut calls = 0;
    while !guarded.breaker().state().is_open() {
        let _ = guarded.get::<Option<String>>("k").await;
        calls += 1;
        assert!(calls <= 10, "the breaker never opened");
    }
    println!("SIGSTOP: breaker open after {calls} calls, {:?}", t.elapsed());
    let t = Instant::now();
    assert!(
        guarded
            .get::<Option<String>>("k")
            .await
            .unwrap_err()
            .is_circuit_open()
    );
    assert!(
        t.elapsed() < Duration::from_millis(5),
        "an open circuit fails fast"
    );
    server.resume().unwrap();
}

/// C3 and A5's execution counts: during CLIENT PAUSE WRITE reads succeed; a write that
/// timed out after being sent is `OutcomeUnknown` (not retried: executed at most once)
/// — and the server does apply it after the pause.
#[tokio::test]
async fn client_pause_write_outcome_unknown_and_executions_bounded() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let redis = Redis::connect(&config(&server.url(), 200)).await.unwrap();
    redis.set("read-me", "ok", None).await.unwrap();
    server
        .command(&["CLIENT", "PAUSE", "700", "WRITE"])
        .await
        .unwrap();
    let t = Instant::now();
    assert_eq!(
        redis.get::<Option<String>>("read-me").await.unwrap().as_deref(),
        Some("ok")
    );
    let read = t.elapsed();
    let t = Instant::now();
    let err = redis.rpush("paused-list", vec!["once"]).await.unwrap_err();
    let write = t.elapsed();
    println!("CLIENT PAUSE WRITE: read {read:?}, write ended in {write:?} with: {err}");
    assert!(err.is_outcome_unknown(), "{err}");
    tokio::time::sleep(Duration::from_millis(800)).await; // the pause ends
    let len: Vec<String> = redis.lrange("paused-list", 0, -1).await.unwrap();
    assert_eq!(
        len,
        ["once"],
        "the timed-out write was applied after the pause, exactly once"
    );
    assert_eq!(server.executions("rpush").await.unwrap(), 1);
}

/// C3b: with the server killed, a write that times out is never sent later (the
/// deadline lives inside fred); negative control in the same test — the same write
/// through a default fred client guarded only by an outer timeout does land after the
/// restart (a ghost write).
#[tokio::test]
async fn no_ghost_write_when_disconnected() {
    let _serial = SERIAL.lock().await;
    let mut server = RedisServer::start().await.unwrap();
    let redis = Redis::connect(&config(&server.url(), 300)).await.unwrap();
    let raw = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .unwrap();
    raw.init().await.unwrap();
    server.kill().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let guarded = redis.set("guarded", "1", None).await;
    assert!(guarded.is_err());
    let outer = tokio::time::timeout(
        Duration::from_millis(300),
        raw.set::<(), _, _>("ghost", "1", None, None, false),
    )
    .await;
    assert!(outer.is_err(), "the raw write hangs while Redis is down");
    server.restart().await.unwrap();
    raw.wait_for_connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.set("probe", "1", None).await.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ghost: Option<String> = redis.get("ghost").await.unwrap();
    let kept: Option<String> = redis.get("guarded").await.unwrap();
    println!("after restart: raw fred ghost write = {ghost:?}, stayfast write = {kept:?}");
    assert_eq!(
        ghost.as_deref(),
        Some("1"),
        "negative control: the outer-timeout write landed late"
    );
    assert_eq!(kept, None, "stayfast's timed-out write was never sent");
    let _ = raw.quit().await;
}

/// C7: a command polled once and dropped (already sent: Redis runs it) does not leave
/// its reply for the next one.
#[tokio::test]
async fn cancel_then_reuse_gets_its_own_reply() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let mut c = config(&server.url(), 1000);
    c.pool_size = 1;
    let redis = Redis::connect(&c).await.unwrap();
    redis.set("a", "1", None).await.unwrap();
    redis.set("b", "2", None).await.unwrap();
    for _ in 0..50 {
        let first = redis.get::<Option<String>>("a");
        let _ = tokio::time::timeout(Duration::from_micros(1), first).await;
        assert_eq!(
            redis.get::<Option<String>>("b").await.unwrap().as_deref(),
            Some("2")
        );
    }
    // Exactly one execution per GET issued: each dropped GET was written on its one
    // poll and ran, so its reply really came back on the shared connection (the case
    // this test is about: it was discarded, not handed to the next GET), and nothing
    // was sent twice.
    let gets = server.executions("get").await.unwrap();
    assert_eq!(
        gets, 100,
        "GETs executed for 50 polled once and dropped plus 50 awaited"
    );
    // Commands run through `run` carry their own deadline too.
    let n: i64 = redis
        .run(Command::Other, |c| async move { c.incr("counter").await })
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// The handle's call metrics are batched per thread (two cores writing one series per
/// command cost throughput). They reach the recorder on `telemetry::flush()` exactly, and
/// by themselves within the pool sampler's second once calls stop.
#[tokio::test]
async fn batched_call_metrics_reach_the_recorder() {
    use metrics_util::{
        MetricKind,
        debugging::{DebugValue, DebuggingRecorder, Snapshotter},
    };
    /// Calls, attempts and durations recorded for `operation` since the last snapshot
    /// (a snapshot drains what it reads).
    fn recorded(snapshotter: &Snapshotter, operation: &str) -> (u64, u64, u64) {
        let (mut calls, mut attempts, mut durations) = (0, 0, 0);
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            if !key
                .labels()
                .any(|l| l.key() == "operation" && l.value() == operation)
            {
                continue;
            }
            match (kind, key.name(), value) {
                (MetricKind::Counter, "stayfast_calls_total", DebugValue::Counter(n)) => calls += n,
                (MetricKind::Counter, "stayfast_attempts_total", DebugValue::Counter(n)) => attempts += n,
                (MetricKind::Histogram, "stayfast_call_duration_seconds", DebugValue::Histogram(v)) => {
                    durations += v.len() as u64;
                }
                _ => {}
            }
        }
        (calls, attempts, durations)
    }

    let _serial = SERIAL.lock().await;
    // current_thread: the handles resolve against this thread's local recorder.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start().await.unwrap();
    let redis = Redis::connect(&config(&server.url(), 1000)).await.unwrap();
    for _ in 0..10 {
        redis.get::<Option<String>>("k").await.unwrap();
    }
    stayfast_core::telemetry::flush();
    assert_eq!(
        recorded(&snapshotter, "redis.get"),
        (10, 10, 10),
        "calls, attempts, durations"
    );

    for _ in 0..3 {
        redis.set("k", "v", None).await.unwrap();
    }
    let started = Instant::now();
    let mut seen = (0, 0, 0);
    while seen != (3, 3, 3) {
        assert!(
            started.elapsed() < Duration::from_secs(1) + SLACK,
            "the sampler writes batches every second; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (c, a, d) = recorded(&snapshotter, "redis.set");
        seen = (seen.0 + c, seen.1 + a, seen.2 + d);
    }
    println!(
        "3 SETs reached the recorder by themselves after {:?}",
        started.elapsed()
    );
}
