//! One logical call: metered, under one overall deadline, retried by the policy's
//! [`Retry`](crate::retry::Retry), each attempt with its bulkhead, breaker and
//! per-attempt timeout.

use std::{future::Future, ops::Deref, pin::pin, time::Duration};

use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tracing::Span;

use super::{Attempt, Inner};
use crate::{
    Bulkhead, Classifier, Elapsed, Error, Health, Outcome, Timeout, Verdict,
    breaker::Permit,
    bulkhead::Refusal,
    clock,
    metered::{InFlight, Meter},
    retry::Failed,
    trace::{self, Traced, Tracer, Untraced},
};

/// One logical call, metered: its duration and final outcome (`cancelled` if dropped).
#[inline]
pub(super) async fn metered<C, Op, Fut, T, E>(
    inner: &Inner<C>,
    threads: Option<&Bulkhead>,
    op: &mut Op,
) -> Result<T, Error<E>>
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    // Not `metered_then` with an identity `then`: that costs this, the hottest path,
    // another state in its future.
    let started = Instant::now();
    let mut in_flight = InFlight::start(&inner.metrics, started);
    let result = if trace::wanted() {
        let traced = inner.traced(started);
        let result = run(inner, threads, op, started, &mut in_flight, &traced, None).await;
        traced.finish(outcome_of(&result));
        result
    } else {
        run(inner, threads, op, started, &mut in_flight, &Untraced::<0>, None).await
    };
    in_flight.finish(outcome_of(&result));
    result
}

/// The rest of a call whose first attempt a [`Call`](super::fast::Call) made (untraced)
/// and that retries it after `delay`, for a future that owns the policy through
/// `holder` (an `Arc` of it, or a borrow): the loop, metered from the call's start.
pub(super) async fn resumed<H, C, Op, Fut, T, E>(
    holder: H,
    mut op: Op,
    meter: Meter,
    delay: Duration,
) -> Result<T, Error<E>>
where
    H: Deref<Target = Inner<C>>,
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let inner = &*holder;
    let started = meter.started();
    let mut in_flight = meter.in_flight(&inner.metrics);
    let result = run(
        inner,
        None,
        &mut op,
        started,
        &mut in_flight,
        &Resumed {},
        Some(delay),
    )
    .await;
    in_flight.finish(outcome_of(&result));
    result
}

/// A call of a policy that fits the first-attempt path (see
/// [`fits_config`](super::fast::fits_config)) that a subscriber wants traced:
/// [`metered`]'s traced half.
///
/// NOTE: not `metered` itself, nor `run` under [`Untraced`] in [`resumed`]: a second
/// caller of one instance of an `async fn` keeps the compiler from inlining it into
/// the first, and the loop's own caller (a call with a bulkhead) then paid about 60
/// instructions more for the separate futures.
pub(super) async fn traced<C, Op, Fut, T, E>(inner: &Inner<C>, op: &mut Op) -> Result<T, Error<E>>
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut in_flight = InFlight::start(&inner.metrics, started);
    let traced = inner.traced(started);
    let result = run(inner, None, op, started, &mut in_flight, &traced, None).await;
    traced.finish(outcome_of(&result));
    in_flight.finish(outcome_of(&result));
    result
}

/// [`Untraced`] as an instance of its own, for the loop a [`Call`](super::fast::Call)
/// resumes (see [`traced`] for why).
type Resumed = Untraced<1>;

/// One logical call whose result `then` turns into the caller's (a fallback serves a
/// failed call; `then` is lent the call's span for its events), metered as one: its duration up to the end of `then`, and `outcome`
/// of the final result (`cancelled` if dropped, `then` included).
#[inline]
pub(super) async fn metered_then<C, Op, Fut, T, E, R>(
    inner: &Inner<C>,
    threads: Option<&Bulkhead>,
    op: &mut Op,
    then: impl AsyncFnOnce(Result<T, Error<E>>, &Span) -> R,
    outcome: impl FnOnce(&R) -> Outcome,
) -> R
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut in_flight = InFlight::start(&inner.metrics, started);
    if trace::wanted() {
        let traced = inner.traced(started);
        let result = then(
            run(inner, threads, op, started, &mut in_flight, &traced, None).await,
            traced.span(),
        )
        .await;
        let outcome = outcome(&result);
        traced.finish(outcome);
        in_flight.finish(outcome);
        result
    } else {
        let result = then(
            run(inner, threads, op, started, &mut in_flight, &Untraced::<0>, None).await,
            Untraced::<0>.span(),
        )
        .await;
        in_flight.finish(outcome(&result));
        result
    }
}

