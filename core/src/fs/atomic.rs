//! [`AtomicFileWrite`]: replace a file's content atomically and durably.

use std::{
    fmt,
    fs::File,
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    FileOps, FsError, RealFs, Step,
    io::{DEFAULT_FILE_MODE, run_blocking, split, sync_dir, write_all},
    locks, temp,
};
use crate::{Error, Policy};

/// Replaces a file's whole content so that a reader — or the system after a crash —
/// sees either the complete old content or the complete new content, never a mix.
///
/// Each write runs in **one** blocking task: create a temp file in the target's
/// directory (`O_EXCL`, a fixed-length crate-owned name), set its mode, write
/// everything, `fsync` it, `rename` it over the target, `fsync` the directory. Any
/// error removes the temp file before returning, inside that task; a failed fsync is
/// never retried and never followed by the rename. Writes to one path run in the order
/// they were issued, process-wide: each takes its turn when issued and waits for it
/// *inside* the blocking task, so a write whose caller timed out still finishes before
/// any write issued after it — it can never land after a newer write. (Order follows
/// the path as spelt; two spellings of one file are still never written at once.) An existing file's mode is kept; a new file gets [`DEFAULT_FILE_MODE`]
/// (0600). A symlink at the target is replaced, never followed.
///
/// The call runs through a [`Policy`] (deadline, breaker, metrics). Build that policy
/// *not* idempotent: a write that timed out is reported as
/// [`Error::OutcomeUnknown`] — its blocking task may still complete it.
///
/// # Guarantee
///
/// Atomic against process crashes everywhere; durable once `Ok` is returned on Linux
/// and macOS file systems that honour `fsync` (on macOS, `fsync` does not flush the
/// drive's cache: power loss can still lose the last writes). Windows offers no
/// directory fsync: there the write is atomic but its durability is weaker.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::{Policy, fs::AtomicFileWrite};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let dir = std::env::temp_dir().join(format!("stayfast-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let policy = Policy::builder("fs.write").timeout(Duration::from_secs(5)).build().unwrap();
/// let writer = AtomicFileWrite::new(policy);
/// writer.write(dir.join("state.json"), b"{\"v\":1}".to_vec()).await.unwrap();
/// assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), b"{\"v\":1}");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # }
/// ```
///
/// # Cancellation
///
/// Dropping the future (or a timeout) does not stop the blocking task: the write still
/// completes or fails cleanly, never leaving a temp file behind, and a later write to
/// the same path waits for it.
#[derive(Clone)]
pub struct AtomicFileWrite {
    inner: Arc<Inner>,
}

struct Inner {
    ops: Arc<dyn FileOps>,
    policy: Policy,
    new_file_mode: u32,
}

impl AtomicFileWrite {
    /// A writer running every write through `policy`, on the real file system.
    ///
    /// ```
    /// # use std::os::unix::fs::PermissionsExt;
    /// # use stayfast_core::{Policy, fs::AtomicFileWrite};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-atomic-new-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let writer = AtomicFileWrite::new(Policy::builder("fs.write").build().unwrap());
    /// writer.write(dir.join("secret"), b"k".to_vec()).await.unwrap();
    /// let mode = std::fs::metadata(dir.join("secret")).unwrap().permissions().mode();
    /// assert_eq!(mode & 0o777, 0o600); // new files get DEFAULT_FILE_MODE
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub fn new(policy: Policy) -> Self {
        Self {
            inner: Arc::new(Inner {
                ops: Arc::new(RealFs),
                policy,
                new_file_mode: DEFAULT_FILE_MODE,
            }),
        }
    }

