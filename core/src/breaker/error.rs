//! [`Rejected`]: the error of a call the breaker refused.

use std::{fmt, time::Duration};

use crate::Name;

/// The breaker refused a call: it is open, or half-open with every probe taken.
///
/// # Examples
///
/// ```
/// # use stayfast_core::{CircuitBreaker, config::BreakerConfig};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
/// breaker.force_open();
/// let rejected = breaker.try_acquire().unwrap_err();
/// assert!(rejected.to_string().contains("redis.main"));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub(super) target: Name,
    pub(super) retry_after: Duration,
}

impl Rejected {
    /// The dependency whose circuit is open.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// breaker.force_open();
    /// let rejected = breaker.try_acquire().unwrap_err();
    /// assert_eq!(rejected.target().as_str(), "redis.main");
    /// # }
    /// ```
    pub fn target(&self) -> &Name {
        &self.target
    }

    /// How long until a probe may be admitted; a hint.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.consecutive_failures = Some(1);
    /// config.open_for = Duration::from_secs(5);
    /// let breaker = CircuitBreaker::new("redis.main", &config).unwrap();
    /// breaker.try_acquire().unwrap().record(Health::Failure); // opens the circuit
    /// tokio::time::advance(Duration::from_secs(2)).await;
    /// assert_eq!(breaker.try_acquire().unwrap_err().retry_after(), Duration::from_secs(3));
    /// # }
    /// ```
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit for {} is open (retry after {:?})",
            self.target, self.retry_after
        )
    }
}

impl std::error::Error for Rejected {}
