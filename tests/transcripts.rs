//! `TranscriptStore` end to end against a real redis-server and a real directory: every
//! method's happy path, idempotent appends across a restart, the fallbacks (Redis
//! killed, paused, absent), window repopulation that never goes backwards, the Jepsen
//! style append check under Redis faults (C9), hostile text and sizes (E3), hostile
//! session ids (E5), damaged files (E6), and the bounded session map.
//!
//! Every test has its own directory, store and (where it needs one) its own
//! redis-server; figures are printed with `--nocapture`.
#![allow(clippy::unwrap_used)]

mod support;

use support::TempDir;

/// The store's directory inside a test's scratch directory.
impl TempDir {
    fn tx(&self) -> PathBuf {
        self.0.join("tx")
    }
}
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
    redis::{Redis, RedisConfig},
    test_util::{RedisServer, Reply},
    transcripts::{Degradation, History, HistorySource, Message, Record, TranscriptConfig, TranscriptStore},
};
use tokio::time::sleep;

/// The Redis bound of every command in these tests (kept short so fault tests are quick).
const REDIS_TIMEOUT: Duration = Duration::from_millis(400);
/// Slack on wall-clock bounds (TEST-PLAN: generous, the machine is shared).
const SLACK: Duration = Duration::from_millis(750);

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

