//! [`DurableAppend`]: append records to a log file, one `write()` each, durably.

use std::{
    collections::HashMap,
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    FileOps, FsError, RealFs, Step, flock,
    io::{DEFAULT_FILE_MODE, Stage, lock_path, run_blocking, run_staged, split, sync_dir},
    locks,
    pending::PendingSyncs,
    since::{Decided, Known, LogMark, Since, read_since},
    tail,
};
use crate::{Error, ErrorChain, Policy};

/// When an appended record is flushed to disk, as Redis's `appendfsync`.
///
/// # Examples
///
/// ```
/// use stayfast_core::fs::FsyncPolicy;
/// let p: FsyncPolicy = serde_json::from_str(r#"{"every_ms": 100}"#).unwrap();
/// assert_eq!(p, FsyncPolicy::EveryMs(100));
/// assert_eq!(FsyncPolicy::default(), FsyncPolicy::Always);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// fsync after every record: an acknowledged record survives a power loss.
    #[default]
    Always,
    /// fsync when at least this many milliseconds passed since the file's last fsync;
    /// a record appended in between is made durable by a timer within this interval
    /// (plus the fsync's own time) even when no further append comes, or earlier by
    /// [`DurableAppend::sync`] / [`DurableAppend::sync_all`].
    EveryMs(u64),
    /// Never fsync by itself: records survive a process crash, not a power loss, until
    /// [`DurableAppend::sync`] / [`DurableAppend::sync_all`].
    Never,
}

/// How durable an appended record is when `append` returns.
///
/// ```
/// assert_ne!(stayfast_core::fs::Durability::Synced, stayfast_core::fs::Durability::Written);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// On disk: fsynced.
    Synced,
    /// In the operating system's cache: survives a process crash, not a power loss.
    Written,
}

/// Where a record was appended, and how durably.
///
/// ```
/// # use stayfast_core::fs::{Appended, Durability};
/// # fn show(a: Appended) { let _ = (a.offset, a.len, a.durability == Durability::Synced); }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Bytes written, the newline included.
    pub len: u64,
    /// Durability reached.
    pub durability: Durability,
    /// Bytes of a torn tail (the fragment of a record a crash left, with no newline)
    /// found at the end of the file and cut off before this record was written, after
    /// a copy was kept in `<name>.torn-<offset>` (logged at WARN); 0 when the file was
    /// whole. Without the cut the record would have been glued to the fragment, and
    /// every record from there on unreadable.
    pub torn_cut: u64,
}

/// Appends newline-terminated records to log files (JSON Lines and the like).
///
/// Each record is written with **one** `write()` on a file opened `O_APPEND`, under a
/// process-wide per-file lock — one writer per file, so a crash can only tear the
/// *last* record. Before each write the file's last byte is checked: a file that does
/// not end in a newline ends in a torn record, which is copied aside and cut off first
/// (reported in [`Appended::torn_cut`]), so an append never glues a record onto a
/// fragment. A failed or short write is rolled back with `ftruncate` to the length
/// before it, so a failed append leaves nothing behind; a rollback that fails too is
/// reported ([`Step::Rollback`]) and its leftover is cut by the next append. A new file is created 0600 and its directory fsynced
/// once. The record is then flushed per the [`FsyncPolicy`] (default `Always`), and the
/// result says which [`Durability`] was reached. A record may not contain a newline.
///
/// Runs through a [`Policy`] (deadline, breaker, metrics); build it *not* idempotent —
/// a timed-out append is `OutcomeUnknown`. On a multi-thread runtime an append to a
/// file with no other operation in progress runs on a few threads the appenders share,
/// as two jobs: its write, then its fsync, queued behind the writes already waiting —
/// appends to many files then share threads and wake-ups instead of taking one
/// blocking-pool thread each, and their fsyncs find the metadata the earlier ones
/// flushed. The file's locks are held from the write to the end of the fsync, and the
/// append is acknowledged only after its own file's fsync returned. A thread stuck in a
/// hung file gets a new one in its place: a hung file delays only its own appends.
/// Otherwise (another operation on the file in progress, a current-thread runtime) an
/// append is one blocking-pool task.
///
/// After a complete append the file's handle is kept open for its next append (up to
/// 256 files per process; past that a file is opened per append), which then checks,
/// under the locks, that it is still the file at the path — one replaced (a repair) or
/// removed since is opened afresh. A failed append closes it; [`remove`](Self::remove)
/// and a repair close it too. A kept handle also reports a writeback error of the file
/// at its next fsync, as any handle open before the error does.
///
/// # Examples
///
/// ```
/// use stayfast_core::{Policy, fs::{DurableAppend, Durability}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let dir = std::env::temp_dir().join(format!("stayfast-append-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap());
/// let first = log.append(dir.join("t.jsonl"), br#"{"seq":1}"#.to_vec()).await.unwrap();
/// assert_eq!((first.offset, first.durability), (0, Durability::Synced));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # }
/// ```
///
/// # Cancellation
///
/// Dropping the future does not stop the blocking task: the record is then appended
/// (or rolled back) all the same, before any later append to that file.
#[derive(Clone)]
pub struct DurableAppend {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) ops: Arc<dyn FileOps>,
    pub(super) policy: Policy,
    fsync: FsyncPolicy,
    new_file_mode: u32,
    /// When each file was last fsynced (`EveryMs` only); bounded, see `due_for_sync`.
    last_sync: Mutex<HashMap<PathBuf, Instant>>,
    /// Files with appended records not yet fsynced (`EveryMs` and `Never`).
    pending: PendingSyncs,
}

