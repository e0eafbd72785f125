//! [`Retry`]: run an operation again after a failure worth retrying, with backoff,
//! jitter and a budget. Usable on its own, and the retry layer of every
//! [`Policy`](crate::Policy).

mod backoff;
mod budget;
mod run;

use std::{fmt, future::Future, sync::Arc, time::Duration};

pub use backoff::Backoff;
pub use budget::RetryBudget;
pub(crate) use run::{Attempts, Failed};
use tokio::time::Instant;

use crate::{
    ByTrait, Classifier, Error, Name, Outcome, Verdict,
    config::{ConfigError, RetryConfig},
};

/// What a retry hook is told before each retry.
///
/// # Examples
///
/// ```
/// use stayfast_core::Policy;
/// use stayfast_core::config::RetryConfig;
///
/// let policy = Policy::builder("redis.get")
///     .retry(&RetryConfig::default())
///     .on_retry(|event| eprintln!("{} attempt {} ended {}; retrying in {:?}",
///         event.operation, event.attempt, event.cause, event.delay))
///     .build()
///     .unwrap();
/// # let _ = policy;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetryEvent<'a> {
    /// The operation retried.
    pub operation: &'a Name,
    /// The attempt that just failed (1 = the first).
    pub attempt: u32,
    /// How that attempt ended (`failure` or `timeout`).
    pub cause: Outcome,
    /// How long the call waits before the next attempt.
    pub delay: Duration,
}

pub(crate) type RetryHook = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// The name a [`Retry`] reports in its errors unless given one with
/// [`Retry::operation`].
const DEFAULT_OPERATION: Name = Name::new_static("operation");

/// Runs an operation again while its error is worth retrying: up to `max_attempts` in
/// all, waiting an exponential, jittered backoff between attempts, stopping before
/// `max_elapsed` would be overrun, and drawing every retry from a [`RetryBudget`] so an
/// outage does not turn into a retry storm (all as its [`RetryConfig`] says).
///
/// Each error is classified exactly as a [`Policy`](crate::Policy) does it: by its
/// [`Classify`](crate::Classify) impl, or by the closure given to
/// [`classify`](Self::classify). [`Retryable::No`](crate::Retryable::No) ends the call
/// at once; [`Retryable::After`](crate::Retryable::After) replaces the backoff with the
/// dependency's own delay; an error whose outcome is unknown (a timeout, a reset) is
/// retried only if the operation is [`idempotent`](Self::idempotent), and otherwise
/// ends the call with [`Error::OutcomeUnknown`].
///
/// A `Retry` is built once and shared by reference; a [`Policy`](crate::Policy) stacks
/// it with a deadline, a bulkhead, a breaker and a per-attempt timeout.
///
/// # Examples
///
/// ```
/// use std::{io, time::Duration};
/// use stayfast_core::{config::RetryConfig, retry::Retry};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let retry = Retry::new(&RetryConfig::default()).unwrap().operation("http.fetch");
/// let mut calls = 0;
/// let body = retry
///     .call(|| {
///         calls += 1;
///         let refused = calls < 3; // the first two attempts find the server down
///         async move {
///             if refused {
///                 Err(io::Error::from(io::ErrorKind::ConnectionRefused))
///             } else {
///                 Ok("body")
///             }
///         }
///     })
///     .await
///     .unwrap();
/// assert_eq!((body, calls), ("body", 3));
/// # }
/// ```
///
/// # Cancellation
///
/// Dropping the future returned by [`call`](Self::call) drops the attempt in progress,
/// or the backoff sleep: no further attempt is started. What the dropped attempt had
/// already sent may still be applied.
pub struct Retry<C = ByTrait> {
    pub(crate) operation: Name,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) idempotent: bool,
    pub(crate) classifier: C,
    pub(crate) on_retry: Option<RetryHook>,
}