async fn connect(server: &RedisServer) -> Redis {
    let mut c = RedisConfig::default();
    c.url = server.url();
    c.command_timeout = REDIS_TIMEOUT;
    c.reconnect_max_delay = Duration::from_millis(200);
    c.breaker.open_for = Duration::from_millis(300);
    c.breaker.max_open_for = Duration::from_secs(1);
    Redis::connect(&c).await.unwrap()
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
async fn window(server: &RedisServer, session: &str) -> Vec<Record> {
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

async fn exists(server: &RedisServer, key: &str) -> bool {
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

// ---------------------------------------------------------------------------------
// Every method's happy path
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_history_with_redis() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| c.cache_messages = 5).await;

    let started = Instant::now();
    let mut appended = Vec::new();
    for i in 1..=8u64 {
        let r = store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(r.seq, i, "seqs are assigned 1, 2, 3…");
        assert_eq!((r.role.as_str(), r.content.clone()), ("user", format!("m{i}")));
        assert_eq!(r.id.len(), 36, "a UUID v4 is assigned: {:?}", r.id);
        assert!(r.at.ends_with('Z'), "{}", r.at);
        appended.push(r);
    }
    let per_append = started.elapsed() / 8;
    let mut ids: Vec<_> = appended.iter().map(|r| r.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 8, "ids are unique");
    assert_eq!(
        file_records(&tmp.tx(), "s"),
        appended,
        "the file holds every record"
    );

    // limit 0: nothing.
    assert!(store.history("s", 0).await.unwrap().records.is_empty());

    // Once the pushes have landed, the window answers.
    let (h, warm_after) = until_redis(&store, "s", 3).await;
    assert_eq!(h.records, appended[5..]);
    let t = Instant::now();
    let one = store.history("s", 1).await.unwrap();
    let redis_latency = t.elapsed();
    assert_eq!((one.source, one.degraded), (HistorySource::Redis, false));
    assert_eq!(one.records, appended[7..]);
    // limit = the window: still Redis.
    let five = store.history("s", 5).await.unwrap();
    assert_eq!(
        (five.source, seqs(&five.records)),
        (HistorySource::Redis, vec![4, 5, 6, 7, 8])
    );
    // limit > the window: the file, not degraded.
    let six = store.history("s", 6).await.unwrap();
    assert_eq!((six.source, six.degraded), (HistorySource::File, false));
    assert_eq!(six.records, appended[2..]);
    let t = Instant::now();
    let all = store.history("s", 100).await.unwrap();
    let file_latency = t.elapsed();
    assert_eq!((all.source, all.records), (HistorySource::File, appended.clone()));

    // The window itself: the last 5 records, with a TTL.
    settle(&bg).await;
    assert_eq!(window(&server, "s").await, appended[3..]);
    let ttl = server
        .command(&["TTL", &key_of("s")])
        .await
        .unwrap()
        .as_integer()
        .unwrap();
    assert!(ttl > 0 && ttl <= 24 * 3600, "ttl {ttl}");

    // An unknown session: no messages, from nowhere.
    let none = store.history("never-used", 10).await.unwrap();
    assert_eq!((none.source, none.records.len()), (HistorySource::None, 0));
    eprintln!(
        "append {per_append:?} each; window warm after {warm_after:?}; history from Redis {redis_latency:?}, from the file {file_latency:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_session_removes_file_and_window() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    for text in ["a", "b", "c"] {
        store.append("doomed", Message::new("user", text)).await.unwrap();
    }
    store.append("kept", Message::new("user", "stay")).await.unwrap();
    until_redis(&store, "doomed", 3).await;
    settle(&bg).await;
    let (file, key) = (file_of(&tmp.tx(), "doomed"), key_of("doomed"));
    assert!(file.exists() && exists(&server, &key).await);

    assert!(store.delete_session("doomed").await.unwrap(), "it had a file");
    settle(&bg).await;
    assert!(!file.exists(), "file removed");
    assert!(!exists(&server, &key).await, "window removed");
    let h = store.history("doomed", 10).await.unwrap();
    assert_eq!((h.source, h.records.len()), (HistorySource::None, 0));
    assert!(
        !store.delete_session("doomed").await.unwrap(),
        "nothing left to delete"
    );
    // The other session is untouched; the deleted one starts again at seq 1.
    assert_eq!(store.history("kept", 10).await.unwrap().records.len(), 1);
    let again = store
        .append("doomed", Message::new("user", "new life"))
        .await
        .unwrap();
    assert_eq!(again.seq, 1);
    let (h, _) = until_redis(&store, "doomed", 10).await;
    assert_eq!(h.records, [again]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_with_fsync_never() {
    let tmp = TempDir::new("tx");
    let (store, _bg) = open(&tmp.tx(), None, |c| c.fsync = FsyncPolicy::Never).await;
    for s in ["a", "b", "c"] {
        for i in 0..3 {
            store
                .append(s, Message::new("user", format!("{s}{i}")))
                .await
                .unwrap();
        }
    }
    let t = Instant::now();
    store.flush().await.unwrap();
    eprintln!("flush of 3 sessions: {:?}", t.elapsed());
    for s in ["a", "b", "c"] {
        assert_eq!(seqs(&file_records(&tmp.tx(), s)), [1, 2, 3]);
    }
    // A store that syncs every append: flush is a no-op, and fine.
    let (always, _bg) = open(&tmp.tx(), None, |_| {}).await;
    always.flush().await.unwrap();
}

/// The server's EVAL and DEL counts, to tell pushes from repopulations.
#[derive(Clone, Copy)]
struct ScriptCalls {
    evals: u64,
    dels: u64,
}

impl ScriptCalls {
    async fn of(server: &RedisServer) -> Self {
        Self {
            evals: server.executions("eval").await.unwrap(),
            dels: server.executions("del").await.unwrap(),
        }
    }

    /// The EVALs since `before`, asserting none was a repopulation (its script starts
    /// with DEL; a push's never calls it).
    fn pushes_since(self, before: Self) -> u64 {
        assert_eq!(self.dels - before.dels, 0, "no repopulation");
        self.evals - before.evals
    }
}

/// A burst of appends to one session reaches Redis in seq order, in batches: no push
/// finds a gap (a push ahead of its predecessor would, and would repopulate the window
/// from a read of the whole file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_appends_is_pushed_in_order() {
    const BURST: u64 = 300;
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| {
        c.fsync = FsyncPolicy::Never; // appends as fast as they come
        // The whole burst fits the window and the queue's bound (`cache_messages`): a
        // drainer starved of CPU (other tests of this binary) may fall behind, but no push
        // is dropped, so a repopulation here can only mean a push out of order. (With 50,
        // a starved drainer overflowed the bound in CI: dropped pushes, by design, then
        // repaired by a repopulation.)
        c.cache_messages = BURST as u32;
    })
    .await;
    let before = ScriptCalls::of(&server).await;
    let started = Instant::now();
    let mut appended = Vec::new();
    for i in 0..BURST {
        let text = format!("m{i}");
        appended.push(store.append("burst", Message::new("user", text)).await.unwrap());
    }
    let appends = started.elapsed();
    settle(&bg).await;
    let drained = started.elapsed();
    // How many batches is a figure, not a bound (a fast drainer sends one record each);
    // what must hold is no repopulation (asserted here) and the window's content.
    let batches = ScriptCalls::of(&server).await.pushes_since(before);
    assert_eq!(window(&server, "burst").await, tail(&appended, BURST as usize));
    eprintln!(
        "{BURST} appends in {appends:?}; pushed in order in {batches} batches, all landed after {drained:?}"
    );
}

/// The usual chat turn: `history` right after an append, while its push is still on
/// its way. The window bridged with the pushes not yet acknowledged answers, not a
/// read of the file, and nothing is repopulated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_right_after_an_append_needs_no_file_read() {
    const TURNS: u64 = 100;
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| {
        c.cache_messages = 20;
    })
    .await;
    let before = ScriptCalls::of(&server).await;
    let mut appended = Vec::new();
    let mut latencies = Vec::new();
    for i in 0..TURNS {
        let text = format!("m{i}");
        appended.push(store.append("turns", Message::new("user", text)).await.unwrap());
        let t = Instant::now();
        let h = store.history("turns", 10).await.unwrap();
        latencies.push(t.elapsed());
        assert_eq!(h.records, tail(&appended, 10), "turn {i}");
        assert_eq!((h.source, h.degraded), (HistorySource::Redis, false), "turn {i}");
    }
    settle(&bg).await;
    assert!(ScriptCalls::of(&server).await.pushes_since(before) <= TURNS);
    assert_eq!(window(&server, "turns").await, tail(&appended, 20));
    latencies.sort_unstable();
    eprintln!(
        "history right after an append, {TURNS} turns: all from Redis, p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
}

