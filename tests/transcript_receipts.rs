//! What `TranscriptStore::append` reports (its receipt's durability under each fsync
//! policy) and how `history` is counted when its caller gives up on it.
//!
//! Real files and (for the history metric) a real redis-server, so the tests run on the
//! real clock; the bounds are generous.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use stayfast::{
    fs::FsyncPolicy,
    redis::{Redis, RedisConfig},
    test_util::RedisServer,
    transcripts::{Durability, Message, TranscriptConfig, TranscriptStore},
};

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "stayfast-receipts-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file-only store over `dir` with the given fsync policy.
async fn file_store(dir: &TempDir, fsync: FsyncPolicy) -> TranscriptStore {
    let mut config = TranscriptConfig::default();
    config.dir = dir.0.clone();
    config.fsync = fsync;
    TranscriptStore::builder(&config).open().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_reports_synced_for_every_append_and_a_repeat() {
    let dir = TempDir::new("always");
    let store = file_store(&dir, FsyncPolicy::Always).await;
    for i in 1..=3 {
        let receipt = store
            .append(
                "s",
                Message::new("user", format!("m{i}")).with_id(format!("id{i}")),
            )
            .await
            .unwrap();
        assert_eq!((receipt.record.seq, receipt.durability), (i, Durability::Synced));
    }
    // A retry of a stored id: the same record, and the same promise.
    let repeat = store
        .append("s", Message::new("user", "m2").with_id("id2"))
        .await
        .unwrap();
    assert_eq!((repeat.record.seq, repeat.durability), (2, Durability::Synced));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ms_reports_written_until_the_interval_has_passed() {
    let dir = TempDir::new("every-ms");
    // An interval no test run reaches: only the first append, which finds the file
    // never synced, syncs it.
    let store = file_store(&dir, FsyncPolicy::EveryMs(600_000)).await;
    let first = store
        .append("s", Message::new("user", "one").with_id("a"))
        .await
        .unwrap();
    assert_eq!(first.durability, Durability::Synced, "the first append syncs");
    for text in ["two", "three"] {
        let receipt = store.append("s", Message::new("user", text)).await.unwrap();
        assert_eq!(
            receipt.durability,
            Durability::Written,
            "{text}: appended within the interval, awaiting the timer"
        );
    }
    // A repeat claims no more than it knows, even of a record that was synced.
    let repeat = store
        .append("s", Message::new("user", "one").with_id("a"))
        .await
        .unwrap();
    assert_eq!((repeat.record.seq, repeat.durability), (1, Durability::Written));
    // `flush` syncs; the next append within the interval is again only written.
    store.flush().await.unwrap();
    let after = store.append("s", Message::new("user", "four")).await.unwrap();
    assert_eq!((after.record.seq, after.durability), (4, Durability::Written));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reports_written() {
    let dir = TempDir::new("never");
    let store = file_store(&dir, FsyncPolicy::Never).await;
    for i in 1..=2 {
        let receipt = store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
        assert_eq!((receipt.record.seq, receipt.durability), (i, Durability::Written));
    }
}

/// `stayfast_calls_total{operation="transcripts.history"}` counted since the previous
/// snapshot (a debugging snapshot takes the counts), by outcome counted at least once.
fn history_calls(snapshotter: &Snapshotter) -> BTreeMap<String, u64> {
    stayfast::telemetry::flush();
    let mut calls = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let label = |k: &str| key.labels().find(|l| l.key() == k).map(|l| l.value().to_owned());
        if key.name() != "stayfast_calls_total"
            || label("operation").as_deref() != Some("transcripts.history")
        {
            continue;
        }
        if let (DebugValue::Counter(n @ 1..), Some(outcome)) = (value, label("outcome")) {
            *calls.entry(outcome).or_default() += n;
        }
    }
    calls
}

/// A `history` dropped while it waits for Redis is counted as `cancelled`, as every
/// other call is, and as nothing else.
// The local recorder is per thread: one thread runs the test and the store.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_history_counts_as_cancelled() {
    let server = RedisServer::start().await.unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let dir = TempDir::new("history-cancelled");
    let mut redis = RedisConfig::default();
    redis.url = server.url();
    redis.command_timeout = Duration::from_secs(5);
    let redis = Redis::connect(&redis).await.unwrap();
    let mut config = TranscriptConfig::default();
    config.dir = dir.0.clone();
    let store = TranscriptStore::builder(&config)
        .redis(redis)
        .open()
        .await
        .unwrap();
    store.append("s", Message::new("user", "hi")).await.unwrap();
    let served = store.history("s", 10).await.unwrap();
    assert_eq!(served.records.len(), 1);
    let finished = history_calls(&snapshotter);
    assert_eq!(
        finished.values().sum::<u64>(),
        1,
        "one finished call so far: {finished:?}"
    );

    // The session's end is known, so `history` reads the window first: with the server
    // stopped that read waits (up to the 5 s command timeout) and the caller gives up.
    server.pause().unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), store.history("s", 10)).await;
    server.resume().unwrap();
    assert!(
        gave_up.is_err(),
        "history answered while Redis was stopped: {gave_up:?}"
    );

    assert_eq!(
        history_calls(&snapshotter),
        BTreeMap::from([("cancelled".to_owned(), 1)]),
        "a history dropped mid-flight is counted once, as cancelled"
    );
}
