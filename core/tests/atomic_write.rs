//! `AtomicFileWrite` (temp in the same directory → write → fsync → rename → fsync of the
//! directory): the exact syscall sequence through a recording seam, a failure injected at every step, typed errors, concurrency,
//! cancellation, the A/B lost update, file modes, symlinks and the stale-temp sweep.
//!
//! Temp directories live under `/dev/shm` when it exists (tmpfs: fsync is cheap), named
//! with the pid and a counter, and are removed when each test ends. Tests that need a
//! process of their own (a different uid, a different umask) re-execute this binary on
//! one `child_*` test, which does nothing unless its environment variable is set.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs::{self, File},
    io,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

mod support;

use stayfast_core::{
    Classify, Error, Policy, Retryable,
    config::RetryConfig,
    fs::{AtomicFileWrite, FileOps, FsError, RealFs, Step},
};
use support::XorShift;

// ---------------------------------------------------------------------------------
// Helpers: temp dirs, listings, content, errors
// ---------------------------------------------------------------------------------

/// A unique directory, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("stayfast-aw-{}-{n}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Anything in `dir` that looks like a temp file (broader than the crate's own shape).
fn leftover_temps(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.contains(".sf-") || n.ends_with(".tmp"))
        .collect()
}

/// The crate's temp-name shape: `.sf-` + 16 hex digits + `.tmp`, 24 bytes.
fn is_crate_temp_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    name.len() == 24
        && name.starts_with(".sf-")
        && name.ends_with(".tmp")
        && name[4..20].bytes().all(|b| b.is_ascii_hexdigit())
}

fn policy() -> Policy {
    Policy::builder("fs.write").build().unwrap()
}

/// The `FsError` of an `Error::Inner`, or a panic naming what came instead.
fn fs_error(e: &Error<FsError>) -> &FsError {
    match e {
        Error::Inner { source, .. } => source,
        other => panic!("expected Error::Inner carrying an FsError, got {other:?}"),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// FNV-1a, 64 bits: the checksum in a version's trailer.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A self-checking version: `"{task}:{i}:"` repeated to ~4 KiB, then
/// `#<body length>#<fnv1a of body>\n`.
fn version(task: usize, i: usize) -> Vec<u8> {
    sized_version(task, i, 4000)
}

/// A self-checking version whose body is about `size` bytes.
fn sized_version(task: usize, i: usize, size: usize) -> Vec<u8> {
    let unit = format!("{task}:{i}:");
    let body = unit.repeat((size / unit.len()).max(1));
    format!("{body}#{}#{:016x}\n", body.len(), fnv1a(body.as_bytes())).into_bytes()
}

/// Checks `bytes` is exactly one complete version (trailer length and checksum, and
/// equal to the version its header names); returns its `(task, i)`.
fn check_version(bytes: &[u8]) -> Result<(usize, usize), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let line = text
        .strip_suffix('\n')
        .ok_or_else(|| format!("no trailing newline ({} bytes)", bytes.len()))?;
    let mut parts = line.rsplitn(3, '#');
    let (Some(sum), Some(len), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("no trailer ({} bytes)", bytes.len()));
    };
    if len.parse::<usize>().ok() != Some(body.len()) {
        return Err(format!("length {len} != body length {}", body.len()));
    }
    if u64::from_str_radix(sum, 16).ok() != Some(fnv1a(body.as_bytes())) {
        return Err("checksum mismatch".to_owned());
    }
    let mut head = body.splitn(3, ':');
    let (Some(Ok(task)), Some(Ok(i))) = (
        head.next().map(str::parse::<usize>),
        head.next().map(str::parse::<usize>),
    ) else {
        return Err("bad header".to_owned());
    };
    let unit = format!("{task}:{i}:");
    if body.len() % unit.len() != 0 || body != unit.repeat(body.len() / unit.len()) {
        return Err(format!("not the complete version {task}:{i}"));
    }
    Ok((task, i))
}

