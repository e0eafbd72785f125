//! The push path: appends reach the Redis window in seq order, and a history read
//! right after an append is answered without reading the file.

use super::*;

/// A burst of appends to one session reaches Redis in seq order, in batches: no push
/// finds a gap (a push ahead of its predecessor would, and would repopulate the window
/// from a read of the whole file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_appends_is_pushed_in_order() {
    const BURST: u64 = 300;
    let server = TestRedis::start().await.unwrap();
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
        appended.push(
            store
                .append("burst", Message::new("user", text))
                .await
                .unwrap()
                .record,
        );
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
    let server = TestRedis::start().await.unwrap();
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
        appended.push(
            store
                .append("turns", Message::new("user", text))
                .await
                .unwrap()
                .record,
        );
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

/// Issue #16: the store's scripts go by their SHA1 (`EVALSHA`); each script's body
/// (`EVAL`) is sent once, on its first call to a server whose script cache lacks it
/// (`NOSCRIPT`), never again — in file order (the window's push and delete) and in
/// redis order (the seq assignment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_sent_by_their_sha() {
    const APPENDS: usize = 20;
    let server = TestRedis::start().await.unwrap();
    let counts = || async {
        (
            server.executions("evalsha").await.unwrap(),
            server.executions("eval").await.unwrap(),
        )
    };
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| {
        c.fsync = FsyncPolicy::Never;
    })
    .await;
    for i in 0..APPENDS {
        store
            .append("by-sha", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
        settle(&bg).await; // one push each
    }
    assert!(store.delete_session("by-sha").await.unwrap());
    let (evalsha, eval) = counts().await;
    println!("file order: {APPENDS} appends and a delete: {evalsha} EVALSHA, {eval} EVAL");
    assert_eq!(eval, 2, "the push's body and the delete's, once each");
    assert_eq!(evalsha, APPENDS as u64 + 1, "every push and the delete by SHA1");

    let (ordered, bg) = open(&tmp.0.join("ordered"), Some(connect(&server).await), |c| {
        c.fsync = FsyncPolicy::Never;
        c.order = stayfast::transcripts::Order::Redis;
    })
    .await;
    for i in 0..APPENDS {
        ordered
            .append("by-sha", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
    }
    settle(&bg).await;
    let (evalsha_after, eval_after) = counts().await;
    println!(
        "redis order: {APPENDS} appends: {} EVALSHA, {} EVAL",
        evalsha_after - evalsha,
        eval_after - eval
    );
    assert_eq!(eval_after - eval, 1, "the seq script's body, once");
    assert!(
        evalsha_after - evalsha >= APPENDS as u64,
        "every append's script by SHA1"
    );
    assert_eq!(
        ordered.history("by-sha", 50).await.unwrap().records.len(),
        APPENDS
    );
}
