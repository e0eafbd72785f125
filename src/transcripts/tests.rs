//! Races no public call can order on demand, replayed in the order that loses data.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::{sync::Arc, time::Duration};

use stayfast_core::{
    BackgroundConfig, FireAndForget,
    redis::{Redis, RedisConfig},
    test_util::RedisServer,
};

use super::{Message, SessionKey, TranscriptConfig, TranscriptStore, pushes::Push, record::End};

async fn store(server: &RedisServer, dir: &std::path::Path) -> (TranscriptStore, FireAndForget) {
    let mut redis = RedisConfig::default();
    redis.url = server.url();
    let redis = Redis::connect(&redis).await.unwrap();
    let mut config = TranscriptConfig::default();
    config.dir = dir.to_path_buf();
    let background = FireAndForget::new("transcripts-unit", &BackgroundConfig::default()).unwrap();
    let store = TranscriptStore::builder(&config)
        .redis(redis)
        .background(background.clone())
        .open()
        .await
        .unwrap();
    (store, background)
}

async fn settle(background: &FireAndForget) {
    for _ in 0..2000 {
        if background.in_flight() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("background work never drained");
}

async fn window_len(server: &RedisServer, key: &SessionKey) -> i64 {
    let reply = server.command(&["LLEN", &key.redis_key()]).await.unwrap();
    reply.as_integer().unwrap()
}

/// #12.3: a push or repopulation of the deleted session that Redis applies after the
/// delete (sent before it and held by a paused or slow server, or issued from a read
/// made before it) must be refused: a deleted session never comes back into Redis.
/// The late writes are replayed here, after `delete_session` returned, exactly as the
/// drainer and the repopulation send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_writes_of_a_deleted_session_are_refused() {
    let server = RedisServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("stayfast-tx-tomb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (store, background) = store(&server, &dir).await;
    let mut old = Vec::new();
    for text in ["one", "two", "three"] {
        old.push(
            store
                .append("s", Message::new("user", text))
                .await
                .unwrap()
                .record,
        );
    }
    settle(&background).await;
    let key = SessionKey::new("s").unwrap();
    assert_eq!(window_len(&server, &key).await, 3, "the window is warm");

    assert!(store.delete_session("s").await.unwrap());
    assert_eq!(window_len(&server, &key).await, 0);

    // What was in flight: the repopulation from a read made before the delete, and a
    // push of the first record (the only kind an empty window accepts).
    let inner = &store.inner;
    inner.replace(&key, &old).await.unwrap();
    let first = End::of(old.first());
    let push = Arc::new(Push {
        record: old[0].clone(),
        previous: End::default(),
        first: first.clone(),
    });
    let window = inner.window.as_ref().unwrap();
    assert_eq!(
        window.push(&key, &[push]).await.unwrap(),
        super::window::Pushed::Deleted
    );
    assert_eq!(
        window_len(&server, &key).await,
        0,
        "nothing of the deleted session came back"
    );

    // The session written again is a new incarnation: cached and served as usual.
    let fresh = store
        .append("s", Message::new("user", "again"))
        .await
        .unwrap()
        .record;
    assert_eq!(fresh.seq, 1);
    settle(&background).await;
    assert_eq!(window_len(&server, &key).await, 1);
    let history = store.history("s", 10).await.unwrap();
    assert_eq!(history.source, super::HistorySource::Redis);
    assert_eq!(history.records, [fresh]);
    let _ = std::fs::remove_dir_all(&dir);
}
