//! The synchronisation primitives the breaker is built on: std's, or loom's when the
//! crate is compiled with `--cfg stayfast_loom` for model checking.

#[cfg(stayfast_loom)]
pub(crate) use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering},
};
#[cfg(not(stayfast_loom))]
pub(crate) use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering},
};

/// Locks `mutex`, ignoring poisoning: every critical section in this crate leaves its
/// data consistent before anything that could panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many ways [`this_threads_shard`] spreads threads: enough that a runtime's worker
/// threads rarely share a shard.
pub(crate) const SHARDS: usize = 8;

/// The shard of the calling thread, in `0..SHARDS`: threads take shards in turn, so
/// state split by shard is written by one thread at a time, mostly, and its cache line
/// does not bounce between cores on every call.
pub(crate) fn this_threads_shard() -> usize {
    // std's atomics by full path: this module's own names are loom's under model checking.
    use std::cell::Cell;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD.with(|shard| match shard.get() {
        Some(index) => index,
        None => {
            let index = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS;
            shard.set(Some(index));
            index
        }
    })
}
