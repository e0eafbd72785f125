//! Process-wide ordering of file operations: issue order per path, and mutual
//! exclusion per file; each wait bounded by the operation's deadline.
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
//!
//! Both are kept per path or file, never per shared stripe: a file that hangs (a dead
//! NFS server, a stuck disk) delays only the operations on that very file, and each of
//! those gives up waiting when its deadline passes (its turn then passes on unused: an
//! operation that never started is not applied). Entries live while an operation holds
//! or awaits them; idle ones are swept as the maps grow, so memory follows the number
//! of files in use, not the number ever used.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs::File,
    hash::Hash,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, LazyLock, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::task::JoinHandle;

use super::{FileOps, FsError, Step};

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Entries keyed by path or file, each shared by the operations using it. An entry is
/// only created or handed out under the map's lock, and only removed there when no
/// operation uses it (`Arc::strong_count == 1`), so two operations on one key always
/// share one entry.
struct Registry<K, V> {
    map: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    entries: HashMap<K, Arc<V>>,
    /// Sweep idle entries when the map reaches this size (doubles with the live count).
    sweep_at: usize,
}

/// The smallest map size at which idle entries are swept.
const MIN_SWEEP: usize = 1024;

impl<K: Hash + Eq, V: Default> Registry<K, V> {
    fn new() -> Self {
        Self {
            map: Mutex::new(Entries {
                entries: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// The entry for `key`, created if absent (handed out under the map's lock, so a
    /// sweep never removes an entry being taken).
    fn get(&self, key: K) -> Arc<V> {
        let mut map = relock(&self.map);
        map.sweep();
        Arc::clone(map.entries.entry(key).or_default())
    }

    /// As [`get`](Self::get), looked up by a borrowed key: the owned one is made only
    /// when the entry is new (the common case, a file in use, allocates nothing).
    fn get_or_insert_with<Q>(&self, key: &Q, owned: impl FnOnce(&Q) -> K) -> Arc<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = relock(&self.map);
        if let Some(entry) = map.entries.get(key) {
            return Arc::clone(entry);
        }
        map.sweep();
        Arc::clone(map.entries.entry(owned(key)).or_default())
    }
}

impl<K: Hash + Eq, V> Entries<K, V> {
    /// Drops the idle entries once the map reached its sweep size.
    fn sweep(&mut self) {
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, v| Arc::strong_count(v) > 1);
            self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP);
        }
    }
}

/// The tickets of one path.
#[derive(Default)]
struct Turns {
    /// Held while a ticket is taken and its task spawned, so spawn order is ticket order.
    issue: Mutex<u64>,
    state: Mutex<Serving>,
    turn_changed: Condvar,
}

#[derive(Default)]
struct Serving {
    /// The ticket whose turn it is.
    now: u64,
    /// Tickets dropped before their turn came (given up, or never run at shutdown).
    abandoned: Vec<u64>,
    /// Operations blocked in [`Turn::wait`]: a finished turn wakes them only when there
    /// are any (a condvar notify is a system call even with nobody to wake, and the
    /// common case, one operation on a file at a time, has nobody).
    waiting: usize,
}

static TURNS: LazyLock<Registry<PathBuf, Turns>> = LazyLock::new(Registry::new);

/// One operation's place in its path's queue. Dropping it — after the work, on a panic,
/// after giving up waiting, or unrun at runtime shutdown — passes the turn on.
pub(crate) struct Turn {
    turns: Arc<Turns>,
    ticket: u64,
    /// When the operation stops waiting for its turn or its file lock.
    deadline: Option<Instant>,
}

