//! [`FsError`]: a failed file operation, with the path and the step that failed.

use std::{fmt, io, path::PathBuf};

use crate::{Classify, Verdict};

/// The step of a file operation that failed.
///
/// ```
/// assert_eq!(stayfast_core::fs::Step::SyncTemp.as_str(), "fsync temp file");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Checking what is at the target.
    Inspect,
    /// Creating the temporary file.
    CreateTemp,
    /// Setting the file's mode.
    SetMode,
    /// Writing the content.
    Write,
    /// Flushing the temporary file to disk.
    SyncTemp,
    /// Renaming the temporary file over the target.
    Rename,
    /// Flushing the directory entry to disk.
    SyncDir,
    /// Flushing an appended file to disk.
    SyncFile,
    /// Keeping a copy of a torn tail before truncating it.
    Backup,
    /// Opening a file.
    Open,
    /// Reading a file.
    Read,
    /// Truncating a file.
    Truncate,
    /// Creating a directory.
    CreateDir,
    /// Listing or cleaning a directory.
    Sweep,
    /// Removing a file.
    Remove,
    /// The blocking task that ran the operation ended abnormally.
    Task,
    /// Taking a failed append back out of the file: the file may end in part of the
    /// record, which the next append (or read) cuts off as a torn tail.
    Rollback,
    /// Taking the file's cross-process lock (`flock`), which every process appending to,
    /// repairing or removing the file holds meanwhile. Timed out: another process held
    /// it until the deadline, and nothing was done.
    ///
    /// ```
    /// assert_eq!(stayfast_core::fs::Step::Lock.as_str(), "lock file");
    /// ```
    Lock,
}

impl Step {
    /// A short description.
    ///
    /// ```
    /// assert_eq!(stayfast_core::fs::Step::Rename.as_str(), "rename");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Inspect => "inspect target",
            Step::CreateTemp => "create temp file",
            Step::SetMode => "set mode",
            Step::Write => "write",
            Step::SyncTemp => "fsync temp file",
            Step::Rename => "rename",
            Step::SyncDir => "fsync directory",
            Step::SyncFile => "fsync file",
            Step::Backup => "back up torn tail",
            Step::Open => "open",
            Step::Read => "read",
            Step::Truncate => "truncate",
            Step::CreateDir => "create directory",
            Step::Sweep => "sweep",
            Step::Remove => "remove",
            Step::Task => "blocking task",
            Step::Rollback => "roll back failed append",
            Step::Lock => "lock file",
        }
    }
}

/// A file operation failed at `step` on `path`.
///
/// # Examples
///
/// ```
/// use std::io;
/// use stayfast_core::fs::{FsError, Step};
///
/// let e = FsError::new("/data/t.jsonl", Step::Write, io::Error::from(io::ErrorKind::StorageFull));
/// assert!(e.is_no_space());
/// assert_eq!(e.to_string(), "write /data/t.jsonl"); // the io error is its `source()`
/// ```
#[derive(Debug)]
pub struct FsError {
    path: PathBuf,
    step: Step,
    source: io::Error,
}

impl FsError {
    /// An error at `step` on `path`.
    ///
    /// ```
    /// use stayfast_core::{Classify, Retryable, fs::{FsError, Step}};
    /// let e = FsError::new("/data/state.json", Step::SyncTemp, std::io::Error::other("EIO"));
    /// assert_eq!(e.to_string(), "fsync temp file /data/state.json");
    /// assert_eq!(e.classify().retry, Retryable::No); // a failed fsync is never retried
    /// ```
    pub fn new(path: impl Into<PathBuf>, step: Step, source: io::Error) -> Self {
        Self {
            path: path.into(),
            step,
            source,
        }
    }

