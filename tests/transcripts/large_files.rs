//! Large transcripts: reads past the Redis window and waits for the writer lock stay
//! within their deadlines, and a file that cannot be read in time is an empty, degraded
//! history, never an error.

use super::*;

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
    let server = TestRedis::start().await.unwrap();
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