/// Runs one call through the policy's [`Retry`](crate::retry::Retry), each attempt
/// counted in `in_flight`: a bulkhead slot, a breaker permit, the operation under its
/// per-attempt bound, and the attempt's health recorded on the permit. `started` is the
/// call's start, read once by the caller and shared with the metrics, so a call that
/// succeeds at once reads the clock twice in all.
///
/// `threads`, when given (an offload's bound), admits each attempt right after the
/// policy's own bulkhead, with the same waiting and shedding rules, and hands the
/// attempt its slot *owned*: the attempt moves it into a blocking closure, which frees
/// it only when it really returns, even if the attempt was abandoned long before.
///
/// NOTE: the loop of [`Retry::run`](crate::retry::Retry), stepping through the same
/// `Retrying` decisions, with the attempt written out in place rather than awaited as a
/// future of its own (or through `Retry::run`'s `Attempts`): each nested future costs
/// every call of this its own state, poll and drop glue — about 40 instructions a
/// call, 5 % of the whole policy.
///
/// `resumed`: the first attempt already ran (see [`Call`](super::fast::Call)) and
/// failed, and the next one begins after this delay.
async fn run<C, Op, Fut, T, E, Tr: Tracer>(
    inner: &Inner<C>,
    threads: Option<&Bulkhead>,
    op: &mut Op,
    started: Instant,
    in_flight: &mut InFlight<'_>,
    tracer: &Tr,
    resumed: Option<Duration>,
) -> Result<T, Error<E>>
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let overall = overall(inner, started);
    let (mut retrying, mut delay) = match resumed {
        None => (inner.retry.start(started, overall), None),
        Some(delay) => (inner.retry.resume(started, overall, 1), Some(delay)),
    };
    loop {
        // NOTE: the backoff sleeps at the top of the loop, so that a resumed call starts
        // with it, in the same one await point.
        if let Some(delay) = delay.take() {
            tokio::time::sleep(delay).await;
        }
        let number = retrying.next_attempt();
        // NOTE: the bulkhead slot lives in this block and is freed when the attempt
        // ends, before the backoff, so waiting callers are not held up by one that is
        // only sleeping.
        let failed = 'attempt: {
            let slot = match &inner.bulkhead {
                Some(bulkhead) => match bulkhead.acquire_until(overall).await {
                    Ok(slot) => Some(slot),
                    Err(refusal) => break 'attempt inner.refused(bulkhead, refusal, tracer.span()),
                },
                None => None,
            };
            let thread = match threads {
                Some(threads) => match threads.acquire_owned_until(overall).await {
                    Ok(thread) => Some(thread),
                    Err(refusal) => break 'attempt inner.refused(threads, refusal, tracer.span()),
                },
                None => None,
            };
            let queued = slot.as_ref().is_some_and(|s| s.queued()) || thread.as_ref().is_some_and(|t| t.1);
            let permit = match &inner.breaker {
                Some(breaker) => match breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(rejected) => {
                        break 'attempt Failed::fatal(Error::CircuitOpen {
                            target: rejected.target().clone(),
                            retry_after: rejected.retry_after(),
                        });
                    }
                },
                None => None,
            };
            // NOTE: the first attempt starts with the call unless it queued for a slot.
            let start = if number == 1 && !queued {
                started
            } else {
                Instant::now()
            };
            in_flight.attempt();
            let bounds = Bounds::of(inner, start, overall);
            let traced = tracer.attempt(number);
            // NOTE: the attempt's future is pinned where it is made and the bound only
            // borrows it: futures of clients like fred run to kilobytes, and moving one
            // into a wrapper by value cost a memcpy per call.
            let pinned = pin!(op(
                Attempt {
                    number,
                    deadline: bounds.deadline,
                    started: start,
                },
                thread.map(|t| t.0)
            ));
            // The span instruments the pinned reference, not a moved future.
            let future = Tr::instrument(&traced, pinned);
            let result = match bounds.deadline {
                Some(at) => {
                    let bound = bounds.bound(inner);
                    match &inner.backstop {
                        Some(backstop) => backstop.guard(future, at, bound).await,
                        None => Timeout::at(future, at, bound).await,
                    }
                }
                None => Ok(future.await),
            };
            match conclude(inner, result, permit, &bounds, number) {
                Ok(value) => {
                    Tr::attempt_ended(traced, Outcome::Success, start);
                    return Ok(value);
                }
                Err(failed) => {
                    Tr::attempt_ended(traced, failed.error.outcome(), start);
                    failed
                }
            }
        };
        delay = Some(retrying.after_failure(failed, tracer.span())?);
        inner.metrics.retry();
    }
}

/// When an attempt began, and what bounds it.
#[derive(Clone, Copy)]
pub(super) struct Bounds {
    start: Instant,
    /// The attempt's own timeout, from its start.
    per_attempt: Option<Instant>,
    /// The earlier of that and the call's overall deadline.
    pub(super) deadline: Option<Instant>,
}