impl Retry {
    /// A retry as `config` says, for an operation not declared idempotent, classifying
    /// errors by their [`Classify`](crate::Classify) impl.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field (`max_attempts`, `multiplier`,
    /// `budget.ratio`…).
    ///
    /// ```
    /// # use stayfast_core::{config::RetryConfig, retry::Retry};
    /// let mut config = RetryConfig::default();
    /// config.max_attempts = 0;
    /// assert_eq!(Retry::new(&config).unwrap_err().field(), "max_attempts");
    /// ```
    pub fn new(config: &RetryConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            operation: DEFAULT_OPERATION,
            max_attempts: config.max_attempts,
            backoff: Backoff::new(config)?,
            max_elapsed: config.max_elapsed,
            // Validated with the rest of `config` by `Backoff::new`, fields prefixed.
            budget: config.budget.as_ref().map(RetryBudget::new).transpose()?,
            idempotent: false,
            classifier: ByTrait,
            on_retry: None,
        })
    }

    /// One attempt, never retried: the retry layer of a policy configured without one,
    /// which still turns an unknown outcome into [`Error::OutcomeUnknown`].
    pub(crate) fn once() -> Self {
        let config = RetryConfig {
            max_attempts: 1,
            budget: None,
            ..RetryConfig::default()
        };
        // The default delays are valid, so only a broken default could fail here.
        Self::new(&config).unwrap_or_else(|e| unreachable!("the default retry config is invalid: {e}"))
    }
}

impl<C> Retry<C> {
    /// Names the operation in the errors the call ends with (default `"operation"`).
    ///
    /// ```
    /// # use stayfast_core::{config::RetryConfig, retry::Retry};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let retry = Retry::new(&RetryConfig::default()).unwrap().operation("http.fetch");
    /// let denied = || async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::PermissionDenied)) };
    /// let err = retry.call(denied).await.unwrap_err();
    /// assert_eq!(err.to_string(), "http.fetch failed after 1 attempt");
    /// # }
    /// ```
    #[must_use]
    pub fn operation(mut self, operation: impl Into<Name>) -> Self {
        self.operation = operation.into();
        self
    }

