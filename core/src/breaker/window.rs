//! A lock-free count window: the outcomes of the last `n` attempts.

use crate::sync::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, Ordering};

/// One recorded attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Sample {
    Empty = 0,
    Success = 1,
    Failure = 2,
    Slow = 3,
}

impl Sample {
    /// The sample a slot holds (its low two bits; the rest are the generation tag).
    fn from_u8(v: u8) -> Self {
        match v & SAMPLE_BITS {
            1 => Sample::Success,
            2 => Sample::Failure,
            3 => Sample::Slow,
            _ => Sample::Empty,
        }
    }
}

/// The bits of a slot that hold its [`Sample`]; the six above them hold the low bits of
/// the generation that pushed it, so the push of a generation that has since ended can
/// take back its own sample and no other (see [`CountWindow::undo`]).
const SAMPLE_BITS: u8 = 0b11;

/// A slot's byte: `sample` pushed by `generation`.
fn slot_byte(sample: Sample, generation: u64) -> u8 {
    if sample == Sample::Empty {
        return Sample::Empty as u8;
    }
    sample as u8 | ((generation as u8) << 2)
}

/// A push that wrote a slot: what [`CountWindow::undo`] needs to take it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a push of a generation that ended must be undone"]
pub(crate) struct Written {
    index: u32,
    byte: u8,
    /// Where the push left the cursor (`None`: it wrapped, and set `full`).
    cursor_after: Option<u32>,
}