/// `last_sync` is pruned of entries older than the interval once it holds this many
/// files: a pruned file is simply due for an fsync.
const LAST_SYNC_CAP: usize = 1024;

impl DurableAppend {
    /// Appends through `policy` on the real file system, fsyncing every record.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::DurableAppend};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-append-new-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap());
    /// log.append(dir.join("t.log"), b"one".to_vec()).await.unwrap();
    /// let second = log.append(dir.join("t.log"), b"two".to_vec()).await.unwrap();
    /// assert_eq!((second.offset, second.len), (4, 4)); // right after "one\n"
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub fn new(policy: Policy) -> Self {
        Self {
            inner: Arc::new(Inner {
                ops: Arc::new(RealFs),
                policy,
                fsync: FsyncPolicy::Always,
                new_file_mode: DEFAULT_FILE_MODE,
                last_sync: Mutex::new(HashMap::new()),
                pending: PendingSyncs::default(),
            }),
        }
    }

    /// The same appender with another fsync policy.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::{DurableAppend, FsyncPolicy}};
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap()).fsync(FsyncPolicy::EveryMs(100));
    /// # let _ = log;
    /// ```
    #[must_use]
    pub fn fsync(self, fsync: FsyncPolicy) -> Self {
        self.rebuild(|i| i.fsync = fsync)
    }

    /// The same appender over another [`FileOps`].
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::{DurableAppend, RealFs}};
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap()).with_ops(RealFs);
    /// # let _ = log;
    /// ```
    #[must_use]
    pub fn with_ops(self, ops: impl FileOps) -> Self {
        self.rebuild(|i| i.ops = Arc::new(ops))
    }

    /// The mode of files the appender creates.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::DurableAppend};
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap()).new_file_mode(0o640);
    /// # let _ = log;
    /// ```
    #[must_use]
    pub fn new_file_mode(self, mode: u32) -> Self {
        self.rebuild(|i| i.new_file_mode = mode & 0o7777)
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            ops: Arc::clone(&self.inner.ops),
            policy: self.inner.policy.clone(),
            fsync: self.inner.fsync,
            new_file_mode: self.inner.new_file_mode,
            last_sync: Mutex::new(HashMap::new()),
            pending: PendingSyncs::default(),
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Appends `record` and a newline to `path`, creating the file if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Inner`] with an [`FsError`] naming the path and step (the file is then
    /// as it was before, except after a failed fsync, when the record may be present
    /// but not durable); an `InvalidInput` error before any I/O when `record` contains a
    /// newline; [`Error::OutcomeUnknown`] when the policy's deadline passed; the
    /// policy's other errors.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::DurableAppend};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-append-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap());
    /// let path = dir.join("t.log");
    /// log.append(&path, b"a".to_vec()).await.unwrap();
    /// assert!(log.append(&path, b"b\nc".to_vec()).await.is_err()); // a record holds no newline
    /// assert_eq!(std::fs::read(&path).unwrap(), b"a\n"); // nothing of it was written
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn append(
        &self,
        path: impl Into<PathBuf>,
        record: impl Into<Vec<u8>>,
    ) -> Result<Appended, Error<FsError>> {
        let path = path.into();
        let mut line = record.into();
        if line.contains(&b'\n') {
            let source = FsError::new(
                &path,
                Step::Write,
                io::Error::new(io::ErrorKind::InvalidInput, "a record may not contain a newline"),
            );
            return Err(Error::Inner {
                operation: self.inner.policy.operation().clone(),
                source,
                attempts: 0,
            });
        }
        line.push(b'\n');
        let line: Arc<[u8]> = line.into();
        let inner = Arc::clone(&self.inner);
        let decided = self
            .inner
            .policy
            .call_with(|attempt| {
                let (inner, path, line) = (Arc::clone(&inner), path.clone(), Arc::clone(&line));
                let ops = Arc::clone(&inner.ops);
                run_staged(ops, path, attempt.remaining(), move |ops, path, deadline| {
                    let fixed = |_: Since<'_>| (Some(Ok(line.to_vec())), ());
                    Ok(inner
                        .write_blocking(ops, path, deadline, &Known::Ignored, &fixed)?
                        .then_sync(&inner))
                })
            })
            .await?;
        let appended = decided.appended.ok_or_else(|| Error::Inner {
            operation: self.inner.policy.operation().clone(),
            source: FsError::new(&path, Step::Write, io::Error::other("the record was not written")),
            attempts: 1,
        })?;
        self.after_append(&path, &appended);
        Ok(appended)
    }

    /// Books a record left unsynced for the fsync timer.
    pub(super) fn after_append(&self, path: &Path, appended: &Appended) {
        if appended.durability == Durability::Written
            && self.inner.pending.add(path)
            && let FsyncPolicy::EveryMs(ms) = self.inner.fsync
        {
            tokio::spawn(flush_every(
                Arc::downgrade(&self.inner),
                Duration::from_millis(ms),
            ));
        }
    }

    /// Flushes `path` to disk now (for `EveryMs` and `Never`).
    ///
    /// # Errors
    ///
    /// An [`FsError`] at [`Step::Open`] or [`Step::SyncFile`], or the policy's errors.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::{Durability, DurableAppend, FsyncPolicy}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-append-sync-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap()).fsync(FsyncPolicy::Never);
    /// let path = dir.join("t.log");
    /// let appended = log.append(&path, b"batched".to_vec()).await.unwrap();
    /// assert_eq!(appended.durability, Durability::Written); // in the OS cache only
    /// log.sync(&path).await.unwrap(); // now on disk
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn sync(&self, path: impl Into<PathBuf>) -> Result<(), Error<FsError>> {
        let path = path.into();
        let inner = Arc::clone(&self.inner);
        self.inner
            .policy
            .call_with(|attempt| {
                let (inner, path) = (Arc::clone(&inner), path.clone());
                let ops = Arc::clone(&inner.ops);
                run_blocking(ops, path, attempt.remaining(), move |ops, path, deadline| {
                    let _serialised = lock_path(ops, path, deadline)?;
                    let file = ops
                        .open_read(path)
                        .map_err(|e| FsError::new(path, Step::Open, e))?;
                    ops.sync(&file, path)
                        .map_err(|e| FsError::new(path, Step::SyncFile, e))?;
                    inner.synced(path);
                    inner.pending.remove(path);
                    Ok(())
                })
            })
            .await
    }
    /// Fsyncs every file this appender wrote records to that are not yet durable
    /// (`EveryMs` and `Never`), concurrently; returns how many. A file removed since is
    /// skipped. Use it at shutdown: with `Never` nothing else makes records durable.
    ///
    /// # Errors
    ///
    /// The first [`FsError`] or policy error met; the other files are still synced,
    /// and the failed ones stay pending (a later call tries them again).
    ///
    /// # Cancellation
    ///
    /// Files whose sync started complete it on the blocking pool; the others stay
    /// pending only if their sync had not begun — a dropped call may leave a file
    /// unsynced and no longer pending, so give it a deadline, not a drop.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::{DurableAppend, FsyncPolicy}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-append-sync-all-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap()).fsync(FsyncPolicy::Never);
    /// log.append(dir.join("a.log"), b"1".to_vec()).await.unwrap();
    /// log.append(dir.join("b.log"), b"2".to_vec()).await.unwrap();
    /// assert_eq!(log.sync_all().await.unwrap(), 2); // both on disk now
    /// assert_eq!(log.sync_all().await.unwrap(), 0);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn sync_all(&self) -> Result<usize, Error<FsError>> {
        let paths = self.inner.pending.take();
        let count = paths.len();
        let results = futures_util::future::join_all(paths.into_iter().map(|path| async move {
            let result = self.sync(&path).await;
            (path, result)
        }))
        .await;
        let mut first = None;
        for (path, result) in results {
            match result {
                Ok(()) => {}
                Err(Error::Inner { source, .. }) if source.is_not_found() => {}
                Err(e) => {
                    self.inner.pending.put_back(path);
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(count), Err)
    }

    /// How many files hold appended records not yet fsynced.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::DurableAppend};
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap());
    /// assert_eq!(log.unsynced(), 0); // `Always` syncs every record
    /// ```
    pub fn unsynced(&self) -> usize {
        self.inner.pending.len()
    }

    /// Removes `path` and makes the removal durable (the directory is fsynced), in
    /// order with every other operation on `path` issued before it: an append still
    /// running after its caller timed out cannot recreate the file afterwards.
    /// Returns whether there was a file.
    ///
    /// # Errors
    ///
    /// An [`FsError`] at [`Step::Remove`] or [`Step::SyncDir`], or the policy's errors.
    ///
    /// # Cancellation
    ///
    /// The removal runs on the blocking pool and completes even if the future is
    /// dropped.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::DurableAppend};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-append-rm-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap());
    /// let path = dir.join("t.log");
    /// log.append(&path, b"a".to_vec()).await.unwrap();
    /// assert!(log.remove(&path).await.unwrap()); // removed
    /// assert!(!log.remove(&path).await.unwrap()); // nothing left to remove
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn remove(&self, path: impl Into<PathBuf>) -> Result<bool, Error<FsError>> {
        let path = path.into();
        let inner = Arc::clone(&self.inner);
        self.inner
            .policy
            .call_with(|attempt| {
                let (inner, path) = (Arc::clone(&inner), path.clone());
                let ops = Arc::clone(&inner.ops);
                run_blocking(ops, path, attempt.remaining(), move |ops, path, deadline| {
                    let (dir, name) = split(path)?;
                    let serialised = locks::lock_file(ops, dir, name, deadline)?;
                    // The removed file's kept append handle is closed with it.
                    drop(serialised.take_handle());
                    // Under the file's cross-process lock, so no append of another process
                    // is half done (it would go on into the removed file).
                    let open = || match ops.open_read(path) {
                        Ok(file) => Ok(Some(file)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(FsError::new(path, Step::Open, e)),
                    };
                    let Some(_locked) = flock::open_locked(ops, path, deadline, open)? else {
                        return Ok(false);
                    };
                    match ops.remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                        Err(e) => return Err(FsError::new(path, Step::Remove, e)),
                    }
                    sync_dir(ops, dir)?;
                    Ok(true)
                })
            })
            .await
    }
}

