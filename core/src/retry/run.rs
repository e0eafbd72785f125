//! The one retry loop of the crate, run by [`Retry::call`] and by every
//! [`Policy`](crate::Policy) call: run an attempt, and when it fails decide whether,
//! and after how long, to try again.

use std::{future::Future, time::Duration};

use tokio::time::{Instant, sleep};
use tracing::Span;

use super::{Retry, RetryEvent};
use crate::{Error, Name, Retryable, Verdict, clock};

/// How one attempt failed: the error the call ends with if it is not retried, and the
/// verdict that decides whether it is.
pub(crate) struct Failed<E> {
    pub(crate) error: Error<E>,
    pub(crate) verdict: Verdict,
}

impl<E> Failed<E> {
    /// A failure the caller must see as is, never retried: an open circuit, a full
    /// bulkhead, a deadline that passed before the attempt began.
    pub(crate) fn fatal(error: Error<E>) -> Self {
        Self {
            error,
            verdict: Verdict::permanent(),
        }
    }

    /// The operation's own error `source`, classified as `verdict`, ending attempt
    /// number `attempts`. A client-side timeout (`verdict.timed_out`: a deadline handed
    /// into the client passed) is reported as [`Error::Timeout`] after `after()`, the
    /// same outcome as the policy's own timer.
    pub(crate) fn classified(
        operation: &Name,
        source: E,
        verdict: Verdict,
        attempts: u32,
        after: impl FnOnce() -> Duration,
    ) -> Self {
        let operation = operation.clone();
        let error = if verdict.timed_out {
            Error::Timeout {
                operation,
                after: after(),
            }
        } else {
            Error::Inner {
                operation,
                source,
                attempts,
            }
        };
        Self { error, verdict }
    }
}

/// The attempts of one call, made one at a time by [`Retry::run`].
///
/// NOTE: a trait rather than an `AsyncFnMut` closure: the attempt's future borrows
/// the caller's state (its operation, its metrics) for as long as it runs, and the
/// futures of async closures lose `Send` in generic callers (the compiler cannot
/// prove it for every lifetime), while a named type keeps it.
pub(crate) trait Attempts<T, E> {
    /// Attempt `number` (1 for the first).
    fn attempt(&mut self, number: u32) -> impl Future<Output = Result<T, Failed<E>>>;

    /// Told before each retry, after the decision to retry and before the backoff.
    fn retrying(&mut self) {}
}

/// One call's progress through its retries: which attempt runs, and whether a failed one
/// is tried again. Both loops that retry — [`Retry::run`] and every
/// [`Policy`](crate::Policy) call — step through it, so the decisions live here once.
pub(crate) struct Retrying<'r, C> {
    retry: &'r Retry<C>,
    started: Instant,
    overall: Option<Instant>,
    number: u32,
}

impl<C> Retrying<'_, C> {
    /// The number of the attempt about to run (1 for the first).
    #[inline]
    pub(crate) fn next_attempt(&mut self) -> u32 {
        self.number += 1;
        self.number
    }

    /// After the current attempt failed as `failed`: the delay before the next one, or
    /// the error the call ends with. A retry is an event in `call`'s span (none: in the
    /// current span).
    #[inline]
    pub(crate) fn after_failure<E>(&self, failed: Failed<E>, call: &Span) -> Result<Duration, Error<E>> {
        self.retry
            .backoff_after(failed, self.number, self.started, self.overall, call)
    }
}

impl<C> Retry<C> {
    /// Starts one call's retries: `started` is when the call began (`max_elapsed` counts
    /// from it); `overall` is the caller's deadline, if any: no retry starts whose
    /// backoff would end past it. Deposits into the budget, if any.
    #[inline]
    pub(crate) fn start(&self, started: Instant, overall: Option<Instant>) -> Retrying<'_, C> {
        self.deposit();
        self.resume(started, overall, 0)
    }

    /// Credits the budget, if any, with one call: what [`start`](Self::start) does
    /// before the first attempt.
    #[inline]
    pub(crate) fn deposit(&self) {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
    }

    /// One call's retries after its first `attempts` (deposited for already, see
    /// [`deposit`](Self::deposit)): for a call whose first attempt ran on its own.
    #[inline]
    pub(crate) fn resume(
        &self,
        started: Instant,
        overall: Option<Instant>,
        attempts: u32,
    ) -> Retrying<'_, C> {
        Retrying {
            retry: self,
            started,
            overall,
            number: attempts,
        }
    }

    /// Makes attempts until one succeeds or its failure is not retried, sleeping the
    /// backoff between them (see [`start`](Self::start) for `started` and `overall`).
    ///
    /// NOTE: every attempt's future and the backoff sleep live inside this future, so
    /// dropping it (cancellation) ends the call where it stands: nothing runs on, and
    /// the budget deposit made on entry is the only side effect kept.
    pub(crate) async fn run<T, E>(
        &self,
        started: Instant,
        overall: Option<Instant>,
        mut attempts: impl Attempts<T, E>,
    ) -> Result<T, Error<E>> {
        let mut retrying = self.start(started, overall);
        loop {
            let failed = match attempts.attempt(retrying.next_attempt()).await {
                Ok(value) => return Ok(value),
                Err(failed) => failed,
            };
            let delay = retrying.after_failure(failed, &Span::none())?;
            attempts.retrying();
            sleep(delay).await;
        }
    }

    /// The delay before retrying attempt `number`, which ended as `failed`; or the
    /// error the call ends with.
    fn backoff_after<E>(
        &self,
        failed: Failed<E>,
        number: u32,
        started: Instant,
        overall: Option<Instant>,
        span: &Span,
    ) -> Result<Duration, Error<E>> {
        let Failed { error, verdict } = failed;
        let hinted = match verdict.retry {
            Retryable::No => return Err(error),
            Retryable::IfIdempotent if !self.idempotent => {
                return Err(Error::OutcomeUnknown {
                    operation: self.operation.clone(),
                    // The bound it timed out at, kept for the message and `timed_out`.
                    after: error.timed_out_after(),
                });
            }
            Retryable::IfIdempotent | Retryable::Yes => None,
            Retryable::After(delay) => Some(delay),
        };
        if number >= self.max_attempts {
            return Err(error);
        }
        let delay = hinted.unwrap_or_else(|| self.backoff.delay(number));
        // Stop *before* a limit rather than overshoot it: a retry that could not even
        // begin before the deadline is not started.
        let limit = clock::earliest(
            overall,
            self.max_elapsed.and_then(|m| clock::deadline_after(started, m)),
        );
        if let Some(limit) = limit
            && clock::deadline_after(Instant::now(), delay).is_none_or(|resume| resume >= limit)
        {
            return Err(error);
        }
        if let Some(budget) = &self.budget
            && !budget.try_withdraw()
        {
            return Err(Error::BudgetExhausted {
                last: Box::new(error),
            });
        }
        crate::trace::retrying(span, &self.operation, number, error.outcome(), delay);
        if let Some(hook) = &self.on_retry {
            hook(&RetryEvent {
                operation: &self.operation,
                attempt: number,
                cause: error.outcome(),
                delay,
            });
        }
        Ok(delay)
    }
}