fn seed() -> u64 {
    std::env::var("STAYFAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        })
        | 1
}

/// Polls `cond` every 5 ms for at most `limit`; true once it held.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------
// The recording / faulting seam
// ---------------------------------------------------------------------------------

/// One recorded file-system call.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    CreateNew(PathBuf, u32),
    SetMode(PathBuf, u32),
    Write(PathBuf, usize),
    Sync(PathBuf),
    Rename(PathBuf, PathBuf),
    OpenDir(PathBuf),
    Remove(PathBuf),
    Other(&'static str, PathBuf),
}

/// Fail the `nth` (0-based) recorded op that `matches` selects, with OS error `errno`.
#[derive(Debug, Clone, Copy)]
struct Fault {
    matches: fn(&Op) -> bool,
    nth: usize,
    errno: i32,
}

/// Every op of the durable sequence (the cleanup `unlink` is not counted).
fn any_sequence_op(op: &Op) -> bool {
    !matches!(op, Op::Remove(_))
}

#[derive(Debug, Default)]
struct SeamState {
    log: Mutex<Vec<Op>>,
    fault: Option<Fault>,
    seen: AtomicUsize,
    /// Index in `log` of the op that was failed.
    failed_at: Mutex<Option<usize>>,
}

/// Records the mutating and syncing calls in order, delegating to [`RealFs`]; fails
/// one of them on demand.
#[derive(Clone, Debug, Default)]
struct Seam(Arc<SeamState>);

impl Seam {
    fn recording() -> Self {
        Self::default()
    }

    fn failing(fault: Fault) -> Self {
        Self(Arc::new(SeamState {
            fault: Some(fault),
            ..SeamState::default()
        }))
    }

    fn log(&self) -> Vec<Op> {
        self.0.log.lock().unwrap().clone()
    }

    fn failed_at(&self) -> Option<usize> {
        *self.0.failed_at.lock().unwrap()
    }

    fn hit(&self, op: Op) -> io::Result<()> {
        let fail = match &self.0.fault {
            Some(f) if (f.matches)(&op) => self.0.seen.fetch_add(1, Ordering::SeqCst) == f.nth,
            _ => false,
        };
        let mut log = self.0.log.lock().unwrap();
        log.push(op);
        if fail {
            *self.0.failed_at.lock().unwrap() = Some(log.len() - 1);
            Err(io::Error::from_raw_os_error(self.0.fault.unwrap().errno))
        } else {
            Ok(())
        }
    }
}

impl FileOps for Seam {
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<File> {
        self.hit(Op::CreateNew(path.to_path_buf(), mode))?;
        FileOps::create_new(&RealFs, path, mode)
    }

    fn open_append(&self, path: &Path, mode: u32) -> io::Result<File> {
        self.hit(Op::Other("open_append", path.to_path_buf()))?;
        FileOps::open_append(&RealFs, path, mode)
    }

    fn open_dir(&self, path: &Path) -> io::Result<File> {
        self.hit(Op::OpenDir(path.to_path_buf()))?;
        FileOps::open_dir(&RealFs, path)
    }

    fn set_mode(&self, file: &File, path: &Path, mode: u32) -> io::Result<()> {
        self.hit(Op::SetMode(path.to_path_buf(), mode))?;
        FileOps::set_mode(&RealFs, file, path, mode)
    }

    fn write(&self, file: &File, path: &Path, buf: &[u8]) -> io::Result<usize> {
        self.hit(Op::Write(path.to_path_buf(), buf.len()))?;
        FileOps::write(&RealFs, file, path, buf)
    }

    fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        self.hit(Op::Sync(path.to_path_buf()))?;
        FileOps::sync(&RealFs, file, path)
    }

    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.hit(Op::Other("set_len", path.to_path_buf()))?;
        FileOps::set_len(&RealFs, file, path, len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.hit(Op::Rename(from.to_path_buf(), to.to_path_buf()))?;
        FileOps::rename(&RealFs, from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.log.lock().unwrap().push(Op::Remove(path.to_path_buf()));
        FileOps::remove_file(&RealFs, path)
    }

    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.hit(Op::Other("create_dir", path.to_path_buf()))?;
        FileOps::create_dir(&RealFs, path, mode)
    }
}

/// Merges consecutive writes to one path (a short write may split the content).
fn merge_writes(log: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(log.len());
    for op in log {
        if let (Some(Op::Write(p, n)), Op::Write(q, m)) = (out.last_mut(), &op)
            && p == q
        {
            *n += m;
            continue;
        }
        out.push(op);
    }
    out
}

