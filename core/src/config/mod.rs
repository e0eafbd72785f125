//! Serde configuration for every wrapper, the one duration format, and validation that
//! names the field at fault.
//!
//! Every struct is `#[serde(default, deny_unknown_fields)]`: a missing field takes its
//! default, a misspelt one is an error. Build a wrapper from a config with its
//! `from_config`/`new` constructor, which validates first; invalid values give a
//! [`ConfigError`] naming the field, never a panic.
//!
//! # Examples
//!
//! ```
//! use stayfast_core::config::BreakerConfig;
//!
//! let config: BreakerConfig = toml::from_str(r#"
//!     consecutive_failures = 3
//!     open_for = "500ms"
//!     failure_rate = 0.25
//! "#).unwrap();
//! assert_eq!(config.consecutive_failures, Some(3));
//! assert!(config.validate().is_ok());
//!
//! let bad: BreakerConfig = toml::from_str("failure_rate = 1.5").unwrap();
//! assert_eq!(bad.validate().unwrap_err().to_string(),
//!            "invalid config `failure_rate`: must be in (0, 1], found 1.5");
//! ```

pub mod duration;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration value that cannot be used, naming the field and what is wrong.
///
/// # Examples
///
/// ```
/// use stayfast_core::config::RetryConfig;
///
/// let mut retry = RetryConfig::default();
/// retry.max_attempts = 0;
/// let err = retry.validate().unwrap_err();
/// assert_eq!(err.field(), "max_attempts");
/// assert_eq!(err.prefixed("retry").field(), "retry.max_attempts");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid config `{field}`: {problem}")]
pub struct ConfigError {
    field: String,
    problem: String,
}

impl ConfigError {
    /// An error for `field` saying `problem`.
    ///
    /// ```
    /// let e = stayfast_core::config::ConfigError::new("timeout", "must be greater than zero");
    /// assert_eq!(e.to_string(), "invalid config `timeout`: must be greater than zero");
    /// ```
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The dotted path of the field at fault.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::config::PolicyConfig;
    /// let mut policy = PolicyConfig::default();
    /// policy.timeout = Some(Duration::ZERO);
    /// assert_eq!(policy.validate().unwrap_err().field(), "timeout");
    /// ```
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    ///
    /// ```
    /// # use stayfast_core::config::BulkheadConfig;
    /// let mut bulkhead = BulkheadConfig::default();
    /// bulkhead.max_concurrent = 0;
    /// assert_eq!(bulkhead.validate().unwrap_err().problem(), "must be at least 1");
    /// ```
    pub fn problem(&self) -> &str {
        &self.problem
    }

    /// The same error with the field's path prefixed by `parent` (`"retry"` turns
    /// `max_attempts` into `retry.max_attempts`).
    ///
    /// ```
    /// # use stayfast_core::config::ConfigError;
    /// let err = ConfigError::new("max_attempts", "must be at least 1").prefixed("retry");
    /// assert_eq!(err.field(), "retry.max_attempts");
    /// assert_eq!(err.to_string(), "invalid config `retry.max_attempts`: must be at least 1");
    /// ```
    #[must_use]
    pub fn prefixed(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

pub(crate) fn positive(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    Ok(())
}

pub(crate) fn rate(field: &str, value: f64) -> Result<(), ConfigError> {
    if !(value > 0.0 && value <= 1.0) {
        return Err(ConfigError::new(
            field,
            format!("must be in (0, 1], found {value}"),
        ));
    }
    Ok(())
}

pub(crate) fn at_least_one(field: &str, value: u32) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be at least 1"));
    }
    Ok(())
}

fn multiplier(field: &str, value: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value >= 1.0) {
        return Err(ConfigError::new(
            field,
            format!("must be a finite number >= 1, found {value}"),
        ));
    }
    Ok(())
}

