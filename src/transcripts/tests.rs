//! What no public call can show: races replayed in the order that loses data, and what
//! a power loss would take from a file that an append's receipt called durable.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::{
    collections::HashMap,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use stayfast_core::{
    BackgroundConfig, FireAndForget,
    fs::{FileOps, FsyncPolicy, RealFs},
    redis::{Redis, RedisConfig},
    test_util::RedisServer,
};

use super::{Durability, Message, SessionKey, TranscriptConfig, TranscriptStore, pushes::Push, record::End};

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
    let reply = server.command(&["LLEN", &key.redis_key("tx")]).await.unwrap();
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
    let push = Arc::new(Push::new(old[0].clone(), End::default(), first.clone()));
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

/// The real file system, watched as a power loss sees it: per file, the bytes written
/// and the bytes an fsync made durable. A power loss keeps only the durable prefix.
#[derive(Clone, Debug, Default)]
struct PowerLoss(Arc<Mutex<HashMap<PathBuf, (u64, u64)>>>);

impl PowerLoss {
    fn set(&self, path: &Path, f: impl FnOnce(&mut (u64, u64))) {
        f(self.0.lock().unwrap().entry(path.to_path_buf()).or_default());
    }

    /// Bytes of `path` a power loss now would take.
    fn at_risk(&self, path: &Path) -> u64 {
        let (written, durable) = self.0.lock().unwrap().get(path).copied().unwrap_or_default();
        written - durable
    }
}

impl FileOps for PowerLoss {
    fn write(&self, file: &File, path: &Path, buf: &[u8]) -> io::Result<usize> {
        let n = RealFs.write(file, path, buf)?;
        let len = file.metadata()?.len();
        self.set(path, |(written, _)| *written = len);
        Ok(n)
    }

    fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        RealFs.sync(file, path)?;
        let len = file.metadata()?.len();
        self.set(path, |ends| *ends = (len, len));
        Ok(())
    }

    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        RealFs.set_len(file, path, len)?;
        self.set(path, |(written, durable)| {
            (*written, *durable) = (len, (*durable).min(len))
        });
        Ok(())
    }
}

/// A receipt says `Synced` only when a power loss right after `append` returned would
/// lose nothing of the file, and a fresh append's `Written` is a record a power loss
/// would take; a flush leaves nothing at risk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_receipt_agrees_with_what_a_power_loss_would_take() {
    use Durability::{Synced, Written};
    let dir = std::env::temp_dir().join(format!("stayfast-unit-power-loss-{}", std::process::id()));
    // An interval no run reaches: only the first append, finding the file never synced, syncs.
    let cases = [
        (FsyncPolicy::Always, [Synced, Synced, Synced, Synced]),
        (FsyncPolicy::EveryMs(600_000), [Synced, Written, Written, Written]),
        (FsyncPolicy::Never, [Written, Written, Written, Written]),
    ];
    for (fsync, expected) in cases {
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = TranscriptConfig::default();
        config.dir = dir.clone();
        config.fsync = fsync;
        let mut store = TranscriptStore::builder(&config).open().await.unwrap();
        let disk = PowerLoss::default();
        let inner = Arc::get_mut(&mut store.inner).unwrap();
        inner.appender = inner.appender.clone().with_ops(disk.clone());
        let file = SessionKey::new("s").unwrap().file(&dir);
        let mut reported = Vec::new();
        // The fourth repeats the first's id: a retry, answered from the file.
        for (i, id) in ["a", "b", "c", "a"].into_iter().enumerate() {
            let receipt = store
                .append("s", Message::new("user", format!("m{i}")).with_id(id))
                .await
                .unwrap();
            let at_risk = disk.at_risk(&file);
            match receipt.durability {
                Synced => assert_eq!(at_risk, 0, "{fsync:?} #{i}: Synced, yet {at_risk} bytes at risk"),
                _ if i < 3 => assert!(at_risk > 0, "{fsync:?} #{i}: Written, yet nothing at risk"),
                _ => {}
            }
            reported.push(receipt.durability);
        }
        assert_eq!(reported, expected, "{fsync:?}");
        store.flush().await.unwrap();
        assert_eq!(disk.at_risk(&file), 0, "{fsync:?}: flushed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