// ---------------------------------------------------------------------------------
// Idempotent append
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_append_also_after_restart() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    let first = store
        .append("s", Message::new("user", "hello").with_id("msg-1"))
        .await
        .unwrap();
    // A retry — even one whose content differs — returns the stored record.
    let retry = store
        .append("s", Message::new("user", "hello, retried").with_id("msg-1"))
        .await
        .unwrap();
    assert_eq!(retry, first);
    assert_eq!(
        file_records(&tmp.tx(), "s"),
        std::slice::from_ref(&first),
        "one line in the file"
    );
    let second = store
        .append("s", Message::new("assistant", "hi").with_id("msg-2"))
        .await
        .unwrap();
    assert_eq!(second.seq, 2);
    settle(&bg).await;
    drop(store);

    // A new store over the same directory (a restarted process).
    let (store, _bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    let after_restart = store
        .append("s", Message::new("user", "hello").with_id("msg-1"))
        .await
        .unwrap();
    assert_eq!(after_restart, first);
    let third = store
        .append("s", Message::new("user", "more").with_id("msg-3"))
        .await
        .unwrap();
    assert_eq!(third.seq, 3);
    assert_eq!(file_records(&tmp.tx(), "s"), [first, second, third]);
    let (h, _) = until_redis(&store, "s", 10).await;
    assert_eq!(h.records, file_records(&tmp.tx(), "s"));
}

// ---------------------------------------------------------------------------------
// Fallback paths
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_appends_go_on_and_history_falls_back_to_the_file() {
    let mut server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, _bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    for i in 0..3 {
        store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
    }
    until_redis(&store, "s", 3).await;

    server.kill().unwrap();
    let t = Instant::now();
    let r = store
        .append("s", Message::new("user", "while down"))
        .await
        .unwrap();
    let append_latency = t.elapsed();
    assert_eq!(r.seq, 4);
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let h = store.history("s", 10).await.unwrap();
        latencies.push(t.elapsed());
        assert_eq!((h.source, h.degraded), (HistorySource::File, true));
        assert_eq!(seqs(&h.records), [1, 2, 3, 4]);
    }
    let worst = latencies.iter().max().copied().unwrap();
    eprintln!("Redis killed: append {append_latency:?}; history from the file {latencies:?}");
    assert!(worst < REDIS_TIMEOUT + SLACK, "history took {worst:?}");
    assert!(append_latency < SLACK, "append took {append_latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_history_is_bounded_and_degraded() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    for i in 0..3 {
        store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
    }
    until_redis(&store, "s", 3).await;

    server.pause().unwrap();
    let t = Instant::now();
    let h = store.history("s", 10).await.unwrap();
    let history_latency = t.elapsed();
    assert_eq!(
        (h.source, h.degraded, seqs(&h.records)),
        (HistorySource::File, true, vec![1, 2, 3])
    );
    let t = Instant::now();
    let r = store
        .append("s", Message::new("user", "while paused"))
        .await
        .unwrap();
    let append_latency = t.elapsed();
    assert_eq!(r.seq, 4);
    eprintln!(
        "Redis paused (bound {REDIS_TIMEOUT:?}): history {history_latency:?} (file, degraded); append {append_latency:?}"
    );
    assert!(
        history_latency < REDIS_TIMEOUT + SLACK,
        "history took {history_latency:?}"
    );
    assert!(
        append_latency < SLACK,
        "append waited for Redis: {append_latency:?}"
    );

    server.resume().unwrap();
    let t = Instant::now();
    let (h, _) = until_redis(&store, "s", 4).await;
    eprintln!("back on Redis {:?} after SIGCONT", t.elapsed());
    assert_eq!(h.records, file_records(&tmp.tx(), "s"));
    settle(&bg).await;
    assert_eq!(window(&server, "s").await, file_records(&tmp.tx(), "s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_only_store_serves_the_file_not_degraded() {
    let tmp = TempDir::new("tx");
    let (store, _bg) = open(&tmp.tx(), None, |_| {}).await;
    for i in 0..3 {
        store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
    }
    let h = store.history("s", 2).await.unwrap();
    assert_eq!(
        (h.source, h.degraded, seqs(&h.records)),
        (HistorySource::File, false, vec![2, 3])
    );
    let none = store.history("other", 2).await.unwrap();
    assert_eq!((none.source, none.degraded), (HistorySource::None, false));
    assert!(
        store.delete_session("s").await.unwrap(),
        "delete works without Redis"
    );
}

// ---------------------------------------------------------------------------------
// Repopulation
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_window_is_repopulated_from_the_file() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| c.cache_messages = 4).await;
    for i in 0..6 {
        store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
    }
    until_redis(&store, "s", 4).await;
    settle(&bg).await;

    server.command(&["DEL", &key_of("s")]).await.unwrap();
    let h = store.history("s", 4).await.unwrap();
    assert_eq!(
        (h.source, h.degraded),
        (HistorySource::File, false),
        "a cold window is not a failure"
    );
    let (h, after) = until_redis(&store, "s", 4).await;
    let file = file_records(&tmp.tx(), "s");
    assert_eq!(h.records, tail(&file, 4));
    settle(&bg).await;
    assert_eq!(window(&server, "s").await, tail(&file, 4));
    eprintln!("window repopulated {after:?} after the first read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repopulation_never_replaces_a_newer_window() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    for i in 1..=3 {
        store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
    }
    until_redis(&store, "s", 3).await;
    settle(&bg).await;

    // A record newer than the file's end lands in the window first (as a push that
    // overtook a repopulation would).
    let newer = line(4, "hand", "newer, by hand");
    server.command(&["RPUSH", &key_of("s"), &newer]).await.unwrap();
    let h = store.history("s", 3).await.unwrap();
    assert_eq!((h.source, seqs(&h.records)), (HistorySource::File, vec![1, 2, 3]));
    settle(&bg).await; // the repopulation ran…
    let w = window(&server, "s").await;
    assert_eq!(seqs(&w), [1, 2, 3, 4], "…and left the newer window alone");
    assert_eq!(w[3].id, "hand");

    // The store's own record 4 is a different one: it must be what history serves,
    // never the window's record of the same seq.
    let real = store
        .append("s", Message::new("user", "real four"))
        .await
        .unwrap();
    assert_eq!(real.seq, 4);
    settle(&bg).await;
    let (h, _) = until_redis(&store, "s", 4).await;
    assert_eq!(h.records, file_records(&tmp.tx(), "s"));
    settle(&bg).await;
    assert_eq!(window(&server, "s").await, file_records(&tmp.tx(), "s"));
}