/// Where a blocking append stands after its write.
pub(super) enum Staged<T> {
    /// Finished: nothing written, or written and not to be fsynced now.
    Done(Decided<T>),
    /// Written; its fsync is still to run ([`Inner::sync_blocking`]).
    Sync(Unsynced<T>),
}

impl<T: Send + 'static> Staged<T> {
    /// As a [`Stage`]: the fsync, if any, as the second one.
    pub(super) fn then_sync(self, inner: &Arc<Inner>) -> Stage<Decided<T>> {
        match self {
            Staged::Done(decided) => Stage::Done(decided),
            Staged::Sync(unsynced) => {
                let inner = Arc::clone(inner);
                Stage::Then(Box::new(move |ops, path| {
                    inner.sync_blocking(ops, path, unsynced)
                }))
            }
        }
    }
}

/// An append written and not yet fsynced, holding the file's locks: the process-wide
/// one (`serialised`) and the cross-process one (handed on with `file`).
pub(super) struct Unsynced<T> {
    serialised: locks::FileGuard,
    file: Arc<std::fs::File>,
    meta: std::fs::Metadata,
    /// The file's length before the record (where a failed fsync cuts it back to).
    before: u64,
    /// The record's bytes, its newline included.
    written: u64,
    torn_cut: u64,
    value: T,
}

