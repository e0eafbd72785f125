//! [`Backstop`]: one coarse timer for many deadlines that the operations enforce
//! themselves.
//!
//! A client that takes a deadline (fred's `Options::timeout`) already ends its call in
//! time; stayfast's own timer is then only a safety net for the case the client does
//! not. A tokio timer per call for that net is not free: every timer is inserted into
//! and removed from the runtime's timer wheel under one lock, and with fifty callers on
//! two cores a second timer per Redis command cost about 1 µs of client CPU per call
//! (the project's Redis benchmark; fred's own deadline timer costs as much again). A
//! backstop replaces those timers by one sweeper task per handle, which wakes every
//! `tick` and ends the calls whose deadline has passed. A call costs two
//! uncontended lock operations on a shard picked by the calling thread; it ends at most
//! one `tick` after its deadline if its client failed to end it first.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
    time::Duration,
};

use pin_project::{pin_project, pinned_drop};
use tokio::{
    sync::Notify,
    task::AbortHandle,
    time::{Instant, sleep},
};

use crate::{
    Elapsed, Name,
    sync::{SHARDS, this_threads_shard},
};

/// Locks a shard, ignoring poisoning: no critical section here can panic half-way.
/// (std's mutex, not [`crate::sync`]'s, which is loom's in model-checking builds: the
/// backstop is not model-checked and runs on tokio.)
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Deadlines enforced by one sweeper task; cheap to clone. The sweeper runs until its
/// owner aborts it (or the runtime it was started on shuts down).
#[derive(Clone)]
pub(crate) struct Backstop {
    shared: Arc<Shared>,
}

struct Shared {
    shards: [Mutex<Registry>; SHARDS],
    tick: Duration,
    /// Woken when a call registers into an empty shard, so an idle sweeper sleeps
    /// without ticking.
    work: Notify,
}

/// The calls of one shard waiting on their deadline: a slab of slots, reused.
#[derive(Default)]
struct Registry {
    slots: Vec<Option<Waiting>>,
    free: Vec<usize>,
    len: usize,
}

struct Waiting {
    deadline: Instant,
    waker: Waker,
}

impl Registry {
    fn insert(&mut self, waiting: Waiting) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(waiting);
                key
            }
            None => {
                self.slots.push(Some(waiting));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if self.slots.get_mut(key).and_then(Option::take).is_some() {
            self.len -= 1;
            self.free.push(key);
        }
    }
}

impl Backstop {
    /// Starts the sweeper, waking overdue calls every `tick` while any is registered;
    /// its handle is for the owner to abort (the sweeper keeps the registry alive until
    /// then). Must be called inside a tokio runtime.
    pub(crate) fn start(tick: Duration) -> (Self, AbortHandle) {
        let shared = Arc::new(Shared {
            shards: Default::default(),
            tick: tick.max(Duration::from_millis(1)),
            work: Notify::new(),
        });
        let sweeper = tokio::spawn(sweep(Arc::clone(&shared))).abort_handle();
        (Self { shared }, sweeper)
    }

    /// The time between two sweeps: how late after its deadline a call can end.
    #[cfg(test)]
    pub(crate) fn tick(&self) -> Duration {
        self.shared.tick
    }

    /// Bounds `future` by `deadline`, coarsely: it ends with [`Elapsed`] (reporting
    /// `after` as the bound) at most one tick after the deadline, unless it finished
    /// first.
    #[inline]
    pub(crate) fn guard<F: Future>(
        &self,
        future: F,
        deadline: Instant,
        after: Duration,
    ) -> Backstopped<'_, F> {
        Backstopped {
            inner: Some(future),
            backstop: self,
            guard: Guard::new(deadline, after),
        }
    }
}

impl fmt::Debug for Backstop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backstop")
            .field("tick", &self.shared.tick)
            .finish_non_exhaustive()
    }
}

