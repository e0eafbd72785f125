//! Several processes writing one transcript directory (#15): four OS processes append to
//! the same 20 sessions while one of them is killed (`SIGKILL`) at random every 2 s and
//! replaced; afterwards every acknowledged append is in its session's file exactly once,
//! with the seq it was acknowledged with, and every session's seqs run 1..=n.
//!
//! The workers are this test binary run again (`current_exe()`) with
//! [`WORKER_DIR`] set: the test then appends instead of orchestrating. Each worker
//! prints `ACK <session> <message id> <seq>` (flushed) for every append that returned
//! `Ok`, and nothing before it: a line cut by the kill is not counted.
//!
//! `STAYFAST_TX_PROCS_SECS` shortens the run (default 20 s). Figures are printed with
//! `--nocapture`.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use stayfast::transcripts::{Message, Record, TranscriptConfig, TranscriptStore};
use support::TempDir;

/// Set in a worker's environment: the transcript directory it appends to.
const WORKER_DIR: &str = "STAYFAST_TX_WORKER_DIR";
/// Overrides the run's length, in seconds.
const SECS: &str = "STAYFAST_TX_PROCS_SECS";
const WORKERS: usize = 4;
const SESSIONS: u64 = 20;
/// Ids that every worker appends now and then, so the same message is appended by
/// several processes: it must be stored once, and every one of them told its seq.
const SHARED_IDS: u64 = 40;
const TEST_NAME: &str = "four_processes_killed_at_random_lose_and_repeat_nothing";

/// A small xorshift generator: no dependency, seeded per process.
struct Rng(u64);

impl Rng {
    fn seeded(extra: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self((nanos ^ (u64::from(std::process::id()) << 32) ^ extra) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn config(dir: &Path) -> TranscriptConfig {
    let mut config = TranscriptConfig::default();
    config.dir = dir.to_path_buf();
    config
}

/// A worker: appends until killed, from 4 tasks at once, now and then reading a history
/// (a reader beside the writers of other processes).
fn worker(dir: PathBuf) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = TranscriptStore::builder(&config(&dir)).open().await.unwrap();
        let pid = std::process::id();
        let mut tasks = Vec::new();
        for task in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::seeded(task);
                for n in 0u64.. {
                    let session = format!("s{}", rng.below(SESSIONS));
                    if rng.below(10) == 0 {
                        let _ = store.history(&session, 5).await;
                        continue;
                    }
                    let id = if rng.below(8) == 0 {
                        format!("shared-{}", rng.below(SHARED_IDS))
                    } else {
                        format!("p{pid}-t{task}-{n}")
                    };
                    // Now and then a large record, so a kill can land mid-write.
                    let size = if rng.below(16) == 0 { 48 * 1024 } else { 40 };
                    let content = "x".repeat(size);
                    match store
                        .append(&session, Message::new("user", content).with_id(&id))
                        .await
                    {
                        Ok(receipt) => {
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "ACK {session} {id} {}", receipt.record.seq).unwrap();
                            out.flush().unwrap();
                        }
                        Err(e) => {
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "ERR {session} {id} {e}").unwrap();
                            out.flush().unwrap();
                        }
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

/// One acknowledged append.
#[derive(Debug)]
struct Ack {
    session: String,
    id: String,
    seq: u64,
}

#[derive(Default)]
struct Seen {
    acks: Vec<Ack>,
    errors: Vec<String>,
}

fn spawn_worker(dir: &Path, seen: &Arc<Mutex<Seen>>) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(WORKER_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = Arc::clone(seen);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            // A line the kill cut short has no newline: not an acknowledgement.
            let Some(text) = line.strip_suffix(b"\n") else {
                return;
            };
            let text = String::from_utf8_lossy(text);
            let mut parts = text.splitn(4, ' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("ACK"), Some(session), Some(id), Some(seq)) => {
                    seen.lock().unwrap().acks.push(Ack {
                        session: session.to_owned(),
                        id: id.to_owned(),
                        seq: seq.parse().unwrap(),
                    });
                }
                (Some("ERR"), ..) => seen.lock().unwrap().errors.push(text.into_owned()),
                _ => {}
            }
        }
    });
    child
}

#[test]
fn four_processes_killed_at_random_lose_and_repeat_nothing() {
    if let Some(dir) = std::env::var_os(WORKER_DIR) {
        worker(dir.into());
        return;
    }
    let secs: u64 = std::env::var(SECS)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let scratch = TempDir::new("tx-procs");
    let dir = scratch.0.join("tx");
    std::fs::create_dir_all(&dir).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut rng = Rng::seeded(0);
    let mut children: Vec<Child> = (0..WORKERS).map(|_| spawn_worker(&dir, &seen)).collect();
    let start = Instant::now();
    let mut kills = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_secs(2).min(Duration::from_secs(secs).saturating_sub(start.elapsed())),
        );
        let victim = rng.below(WORKERS as u64) as usize;
        children[victim].kill().unwrap(); // SIGKILL
        children[victim].wait().unwrap();
        kills += 1;
        children[victim] = spawn_worker(&dir, &seen);
    }
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let elapsed = start.elapsed();
    // Let the readers of the last pipes finish.
    std::thread::sleep(Duration::from_millis(200));
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    check(&dir, &seen);
    println!(
        "{} appends acknowledged by {WORKERS} processes over {SESSIONS} sessions in {:.1} s \
         ({:.0} appends/s), {kills} kills, {} append errors",
        seen.acks.len(),
        elapsed.as_secs_f64(),
        seen.acks.len() as f64 / elapsed.as_secs_f64(),
        seen.errors.len(),
    );
    for e in seen.errors.iter().take(5) {
        println!("  e.g. {e}");
    }
    assert!(
        seen.acks.len() > 100,
        "too few appends to mean anything: {}",
        seen.acks.len()
    );
}