/// A push or repopulation still in flight when a session is deleted can land after the
/// delete's `DEL` (they may travel on different pooled connections), leaving the old
/// messages in the window. They must never be served as the new session's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_is_never_served_from_a_stale_window() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    let old: Vec<Record> = {
        let mut v = Vec::new();
        for text in ["old secret 1", "old secret 2"] {
            v.push(store.append("s", Message::new("user", text)).await.unwrap());
        }
        v
    };
    until_redis(&store, "s", 2).await;
    settle(&bg).await;
    assert!(store.delete_session("s").await.unwrap());
    // The late writes, replayed exactly as the store's own push would have sent them.
    for r in &old {
        let json = serde_json::to_string(r).unwrap();
        server.command(&["RPUSH", &key_of("s"), &json]).await.unwrap();
    }

    let new1 = store.append("s", Message::new("user", "new 1")).await.unwrap();
    settle(&bg).await;
    assert_eq!(new1.seq, 1);
    let h = store.history("s", 1).await.unwrap();
    assert_eq!(
        h.records,
        std::slice::from_ref(&new1),
        "served {:?} from {:?}",
        h.records,
        h.source
    );
    // The session grows past the stale window: it is never extended with new records
    // nor served.
    let mut news = vec![new1];
    for text in ["new 2", "new 3"] {
        news.push(store.append("s", Message::new("user", text)).await.unwrap());
        settle(&bg).await;
        let h = store.history("s", 10).await.unwrap();
        assert_eq!(h.records, news, "served from {:?}", h.source);
    }
    let (h, _) = until_redis(&store, "s", 10).await;
    assert_eq!(h.records, news);
    settle(&bg).await;
    assert_eq!(window(&server, "s").await, news);
}

// ---------------------------------------------------------------------------------
// C9 transcript_append_check
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    KillRestart,
    PauseResume,
}

/// One acknowledged append.
struct Ack {
    appender: usize,
    id: String,
    seq: u64,
    started: Instant,
    acked: Instant,
}