impl Turn {
    /// Blocks until every operation on this path issued earlier has finished; gives up
    /// with a `TimedOut` error at the operation's deadline (the operation then never
    /// runs, and its turn passes on).
    pub(crate) fn wait(&self, ops: &dyn FileOps, path: &Path) -> Result<(), FsError> {
        let mut serving = relock(&self.turns.state);
        if serving.now == self.ticket {
            return Ok(());
        }
        ops.will_wait(path);
        serving.waiting += 1;
        let mut result = Ok(());
        while serving.now != self.ticket {
            serving = match self.deadline {
                None => self
                    .turns
                    .turn_changed
                    .wait(serving)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        result = Err(gave_up(path, "its turn behind earlier operations on the file"));
                        break;
                    };
                    self.turns
                        .turn_changed
                        .wait_timeout(serving, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        serving.waiting -= 1;
        result
    }

    /// When this operation stops waiting.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
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
        // Counted under the same lock a waiter holds from its check to its wait: one
        // about to wait is counted already, so none misses this wake-up.
        let wake = serving.waiting > 0;
        drop(serving);
        if wake {
            self.turns.turn_changed.notify_all();
        }
    }
}

fn gave_up(path: &Path, what: &str) -> FsError {
    let e = io::Error::new(
        io::ErrorKind::TimedOut,
        format!("deadline passed waiting for {what}; not started"),
    );
    FsError::new(path, Step::Task, e)
}

/// Spawns `work` on the blocking pool with a ticket for `path`, taken now, at issue.
/// `budget` is the operation's time left (its deadline), for the waits inside.
///
/// NOTE: the ticket is taken and the task spawned under the path's issue lock, so its
/// tasks are queued in ticket order; tokio's blocking pool starts queued tasks in FIFO
/// order, so the lowest waiting ticket always gets a thread and turns cannot deadlock.
pub(crate) fn spawn_in_order<T: Send + 'static>(
    path: &Path,
    budget: Option<std::time::Duration>,
    work: impl FnOnce(Turn) -> T + Send + 'static,
) -> JoinHandle<T> {
    let deadline = budget.and_then(|b| Instant::now().checked_add(b));
    // The entry is taken under the registry's lock, the issue lock after it is
    // released: `Turn::drop` (which may run right inside `spawn_blocking` when the
    // runtime is shutting down) never takes the registry's lock, so no cycle.
    let turns = TURNS.get_or_insert_with(path, Path::to_path_buf);
    let mut next = relock(&turns.issue);
    let turn = Turn {
        turns: Arc::clone(&turns),
        ticket: *next,
        deadline,
    };
    *next += 1;
    let handle = tokio::task::spawn_blocking(move || work(turn));
    drop(next);
    handle
}

/// A ticket for `path` whose turn it is already — no operation on `path` issued before
/// is unfinished — or `None` (nothing taken) when one is. The operation then never
/// waits for its turn, so it may run on a thread that must not wait for one (see
/// [`writers`](super::writers)); later operations on `path` wait for it as for any.
pub(crate) fn turn_if_idle(path: &Path, budget: Option<std::time::Duration>) -> Option<Turn> {
    let deadline = budget.and_then(|b| Instant::now().checked_add(b));
    let turns = TURNS.get_or_insert_with(path, Path::to_path_buf);
    let mut next = relock(&turns.issue);
    // NOTE: the only place both locks are held, the issue lock first (`Turn::wait` and
    // `Turn::drop` take only the state lock): no cycle.
    if relock(&turns.state).now != *next {
        return None;
    }
    let turn = Turn {
        turns: Arc::clone(&turns),
        ticket: *next,
        deadline,
    };
    *next += 1;
    Some(turn)
}

/// A file's write lock.
#[derive(Default)]
struct FileLock {
    state: Mutex<Holding>,
    released: Condvar,
    /// The append handle the file's last append left open for its next one (see
    /// [`FileGuard::keep_handle`]); only ever used by the lock's holder.
    handle: Mutex<Option<KeptHandle>>,
}