/// Settings of a [`CircuitBreaker`](crate::CircuitBreaker).
///
/// It opens when `consecutive_failures` attempts in a row failed, or when, over the
/// last `window` attempts (at least `minimum_calls` of them), the share of failures
/// reaches `failure_rate` or the share of calls slower than `slow_call_duration`
/// reaches `slow_call_rate`. It stays open for `open_for`, multiplied by `open_growth`
/// each time a probe fails, up to `max_open_for`; then admits `half_open_probes` probes,
/// and closes when all of them succeed.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::config::BreakerConfig;
///
/// let mut config = BreakerConfig::default();
/// config.consecutive_failures = Some(3);
/// config.open_for = Duration::from_secs(1);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Open after this many failed attempts in a row (`None`: never on this rule).
    pub consecutive_failures: Option<u32>,
    /// Open when this share of the window failed, in (0, 1] (`None`: never on this rule).
    pub failure_rate: Option<f64>,
    /// How many recent attempts the rate rules look at.
    pub window: u32,
    /// The rate rules wait for this many attempts in the window.
    pub minimum_calls: u32,
    /// An attempt that succeeds but takes at least this long is a slow call (`None`: off).
    #[serde(with = "duration::option")]
    pub slow_call_duration: Option<Duration>,
    /// Open when this share of the window was slow, in (0, 1].
    pub slow_call_rate: f64,
    /// How long the circuit stays open the first time.
    #[serde(with = "duration")]
    pub open_for: Duration,
    /// Each re-open after a failed probe multiplies the open duration by this (>= 1).
    pub open_growth: f64,
    /// The open duration never grows past this.
    #[serde(with = "duration")]
    pub max_open_for: Duration,
    /// How many probes a half-open circuit admits at once; it closes when all succeed.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            failure_rate: Some(0.5),
            window: 100,
            minimum_calls: 20,
            slow_call_duration: None,
            slow_call_rate: 1.0,
            open_for: Duration::from_secs(5),
            open_growth: 2.0,
            max_open_for: Duration::from_secs(60),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first field that is out of range.
    ///
    /// ```
    /// # use stayfast_core::config::BreakerConfig;
    /// let mut config = BreakerConfig::default();
    /// config.window = 10;
    /// assert_eq!(config.validate().unwrap_err().field(), "minimum_calls"); // default 20 > 10
    /// config.minimum_calls = 10;
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(n) = self.consecutive_failures {
            at_least_one("consecutive_failures", n)?;
        }
        if let Some(r) = self.failure_rate {
            rate("failure_rate", r)?;
        }
        at_least_one("window", self.window)?;
        if self.window > 100_000 {
            return Err(ConfigError::new(
                "window",
                format!("must be at most 100000, found {}", self.window),
            ));
        }
        at_least_one("minimum_calls", self.minimum_calls)?;
        if self.minimum_calls > self.window {
            return Err(ConfigError::new(
                "minimum_calls",
                format!(
                    "must be at most `window` ({}), found {}",
                    self.window, self.minimum_calls
                ),
            ));
        }
        if let Some(d) = self.slow_call_duration {
            positive("slow_call_duration", d)?;
        }
        rate("slow_call_rate", self.slow_call_rate)?;
        positive("open_for", self.open_for)?;
        multiplier("open_growth", self.open_growth)?;
        if self.max_open_for < self.open_for {
            return Err(ConfigError::new("max_open_for", "must be at least `open_for`"));
        }
        at_least_one("half_open_probes", self.half_open_probes)
    }
}

/// Settings of a policy's retry: how many attempts, how long to wait between them, and
/// how much retrying the shared budget allows.
///
/// The delay before retry *n* is drawn uniformly from `[min_delay, min(max_delay,
/// min_delay × multiplier^(n-1))]` when `jitter` is on (the default), and is that upper
/// bound when it is off; it never exceeds `max_delay`.
///
/// # Examples
///
/// ```
/// use stayfast_core::config::RetryConfig;
///
/// let retry: RetryConfig = toml::from_str(r#"
///     max_attempts = 4
///     min_delay = "20ms"
///     max_delay = 1
///     max_elapsed = "3s"
/// "#).unwrap();
/// assert!(retry.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// The smallest delay between attempts.
    #[serde(with = "duration")]
    pub min_delay: Duration,
    /// The largest delay between attempts, applied after jitter.
    #[serde(with = "duration")]
    pub max_delay: Duration,
    /// Growth of the delay per retry (>= 1).
    pub multiplier: f64,
    /// Randomise each delay (on by default, so callers that failed together do not
    /// retry together).
    pub jitter: bool,
    /// No retry starts that could not finish its backoff before this much time has
    /// passed since the first attempt (`None`: no limit).
    #[serde(with = "duration::option")]
    pub max_elapsed: Option<Duration>,
    /// The budget that keeps retries to a share of calls (`None`: unlimited).
    pub budget: Option<BudgetConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: true,
            max_elapsed: None,
            budget: Some(BudgetConfig::default()),
        }
    }
}

impl RetryConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first field that is out of range.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::config::RetryConfig;
    /// let mut retry = RetryConfig::default();
    /// retry.min_delay = Duration::from_secs(5); // above the default `max_delay` of 2s
    /// assert_eq!(retry.validate().unwrap_err().field(), "max_delay");
    ///
    /// let retry: RetryConfig = toml::from_str("[budget]\nratio = 0.0").unwrap();
    /// assert_eq!(retry.validate().unwrap_err().field(), "budget.ratio");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one("max_attempts", self.max_attempts)?;
        if self.max_delay < self.min_delay {
            return Err(ConfigError::new("max_delay", "must be at least `min_delay`"));
        }
        multiplier("multiplier", self.multiplier)?;
        if let Some(d) = self.max_elapsed {
            positive("max_elapsed", d)?;
        }
        if let Some(b) = &self.budget {
            b.validate().map_err(|e| e.prefixed("budget"))?;
        }
        Ok(())
    }
}

