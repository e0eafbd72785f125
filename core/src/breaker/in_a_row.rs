//! The closed state's count of failures in a row, tagged with its generation.

use crate::sync::{AtomicU64, Ordering};

/// Failures in a row, packed with the generation they count for: the low 32 bits of the
/// generation in the high half, the count in the low half.
///
/// NOTE: a permit checks its generation before it records, but a reset can end that
/// generation between the check and the count. A plain counter then carried the stale
/// failure into the new generation (which a reset promises starts from zero). With the
/// tag, a failure counts only while the counter still belongs to the permit's
/// generation, in one compare-and-swap; the transition restarts the counter under the
/// new tag. Generations 2³² apart share a tag: a permit would have to outlive four
/// billion transitions.
pub(crate) struct InARow;

impl InARow {
    /// A counter at zero for `generation`.
    pub(crate) fn start(generation: u64) -> u64 {
        u64::from(generation as u32) << 32
    }

    /// The count a packed value holds.
    pub(crate) fn count(packed: u64) -> u32 {
        packed as u32
    }

    fn belongs_to(packed: u64, generation: u64) -> bool {
        packed >> 32 == u64::from(generation as u32)
    }

    /// Restarts the count at zero for `generation` (a transition to closed, or a reset).
    pub(crate) fn restart(counter: &AtomicU64, generation: u64) {
        // NOTE: a swap where a store would do: loom (tokio-rs/loom#254) lets a plain
        // store land between the read and the write of a compare-and-swap, a history no
        // processor allows, and the model check then reports a stale failure counted.
        // On this cold path the swap costs nothing.
        counter.swap(Self::start(generation), Ordering::AcqRel);
    }

    /// Counts a failure of `generation`: the failures in a row now, or `None` when the
    /// counter has moved on to another generation (the failure is stale).
    pub(crate) fn failure(counter: &AtomicU64, generation: u64) -> Option<u32> {
        let mut packed = counter.load(Ordering::Acquire);
        loop {
            if !Self::belongs_to(packed, generation) {
                return None;
            }
            let count = Self::count(packed).saturating_add(1);
            let next = Self::start(generation) | u64::from(count);
            match counter.compare_exchange_weak(packed, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(count),
                Err(now) => packed = now,
            }
        }
    }

    /// A success of `generation` ends the run of failures. Skips the write when there
    /// is nothing to end (the healthy path writes nothing to the shared line), and
    /// changes nothing once the counter belongs to another generation.
    #[inline]
    pub(crate) fn success(counter: &AtomicU64, generation: u64) {
        let packed = counter.load(Ordering::Relaxed);
        if Self::count(packed) != 0 && Self::belongs_to(packed, generation) {
            // A failure that won the race is newer than this success: keep it.
            let _ = counter.compare_exchange(
                packed,
                Self::start(generation),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
}

#[cfg(all(test, not(stayfast_loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_only_its_generation() {
        let counter = AtomicU64::new(InARow::start(7));
        assert_eq!(InARow::failure(&counter, 7), Some(1));
        assert_eq!(InARow::failure(&counter, 7), Some(2));
        assert_eq!(InARow::failure(&counter, 6), None, "a stale failure");
        InARow::success(&counter, 6); // stale: changes nothing
        assert_eq!(InARow::count(counter.load(Ordering::Relaxed)), 2);
        InARow::success(&counter, 7);
        assert_eq!(InARow::count(counter.load(Ordering::Relaxed)), 0);
        InARow::restart(&counter, 9);
        assert_eq!(InARow::failure(&counter, 7), None);
        assert_eq!(InARow::failure(&counter, 9), Some(1));
    }
}