    /// The same writer over another [`FileOps`] (to record or inject faults).
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::{AtomicFileWrite, RealFs}};
    /// let writer = AtomicFileWrite::new(Policy::builder("fs.write").build().unwrap()).with_ops(RealFs);
    /// # let _ = writer;
    /// ```
    #[must_use]
    pub fn with_ops(self, ops: impl FileOps) -> Self {
        self.rebuild(|inner| inner.ops = Arc::new(ops))
    }

    /// The mode of files the writer creates (an existing file keeps its own).
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::AtomicFileWrite};
    /// let writer = AtomicFileWrite::new(Policy::builder("fs.write").build().unwrap()).new_file_mode(0o640);
    /// # let _ = writer;
    /// ```
    #[must_use]
    pub fn new_file_mode(self, mode: u32) -> Self {
        self.rebuild(|inner| inner.new_file_mode = mode & 0o7777)
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            ops: Arc::clone(&self.inner.ops),
            policy: self.inner.policy.clone(),
            new_file_mode: self.inner.new_file_mode,
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Replaces the content of `path` with `contents`.
    ///
    /// # Errors
    ///
    /// [`Error::Inner`] with an [`FsError`] naming the path and the failed step (the
    /// target is then untouched, except after a failed directory fsync, when the new
    /// content is in place but may not survive a crash);
    /// [`Error::OutcomeUnknown`] when the policy's deadline passed first; or the
    /// policy's other errors (an open circuit, a full bulkhead).
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::AtomicFileWrite};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-atomic-write-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let writer = AtomicFileWrite::new(Policy::builder("fs.write").build().unwrap());
    /// let path = dir.join("state.json");
    /// writer.write(&path, b"v1".to_vec()).await.unwrap();
    /// writer.write(&path, b"v2".to_vec()).await.unwrap();
    /// assert_eq!(std::fs::read(&path).unwrap(), b"v2");
    /// assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1); // no temp file left behind
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn write(
        &self,
        path: impl Into<PathBuf>,
        contents: impl Into<Arc<[u8]>>,
    ) -> Result<(), Error<FsError>> {
        let path = path.into();
        let contents = contents.into();
        let inner = Arc::clone(&self.inner);
        self.inner
            .policy
            .call_with(|attempt| {
                let (ops, path, contents) = (Arc::clone(&inner.ops), path.clone(), Arc::clone(&contents));
                // NOTE: the blocking task is spawned (its turn taken) right here, when the
                // attempt is issued: see `locks::spawn_in_order`.
                let mode = inner.new_file_mode;
                run_blocking(ops, path, attempt.remaining(), move |ops, path, deadline| {
                    replace(ops, path, &contents, mode, deadline)
                })
            })
            .await
    }

    /// Removes this crate's temp files older than `min_age` from `dir` — leftovers of a
    /// process killed mid-write. Never touches any other file. Returns how many it
    /// removed. Call it at start-up with a `min_age` longer than any write takes.
    ///
    /// # Errors
    ///
    /// An [`FsError`] when `dir` cannot be listed or a temp cannot be removed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Policy, fs::AtomicFileWrite};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-atomic-sweep-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let writer = AtomicFileWrite::new(Policy::builder("fs.write").build().unwrap());
    /// std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    /// let removed = writer.sweep_stale_temps(&dir, Duration::from_secs(60)).await.unwrap();
    /// assert_eq!(removed, 0);
    /// assert!(dir.join("notes.txt").exists()); // other files are never touched
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn sweep_stale_temps(
        &self,
        dir: impl Into<PathBuf>,
        min_age: Duration,
    ) -> Result<usize, FsError> {
        let dir = dir.into();
        let ops = Arc::clone(&self.inner.ops);
        run_blocking(ops, dir, None, move |ops, dir, _| temp::sweep(ops, dir, min_age)).await
    }
}

/// The blocking sequence: lock → inspect → temp → write → fsync → rename → fsync dir.
pub(crate) fn replace(
    ops: &dyn FileOps,
    path: &Path,
    contents: &[u8],
    new_file_mode: u32,
    deadline: Option<std::time::Instant>,
) -> Result<(), FsError> {
    let (dir, name) = split(path)?;
    let _serialised = locks::lock_file(ops, dir, name, deadline)?;
    let mode = match ops.symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => meta.permissions().mode() & 0o7777,
        Ok(_) => new_file_mode, // a symlink (or other) at the target is replaced
        Err(e) if e.kind() == io::ErrorKind::NotFound => new_file_mode,
        Err(e) => return Err(FsError::new(path, Step::Inspect, e)),
    };
    let (temp, file) = temp::create(ops, dir, mode)?;
    // Removes the temp on every way out of this function but a successful rename: an
    // error, or a panic (of a seam, say) unwinding through it.
    let temp = TempGuard {
        ops,
        path: Some(temp),
    };
    let written = fill(ops, &file, temp.path(), contents, mode);
    drop(file);
    written?;
    ops.rename(temp.path(), path)
        .map_err(|e| FsError::new(path, Step::Rename, e))?;
    temp.disarm();
    sync_dir(ops, dir)
}

/// A temp file that is removed unless disarmed.
struct TempGuard<'a> {
    ops: &'a dyn FileOps,
    path: Option<PathBuf>,
}

impl TempGuard<'_> {
    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The temp was renamed into place: nothing to remove.
    fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(temp) = self.path.take() {
            // Best effort: the error being reported matters more; a later sweep cleans up.
            let _ = self.ops.remove_file(&temp);
        }
    }
}

/// Mode, content and fsync of a freshly created file. Never retries a failed fsync.
fn fill(ops: &dyn FileOps, file: &File, path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    ops.set_mode(file, path, mode)
        .map_err(|e| FsError::new(path, Step::SetMode, e))?;
    write_all(ops, file, path, contents)?;
    ops.sync(file, path)
        .map_err(|e| FsError::new(path, Step::SyncTemp, e))
}

impl fmt::Debug for AtomicFileWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicFileWrite")
            .field("ops", &self.inner.ops)
            .field("policy", &self.inner.policy)
            .field("new_file_mode", &format_args!("{:o}", self.inner.new_file_mode))
            .finish()
    }
}
