//! The bounded session map: sessions evicted from memory keep their seqs (their state
//! comes back from the file).

use super::*;

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
                        .unwrap()
                        .record;
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
            .unwrap()
            .record;
        assert_eq!(retry.seq, 1, "{s}: a retried append is still recognised");
        let next = store
            .append(&s, Message::new("user", "second"))
            .await
            .unwrap()
            .record;
        assert_eq!(next.seq, 2, "{s}: seq continues after eviction");
        assert_eq!(seqs(&store.history(&s, 10).await.unwrap().records), [1, 2]);
    }
    eprintln!(
        "{SESSIONS} sessions with max_open_sessions = 100: {elapsed:?} ({:.0} appends/s)",
        SESSIONS as f64 / elapsed.as_secs_f64()
    );
}
