//! The I/O helpers every file operation shares: the mode of created files, splitting a
//! path, whole writes, directory fsync, the regular-file check, and running a step on
//! the blocking pool in its path's turn.
//!
//! NOTE: this module sits between [`locks`] (below it) and the operations (atomic
//! writes, appends, log reads and repairs, above it); it never imports an operation,
//! so no two `fs` modules import each other.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{FileOps, FsError, Step, locks, writers};

/// Mode of files this crate creates: owner read/write only.
///
/// ```
/// assert_eq!(stayfast_core::fs::DEFAULT_FILE_MODE, 0o600); // rw-------
/// ```
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// Runs `work` on the blocking pool after every operation on `path` issued before it
/// (see [`locks::spawn_in_order`]); the task is spawned now, not when the returned future
/// is first polled. `budget` is the operation's time left: waiting for its turn gives up
/// then (the work never runs), and `work` gets the deadline for its own waits. A task
/// that panicked or was dropped unrun becomes an `FsError` at [`Step::Task`].
pub(crate) fn run_blocking<T: Send + 'static>(
    ops: Arc<dyn FileOps>,
    path: PathBuf,
    budget: Option<Duration>,
    work: impl FnOnce(&dyn FileOps, &Path, Option<Instant>) -> Result<T, FsError> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, FsError>> + Send + 'static {
    let task = locks::spawn_in_order(&path.clone(), budget, move |turn| {
        turn.wait(&*ops, &path)?;
        work(&*ops, &path, turn.deadline())
    });
    async move {
        task.await.unwrap_or_else(|e| {
            Err(FsError::new(
                "blocking task",
                Step::Task,
                io::Error::other(e.to_string()),
            ))
        })
    }
}

/// What the first stage of a [`run_staged`] operation left: its result, or a second
/// stage to run after it.
pub(crate) enum Stage<T> {
    /// Finished.
    Done(T),
    /// To be finished by this, still in the operation's turn.
    Then(SecondStage<T>),
}

/// The second stage of a [`run_staged`] operation.
pub(crate) type SecondStage<T> = Box<dyn FnOnce(&dyn FileOps, &Path) -> Result<T, FsError> + Send>;

/// As [`run_blocking`], in two stages: on a multi-thread runtime, when no earlier
/// operation on `path` is unfinished (the common case), both run on the [`writers`] pool, the second queued
/// behind the jobs queued meanwhile (an append's fsync behind other files' writes, so
/// they share a journal commit); otherwise both run in one blocking task that waits for
/// its turn, as any operation. The turn is held from the first stage to the end of the
/// second. An operation whose deadline passed before it started is not run.
pub(crate) fn run_staged<T: Send + 'static>(
    ops: Arc<dyn FileOps>,
    path: PathBuf,
    budget: Option<Duration>,
    first: impl FnOnce(&dyn FileOps, &Path, Option<Instant>) -> Result<Stage<T>, FsError> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, FsError>> + Send + 'static {
    // NOTE: on a multi-thread runtime only. A current-thread runtime is the one whose
    // clock a test may pause, and a paused clock advances whenever the runtime looks idle:
    // tokio holds it still while a `spawn_blocking` task runs, but cannot see the pool's
    // threads, so a policy's timeout would fire at once.
    let pooled = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let Some(turn) = pooled.then(|| locks::turn_if_idle(&path, budget)).flatten() else {
        let task = run_blocking(ops, path, budget, move |ops, path, deadline| {
            match first(ops, path, deadline)? {
                Stage::Done(value) => Ok(value),
                Stage::Then(second) => second(ops, path),
            }
        });
        return futures_util::future::Either::Left(task);
    };
    let (sender, receiver) = tokio::sync::oneshot::channel();
    writers::push(Box::new(move || {
        let deadline = turn.deadline();
        let result = if deadline.is_some_and(|d| Instant::now() >= d) {
            let e = io::Error::new(
                io::ErrorKind::TimedOut,
                "deadline passed waiting for a thread; not started",
            );
            Err(FsError::new(&path, Step::Task, e))
        } else {
            first(&*ops, &path, deadline)
        };
        match result {
            Ok(Stage::Then(second)) => writers::push(Box::new(move || {
                let result = second(&*ops, &path);
                drop(turn);
                let _ = sender.send(result);
            })),
            Ok(Stage::Done(value)) => {
                drop(turn);
                let _ = sender.send(Ok(value));
            }
            Err(e) => {
                drop(turn);
                let _ = sender.send(Err(e));
            }
        }
    }));
    futures_util::future::Either::Right(async move {
        // Dropped unanswered: the job panicked (its turn passed on as it unwound).
        receiver.await.unwrap_or_else(|_| {
            Err(FsError::new(
                "blocking task",
                Step::Task,
                io::Error::other("the file operation panicked"),
            ))
        })
    })
}

/// The directory and file name of `path`, or an `InvalidInput` error.
pub(crate) fn split(path: &Path) -> Result<(&Path, &OsStr), FsError> {
    let name = path.file_name().ok_or_else(|| {
        FsError::new(
            path,
            Step::Inspect,
            io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// Takes the write lock of `path`'s file (see [`locks::lock_file`]).
pub(crate) fn lock_path(
    ops: &dyn FileOps,
    path: &Path,
    deadline: Option<Instant>,
) -> Result<locks::FileGuard, FsError> {
    let (dir, name) = split(path)?;
    locks::lock_file(ops, dir, name, deadline)
}

/// `path`'s metadata when a regular file is there, `None` when nothing is; an error for
/// anything else (a directory, FIFO, device or symlink is never read through).
pub(crate) fn regular_file(ops: &dyn FileOps, path: &Path) -> Result<Option<std::fs::Metadata>, FsError> {
    match ops.symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new(path, Step::Inspect, e)),
        Ok(meta) if !meta.file_type().is_file() => {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
            Err(FsError::new(path, Step::Open, e))
        }
        Ok(meta) => Ok(Some(meta)),
    }
}

/// `write` until everything is written; `EINTR` is retried, a zero-length write is an
/// error.
pub(crate) fn write_all(ops: &dyn FileOps, file: &File, path: &Path, mut buf: &[u8]) -> Result<(), FsError> {
    while !buf.is_empty() {
        match ops.write(file, path, buf) {
            Ok(0) => return Err(FsError::new(path, Step::Write, io::ErrorKind::WriteZero.into())),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FsError::new(path, Step::Write, e)),
        }
    }
    Ok(())
}

/// `fsync` of a directory, so a new or renamed entry in it survives a crash.
pub(crate) fn sync_dir(ops: &dyn FileOps, dir: &Path) -> Result<(), FsError> {
    let handle = ops
        .open_dir(dir)
        .map_err(|e| FsError::new(dir, Step::SyncDir, e))?;
    ops.sync(&handle, dir)
        .map_err(|e| FsError::new(dir, Step::SyncDir, e))
}
