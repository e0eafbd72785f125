//! [`Batch`]: call records that wait in per-thread stripes before reaching the recorder.
//!
//! Every series of a `metrics` recorder is one set of atomics shared by all threads:
//! with two cores calling the same operation, each record moves those cache lines from
//! one core to the other. Measured on the project's 2-core machine with the Prometheus
//! recorder (`cargo bench -p stayfast-benches --bench metrics_contention`), one call's
//! record (its duration and outcome) took 46 ns from one thread, 47–50 ns per thread
//! from two writing a series each, and 128–133 ns per thread from two writing the same
//! series. A batch keeps each thread's records in a stripe of its own
//! and writes them in one burst, so the shared lines move once per burst instead of once
//! per call. The price is a delay before the recorder sees them: at most [`MAX_DELAY`]
//! while calls flow, and until the next flush when they stop.

use std::{
    mem,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    Outcome,
    sync::{SHARDS, this_threads_shard},
};

/// Records a stripe holds before it is written.
pub(crate) const CAPACITY: usize = 64;

/// How long a record may wait in a stripe while calls keep coming.
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(100);

/// Per-thread stripes of records not yet written.
#[derive(Default)]
pub(crate) struct Batch {
    stripes: [Stripe; SHARDS],
}

/// One thread's records, on a cache line (pair) of its own.
#[derive(Default)]
#[repr(align(128))]
struct Stripe(Mutex<Pending>);

/// Records waiting to be written to the recorder.
#[derive(Default)]
pub(crate) struct Pending {
    /// Durations of finished calls, in seconds.
    pub(crate) durations: Vec<f64>,
    /// Finished calls by outcome (indexed like [`Outcome::ALL`]).
    pub(crate) calls: [u64; Outcome::ALL.len()],
    /// Attempts made by those calls (a batched call's attempts are counted when it
    /// ends, with it).
    pub(crate) attempts: u64,
    /// When the oldest record here was made.
    since: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.since.is_none()
    }

    /// Takes the records, leaving room for the next batch.
    fn take(&mut self) -> Pending {
        mem::replace(
            self,
            Pending {
                durations: Vec::with_capacity(CAPACITY),
                ..Pending::default()
            },
        )
    }
}

/// Locks a stripe, ignoring poisoning: no critical section here can panic half-way.
/// (std's mutex, not [`crate::sync`]'s, which is loom's in model-checking builds.)
fn lock(stripe: &Stripe) -> MutexGuard<'_, Pending> {
    stripe.0.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batch {
    fn stripe(&self) -> MutexGuard<'_, Pending> {
        lock(&self.stripes[this_threads_shard()])
    }

    /// Adds a call that finished at `now` after `attempts` attempts; hands back the
    /// stripe's records when they are due: [`CAPACITY`] of them, or the oldest
    /// [`MAX_DELAY`] old.
    pub(crate) fn call(
        &self,
        outcome: Outcome,
        elapsed: Duration,
        attempts: u64,
        now: Instant,
    ) -> Option<Pending> {
        let mut pending = self.stripe();
        pending.durations.push(elapsed.as_secs_f64());
        pending.calls[outcome.index()] += 1;
        pending.attempts += attempts;
        let since = *pending.since.get_or_insert(now);
        let due = pending.durations.len() >= CAPACITY || now.saturating_duration_since(since) >= MAX_DELAY;
        due.then(|| pending.take())
    }

    /// Takes every stripe's records.
    pub(crate) fn drain(&self) -> impl Iterator<Item = Pending> + '_ {
        self.stripes.iter().filter_map(|stripe| {
            let mut pending = lock(stripe);
            (!pending.is_empty()).then(|| pending.take())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripe_is_due_when_full() {
        let batch = Batch::default();
        let now = Instant::now();
        for _ in 0..CAPACITY - 1 {
            assert!(
                batch
                    .call(Outcome::Success, Duration::from_millis(1), 1, now)
                    .is_none()
            );
        }
        let due = batch
            .call(Outcome::Failure, Duration::from_millis(2), 3, now)
            .expect("full");
        assert_eq!(due.durations.len(), CAPACITY);
        assert_eq!(due.attempts, CAPACITY as u64 + 2);
        assert_eq!(due.calls[Outcome::Success.index()], CAPACITY as u64 - 1);
        assert_eq!(due.calls[Outcome::Failure.index()], 1);
        assert_eq!(batch.drain().count(), 0, "nothing left behind");
    }

    #[test]
    fn a_stripe_is_due_when_its_oldest_record_is_old() {
        let batch = Batch::default();
        let start = Instant::now();
        assert!(batch.call(Outcome::Success, Duration::ZERO, 1, start).is_none());
        assert!(
            batch
                .call(Outcome::Success, Duration::ZERO, 1, start + MAX_DELAY / 2)
                .is_none()
        );
        let due = batch
            .call(Outcome::Success, Duration::ZERO, 1, start + MAX_DELAY)
            .expect("the first call waited MAX_DELAY");
        assert_eq!((due.attempts, due.durations.len()), (3, 3));
    }

    #[test]
    fn drain_takes_what_waits() {
        let batch = Batch::default();
        assert!(
            batch
                .call(Outcome::Cancelled, Duration::ZERO, 0, Instant::now())
                .is_none()
        );
        let drained: Vec<_> = batch.drain().collect();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].calls[Outcome::Cancelled.index()], 1);
        assert_eq!(batch.drain().count(), 0);
    }
}
