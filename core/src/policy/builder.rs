//! [`PolicyBuilder`]: collects a policy's layers in any order, checks them once in
//! `build`.

use std::{fmt, sync::Arc, time::Duration};

use super::{Inner, Policy};
use crate::{
    Bulkhead, ByTrait, CallMetrics, CircuitBreaker, Name, Verdict,
    backstop::Backstop,
    config::{ConfigError, PolicyConfig, RetryConfig, positive},
    retry::{Retry, RetryBudget, RetryEvent, RetryHook},
    telemetry::DEFAULT_PREFIX,
};

/// Builds a [`Policy`]. The stack order is fixed whatever order the setters are called
/// in; setters of the same field override each other in call order
/// ([`config`](Self::config) sets timeout, deadline, idempotency and retry at once, so
/// call it first). Nothing is checked until [`build`](Self::build).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::{Policy, Verdict};
///
/// let policy = Policy::builder("redis.blpop")
///     .target("redis.main")
///     .timeout(Duration::from_secs(5))
///     // A nil reply after BLPOP's own timeout is an answer, not a failure.
///     .classify(|e: &std::io::Error| match e.kind() {
///         std::io::ErrorKind::TimedOut => Verdict::expected(),
///         _ => Verdict::permanent(),
///     })
///     .build()
///     .unwrap();
/// assert_eq!(policy.target().as_str(), "redis.main");
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct PolicyBuilder<C = ByTrait> {
    operation: Name,
    target: Option<Name>,
    config: PolicyConfig,
    budget: Option<RetryBudget>,
    bulkhead: Option<Bulkhead>,
    breaker: Option<CircuitBreaker>,
    backstop: Option<Backstop>,
    classifier: C,
    on_retry: Option<RetryHook>,
    prefix: Option<String>,
    /// Whether the metrics are batched per thread (see [`CallMetrics::batched`]).
    batched: bool,
    seed: Option<u64>,
}

impl PolicyBuilder {
    /// A builder with no layers yet: see [`Policy::builder`].
    pub(super) fn new(operation: Name) -> Self {
        Self {
            operation,
            target: None,
            config: PolicyConfig {
                timeout: None,
                ..PolicyConfig::default()
            },
            budget: None,
            bulkhead: None,
            breaker: None,
            backstop: None,
            classifier: ByTrait,
            on_retry: None,
            prefix: Some(DEFAULT_PREFIX.to_owned()),
            batched: false,
            seed: None,
        }
    }
}

impl<C> PolicyBuilder<C> {
    /// The dependency called (the `target` label). Defaults to the breaker's target,
    /// else the bulkhead's, else the operation.
    ///
    /// ```
    /// # use stayfast_core::Policy;
    /// let policy = Policy::builder("redis.get").target("redis.replica").build().unwrap();
    /// assert_eq!(policy.target().as_str(), "redis.replica");
    /// ```
    pub fn target(mut self, target: impl Into<Name>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Takes timeout, deadline, idempotency and retry from `config`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Policy, config::PolicyConfig};
    /// let config = PolicyConfig::default(); // a 2s timeout, no retry
    /// let policy = Policy::builder("redis.get")
    ///     .config(&config)
    ///     .deadline(Duration::from_secs(5)) // overrides the config's
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(policy.to_string(), "Metered(Deadline(Timeout(redis.get)))");
    /// ```
    pub fn config(mut self, config: &PolicyConfig) -> Self {
        self.config = config.clone();
        self
    }

