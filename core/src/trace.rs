//! What a [`Policy`](crate::Policy) call tells `tracing`: a span per call and per
//! attempt, and events for retries, fallbacks and shed work (breaker transitions are
//! logged by the breaker itself).
//!
//! Everything is at `DEBUG` under the `stayfast::call` target, so a subscriber at the
//! usual `INFO` costs a call one cached check and no allocation; select it with a
//! filter such as `stayfast::call=debug` to see it, or hand the spans to OpenTelemetry
//! through `tracing-opentelemetry`.
//!
//! | span / event | fields |
//! |---|---|
//! | span `call` | `operation`, `target`, then `outcome`, `attempts`, `elapsed_ms` |
//! | span `attempt` (child of `call`, around the operation) | `attempt`, then `outcome`, `elapsed_ms` |
//! | event "retrying" | `operation`, `attempt`, `cause`, `delay_ms` |
//! | event "serving the fallback" | `operation`, `reason` |
//! | event "shed" | `operation`, `bulkhead` |

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tracing::{Instrument, Level, Span, field::Empty};

use crate::{FallbackReason, Name, Outcome};

/// Whether any subscriber wants the spans of policy calls: one cached check, and
/// nothing else of this module runs for a call when it is `false`.
#[inline]
pub(crate) fn wanted() -> bool {
    tracing::enabled!(target: "stayfast::call", Level::DEBUG)
}

/// How a policy call tells `tracing` about its attempts: [`Untraced`] when no
/// subscriber wants it (every method compiles to nothing), [`Traced`] when one does.
///
/// NOTE: a type parameter rather than a `Span` that is disabled when unwanted: holding,
/// moving and dropping even a disabled span and instrumenting every attempt with it
/// cost a call about 200 instructions with no subscriber at all, a quarter of the
/// whole policy.
pub(crate) trait Tracer {
    /// What an attempt carries: its span, or nothing.
    type Attempt;

    /// The call's span, the parent of its events (none: the current span).
    fn span(&self) -> &Span;

    /// Attempt `number` begins.
    fn attempt(&self, number: u32) -> Self::Attempt;

    /// `future`, the attempt's operation, running inside the attempt's span.
    fn instrument<F: Future>(attempt: &Self::Attempt, future: F) -> impl Future<Output = F::Output>;

    /// The attempt that began at `start` ended as `outcome`.
    fn attempt_ended(attempt: Self::Attempt, outcome: Outcome, start: Instant);
}

/// A call nobody traces. `LOOP` only names an instance: a caller that wants the policy's
/// loop compiled apart from another caller's (see `policy::call::resumed`) passes its
/// own number, and gets a type, and so a loop, of its own.
pub(crate) struct Untraced<const LOOP: u8 = 0>;

/// The disabled span [`Untraced`] lends its events: they then go to the current span.
static NO_SPAN: Span = Span::none();

impl<const LOOP: u8> Tracer for Untraced<LOOP> {
    type Attempt = ();

    #[inline(always)]
    fn span(&self) -> &Span {
        &NO_SPAN
    }

    #[inline(always)]
    fn attempt(&self, _: u32) {}

    #[inline(always)]
    fn instrument<F: Future>((): &(), future: F) -> impl Future<Output = F::Output> {
        future
    }

    #[inline(always)]
    fn attempt_ended((): (), _: Outcome, _: Instant) {}
}

/// A traced call: its span, which records how it ended (`cancelled` if dropped first).
pub(crate) struct Traced {
    span: Span,
    started: Instant,
    finished: bool,
}

impl Traced {
    /// The span of a call of `operation` against `target` that began at `started`.
    pub(crate) fn start(operation: &Name, target: &Name, started: Instant) -> Self {
        let span = tracing::debug_span!(
            target: "stayfast::call", "call",
            operation = %operation, target = %target,
            outcome = Empty, attempts = Empty, elapsed_ms = Empty,
        );
        Self {
            span,
            started,
            finished: false,
        }
    }

    /// The call ended as `outcome`.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        ended(&self.span, outcome, self.started);
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if !self.finished {
            ended(&self.span, Outcome::Cancelled, self.started);
        }
    }
}

impl Tracer for Traced {
    type Attempt = Span;

    fn span(&self) -> &Span {
        &self.span
    }

    /// NOTE: the call's span is never entered, only named as the parent of what
    /// happens in it (an `Instrumented` call future cost a memcpy of the whole future);
    /// the attempt's span is entered while the operation runs, so the operation's own
    /// spans and events nest under it.
    fn attempt(&self, number: u32) -> Span {
        self.span.record("attempts", number);
        tracing::debug_span!(
            target: "stayfast::call", parent: &self.span, "attempt",
            attempt = number, outcome = Empty, elapsed_ms = Empty,
        )
    }

    fn instrument<F: Future>(attempt: &Span, future: F) -> impl Future<Output = F::Output> {
        future.instrument(attempt.clone())
    }

    fn attempt_ended(attempt: Span, outcome: Outcome, start: Instant) {
        ended(&attempt, outcome, start);
    }
}

/// Records on `span` the outcome of what began at `start`.
fn ended(span: &Span, outcome: Outcome, start: Instant) {
    span.record("outcome", outcome.as_str());
    span.record("elapsed_ms", start.elapsed().as_secs_f64() * 1e3);
}

/// A `DEBUG` event of the call whose span is `call`; in the current span when the call
/// has none (untraced, or a [`Retry`](crate::retry::Retry) used on its own).
macro_rules! call_event {
    ($call:expr, $($event:tt)*) => {
        if $call.is_none() {
            tracing::debug!(target: "stayfast::call", $($event)*)
        } else {
            tracing::debug!(target: "stayfast::call", parent: $call, $($event)*)
        }
    };
}

/// A failed attempt of `operation` is retried after `delay`.
#[cold]
pub(crate) fn retrying(call: &Span, operation: &Name, attempt: u32, cause: Outcome, delay: Duration) {
    let delay_ms = delay.as_secs_f64() * 1e3;
    call_event!(call, operation = %operation, attempt, cause = cause.as_str(), delay_ms, "retrying");
}

/// A failed call of `operation` is served by its fallback.
#[cold]
pub(crate) fn serving_fallback(call: &Span, operation: &Name, reason: FallbackReason) {
    call_event!(call, operation = %operation, reason = reason.as_str(), "serving the fallback");
}

/// A call of `operation` was shed: `bulkhead` had no free slot.
#[cold]
pub(crate) fn shed(call: &Span, operation: &Name, bulkhead: &Name) {
    call_event!(call, operation = %operation, bulkhead = %bulkhead, "shed");
}
