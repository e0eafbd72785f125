//! [`Policy`]: the one way to stack the wrappers, in one fixed order.

mod attempt;
mod builder;
mod call;
mod fast;

use std::{fmt, future::Future, sync::Arc, time::Duration};

use tokio::sync::OwnedSemaphorePermit;

pub use attempt::Attempt;
pub use builder::PolicyBuilder;

use crate::{
    Bulkhead, ByTrait, CallMetrics, CircuitBreaker, Classifier, Error, FallbackReason, Name, Outcome, Served,
    Source, backstop::Backstop, retry::Retry,
};

/// A resilience policy for one operation, built once and cheap to clone.
///
/// The layers always stack in this order, whatever order the builder was called in:
///
/// ```text
/// Metered (one logical call: duration + final outcome)
///  └ Fallback (per call: call_with_fallback)
///     └ Deadline (bounds all attempts and backoffs together)
///        └ Retry (backoff, max attempts, max elapsed, budget)
///           └ Bulkhead
///              └ CircuitBreaker (counts every attempt)
///                 └ Timeout (per attempt)
///                    └ operation
/// ```
///
/// Each attempt's `Err` is classified ([`Classify`](crate::Classify) or the builder's
/// closure): the breaker records its health, and it is retried only if retryable — and,
/// when its outcome is unknown (a timeout, a reset), only if the policy is
/// [`idempotent`](PolicyBuilder::idempotent); otherwise the call ends with
/// [`Error::OutcomeUnknown`]. An open circuit or a full bulkhead is never retried.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::{CircuitBreaker, Policy, config::{BreakerConfig, RetryConfig}};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
/// let get = Policy::builder("redis.get")
///     .timeout(Duration::from_millis(250))
///     .deadline(Duration::from_secs(1))
///     .retry(&RetryConfig::default())
///     .idempotent(true)
///     .breaker(breaker.clone())
///     .build()
///     .unwrap();
/// assert_eq!(get.to_string(), "Metered(Deadline(Retry(CircuitBreaker(Timeout(redis.get)))))");
///
/// let value = get.call(|| async { Ok::<_, std::io::Error>("v") }).await.unwrap();
/// assert_eq!(value, "v");
/// # }
/// ```
///
/// # Cancellation
///
/// Dropping the future returned by `call*` drops the attempt in progress (or the
/// backoff sleep), frees its bulkhead slot, gives back a half-open probe permit without
/// counting it, and records `cancelled` once. Nothing is retried. What the dropped
/// attempt had already sent may still be applied: hand [`Attempt::deadline`] into the
/// client so it can drop queued work itself.
///
/// # Tracing
///
/// Under the `stayfast::call` target at `DEBUG`, a call is a `call` span (`operation`,
/// `target`, then `outcome`, `attempts`, `elapsed_ms`; `cancelled` if dropped) with one
/// `attempt` span per attempt (`attempt`, then `outcome`, `elapsed_ms`), entered while
/// the operation runs so that the client's own spans nest under it, and `DEBUG` events
/// "retrying" (`attempt`, `cause`, `delay_ms`), "serving the fallback" (`reason`) and
/// "shed" (`bulkhead`). A subscriber that does not want them (the usual `INFO`) costs a
/// call one cached check and no allocation. Breaker transitions are `WARN` events of
/// `stayfast::breaker`. A service sees them with a filter such as
/// `tracing_subscriber::fmt().with_env_filter("info,stayfast::call=debug").init()`, or
/// hands the spans to OpenTelemetry through `tracing-opentelemetry`.
pub struct Policy<C = ByTrait> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    target: Name,
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    /// The retry layer, which also names the operation, classifies its errors and
    /// knows whether it is idempotent; a single attempt when none was configured.
    retry: Retry<C>,
    /// Whether a retry was configured (for the stack's name).
    retries: bool,
    bulkhead: Option<Bulkhead>,
    breaker: Option<CircuitBreaker>,
    /// Enforces the per-attempt timeout coarsely instead of a timer per attempt, for
    /// operations that end at [`Attempt::deadline`] by themselves.
    backstop: Option<Backstop>,
    metrics: CallMetrics,
    metered: bool,
}

impl<C> Clone for Policy<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Policy {
    /// A builder for a policy on `operation` (a metric label: `"redis.get"`), with no
    /// layers yet.
    ///
    /// ```
    /// # use stayfast_core::Policy;
    /// let policy = Policy::builder("fs.read").build().unwrap();
    /// assert_eq!(policy.to_string(), "Metered(fs.read)"); // only metrics until layers are added
    /// ```
    pub fn builder(operation: impl Into<Name>) -> PolicyBuilder {
        PolicyBuilder::new(operation.into())
    }
}