    /// The path the operation was on.
    ///
    /// ```
    /// # use stayfast_core::fs::{FsError, Step};
    /// let e = FsError::new("/x", Step::Open, std::io::ErrorKind::NotFound.into());
    /// assert_eq!(e.path(), std::path::Path::new("/x"));
    /// ```
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The step that failed.
    ///
    /// ```
    /// # use stayfast_core::fs::{FsError, Step};
    /// let e = FsError::new("/x", Step::Open, std::io::ErrorKind::NotFound.into());
    /// assert_eq!(e.step(), Step::Open);
    /// ```
    pub fn step(&self) -> Step {
        self.step
    }

    /// The underlying I/O error.
    ///
    /// ```
    /// # use stayfast_core::fs::{FsError, Step};
    /// let e = FsError::new("/x", Step::Open, std::io::ErrorKind::NotFound.into());
    /// assert_eq!(e.io().kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn io(&self) -> &io::Error {
        &self.source
    }

    /// ENOSPC (or EDQUOT): the disk or quota is full.
    ///
    /// ```
    /// # use stayfast_core::fs::{FsError, Step};
    /// let e = FsError::new("/x", Step::Write, std::io::ErrorKind::QuotaExceeded.into());
    /// assert!(e.is_no_space());
    /// ```
    pub fn is_no_space(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
    }

    /// EROFS or EACCES/EPERM: the file system or directory refuses writes.
    ///
    /// ```
    /// # use stayfast_core::fs::{FsError, Step};
    /// let e = FsError::new("/x", Step::CreateTemp, std::io::ErrorKind::ReadOnlyFilesystem.into());
    /// assert!(e.is_read_only());
    /// ```
    pub fn is_read_only(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
        )
    }

    /// ENAMETOOLONG.
    ///
    /// ```
    /// # use stayfast_core::fs::{FsError, Step};
    /// let e = FsError::new("/x", Step::Rename, std::io::ErrorKind::InvalidFilename.into());
    /// assert!(e.is_name_too_long());
    /// ```
    pub fn is_name_too_long(&self) -> bool {
        self.source.kind() == io::ErrorKind::InvalidFilename
    }

    /// ENOENT: the file or its directory does not exist.
    ///
    /// ```
    /// # use stayfast_core::fs::{FsError, Step};
    /// let e = FsError::new("/x", Step::Open, std::io::ErrorKind::NotFound.into());
    /// assert!(e.is_not_found());
    /// ```
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// The step and the path only: the io error is the [`source`](std::error::Error::source),
/// so a report that walks the chain prints it once.
impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.step.as_str(), self.path.display())
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A full or read-only disk is the dependency's fault and will not heal by retrying;
/// a missing file, a bad name or a refused permission is the caller's; a failed fsync
/// is never retried (PostgreSQL's lesson: a retried fsync may falsely succeed).
impl Classify for FsError {
    fn classify(&self) -> Verdict {
        if self.is_no_space() || self.source.kind() == io::ErrorKind::ReadOnlyFilesystem {
            return Verdict::permanent();
        }
        if self.step == Step::Lock && self.source.kind() == io::ErrorKind::TimedOut {
            // Another process held the file's lock until the deadline: nothing was
            // started (so not an unknown outcome), and it says nothing of the disk.
            return Verdict::new(crate::Retryable::Yes, crate::Health::Ignore);
        }
        if self.step == Step::Task && self.source.kind() == io::ErrorKind::TimedOut {
            // It gave up waiting behind an operation on the same file that hangs: the
            // deadline passed, as our own timer would have said.
            return Verdict::timed_out();
        }
        if matches!(
            self.step,
            Step::SyncTemp | Step::SyncDir | Step::SyncFile | Step::Task | Step::Rollback
        ) {
            return Verdict::permanent();
        }
        match self.source.kind() {
            io::ErrorKind::NotFound
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::InvalidFilename
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidData
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::DirectoryNotEmpty
            | io::ErrorKind::AlreadyExists => Verdict::caller_error(),
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Verdict::transient(),
            _ => Verdict::permanent(),
        }
    }
}
