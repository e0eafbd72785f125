//! The spawner's admission word: the closed flag and the in-flight count in one atomic,
//! so that closing and reserving a slot are ordered against each other (issue #12
//! item 5).
//!
//! With the two as separate atomics, a `spawn` could read "open", then `shutdown`
//! close and see nothing in flight and return, and only then the `spawn` take its
//! slot: a task started after `shutdown` had returned. In one word, a reservation is
//! a compare-and-swap that fails once the closed bit is set, so it either happened
//! before the close (and `shutdown` counts and waits for it) or is refused.

use super::SpawnError;
use crate::sync::{AtomicU64, Ordering};

/// The closed flag; the bits below it are the in-flight count (at most `u32::MAX`).
const CLOSED: u64 = 1 << 63;

/// Whether the spawner is closed and how many tasks hold a slot, in one word.
pub(super) struct Admission {
    state: AtomicU64,
    capacity: u64,
}

impl Admission {
    /// Open, with nothing in flight and room for `capacity` tasks.
    pub(super) fn new(capacity: u32) -> Self {
        Self {
            state: AtomicU64::new(0),
            capacity: u64::from(capacity),
        }
    }

    /// Takes a slot, unless closed or full. The caller must [`release`](Self::release)
    /// it when its task ends.
    pub(super) fn try_reserve(&self) -> Result<(), SpawnError> {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state & CLOSED == 0 && state < self.capacity).then_some(state + 1)
            })
            .map(drop)
            .map_err(|state| {
                if state & CLOSED == 0 {
                    SpawnError::Shed
                } else {
                    SpawnError::ShutDown
                }
            })
    }

    /// Gives back a slot taken by [`try_reserve`](Self::try_reserve).
    pub(super) fn release(&self) {
        self.state.fetch_sub(1, Ordering::AcqRel);
    }

    /// Refuses every later reservation; returns how many slots were held at that moment.
    pub(super) fn close(&self) -> usize {
        count(self.state.fetch_or(CLOSED, Ordering::AcqRel))
    }

    /// Slots held now.
    pub(super) fn in_flight(&self) -> usize {
        count(self.state.load(Ordering::Acquire))
    }

    /// Whether [`close`](Self::close) has been called.
    pub(super) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }
}

/// The in-flight count in `state` (below 2³², so it fits any `usize` of 32 bits or more).
fn count(state: u64) -> usize {
    usize::try_from(state & !CLOSED).unwrap_or(usize::MAX)
}

#[cfg(all(test, stayfast_loom))]
mod loom_tests {
    use loom::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        thread,
    };

    use super::Admission;

    /// Issue #12 item 5: a `spawn` racing `shutdown`. `shutdown` closes, and returns
    /// at once when it then sees nothing in flight; a `spawn` that got a slot must never
    /// find that `shutdown` had already returned: its task would run after it.
    #[test]
    fn loom_no_slot_is_reserved_after_shutdown_saw_none_in_flight() {
        loom::model(|| {
            let admission = Arc::new(Admission::new(4));
            let returned = Arc::new(AtomicBool::new(false));
            let spawner = {
                let (admission, returned) = (Arc::clone(&admission), Arc::clone(&returned));
                thread::spawn(move || {
                    let late = admission.try_reserve().is_ok() && returned.load(Ordering::SeqCst);
                    assert!(!late, "a task was admitted after shutdown returned");
                })
            };
            admission.close();
            if admission.in_flight() == 0 {
                returned.store(true, Ordering::SeqCst);
            }
            spawner.join().expect("spawner thread");
            assert!(admission.is_closed());
        });
    }
}