/// An append handle kept open between appends, with the device and inode of its file
/// (so the next append checks it is still the file at the path with one `lstat`).
pub(crate) struct KeptHandle {
    pub(crate) file: Arc<File>,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Swept idle: its kept handle is closed.
        if self.handle.get_mut().is_ok_and(|h| h.is_some()) {
            KEPT_HANDLES.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Append handles kept open between appends, across the process: at most
/// [`MAX_KEPT_HANDLES`], so idle files cannot use up the descriptors.
static KEPT_HANDLES: AtomicUsize = AtomicUsize::new(0);

/// The most append handles kept open at once. Past it a file is opened per append, as
/// when none is kept; kept ones are closed as their files' locks are swept idle, or
/// taken back by an append that finds its file replaced or removed.
const MAX_KEPT_HANDLES: usize = 256;

#[derive(Default)]
struct Holding {
    held: bool,
    /// Threads blocked waiting for it: a release wakes one only when there are any (a
    /// condvar notify is a system call even with nobody to wake).
    waiting: usize,
}

/// Holds a file's write lock; releases it on drop.
pub(crate) struct FileGuard {
    lock: Arc<FileLock>,
}

impl FileGuard {
    /// The handle an earlier append of this file kept open, if any, now the caller's:
    /// it must check it is still the file at the path (a repair replaces the file, a
    /// removal or another process may have removed it).
    pub(crate) fn take_handle(&self) -> Option<KeptHandle> {
        let handle = relock(&self.lock.handle).take();
        if handle.is_some() {
            KEPT_HANDLES.fetch_sub(1, Ordering::Relaxed);
        }
        handle
    }

    /// Keeps `file`, the file's append handle (`meta` its metadata), open for its next
    /// append (saving that append an `open`, an `fstat` and a `close`), unless too many
    /// are kept already.
    pub(crate) fn keep_handle(&self, file: Arc<File>, meta: &std::fs::Metadata) {
        let mut slot = relock(&self.lock.handle);
        if slot.is_none() && KEPT_HANDLES.fetch_add(1, Ordering::Relaxed) >= MAX_KEPT_HANDLES {
            KEPT_HANDLES.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        *slot = Some(KeptHandle {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
        });
    }
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        let mut state = relock(&self.lock.state);
        state.held = false;
        // Counted under this lock by a waiter before it waits: none misses the wake-up.
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.lock.released.notify_one();
        }
    }
}

static FILE_LOCKS: LazyLock<Registry<(u64, u64, OsString), FileLock>> = LazyLock::new(Registry::new);

/// Takes the write lock of the file `name` in directory `dir`, telling `ops` when it
/// has to wait, giving up at `deadline`. Held inside the blocking closure until the
/// file-system work is done, so a write abandoned by its caller still finishes before
/// the next one starts.
///
/// The directory is identified by device and inode (one `stat`), so every spelling of
/// a path — relative, through a symlink — takes the same lock.
pub(crate) fn lock_file(
    ops: &dyn FileOps,
    dir: &Path,
    name: &std::ffi::OsStr,
    deadline: Option<Instant>,
) -> Result<FileGuard, FsError> {
    let (dev, ino) = dir_id(ops, dir)?;
    lock_key(ops, (dev, ino, name.to_os_string()), dir, name, deadline)
}

/// As [`lock_file`], the directory's identity taken from [`DIRS`] when it was looked up
/// before (a `stat` per append saved; the `bool` says whether it was): for an append,
/// which calls [`forget_dir`] whenever it used a cached identity and found no kept
/// handle still at its path, so an identity outlives a
/// directory replaced at its path only as long as the kept handle's very file is found
/// in the new one. Even then each append holds the file's `flock`, which excludes any
/// other handle (another process's, or this one's under another key).
pub(crate) fn lock_file_cached(
    ops: &dyn FileOps,
    dir: &Path,
    name: &std::ffi::OsStr,
    deadline: Option<Instant>,
) -> Result<(FileGuard, bool), FsError> {
    let cached = relock(&DIRS).get(dir).copied();
    let (dev, ino) = match cached {
        Some(id) => id,
        None => {
            let id = dir_id(ops, dir)?;
            let mut dirs = relock(&DIRS);
            if dirs.len() >= MAX_DIRS {
                dirs.clear();
            }
            dirs.insert(dir.to_path_buf(), id);
            id
        }
    };
    let guard = lock_key(ops, (dev, ino, name.to_os_string()), dir, name, deadline)?;
    Ok((guard, cached.is_some()))
}

/// Drops `dir`'s identity from [`DIRS`]: its next append looks it up again.
pub(crate) fn forget_dir(dir: &Path) {
    relock(&DIRS).remove(dir);
}

/// The identities (device, inode) of the directories appended to, by path as spelt.
static DIRS: LazyLock<Mutex<HashMap<PathBuf, (u64, u64)>>> = LazyLock::new(Mutex::default);

/// [`DIRS`] is emptied when it reaches this size (a directory then costs a `stat` again).
const MAX_DIRS: usize = 1024;

/// The device and inode of directory `dir` (one `stat`, following symlinks).
fn dir_id(ops: &dyn FileOps, dir: &Path) -> Result<(u64, u64), FsError> {
    let meta = ops
        .metadata(dir)
        .map_err(|e| FsError::new(dir, Step::Inspect, e))?;
    Ok((meta.dev(), meta.ino()))
}

fn lock_key(
    ops: &dyn FileOps,
    key: (u64, u64, OsString),
    dir: &Path,
    name: &std::ffi::OsStr,
    deadline: Option<Instant>,
) -> Result<FileGuard, FsError> {
    let lock = FILE_LOCKS.get(key);
    let mut state = relock(&lock.state);
    if state.held {
        let path = dir.join(name);
        ops.will_wait(&path);
        state.waiting += 1;
        while state.held {
            state = match deadline {
                None => lock.released.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        state.waiting -= 1;
                        return Err(gave_up(&path, "the file's lock"));
                    };
                    lock.released
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        state.waiting -= 1;
    }
    state.held = true;
    drop(state);
    Ok(FileGuard { lock })
}