async fn append_check(fault: Fault) {
    const SESSIONS: usize = 4;
    const APPENDERS: usize = 4; // per session
    const WINDOW: u32 = 20;
    let mut server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| {
        c.cache_messages = WINDOW
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        for a in 0..APPENDERS {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let session = format!("session-{s}");
                let (mut acks, mut failures) = (Vec::new(), 0usize);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("s{s}-a{a}-{i}");
                    let started = Instant::now();
                    match store
                        .append(
                            &session,
                            Message::new("user", format!("text of {id}")).with_id(&id),
                        )
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.id, id);
                            acks.push(Ack {
                                appender: a,
                                id,
                                seq: r.seq,
                                started,
                                acked: Instant::now(),
                            });
                        }
                        Err(e) => {
                            eprintln!("append {id} failed: {e}");
                            failures += 1;
                        }
                    }
                    i += 1;
                    sleep(Duration::from_millis(3)).await;
                }
                (s, acks, failures)
            }));
        }
    }

    sleep(Duration::from_millis(400)).await;
    match fault {
        Fault::KillRestart => server.kill().unwrap(),
        Fault::PauseResume => server.pause().unwrap(),
    }
    sleep(Duration::from_millis(700)).await;
    match fault {
        Fault::KillRestart => server.restart().await.unwrap(),
        Fault::PauseResume => server.resume().unwrap(),
    }
    let healed = Instant::now();
    sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);

    let mut by_session: BTreeMap<usize, Vec<Ack>> = BTreeMap::new();
    let mut failures = 0;
    for task in tasks {
        let (s, acks, failed) = task.await.unwrap();
        by_session.entry(s).or_default().extend(acks);
        failures += failed;
    }
    settle(&bg).await;

    let (mut lost, mut duplicated, mut reordered, mut acked) = (0usize, 0usize, 0usize, 0usize);
    for (s, acks) in &by_session {
        let session = format!("session-{s}");
        acked += acks.len();
        let file = store.history(&session, usize::MAX).await.unwrap();
        assert_eq!((file.source, file.degraded), (HistorySource::File, false));
        let records = file.records;
        assert!(
            records.len() > WINDOW as usize,
            "{session}: only {} records",
            records.len()
        );
        assert_eq!(
            seqs(&records),
            (1..=records.len() as u64).collect::<Vec<_>>(),
            "{session}: seqs gap-free"
        );
        assert_eq!(
            records,
            file_records(&tmp.tx(), &session),
            "history = the file's lines"
        );
        let mut count: HashMap<&str, usize> = HashMap::new();
        for r in &records {
            *count.entry(r.id.as_str()).or_default() += 1;
            assert_eq!(r.content, format!("text of {}", r.id));
        }
        for ack in acks {
            match count.get(ack.id.as_str()) {
                None => lost += 1,
                Some(1) => {}
                Some(_) => duplicated += 1,
            }
        }
        let seq_of: HashMap<&str, u64> = records.iter().map(|r| (r.id.as_str(), r.seq)).collect();
        for ack in acks {
            assert_eq!(
                seq_of.get(ack.id.as_str()),
                Some(&ack.seq),
                "acknowledged seq = stored seq"
            );
        }
        // Real-time order: an append acknowledged before another started has the
        // smaller seq (per appender, this is its acknowledgement order).
        for a in acks {
            for b in acks {
                if a.acked < b.started && a.seq >= b.seq {
                    reordered += 1;
                }
            }
        }
        for appender in 0..APPENDERS {
            let mine: Vec<u64> = acks
                .iter()
                .filter(|x| x.appender == appender)
                .map(|x| x.seq)
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "{session} appender {appender} reordered"
            );
        }
    }

    // Recovery: every session is served from Redis again, and the window is the file's tail.
    for s in by_session.keys() {
        until_redis(&store, &format!("session-{s}"), WINDOW as usize).await;
    }
    let recovered = healed.elapsed();
    settle(&bg).await;
    for s in by_session.keys() {
        let session = format!("session-{s}");
        let records = file_records(&tmp.tx(), &session);
        assert_eq!(
            window(&server, &session).await,
            tail(&records, WINDOW as usize),
            "{session}"
        );
        let h = store.history(&session, WINDOW as usize).await.unwrap();
        assert_eq!((h.source, h.degraded), (HistorySource::Redis, false));
        assert_eq!(h.records, tail(&records, WINDOW as usize));
    }
    eprintln!(
        "C9 {fault:?}: {SESSIONS} sessions x {APPENDERS} appenders, {acked} acknowledged, {failures} failed; \
         lost {lost}, duplicated {duplicated}, reordered {reordered}; all sessions back on Redis {recovered:?} after the fault ended"
    );
    assert_eq!((lost, duplicated, reordered), (0, 0, 0));
    assert_eq!(failures, 0, "a Redis fault must not fail an append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_append_check_kill_restart() {
    append_check(Fault::KillRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_append_check_pause_resume() {
    append_check(Fault::PauseResume).await;
}

// ---------------------------------------------------------------------------------
// E3 text_and_size
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_size() {
    const MAX: usize = 4096;
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| {
        c.max_message_bytes = MAX;
    })
    .await;
    let texts = [
        "nul\0inside\0\0",
        "crlf\r\nand lone \r and \n",
        "line sep\u{2028}para sep\u{2029}",
        "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 😀",
        "RTL \u{202E}olleh\u{202C} עברית العربية",
        "combining e\u{301} a\u{30A}\u{323} Z\u{336}\u{337}",
        "quotes \" \\ / \u{7f} \u{1} \t",
        "",
    ];
    let mut sent = Vec::new();
    for t in texts {
        sent.push(store.append("text", Message::new("user", t)).await.unwrap());
    }
    // Exactly the cap: accepted, even when JSON escaping makes its line 6x longer.
    let at_cap_nul = "\0".repeat(MAX);
    let mut at_cap_multibyte = "é".repeat(MAX / 2);
    assert_eq!(at_cap_multibyte.len(), MAX);
    sent.push(
        store
            .append("text", Message::new("user", at_cap_nul.as_str()))
            .await
            .unwrap(),
    );
    sent.push(
        store
            .append("text", Message::new("user", at_cap_multibyte.as_str()))
            .await
            .unwrap(),
    );

    let (h, _) = until_redis(&store, "text", sent.len()).await;
    for (got, want) in h.records.iter().zip(&sent) {
        assert_eq!(got.content.as_bytes(), want.content.as_bytes(), "via Redis");
    }
    assert_eq!(h.records, sent);
    // Via the file: a file-only store over the same directory.
    let (file_store, _bg) = open(&tmp.tx(), None, |c| c.max_message_bytes = MAX).await;
    let h = file_store.history("text", 100).await.unwrap();
    assert_eq!(h.source, HistorySource::File);
    for (got, want) in h.records.iter().zip(&sent) {
        assert_eq!(got.content.as_bytes(), want.content.as_bytes(), "via the file");
    }
    assert_eq!(h.records, sent);
    let raw = std::fs::read(file_of(&tmp.tx(), "text")).unwrap();
    assert_eq!(
        raw.iter().filter(|b| **b == b'\n').count(),
        sent.len(),
        "one line per record"
    );

    // Message ids as hostile as the texts: each push still chains onto its predecessor
    // (compared byte-exact inside Lua: one push at a time) — one EVAL per append, no
    // repopulation.
    settle(&bg).await;
    let evals = server.executions("eval").await.unwrap();
    for id in ["id\0nul", "id \"quoted\" \\ \u{2028}", "id 👩‍👩‍👧 e\u{301}"] {
        sent.push(
            store
                .append("text", Message::new("user", id).with_id(id))
                .await
                .unwrap(),
        );
        settle(&bg).await;
    }
    assert_eq!(
        server.executions("eval").await.unwrap() - evals,
        3,
        "a push fell back to repopulation"
    );
    assert_eq!(window(&server, "text").await, sent);
    let (h, _) = until_redis(&store, "text", sent.len()).await;
    assert_eq!(h.records, sent);

    // Cap + 1: refused before any I/O.
    at_cap_multibyte.push('x');
    let before: Vec<_> = std::fs::read_dir(tmp.tx())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = store
        .append("too-large", Message::new("user", at_cap_multibyte))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { len, max, .. } if len == MAX + 1 && max == MAX),
        "{err}"
    );
    assert!(err.is_bad_input());
    assert!(!file_of(&tmp.tx(), "too-large").exists(), "no file created");
    let after: Vec<_> = std::fs::read_dir(tmp.tx())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len());
    settle(&bg).await;
    assert!(!exists(&server, &key_of("too-large")).await);
    eprintln!(
        "E3: {} texts round-tripped byte-exact via Redis and via the file; cap {MAX} accepted, {} refused: {err}",
        sent.len(),
        MAX + 1
    );
}