    /// Declares whether the operation may safely run twice (default `false`). Only an
    /// idempotent operation's attempt with an unknown outcome is retried.
    ///
    /// ```
    /// # use std::io;
    /// # use stayfast_core::{config::RetryConfig, retry::Retry};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let reset = || async { Err::<(), _>(io::Error::from(io::ErrorKind::ConnectionReset)) };
    /// let retry = Retry::new(&RetryConfig::default()).unwrap();
    /// assert!(retry.call(reset).await.unwrap_err().is_outcome_unknown()); // not retried
    /// let retry = retry.idempotent(true);
    /// assert_eq!(retry.call(reset).await.unwrap_err().attempts(), Some(3)); // retried
    /// # }
    /// ```
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Draws retries from `budget`, shared with other retries and policies, instead of
    /// the config's own.
    ///
    /// ```
    /// # use stayfast_core::{RetryBudget, config::{BudgetConfig, RetryConfig}, retry::Retry};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BudgetConfig::default();
    /// config.min_retries = 1;
    /// let shared = RetryBudget::new(&config).unwrap();
    /// let retry = Retry::new(&RetryConfig::default()).unwrap().retry_budget(shared.clone());
    /// let refused = || async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) };
    /// assert!(retry.call(refused).await.unwrap_err().is_budget_exhausted()); // 1 retry, then none
    /// assert_eq!(shared.available(), 0);
    /// # }
    /// ```
    #[must_use]
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Seeds the backoff jitter, for reproducible tests.
    ///
    /// ```
    /// # use stayfast_core::{config::RetryConfig, retry::Retry};
    /// let retry = Retry::new(&RetryConfig::default()).unwrap().jitter_seed(7);
    /// # let _ = retry;
    /// ```
    #[must_use]
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.backoff = self.backoff.seeded(seed);
        self
    }

    /// Calls `hook` before each retry.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use stayfast_core::{config::RetryConfig, retry::Retry};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let retries = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&retries);
    /// let retry = Retry::new(&RetryConfig::default())
    ///     .unwrap()
    ///     .on_retry(move |event| log.lock().unwrap().push(event.attempt));
    /// let refused = || async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) };
    /// let _ = retry.call(refused).await;
    /// assert_eq!(*retries.lock().unwrap(), [1, 2]);
    /// # }
    /// ```
    #[must_use]
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Classifies the operation's errors with `classifier` instead of their
    /// [`Classify`](crate::Classify) impl, as [`PolicyBuilder::classify`](crate::PolicyBuilder::classify) does.
    ///
    /// ```
    /// # use std::io;
    /// # use stayfast_core::{Verdict, config::RetryConfig, retry::Retry};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// // The file may not be written yet: retry NotFound, which `io::Error` would not.
    /// let retry = Retry::new(&RetryConfig::default()).unwrap().classify(|e: &io::Error| match e.kind() {
    ///     io::ErrorKind::NotFound => Verdict::transient(),
    ///     _ => Verdict::permanent(),
    /// });
    /// let missing = || async { Err::<(), _>(io::Error::from(io::ErrorKind::NotFound)) };
    /// assert_eq!(retry.call(missing).await.unwrap_err().attempts(), Some(3));
    /// # }
    /// ```
    pub fn classify<E, F>(self, classifier: F) -> Retry<F>
    where
        F: Fn(&E) -> Verdict + Send + Sync + 'static,
    {
        self.with_classifier(classifier)
    }

    /// The same retry, classifying errors with `classifier`.
    pub(crate) fn with_classifier<K>(self, classifier: K) -> Retry<K> {
        Retry {
            operation: self.operation,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            max_elapsed: self.max_elapsed,
            budget: self.budget,
            idempotent: self.idempotent,
            classifier,
            on_retry: self.on_retry,
        }
    }

    /// Runs `op`, retrying as configured; `op` builds a fresh future for every attempt,
    /// so the request need not be `Clone`.
    ///
    /// # Errors
    ///
    /// [`Error::Inner`] with the last attempt's error (and the number of attempts),
    /// [`Error::OutcomeUnknown`] for an unknown outcome of an operation not declared
    /// idempotent, [`Error::Timeout`] when the operation's error says it timed out, or
    /// [`Error::BudgetExhausted`] when the budget refused a retry.
    ///
    /// ```
    /// # use std::io;
    /// # use stayfast_core::{config::RetryConfig, retry::Retry};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let retry = Retry::new(&RetryConfig::default()).unwrap();
    /// let refused = || async { Err::<(), _>(io::Error::from(io::ErrorKind::ConnectionRefused)) };
    /// let err = retry.call(refused).await.unwrap_err();
    /// assert_eq!(err.attempts(), Some(3)); // the default `max_attempts`
    /// # }
    /// ```
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future drops the attempt in progress or the backoff
    /// sleep; no further attempt starts.
    pub async fn call<Op, Fut, T, E>(&self, op: Op) -> Result<T, Error<E>>
    where
        C: Classifier<E>,
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        self.run(
            started,
            None,
            Plain {
                retry: self,
                op,
                started,
            },
        )
        .await
    }
}

/// The attempts of [`Retry::call`]: the operation alone.
struct Plain<'a, C, Op> {
    retry: &'a Retry<C>,
    op: Op,
    started: Instant,
}

impl<C, Op, Fut, T, E> Attempts<T, E> for Plain<'_, C, Op>
where
    C: Classifier<E>,
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    fn attempt(&mut self, number: u32) -> impl Future<Output = Result<T, Failed<E>>> {
        // The first attempt starts with the call: one clock read less.
        let attempt_start = if number == 1 { self.started } else { Instant::now() };
        let future = (self.op)();
        let retry = self.retry;
        async move {
            future.await.map_err(|source| {
                let verdict = retry.classifier.verdict(&source);
                Failed::classified(&retry.operation, source, verdict, number, || {
                    attempt_start.elapsed()
                })
            })
        }
    }
}

impl<C> fmt::Debug for Retry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("operation", &self.operation)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_elapsed", &self.max_elapsed)
            .field("budget", &self.budget)
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}
