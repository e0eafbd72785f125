//! The facade's Redis calls run under the command they send: the knowledge store's
//! `count` (a SCARD per shard) is metered as `redis.scard`, not lumped into `redis.other`, and a
//! `WRONGTYPE` reply is recognised the same way by every store. Against a real
//! redis-server; the metrics go to a thread-local debugging recorder.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use metrics_util::{
    MetricKind,
    debugging::{DebugValue, DebuggingRecorder, Snapshotter},
};
use stayfast::{
    knowledge::{KnowledgeConfig, KnowledgeStore},
    redis::{Redis, RedisConfig},
    test_util::RedisServer,
};

/// `stayfast_calls_total` recorded per `operation` since the last snapshot (a snapshot
/// drains what it reads); operations without a call are left out.
fn calls(snapshotter: &Snapshotter) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let operation = key.labels().find(|l| l.key() == "operation");
        if let (Some(operation), MetricKind::Counter, "stayfast_calls_total", DebugValue::Counter(n)) =
            (operation, kind, key.name(), value)
            && n > 0
        {
            *calls.entry(operation.value().to_owned()).or_default() += n;
        }
    }
    calls
}

/// SCARD used to run as `Command::Other`: counted under `redis.other` and, like every
/// unknown command, never retried. It is a read: its own label, retried like GET.
#[tokio::test]
async fn count_is_metered_as_scard() {
    // current_thread: the handle's metrics resolve against this thread's local recorder.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start().await.unwrap();
    let mut config = RedisConfig::default();
    config.url = server.url();
    let redis = Redis::connect(&config).await.unwrap();
    let store = KnowledgeStore::new(redis, &KnowledgeConfig::default()).unwrap();
    store.store_fact("one fact", serde_json::json!({})).await.unwrap();
    stayfast_core::telemetry::flush();
    let _ = snapshotter.snapshot(); // drop what storing it recorded
    assert_eq!(store.count().await.unwrap(), 1);
    stayfast_core::telemetry::flush();
    let seen = calls(&snapshotter);
    // One SCARD per shard of the store: one shard on a single node by default.
    assert_eq!(
        (seen.get("redis.scard"), seen.get("redis.other")),
        (Some(&1), None),
        "count() is one call per shard metered as redis.scard; calls seen: {seen:?}"
    );
}