// ---------------------------------------------------------------------------------
// E5 session_id_paths
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_id_paths() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let sentinel = tmp.0.join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep"), b"untouched").unwrap();
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;

    let long = "x".repeat(300);
    let max = "m".repeat(1024);
    let ids = [
        "../x",
        "../sentinel/keep",
        "/etc/passwd",
        "a\0b",
        long.as_str(),
        max.as_str(),
        ".",
        "..",
        "ünïcödé/日本語/🙂",
        "{tx:abc}:log",
        "}{",
        "*",
        "?",
        "[a-z]",
        "\\",
        "with space\tand\nnewline",
        "CON",
        "Case",
        "case",
    ];
    for id in ids {
        let r = store
            .append(id, Message::new("user", format!("for {id:?}")))
            .await
            .unwrap();
        assert_eq!(r.seq, 1, "{id:?} is its own session");
        let h = store.history(id, 10).await.unwrap();
        assert_eq!(h.records, std::slice::from_ref(&r), "{id:?}");
        let (h, _) = until_redis(&store, id, 10).await;
        assert_eq!(h.records, [r], "{id:?} via Redis");
    }
    settle(&bg).await;

    let names: Vec<String> = std::fs::read_dir(tmp.tx())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), ids.len(), "{names:?}");
    for name in &names {
        let hex = name.strip_suffix(".jsonl").unwrap_or_else(|| panic!("{name}"));
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
    }
    // Next to the transcript dir: only the sentinel, untouched.
    let mut beside: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    beside.sort();
    assert_eq!(beside, ["sentinel", "tx"]);
    assert_eq!(std::fs::read_dir(&sentinel).unwrap().count(), 1);
    assert_eq!(std::fs::read(sentinel.join("keep")).unwrap(), b"untouched");
    // Redis keys: every one `{tx:<64 hex>}:log`.
    let Reply::Array(Some(keys)) = server.command(&["KEYS", "*"]).await.unwrap() else {
        panic!("KEYS")
    };
    assert_eq!(keys.len(), ids.len());
    for k in keys {
        let k = k.as_text().unwrap();
        let hex = k
            .strip_prefix("{tx:")
            .and_then(|k| k.strip_suffix("}:log"))
            .unwrap();
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{k}"
        );
    }

    // Empty and over-long ids: refused by every method, before any I/O.
    let too_long = "y".repeat(1025);
    for bad in ["", too_long.as_str()] {
        let e = store.append(bad, Message::new("user", "x")).await.unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::InvalidInput {
                    what: "session id",
                    ..
                }
            ),
            "{e}"
        );
        let e = store.history(bad, 1).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput { .. }), "{e}");
        let e = store.delete_session(bad).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput { .. }), "{e}");
    }
    assert_eq!(std::fs::read_dir(tmp.tx()).unwrap().count(), ids.len());
    for id in ids {
        assert!(store.delete_session(id).await.unwrap(), "{id:?}");
    }
    assert_eq!(std::fs::read_dir(tmp.tx()).unwrap().count(), 0);
    eprintln!(
        "E5: {} hostile session ids stored as 64-hex names inside the dir",
        ids.len()
    );
}

// ---------------------------------------------------------------------------------
// E6 corrupt_transcript_load
// ---------------------------------------------------------------------------------