/// A decision as the blocking append takes it: the line to write (its newline
/// included; `Err` when the record held a newline of its own), and the caller's value.
pub(super) type Decide<'d, T> = dyn Fn(Since<'_>) -> (Option<Result<Vec<u8>, Vec<u8>>>, T) + 'd;

impl Inner {
    /// The append up to its fsync: decided and written under the file's locks, which
    /// an [`Unsynced`] result still holds for [`sync_blocking`](Self::sync_blocking).
    pub(super) fn write_blocking<T>(
        &self,
        ops: &dyn FileOps,
        path: &Path,
        deadline: Option<std::time::Instant>,
        known: &Known,
        decide: &Decide<'_, T>,
    ) -> Result<Staged<T>, FsError> {
        let (dir, name) = split(path)?;
        // NOTE: the process-wide lock first, then the cross-process one (see `flock`).
        let (serialised, cached) = locks::lock_file_cached(ops, dir, name, deadline)?;
        // The handle the file's last append kept: checked after the lock to be still the
        // file at the path (one `lstat`, compared with the device and inode kept with
        // it, which also gives its length now), so a file replaced or removed since is
        // opened again.
        let mut kept = serialised.take_handle();
        // A caller with a mark appended to the file before: whether this open creates it
        // is then told after the lock, from the mark, rather than by an `lstat` first.
        let marked = known.mark();
        let mut created = false;
        let mut opened = false;
        let open = || {
            if let Some(kept) = kept.take() {
                return Ok(Some(flock::Handle::kept(kept.file, kept.dev, kept.ino)));
            }
            opened = true;
            if marked.is_none() {
                created = match ops.symlink_metadata(path) {
                    Ok(_) => false,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                    Err(e) => return Err(FsError::new(path, Step::Inspect, e)),
                };
            }
            ops.open_append(path, self.new_file_mode)
                .map(|file| Some(flock::Handle::from(file)))
                .map_err(|e| FsError::new(path, Step::Open, e))
        };
        let locked = flock::open_locked(ops, path, deadline, open)?
            .ok_or_else(|| FsError::new(path, Step::Open, io::Error::other("the opened file vanished")))?;
        if opened && cached {
            // No kept handle was still the file at the path (or none was kept) under a
            // cached identity of its directory: the next append looks it up again (see
            // `locks::lock_file_cached`).
            locks::forget_dir(dir);
        }
        let file = &locked.file;
        if let Some(mark) = marked
            && !mark.is_file(&locked.meta)
        {
            // Not the marked file (removed and created again since, by this open or by
            // another process): an empty one may be this open's creation, so it is
            // treated as new — its exact mode set, its directory entry made durable;
            // both are harmless for a file another process created (with the same mode).
            created = locked.meta.len() == 0;
        }
        if created {
            ops.set_mode(file, path, self.new_file_mode)
                .map_err(|e| FsError::new(path, Step::SetMode, e))?;
            sync_dir(ops, dir)?;
        }
        // The `fstat` taken once the lock was held: the length now, as no writer of this
        // process or another can change it while both locks are held.
        let len = locked.meta.len();
        // Under the file's locks, so no append of ours or of another process is in
        // progress: bytes after the last newline are a record a crash tore. Writing after
        // them would glue this record to the fragment, and a reader would then refuse
        // every record after it. A file still exactly as the caller's mark left it ends
        // where a complete line ended (a mark is only ever taken there), so its last byte
        // is a newline without reading it: the file is only ever appended to or cut back
        // to a line's end under these locks, and a rewrite (a repair) is another file.
        let before = if known.unchanged(&locked.meta, len) {
            len
        } else {
            tail::complete_len(ops, file, path, len)?
        };
        if before < len {
            let torn = tail::cut(ops, path, dir, name, before)?;
            tracing::warn!(target: "stayfast::fs", path = %path.display(), offset = torn.offset,
                bytes = torn.len, backup = %torn.backup.display(),
                "cut a torn record off the end of a log before appending");
        }
        let mut buf = Vec::new();
        let since = read_since(ops, file, path, &locked.meta, known, before, &mut buf)?;
        let (line, value) = decide(since);
        let mark = |len| LogMark::of(&locked.meta, len);
        let line = match line {
            None => {
                serialised.keep_handle(Arc::clone(&locked.file), &locked.meta);
                return Ok(Staged::Done(Decided {
                    value,
                    appended: None,
                    mark: mark(before),
                }));
            }
            Some(Ok(line)) => line,
            Some(Err(_)) => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "a record may not contain a newline");
                return Err(FsError::new(path, Step::Write, e));
            }
        };
        // One write() per record: a record is never interleaved with another, and a
        // crash can only tear the last one.
        let outcome = match ops.write(file, path, &line) {
            Ok(n) if n == line.len() => Ok(()),
            Ok(n) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", line.len()),
            )),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            // Roll back whatever part of the record reached the file.
            rollback(ops, file, path, before, &e)?;
            return Err(FsError::new(path, Step::Write, e));
        }
        let written = line.len() as u64;
        if !self.due_for_sync(path) {
            // Only after a complete append: after a failure the handle is closed, and
            // the next append opens the file afresh.
            serialised.keep_handle(Arc::clone(&locked.file), &locked.meta);
            return Ok(Staged::Done(Decided {
                value,
                appended: Some(Appended {
                    offset: before,
                    len: written,
                    durability: Durability::Written,
                    torn_cut: len - before,
                }),
                mark: mark(before + written),
            }));
        }
        let (file, meta) = locked.hand_on();
        Ok(Staged::Sync(Unsynced {
            serialised,
            file,
            meta,
            before,
            written,
            torn_cut: len - before,
            value,
        }))
    }

    /// The fsync of an append [`write_blocking`](Self::write_blocking) wrote, under the
    /// locks it still holds; then they are released.
    pub(super) fn sync_blocking<T>(
        &self,
        ops: &dyn FileOps,
        path: &Path,
        unsynced: Unsynced<T>,
    ) -> Result<Decided<T>, FsError> {
        let Unsynced {
            serialised,
            file,
            meta,
            before,
            written,
            torn_cut,
            value,
        } = unsynced;
        // NOTE: declared after `serialised`, so dropped (released) before it, as in
        // `write_blocking`: the cross-process lock first, then the process-wide one.
        let locked = flock::Locked::resume(ops, path, file, meta);
        let file = &locked.file;
        if let Err(e) = ops.sync(file, path) {
            // Never retried (a retried fsync may falsely succeed); the record was not
            // acknowledged, so take it back out.
            rollback(ops, file, path, before, &e)?;
            return Err(FsError::new(path, Step::SyncFile, e));
        }
        self.synced(path);
        if self.fsync != FsyncPolicy::Always {
            // Under `Always` no record is ever left pending: skip the set's lock.
            self.pending.remove(path);
        }
        // Only after a complete append: after a failure the handle is closed, and the
        // next append opens the file afresh.
        serialised.keep_handle(Arc::clone(&locked.file), &locked.meta);
        Ok(Decided {
            value,
            appended: Some(Appended {
                offset: before,
                len: written,
                durability: Durability::Synced,
                torn_cut,
            }),
            mark: LogMark::of(&locked.meta, before + written),
        })
    }

    fn due_for_sync(&self, path: &Path) -> bool {
        match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::EveryMs(ms) => {
                let last = self
                    .last_sync
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(path)
                    .copied();
                last.is_none_or(|t| t.elapsed() >= Duration::from_millis(ms))
            }
        }
    }

    fn synced(&self, path: &Path) {
        let FsyncPolicy::EveryMs(ms) = self.fsync else {
            return;
        };
        let mut map = self.last_sync.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= LAST_SYNC_CAP {
            let interval = Duration::from_millis(ms);
            map.retain(|_, t| t.elapsed() < interval);
        }
        map.insert(path.to_path_buf(), Instant::now());
    }
}

