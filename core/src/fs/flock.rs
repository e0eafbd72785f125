//! Exclusion of other processes: the advisory lock (`flock`) on a log file, held while
//! an append decides and writes its record, and while a rollback, a torn-tail cut, a
//! repair or a removal changes the file.
//!
//! NOTE: always taken *after* the process-wide lock of the file ([`locks::lock_file`]),
//! so at most one thread of this process ever waits for or holds it: two handles of one
//! process never contend for it (they would: `flock` belongs to the open file
//! description, not to the process), and a platform whose lock were per process (as
//! `fcntl` locks are) would still exclude this process's own writers.
//!
//! [`locks::lock_file`]: super::locks::lock_file

use std::{
    fs::{File, Metadata},
    io,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{FileOps, FsError, Step};

/// An open file whose cross-process lock this process holds; released on drop.
pub(crate) struct Locked<'a> {
    ops: &'a dyn FileOps,
    path: &'a Path,
    /// Shared so an appender can keep the handle for the file's next append (see
    /// [`FileGuard::keep_handle`](super::locks::FileGuard::keep_handle)).
    pub(crate) file: Arc<File>,
    /// The file's metadata, read once the lock was held.
    pub(crate) meta: Metadata,
    /// Released on drop (not when handed on with [`hand_on`](Self::hand_on)).
    release: bool,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.release {
            // Closing the file (right after) releases it anyway.
            let _ = self.ops.unlock(&self.file, self.path);
        }
    }
}

impl<'a> Locked<'a> {
    /// Hands the still-held lock on, as the file and its metadata, to a later stage of
    /// the same operation, which takes it back with [`resume`](Self::resume) (or
    /// releases it by closing the file).
    pub(crate) fn hand_on(mut self) -> (Arc<File>, Metadata) {
        self.release = false;
        (Arc::clone(&self.file), self.meta.clone())
    }

    /// The lock [`hand_on`](Self::hand_on) handed on, released on drop again.
    pub(crate) fn resume(ops: &'a dyn FileOps, path: &'a Path, file: Arc<File>, meta: Metadata) -> Self {
        Self {
            ops,
            path,
            file,
            meta,
            release: true,
        }
    }
}

/// A handle [`open_locked`] is to lock: a file just opened, or one kept open since an
/// earlier operation, whose identity (device and inode) is then known.
pub(crate) struct Handle {
    file: Arc<File>,
    /// The kept file's device and inode; `None` for a file just opened.
    known: Option<(u64, u64)>,
}

impl Handle {
    /// A handle kept from an earlier operation on the file with this device and inode.
    pub(crate) fn kept(file: Arc<File>, dev: u64, ino: u64) -> Self {
        Self {
            file,
            known: Some((dev, ino)),
        }
    }
}

impl From<File> for Handle {
    fn from(file: File) -> Self {
        Arc::new(file).into()
    }
}

impl From<Arc<File>> for Handle {
    fn from(file: Arc<File>) -> Self {
        Self { file, known: None }
    }
}

/// Longest pause between two attempts at a held lock.
const MAX_PAUSE: Duration = Duration::from_millis(4);

/// Opens the file at `path` with `open` (`None`: nothing there; it may hand out a
/// handle kept from an earlier operation, checked like a new one) and takes its lock,
/// waiting for another process to release it no later than shortly before `deadline`
/// (so the caller's own timer does not fire first: a wait that gives up is reported as
/// such, at [`Step::Lock`], and nothing was done). The file may be replaced or removed
/// by the process that held the lock: once held, the lock is checked to be the one of
/// the file now at `path`, and taken again on that file if not (a kept handle, whose
/// device and inode are known, with one `lstat`; a new one with an `fstat` too).
pub(crate) fn open_locked<'a, F: Into<Handle>>(
    ops: &'a dyn FileOps,
    path: &'a Path,
    deadline: Option<Instant>,
    mut open: impl FnMut() -> Result<Option<F>, FsError>,
) -> Result<Option<Locked<'a>>, FsError> {
    let give_up = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        d.checked_sub((left / 8).min(Duration::from_millis(50)))
            .unwrap_or(d)
    });
    loop {
        let Some(file) = open()? else { return Ok(None) };
        let Handle { file, known } = file.into();
        wait_for(ops, path, &file, give_up)?;
        let locked = match known {
            Some(known) => kept_still_at(ops, path, file, known)?,
            None => still_at(ops, path, file)?,
        };
        if let Some(locked) = locked {
            return Ok(Some(locked));
        }
        // Replaced (a repair) or removed while this process waited: its lock guards
        // nothing any more.
    }
}