/// Runs `f` under a bound, printing how long it took.
async fn timed<T>(what: &str, f: impl Future<Output = T>) -> T {
    let t = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: hung"));
    eprintln!("E6 {what}: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3), "{what}: {:?}", t.elapsed());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_transcript_load() {
    let tmp = TempDir::new("tx");
    let dir = tmp.tx();
    let (store, _bg) = open(&dir, None, |_| {}).await;
    let good = format!("{}\n{}\n", line(1, "a", "one"), line(2, "b", "two"));

    // A torn last record: the valid prefix, the tail cut and kept aside.
    let path = file_of(&dir, "torn");
    let third = line(3, "c", "three");
    std::fs::write(&path, format!("{good}{}", &third[..third.len() / 2])).unwrap();
    let h = timed("torn tail", store.history("torn", 10)).await.unwrap();
    assert_eq!((seqs(&h.records), h.degraded), (vec![1, 2], false));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good, "tail cut");
    let backups: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&backups[0]).unwrap(),
        &third[..third.len() / 2]
    );
    assert_eq!(
        store.append("torn", Message::new("user", "3")).await.unwrap().seq,
        3
    );

    // An empty file: an empty session.
    std::fs::write(file_of(&dir, "empty"), b"").unwrap();
    let h = timed("empty file", store.history("empty", 10)).await.unwrap();
    assert_eq!(
        (h.source, h.records.len(), h.degraded),
        (HistorySource::None, 0, false)
    );
    assert_eq!(
        store
            .append("empty", Message::new("user", "1"))
            .await
            .unwrap()
            .seq,
        1
    );

    // Damage in the middle: the valid prefix, degraded; appends refused.
    let mut invalid_utf8 = good.clone().into_bytes();
    invalid_utf8.extend_from_slice(
        b"{\"seq\":3,\"id\":\"c\",\"role\":\"user\",\"content\":\"\xff\xfe\",\"at\":\"x\"}\n",
    );
    invalid_utf8.extend_from_slice(format!("{}\n", line(4, "d", "four")).as_bytes());
    let garbage = format!("{good}#!garbage%%\n{}\n", line(4, "d", "four")).into_bytes();
    let huge = format!("{good}{}\n{}\n", "h".repeat(8 << 20), line(4, "d", "four")).into_bytes();
    for (name, bytes) in [
        ("invalid utf-8", invalid_utf8),
        ("garbage", garbage),
        ("huge line", huge),
    ] {
        let session = format!("damaged {name}");
        std::fs::write(file_of(&dir, &session), &bytes).unwrap();
        let h = timed(name, store.history(&session, 10)).await.unwrap();
        assert_eq!((seqs(&h.records), h.degraded), (vec![1, 2], true), "{name}");
        let e = timed(name, store.append(&session, Message::new("user", "x")))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{name}: {e}");
        assert_eq!(
            std::fs::read(file_of(&dir, &session)).unwrap(),
            bytes,
            "{name}: file untouched"
        );
    }
    // A huge last line, complete with its newline: written whole, so never cut as if a
    // crash had torn it; damage for `repair` to take out (kept in its quarantine).
    let session = "huge last line";
    let bytes = format!("{good}{}\n", "h".repeat(8 << 20));
    std::fs::write(file_of(&dir, session), &bytes).unwrap();
    let h = timed("huge last line", store.history(session, 10)).await.unwrap();
    assert_eq!((seqs(&h.records), h.degraded), (vec![1, 2], true));
    assert_eq!(
        std::fs::read_to_string(file_of(&dir, session)).unwrap(),
        bytes,
        "not cut"
    );
    let repaired = timed("repair", store.repair(session)).await.unwrap();
    assert_eq!((repaired.kept, repaired.quarantined), (2, 1));
    assert_eq!(std::fs::read_to_string(file_of(&dir, session)).unwrap(), good);

    // Not a regular file: a typed error, no hang, nothing followed.
    let victim = tmp.0.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::create_dir(file_of(&dir, "a directory")).unwrap();
    let fifo = file_of(&dir, "a fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", file_of(&dir, "to /dev/zero")).unwrap();
    std::os::unix::fs::symlink(&victim, file_of(&dir, "to a file outside")).unwrap();
    for session in ["a directory", "a fifo", "to /dev/zero", "to a file outside"] {
        let e = timed(session, store.history(session, 10)).await.unwrap_err();
        assert!(matches!(e, StoreError::ReadLog(_)), "{session}: {e}");
        eprintln!("  history: {e}");
        let e = timed(session, store.append(session, Message::new("user", "x")))
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::ReadLog(_) | StoreError::File(_)),
            "{session}: {e}"
        );
    }
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "nothing written through the symlink"
    );
    assert_eq!(
        std::fs::read_link(file_of(&dir, "to /dev/zero")).unwrap(),
        Path::new("/dev/zero")
    );
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

