//! `TranscriptStore` on a 3-primary Redis Cluster (#14, routing; G1 in
//! `docs/testing.md`): each window push is a Lua script over the session's two keys
//! (one hash tag), sent straight to the primary of their slot — no MOVED redirection
//! in steady state — and every history is then served from Redis. Real time, figures
//! printed.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use stayfast::{
    BackgroundConfig, FireAndForget,
    redis::{Redis, RedisConfig},
    transcripts::{HistorySource, Message, TranscriptConfig, TranscriptStore},
};
use stayfast_core::test_util::{RedisCluster, Reply};
use support::TempDir;

async fn settle(background: &FireAndForget) {
    let started = Instant::now();
    while background.in_flight() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "background work never drained"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn window_pushes_go_to_their_slot_without_a_redirection() {
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let mut redis_config = RedisConfig::default();
    redis_config.url = cluster.url();
    let redis = Redis::connect(&redis_config).await.unwrap();
    cluster.routable(&redis, Duration::from_secs(10)).await.unwrap();
    let dir = TempDir::new("tx-cluster");
    let mut config = TranscriptConfig::default();
    config.dir = dir.0.join("tx");
    let background = FireAndForget::new("tx-cluster", &BackgroundConfig::default()).unwrap();
    let store = TranscriptStore::builder(&config)
        .background(background.clone())
        .redis(redis.clone())
        .open()
        .await
        .unwrap();

    // Warm-up: a few sessions, so fred has used its routing table.
    for s in 0..10 {
        store
            .append(&format!("warm-{s}"), Message::new("user", "hi"))
            .await
            .unwrap();
    }
    settle(&background).await;
    let warm_moved = cluster
        .info_total("errorstats", "errorstat_MOVED", "count")
        .await
        .unwrap();
    for node in cluster.nodes() {
        assert_eq!(
            node.command(&["CONFIG", "RESETSTAT"]).await.unwrap(),
            Reply::Simple("OK".into())
        );
    }

    let t = Instant::now();
    for turn in 0..5 {
        for s in 0..40 {
            let text = format!("turn {turn} of session {s}");
            store
                .append(&format!("session-{s}"), Message::new("user", text))
                .await
                .unwrap();
        }
    }
    settle(&background).await;
    let took = t.elapsed();
    let moved = cluster
        .info_total("errorstats", "errorstat_MOVED", "count")
        .await
        .unwrap();
    // By SHA1 (EVALSHA, #16); the body (EVAL) only where a primary meets the script
    // for the first time (the warm-up may have taught it to every primary already).
    let by_sha = cluster
        .info_total("commandstats", "cmdstat_evalsha", "calls")
        .await
        .unwrap();
    let bodies = cluster
        .info_total("commandstats", "cmdstat_eval", "calls")
        .await
        .unwrap();
    let evals = by_sha + bodies;
    println!(
        "warm-up: {warm_moved} MOVED; 200 appends over 40 sessions in {took:?}: {evals} window \
         scripts ({by_sha} EVALSHA, {bodies} EVAL), {moved} MOVED"
    );
    assert!(bodies <= 3, "a script's body at most once per primary: {bodies}");
    assert!(evals > 0, "the windows were pushed");
    assert_eq!(moved, 0, "every script goes straight to its slot's primary");
    for s in 0..40 {
        let h = store.history(&format!("session-{s}"), 10).await.unwrap();
        assert_eq!(
            (h.source, h.degraded, h.records.len()),
            (HistorySource::Redis, false, 5),
            "session {s}"
        );
    }
}