/// The `EveryMs` timer: every `interval`, fsyncs the files appended to since the last
/// round, so a record is durable within its interval even when no append follows it.
/// Ends when nothing is pending (the next unsynced append starts a new one) or the
/// appender is gone.
async fn flush_every(inner: std::sync::Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        let Some(paths) = inner.pending.take_or_stop() else {
            return;
        };
        let log = DurableAppend { inner };
        for path in paths {
            match log.sync(&path).await {
                Ok(()) => {}
                Err(Error::Inner { source, .. }) if source.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(target: "stayfast::fs", path = %path.display(), error = %ErrorChain(&e),
                        "timed fsync failed; retrying next interval");
                    log.inner.pending.put_back(path);
                }
            }
        }
    }
}

/// Truncates `file` back to `len` after `failed`; when that fails too, the error says
/// both, at [`Step::Rollback`] (the file may then end in part of the record).
fn rollback(
    ops: &dyn FileOps,
    file: &std::fs::File,
    path: &Path,
    len: u64,
    failed: &io::Error,
) -> Result<(), FsError> {
    ops.set_len(file, path, len).map_err(|e| {
        let both = io::Error::new(
            e.kind(),
            format!("after a failed append ({failed}), truncating back to {len} bytes failed: {e}"),
        );
        FsError::new(path, Step::Rollback, both)
    })
}

impl fmt::Debug for DurableAppend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableAppend")
            .field("ops", &self.inner.ops)
            .field("policy", &self.inner.policy)
            .field("fsync", &self.inner.fsync)
            .field("new_file_mode", &format_args!("{:o}", self.inner.new_file_mode))
            .finish_non_exhaustive()
    }
}
