//! [`Call`]: a policy call's future, with its first attempt written out by hand.
//!
//! NOTE: why not one `async` block: every local of an `async` block that lives across
//! an await point lives in the future's memory, so the call's bookkeeping (the metrics'
//! start, the retry state, the bounds, the breaker permit, the timeout) was written
//! there and read back on every call, with drop glue for each nested state: about 400
//! instructions on a ready future, more than the metrics cost. Most calls run one
//! attempt, admitted at once: this future makes that attempt with its bookkeeping in
//! locals, and stores only what must outlive a `Pending`. Whatever else a call may
//! need — a bulkhead to wait for, an offload's thread, the backstop, a subscriber that
//! traces it — runs in the `async` loop of [`call`](super::call) from the start (see
//! [`fits_config`], [`fits`]); a retry runs in it too, which this future becomes, in place (no
//! allocation).

use std::{
    future::Future,
    marker::PhantomData,
    ops::Deref,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use pin_project::{pin_project, pinned_drop};
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tracing::Span;

use super::{
    Attempt, Inner,
    call::{self, Bounds},
};
use crate::{Classifier, Error, Outcome, Timeout, breaker::Detached, metered::Meter, trace};

/// Whether the configuration of `inner` lets a call start as a [`Call`]: nothing but
/// the breaker can make its first attempt wait or run elsewhere. An offload's bound
/// (its attempts' threads) rules it out too.
#[inline]
pub(super) fn fits_config<C>(inner: &Inner<C>) -> bool {
    inner.bulkhead.is_none() && inner.backstop.is_none()
}

/// The largest operation future a [`Call`] takes, in bytes.
///
/// NOTE: a [`Call`] moves the attempt's future into its place (a memcpy or two), where
/// the loop makes it in place: for a client's future of kilobytes (fred's) the copies
/// cost more than the path saves, so such a call runs in the loop. Decided at compile
/// time, per operation.
const LARGEST_FUTURE: usize = 256;

/// Whether an operation whose futures are `Fut` may run as a [`Call`] (see
/// [`LARGEST_FUTURE`]).
#[inline(always)]
pub(super) const fn small<Fut>() -> bool {
    std::mem::size_of::<Fut>() <= LARGEST_FUTURE
}

/// Whether a call whose policy [`fits_config`] may start as a [`Call`] now: no
/// subscriber wants its spans. Else the `async` loop runs it.
#[inline]
pub(super) fn fits() -> bool {
    !trace::wanted()
}

/// A policy call's future: one that may start as a [`Call`], or the loop alone.
#[pin_project(project = ChoiceProj)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub(super) enum Choice<A, B> {
    First(#[pin] A),
    Loop(#[pin] B),
}

impl<A: Future, B: Future<Output = A::Output>> Future for Choice<A, B> {
    type Output = A::Output;

    // NOTE: always inlined, so that the runtime polls the chosen future itself, by the
    // name of the function that made it (`scripts/instructions` looks for it).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ChoiceProj::First(a) => a.poll(cx),
            ChoiceProj::Loop(b) => b.poll(cx),
        }
    }
}

/// One call of `op` under the policy `holder` holds (an `Arc` of it, or a borrow),
/// which [`fits_config`] and [`fits`] now.
#[inline]
pub(super) fn call<H, C, Op, Fut, T, E>(holder: H, op: Op) -> impl Future<Output = Result<T, Error<E>>>
where
    H: Deref<Target = Inner<C>>,
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    Call {
        holder: Some(holder),
        op: Some(op),
        slow: call::resumed::<H, C, Op, Fut, T, E>,
        phase: Phase::Start,
        stage: Stage::Empty,
        classifier: PhantomData,
    }
}

/// A policy call (see the module's note). `slow` makes the `async` loop the call
/// becomes when its first attempt failed and is retried.
///
/// NOTE: the phase, and the bookkeeping of the first attempt, are a plain field beside
/// the pinned stage: moving from phase to phase writes a tag, where replacing a pinned
/// enum runs its drop glue. The attempt and the loop share the stage's memory: the
/// future of a call that never waited for a bulkhead is no bigger than one that did.
///
/// # Cancellation
///
/// As the `async` loop's: dropped during its first attempt, it drops the attempt's
/// future, then the breaker permit (a half-open probe's slot is given back), and
/// records `cancelled`; past it, the loop does.
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub(super) struct Call<H, C, Op, Fut, M, S>
where
    H: Deref<Target = Inner<C>>,
{
    /// The policy, until the loop takes it.
    holder: Option<H>,
    /// The operation, until the loop takes it.
    op: Option<Op>,
    slow: M,
    phase: Phase,
    #[pin]
    stage: Stage<Fut, S>,
    classifier: PhantomData<fn() -> C>,
}