/// The `FsError` step a failure of `op` must report, in a write to `dir`.
fn expected_step(op: &Op, dir: &Path) -> Step {
    match op {
        Op::CreateNew(..) => Step::CreateTemp,
        Op::SetMode(..) => Step::SetMode,
        Op::Write(..) => Step::Write,
        Op::Sync(p) if p == dir => Step::SyncDir,
        Op::Sync(_) => Step::SyncTemp,
        Op::Rename(..) => Step::Rename,
        Op::OpenDir(_) => Step::SyncDir,
        other => panic!("unexpected op in the write sequence: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// 1. The exact sequence
// ---------------------------------------------------------------------------------

/// Asserts `log` is exactly create_new(temp in `dir`, O_EXCL) → set_mode → write(s) →
/// sync(temp) → rename(temp → target) → open_dir(dir) → sync(dir); returns the temp.
fn assert_sequence(log: Vec<Op>, dir: &Path, target: &Path, mode: u32, len: usize) -> PathBuf {
    let log = merge_writes(log);
    let Some(Op::CreateNew(temp, _)) = log.first() else {
        panic!("the sequence must start with create_new: {log:#?}");
    };
    let temp = temp.clone();
    assert_eq!(temp.parent(), Some(dir), "temp in the target's directory");
    assert!(
        is_crate_temp_name(temp.file_name().unwrap()),
        "temp name {:?} is not `.sf-<16 hex>.tmp`",
        temp.file_name()
    );
    let expected = vec![
        Op::CreateNew(temp.clone(), mode),
        Op::SetMode(temp.clone(), mode),
        Op::Write(temp.clone(), len),
        Op::Sync(temp.clone()),
        Op::Rename(temp.clone(), target.to_path_buf()),
        Op::OpenDir(dir.to_path_buf()),
        Op::Sync(dir.to_path_buf()),
    ];
    assert_eq!(log, expected);
    temp
}

#[tokio::test]
async fn recording_seam_exact_sequence() {
    let dir = TestDir::new("sequence");
    let target = dir.join("state.json");

    // `create_new` is the O_EXCL open: the real one refuses an existing path.
    fs::write(dir.join("exists"), b"x").unwrap();
    let err = FileOps::create_new(&RealFs, &dir.join("exists"), 0o600).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    fs::remove_file(dir.join("exists")).unwrap();

    // A new file.
    let seam = Seam::recording();
    let writer = AtomicFileWrite::new(policy()).with_ops(seam.clone());
    let first = vec![b'a'; 1000];
    writer.write(&target, first.clone()).await.unwrap();
    let temp1 = assert_sequence(seam.log(), dir.path(), &target, 0o600, first.len());
    assert_eq!(fs::read(&target).unwrap(), first);
    assert_eq!(mode_of(&target), 0o600);

    // Replacing an existing file (mode 0640, kept).
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    let seam = Seam::recording();
    let writer = AtomicFileWrite::new(policy()).with_ops(seam.clone());
    let second = b"{\"v\":2}".to_vec();
    writer.write(&target, second.clone()).await.unwrap();
    let temp2 = assert_sequence(seam.log(), dir.path(), &target, 0o640, second.len());
    assert_ne!(temp1, temp2, "a fresh temp name per write");
    assert_eq!(fs::read(&target).unwrap(), second);
    assert_eq!(mode_of(&target), 0o640);
    assert_eq!(names(dir.path()), ["state.json"]);
}

// ---------------------------------------------------------------------------------
// 2. A failure at every step
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn failure_at_every_step_k() {
    let old = b"old content, exactly".to_vec();
    let new = vec![b'n'; 3000];

    // The sequence, recorded once, tells how many steps there are and what each is.
    let sequence = {
        let dir = TestDir::new("every-k-probe");
        fs::write(dir.join("t"), &old).unwrap();
        let seam = Seam::recording();
        let writer = AtomicFileWrite::new(policy()).with_ops(seam.clone());
        writer.write(dir.join("t"), new.clone()).await.unwrap();
        seam.log()
    };
    // create, chmod, write(s), fsync, rename, open dir, fsync dir: 7 steps (more only
    // if the kernel split the write).
    assert_eq!(merge_writes(sequence.clone()).len(), 7, "{sequence:#?}");
    println!(
        "failure_at_every_step_k: failing each of {} steps",
        sequence.len()
    );
    let rename_at = sequence
        .iter()
        .position(|op| matches!(op, Op::Rename(..)))
        .unwrap();

    for (k, clean_op) in sequence.iter().enumerate() {
        let dir = TestDir::new(&format!("every-k-{k}"));
        let target = dir.join("t");
        fs::write(&target, &old).unwrap();
        let seam = Seam::failing(Fault {
            matches: any_sequence_op,
            nth: k,
            errno: 5, // EIO
        });
        let writer = AtomicFileWrite::new(policy()).with_ops(seam.clone());
        let err = writer.write(&target, new.clone()).await.unwrap_err();
        let log = seam.log();
        let failed_at = seam
            .failed_at()
            .unwrap_or_else(|| panic!("k={k}: fault not hit: {log:#?}"));
        let failed = &log[failed_at];
        // The same op as in the clean run, with the temp's name aside.
        assert_eq!(
            std::mem::discriminant(failed),
            std::mem::discriminant(clean_op),
            "k={k}: {log:#?}"
        );

        let fs_err = fs_error(&err);
        assert_eq!(
            fs_err.step(),
            expected_step(failed, dir.path()),
            "k={k}: {fs_err}"
        );
        assert_eq!(fs_err.io().raw_os_error(), Some(5), "k={k}");
        assert_eq!(err.attempts(), Some(1), "k={k}");
        assert!(
            leftover_temps(dir.path()).is_empty(),
            "k={k}: {:?}",
            names(dir.path())
        );
        assert_eq!(names(dir.path()), ["t"], "k={k}");

        // Nothing but the temp's cleanup after the failed op: never a rename after a
        // failed fsync, never a second fsync.
        let after: Vec<&Op> = log[failed_at + 1..].iter().collect();
        if k < rename_at {
            assert_eq!(
                fs::read(&target).unwrap(),
                old,
                "k={k}: the target keeps its old bytes"
            );
            match (k, &log[0]) {
                (0, _) => assert!(after.is_empty(), "k=0: {after:?}"),
                (_, Op::CreateNew(temp, _)) => {
                    assert_eq!(after, [&Op::Remove(temp.clone())], "k={k}");
                    assert_eq!(fs_err.path(), temp, "k={k}: the error names the temp");
                }
                _ => unreachable!(),
            }
        } else if k == rename_at {
            // The rename itself failed: it did not happen, the target is untouched.
            assert_eq!(
                fs::read(&target).unwrap(),
                old,
                "k={k}: the target keeps its old bytes"
            );
            let Op::CreateNew(temp, _) = &log[0] else {
                unreachable!()
            };
            assert_eq!(after, [&Op::Remove(temp.clone())], "k={k}");
            assert_eq!(fs_err.path(), target, "k={k}: the error names the target");
        } else {
            // After the rename (open_dir / fsync of the directory): the new content is
            // already in place — the rename is done and cannot be undone — but it may
            // not survive a crash, so the write reports SyncDir. No temp remains (it
            // was renamed away).
            assert_eq!(
                fs::read(&target).unwrap(),
                new,
                "k={k}: the new content is in place"
            );
            assert_eq!(fs_err.step(), Step::SyncDir, "k={k}");
            assert_eq!(fs_err.path(), dir.path(), "k={k}: the error names the directory");
            assert!(after.is_empty(), "k={k}: {after:?}");
        }
    }
}

// ---------------------------------------------------------------------------------
// 3–5. Failed commit, failed fsync, full disk
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn failed_commit_leaves_no_temp() {
    let dir = TestDir::new("failed-commit");
    let target = dir.join("t");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("inside.txt"), b"keep me").unwrap();

    let seam = Seam::recording();
    let writer = AtomicFileWrite::new(policy()).with_ops(seam.clone());
    let err = writer.write(&target, b"new".to_vec()).await.unwrap_err();
    let fs_err = fs_error(&err);
    assert_eq!(fs_err.step(), Step::Rename, "{fs_err}");
    assert_eq!(fs_err.path(), target);

    let log = seam.log();
    let Some(Op::CreateNew(temp, _)) = log.first() else {
        panic!("{log:#?}")
    };
    assert_eq!(
        log.last(),
        Some(&Op::Remove(temp.clone())),
        "temp removed on the error path"
    );
    assert!(
        !log.iter().any(|op| matches!(op, Op::OpenDir(_))),
        "no dir fsync after a failed rename"
    );

    assert!(leftover_temps(dir.path()).is_empty(), "{:?}", names(dir.path()));
    assert_eq!(names(dir.path()), ["t"]);
    assert!(fs::symlink_metadata(&target).unwrap().is_dir());
    assert_eq!(names(&target), ["inside.txt"]);
    assert_eq!(fs::read(target.join("inside.txt")).unwrap(), b"keep me");
}

#[tokio::test]
async fn fsync_error_not_retried_no_rename() {
    // EIO, and EAGAIN — a kind that would be transient at any other step: a failed
    // fsync is not retryable whatever its errno.
    for errno in [5, 11] {
        let dir = TestDir::new(&format!("fsync-{errno}"));
        let target = dir.join("t");
        fs::write(&target, b"old").unwrap();

        let seam = Seam::failing(Fault {
            matches: |op| matches!(op, Op::Sync(_)),
            nth: 0, // the first fsync, the temp's; fails once
            errno,
        });
        let mut retry = RetryConfig::default();
        retry.max_attempts = 3;
        retry.min_delay = Duration::from_millis(1);
        retry.max_delay = Duration::from_millis(1);
        retry.budget = None;
        let policy = Policy::builder("fs.write").retry(&retry).build().unwrap();
        let writer = AtomicFileWrite::new(policy).with_ops(seam.clone());

        let err = writer.write(&target, b"new".to_vec()).await.unwrap_err();
        let fs_err = fs_error(&err);
        assert_eq!(fs_err.step(), Step::SyncTemp, "errno {errno}: {fs_err}");
        assert_eq!(fs_err.io().raw_os_error(), Some(errno));
        assert_eq!(fs_err.classify().retry, Retryable::No, "errno {errno}");
        assert_eq!(err.attempts(), Some(1), "errno {errno}: exactly one attempt");

        let log = seam.log();
        let Some(Op::CreateNew(temp, _)) = log.first() else {
            panic!("{log:#?}")
        };
        let creates = log.iter().filter(|op| matches!(op, Op::CreateNew(..))).count();
        let syncs: Vec<&Op> = log.iter().filter(|op| matches!(op, Op::Sync(_))).collect();
        assert_eq!(creates, 1, "errno {errno}: one attempt: {log:#?}");
        assert_eq!(
            syncs,
            [&Op::Sync(temp.clone())],
            "errno {errno}: fsync once, on the temp"
        );
        assert!(
            !log.iter().any(|op| matches!(op, Op::Rename(..))),
            "errno {errno}: never renamed"
        );
        assert_eq!(
            log.last(),
            Some(&Op::Remove(temp.clone())),
            "errno {errno}: temp removed"
        );

        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["t"], "errno {errno}");
    }
}

#[tokio::test]
async fn enospc_preserves_old_and_cleans_temp() {
    let dir = TestDir::new("enospc");
    let target = dir.join("t");
    fs::write(&target, b"old content").unwrap();
    let seam = Seam::failing(Fault {
        matches: |op| matches!(op, Op::Write(..)),
        nth: 0,
        errno: 28, // ENOSPC
    });
    let writer = AtomicFileWrite::new(policy()).with_ops(seam.clone());
    let err = writer.write(&target, vec![b'x'; 10_000]).await.unwrap_err();
    let fs_err = fs_error(&err);
    assert!(fs_err.is_no_space(), "{fs_err}");
    assert_eq!(fs_err.step(), Step::Write);
    assert_eq!(fs::read(&target).unwrap(), b"old content");
    assert!(leftover_temps(dir.path()).is_empty(), "{:?}", names(dir.path()));
    assert_eq!(names(dir.path()), ["t"]);
    assert!(
        !seam
            .log()
            .iter()
            .any(|op| matches!(op, Op::Rename(..) | Op::Sync(_)))
    );
}

// ---------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------

const CHILD_READONLY_ENV: &str = "STAYFAST_AW_CHILD_READONLY_DIR";
const CHILD_UMASK_ENV: &str = "STAYFAST_AW_CHILD_UMASK_DIR";

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Runs `program args… <exe> --exact <test> --nocapture --test-threads=1` with `env`,
/// and returns the `CHILD_RESULT:` line's `key=value` pairs.
fn run_child(prefix: &[&str], exe: &Path, test: &str, env: (&str, &Path)) -> HashMap<String, String> {
    let (program, pre_args) = prefix.split_first().map_or_else(
        || (exe.as_os_str().to_owned(), Vec::new()),
        |(p, rest)| {
            let mut a: Vec<std::ffi::OsString> = rest.iter().map(Into::into).collect();
            a.push(exe.as_os_str().to_owned());
            ((*p).into(), a)
        },
    );
    let output = Command::new(&program)
        .args(pre_args)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child {test} failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD_RESULT:").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("child {test} printed no CHILD_RESULT line:\n{stdout}\n{stderr}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// This test binary, as a path uid 65534 can read and execute: the original when every
/// ancestor allows it, else a 0755 copy in `scratch` (itself 0755).
fn exe_for_nobody(scratch: &TestDir) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let ok = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/sh",
            "-c",
        ])
        .arg(r#"test -r "$1" && test -x "$1""#)
        .arg("sh")
        .arg(&exe)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        println!(
            "readonly_dir_typed_error: {} is readable and executable by uid 65534",
            exe.display()
        );
        return exe;
    }
    let copy = scratch.join("atomic_write-test-bin");
    fs::copy(&exe, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    println!(
        "readonly_dir_typed_error: {} not accessible to uid 65534; using a copy at {}",
        exe.display(),
        copy.display()
    );
    copy
}

