//! Idempotent append: a retried message id gets its first seq back, also after a restart.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_append_also_after_restart() {
    let server = TestRedis::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    let first = store
        .append("s", Message::new("user", "hello").with_id("msg-1"))
        .await
        .unwrap()
        .record;
    // A retry — even one whose content differs — returns the stored record.
    let retry = store
        .append("s", Message::new("user", "hello, retried").with_id("msg-1"))
        .await
        .unwrap()
        .record;
    assert_eq!(retry, first);
    assert_eq!(
        file_records(&tmp.tx(), "s"),
        std::slice::from_ref(&first),
        "one line in the file"
    );
    let second = store
        .append("s", Message::new("assistant", "hi").with_id("msg-2"))
        .await
        .unwrap()
        .record;
    assert_eq!(second.seq, 2);
    settle(&bg).await;
    drop(store);

    // A new store over the same directory (a restarted process).
    let (store, _bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;
    let after_restart = store
        .append("s", Message::new("user", "hello").with_id("msg-1"))
        .await
        .unwrap()
        .record;
    assert_eq!(after_restart, first);
    let third = store
        .append("s", Message::new("user", "more").with_id("msg-3"))
        .await
        .unwrap()
        .record;
    assert_eq!(third.seq, 3);
    assert_eq!(file_records(&tmp.tx(), "s"), [first, second, third]);
    let (h, _) = until_redis(&store, "s", 10).await;
    assert_eq!(h.records, file_records(&tmp.tx(), "s"));
}