/// The sweeper: sleeps while nothing is registered; else wakes the overdue every tick.
async fn sweep(shared: Arc<Shared>) {
    loop {
        // NOTE: the `Notified` exists before the emptiness check, and `notify_one`
        // leaves a permit when nobody waits: a registration racing the check is not lost.
        let work = shared.work.notified();
        if shared.shards.iter().all(|shard| lock(shard).len == 0) {
            work.await;
            continue;
        }
        drop(work);
        sleep(shared.tick).await;
        let now = Instant::now();
        for shard in &shared.shards {
            for waiting in lock(shard).slots.iter().flatten() {
                if waiting.deadline <= now {
                    // The call sees its deadline passed on this poll and unregisters.
                    waiting.waker.wake_by_ref();
                }
            }
        }
    }
}

/// A future bounded by a [`Backstop`]; resolves to `Ok(output)` or `Err(`[`Elapsed`]`)`.
///
/// The inner future is polled first, so an output ready at the deadline wins; the
/// call registers with the backstop at its first `Pending` only.
///
/// # Cancellation
///
/// Dropping it drops the inner future and unregisters the call.
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub(crate) struct Backstopped<'a, F> {
    #[pin]
    inner: Option<F>,
    backstop: &'a Backstop,
    guard: Guard,
}

impl<F: Future> Future for Backstopped<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            panic!("`Backstopped` polled after completion");
        };
        let result = std::task::ready!(this.guard.poll(this.backstop, inner, cx));
        this.inner.set(None); // a late one's inner future dropped before it reports
        Poll::Ready(result)
    }
}

#[pinned_drop]
impl<F> PinnedDrop for Backstopped<'_, F> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        this.guard.release(this.backstop);
    }
}

impl<F> fmt::Debug for Backstopped<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backstopped")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

/// A call's entry in a backstop's registry, kept apart from the future it bounds: for
/// a future that reaches the backstop through what it owns (a policy call holds its
/// policy, and so the backstop) and hands it to each [`poll`](Guard::poll) — a borrow
/// kept in the future itself would make it refer to itself. Its owner must
/// [`release`](Guard::release) it before dropping it: a guard dropped registered leaves
/// its entry to the sweeper, which would wake the call's task after its deadline for
/// nothing (debug builds panic).
#[derive(Debug)]
pub(crate) struct Guard {
    deadline: Instant,
    after: Duration,
    /// Where the call is registered: its shard and its key there.
    slot: Option<(usize, usize)>,
}

impl Guard {
    /// A guard for a call to end by `deadline`, reporting `after` as its bound.
    #[inline]
    pub(crate) fn new(deadline: Instant, after: Duration) -> Self {
        Self {
            deadline,
            after,
            slot: None,
        }
    }

