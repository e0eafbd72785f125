//! One logical call: metered, under one overall deadline, retried by the policy's
//! [`Retry`](crate::retry::Retry), each attempt with its bulkhead, breaker and
//! per-attempt timeout.

use std::{future::Future, pin::pin, time::Duration};

use tokio::{sync::OwnedSemaphorePermit, time::Instant};

use super::{Attempt, Inner};
use crate::{
    Bulkhead, Classifier, Error, Health, Outcome, Timeout, Verdict,
    breaker::Permit,
    bulkhead::Refusal,
    clock,
    metered::InFlight,
    retry::{Attempts, Failed},
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
    let result = run(inner, threads, op, started, &mut in_flight).await;
    in_flight.finish(outcome_of(&result));
    result
}

/// One logical call whose result `then` turns into the caller's (a fallback serves a
/// failed call), metered as one: its duration up to the end of `then`, and `outcome`
/// of the final result (`cancelled` if dropped, `then` included).
#[inline]
pub(super) async fn metered_then<C, Op, Fut, T, E, R>(
    inner: &Inner<C>,
    threads: Option<&Bulkhead>,
    op: &mut Op,
    then: impl AsyncFnOnce(Result<T, Error<E>>) -> R,
    outcome: impl FnOnce(&R) -> Outcome,
) -> R
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut in_flight = InFlight::start(&inner.metrics, started);
    let result = then(run(inner, threads, op, started, &mut in_flight).await).await;
    in_flight.finish(outcome(&result));
    result
}

/// Runs one call through the policy's [`Retry`](crate::retry::Retry), each attempt
/// counted in `in_flight`. `started` is the call's start, read once by the caller and
/// shared with the metrics, so a call that succeeds at once reads the clock twice in
/// all.
///
/// `threads`, when given (an offload's bound), admits each attempt right after the
/// policy's own bulkhead, with the same waiting and shedding rules, and hands the
/// attempt its slot *owned*: the attempt moves it into a blocking closure, which frees
/// it only when it really returns, even if the attempt was abandoned long before.
///
/// NOTE: not an `async fn`: it returns the retry loop's future itself, one state
/// machine less for every poll of the hottest path to go through.
fn run<'a, C, Op, Fut, T, E>(
    inner: &'a Inner<C>,
    threads: Option<&'a Bulkhead>,
    op: &'a mut Op,
    started: Instant,
    in_flight: &'a mut InFlight<'_>,
) -> impl Future<Output = Result<T, Error<E>>>
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let overall = inner.deadline.and_then(|d| clock::deadline_after(started, d));
    let call = Call {
        inner,
        threads,
        op,
        started,
        overall,
        in_flight,
    };
    inner.retry.run(started, overall, call)
}

/// The attempts of one policy call, and what they share.
struct Call<'a, 'm, C, Op> {
    inner: &'a Inner<C>,
    threads: Option<&'a Bulkhead>,
    op: &'a mut Op,
    started: Instant,
    overall: Option<Instant>,
    in_flight: &'a mut InFlight<'m>,
}

impl<C, Op, Fut, T, E> Attempts<T, E> for Call<'_, '_, C, Op>
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    fn attempt(&mut self, number: u32) -> impl Future<Output = Result<T, Failed<E>>> {
        attempt(self, number)
    }

    fn retrying(&mut self) {
        self.inner.metrics.retry();
    }
}

