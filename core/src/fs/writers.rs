//! The appenders' own threads: a few long-lived threads fed through one FIFO queue, so
//! that appends to many files share their fsyncs' cost.
//!
//! Why not one `spawn_blocking` per append: with hundreds of appends in flight, each
//! one woke a pool thread of its own (a futex wake, two context switches) and all of
//! them sat in `fsync` at once, the file system's journal serialising them. Here an
//! append is two jobs: its write (under the file's locks, which it keeps), then, queued
//! *behind* the writes already waiting, its fsync. A busy thread takes the next job
//! without sleeping, and by the time an fsync runs, the writes queued before it are in
//! the same journal transaction: the first fsync commits them all, and the others find
//! their file committed already. Each caller is still answered only after the fsync of
//! its own file returned.
//!
//! A thread stuck in a hung file (a dead NFS server, a stuck disk) holds only the job
//! it runs: the others stay queued for the other threads, and a job pushed while a
//! thread has been stuck in one job for [`STALLED`] gets a new thread in its place (up
//! to [`MAX_THREADS`], as many as tokio's blocking pool allows), so a hung file delays
//! no other file for longer than that. Threads beyond [`CORE_THREADS`] end after
//! [`KEEP_ALIVE`] idle.

use std::{
    collections::VecDeque,
    sync::{Condvar, LazyLock, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// A job: a whole operation, or one stage of an append.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads kept even when idle: enough to keep the disk busy, few enough that a busy
/// thread finds the next job queued rather than sleeping between jobs. Measured with
/// 200 sessions appending (`benches/transcripts`, 2 vCPUs, ext4): 2 threads starve the
/// disk, 4 and 8 cost more CPU per append than 16 and 32, 32 the least.
const CORE_THREADS: usize = 32;

/// The most threads at once (tokio's blocking pool allows as many).
const MAX_THREADS: usize = 512;

/// A thread busy with one job this long counts as stuck: a job pushed then gets a new
/// thread. Longer than a slow fsync under load, far shorter than a write deadline.
pub(crate) const STALLED: Duration = Duration::from_millis(50);

/// How long a thread beyond [`CORE_THREADS`] waits for a job before it ends.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads waiting for a job, and not yet woken for one.
    idle: usize,
    /// Wake-ups sent and not yet taken by a thread (a woken thread tells them from a
    /// spurious wake-up by this count).
    notified: usize,
    /// The threads, by slot.
    slots: Vec<Slot>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// No thread.
    Free,
    /// Waiting for a job.
    Idle,
    /// Running a job since then (or starting).
    Busy(Instant),
}

static POOL: LazyLock<Pool> = LazyLock::new(|| Pool {
    state: Mutex::new(State::default()),
    work: Condvar::new(),
});

fn lock(pool: &Pool) -> MutexGuard<'_, State> {
    // A queue and counters, each changed in one step: no invariant a panic breaks.
    pool.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queues `job` behind every job queued before it; it runs on a thread of the pool.
///
/// A job pushed when no thread is idle starts a thread while fewer than
/// [`CORE_THREADS`] run that are not stuck (see [`STALLED`]). When no thread can be
/// started (the system refuses) and none runs, the job runs on tokio's blocking pool
/// instead, or, outside a runtime, right here.
pub(crate) fn push(job: Job) {
    let pool = &*POOL;
    let mut state = lock(pool);
    state.queue.push_back(job);
    if state.idle > 0 {
        state.idle -= 1;
        state.notified += 1;
        // Woken only when someone sleeps: a notify is a system call even with nobody
        // to wake, and a busy pool takes the job on its own.
        drop(state);
        pool.work.notify_one();
        return;
    }
    let now = Instant::now();
    let (mut live, mut stuck) = (0, 0);
    for slot in &state.slots {
        match slot {
            Slot::Free => {}
            Slot::Idle => live += 1,
            Slot::Busy(since) => {
                live += 1;
                if now.saturating_duration_since(*since) >= STALLED {
                    stuck += 1;
                }
            }
        }
    }
    if live >= MAX_THREADS || live - stuck >= CORE_THREADS {
        return;
    }
    let slot = match state.slots.iter().position(|s| *s == Slot::Free) {
        Some(free) => free,
        None => {
            state.slots.push(Slot::Free);
            state.slots.len() - 1
        }
    };
    // NOTE: taken before the thread exists, so a second push cannot pick the slot too.
    state.slots[slot] = Slot::Busy(now);
    drop(state);
    let spawned = std::thread::Builder::new()
        .name("stayfast-fs".to_owned())
        .spawn(move || run(slot));
    if spawned.is_err() {
        let mut state = lock(pool);
        retire(&mut state, slot);
        if state.slots.iter().any(|s| *s != Slot::Free) {
            // A running thread will take it.
            return;
        }
        let Some(job) = state.queue.pop_back() else { return };
        drop(state);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(job)),
            Err(_) => job(),
        }
    }
}

/// A pool thread: runs queued jobs in order, sleeping only when none waits.
fn run(slot: usize) {
    let pool = &*POOL;
    let mut state = lock(pool);
    loop {
        let Some(job) = state.queue.pop_front() else {
            state.slots[slot] = Slot::Idle;
            state.idle += 1;
            loop {
                let timed_out = if slot < CORE_THREADS {
                    state = pool.work.wait(state).unwrap_or_else(|p| p.into_inner());
                    false
                } else {
                    let (next, waited) = pool
                        .work
                        .wait_timeout(state, KEEP_ALIVE)
                        .unwrap_or_else(|p| p.into_inner());
                    state = next;
                    waited.timed_out()
                };
                if state.notified > 0 {
                    state.notified -= 1;
                    break;
                }
                if timed_out {
                    state.idle -= 1;
                    retire(&mut state, slot);
                    return;
                }
                // A spurious wake-up: still idle.
            }
            continue;
        };
        state.slots[slot] = Slot::Busy(Instant::now());
        drop(state);
        // A job never unwinds into the pool: its result goes to its caller, and a
        // panic in it (a bug) would otherwise take a thread out for good.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        state = lock(pool);
    }
}

/// Frees an ending thread's slot (trailing free slots are dropped, so the slot list
/// follows the number of threads).
fn retire(state: &mut State, slot: usize) {
    state.slots[slot] = Slot::Free;
    while state.slots.last() == Some(&Slot::Free) {
        state.slots.pop();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Barrier, mpsc};

    use super::*;

    /// Jobs run, and a job stuck longer than `STALLED` does not hold back the ones
    /// pushed after it, even with every core thread stuck.
    #[test]
    fn stuck_jobs_get_threads_in_their_place() {
        let release = Arc::new(Barrier::new(CORE_THREADS + 1));
        for _ in 0..CORE_THREADS {
            let release = Arc::clone(&release);
            push(Box::new(move || {
                release.wait();
            }));
        }
        std::thread::sleep(STALLED + Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        push(Box::new(move || tx.send(()).unwrap()));
        let served = rx.recv_timeout(Duration::from_secs(5));
        release.wait();
        served.expect("a job pushed while every core thread was stuck ran");
    }
}
