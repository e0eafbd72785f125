//! Repopulation of the Redis window from the file: it happens after a lost window, never
//! replaces a newer window, and never serves a deleted session's messages.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_window_is_repopulated_from_the_file() {
    let server = TestRedis::start().await.unwrap();
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
    let server = TestRedis::start().await.unwrap();
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
        .unwrap()
        .record;
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
    let server = TestRedis::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    let old: Vec<Record> = {
        let mut v = Vec::new();
        for text in ["old secret 1", "old secret 2"] {
            v.push(
                store
                    .append("s", Message::new("user", text))
                    .await
                    .unwrap()
                    .record,
            );
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

    let new1 = store
        .append("s", Message::new("user", "new 1"))
        .await
        .unwrap()
        .record;
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
        news.push(
            store
                .append("s", Message::new("user", text))
                .await
                .unwrap()
                .record,
        );
        settle(&bg).await;
        let h = store.history("s", 10).await.unwrap();
        assert_eq!(h.records, news, "served from {:?}", h.source);
    }
    let (h, _) = until_redis(&store, "s", 10).await;
    assert_eq!(h.records, news);
    settle(&bg).await;
    assert_eq!(window(&server, "s").await, news);
}
