//! Failover drills (#14): 50 concurrent callers on the stores while the primary they
//! write to is killed with SIGKILL — a cluster primary that has a replica, and the
//! primary a sentinel deployment monitors. Calls stay bounded, no acknowledged
//! transcript append is lost or duplicated, the stores serve from the promoted replica
//! (the time is printed), and the breaker opens and closes as configured.
//!
//! `cargo test -p stayfast --all-features --test failover -- --nocapture`
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use stayfast::{
    BackgroundConfig, FireAndForget,
    breaker::State,
    redis::{Redis, RedisConfig},
    test_util::{RedisCluster, RedisSentinel},
    transcripts::{Message, TranscriptConfig, TranscriptStore},
};
use support::TempDir;

/// The bound of every Redis command in the drill.
const OPERATION_TIMEOUT: Duration = Duration::from_millis(200);
const CALLERS: usize = 50;
const SLACK: Duration = Duration::from_millis(250);

fn drill_config(url: String) -> RedisConfig {
    let mut c = RedisConfig::default();
    c.url = url;
    c.command_timeout = OPERATION_TIMEOUT;
    c.reconnect_max_delay = Duration::from_millis(200);
    c.breaker.consecutive_failures = Some(5);
    c.breaker.open_for = Duration::from_millis(300);
    c.breaker.max_open_for = Duration::from_secs(1);
    c
}

async fn connect(config: &RedisConfig) -> Redis {
    let redis = Redis::connect(config).await.unwrap();
    let started = Instant::now();
    while redis.set("{tx:probe}", "x", None).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no command went through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis
}

/// What the callers saw.
struct Seen {
    /// Every Redis call's duration, successful or not.
    latencies: Vec<Duration>,
    failed: usize,
    /// Per session, the ids of the appends acknowledged, in order.
    acknowledged: BTreeMap<String, Vec<String>>,
    /// From the kill to the first GET of the killed primary's key served again.
    recovered_after: Duration,
    /// Breaker states seen, in order, without repeats.
    states: Vec<State>,
}

