//! E6, damaged transcript files (a torn last record, an empty file, damage in the
//! middle, a huge last line; a directory, a FIFO, a symlink to `/dev/zero` or outside):
//! the valid prefix or a typed error within a time bound; never a panic, a hang, or a
//! link followed out of the directory.

use super::*;

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
        store
            .append("torn", Message::new("user", "3"))
            .await
            .unwrap()
            .record
            .seq,
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
            .record
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
