//! Process-wide write ordering per path.

use std::{
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    path::Path,
    sync::{Mutex, MutexGuard, TryLockError},
};

use super::FileOps;

/// Striped locks: a fixed set, so memory never grows with the number of paths. Two
/// paths sharing a stripe are merely serialised with each other.
const STRIPES: usize = 128;

static LOCKS: [Mutex<()>; STRIPES] = [const { Mutex::new(()) }; STRIPES];

/// Takes the write lock of `key` (a canonical path), telling `ops` when it has to
/// wait. Held inside the blocking closure until the file-system work is done, so a
/// write abandoned by its caller still finishes before the next one starts.
pub(crate) fn lock_path(ops: &dyn FileOps, key: &Path) -> MutexGuard<'static, ()> {
    // A fixed hasher: the stripe of a path must not change between calls.
    let stripe = BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % STRIPES;
    let lock = &LOCKS[stripe];
    match lock.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            ops.will_wait(key);
            lock.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}