    /// Bounds each attempt.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::Policy;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = Policy::builder("fs.read")
    ///     .timeout(Duration::from_millis(100))
    ///     .idempotent(true)
    ///     .build()
    ///     .unwrap();
    /// let err = policy.call(std::future::pending::<Result<(), std::io::Error>>).await.unwrap_err();
    /// assert_eq!(err.to_string(), "fs.read timed out after 100ms");
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// Bounds the whole call: every attempt, every backoff.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Policy, config::RetryConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = Policy::builder("redis.get")
    ///     .timeout(Duration::from_millis(400)) // each attempt
    ///     .deadline(Duration::from_secs(1)) // every attempt and backoff together
    ///     .retry(&RetryConfig::default())
    ///     .idempotent(true)
    ///     .build()
    ///     .unwrap();
    /// let err = policy.call(std::future::pending::<Result<(), std::io::Error>>).await.unwrap_err();
    /// assert_eq!(err.to_string(), "redis.get timed out after 1s");
    /// # }
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = Some(deadline);
        self
    }

    /// Declares whether the operation may safely run twice (default `false`). Only an
    /// idempotent operation's attempt with an unknown outcome is retried.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Policy, config::RetryConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = |idempotent| {
    ///     let retry = RetryConfig::default();
    ///     let b = Policy::builder("redis.set").timeout(Duration::from_millis(100)).retry(&retry);
    ///     b.idempotent(idempotent).build().unwrap()
    /// };
    /// let hang = std::future::pending::<Result<(), std::io::Error>>;
    /// assert!(policy(false).call(hang).await.unwrap_err().is_outcome_unknown()); // not retried
    /// assert!(policy(true).call(hang).await.unwrap_err().is_timeout()); // retried, then gave up
    /// # }
    /// ```
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.config.idempotent = idempotent;
        self
    }

    /// Retries as `config` says. Its `budget` is this policy's own unless a shared one
    /// is given with [`retry_budget`](Self::retry_budget).
    ///
    /// ```
    /// # use stayfast_core::{Policy, config::RetryConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut retry = RetryConfig::default();
    /// retry.max_attempts = 4;
    /// let policy = Policy::builder("redis.get").retry(&retry).build().unwrap();
    /// let refused = || async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) };
    /// assert_eq!(policy.call(refused).await.unwrap_err().attempts(), Some(4));
    /// # }
    /// ```
    pub fn retry(mut self, config: &RetryConfig) -> Self {
        self.config.retry = Some(config.clone());
        self
    }

    /// Draws retries from `budget`, shared with other policies.
    ///
    /// ```
    /// # use stayfast_core::{Policy, RetryBudget, config::{BudgetConfig, RetryConfig}};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BudgetConfig::default();
    /// config.min_retries = 1;
    /// let shared = RetryBudget::new(&config).unwrap();
    /// let b = Policy::builder("redis.get").retry(&RetryConfig::default()).retry_budget(shared.clone());
    /// let policy = b.build().unwrap();
    /// let refused = || async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) };
    /// assert!(policy.call(refused).await.unwrap_err().is_budget_exhausted()); // 1 retry, then none
    /// assert_eq!(shared.available(), 0); // spent for every policy that shares it
    /// # }
    /// ```
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Seeds the backoff jitter, for reproducible tests.
    ///
    /// ```
    /// # use std::{io, time::Duration};
    /// # use stayfast_core::{Policy, config::RetryConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// async fn time_to_give_up(seed: u64) -> Duration {
    ///     let b = Policy::builder("redis.get").retry(&RetryConfig::default()).jitter_seed(seed);
    ///     let start = tokio::time::Instant::now();
    ///     let refused = || async { Err::<(), _>(io::Error::from(io::ErrorKind::ConnectionRefused)) };
    ///     let _ = b.build().unwrap().call(refused).await; // three attempts, two backoffs
    ///     start.elapsed()
    /// }
    /// assert_eq!(time_to_give_up(7).await, time_to_give_up(7).await); // the same delays
    /// # }
    /// ```
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Limits concurrency with `bulkhead` (shared per dependency).
    ///
    /// ```
    /// # use stayfast_core::{Bulkhead, Policy, config::BulkheadConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BulkheadConfig::default();
    /// config.max_concurrent = 1;
    /// let bulkhead = Bulkhead::new("redis.main", &config).unwrap();
    /// let policy = Policy::builder("redis.get").bulkhead(bulkhead.clone()).build().unwrap();
    /// let _busy = bulkhead.acquire().await.unwrap(); // another caller holds the only slot
    /// let err = policy.call(|| async { Ok::<_, std::io::Error>(()) }).await.unwrap_err();
    /// assert!(err.is_shed());
    /// # }
    /// ```
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Guards every attempt with `breaker` (shared per dependency).
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Policy, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// let get = Policy::builder("redis.get").breaker(breaker.clone()).build().unwrap();
    /// let set = Policy::builder("redis.set").breaker(breaker.clone()).build().unwrap();
    /// breaker.force_open(); // one circuit for the whole dependency
    /// let ok = || async { Ok::<_, std::io::Error>(()) };
    /// assert!(get.call(ok).await.unwrap_err().is_circuit_open());
    /// assert!(set.call(ok).await.unwrap_err().is_circuit_open());
    /// # }
    /// ```
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Calls `hook` before each retry.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use stayfast_core::{Policy, config::RetryConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let retries = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&retries);
    /// let policy = Policy::builder("redis.get")
    ///     .retry(&RetryConfig::default())
    ///     .on_retry(move |event| log.lock().unwrap().push((event.attempt, event.cause.as_str())))
    ///     .build()
    ///     .unwrap();
    /// let refused = || async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) };
    /// let _ = policy.call(refused).await;
    /// assert_eq!(*retries.lock().unwrap(), [(1, "failure"), (2, "failure")]);
    /// # }
    /// ```
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Names the metrics `<prefix>_calls_total` and so on (default `stayfast`).
    ///
    /// ```
    /// # use metrics_util::debugging::DebuggingRecorder;
    /// # use stayfast_core::Policy;
    /// # let recorder = DebuggingRecorder::new();
    /// # let _guard = metrics::set_default_local_recorder(&recorder);
    /// let _policy = Policy::builder("redis.get").metrics_prefix("myapp").build().unwrap();
    /// let series = recorder.snapshotter().snapshot().into_vec();
    /// assert!(series.iter().any(|(key, ..)| key.key().name() == "myapp_calls_total"));
    /// ```
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Bounds each attempt by `backstop` (coarse: up to one tick late) instead of a
    /// timer per attempt: for operations that hand [`Attempt::deadline`] to a client
    /// which ends them in time itself, so stayfast's bound is only a safety net.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn backstop(mut self, backstop: Backstop) -> Self {
        self.backstop = Some(backstop);
        self
    }

    /// Batches the metrics per thread: for hot operations whose owner flushes them
    /// (the Redis handle does, every second; see [`CallMetrics::batched`]).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn batch_metrics(mut self) -> Self {
        self.batched = true;
        self
    }

    /// Records no metrics.
    ///
    /// ```
    /// # use stayfast_core::Policy;
    /// let policy = Policy::builder("fs.read").without_metrics().build().unwrap();
    /// assert_eq!(policy.to_string(), "fs.read"); // no `Metered` layer
    /// ```
    pub fn without_metrics(mut self) -> Self {
        self.prefix = None;
        self
    }

    /// Classifies the operation's errors with `classifier` instead of their
    /// [`Classify`](crate::Classify) impl.
    ///
    /// ```
    /// # use std::io;
    /// # use stayfast_core::{Policy, Verdict, config::RetryConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = Policy::builder("fs.read")
    ///     .retry(&RetryConfig::default())
    ///     // The file may not be written yet: retry NotFound, which `io::Error` would not.
    ///     .classify(|e: &io::Error| match e.kind() {
    ///         io::ErrorKind::NotFound => Verdict::transient(),
    ///         _ => Verdict::permanent(),
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let missing = || async { Err::<(), _>(io::Error::from(io::ErrorKind::NotFound)) };
    /// assert_eq!(policy.call(missing).await.unwrap_err().attempts(), Some(3));
    /// # }
    /// ```
    pub fn classify<E, F>(self, classifier: F) -> PolicyBuilder<F>
    where
        F: Fn(&E) -> Verdict + Send + Sync + 'static,
    {
        PolicyBuilder {
            operation: self.operation,
            target: self.target,
            config: self.config,
            budget: self.budget,
            bulkhead: self.bulkhead,
            breaker: self.breaker,
            backstop: self.backstop,
            batched: self.batched,
            classifier,
            on_retry: self.on_retry,
            prefix: self.prefix,
            seed: self.seed,
        }
    }

    /// Validates everything and builds the policy, resolving its metric handles from the
    /// recorder installed now.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field (`timeout`, `retry.max_attempts`…).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let err = stayfast_core::Policy::builder("op").timeout(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid config `timeout`: must be greater than zero");
    /// ```
    pub fn build(self) -> Result<Policy<C>, ConfigError> {
        let config = &self.config;
        config.validate()?;
        if let Some(d) = config.timeout {
            positive("timeout", d)?;
        }
        let retries = config.retry.is_some();
        let mut retry = match &config.retry {
            Some(r) => Retry::new(r).map_err(|e| e.prefixed("retry"))?,
            None => Retry::once(),
        };
        if retries {
            if let Some(seed) = self.seed {
                retry = retry.jitter_seed(seed);
            }
            if let Some(budget) = self.budget {
                retry = retry.retry_budget(budget);
            }
        }
        let target = self
            .target
            .or_else(|| self.breaker.as_ref().map(|b| b.target().clone()))
            .or_else(|| self.bulkhead.as_ref().map(|b| b.target().clone()))
            .unwrap_or_else(|| self.operation.clone());
        let metrics = match &self.prefix {
            Some(prefix) if self.batched => CallMetrics::batched(prefix, &self.operation, &target),
            Some(prefix) => CallMetrics::with_prefix(prefix, &self.operation, &target),
            None => CallMetrics::disabled(),
        };
        let mut retry = retry
            .operation(self.operation)
            .idempotent(config.idempotent)
            .with_classifier(self.classifier);
        retry.on_retry = self.on_retry;
        Ok(Policy {
            inner: Arc::new(Inner {
                target,
                timeout: config.timeout,
                deadline: config.deadline,
                retry,
                retries,
                bulkhead: self.bulkhead,
                breaker: self.breaker,
                backstop: self.backstop,
                metrics,
                metered: self.prefix.is_some(),
            }),
        })
    }
}

impl<C> fmt::Debug for PolicyBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyBuilder")
            .field("operation", &self.operation)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
