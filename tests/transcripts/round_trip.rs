//! Every method's happy path: append and history with Redis, delete, flush.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_history_with_redis() {
    let server = TestRedis::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| c.cache_messages = 5).await;

    let started = Instant::now();
    let mut appended = Vec::new();
    for i in 1..=8u64 {
        let r = store
            .append("s", Message::new("user", format!("m{i}")))
            .await
            .unwrap()
            .record;
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
    let server = TestRedis::start().await.unwrap();
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
        .unwrap()
        .record;
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

/// #15: two applications on one Redis, each with its own `key_prefix`: the same session
/// id keeps two separate windows (and the default prefix keeps the keys of earlier
/// versions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefixes_keep_two_applications_apart_on_one_redis() {
    let server = TestRedis::start().await.unwrap();
    let (one, two) = (TempDir::new("tx-prefix-a"), TempDir::new("tx-prefix-b"));
    let (support, bg_a) = open(&one.tx(), Some(connect(&server).await), |c| {
        c.key_prefix = "support".into()
    })
    .await;
    let (sales, bg_b) = open(&two.tx(), Some(connect(&server).await), |_| {}).await;
    support
        .append("s", Message::new("user", "support-1"))
        .await
        .unwrap();
    support
        .append("s", Message::new("user", "support-2"))
        .await
        .unwrap();
    sales.append("s", Message::new("user", "sales-1")).await.unwrap();
    settle(&bg_a).await;
    settle(&bg_b).await;
    let (a, _) = until_redis(&support, "s", 10).await;
    let (b, _) = until_redis(&sales, "s", 10).await;
    let contents = |h: &History| h.records.iter().map(|r| r.content.clone()).collect::<Vec<_>>();
    assert_eq!(contents(&a), ["support-1", "support-2"]);
    assert_eq!(contents(&b), ["sales-1"]);
    let hex = sha256_hex("s");
    assert!(exists(&server, &format!("{{support:{hex}}}:log")).await);
    assert_eq!(
        window(&server, "s").await.len(),
        1,
        "the default prefix is `tx`: {}",
        key_of("s")
    );
}