impl Bounds {
    /// The bounds of a call's first attempt, which starts with the call at `started`:
    /// one sum rather than two when the attempt's own timeout ends no later than the
    /// call's deadline (the usual policy), since that timeout is then the bound.
    #[inline]
    pub(super) fn first<C>(inner: &Inner<C>, started: Instant) -> Self {
        match (inner.timeout, inner.deadline) {
            (Some(timeout), Some(deadline)) if timeout <= deadline => {
                // `started + deadline` is no earlier, and past the end of time whenever
                // this sum is: the earliest bound is this one either way.
                let per_attempt = clock::deadline_after(started, timeout);
                Self {
                    start: started,
                    per_attempt,
                    deadline: per_attempt,
                }
            }
            _ => Self::of(inner, started, overall(inner, started)),
        }
    }

    #[inline]
    fn of<C>(inner: &Inner<C>, start: Instant, overall: Option<Instant>) -> Self {
        let per_attempt = inner.timeout.and_then(|t| clock::deadline_after(start, t));
        Self {
            start,
            per_attempt,
            deadline: clock::earliest(per_attempt, overall),
        }
    }

    /// The caller's budget cut this attempt short, not the dependency: when the overall
    /// deadline comes strictly before the attempt's own timeout, running into it says
    /// nothing about the dependency's health. Without a per-attempt timeout the
    /// deadline is the attempt's only bound, and it counts: else a dependency that
    /// hangs every call would never open the circuit.
    #[inline]
    fn cut_by_caller(&self) -> bool {
        self.per_attempt.is_some() && self.deadline != self.per_attempt
    }

    /// The bound that limits the attempt: its own timeout, or the call's deadline when
    /// that comes first.
    #[inline]
    pub(super) fn bound<C>(&self, inner: &Inner<C>) -> Duration {
        let bound = if self.deadline == self.per_attempt {
            inner.timeout
        } else {
            inner.deadline
        };
        bound.unwrap_or_default()
    }
}

/// How attempt `number` ended, from what its bound returned: its health recorded on
/// the breaker permit, its error classified.
#[inline(always)]
pub(super) fn conclude<C, T, E>(
    inner: &Inner<C>,
    result: Result<Result<T, E>, Elapsed>,
    permit: Option<Permit<'_>>,
    bounds: &Bounds,
    number: u32,
) -> Result<T, Failed<E>>
where
    C: Classifier<E>,
{
    let operation = &inner.retry.operation;
    match result {
        Ok(Ok(value)) => {
            settle(permit, Health::Success, bounds.start);
            Ok(value)
        }
        Ok(Err(source)) => {
            let verdict = inner.retry.classifier.verdict(&source);
            let health = if verdict.timed_out && bounds.cut_by_caller() {
                Health::Ignore
            } else {
                verdict.health
            };
            settle(permit, health, bounds.start);
            // With no deadline handed in, a client that timed out did so by its own
            // setting, unknown here: report how long the attempt ran rather than a
            // bound of zero.
            let after = || match bounds.deadline {
                Some(_) => bounds.bound(inner),
                None => bounds.start.elapsed(),
            };
            Err(Failed::classified(operation, source, verdict, number, after))
        }
        Err(elapsed) => {
            let health = if bounds.cut_by_caller() {
                Health::Ignore
            } else {
                Health::Failure
            };
            settle(permit, health, bounds.start);
            Err(Failed {
                error: Error::Timeout {
                    operation: operation.clone(),
                    after: elapsed.after(),
                },
                verdict: Verdict::timed_out(),
            })
        }
    }
}

/// Records an attempt's health on its breaker permit, with its duration when the
/// breaker has a slow-call rule (the only case that needs another clock read).
fn settle(permit: Option<Permit<'_>>, health: Health, attempt_start: Instant) {
    let Some(permit) = permit else { return };
    if permit.tracks_slow_calls() {
        permit.record_timed(health, attempt_start.elapsed());
    } else {
        permit.record(health);
    }
}

/// The overall deadline of a call that began at `started`, if the policy has one.
#[inline]
pub(super) fn overall<C>(inner: &Inner<C>, started: Instant) -> Option<Instant> {
    inner.deadline.and_then(|d| clock::deadline_after(started, d))
}

/// The outcome label of a call's result.
pub(super) fn outcome_of<T, E>(result: &Result<T, Error<E>>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) => e.outcome(),
    }
}

impl<C> Inner<C> {
    /// The span of a call that began at `started`.
    fn traced(&self, started: Instant) -> Traced {
        Traced::start(&self.retry.operation, &self.target, started)
    }

    /// The error of a call `bulkhead` did not admit: never retried.
    fn refused<E>(&self, bulkhead: &Bulkhead, refusal: Refusal, call: &Span) -> Failed<E> {
        Failed::fatal(match refusal {
            Refusal::Full => {
                trace::shed(call, &self.retry.operation, bulkhead.target());
                Error::Shed {
                    target: bulkhead.target().clone(),
                }
            }
            Refusal::Deadline => Error::Timeout {
                operation: self.retry.operation.clone(),
                after: self.deadline.unwrap_or(Duration::ZERO),
            },
        })
    }
}