/// What a [`Call`] runs.
#[pin_project(project = StageProj)]
enum Stage<Fut, S> {
    Empty,
    /// The first attempt, under its bound (left in place, spent, once it succeeded).
    Attempt(#[pin] Timeout<Fut>),
    /// The `async` loop, once the call became it.
    Looping(#[pin] S),
}

/// Where a [`Call`] stands.
enum Phase {
    /// Not polled yet.
    Start,
    /// The first attempt runs (it was `Pending`): its bookkeeping.
    First {
        permit: Option<Detached>,
        bounds: Bounds,
        meter: Meter,
    },
    /// The `async` loop runs the call.
    Looping,
    Done,
}

impl<H, C, Op, Fut, T, E, M, S> Future for Call<H, C, Op, Fut, M, S>
where
    H: Deref<Target = Inner<C>>,
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    M: Fn(H, Op, Meter, Duration) -> S,
    S: Future<Output = Result<T, Error<E>>>,
{
    type Output = Result<T, Error<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.phase {
                Phase::Start => {
                    let Some(inner) = this.holder.as_deref() else {
                        unreachable!("a call not yet started holds its policy")
                    };
                    let started = Instant::now();
                    let mut meter = Meter::start(started);
                    inner.retry.deposit();
                    let permit = match &inner.breaker {
                        Some(breaker) => match breaker.try_acquire() {
                            Ok(permit) => Some(permit.detach()),
                            Err(rejected) => {
                                // Never retried: the call ends here, as the loop ends it.
                                let error = Error::CircuitOpen {
                                    target: rejected.target().clone(),
                                    retry_after: rejected.retry_after(),
                                };
                                meter.finish(&inner.metrics, error.outcome());
                                *this.phase = Phase::Done;
                                return Poll::Ready(Err(error));
                            }
                        },
                        None => None,
                    };
                    meter.attempt(&inner.metrics);
                    let bounds = Bounds::first(inner, started);
                    let Some(op) = this.op.as_mut() else {
                        unreachable!("a call not yet started holds its operation")
                    };
                    let future = op(
                        Attempt {
                            number: 1,
                            deadline: bounds.deadline,
                            started,
                        },
                        None,
                    );
                    this.stage.set(Stage::Attempt(match bounds.deadline {
                        Some(at) => Timeout::at(future, at, bounds.bound(inner)),
                        None => Timeout::unbounded(future),
                    }));
                    *this.phase = Phase::First {
                        permit,
                        bounds,
                        meter,
                    };
                }
                Phase::First { .. } => {
                    let StageProj::Attempt(attempt) = this.stage.as_mut().project() else {
                        unreachable!("a first attempt runs")
                    };
                    let result = ready!(attempt.poll(cx));
                    let Phase::First {
                        permit,
                        bounds,
                        meter,
                    } = std::mem::replace(this.phase, Phase::Done)
                    else {
                        unreachable!("a first attempt has its bookkeeping")
                    };
                    let Some(inner) = this.holder.as_deref() else {
                        unreachable!("a first attempt holds its policy")
                    };
                    let permit = match (permit, &inner.breaker) {
                        (Some(permit), Some(breaker)) => Some(breaker.attach(permit)),
                        _ => None,
                    };
                    let failed = match call::conclude(inner, result, permit, &bounds, 1) {
                        Ok(value) => {
                            meter.finish(&inner.metrics, Outcome::Success);
                            return Poll::Ready(Ok(value));
                        }
                        Err(failed) => failed,
                    };
                    let started = meter.started();
                    let retrying = inner.retry.resume(started, call::overall(inner, started), 1);
                    let delay = match retrying.after_failure(failed, &Span::none()) {
                        Ok(delay) => delay,
                        Err(error) => {
                            meter.finish(&inner.metrics, error.outcome());
                            return Poll::Ready(Err(error));
                        }
                    };
                    inner.metrics.retry();
                    let (Some(holder), Some(op)) = (this.holder.take(), this.op.take()) else {
                        unreachable!("a first attempt holds its policy and operation")
                    };
                    let looping = (this.slow)(holder, op, meter, delay);
                    this.stage.set(Stage::Looping(looping));
                    *this.phase = Phase::Looping;
                }
                Phase::Looping => {
                    let StageProj::Looping(looping) = this.stage.as_mut().project() else {
                        unreachable!("a looping call has its loop")
                    };
                    let output = ready!(looping.poll(cx));
                    *this.phase = Phase::Done;
                    return Poll::Ready(output);
                }
                Phase::Done => panic!("a `Policy` call polled after completion"),
            }
        }
    }
}

#[pinned_drop]
impl<H, C, Op, Fut, M, S> PinnedDrop for Call<H, C, Op, Fut, M, S>
where
    H: Deref<Target = Inner<C>>,
{
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        if !matches!(this.phase, Phase::First { .. }) {
            return; // not started, ended, or the loop's to record: nothing to move out
        }
        let Phase::First { permit, meter, .. } = std::mem::replace(this.phase, Phase::Done) else {
            return;
        };
        // The attempt's future first, as the loop drops it, then its permit.
        this.stage.set(Stage::Empty);
        let Some(inner) = this.holder.as_deref() else {
            return;
        };
        if let (Some(permit), Some(breaker)) = (permit, &inner.breaker) {
            drop(breaker.attach(permit));
        }
        meter.finish(&inner.metrics, Outcome::Cancelled);
    }
}
