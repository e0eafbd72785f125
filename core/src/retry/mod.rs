//! Retry: what a [`Policy`](crate::Policy) does between attempts — the backoff, the
//! budget, and the hook told about every retry.

mod backoff;
mod budget;

use std::{fmt, sync::Arc, time::Duration};

pub use backoff::Backoff;
pub use budget::RetryBudget;

use crate::{
    Name, Outcome,
    config::{ConfigError, RetryConfig},
};

/// What a policy's retry hook is told before each retry.
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
    /// The policy's operation.
    pub operation: &'a Name,
    /// The attempt that just failed (1 = the first).
    pub attempt: u32,
    /// How that attempt ended (`failure` or `timeout`).
    pub cause: Outcome,
    /// How long the policy waits before the next attempt.
    pub delay: Duration,
}

pub(crate) type RetryHook = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// The retry layer of a policy, built from a [`RetryConfig`].
pub(crate) struct Retry {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) budget: Option<RetryBudget>,
}

impl Retry {
    pub(crate) fn new(config: &RetryConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            max_attempts: config.max_attempts,
            backoff: Backoff::new(config)?,
            max_elapsed: config.max_elapsed,
            budget: config.budget.as_ref().map(RetryBudget::new).transpose()?,
        })
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_elapsed", &self.max_elapsed)
            .field("budget", &self.budget)
            .finish()
    }
}
