//! Redis killed, paused or absent: appends go on to the file, history falls back to it
//! within its bound and says whether it is degraded.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_appends_go_on_and_history_falls_back_to_the_file() {
    let mut server = TestRedis::start().await.unwrap();
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
        .unwrap()
        .record;
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
    let server = TestRedis::start().await.unwrap();
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
        .unwrap()
        .record;
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