/// Runs `CALLERS` callers — each a GET and a SET on its own key (keys over every slot
/// range) and a transcript append to its own session, every 10 ms — kills the primary
/// with `kill` after 1 s, and stops 1.5 s after `probe_key` is served again.
async fn drill(redis: &Redis, transcripts: &TranscriptStore, probe_key: &str, kill: impl FnOnce()) -> Seen {
    let stop = Arc::new(AtomicBool::new(false));
    let mut states = redis.breaker().subscribe();
    let seen_states = Arc::new(std::sync::Mutex::new(vec![*states.borrow()]));
    let watcher = tokio::spawn({
        let seen = seen_states.clone();
        async move {
            while states.changed().await.is_ok() {
                let now = *states.borrow();
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
        }
    });
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (redis, transcripts, stop) = (redis.clone(), transcripts.clone(), stop.clone());
            tokio::spawn(async move {
                let (key, session) = (format!("k{i}"), format!("s{i}"));
                let (mut latencies, mut failed, mut acknowledged) = (Vec::new(), 0, Vec::new());
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    failed += usize::from(redis.get::<Option<String>>(key.as_str()).await.is_err());
                    latencies.push(started.elapsed());
                    let started = Instant::now();
                    failed += usize::from(redis.set(key.as_str(), "v", None).await.is_err());
                    latencies.push(started.elapsed());
                    n += 1;
                    let id = format!("m{n}");
                    if transcripts
                        .append(&session, Message::new("user", "hello").with_id(id.clone()))
                        .await
                        .is_ok()
                    {
                        acknowledged.push(id);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (session, latencies, failed, acknowledged)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill();
    let killed = Instant::now();
    // Served again once a GET of the killed primary's key succeeds after a failure was
    // possible: poll it through the same handle.
    let recovered_after = loop {
        if killed.elapsed() > Duration::from_millis(100)
            && redis.get::<Option<String>>(probe_key).await.is_ok()
            && redis.breaker().state() == State::Closed
        {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut latencies, mut failed, mut acknowledged) = (Vec::new(), 0, BTreeMap::new());
    for caller in callers {
        let (session, l, f, a) = caller.await.unwrap();
        latencies.extend(l);
        failed += f;
        acknowledged.insert(session, a);
    }
    watcher.abort();
    let states = seen_states.lock().unwrap().clone();
    Seen {
        latencies,
        failed,
        acknowledged,
        recovered_after,
        states,
    }
}

/// The drill's bounds: p99 of the calls within the operation timeout + 50 ms (and the
/// usual slack); every acknowledged append in the session's history exactly once, in
/// order, served from Redis again; the breaker opened and closed again.
async fn check(deployment: &str, mut seen: Seen, transcripts: &TranscriptStore, background: &FireAndForget) {
    seen.latencies.sort();
    let p99 = seen.latencies[seen.latencies.len() * 99 / 100];
    let max = *seen.latencies.last().unwrap();
    let appends: usize = seen.acknowledged.values().map(Vec::len).sum();
    println!(
        "{deployment}: {} calls, {} failed, p99 {p99:?}, max {max:?}; served again {:?} after the kill; \
         breaker {:?}; {appends} appends acknowledged",
        seen.latencies.len(),
        seen.failed,
        seen.recovered_after,
        seen.states
    );
    assert!(
        p99 <= OPERATION_TIMEOUT + Duration::from_millis(50) + SLACK,
        "{deployment}: p99 {p99:?}"
    );
    assert!(seen.failed > 0, "{deployment}: the kill was felt");
    // NOTE: the breaker's watch may coalesce a short half-open; what must show is that it
    // opened and is closed again.
    assert!(
        seen.states.contains(&State::Open),
        "{deployment}: {:?}",
        seen.states
    );
    assert_eq!(seen.states.last(), Some(&State::Closed), "{deployment}");

    for (session, acknowledged) in &seen.acknowledged {
        assert!(!acknowledged.is_empty());
        let history =
            support::history_from_redis(transcripts, background, session, 1000, Duration::from_secs(15))
                .await;
        let ids: Vec<&str> = history.records.iter().map(|r| r.id.as_str()).collect();
        let seqs: Vec<u64> = history.records.iter().map(|r| r.seq).collect();
        let expected: Vec<u64> = (1..=acknowledged.len() as u64).collect();
        assert_eq!(
            ids, *acknowledged,
            "{deployment}: {session}: each acknowledged append once"
        );
        assert_eq!(seqs, expected, "{deployment}: {session}: gap-free seqs");
    }
}

async fn transcripts_on(redis: &Redis, dir: &TempDir) -> (TranscriptStore, FireAndForget) {
    let mut config = TranscriptConfig::default();
    config.dir = dir.0.join("tx");
    config.cache_messages = 1000;
    let background = FireAndForget::new("failover", &BackgroundConfig::default()).unwrap();
    let store = TranscriptStore::builder(&config)
        .redis(redis.clone())
        .background(background.clone())
        .open()
        .await
        .unwrap();
    (store, background)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_primary_with_a_replica() {
    let mut cluster = RedisCluster::start(3, 1).await.unwrap();
    let redis = connect(&drill_config(cluster.url())).await;
    let dir = TempDir::new("failover-cluster");
    let (transcripts, background) = transcripts_on(&redis, &dir).await;
    let port = cluster.primary_of("k0").await.unwrap();
    let index = cluster.nodes().iter().position(|n| n.port() == port).unwrap();
    let seen = drill(&redis, &transcripts, "k0", || {
        cluster.node_mut(index).kill().unwrap()
    })
    .await;
    assert_ne!(
        cluster.primary_of("k0").await.unwrap(),
        port,
        "a replica took over"
    );
    check("cluster", seen, &transcripts, &background).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sentinel_monitored_primary() {
    let mut deployment = RedisSentinel::start(3).await.unwrap();
    let redis = connect(&drill_config(deployment.url())).await;
    let dir = TempDir::new("failover-sentinel");
    let (transcripts, background) = transcripts_on(&redis, &dir).await;
    let promoted = deployment.replica().port();
    let seen = drill(&redis, &transcripts, "k0", || {
        deployment.primary_mut().kill().unwrap()
    })
    .await;
    assert_eq!(deployment.current_primary().await.unwrap(), promoted);
    check("sentinel", seen, &transcripts, &background).await;
}
