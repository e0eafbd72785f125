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