impl<C> Policy<C> {
    /// The operation this policy runs.
    ///
    /// ```
    /// # use stayfast_core::Policy;
    /// let policy = Policy::builder("redis.get").build().unwrap();
    /// assert_eq!(policy.operation().as_str(), "redis.get");
    /// ```
    pub fn operation(&self) -> &Name {
        &self.inner.retry.operation
    }

    /// The dependency it calls.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Policy, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// let policy = Policy::builder("redis.get").breaker(breaker).build().unwrap();
    /// assert_eq!(policy.target().as_str(), "redis.main"); // taken from the breaker
    /// assert_eq!(Policy::builder("fs.read").build().unwrap().target().as_str(), "fs.read");
    /// # }
    /// ```
    pub fn target(&self) -> &Name {
        &self.inner.target
    }

    /// The circuit breaker, if the policy has one.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Policy, breaker::State, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// let policy = Policy::builder("redis.get").breaker(breaker).build().unwrap();
    /// assert_eq!(policy.breaker().map(|b| b.state()), Some(State::Closed));
    /// assert!(Policy::builder("fs.read").build().unwrap().breaker().is_none());
    /// # }
    /// ```
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_ref()
    }

    /// Runs `op` under the policy; `op` builds a fresh future for every attempt, so the
    /// request need not be `Clone`.
    ///
    /// # Errors
    ///
    /// See [`Error`]: the last attempt's error, a timeout, an open circuit, a shed call,
    /// an exhausted budget, or an unknown outcome.
    ///
    /// ```
    /// # use stayfast_core::Policy;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let policy = Policy::builder("fs.read").build().unwrap();
    /// let n = policy.call(|| async { Ok::<_, std::io::Error>(4) }).await.unwrap();
    /// assert_eq!(n, 4);
    /// # }
    /// ```
    pub fn call<Op, Fut, T, E>(
        &self,
        mut op: Op,
    ) -> impl Future<Output = Result<T, Error<E>>> + use<C, Op, Fut, T, E>
    where
        C: Classifier<E>,
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(move |_| op())
    }

    /// Runs `op` under the policy, handing each attempt its [`Attempt`] (number and
    /// deadline).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    ///
    /// ```
    /// # use stayfast_core::{Policy, config::RetryConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = Policy::builder("redis.get").retry(&RetryConfig::default()).build().unwrap();
    /// let mut seen = Vec::new();
    /// let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// let result = policy
    ///     .call_with(|attempt| { seen.push(attempt.number); async { Err::<(), _>(refused()) } })
    ///     .await;
    /// assert_eq!(seen, [1, 2, 3]); // the default `max_attempts`
    /// assert_eq!(result.unwrap_err().attempts(), Some(3));
    /// # }
    /// ```
    pub fn call_with<Op, Fut, T, E>(
        &self,
        mut op: Op,
    ) -> impl Future<Output = Result<T, Error<E>>> + use<C, Op, Fut, T, E>
    where
        C: Classifier<E>,
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_on_threads(None, move |attempt, _| op(attempt))
    }

    /// [`call_with`](Self::call_with) whose attempts are also admitted by `threads` (an
    /// [`Offload`](crate::Offload)'s bound), each attempt receiving its slot to move into
    /// the blocking closure it starts.
    pub(crate) fn call_on_threads<Op, Fut, T, E>(
        &self,
        threads: Option<Bulkhead>,
        mut op: Op,
    ) -> impl Future<Output = Result<T, Error<E>>> + use<C, Op, Fut, T, E>
    where
        C: Classifier<E>,
        Op: FnMut(Attempt, Option<OwnedSemaphorePermit>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = Arc::clone(&self.inner);
        // NOTE: what only the configuration decides is decided here: a call that must
        // wait for a bulkhead or an offload's thread, runs under the backstop, or whose
        // operation's future is large (see `fast::small`), is
        // the loop alone, its future exactly what it was before the first-attempt path
        // existed (both in one block cost such a call about 60 instructions). Whether
        // a subscriber traces the call is asked at the first poll.
        if threads.is_none() && fast::small::<Fut>() && fast::fits_config(&inner) {
            fast::Choice::First(async move {
                if fast::fits() {
                    fast::call(inner, op).await
                } else {
                    call::traced(&inner, &mut op).await
                }
            })
        } else {
            fast::Choice::Loop(async move { call::metered(&inner, threads.as_ref(), &mut op).await })
        }
    }

    /// [`call_with`](Self::call_with), borrowing the policy for the call instead of
    /// sharing it: for a caller that holds the policy anyway (the Redis handle), one
    /// reference count less to bump on a cache line every core writes.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) async fn call_borrowed<Op, Fut, T, E>(&self, mut op: Op) -> Result<T, Error<E>>
    where
        C: Classifier<E>,
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if !(fast::small::<Fut>() && fast::fits_config(&self.inner)) {
            call::metered(&self.inner, None, &mut |attempt, _| op(attempt)).await
        } else if fast::fits() {
            fast::call(&*self.inner, move |attempt, _| op(attempt)).await
        } else {
            call::traced(&self.inner, &mut |attempt, _| op(attempt)).await
        }
    }

    /// Runs `op` under the policy and, when it fails for any reason (its error, a
    /// timeout, an open circuit, a full bulkhead…), hands the error to `fallback`. The
    /// fallback may serve a value (`Ok`), pass the error on, or fail in its own way;
    /// [`Served::source`] says which path served the value.
    ///
    /// Counted as `fallback` when the fallback served the call, and in
    /// `stayfast_fallbacks_total{reason}` whenever it ran.
    ///
    /// # Errors
    ///
    /// Whatever `fallback` returns.
    ///
    /// ```
    /// use stayfast_core::{Policy, Source, FallbackReason};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let policy = Policy::builder("redis.lrange").build().unwrap();
    /// let served = policy
    ///     .call_with_fallback(
    ///         |_| async { Err::<Vec<String>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) },
    ///         |_error| async { Ok(vec!["from the file".to_owned()]) },
    ///     )
    ///     .await
    ///     .unwrap();
    /// assert_eq!(served.source, Source::Fallback(FallbackReason::Failure));
    /// # }
    /// ```
    pub fn call_with_fallback<Op, Fut, T, E, Fb, FbFut>(
        &self,
        mut op: Op,
        fallback: Fb,
    ) -> impl Future<Output = Result<Served<T>, Error<E>>> + use<C, Op, Fut, T, E, Fb, FbFut>
    where
        C: Classifier<E>,
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        Fb: FnOnce(Error<E>) -> FbFut,
        FbFut: Future<Output = Result<T, Error<E>>>,
    {
        let inner = Arc::clone(&self.inner);
        async move {
            let serve = async |result, call: &tracing::Span| match result {
                Ok(value) => Ok(Served {
                    value,
                    source: Source::Primary,
                }),
                Err(error) => {
                    let reason = FallbackReason::of(&error);
                    inner.metrics.fallback(reason);
                    crate::trace::serving_fallback(call, &inner.retry.operation, reason);
                    fallback(error).await.map(|value| Served {
                        value,
                        source: Source::Fallback(reason),
                    })
                }
            };
            let outcome = |served: &Result<Served<T>, Error<E>>| match served {
                Ok(Served {
                    source: Source::Fallback(_),
                    ..
                }) => Outcome::Fallback,
                other => call::outcome_of(other),
            };
            call::metered_then(&inner, None, &mut |attempt, _| op(attempt), serve, outcome).await
        }
    }
}

impl<C> fmt::Display for Policy<C> {
    /// The stack, outermost first: `Metered(Deadline(Retry(CircuitBreaker(Timeout(op)))))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        let layers = [
            ("Metered", i.metered),
            ("Deadline", i.deadline.is_some()),
            ("Retry", i.retries),
            ("Bulkhead", i.bulkhead.is_some()),
            ("CircuitBreaker", i.breaker.is_some()),
            ("Timeout", i.timeout.is_some()),
        ];
        let mut open = 0;
        for (name, _) in layers.iter().filter(|(_, on)| *on) {
            write!(f, "{name}(")?;
            open += 1;
        }
        write!(f, "{}", i.retry.operation)?;
        (0..open).try_for_each(|_| f.write_str(")"))
    }
}

impl<C> fmt::Debug for Policy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        f.debug_struct("Policy")
            .field("stack", &self.to_string())
            .field("target", &i.target)
            .field("timeout", &i.timeout)
            .field("deadline", &i.deadline)
            .field("idempotent", &i.retry.idempotent)
            .field("retry", &i.retries.then_some(&i.retry))
            .field("bulkhead", &i.bulkhead)
            .field("breaker", &i.breaker)
            .finish_non_exhaustive()
    }
}