// ---------------------------------------------------------------------------------
// 6. Read-only directory
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn readonly_dir_typed_error() {
    // (a) Injected through the seam: EACCES and EROFS at the temp's creation.
    for errno in [13, 30] {
        let dir = TestDir::new(&format!("ro-seam-{errno}"));
        let target = dir.join("t");
        fs::write(&target, b"old").unwrap();
        let seam = Seam::failing(Fault {
            matches: |op| matches!(op, Op::CreateNew(..)),
            nth: 0,
            errno,
        });
        let writer = AtomicFileWrite::new(policy()).with_ops(seam.clone());
        let err = writer.write(&target, b"new".to_vec()).await.unwrap_err();
        let fs_err = fs_error(&err);
        assert!(fs_err.is_read_only(), "errno {errno}: {fs_err}");
        assert_eq!(fs_err.step(), Step::CreateTemp, "errno {errno}");
        assert_eq!(fs_err.io().raw_os_error(), Some(errno));
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["t"]);
    }

    // (b) For real, in a child process that cannot write to the directory.
    let scratch = TestDir::new("ro-real");
    let ro = scratch.join("ro");
    fs::create_dir(&ro).unwrap();
    fs::write(ro.join("existing.json"), b"old").unwrap();
    let result = if is_root() {
        fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(ro.join("existing.json"), fs::Permissions::from_mode(0o644)).unwrap();
        let exe = exe_for_nobody(&scratch);
        run_child(
            &[
                "/usr/bin/setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
            &exe,
            "child_readonly_write",
            (CHILD_READONLY_ENV, &ro),
        )
    } else {
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
        let exe = std::env::current_exe().unwrap();
        let r = run_child(&[], &exe, "child_readonly_write", (CHILD_READONLY_ENV, &ro));
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o700)).unwrap();
        r
    };
    println!("readonly_dir_typed_error: child reported {result:?}");
    for (key, want) in [
        ("read_only", "true"),
        ("step", "CreateTemp"),
        ("new_read_only", "true"),
        ("new_step", "CreateTemp"),
    ] {
        assert_eq!(
            result.get(key).map(String::as_str),
            Some(want),
            "{key}: {result:?}"
        );
    }
    assert_eq!(fs::read(ro.join("existing.json")).unwrap(), b"old");
    assert_eq!(
        names(&ro),
        ["existing.json"],
        "nothing created in the read-only directory"
    );
}