    /// Polls `future` under the guard: its output, or [`Elapsed`] once the deadline has
    /// passed (the caller then drops `future` before it reports). The call registers
    /// with `backstop` at its first `Pending` and leaves it when it ends.
    #[inline]
    pub(crate) fn poll<F: Future>(
        &mut self,
        backstop: &Backstop,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<F::Output, Elapsed>> {
        let shared = &*backstop.shared;
        if let Poll::Ready(output) = future.poll(cx) {
            unregister(shared, &mut self.slot);
            return Poll::Ready(Ok(output));
        }
        match self.slot {
            None => {
                let shard = this_threads_shard();
                let mut registry = lock(&shared.shards[shard]);
                let key = registry.insert(Waiting {
                    deadline: self.deadline,
                    waker: cx.waker().clone(),
                });
                let first = registry.len == 1;
                drop(registry);
                self.slot = Some((shard, key));
                if first {
                    shared.work.notify_one();
                }
            }
            // A later poll (rare: a reply normally makes the inner future ready): woken
            // by the sweeper, spuriously, or by a task whose waker changed.
            Some((shard, key)) => {
                if Instant::now() >= self.deadline {
                    unregister(shared, &mut self.slot);
                    return Poll::Ready(Err(Elapsed::new(Name::new_static("future"), self.after)));
                }
                if let Some(Some(waiting)) = lock(&shared.shards[shard]).slots.get_mut(key)
                    && !waiting.waker.will_wake(cx.waker())
                {
                    waiting.waker = cx.waker().clone();
                }
            }
        }
        Poll::Pending
    }

    /// Leaves `backstop`'s registry, if the call is in it.
    #[inline]
    pub(crate) fn release(&mut self, backstop: &Backstop) {
        unregister(&backstop.shared, &mut self.slot);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        debug_assert!(
            self.slot.is_none() || std::thread::panicking(),
            "a backstop guard dropped while registered"
        );
    }
}

fn unregister(shared: &Shared, slot: &mut Option<(usize, usize)>) {
    if let Some((shard, key)) = slot.take() {
        lock(&shared.shards[shard]).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;

    fn registered(backstop: &Backstop) -> usize {
        backstop.shared.shards.iter().map(|s| lock(s).len).sum()
    }

    #[tokio::test(start_paused = true)]
    async fn ends_a_hung_call_within_one_tick_of_its_deadline() {
        let (backstop, sweeper) = Backstop::start(Duration::from_millis(25));
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        let err = backstop
            .guard(pending::<()>(), deadline, Duration::from_millis(100))
            .await
            .expect_err("a hung call ends at the backstop");
        let took = started.elapsed();
        assert_eq!(err.after(), Duration::from_millis(100));
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took <= Duration::from_millis(125), "{took:?}");
        assert_eq!(registered(&backstop), 0);
        sweeper.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_finishes_in_time_is_unregistered() {
        let (backstop, _sweeper) = Backstop::start(Duration::from_millis(25));
        let deadline = Instant::now() + Duration::from_secs(1);
        let reply = async {
            sleep(Duration::from_millis(10)).await;
            7
        };
        assert_eq!(
            backstop.guard(reply, deadline, Duration::from_secs(1)).await,
            Ok(7)
        );
        assert_eq!(registered(&backstop), 0);
        // A ready future never registers.
        assert_eq!(
            backstop
                .guard(async { 8 }, deadline, Duration::from_secs(1))
                .await,
            Ok(8)
        );
        assert_eq!(registered(&backstop), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_is_unregistered_and_slots_are_reused() {
        let (backstop, _sweeper) = Backstop::start(Duration::from_millis(25));
        let deadline = Instant::now() + Duration::from_secs(1);
        for _ in 0..100 {
            let call = backstop.guard(pending::<()>(), deadline, Duration::from_secs(1));
            assert!(
                tokio::time::timeout(Duration::from_millis(1), call)
                    .await
                    .is_err()
            );
        }
        assert_eq!(registered(&backstop), 0);
        let slots: usize = backstop.shared.shards.iter().map(|s| lock(s).slots.len()).sum();
        assert!(slots <= 2, "{slots} slots for one call at a time");
    }

    #[tokio::test(start_paused = true)]
    async fn many_calls_each_end_at_their_own_deadline() {
        let (backstop, _sweeper) = Backstop::start(Duration::from_millis(10));
        let started = Instant::now();
        let calls = (1..=50u64).map(|i| {
            let backstop = backstop.clone();
            tokio::spawn(async move {
                let after = Duration::from_millis(20 * i);
                let _ = backstop.guard(pending::<()>(), started + after, after).await;
                (after, started.elapsed())
            })
        });
        for call in calls.collect::<Vec<_>>() {
            let (after, took) = call.await.expect("the call's task");
            assert!(
                took >= after && took <= after + Duration::from_millis(10),
                "{after:?}: {took:?}"
            );
        }
        assert_eq!(registered(&backstop), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_after_an_idle_spell_is_still_ended() {
        let (backstop, _sweeper) = Backstop::start(Duration::from_millis(10));
        let deadline = Instant::now() + Duration::from_millis(30);
        assert!(
            backstop
                .guard(pending::<()>(), deadline, Duration::from_millis(30))
                .await
                .is_err()
        );
        // Nothing registered: the sweeper waits for work instead of ticking.
        sleep(Duration::from_secs(60)).await;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(30);
        assert!(
            backstop
                .guard(pending::<()>(), deadline, Duration::from_millis(30))
                .await
                .is_err()
        );
        assert!(started.elapsed() <= Duration::from_millis(30) + backstop.tick());
    }
}