/// Reads the directory with a fresh store and independently, and checks the acks.
fn check(dir: &Path, seen: &Seen) {
    let mut files = Vec::new();
    let mut torn = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains("quarantine"), "a record was quarantined: {name}");
        if name.ends_with(".jsonl") {
            files.push(path);
        } else if name.contains(".torn-") {
            torn.push(path);
        } else {
            panic!("unexpected file {name}");
        }
    }
    // A torn tail kept aside is a fragment a kill left: never an acknowledged record.
    for path in &torn {
        let bytes = std::fs::read(path).unwrap();
        assert!(!bytes.contains(&b'\n'), "{} holds a whole line", path.display());
        for ack in &seen.acks {
            let needle = format!("\"id\":\"{}\"", ack.id);
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&needle) || ack.id.starts_with("shared-"),
                "{} holds acknowledged {ack:?}",
                path.display()
            );
        }
    }
    // Every line of every file parses, and seqs run 1..=n.
    let mut by_file: HashMap<PathBuf, Vec<Record>> = HashMap::new();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let mut records = Vec::new();
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() && i + 1 == lines.len() {
                continue;
            }
            if i + 1 == lines.len() {
                // An unterminated tail: a kill mid-write; no reader may have cut it yet.
                continue;
            }
            let record: Record = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "{} line {}: {e}: {:?}",
                    path.display(),
                    i + 1,
                    String::from_utf8_lossy(&line[..line.len().min(120)])
                )
            });
            records.push(record);
        }
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        let expected: Vec<u64> = (1..=records.len() as u64).collect();
        assert!(
            seqs == expected,
            "{}: seqs are not 1..=n: {}",
            path.display(),
            describe(&seqs)
        );
        let mut ids = HashMap::new();
        for r in &records {
            assert!(
                ids.insert(r.id.clone(), r.seq).is_none(),
                "{}: id {} stored twice",
                path.display(),
                r.id
            );
        }
        by_file.insert(path.clone(), records);
    }
    // A fresh store reads the same thing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime
        .block_on(TranscriptStore::builder(&config(dir)).open())
        .unwrap();
    let mut sessions: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for s in 0..SESSIONS {
        let session = format!("s{s}");
        let history = runtime.block_on(store.history(&session, usize::MAX)).unwrap();
        assert!(!history.degraded, "{session}: {:?}", history.reason);
        sessions.insert(session, history.records);
    }
    let total: usize = sessions.values().map(Vec::len).sum();
    let in_files: usize = by_file.values().map(Vec::len).sum();
    assert_eq!(total, in_files, "the store reads what the files hold");
    // Every acknowledged append is there exactly once, with its seq.
    for ack in &seen.acks {
        let records = &sessions[&ack.session];
        let found: Vec<&Record> = records.iter().filter(|r| r.id == ack.id).collect();
        assert_eq!(found.len(), 1, "{ack:?} is stored {} times", found.len());
        assert_eq!(
            found[0].seq, ack.seq,
            "{ack:?} was stored with seq {}",
            found[0].seq
        );
    }
}

/// The first place where `seqs` is not 1..=n.
fn describe(seqs: &[u64]) -> String {
    match seqs.iter().enumerate().find(|(i, s)| **s != *i as u64 + 1) {
        Some((i, s)) => format!(
            "at line {}: {s} (around: {:?}), {} records",
            i + 1,
            &seqs[i.saturating_sub(3)..(i + 3).min(seqs.len())],
            seqs.len()
        ),
        None => "fine".into(),
    }
}

/// Another process holding a session file's lock past the write deadline: the append
/// gives up as a timeout ("nothing was written"), in time, and writes nothing. (The
/// test's own handle stands in for the other process: `flock` belongs to an open file,
/// so it excludes the store's handle just the same.)
#[tokio::test]
async fn a_lock_held_past_the_deadline_is_a_timeout_and_nothing_is_written() {
    let scratch = TempDir::new("tx-lock-timeout");
    let config = config(&scratch.0.join("tx"));
    let store = TranscriptStore::builder(&config)
        .timeouts(Duration::from_secs(1), Duration::from_millis(300))
        .open()
        .await
        .unwrap();
    store.append("s", Message::new("user", "one")).await.unwrap();
    let path = std::fs::read_dir(&config.dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let before = std::fs::read(&path).unwrap();
    let other = std::fs::File::open(&path).unwrap();
    other.lock().unwrap();
    let start = Instant::now();
    let err = store.append("s", Message::new("user", "two")).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(&err, stayfast::StoreError::File(e) if e.is_timeout()),
        "a timeout: {err}"
    );
    assert!(
        took < Duration::from_millis(300) + Duration::from_millis(500),
        "bounded: {took:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was written");
    other.unlock().unwrap();
    let two = store.append("s", Message::new("user", "two")).await.unwrap();
    assert_eq!(two.record.seq, 2);
}
