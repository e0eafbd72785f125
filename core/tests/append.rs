//! Durable append and log recovery: torn tails, zero fill, corruption in the middle,
//! exactly-once concurrent appends, and E6 (`docs/testing.md`) for logs.
#![allow(clippy::unwrap_used)]

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use stayfast_core::{
    Error, Policy,
    fs::{Durability, DurableAppend, FileOps, FsyncPolicy, LogReader, ReadLogError, RealFs, Step},
};

/// A fresh directory (tmpfs when there is one: fsync is free there), removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "stayfast-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn appender() -> DurableAppend {
    DurableAppend::new(
        Policy::builder("fs.append")
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
}

fn reader() -> LogReader {
    LogReader::new(
        Policy::builder("fs.read")
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
}

/// A record is valid when it looks like `{"seq":N}`.
fn valid(record: &[u8]) -> bool {
    std::str::from_utf8(record).is_ok_and(|s| s.starts_with("{\"seq\":") && s.ends_with('}'))
}

fn record(seq: usize) -> Vec<u8> {
    format!("{{\"seq\":{seq}}}").into_bytes()
}

/// Appends raw bytes to `path` behind the appender's back: a crash's leftovers, damage.
fn append_raw(path: &Path, bytes: &[u8]) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

async fn write_log(path: &Path, n: usize) {
    let log = appender();
    for seq in 1..=n {
        log.append(path, record(seq)).await.unwrap();
    }
}

#[tokio::test]
async fn appended_records_read_back_in_order_with_durability_reported() {
    let dir = Dir::new("append");
    let path = dir.path("t.jsonl");
    let always = appender();
    let first = always.append(&path, record(1)).await.unwrap();
    assert_eq!(
        (first.offset, first.len, first.durability),
        (0, 10, Durability::Synced)
    );
    let never = appender().fsync(FsyncPolicy::Never);
    assert_eq!(
        never.append(&path, record(2)).await.unwrap().durability,
        Durability::Written
    );
    let every = appender().fsync(FsyncPolicy::EveryMs(60_000));
    assert_eq!(
        every.append(&path, record(3)).await.unwrap().durability,
        Durability::Synced
    );
    assert_eq!(
        every.append(&path, record(4)).await.unwrap().durability,
        Durability::Written
    );
    every.sync(&path).await.unwrap();
    let read = reader().read(&path, valid).await.unwrap();
    assert_eq!(read.records, (1..=4).map(record).collect::<Vec<_>>());
    assert!(read.torn.is_none());
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_record_with_a_newline_is_rejected_before_any_io() {
    let dir = Dir::new("newline");
    let path = dir.path("t.jsonl");
    let err = appender()
        .append(&path, b"two\nlines".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.inner().unwrap().io().kind(), io::ErrorKind::InvalidInput);
    assert!(!path.exists(), "nothing was created");
}

#[tokio::test]
async fn a_missing_log_is_empty() {
    let dir = Dir::new("missing");
    let read = reader().read(dir.path("none.jsonl"), valid).await.unwrap();
    assert!(read.records.is_empty() && read.torn.is_none());
}

/// A crash can cut the last record at any byte: every cut is recovered to exactly the
/// records before it, the cut bytes are kept in a backup, and the log is truncated.
#[tokio::test]
async fn torn_tail_every_byte_offset() {
    let dir = Dir::new("torn");
    let full = dir.path("full.jsonl");
    write_log(&full, 5).await;
    let bytes = fs::read(&full).unwrap();
    let last = record(5).len() + 1;
    let base = bytes.len() - last;
    for cut in 1..last {
        let path = dir.path(&format!("cut{cut}.jsonl"));
        fs::write(&path, &bytes[..base + cut]).unwrap();
        let read = reader().read(&path, valid).await.unwrap();
        assert_eq!(
            read.records,
            (1..=4).map(record).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        let torn = read.torn.expect("a torn tail");
        assert_eq!((torn.offset, torn.len), (base as u64, cut as u64), "cut at {cut}");
        assert_eq!(fs::read(&torn.backup).unwrap(), &bytes[base..base + cut]);
        assert_eq!(
            fs::metadata(&torn.backup).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            &bytes[..base],
            "truncated to the valid prefix"
        );
        // Appending after recovery continues cleanly.
        appender().append(&path, record(5)).await.unwrap();
        assert_eq!(reader().read(&path, valid).await.unwrap().records.len(), 5);
    }
    // No cut at all: clean.
    let read = reader().read(&full, valid).await.unwrap();
    assert_eq!(read.records.len(), 5);
    assert!(read.torn.is_none());
}

/// A file extended by the kernel whose data never reached the disk reads as zeros.
#[tokio::test]
async fn zero_filled_tail_is_torn() {
    let dir = Dir::new("zeros");
    for (case, tail) in [
        ("zeros", vec![0u8; 4096]),
        ("partial+zeros", [b"{\"seq\":".as_slice(), &[0u8; 100]].concat()),
        ("zeros+newline", [&[0u8; 10][..], b"\n", &[0u8; 5]].concat()),
    ] {
        let path = dir.path(&format!("{}.jsonl", case.replace('+', "_")));
        write_log(&path, 3).await;
        let good = fs::read(&path).unwrap();
        append_raw(&path, &tail);
        let read = reader().read(&path, valid).await.unwrap();
        assert_eq!(read.records.len(), 3, "{case}");
        let torn = read.torn.unwrap_or_else(|| panic!("{case}: not reported torn"));
        assert_eq!(torn.len, tail.len() as u64, "{case}");
        assert_eq!(fs::read(&path).unwrap(), good, "{case}");
    }
}

/// An invalid record with valid ones after it is corruption: an error carrying the
/// valid prefix, and the file is left exactly as it was.
#[tokio::test]
async fn mid_file_corruption_is_error() {
    let dir = Dir::new("corrupt");
    let path = dir.path("t.jsonl");
    write_log(&path, 5).await;
    let mut bytes = fs::read(&path).unwrap();
    let third = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 1;
    bytes[third] = b'#'; // record 3 no longer starts with {"seq":
    fs::write(&path, &bytes).unwrap();
    let err = reader().read(&path, valid).await.unwrap_err();
    let Error::Inner {
        source: ReadLogError::Corrupt(c),
        ..
    } = err
    else {
        panic!("expected corruption, got {err:?}")
    };
    assert_eq!((c.line, c.offset), (3, third as u64));
    assert_eq!(c.valid, vec![record(1), record(2)]);
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing repaired or skipped");
    assert_eq!(dir.names(), ["t.jsonl"], "no backup for corruption");
}

#[tokio::test]
async fn an_oversized_record_is_invalid_and_memory_stays_bounded() {
    let dir = Dir::new("huge");
    let path = dir.path("t.jsonl");
    write_log(&path, 2).await;
    let mut huge = b"{\"seq\":".to_vec();
    huge.resize(5 << 20, b'9');
    huge.extend_from_slice(b"}\n");
    append_raw(&path, &huge);
    append_raw(&path, b"{\"seq\":4}\n");
    let err = reader()
        .max_record(64 * 1024)
        .read(&path, valid)
        .await
        .unwrap_err();
    let Some(ReadLogError::Corrupt(c)) = err.inner() else {
        panic!("{err:?}")
    };
    assert_eq!((c.line, c.valid.len()), (3, 2));
    assert!(c.reason.contains("longer than"), "{}", c.reason);
}

/// E6: a directory, a FIFO, or a symlink (to /dev/zero) at the log's path is
/// a typed error — never a hang, never a link followed.
#[tokio::test]
async fn non_regular_files_are_typed_errors() {
    let dir = Dir::new("special");
    let as_dir = dir.path("dir.jsonl");
    fs::create_dir(&as_dir).unwrap();
    let fifo = dir.path("fifo.jsonl");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let link = dir.path("link.jsonl");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    for path in [as_dir, fifo, link] {
        let read = tokio::time::timeout(Duration::from_secs(5), reader().read(&path, valid)).await;
        let err = read.expect("no hang").unwrap_err();
        let Some(ReadLogError::Fs(e)) = err.inner() else {
            panic!("{err:?}")
        };
        assert_eq!(e.io().kind(), io::ErrorKind::InvalidInput, "{}", path.display());
        // Appending refuses to follow the link too.
    }
    let err = appender()
        .append(dir.path("link.jsonl"), record(1))
        .await
        .unwrap_err();
    assert!(err.inner().is_some(), "O_NOFOLLOW refused the symlink: {err:?}");
}

/// 64 writers × 100 records into one log: every record exactly once, each writer's
/// records in its order, none interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_exactly_once() {
    let dir = Dir::new("concurrent");
    let path = dir.path("t.jsonl");
    let log = appender();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let (log, path) = (log.clone(), path.clone());
            tokio::spawn(async move {
                for i in 0..100 {
                    let r = format!("{{\"seq\":{},\"task\":{task},\"i\":{i}}}", task * 100 + i);
                    log.append(&path, r.into_bytes()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    println!("6400 appends (fsync each) in {:?}", started.elapsed());
    let read = reader().read(&path, valid).await.unwrap();
    assert_eq!(read.records.len(), 6400);
    assert!(read.torn.is_none());
    let mut next = [0usize; 64];
    let mut seen = std::collections::HashSet::new();
    for r in &read.records {
        let s = std::str::from_utf8(r).unwrap();
        let field = |name: &str| -> usize {
            let start = s.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
            s[start..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (task, i) = (field("task"), field("i"));
        assert_eq!(i, next[task], "task {task} out of order");
        next[task] += 1;
        assert!(seen.insert((task, i)), "duplicate");
    }
}

/// A seam whose writes are short (half the bytes) or whose fsync fails.
#[derive(Debug)]
struct Faulty {
    short_write: bool,
    fail_sync: bool,
    syncs: Arc<AtomicUsize>,
}

impl FileOps for Faulty {
    fn write(&self, file: &fs::File, path: &Path, buf: &[u8]) -> io::Result<usize> {
        let n = if self.short_write {
            buf.len() / 2
        } else {
            buf.len()
        };
        RealFs.write(file, path, &buf[..n])
    }

    fn sync(&self, file: &fs::File, path: &Path) -> io::Result<()> {
        if self.fail_sync && path.extension().is_some_and(|e| e == "jsonl") {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(5));
        }
        RealFs.sync(file, path)
    }
}

#[tokio::test]
async fn a_short_write_or_failed_fsync_is_rolled_back_and_not_retried() {
    short_write_or_failed_fsync_rolled_back().await;
}

/// The same on a multi-thread runtime, where the append's write and its fsync are two
/// jobs of the appenders' own threads: a failed fsync in the second still rolls back the
/// first's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_in_its_own_stage_is_rolled_back_and_not_retried() {
    short_write_or_failed_fsync_rolled_back().await;
}

async fn short_write_or_failed_fsync_rolled_back() {
    let dir = Dir::new("faulty");
    let path = dir.path("t.jsonl");
    write_log(&path, 2).await;
    let before = fs::read(&path).unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let retrying = Policy::builder("fs.append")
        .retry(&stayfast_core::config::RetryConfig::default())
        .build()
        .unwrap();
    for (short_write, fail_sync, step) in [(true, false, Step::Write), (false, true, Step::SyncFile)] {
        let log = DurableAppend::new(retrying.clone()).with_ops(Faulty {
            short_write,
            fail_sync,
            syncs: Arc::clone(&syncs),
        });
        let err = log.append(&path, record(3)).await.unwrap_err();
        assert_eq!(err.inner().unwrap().step(), step);
        assert_eq!(err.attempts(), Some(1), "{step:?} is not retried");
        assert_eq!(fs::read(&path).unwrap(), before, "{step:?}: rolled back");
    }
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        1,
        "the failed fsync was not retried"
    );
}

/// A FIFO planted where a log already lived must be refused at once, by append, sync
/// and read alike: an open of a FIFO without a reader would block a blocking-pool
/// thread (and the path's turn) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_planted_at_a_used_path_is_refused_not_blocking() {
    let dir = Dir::new("fifo");
    let path = dir.path("t.log");
    let policy = || {
        Policy::builder("fs.append")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let log = DurableAppend::new(policy()).fsync(FsyncPolicy::Never);
    log.append(&path, b"1".to_vec()).await.unwrap();
    fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());

    let started = std::time::Instant::now();
    let err = log.append(&path, b"2".to_vec()).await.unwrap_err();
    assert!(err.is_inner(), "a typed error, not a timeout: {err}");
    assert!(log.sync(&path).await.unwrap_err().is_inner());
    let read = LogReader::new(policy()).read(&path, |_| true).await.unwrap_err();
    assert!(read.is_inner(), "{read}");
    let elapsed = started.elapsed();
    eprintln!("fifo refused by append, sync and read in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1));
}

/// #12.1: a crash left half a record (or a zero fill) at the end; the next append must
/// not glue its record onto it. Every acknowledged record reads back.
#[tokio::test]
async fn an_append_after_a_torn_tail_keeps_every_acknowledged_record() {
    let dir = Dir::new("torn-append");
    for (case, fragment) in [
        ("fragment", b"{\"seq\":4, \"half".to_vec()),
        ("zeros", vec![0u8; 70_000]), // longer than one backward read
        ("fragment+zeros", [b"{\"se".as_slice(), &[0u8; 10]].concat()),
    ] {
        let path = dir.path(&format!("{}.jsonl", case.replace('+', "_")));
        write_log(&path, 3).await;
        let good = fs::read(&path).unwrap();
        append_raw(&path, &fragment);
        let appended = appender().append(&path, record(4)).await.unwrap();
        assert_eq!(
            appended.offset,
            good.len() as u64,
            "{case}: written where the fragment began"
        );
        assert_eq!(appended.torn_cut, fragment.len() as u64, "{case}");
        let read = reader().read(&path, valid).await.unwrap();
        assert_eq!(read.records, (1..=4).map(record).collect::<Vec<_>>(), "{case}");
        assert!(read.torn.is_none(), "{case}");
        let backup = dir.path(&format!("{}.jsonl.torn-{}", case.replace('+', "_"), good.len()));
        assert_eq!(
            fs::read(&backup).unwrap(),
            fragment,
            "{case}: the fragment is kept"
        );
        assert_eq!(fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

/// A seam whose writes are short and whose truncation fails: the rollback cannot happen.
#[derive(Debug)]
struct NoRollback;

impl FileOps for NoRollback {
    fn write(&self, file: &fs::File, path: &Path, buf: &[u8]) -> io::Result<usize> {
        RealFs.write(file, path, &buf[..buf.len() / 2])
    }

    fn set_len(&self, _file: &fs::File, _path: &Path, _len: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(5))
    }
}

/// #12.1: a rollback that fails is reported (never silently ignored), and the half record
/// it leaves is cut by the next append: nothing acknowledged is lost.
#[tokio::test]
async fn a_failed_rollback_is_reported_and_the_next_append_cuts_its_leftover() {
    let dir = Dir::new("no-rollback");
    let path = dir.path("t.jsonl");
    write_log(&path, 2).await;
    let log = appender().with_ops(NoRollback);
    let err = log.append(&path, record(3)).await.unwrap_err();
    let fs_err = err.inner().unwrap();
    assert_eq!(fs_err.step(), Step::Rollback, "{err}");
    let chain = stayfast_core::ErrorChain(fs_err).to_string();
    assert!(chain.contains("short write"), "names the first failure: {chain}");
    assert_ne!(
        fs::read(&path).unwrap().last(),
        Some(&b'\n'),
        "half a record is left"
    );
    let appended = appender().append(&path, record(3)).await.unwrap();
    assert!(appended.torn_cut > 0);
    let read = reader().read(&path, valid).await.unwrap();
    assert_eq!(read.records, (1..=3).map(record).collect::<Vec<_>>());
}

/// #12.2: a line that ends in a newline was written whole. Failing validation (a newer
/// writer's format, a lowered size cap) makes it corruption to report, never a torn tail
/// to cut: the file is left exactly as it was.
#[tokio::test]
async fn a_complete_invalid_last_line_is_never_cut() {
    let dir = Dir::new("complete-invalid");
    let path = dir.path("t.jsonl");
    write_log(&path, 3).await;
    append_raw(&path, b"{\"future\":true}\n");
    let before = fs::read(&path).unwrap();
    let err = reader().read(&path, valid).await.unwrap_err();
    let Some(ReadLogError::Corrupt(c)) = err.inner() else {
        panic!("expected corruption, got {err:?}")
    };
    assert_eq!((c.line, c.valid.len()), (4, 3));
    assert_eq!(fs::read(&path).unwrap(), before, "nothing cut");
    assert_eq!(dir.names(), ["t.jsonl"]);
}

/// #12.2: damage in the middle is taken out by `repair`: every valid record stays, in
/// order, every removed byte is in the quarantine, and appends and reads work again.
#[tokio::test]
async fn repair_quarantines_bad_lines_and_keeps_every_valid_record_in_order() {
    let dir = Dir::new("repair");
    let path = dir.path("t.jsonl");
    write_log(&path, 2).await;
    let mut huge = b"{\"seq\":".to_vec();
    huge.resize(200 * 1024, b'9'); // over the reader's cap below: streamed, not held
    huge.push(b'\n');
    let bad = [b"garbage\n".as_slice(), &huge, b"\0\0\0\n"].concat();
    append_raw(&path, &bad);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    write_log(&path, 0).await;
    for seq in 3..=4 {
        append_raw(&path, &[record(seq), b"\n".to_vec()].concat());
    }
    append_raw(&path, b"{\"se");
    let small = reader().max_record(64 * 1024);
    assert!(
        small.read(&path, valid).await.is_err(),
        "corrupt before the repair"
    );

    let repaired = small.repair(&path, valid).await.unwrap();
    assert_eq!(
        (repaired.kept, repaired.quarantined),
        (4, 4),
        "3 bad lines and a torn tail"
    );
    let quarantine = repaired.quarantine.unwrap();
    assert_eq!(
        fs::read(&quarantine).unwrap(),
        [bad.as_slice(), b"{\"se"].concat()
    );
    assert_eq!(
        fs::metadata(&quarantine).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640,
        "mode kept"
    );
    let read = small.read(&path, valid).await.unwrap();
    assert_eq!(read.records, (1..=4).map(record).collect::<Vec<_>>());
    appender().append(&path, record(5)).await.unwrap();
    assert_eq!(small.read(&path, valid).await.unwrap().records.len(), 5);

    // A whole log is left untouched, and no stray file is left behind.
    let again = small.repair(&path, valid).await.unwrap();
    assert_eq!((again.kept, again.quarantined, again.quarantine), (5, 0, None));
    assert_eq!(
        dir.names().len(),
        2,
        "the log and one quarantine: {:?}",
        dir.names()
    );
}

/// Counts fsyncs of `.jsonl` files.
#[derive(Debug, Default)]
struct CountSyncs(Arc<AtomicUsize>);

impl FileOps for CountSyncs {
    fn sync(&self, file: &fs::File, path: &Path) -> io::Result<()> {
        if path.extension().is_some_and(|e| e == "jsonl") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        RealFs.sync(file, path)
    }
}

/// #12.4: with `EveryMs`, a record that was only written (not synced) is fsynced by a
/// timer within the interval even when no further append comes.
#[tokio::test(start_paused = true)]
async fn every_ms_syncs_within_its_interval_without_another_append() {
    let dir = Dir::new("every-ms");
    let path = dir.path("t.jsonl");
    let syncs = Arc::new(AtomicUsize::new(0));
    let log = appender()
        .with_ops(CountSyncs(Arc::clone(&syncs)))
        .fsync(FsyncPolicy::EveryMs(100));
    let first = log.append(&path, record(1)).await.unwrap();
    assert_eq!(
        first.durability,
        Durability::Synced,
        "the first record of a file syncs"
    );
    // Paused time: the timer's interval passes at once; the fsync itself (a blocking
    // task) holds the clock still while it runs.
    let written = tokio::time::Instant::now();
    let second = log.append(&path, record(2)).await.unwrap();
    assert_eq!(second.durability, Durability::Written);
    assert_eq!(log.unsynced(), 1);
    while syncs.load(Ordering::SeqCst) < 2 {
        assert!(
            written.elapsed() <= Duration::from_millis(100 + 10),
            "no fsync within the interval"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "the timed fsync came {:?} after the write (interval 100 ms)",
        written.elapsed()
    );
    assert_eq!(log.unsynced(), 0);
    // Nothing pending: the timer stops and syncs nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(syncs.load(Ordering::SeqCst), 2);
}

/// #12.4: `sync_all` makes every written-but-unsynced file durable, whichever files they
/// are (a store that forgot a session still has its file synced at shutdown).
#[tokio::test]
async fn sync_all_syncs_every_unsynced_file() {
    let dir = Dir::new("sync-all");
    let syncs = Arc::new(AtomicUsize::new(0));
    let log = appender()
        .with_ops(CountSyncs(Arc::clone(&syncs)))
        .fsync(FsyncPolicy::Never);
    for i in 0..20 {
        log.append(dir.path(&format!("{i}.jsonl")), record(1))
            .await
            .unwrap();
    }
    fs::remove_file(dir.path("0.jsonl")).unwrap(); // removed since: skipped, not an error
    assert_eq!(log.unsynced(), 20);
    assert_eq!(syncs.load(Ordering::SeqCst), 0);
    assert_eq!(log.sync_all().await.unwrap(), 20);
    assert_eq!(syncs.load(Ordering::SeqCst), 19);
    assert_eq!(log.unsynced(), 0);
}

/// `read_last` agrees with `read` for every `n`, across chunk boundaries, and declines
/// (None) an end that `read` must repair or report.
#[tokio::test]
async fn read_last_is_the_tail_of_read() {
    let dir = Dir::new("read-last");
    let path = dir.path("t.jsonl");
    let log = appender().fsync(FsyncPolicy::Never);
    // Records of varied length, some longer than a 64 KiB chunk.
    for seq in 1..=40usize {
        let mut r = record(seq);
        if seq % 7 == 0 {
            r.truncate(r.len() - 1);
            r.extend(std::iter::repeat_n(b' ', 70_000));
            r.push(b'}');
        }
        log.append(&path, r).await.unwrap();
    }
    let all = reader().read(&path, valid).await.unwrap().records;
    for n in [0, 1, 2, 6, 7, 8, 20, 39, 40, 41, 100] {
        let last = reader().read_last(&path, n, valid).await.unwrap().unwrap();
        assert_eq!(last, all[all.len().saturating_sub(n)..].to_vec(), "n = {n}");
    }
    assert_eq!(
        reader().read_last(dir.path("absent"), 5, valid).await.unwrap(),
        Some(vec![])
    );
    // A bad line before the last 3 is not read; within them it is declined.
    let damaged = dir.path("damaged.jsonl");
    fs::write(
        &damaged,
        [&record(1)[..], b"\nbad\n", &record(3), b"\n", &record(4), b"\n"].concat(),
    )
    .unwrap();
    assert_eq!(
        reader()
            .read_last(&damaged, 2, valid)
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(reader().read_last(&damaged, 3, valid).await.unwrap(), None);
    // A torn tail is declined, and left for `read` to cut.
    append_raw(&damaged, b"{\"se");
    assert_eq!(reader().read_last(&damaged, 1, valid).await.unwrap(), None);
    assert!(fs::read(&damaged).unwrap().ends_with(b"{\"se"));
}

/// A seam whose writes to `hung.jsonl` block until released: a stuck disk or a dead NFS
/// server, for one file only.
#[derive(Clone, Debug, Default)]
struct HungFile(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

/// Releases its hung file when dropped.
struct ReleaseOnDrop(HungFile);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl HungFile {
    fn release(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

impl FileOps for HungFile {
    fn write(&self, file: &fs::File, path: &Path, buf: &[u8]) -> io::Result<usize> {
        if path.file_name().is_some_and(|n| n == "hung.jsonl") {
            let mut released = self.0.0.lock().unwrap();
            while !*released {
                released = self.0.1.wait(released).unwrap();
            }
        }
        RealFs.write(file, path, buf)
    }
}

/// #12.9: one hung file delays only the operations on that file, each of which gives up
/// waiting at its deadline (and is then never applied); unrelated files never wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_file_delays_no_other_file_and_waits_on_it_are_bounded() {
    let dir = Dir::new("hung");
    let hung = HungFile::default();
    // Released however the test ends: a failed assertion must fail the test, not leave
    // the blocking write (and so the runtime's shutdown) waiting forever.
    let _release = ReleaseOnDrop(hung.clone());
    let log = DurableAppend::new(
        Policy::builder("fs.append")
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .with_ops(hung.clone());
    let path = dir.path("hung.jsonl");
    let started = std::time::Instant::now();
    for i in 0..1000 {
        log.append(dir.path(&format!("before-{i}.jsonl")), record(1))
            .await
            .unwrap();
    }
    let baseline = started.elapsed();
    let stuck = tokio::spawn({
        let (log, path) = (log.clone(), path.clone());
        async move { log.append(&path, record(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await; // the first append is stuck in write()

    // Every other file is served at once (1000 files: with 128 shared lock stripes, one
    // of them would share the hung file's stripe in all but 1 run of 2,500): no append
    // waits for the hung one (each would time out at 200 ms), and 1000 of them take
    // about as long as 1000 appends to fresh files did before the hang began — compared
    // within the test, so that a loaded machine slows both alike.
    let started = std::time::Instant::now();
    for i in 0..1000 {
        log.append(dir.path(&format!("{i}.jsonl")), record(1))
            .await
            .unwrap();
    }
    let others = started.elapsed();
    eprintln!("1000 appends to other files while one file hangs: {others:?} (before it hung: {baseline:?})");
    assert!(
        others < baseline * 3 + Duration::from_millis(250),
        "{others:?} against {baseline:?}"
    );

    // A second append to the hung file gives up at its deadline...
    let started = std::time::Instant::now();
    let err = log.append(&path, record(2)).await.unwrap_err();
    assert!(err.is_outcome_unknown() || err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(200 + 250));
    // ...and its blocking task stops waiting too: once the file is released, it is
    // never applied, and the file takes new appends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    hung.release();
    assert!(
        stuck.await.unwrap().is_err(),
        "the first append outlived its deadline"
    );
    log.append(&path, record(3)).await.unwrap();
    let read = reader().read(&path, valid).await.unwrap();
    assert_eq!(
        read.records,
        vec![record(1), record(3)],
        "record 2 was never written"
    );
}