/// Takes the lock of `file` (at `path`) if no other process holds it, without waiting.
pub(crate) fn try_locked<'a>(
    ops: &'a dyn FileOps,
    path: &'a Path,
    file: File,
) -> Result<Option<Locked<'a>>, FsError> {
    if !ops
        .try_lock(&file, path)
        .map_err(|e| FsError::new(path, Step::Lock, e))?
    {
        return Ok(None);
    }
    still_at(ops, path, Arc::new(file))
}

/// `file`, whose lock this process now holds, as [`Locked`] if it is still the file at
/// `path`; `None` (the lock released) when it was replaced or removed meanwhile.
fn still_at<'a>(
    ops: &'a dyn FileOps,
    path: &'a Path,
    file: Arc<File>,
) -> Result<Option<Locked<'a>>, FsError> {
    let meta = ops
        .stat(&file, path)
        .map_err(|e| FsError::new(path, Step::Inspect, e))?;
    let locked = Locked {
        ops,
        path,
        file,
        meta,
        release: true,
    };
    Ok(is_at(ops, &locked.meta, path)?.then_some(locked))
}

/// As [`still_at`], for a kept handle whose device and inode are `known`: one `lstat`
/// of `path` tells both whether it is still the file there and, when it is, its
/// metadata now (the same inode's, so the same as an `fstat` of the handle would give),
/// which saves the `fstat` per operation.
fn kept_still_at<'a>(
    ops: &'a dyn FileOps,
    path: &'a Path,
    file: Arc<File>,
    (dev, ino): (u64, u64),
) -> Result<Option<Locked<'a>>, FsError> {
    let at_path = match ops.symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta).filter(|m| m.dev() == dev && m.ino() == ino)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new(path, Step::Inspect, e)),
    };
    match at_path {
        Ok(Some(meta)) => Ok(Some(Locked {
            ops,
            path,
            file,
            meta,
            release: true,
        })),
        other => {
            // Replaced, removed, or not known: the lock guards nothing (closing the
            // file, right after, releases it anyway).
            let _ = ops.unlock(&file, path);
            other.map(|_| None)
        }
    }
}

/// Polls the lock until it is free or `give_up` passes. Polled, not waited for in a
/// blocking `flock`: a blocked thread cannot be called back when the deadline passes.
fn wait_for(ops: &dyn FileOps, path: &Path, file: &File, give_up: Option<Instant>) -> Result<(), FsError> {
    let mut pause = Duration::from_micros(50);
    loop {
        if ops
            .try_lock(file, path)
            .map_err(|e| FsError::new(path, Step::Lock, e))?
        {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(give_up) = give_up {
            if now >= give_up {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    "another process held the file's lock until the deadline; not started",
                );
                return Err(FsError::new(path, Step::Lock, e));
            }
            pause = pause.min(give_up - now);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Whether the file whose metadata is `meta` is the one at `path` (same device and
/// inode); `false` when nothing is there.
fn is_at(ops: &dyn FileOps, meta: &Metadata, path: &Path) -> Result<bool, FsError> {
    match ops.symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == meta.dev() && now.ino() == meta.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FsError::new(path, Step::Inspect, e)),
    }
}