// ---------------------------------------------------------------------------------
// The bounded session map
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_session_map_keeps_seqs_across_eviction() {
    const SESSIONS: usize = 20_000;
    const WORKERS: usize = 8;
    let tmp = TempDir::new("tx");
    let (store, _bg) = open(&tmp.tx(), None, |c| {
        c.max_open_sessions = 100;
        c.fsync = FsyncPolicy::Never;
    })
    .await;
    let t = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..SESSIONS).step_by(WORKERS) {
                    let r = store
                        .append(
                            &format!("s{i}"),
                            Message::new("user", "first").with_id(format!("first-{i}")),
                        )
                        .await
                        .unwrap();
                    assert_eq!(r.seq, 1);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = t.elapsed();
    // Early sessions were forgotten long ago: their state comes back from the file.
    for i in (0..50).chain(SESSIONS - 50..SESSIONS) {
        let s = format!("s{i}");
        let retry = store
            .append(&s, Message::new("user", "first").with_id(format!("first-{i}")))
            .await
            .unwrap();
        assert_eq!(retry.seq, 1, "{s}: a retried append is still recognised");
        let next = store.append(&s, Message::new("user", "second")).await.unwrap();
        assert_eq!(next.seq, 2, "{s}: seq continues after eviction");
        assert_eq!(seqs(&store.history(&s, 10).await.unwrap().records), [1, 2]);
    }
    eprintln!(
        "{SESSIONS} sessions with max_open_sessions = 100: {elapsed:?} ({:.0} appends/s)",
        SESSIONS as f64 / elapsed.as_secs_f64()
    );
}

/// A transcript of `records` messages of 2 KB each for `session` in `dir`.
async fn big_transcript(dir: &Path, session: &str, records: u64) {
    let (store, _bg) = open(dir, None, |_| {}).await;
    store
        .append(session, Message::new("user", "first"))
        .await
        .unwrap();
    let mut bytes = std::fs::read(file_of(dir, session)).unwrap();
    for seq in 2..=records {
        bytes.extend_from_slice(line(seq, &format!("m{seq}"), &"x".repeat(2000)).as_bytes());
        bytes.push(b'\n');
    }
    std::fs::write(file_of(dir, session), &bytes).unwrap();
}

/// #12.15: a transcript file that cannot be read in time gives an empty history marked
/// degraded, with the reason — the caller answers without it — never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_read_timeout_is_an_empty_degraded_history() {
    let tmp = TempDir::new("tx");
    let dir = tmp.tx();
    // 4 MB of records: far more than 1 ms of reading.
    big_transcript(&dir, "big", 2_000).await;
    let mut config = TranscriptConfig::default();
    config.dir = dir.clone();
    let slow = TranscriptStore::builder(&config)
        .timeouts(Duration::from_millis(1), Duration::from_secs(5))
        .open()
        .await
        .unwrap();
    let started = Instant::now();
    let history = slow.history("big", 10).await.unwrap();
    eprintln!("empty degraded history after {:?}", started.elapsed());
    assert!(history.records.is_empty());
    assert_eq!(history.source, HistorySource::None);
    assert!(history.degraded);
    assert!(
        matches!(history.reason, Some(Degradation::FileUnavailable(_))),
        "{:?}",
        history.reason
    );
}

/// #12.15: `history` for more than the window holds reads the file's end, not the whole
/// file (damage far before the requested records goes unread), and does not rewrite
/// the Redis window on every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_beyond_the_window_reads_the_files_end_and_leaves_redis_alone() {
    let server = RedisServer::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let dir = tmp.tx();
    let (store, bg) = open(&dir, Some(connect(&server).await), |c| c.cache_messages = 5).await;
    for i in 1..=60u64 {
        store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
    }
    settle(&bg).await;
    // Damage near the start, under the running store: only a whole-file read sees it.
    let path = file_of(&dir, "s");
    let mut bytes = std::fs::read(&path).unwrap();
    let second = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    bytes[second] = b'#';
    std::fs::write(&path, &bytes).unwrap();
    let before = ScriptCalls::of(&server).await;
    for _ in 0..10 {
        let history = store.history("s", 20).await.unwrap();
        assert_eq!(seqs(&history.records), (41..=60).collect::<Vec<_>>());
        assert_eq!(history.source, HistorySource::File);
        assert!(
            !history.degraded,
            "the end of the file was read, not its damaged start"
        );
    }
    settle(&bg).await;
    let after = ScriptCalls::of(&server).await;
    assert_eq!(after.evals - before.evals, 0, "the window was not rewritten");
    assert_eq!(after.dels - before.dels, 0);
}

/// #12.18: an append waits for its session's writer lock no longer than the write
/// deadline. Here the lock is held by a long read of a cold, large transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_writer_lock_is_bounded_by_the_write_deadline() {
    let tmp = TempDir::new("tx");
    let dir = tmp.tx();
    big_transcript(&dir, "big", 10_000).await; // 20 MB: a cold read of ~250 ms
    let mut config = TranscriptConfig::default();
    config.dir = dir.clone();
    let write = Duration::from_millis(50);
    let store = TranscriptStore::builder(&config)
        .timeouts(Duration::from_secs(30), write)
        .open()
        .await
        .unwrap();
    // A cold session: this history loads it, holding its writer lock while it reads.
    let reading = tokio::spawn({
        let store = store.clone();
        async move {
            let started = Instant::now();
            store.history("big", 10).await.unwrap();
            started.elapsed()
        }
    });
    sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let err = store
        .append("big", Message::new("user", "late"))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let read = reading.await.unwrap();
    eprintln!("append gave up after {waited:?}; the read holding the lock took {read:?}");
    assert!(matches!(&err, StoreError::File(e) if e.is_timeout()), "{err}");
    assert!(waited < write + Duration::from_millis(250), "{waited:?}");
    assert!(read > waited, "the lock was still held when the append gave up");
}