/// What the window holds right after a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// A ring of the last `len` samples with running totals.
///
/// A push advances the cursor with a relaxed load and store, not a read-modify-write:
/// under contention two pushes may land on the same slot (one sample is lost), which a
/// statistical window tolerates, and the healthy path — a success written over a
/// success — then costs no locked instruction at all. A slot whose sample changes is
/// written with `swap`, and the totals are corrected by the sample actually evicted, so
/// they always equal what the ring holds once concurrent pushes have finished: they can
/// be briefly off by a racing sample (hence signed and clamped), never drift.
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// The slot the next push writes, always in `0..len` (no division on the hot path).
    next: AtomicU32,
    /// Set once the cursor has wrapped: every slot holds a sample.
    full: AtomicBool,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl CountWindow {
    pub(crate) fn new(len: u32) -> Self {
        Self {
            slots: (0..len.max(1))
                .map(|_| AtomicU8::new(Sample::Empty as u8))
                .collect(),
            next: AtomicU32::new(0),
            full: AtomicBool::new(false),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    /// Whether every slot holds a success: a success pushed now changes nothing.
    #[inline]
    pub(crate) fn holds_only_successes(&self) -> bool {
        self.full.load(Ordering::Relaxed)
            && self.failures.load(Ordering::Acquire) == 0
            && self.slow.load(Ordering::Acquire) == 0
    }

    /// Records `sample`, pushed by a permit of `generation`. Returns the counts, and
    /// the slot written (`None` when nothing was written: the slot already held it).
    #[inline]
    pub(crate) fn push(&self, sample: Sample, generation: u64) -> (Counts, Option<Written>) {
        let len = self.slots.len();
        // NOTE: a success pushed into a full window of successes leaves it as it was,
        // wherever the cursor stands: skip the cursor's store, the one write a healthy
        // call made to a line every core shares. A racing push that has swapped its
        // slot but not yet counted it is missed, as a racing push already may be.
        if sample == Sample::Success && self.holds_only_successes() {
            let counts = Counts {
                calls: len as u64,
                failures: 0,
                slow: 0,
            };
            return (counts, None);
        }
        let index = (self.next.load(Ordering::Relaxed) as usize).min(len - 1);
        let mut full = self.full.load(Ordering::Relaxed);
        let cursor_after = if index + 1 == len {
            self.next.store(0, Ordering::Relaxed);
            if !full {
                self.full.store(true, Ordering::Relaxed);
                full = true;
            }
            None
        } else {
            self.next.store(index as u32 + 1, Ordering::Relaxed);
            Some(index as u32 + 1)
        };
        let slot = &self.slots[index];
        let byte = slot_byte(sample, generation);
        let (evicted, written) = if slot.load(Ordering::Acquire) == byte {
            (sample, None) // unchanged: nothing to write, totals stay right
        } else {
            let evicted = Sample::from_u8(slot.swap(byte, Ordering::AcqRel));
            let written = Written {
                index: index as u32,
                byte,
                cursor_after,
            };
            (evicted, Some(written))
        };
        let failures = Self::adjust(&self.failures, evicted, sample, Sample::Failure);
        let slow = Self::adjust(&self.slow, evicted, sample, Sample::Slow);
        let counts = Counts {
            calls: if full { len as u64 } else { index as u64 + 1 },
            failures,
            slow,
        };
        (counts, written)
    }

    /// Takes back a push whose generation ended while it was being counted: a reset or
    /// a transition [`clear`](Self::clear)ed the window for a new generation, and this
    /// push may have landed after the clear.
    ///
    /// NOTE: the slot is emptied only if it still holds this push's own byte (sample and
    /// generation tag): if a clear or a later push changed it since, whoever changed it
    /// evicted this sample and corrected the totals for it, and the new generation's
    /// sample there must stay. The cursor goes back only if no push moved it since; a
    /// push that wrapped the ring leaves it (the new generation then counts one empty
    /// slot as a call until the ring turns: a statistical window already tolerates a
    /// lost sample under contention).
    pub(crate) fn undo(&self, written: Written) {
        let slot = &self.slots[written.index as usize];
        if slot
            .compare_exchange(
                written.byte,
                Sample::Empty as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            let sample = Sample::from_u8(written.byte);
            Self::adjust(&self.failures, sample, Sample::Empty, Sample::Failure);
            Self::adjust(&self.slow, sample, Sample::Empty, Sample::Slow);
        }
        if let Some(after) = written.cursor_after {
            let _ = self
                .next
                .compare_exchange(after, written.index, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    #[inline]
    fn adjust(total: &AtomicI64, evicted: Sample, written: Sample, kind: Sample) -> u64 {
        let delta = i64::from(written == kind) - i64::from(evicted == kind);
        let now = if delta == 0 {
            total.load(Ordering::Acquire)
        } else {
            total.fetch_add(delta, Ordering::AcqRel) + delta
        };
        now.max(0) as u64
    }

    /// Forgets every sample (on closing or a reset). Called under the breaker's lock,
    /// but pushes are lock-free and may race it.
    ///
    /// NOTE: every slot is emptied with `swap` and the totals corrected by what each held,
    /// exactly as a push corrects them for the sample it evicts: whoever changes a slot
    /// accounts for that change, once. Storing 0 into the totals instead lost the
    /// correction of a push that had swapped its slot but not yet counted it: after the
    /// push, the totals were off by one for good (a failure never counted, or counted
    /// twice), until the next clear.
    pub(crate) fn clear(&self) {
        for slot in self.slots.iter() {
            let held = Sample::from_u8(slot.swap(Sample::Empty as u8, Ordering::AcqRel));
            Self::adjust(&self.failures, held, Sample::Empty, Sample::Failure);
            Self::adjust(&self.slow, held, Sample::Empty, Sample::Slow);
        }
        self.next.store(0, Ordering::Release);
        self.full.store(false, Ordering::Release);
    }

    /// Failures the totals hold (for the model checks).
    #[cfg(all(test, stayfast_loom))]
    pub(crate) fn failures(&self) -> i64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Whether the totals equal what the slots hold (true once no push is in progress).
    #[cfg(test)]
    pub(crate) fn totals_match_slots(&self) -> bool {
        let count = |kind: Sample| {
            self.slots
                .iter()
                .filter(|s| Sample::from_u8(s.load(Ordering::Acquire)) == kind)
                .count() as i64
        };
        self.failures.load(Ordering::Acquire) == count(Sample::Failure)
            && self.slow.load(Ordering::Acquire) == count(Sample::Slow)
    }
}

#[cfg(all(test, not(stayfast_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_success_into_a_window_of_successes_writes_nothing() {
        let w = CountWindow::new(3);
        for _ in 0..3 {
            let _ = w.push(Sample::Success, 0);
        }
        let cursor = w.next.load(Ordering::Relaxed);
        let c = w.push(Sample::Success, 0).0;
        assert_eq!((c.calls, c.failures, c.slow), (3, 0, 0));
        assert_eq!(w.next.load(Ordering::Relaxed), cursor, "the cursor did not move");
        // The next failure still counts, and leaves its window of three.
        assert_eq!(w.push(Sample::Failure, 0).0.failures, 1);
        for _ in 0..3 {
            let _ = w.push(Sample::Success, 0);
        }
        assert_eq!(w.push(Sample::Success, 0).0.failures, 0);
    }

    #[test]
    fn counts_only_the_last_len_samples() {
        let w = CountWindow::new(3);
        assert_eq!(w.push(Sample::Failure, 0).0.failures, 1);
        assert_eq!(w.push(Sample::Failure, 0).0.failures, 2);
        let c = w.push(Sample::Slow, 0).0;
        assert_eq!((c.calls, c.failures, c.slow), (3, 2, 1));
        // The fourth push evicts the first failure.
        let c = w.push(Sample::Success, 0).0;
        assert_eq!((c.calls, c.failures, c.slow), (3, 1, 1));
        w.clear();
        assert!(w.totals_match_slots());
        assert_eq!(w.push(Sample::Success, 0).0.calls, 1);
    }
}
