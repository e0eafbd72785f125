//! Damaged transcript files (#12.1, #12.2): what a crash, a newer writer, a lowered size
//! cap or a damaged disk leaves in a session's file never costs an acknowledged record.
#![allow(clippy::unwrap_used)]

mod support;

use std::{io::Write, path::PathBuf};

use stayfast::{
    StoreError,
    transcripts::{HistorySource, Message, TranscriptConfig, TranscriptStore},
};
use support::TempDir;

fn config(dir: &TempDir) -> TranscriptConfig {
    let mut config = TranscriptConfig::default();
    config.dir = dir.0.join("transcripts");
    config
}

/// The one transcript file of the directory.
fn the_file(config: &TranscriptConfig) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(&config.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn append_raw(path: &PathBuf, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn contents(history: &stayfast::transcripts::History) -> Vec<&str> {
    history.records.iter().map(|r| r.content.as_str()).collect()
}

/// A record written by a newer version (an extra field) and one above a later-lowered
/// `max_message_bytes` are whole records: served, and appends go on after them.
#[tokio::test]
async fn newer_and_oversized_records_are_still_served() {
    let dir = TempDir::new("tx-newer");
    let mut config = config(&dir);
    let store = TranscriptStore::builder(&config).open().await.unwrap();
    store.append("s", Message::new("user", "one")).await.unwrap();
    let big = "x".repeat(60 * 1024);
    store
        .append("s", Message::new("user", big.clone()))
        .await
        .unwrap();
    let file = the_file(&config);
    append_raw(
        &file,
        br#"{"seq":3,"id":"m3","role":"user","content":"three","at":"2026-12-07T00:00:00.000000Z","lang":"en"}
"#,
    );
    config.max_message_bytes = 1024; // lowered after the big record was written
    let store = TranscriptStore::builder(&config).open().await.unwrap();
    let history = store.history("s", 10).await.unwrap();
    assert_eq!(contents(&history), ["one", big.as_str(), "three"]);
    assert!(!history.degraded);
    assert_eq!(history.source, HistorySource::File);
    assert_eq!(
        store
            .append("s", Message::new("user", "four"))
            .await
            .unwrap()
            .record
            .seq,
        4
    );
}

/// A crash left half a record at the end: the next append cuts it (keeping a copy)
/// instead of gluing its record onto it, and every acknowledged record reads back.
#[tokio::test]
async fn an_append_after_a_crash_keeps_every_record() {
    let dir = TempDir::new("tx-torn");
    let config = config(&dir);
    let store = TranscriptStore::builder(&config).open().await.unwrap();
    store.append("s", Message::new("user", "one")).await.unwrap();
    let file = the_file(&config);
    append_raw(&file, br#"{"seq":2,"id":"m2","ro"#);
    // A new process: it learns the file's end from the file (the torn tail is cut then).
    let store = TranscriptStore::builder(&config).open().await.unwrap();
    store.append("s", Message::new("user", "two")).await.unwrap();
    // The same process: the fragment appears under a running writer (a disk that
    // dropped a write); its next append must not glue onto it either.
    append_raw(&file, br#"{"seq":3,"id":"m3","ro"#);
    store.append("s", Message::new("user", "three")).await.unwrap();
    let fresh = TranscriptStore::builder(&config).open().await.unwrap();
    let history = fresh.history("s", 10).await.unwrap();
    assert_eq!(contents(&history), ["one", "two", "three"]);
    assert!(!history.degraded);
}

/// A damaged line in the middle: appends are refused with a typed error (nothing is
/// written after damage), history serves the valid prefix marked degraded; `repair`
/// quarantines the line, keeps every valid record with its seq, and appends go on.
#[tokio::test]
async fn repair_takes_damage_out_and_appends_continue() {
    let dir = TempDir::new("tx-repair");
    let config = config(&dir);
    let store = TranscriptStore::builder(&config).open().await.unwrap();
    store.append("s", Message::new("user", "one")).await.unwrap();
    let file = the_file(&config);
    append_raw(&file, b"{\"seq\":2, damaged\n");
    append_raw(
        &file,
        br#"{"seq":3,"id":"m3","role":"user","content":"three","at":"2026-12-07T00:00:00.000000Z"}
"#,
    );
    let store = TranscriptStore::builder(&config).open().await.unwrap();
    let err = store.append("s", Message::new("user", "four")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("repair"), "says how to fix it: {err}");
    let history = store.history("s", 10).await.unwrap();
    assert!(history.degraded);
    assert_eq!(contents(&history), ["one"]);

    let repaired = store.repair("s").await.unwrap();
    assert_eq!((repaired.kept, repaired.quarantined), (2, 1));
    let quarantine = repaired.quarantine.unwrap();
    assert_eq!(std::fs::read(&quarantine).unwrap(), b"{\"seq\":2, damaged\n");
    let four = store
        .append("s", Message::new("user", "four"))
        .await
        .unwrap()
        .record;
    assert_eq!(four.seq, 4, "seqs are not reused");
    let history = store.history("s", 10).await.unwrap();
    assert_eq!(contents(&history), ["one", "three", "four"]);
    let seqs: Vec<_> = history.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 3, 4]);
    assert!(!history.degraded);
    assert_eq!(
        store.repair("s").await.unwrap().quarantined,
        0,
        "nothing left to repair"
    );
}
