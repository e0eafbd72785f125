//! Process-wide write ordering per path.

use std::{
    ffi::OsStr,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{Mutex, MutexGuard, TryLockError},
};

use super::{FileOps, FsError, Step};

/// Striped locks: a fixed set, so memory never grows with the number of paths. Two
/// paths sharing a stripe are merely serialised with each other.
const STRIPES: usize = 128;

static LOCKS: [Mutex<()>; STRIPES] = [const { Mutex::new(()) }; STRIPES];

/// Takes the write lock of the file `name` in directory `dir`, telling `ops` when it
/// has to wait. Held inside the blocking closure until the file-system work is done, so
/// a write abandoned by its caller still finishes before the next one starts.
///
/// The directory is identified by device and inode (one `stat`), so every spelling of
/// a path — relative, through a symlink — takes the same lock.
pub(crate) fn lock_file(
    ops: &dyn FileOps,
    dir: &Path,
    name: &OsStr,
) -> Result<MutexGuard<'static, ()>, FsError> {
    let meta = ops
        .metadata(dir)
        .map_err(|e| FsError::new(dir, Step::Inspect, e))?;
    // A fixed hasher: the stripe of a file must not change between calls.
    let key = (meta.dev(), meta.ino(), name);
    Ok(lock_stripe(ops, &dir.join(name), key))
}

/// Takes the write lock of an already-open file's path (no `stat`: the caller holds the
/// lock key's parts already).
pub(crate) fn lock_path(ops: &dyn FileOps, path: &Path) -> Result<MutexGuard<'static, ()>, FsError> {
    let (dir, name) = super::atomic::split(path)?;
    lock_file(ops, dir, name)
}

fn lock_stripe(ops: &dyn FileOps, path: &Path, key: impl std::hash::Hash) -> MutexGuard<'static, ()> {
    let stripe = BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % STRIPES;
    let lock = &LOCKS[stripe];
    match lock.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            ops.will_wait(path);
            lock.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}
