//! The system calls of a steady-state append (issue #16: CPU per acknowledged append):
//! what a cached fact makes unnecessary is not asked of the kernel again, and what the
//! guarantees need (the cross-process lock, the check that the kept handle is still the
//! file at the path, one write, one fsync) still is.
#![allow(clippy::unwrap_used)]

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use stayfast_core::{
    Policy,
    fs::{Decision, DurableAppend, FileOps, RealFs},
};

/// A fresh directory on the temporary file system, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "stayfast-calls-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Records the name of every call, then makes it on the real file system.
#[derive(Debug, Default, Clone)]
struct Recorded(Arc<Mutex<Vec<&'static str>>>);

impl Recorded {
    fn note(&self, call: &'static str) {
        self.0.lock().unwrap().push(call);
    }

    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl FileOps for Recorded {
    fn symlink_metadata(&self, path: &Path) -> std::io::Result<fs::Metadata> {
        self.note("lstat");
        RealFs.symlink_metadata(path)
    }
    fn metadata(&self, path: &Path) -> std::io::Result<fs::Metadata> {
        self.note("stat");
        RealFs.metadata(path)
    }
    fn stat(&self, file: &fs::File, path: &Path) -> std::io::Result<fs::Metadata> {
        self.note("fstat");
        RealFs.stat(file, path)
    }
    fn open_append(&self, path: &Path, mode: u32) -> std::io::Result<fs::File> {
        self.note("open");
        RealFs.open_append(path, mode)
    }
    fn try_lock(&self, file: &fs::File, path: &Path) -> std::io::Result<bool> {
        self.note("flock");
        RealFs.try_lock(file, path)
    }
    fn unlock(&self, file: &fs::File, path: &Path) -> std::io::Result<()> {
        self.note("unlock");
        RealFs.unlock(file, path)
    }
    fn read_at(&self, file: &fs::File, path: &Path, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.note("pread");
        RealFs.read_at(file, path, buf, offset)
    }
    fn write(&self, file: &fs::File, path: &Path, buf: &[u8]) -> std::io::Result<usize> {
        self.note("write");
        RealFs.write(file, path, buf)
    }
    fn sync(&self, file: &fs::File, path: &Path) -> std::io::Result<()> {
        self.note("fsync");
        RealFs.sync(file, path)
    }
}

fn appender(ops: &Recorded) -> DurableAppend {
    DurableAppend::new(
        Policy::builder("fs.append")
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .with_ops(ops.clone())
}

fn count(calls: &[&str], name: &str) -> usize {
    calls.iter().filter(|c| **c == name).count()
}

/// An append through the handle the previous one kept checks it with one `lstat`
/// (which also gives the file's length now) rather than an `fstat` and an `lstat`,
/// does not `stat` its directory again (its identity, the process-wide lock's key, is
/// known from the previous append), and still takes and releases the cross-process lock, writes once and fsyncs once.
#[tokio::test]
async fn a_kept_handle_is_checked_with_one_lstat_and_no_fstat() {
    let dir = Dir::new("kept");
    let path = dir.0.join("t.jsonl");
    let ops = Recorded::default();
    let log = appender(&ops);
    let first = log
        .append_since(&path, None, |_| Decision::append(b"one".to_vec(), ()))
        .await
        .unwrap();
    ops.take();
    let second = log
        .append_since(&path, Some(first.mark), |_| Decision::append(b"two".to_vec(), ()))
        .await
        .unwrap();
    let calls = ops.take();
    assert_eq!(
        count(&calls, "stat"),
        0,
        "the directory's identity is known: {calls:?}"
    );
    assert_eq!(count(&calls, "fstat"), 0, "no fstat of a kept handle: {calls:?}");
    assert_eq!(count(&calls, "lstat"), 1, "one lstat of the path: {calls:?}");
    assert_eq!(count(&calls, "open"), 0, "the kept handle is used: {calls:?}");
    for call in ["flock", "unlock", "write", "fsync"] {
        assert_eq!(count(&calls, call), 1, "one {call}: {calls:?}");
    }
    assert_eq!(second.mark.end(), 8, "the length after it, from the lstat");
    assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
}

/// The `lstat` that replaced the kept handle's `fstat` gives the file's length now: a
/// record another process appended since is shown to the decision, and the new record
/// goes after it.
#[tokio::test]
async fn a_kept_handle_sees_what_another_writer_appended() {
    let dir = Dir::new("grown");
    let path = dir.0.join("t.jsonl");
    let ops = Recorded::default();
    let log = appender(&ops);
    let lines = |since: stayfast_core::fs::Since<'_>| since.lines().count();
    let first = log
        .append_since(&path, None, move |s| Decision::append(b"one".to_vec(), lines(s)))
        .await
        .unwrap();
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"other\n")
        .unwrap();
    let second = log
        .append_since(&path, Some(first.mark), move |s| {
            Decision::append(b"two".to_vec(), lines(s))
        })
        .await
        .unwrap();
    assert_eq!(second.value, 1, "the other writer's line is shown");
    assert_eq!(second.appended.unwrap().offset, 10);
    assert_eq!(fs::read_to_string(&path).unwrap(), "one\nother\ntwo\n");
}

/// A directory replaced at its path between two appends (its identity cached by the
/// first): the next append finds no kept handle at the path, writes into the new
/// directory's file, and looks the directory up again; the appends after it go on
/// into the new file too.
#[tokio::test]
async fn a_directory_replaced_at_its_path_gets_the_next_records() {
    let dir = Dir::new("dir-replaced");
    let logs = dir.0.join("logs");
    fs::create_dir(&logs).unwrap();
    let path = logs.join("t.jsonl");
    let ops = Recorded::default();
    let log = appender(&ops);
    log.append(&path, b"one".to_vec()).await.unwrap();
    log.append(&path, b"two".to_vec()).await.unwrap();
    fs::rename(&logs, dir.0.join("old")).unwrap();
    fs::create_dir(&logs).unwrap();
    ops.take();
    let three = log.append(&path, b"three".to_vec()).await.unwrap();
    assert_eq!(three.offset, 0, "a new file in the new directory");
    let calls = ops.take();
    assert_eq!(
        count(&calls, "open"),
        1,
        "the old kept handle is not used: {calls:?}"
    );
    log.append(&path, b"four".to_vec()).await.unwrap();
    let calls = ops.take();
    assert_eq!(
        count(&calls, "stat"),
        1,
        "the directory looked up again: {calls:?}"
    );
    log.append(&path, b"five".to_vec()).await.unwrap();
    let calls = ops.take();
    assert_eq!(count(&calls, "stat"), 0, "and known again: {calls:?}");
    assert_eq!(count(&calls, "open"), 0, "through the new kept handle: {calls:?}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "three\nfour\nfive\n");
    assert_eq!(
        fs::read_to_string(dir.0.join("old").join("t.jsonl")).unwrap(),
        "one\ntwo\n"
    );
}