/// Child half of `readonly_dir_typed_error`: does nothing unless its env var is set.
#[test]
fn child_readonly_write() {
    let Some(dir) = std::env::var_os(CHILD_READONLY_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = child_runtime();
    let writer = AtomicFileWrite::new(policy());
    let describe = |r: Result<(), Error<FsError>>| match r {
        Ok(()) => ("false".to_owned(), "none".to_owned()),
        Err(e) => {
            let fs_err = fs_error(&e);
            (fs_err.is_read_only().to_string(), format!("{:?}", fs_err.step()))
        }
    };
    let (ro, step) = describe(rt.block_on(writer.write(dir.join("existing.json"), b"new".to_vec())));
    let (new_ro, new_step) = describe(rt.block_on(writer.write(dir.join("new.json"), b"new".to_vec())));
    println!("CHILD_RESULT: read_only={ro} step={step} new_read_only={new_ro} new_step={new_step}");
}

// ---------------------------------------------------------------------------------
// 7. Name lengths
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn name_255_ok_256_enametoolong() {
    let dir = TestDir::new("names");
    let writer = AtomicFileWrite::new(policy());

    let ok = dir.join("n".repeat(255));
    writer.write(&ok, b"fits".to_vec()).await.unwrap();
    assert_eq!(fs::read(&ok).unwrap(), b"fits");
    assert!(leftover_temps(dir.path()).is_empty(), "{:?}", names(dir.path()));

    let long = dir.join("n".repeat(256));
    let err = writer.write(&long, b"too long".to_vec()).await.unwrap_err();
    let fs_err = fs_error(&err);
    assert!(fs_err.is_name_too_long(), "{fs_err}");
    println!(
        "name_255_ok_256_enametoolong: 256 bytes fails at {:?}",
        fs_err.step()
    );
    assert!(leftover_temps(dir.path()).is_empty(), "{:?}", names(dir.path()));
    assert_eq!(names(dir.path()), ["n".repeat(255)]);
}

// ---------------------------------------------------------------------------------
// 8. Concurrent writers to one path
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_path() {
    const TASKS: usize = 64;
    const WRITES: usize = 100;
    let dir = TestDir::new("concurrent");
    let target = dir.join("state.json");
    let writer = AtomicFileWrite::new(policy());
    writer.write(&target, version(9999, 0)).await.unwrap();

    // A reader alongside: every read sees one complete version, never a mix.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, target) = (Arc::clone(&stop), target.clone());
        std::thread::spawn(move || {
            let mut reads = 0_usize;
            while !stop.load(Ordering::Relaxed) {
                let bytes = fs::read(&target).unwrap();
                if let Err(e) = check_version(&bytes) {
                    panic!("a reader saw a torn file: {e}");
                }
                reads += 1;
            }
            reads
        })
    };

    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|task| {
            let (writer, target) = (writer.clone(), target.clone());
            tokio::spawn(async move {
                for i in 0..WRITES {
                    writer.write(&target, version(task, i)).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();

    let (task, i) = check_version(&fs::read(&target).unwrap()).unwrap();
    assert!(task < TASKS && i < WRITES, "{task}:{i}");
    assert_eq!(names(dir.path()), ["state.json"], "no temps remain");
    println!(
        "concurrent_same_path: {} writes in {elapsed:?} ({:.1} µs/write), final {task}:{i}, {reads} concurrent reads all complete",
        TASKS * WRITES,
        elapsed.as_secs_f64() * 1e6 / (TASKS * WRITES) as f64
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

// ---------------------------------------------------------------------------------
// 10. Dropped writes
// ---------------------------------------------------------------------------------

/// Counts replaces started (the `lstat` of the target: the inspect step, right after
/// the path lock) and finished (the directory's fsync returned).
#[derive(Clone, Debug)]
struct Counting {
    dir: PathBuf,
    target: PathBuf,
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl FileOps for Counting {
    fn symlink_metadata(&self, path: &Path) -> io::Result<fs::Metadata> {
        if path == self.target {
            self.started.fetch_add(1, Ordering::SeqCst);
        }
        FileOps::symlink_metadata(&RealFs, path)
    }

    fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        let r = FileOps::sync(&RealFs, file, path);
        if path == self.dir {
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_write_no_temp() {
    const WRITES: usize = 200;
    let seed = seed();
    println!("drop_mid_write_no_temp: seed {seed} (set STAYFAST_SEED to replay)");
    let mut rng = XorShift::new(seed);
    let dir = TestDir::new("drop");
    let target = dir.join("state.json");
    let counting = Counting {
        dir: dir.path().to_path_buf(),
        target: target.clone(),
        started: Arc::default(),
        finished: Arc::default(),
    };
    let writer = AtomicFileWrite::new(policy()).with_ops(counting.clone());

    let start = Instant::now();
    let mut timed_out = 0;
    let mut n_expired = 0;
    for i in 0..WRITES {
        // Half get a caller deadline already passed: the write is polled once (its
        // blocking task starts) and dropped at once — `tokio::time::timeout(ZERO)`
        // would only fire at the timer's next 1 ms tick, after most writes finished.
        // The other half get `tokio::time::timeout` of 0–2 ms (weighted towards 0).
        // Sizes 4 KiB–1 MiB, so a write takes long enough to be cut at any point.
        let expired = rng.next_u64() & 1 == 0;
        n_expired += usize::from(expired);
        let limit = Duration::from_micros((rng.next_u64() % 1415).pow(2) / 1000);
        let size = 4096 + (rng.next_u64() % (1 << 20)) as usize;
        let write = writer.write(&target, sized_version(1, i, size));
        let dropped = if expired {
            // A fresh coop budget, so `select!` polls the write at once rather than
            // yielding first (which would let the write finish).
            tokio::task::yield_now().await;
            let mut write = std::pin::pin!(write);
            tokio::select! {
                biased;
                r = &mut write => { r.unwrap(); false }
                () = std::future::ready(()) => true,
            }
        } else {
            tokio::time::timeout(limit, write).await.is_err()
        };
        if dropped {
            timed_out += 1;
        }
    }
    // Quiesce: one last write that completes, then wait for every abandoned blocking
    // task to end and the directory to hold only the target.
    writer.write(&target, version(2, 0)).await.unwrap();
    let settled = || {
        counting.started.load(Ordering::SeqCst) == counting.finished.load(Ordering::SeqCst)
            && names(dir.path()) == ["state.json"]
    };
    // Settled twice, 20 ms apart, within 5 s in all.
    let quiet_start = Instant::now();
    let quiet = wait_until(Duration::from_secs(5), settled) && {
        std::thread::sleep(Duration::from_millis(20));
        let left = Duration::from_secs(5).saturating_sub(quiet_start.elapsed());
        wait_until(left, settled)
    };
    assert!(
        quiet,
        "not quiescent after 5 s: started {} finished {} names {:?}",
        counting.started.load(Ordering::SeqCst),
        counting.finished.load(Ordering::SeqCst),
        names(dir.path())
    );
    let (task, i) = check_version(&fs::read(&target).unwrap()).unwrap();
    println!(
        "drop_mid_write_no_temp: {WRITES} writes, {timed_out} dropped before completing ({n_expired} given an expired deadline), {} reached the file system, final {task}:{i}, {:?}",
        counting.started.load(Ordering::SeqCst),
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------
// 11. A timed-out write never lands after a newer one
// ---------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct GateFlags {
    /// A's first `write` reached the gate; its temp.
    a_temp: Option<PathBuf>,
    released: Option<&'static str>,
    a_renamed: bool,
}

#[derive(Debug, Default)]
struct GateState {
    flags: Mutex<GateFlags>,
    cv: Condvar,
}

/// Blocks the write of content A (bytes starting `A`) until write B is seen waiting
/// for A's lock (`will_wait`, the correct implementation) or B's rename happened (what
/// an implementation without the lock would do); a 10 s fallback avoids a hang.
#[derive(Clone, Debug, Default)]
struct Gate(Arc<GateState>);

impl Gate {
    fn release(&self, flags: &mut GateFlags, why: &'static str) {
        if flags.a_temp.is_some() && flags.released.is_none() {
            flags.released = Some(why);
            self.0.cv.notify_all();
        }
    }

    fn flags(&self) -> std::sync::MutexGuard<'_, GateFlags> {
        self.0.flags.lock().unwrap()
    }
}

impl FileOps for Gate {
    fn write(&self, file: &File, path: &Path, buf: &[u8]) -> io::Result<usize> {
        if buf.first() == Some(&b'A') {
            let mut flags = self.flags();
            if flags.a_temp.is_none() {
                flags.a_temp = Some(path.to_path_buf());
                self.0.cv.notify_all();
                let (mut flags, wait) = self
                    .0
                    .cv
                    .wait_timeout_while(flags, Duration::from_secs(10), |f| f.released.is_none())
                    .unwrap();
                if wait.timed_out() {
                    flags.released = Some("fallback timeout");
                }
            }
        }
        FileOps::write(&RealFs, file, path, buf)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let r = FileOps::rename(&RealFs, from, to);
        let mut flags = self.flags();
        if flags.a_temp.as_deref() == Some(from) {
            flags.a_renamed = true;
        } else {
            self.release(&mut flags, "B renamed first (no lock!)");
        }
        r
    }

    fn will_wait(&self, _path: &Path) {
        let mut flags = self.flags();
        self.release(&mut flags, "B waits for A's lock");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_no_stale_overwrite() {
    let dir = TestDir::new("ab");
    let target = dir.join("state.json");
    fs::write(&target, b"0 original").unwrap();
    let gate = Gate::default();
    let timed = Policy::builder("fs.write")
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let writer_a = AtomicFileWrite::new(timed).with_ops(gate.clone());
    let writer_b = AtomicFileWrite::new(policy()).with_ops(gate.clone());
    let (a, b) = (vec![b'A'; 4096], vec![b'B'; 4096]);

    let start = Instant::now();
    let err = writer_a.write(&target, a).await.unwrap_err();
    assert!(
        err.is_outcome_unknown(),
        "a timed-out write is OutcomeUnknown, got {err:?}"
    );
    // A's blocking task is parked in the gate, holding the path's lock.
    assert!(
        wait_until(Duration::from_secs(5), || gate.flags().a_temp.is_some()),
        "A never reached its write"
    );
    assert!(gate.flags().released.is_none());

    let b_task = {
        let (writer_b, target, b) = (writer_b.clone(), target.clone(), b.clone());
        tokio::spawn(async move { writer_b.write(&target, b).await })
    };
    tokio::time::timeout(Duration::from_secs(15), b_task)
        .await
        .expect("B finished")
        .unwrap()
        .unwrap();
    // A's blocking task ends too (with the lock, before B even started).
    assert!(
        wait_until(Duration::from_secs(5), || gate.flags().a_renamed),
        "A's blocking task never finished"
    );
    let released = gate.flags().released;
    println!(
        "timeout_no_stale_overwrite: gate released by {released:?} after {:?}",
        start.elapsed()
    );

    assert_eq!(
        fs::read(&target).unwrap(),
        b,
        "the final content must be B, the newer write (released by {released:?})"
    );
    assert_eq!(names(dir.path()), ["state.json"], "no temp remains");
}

// ---------------------------------------------------------------------------------
// 12. Modes under umask 000
// ---------------------------------------------------------------------------------

#[test]
fn file_modes_under_umask_000() {
    let dir = TestDir::new("umask");
    let exe = std::env::current_exe().unwrap();
    let result = run_child(
        &["sh", "-c", r#"umask 000; exec "$0" "$@""#],
        &exe,
        "child_umask_modes",
        (CHILD_UMASK_ENV, dir.path()),
    );
    println!("file_modes_under_umask_000: child reported {result:?}");
    let get = |k: &str| result.get(k).map(String::as_str);
    assert_eq!(get("probe"), Some("666"), "the child really ran under umask 000");
    assert_eq!(get("new"), Some("600"), "a new file is 0600 whatever the umask");
    assert_eq!(get("existing"), Some("644"), "a replaced file keeps its mode");
    assert_eq!(mode_of(&dir.join("new.json")), 0o600);
    assert_eq!(mode_of(&dir.join("existing.json")), 0o644);
    assert_eq!(fs::read(dir.join("existing.json")).unwrap(), b"new");
    assert!(leftover_temps(dir.path()).is_empty());
}

/// Child half of `file_modes_under_umask_000`: does nothing unless its env var is set.
#[test]
fn child_umask_modes() {
    let Some(dir) = std::env::var_os(CHILD_UMASK_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = child_runtime();
    let writer = AtomicFileWrite::new(policy());

    let probe = dir.join("probe");
    fs::write(&probe, b"").unwrap();
    let probe_mode = mode_of(&probe);
    fs::remove_file(&probe).unwrap();

    let new = dir.join("new.json");
    rt.block_on(writer.write(&new, b"new".to_vec())).unwrap();

    let existing = dir.join("existing.json");
    fs::write(&existing, b"old").unwrap();
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o644)).unwrap();
    rt.block_on(writer.write(&existing, b"new".to_vec())).unwrap();

    println!(
        "CHILD_RESULT: probe={:o} new={:o} existing={:o}",
        probe_mode,
        mode_of(&new),
        mode_of(&existing)
    );
}

// ---------------------------------------------------------------------------------
// 13. Symlink at the target
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn symlink_at_target_replaced_not_followed() {
    let dir = TestDir::new("symlink");
    let outside = TestDir::new("symlink-outside");
    let victim = outside.join("victim.txt");
    fs::write(&victim, b"outside, untouched").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let target = dir.join("state.json");
    std::os::unix::fs::symlink(&victim, &target).unwrap();

    let writer = AtomicFileWrite::new(policy());
    writer.write(&target, b"new".to_vec()).await.unwrap();

    let meta = fs::symlink_metadata(&target).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the symlink was replaced by a regular file"
    );
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "a new file's mode, not the victim's"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"outside, untouched");
    assert_eq!(mode_of(&victim), 0o644);
    assert_eq!(names(dir.path()), ["state.json"]);
    assert_eq!(names(outside.path()), ["victim.txt"]);
}

// ---------------------------------------------------------------------------------
// 14. Sweep
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn sweep_removes_only_own_stale_temps() {
    let dir = TestDir::new("sweep");
    let old = ".sf-0123456789abcdef.tmp";
    let young = ".sf-fedcba9876543210.tmp";
    let others = [
        "data.json",
        ".sf-123.tmp",
        "x.sf-0123456789abcdef.tmp",
        ".sf-0123456789abcdeg.tmp",
    ];
    for name in [old, young].iter().chain(&others) {
        fs::write(dir.join(name), b"x").unwrap();
    }
    // A directory with the crate's name shape is not a temp file.
    fs::create_dir(dir.join(".sf-aaaaaaaaaaaaaaaa.tmp")).unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    File::options()
        .write(true)
        .open(dir.join(old))
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let before = names(dir.path());

    let writer = AtomicFileWrite::new(policy());
    let hour = Duration::from_secs(3600);
    assert_eq!(writer.sweep_stale_temps(dir.path(), 10 * hour).await.unwrap(), 0);
    assert_eq!(names(dir.path()), before, "nothing older than 10 h");

    assert_eq!(writer.sweep_stale_temps(dir.path(), hour).await.unwrap(), 1);
    assert!(!dir.join(old).exists(), "the 2-hour-old temp is swept");
    assert!(
        dir.join(young).exists(),
        "a young temp is kept (a write may own it)"
    );

    assert_eq!(
        writer
            .sweep_stale_temps(dir.path(), Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    let mut expected: Vec<String> = others.iter().map(|s| (*s).to_owned()).collect();
    expected.push(".sf-aaaaaaaaaaaaaaaa.tmp".to_owned());
    expected.sort();
    assert_eq!(
        names(dir.path()),
        expected,
        "only the crate's own temps were removed"
    );
    assert_eq!(fs::read(dir.join("data.json")).unwrap(), b"x");

    assert_eq!(
        writer
            .sweep_stale_temps(dir.path(), Duration::ZERO)
            .await
            .unwrap(),
        0
    );
}

/// Holds the first write's blocking task *before* it takes the file lock — as a
/// saturated blocking pool or a descheduled thread would — until a later write either
/// waits for its turn (correct) or renames first (the lost update).
#[derive(Clone, Debug, Default)]
struct HoldFirst(Arc<(Mutex<(bool, bool)>, Condvar)>); // (first parked, released)

impl HoldFirst {
    fn release(&self) {
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        if g.0 {
            g.1 = true;
            cv.notify_all();
        }
    }
}

impl FileOps for HoldFirst {
    fn metadata(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        let first = {
            let (m, _) = &*self.0;
            let mut g = m.lock().unwrap();
            !std::mem::replace(&mut g.0, true)
        };
        if first {
            let (m, cv) = &*self.0;
            let g = m.lock().unwrap();
            let _ = cv
                .wait_timeout_while(g, Duration::from_secs(5), |g| !g.1)
                .unwrap();
        }
        FileOps::metadata(&RealFs, path)
    }

    fn will_wait(&self, _path: &Path) {
        self.release();
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let result = FileOps::rename(&RealFs, from, to);
        self.release();
        result
    }
}

/// A write whose caller timed out while its blocking task had not yet reached the file
/// lock still lands before any write issued after it: turns follow issue order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_timed_out_write_never_lands_after_a_newer_one() {
    let dir = TestDir::new("queued-stale");
    let target = dir.path().join("state.json");
    let seam = HoldFirst::default();
    let timed = Policy::builder("fs.write")
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let a = AtomicFileWrite::new(timed).with_ops(seam.clone());
    let b = AtomicFileWrite::new(Policy::builder("fs.write").build().unwrap()).with_ops(seam.clone());
    let started = std::time::Instant::now();
    assert!(
        a.write(&target, b"A".to_vec())
            .await
            .unwrap_err()
            .is_outcome_unknown()
    );
    b.write(&target, b"B".to_vec()).await.unwrap();
    assert_eq!(
        fs::read(&target).unwrap(),
        b"B",
        "the stale A landed after the newer B"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "released by the turn, not the seam's timeout"
    );
}
