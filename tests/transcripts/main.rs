//! `TranscriptStore` end to end against a real redis-server and a real directory, one
//! module per behaviour:
//!
//! - [`round_trip`]: every method's happy path;
//! - [`pushes`]: appends reach Redis in order, and a fresh history needs no file read;
//! - [`idempotent`]: a retried append, also across a restart;
//! - [`outage`]: the fallbacks (Redis killed, paused, absent);
//! - [`repopulation`]: the window refilled from the file, never going backwards;
//! - [`append_check`]: the Jepsen-style append check under Redis faults (C9);
//! - [`hostile_text`], [`session_ids`], [`corrupt_files`]: hostile text and sizes (E3),
//!   hostile session ids (E5), damaged files (E6);
//! - [`session_map`], [`large_files`]: the bounded session map, and reads of large files
//!   within their deadlines.
//!
//! Test ids (C9, E3…) are listed in `docs/testing.md`. Every test has its own
//! directory, store and (where it needs one) its own redis-server; figures are printed
//! with `--nocapture`.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

mod append_check;
mod corrupt_files;
mod hostile_text;
mod idempotent;
mod large_files;
mod outage;
mod pushes;
mod redis_order;
mod repopulation;
mod round_trip;
mod session_ids;
mod session_map;

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use stayfast::{
    BackgroundConfig, FireAndForget, StoreError,
    fs::FsyncPolicy,
    redis::Redis,
    test_util::Reply,
    transcripts::{Degradation, History, HistorySource, Message, Record, TranscriptConfig, TranscriptStore},
};
use support::{TempDir, deployment::TestRedis};
use tokio::time::sleep;

/// The store's directory inside a test's scratch directory.
impl TempDir {
    fn tx(&self) -> PathBuf {
        self.0.join("tx")
    }
}

/// The Redis bound of every command in these tests (kept short so fault tests are quick).
const REDIS_TIMEOUT: Duration = Duration::from_millis(400);
/// Slack on wall-clock bounds (generous: the machine is shared).
const SLACK: Duration = Duration::from_millis(750);

/// A handle that reconnects and recovers quickly, so fault tests are quick too.
async fn connect(server: &TestRedis) -> Redis {
    support::connect(server, |c| {
        c.command_timeout = REDIS_TIMEOUT;
        c.reconnect_max_delay = Duration::from_millis(200);
        c.breaker.open_for = Duration::from_millis(300);
        c.breaker.max_open_for = Duration::from_secs(1);
    })
    .await
}

/// A store over `dir` (Redis optional), with its own background spawner so tests can
/// wait for the Redis updates to finish.
async fn open(
    dir: &Path,
    redis: Option<Redis>,
    tweak: impl FnOnce(&mut TranscriptConfig),
) -> (TranscriptStore, FireAndForget) {
    let mut config = TranscriptConfig::default();
    config.dir = dir.to_path_buf();
    tweak(&mut config);
    let background = FireAndForget::new("transcripts-test", &BackgroundConfig::default()).unwrap();
    let mut builder = TranscriptStore::builder(&config).background(background.clone());
    if let Some(redis) = redis {
        builder = builder.redis(redis);
    }
    (builder.open().await.unwrap(), background)
}

/// Waits until every background Redis update has finished.
async fn settle(background: &FireAndForget) {
    let start = Instant::now();
    while background.in_flight() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "background work never drained"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `history` until it is served from Redis, not degraded (the pushes and
/// repopulations are asynchronous); returns it and how long that took.
async fn until_redis(store: &TranscriptStore, session: &str, limit: usize) -> (History, Duration) {
    let start = Instant::now();
    loop {
        let h = store.history(session, limit).await.unwrap();
        if h.source == HistorySource::Redis && !h.degraded {
            return (h, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{session:?}: history never came back to Redis (last: {:?}, degraded {})",
            h.source,
            h.degraded
        );
        sleep(Duration::from_millis(20)).await;
    }
}

fn sha256_hex(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file_of(dir: &Path, session: &str) -> PathBuf {
    dir.join(format!("{}.jsonl", sha256_hex(session)))
}

fn key_of(session: &str) -> String {
    format!("{{tx:{}}}:log", sha256_hex(session))
}

/// The session's file, parsed line by line, independently of the store.
fn file_records(dir: &Path, session: &str) -> Vec<Record> {
    let bytes = std::fs::read(file_of(dir, session)).unwrap_or_default();
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// The session's Redis window (`LRANGE 0 -1`), read over a raw connection.
async fn window(server: &TestRedis, session: &str) -> Vec<Record> {
    match server
        .command(&["LRANGE", &key_of(session), "0", "-1"])
        .await
        .unwrap()
    {
        Reply::Array(Some(items)) => items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(Some(b)) => serde_json::from_slice(&b).unwrap(),
                other => panic!("window element {other:?}"),
            })
            .collect(),
        Reply::Array(None) => Vec::new(),
        other => panic!("LRANGE replied {other:?}"),
    }
}

async fn exists(server: &TestRedis, key: &str) -> bool {
    server.command(&["EXISTS", key]).await.unwrap().as_integer() == Some(1)
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn tail(records: &[Record], n: usize) -> &[Record] {
    &records[records.len().saturating_sub(n)..]
}

/// One JSON line as the store writes it.
fn line(seq: u64, id: &str, content: &str) -> String {
    serde_json::json!({
        "seq": seq, "id": id, "role": "user", "content": content,
        "at": "2026-01-01T00:00:00.000000Z",
    })
    .to_string()
}

/// The scripts the server ran (`EVAL` or `EVALSHA`) and its DEL count, to tell pushes
/// from repopulations.
#[derive(Clone, Copy)]
struct ScriptCalls {
    evals: u64,
    dels: u64,
}

impl ScriptCalls {
    async fn of(server: &TestRedis) -> Self {
        Self {
            evals: server.script_runs().await.unwrap(),
            dels: server.executions("del").await.unwrap(),
        }
    }

    /// The scripts run since `before` (`EVAL` or `EVALSHA`), asserting none was a repopulation (its script starts
    /// with DEL; a push's never calls it).
    fn pushes_since(self, before: Self) -> u64 {
        assert_eq!(self.dels - before.dels, 0, "no repopulation");
        self.evals - before.evals
    }
}
