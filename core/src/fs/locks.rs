//! Process-wide ordering of file operations: issue order per path, and mutual
//! exclusion per file.
//!
//! Two mechanisms, because a caller may give up while its blocking task is still
//! queued:
//! - **Turns** ([`spawn_in_order`]): a ticket is taken when an operation is *issued*,
//!   and its blocking task waits for its turn before touching the file. A write whose
//!   caller timed out therefore still runs before any write issued after it, even if the
//!   blocking pool started them in another order or the OS descheduled it. Turns are
//!   per path as spelt by the caller (known without a system call on the async thread).
//! - **Locks** ([`lock_file`]): mutual exclusion per file identified by its directory's
//!   device and inode, so two spellings of one path (relative, through a symlink) never
//!   write at the same time.

use std::{
    ffi::OsStr,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash},
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{Condvar, Mutex, MutexGuard, TryLockError},
};

use tokio::task::JoinHandle;

use super::{FileOps, FsError, Step};

/// Striped locks: a fixed set, so memory never grows with the number of paths. Two
/// paths sharing a stripe are merely serialised with each other.
const STRIPES: usize = 128;

static LOCKS: [Mutex<()>; STRIPES] = [const { Mutex::new(()) }; STRIPES];

static TURNS: [Turns; STRIPES] = [const { Turns::new() }; STRIPES];

/// A fixed hasher: the stripe of a key must not change between calls.
fn stripe(key: impl Hash) -> usize {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % STRIPES
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The tickets of one stripe.
struct Turns {
    /// The next ticket to hand out. Held while spawning, so spawn order is ticket order.
    issue: Mutex<u64>,
    state: Mutex<Serving>,
    turn_changed: Condvar,
}

struct Serving {
    /// The ticket whose turn it is.
    now: u64,
    /// Tickets whose task was dropped before its turn came (runtime shutdown).
    abandoned: Vec<u64>,
}

impl Turns {
    const fn new() -> Self {
        Self {
            issue: Mutex::new(0),
            state: Mutex::new(Serving {
                now: 0,
                abandoned: Vec::new(),
            }),
            turn_changed: Condvar::new(),
        }
    }
}

/// One operation's place in its path's queue. Dropping it — after the work, on a panic,
/// or unrun at runtime shutdown — passes the turn on.
pub(crate) struct Turn {
    turns: &'static Turns,
    ticket: u64,
}

impl Turn {
    /// Blocks until every operation on this path issued earlier has finished.
    pub(crate) fn wait(&self, ops: &dyn FileOps, path: &Path) {
        let mut serving = relock(&self.turns.state);
        if serving.now != self.ticket {
            ops.will_wait(path);
        }
        while serving.now != self.ticket {
            serving = self
                .turns
                .turn_changed
                .wait(serving)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut serving = relock(&self.turns.state);
        if serving.now == self.ticket {
            serving.now += 1;
        } else {
            serving.abandoned.push(self.ticket);
        }
        // Skip the turns of operations that will never run.
        while let Some(i) = serving.abandoned.iter().position(|t| *t == serving.now) {
            serving.abandoned.swap_remove(i);
            serving.now += 1;
        }
        drop(serving);
        self.turns.turn_changed.notify_all();
    }
}

/// Spawns `work` on the blocking pool with a ticket for `path`, taken now, at issue.
///
/// NOTE: the ticket is taken and the task spawned under the stripe's issue lock, so
/// tasks are queued in ticket order; tokio's blocking pool starts queued tasks in FIFO
/// order, so the lowest waiting ticket always gets a thread and turns cannot deadlock.
pub(crate) fn spawn_in_order<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce(Turn) -> T + Send + 'static,
) -> JoinHandle<T> {
    let turns = &TURNS[stripe(path)];
    let mut next = relock(&turns.issue);
    let turn = Turn { turns, ticket: *next };
    *next += 1;
    // The closure may be dropped right here (a runtime shutting down); `Turn::drop` only
    // takes `state`, never `issue`, so that cannot deadlock.
    let handle = tokio::task::spawn_blocking(move || work(turn));
    drop(next);
    handle
}

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

fn lock_stripe(ops: &dyn FileOps, path: &Path, key: impl Hash) -> MutexGuard<'static, ()> {
    let lock = &LOCKS[stripe(key)];
    match lock.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            ops.will_wait(path);
            lock.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}
