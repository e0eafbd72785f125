//! [`FileOps`]: the seam between stayfast and the file system.

use std::{
    fmt,
    fs::{File, Metadata, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Every file-system call stayfast makes goes through this trait, one method per
/// system call, so tests can record the exact sequence and fail any step on demand
/// (as SQLite's `Simulate*Error` hooks do). [`RealFs`] is the production
/// implementation; wrap it to observe or inject faults.
///
/// Methods run on a blocking thread, never on the async runtime.
///
/// # Examples
///
/// ```
/// use std::{io, path::Path, sync::atomic::{AtomicBool, Ordering}};
/// use stayfast_core::fs::{FileOps, RealFs};
///
/// /// Fails every fsync: a disk that lies about durability.
/// #[derive(Debug, Default)]
/// struct FailingSync;
///
/// impl FileOps for FailingSync {
///     fn sync(&self, _file: &std::fs::File, _path: &Path) -> io::Result<()> {
///         Err(io::Error::other("injected EIO"))
///     }
/// }
/// ```
pub trait FileOps: fmt::Debug + Send + Sync + 'static {
    /// `lstat`: metadata of `path` itself, not of what a symlink points to.
    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        std::fs::symlink_metadata(path)
    }

    /// `open(O_CREAT|O_EXCL|O_WRONLY|O_CLOEXEC|O_NOFOLLOW, mode)`: a new file, failing if
    /// anything exists at `path`. (`O_NOFOLLOW` comes from `libc`: its value differs
    /// between architectures.)
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    }

    /// `open(O_CREAT|O_APPEND|O_RDWR|O_CLOEXEC|O_NOFOLLOW|O_NONBLOCK, mode)`, then
    /// anything but a regular file is refused (a FIFO or device planted at the path cannot
    /// block the open). Readable, so the appender can check the file's last byte (a torn
    /// tail) through [`read_at`](Self::read_at) on the same handle.
    fn open_append(&self, path: &Path, mode: u32) -> io::Result<File> {
        regular(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)?,
        )
    }

    /// `open(O_RDONLY|O_CLOEXEC|O_NOFOLLOW|O_NONBLOCK)`, then anything but a regular
    /// file is refused (a FIFO or device planted at the path cannot block the open).
    fn open_read(&self, path: &Path) -> io::Result<File> {
        regular(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)?,
        )
    }

    /// `open(dir, O_RDONLY|O_DIRECTORY)`: a handle to fsync a directory through.
    fn open_dir(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    /// `fchmod`: the exact mode, whatever the umask.
    fn set_mode(&self, file: &File, _path: &Path, mode: u32) -> io::Result<()> {
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    }

    /// `write`: at most `buf.len()` bytes, in one call.
    fn write(&self, mut file: &File, _path: &Path, buf: &[u8]) -> io::Result<usize> {
        file.write(buf)
    }

    /// `fsync`.
    fn sync(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }

    /// `fstat`: the open file's metadata (its device and inode name it, whatever its
    /// path now points to).
    fn stat(&self, file: &File, _path: &Path) -> io::Result<Metadata> {
        file.metadata()
    }

    /// `flock(LOCK_EX|LOCK_NB)`: takes the open file's advisory exclusive lock, shared
    /// with every other process that takes it; `Ok(false)` when another open file
    /// description holds it. The lock belongs to this open file description (not to the
    /// process): another handle opened in this process conflicts with it too.
    fn try_lock(&self, file: &File, _path: &Path) -> io::Result<bool> {
        match file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// `flock(LOCK_UN)`: releases the lock [`try_lock`](Self::try_lock) took (closing the
    /// file releases it too).
    fn unlock(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.unlock()
    }

    /// `fstat`: the file's current length.
    fn len(&self, file: &File, _path: &Path) -> io::Result<u64> {
        file.metadata().map(|m| m.len())
    }

    /// `read`: up to `buf.len()` bytes.
    fn read(&self, mut file: &File, _path: &Path, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        file.read(buf)
    }

    /// `pread`: up to `buf.len()` bytes at `offset`, leaving the file position alone.
    fn read_at(&self, file: &File, _path: &Path, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        file.read_at(buf, offset)
    }

    /// `open(O_RDWR|O_CLOEXEC|O_NOFOLLOW)`: an existing file, to repair it.
    fn open_read_write(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    }

    /// `ftruncate`.
    fn set_len(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    /// `rename`: atomic replacement of `to` (a symlink at `to` is replaced, not followed).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    /// `unlink`.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    /// `mkdir(mode)`, failing if it exists.
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(mode).create(path)
    }

    /// `stat` (following symlinks): identifies a directory by device and inode.
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        std::fs::metadata(path)
    }

    /// The names in directory `path`.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    /// Called when a write to `path` must wait for an earlier write to the same path to
    /// finish. Does nothing in production; lets tests order writes without timing.
    fn will_wait(&self, _path: &Path) {}
}

/// The real file system.
///
/// ```
/// let ops = stayfast_core::fs::RealFs;
/// # let _ = ops;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl FileOps for RealFs {}

/// `file` if it is a regular file, else an `InvalidInput` error. Opened with
/// `O_NONBLOCK` (no effect on a regular file), a FIFO or device planted at the path
/// cannot block the open and is refused here, whatever was checked before the open.
fn regular(file: File) -> io::Result<File> {
    if file.metadata()?.file_type().is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"))
    }
}