/// Attempt `number` of a call: a bulkhead slot, a breaker permit, the operation under
/// its per-attempt bound, and the attempt's health recorded on the permit.
///
/// NOTE: the bulkhead slot is dropped when the attempt returns, before the backoff, so
/// waiting callers are not held up by one that is only sleeping.
async fn attempt<C, Op, Fut, T, E>(call: &mut Call<'_, '_, C, Op>, number: u32) -> Result<T, Failed<E>>
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let Call {
        inner,
        threads,
        ref mut op,
        started,
        overall,
        ref mut in_flight,
    } = *call;
    // NOTE: matched here, not in a shared async helper: a helper's future cost the
    // common case (no bulkhead) measurably more instructions per call.
    let slot = match &inner.bulkhead {
        Some(bulkhead) => Some(
            bulkhead
                .acquire_until(overall)
                .await
                .map_err(|refusal| inner.refused(bulkhead, refusal))?,
        ),
        None => None,
    };
    let thread = match threads {
        Some(threads) => Some(
            threads
                .acquire_owned_until(overall)
                .await
                .map_err(|refusal| inner.refused(threads, refusal))?,
        ),
        None => None,
    };
    let queued = slot.as_ref().is_some_and(|s| s.queued()) || thread.as_ref().is_some_and(|t| t.1);
    let permit = match &inner.breaker {
        Some(breaker) => Some(breaker.try_acquire().map_err(|rejected| {
            Failed::fatal(Error::CircuitOpen {
                target: rejected.target().clone(),
                retry_after: rejected.retry_after(),
            })
        })?),
        None => None,
    };
    // NOTE: the first attempt starts with the call unless it queued for a slot.
    let attempt_start = if number == 1 && !queued {
        started
    } else {
        Instant::now()
    };
    in_flight.attempt();
    let per_attempt = inner
        .timeout
        .and_then(|t| clock::deadline_after(attempt_start, t));
    let deadline = clock::earliest(per_attempt, overall);
    // The caller's budget cut this attempt short, not the dependency: when the
    // overall deadline comes strictly before the attempt's own timeout, running
    // into it says nothing about the dependency's health. Without a per-attempt
    // timeout the deadline is the attempt's only bound, and it counts: else a
    // dependency that hangs every call would never open the circuit.
    let cut_by_caller = per_attempt.is_some() && deadline != per_attempt;
    // NOTE: the attempt's future is pinned where it is made and the bound only
    // borrows it: futures of clients like fred run to kilobytes, and moving one
    // into a wrapper by value cost a memcpy per call.
    let result = {
        let future = pin!(op(
            Attempt {
                number,
                deadline,
                started: attempt_start,
            },
            thread.map(|t| t.0)
        ));
        match deadline {
            Some(at) => {
                let bound = attempt_bound(inner, per_attempt, deadline);
                match &inner.backstop {
                    Some(backstop) => backstop.guard(future, at, bound).await,
                    None => Timeout::at(future, at, bound).await,
                }
            }
            None => Ok(future.await),
        }
    };
    let operation = &inner.retry.operation;
    match result {
        Ok(Ok(value)) => {
            settle(permit, Health::Success, attempt_start);
            Ok(value)
        }
        Ok(Err(source)) => {
            let verdict = inner.retry.classifier.verdict(&source);
            let health = if verdict.timed_out && cut_by_caller {
                Health::Ignore
            } else {
                verdict.health
            };
            settle(permit, health, attempt_start);
            // With no deadline handed in, a client that timed out did so by its own
            // setting, unknown here: report how long the attempt ran rather than a
            // bound of zero.
            let after = || match deadline {
                Some(_) => attempt_bound(inner, per_attempt, deadline),
                None => attempt_start.elapsed(),
            };
            Err(Failed::classified(operation, source, verdict, number, after))
        }
        Err(elapsed) => {
            let health = if cut_by_caller {
                Health::Ignore
            } else {
                Health::Failure
            };
            settle(permit, health, attempt_start);
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

/// The bound that limits an attempt: its own timeout, or the call's deadline when that
/// comes first.
fn attempt_bound<C>(inner: &Inner<C>, per_attempt: Option<Instant>, deadline: Option<Instant>) -> Duration {
    let bound = if deadline == per_attempt {
        inner.timeout
    } else {
        inner.deadline
    };
    bound.unwrap_or_default()
}

/// The outcome label of a call's result.
pub(super) fn outcome_of<T, E>(result: &Result<T, Error<E>>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) => e.outcome(),
    }
}

impl<C> Inner<C> {
    /// The error of a call `bulkhead` did not admit: never retried.
    fn refused<E>(&self, bulkhead: &Bulkhead, refusal: Refusal) -> Failed<E> {
        Failed::fatal(match refusal {
            Refusal::Full => Error::Shed {
                target: bulkhead.target().clone(),
            },
            Refusal::Deadline => Error::Timeout {
                operation: self.retry.operation.clone(),
                after: self.deadline.unwrap_or(Duration::ZERO),
            },
        })
    }
}