/// Settings of a [`RetryBudget`](crate::RetryBudget): every call deposits `ratio` of a
/// retry, every retry withdraws one, and `min_retries` are always available; so `N`
/// calls make at most `N × (1 + ratio) + min_retries` attempts.
///
/// # Examples
///
/// ```
/// let budget = stayfast_core::config::BudgetConfig::default();
/// assert_eq!((budget.ratio, budget.min_retries), (0.2, 10));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Retries earned per call, in (0, 1].
    pub ratio: f64,
    /// Retries allowed regardless of traffic.
    pub min_retries: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_retries: 10,
        }
    }
}

impl BudgetConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// `ratio` outside (0, 1].
    ///
    /// ```
    /// # use stayfast_core::config::BudgetConfig;
    /// let budget: BudgetConfig = toml::from_str("ratio = 2.0").unwrap();
    /// assert_eq!(budget.validate().unwrap_err().to_string(),
    ///            "invalid config `ratio`: must be in (0, 1], found 2");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        rate("ratio", self.ratio)
    }
}

/// Settings of a [`Bulkhead`](crate::Bulkhead): at most `max_concurrent` calls at once;
/// a call past that waits up to `max_wait` for a slot, then is shed.
///
/// # Examples
///
/// ```
/// let b: stayfast_core::config::BulkheadConfig = toml::from_str(r#"
///     max_concurrent = 8
///     max_wait = "10ms"
/// "#).unwrap();
/// assert!(b.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// Calls allowed at once.
    pub max_concurrent: u32,
    /// How long a call may wait for a slot (zero: shed at once).
    #[serde(with = "duration")]
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            max_wait: Duration::ZERO,
        }
    }
}

impl BulkheadConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// `max_concurrent` of zero, or above tokio's semaphore limit.
    ///
    /// ```
    /// # use stayfast_core::config::BulkheadConfig;
    /// let bulkhead: BulkheadConfig = toml::from_str("max_concurrent = 0").unwrap();
    /// assert_eq!(bulkhead.validate().unwrap_err().field(), "max_concurrent");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one("max_concurrent", self.max_concurrent)?;
        if self.max_concurrent as usize > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "max_concurrent",
                "is larger than a semaphore can hold",
            ));
        }
        Ok(())
    }
}

/// Settings of one [`Policy`](crate::Policy): its per-attempt timeout, overall
/// deadline, idempotency and retry. The breaker and bulkhead are shared per dependency,
/// so they are built separately and handed to the builder.
///
/// # Examples
///
/// ```
/// use stayfast_core::{Policy, config::PolicyConfig};
///
/// let config: PolicyConfig = toml::from_str(r#"
///     timeout = "150ms"
///     deadline = "1s"
///     idempotent = true
///     [retry]
///     max_attempts = 3
/// "#).unwrap();
/// let policy = Policy::builder("redis.get").config(&config).build().unwrap();
/// assert_eq!(policy.to_string(), "Metered(Deadline(Retry(Timeout(redis.get))))");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// Bound on each attempt (`None`: unbounded — not recommended).
    #[serde(with = "duration::option")]
    pub timeout: Option<Duration>,
    /// Bound on the whole call, every attempt and backoff included (`None`: none).
    #[serde(with = "duration::option")]
    pub deadline: Option<Duration>,
    /// Whether the operation may safely run twice: only then is an attempt whose
    /// outcome is unknown retried.
    pub idempotent: bool,
    /// Retry settings (`None`: one attempt).
    pub retry: Option<RetryConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(2)),
            deadline: None,
            idempotent: false,
            retry: None,
        }
    }
}

impl PolicyConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first field that is out of range.
    ///
    /// ```
    /// # use stayfast_core::config::PolicyConfig;
    /// let config: PolicyConfig = toml::from_str("[retry]\nmax_attempts = 0").unwrap();
    /// assert_eq!(config.validate().unwrap_err().field(), "retry.max_attempts");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(d) = self.timeout {
            positive("timeout", d)?;
        }
        if let Some(d) = self.deadline {
            positive("deadline", d)?;
        }
        if let Some(r) = &self.retry {
            r.validate().map_err(|e| e.prefixed("retry"))?;
        }
        Ok(())
    }
}
