//! One logical call: the retry loop with its bulkhead, breaker and per-attempt timeout,
//! under one overall deadline.

use std::{future::Future, pin::pin, time::Duration};

use tokio::{
    sync::OwnedSemaphorePermit,
    time::{Instant, sleep},
};

use super::{Attempt, Inner};
use crate::{
    Bulkhead, Classifier, Error, Health, Outcome, Retryable, Timeout, Verdict, breaker::Permit,
    bulkhead::Refusal, clock, metered::InFlight, retry::RetryEvent,
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
    let started = Instant::now();
    let mut in_flight = InFlight::start(&inner.metrics, started);
    let result = run(inner, threads, op, started, &mut in_flight).await;
    in_flight.finish(outcome_of(&result));
    result
}

/// Runs every attempt of one call, counting each in `in_flight`. `started` is the
/// call's start, read once by the caller and shared with the metrics, so a call that
/// succeeds at once reads the clock twice in all.
///
/// `threads`, when given (an offload's bound), admits each attempt right after the
/// policy's own bulkhead, with the same waiting and shedding rules, and hands the
/// attempt its slot *owned*: the attempt moves it into a blocking closure, which frees
/// it only when it really returns, even if the attempt was abandoned long before.
pub(super) async fn run<C, Op, Fut, T, E>(
    inner: &Inner<C>,
    threads: Option<&Bulkhead>,
    op: &mut Op,
    started: Instant,
    in_flight: &mut InFlight<'_>,
) -> Result<T, Error<E>>
where
    C: Classifier<E>,
    Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let overall = inner.deadline.and_then(|d| clock::deadline_after(started, d));
    let retry = inner.retry.as_ref();
    if let Some(budget) = retry.and_then(|r| r.budget.as_ref()) {
        budget.deposit();
    }
    let mut number = 0;
    loop {
        number += 1;
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
            Some(breaker) => Some(breaker.try_acquire().map_err(|rejected| Error::CircuitOpen {
                target: rejected.target().clone(),
                retry_after: rejected.retry_after(),
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
        let (error, verdict) = match result {
            Ok(Ok(value)) => {
                settle(permit, Health::Success, attempt_start);
                return Ok(value);
            }
            Ok(Err(source)) => {
                let verdict = inner.classifier.verdict(&source);
                let health = if verdict.timed_out && cut_by_caller {
                    Health::Ignore
                } else {
                    verdict.health
                };
                settle(permit, health, attempt_start);
                let operation = inner.operation.clone();
                let error = if verdict.timed_out {
                    // The client's own deadline (handed in through `Attempt`) passed:
                    // the same outcome as our timer.
                    Error::Timeout {
                        operation,
                        // With no deadline handed in, the client timed out by its own
                        // setting, unknown here: report how long the attempt ran rather
                        // than a bound of zero.
                        after: match deadline {
                            Some(_) => attempt_bound(inner, per_attempt, deadline),
                            None => attempt_start.elapsed(),
                        },
                    }
                } else {
                    Error::Inner {
                        operation,
                        source,
                        attempts: number,
                    }
                };
                (error, verdict)
            }
            Err(elapsed) => {
                let health = if cut_by_caller {
                    Health::Ignore
                } else {
                    Health::Failure
                };
                settle(permit, health, attempt_start);
                let error = Error::Timeout {
                    operation: inner.operation.clone(),
                    after: elapsed.after(),
                };
                (error, Verdict::timed_out())
            }
        };
        // NOTE: the slot is freed before the backoff, so waiting callers are not held up
        // by one that is only sleeping.
        drop(slot);
        let hinted = match verdict.retry {
            Retryable::No => return Err(error),
            Retryable::IfIdempotent if !inner.idempotent => {
                return Err(Error::OutcomeUnknown {
                    operation: inner.operation.clone(),
                    // The bound it timed out at, kept for the message and `timed_out`.
                    after: error.timed_out_after(),
                });
            }
            Retryable::IfIdempotent | Retryable::Yes => None,
            Retryable::After(delay) => Some(delay),
        };
        let Some(retry) = retry else { return Err(error) };
        if number >= retry.max_attempts {
            return Err(error);
        }
        let delay = hinted.unwrap_or_else(|| retry.backoff.delay(number));
        // Stop *before* a limit rather than overshoot it: a retry that could not even
        // begin before the deadline is not started.
        let limit = clock::earliest(
            overall,
            retry.max_elapsed.and_then(|m| clock::deadline_after(started, m)),
        );
        if let Some(limit) = limit
            && clock::deadline_after(Instant::now(), delay).is_none_or(|resume| resume >= limit)
        {
            return Err(error);
        }
        if let Some(budget) = &retry.budget
            && !budget.try_withdraw()
        {
            return Err(Error::BudgetExhausted {
                last: Box::new(error),
            });
        }
        if let Some(hook) = &inner.on_retry {
            hook(&RetryEvent {
                operation: &inner.operation,
                attempt: number,
                cause: error.outcome(),
                delay,
            });
        }
        inner.metrics.retry();
        sleep(delay).await;
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
    /// The error of a call `bulkhead` did not admit.
    fn refused<E>(&self, bulkhead: &Bulkhead, refusal: Refusal) -> Error<E> {
        match refusal {
            Refusal::Full => Error::Shed {
                target: bulkhead.target().clone(),
            },
            Refusal::Deadline => self.deadline_passed(),
        }
    }

    fn deadline_passed<E>(&self) -> Error<E> {
        Error::Timeout {
            operation: self.operation.clone(),
            after: self.deadline.unwrap_or(Duration::ZERO),
        }
    }
}
