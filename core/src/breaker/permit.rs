//! [`Permit`]: one admitted call, and the outcome it records.

use std::{fmt, time::Duration};

use super::shared::Shared;
use crate::Health;

/// Permission to make one call through a [`CircuitBreaker`](super::CircuitBreaker); record its outcome with
/// [`record`](Self::record).
///
/// Each permit carries the generation of the state that admitted it: once the breaker
/// has moved on, the permit's outcome changes nothing.
///
/// # Examples
///
/// ```
/// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
/// let permit = breaker.try_acquire().unwrap();
/// let result: Result<u32, std::io::Error> = Ok(1); // make the call here
/// permit.record(if result.is_ok() { Health::Success } else { Health::Failure });
/// # }
/// ```
///
/// # Cancellation
///
/// Dropping a permit without recording counts as nothing; a half-open probe's slot is
/// given back.
#[must_use = "record the call's outcome on the permit, or drop it to count nothing"]
pub struct Permit<'a> {
    shared: &'a Shared,
    generation: u64,
    probe: bool,
    settled: bool,
}

impl<'a> Permit<'a> {
    /// A permit of `generation` (a half-open probe when `probe`), not yet settled.
    #[inline]
    pub(super) fn new(shared: &'a Shared, generation: u64, probe: bool) -> Self {
        Self {
            shared,
            generation,
            probe,
            settled: false,
        }
    }

    /// Records the call's outcome.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.consecutive_failures = Some(2);
    /// let breaker = CircuitBreaker::new("redis.main", &config).unwrap();
    /// breaker.try_acquire().unwrap().record(Health::Failure);
    /// breaker.try_acquire().unwrap().record(Health::Success); // ends the run of failures
    /// breaker.try_acquire().unwrap().record(Health::Failure);
    /// assert_eq!(breaker.state(), State::Closed);
    /// # }
    /// ```
    #[inline]
    pub fn record(mut self, health: Health) {
        self.settled = true;
        self.shared.record(self.generation, self.probe, health, None);
    }

    /// Records the call's outcome and duration (for the slow-call rule).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.slow_call_duration = Some(Duration::from_millis(100));
    /// config.minimum_calls = 2;
    /// let breaker = CircuitBreaker::new("redis.main", &config).unwrap();
    /// for _ in 0..2 {
    ///     breaker.try_acquire().unwrap().record_timed(Health::Success, Duration::from_millis(250));
    /// }
    /// assert_eq!(breaker.state(), State::Open); // every call was slow
    /// # }
    /// ```
    #[inline]
    pub fn record_timed(mut self, health: Health, elapsed: Duration) {
        self.settled = true;
        self.shared
            .record(self.generation, self.probe, health, Some(elapsed));
    }

    /// The permit without its borrow of the breaker, for a future that owns the breaker
    /// (through its policy) and so cannot hold a borrow of it: the future gives it back
    /// with [`CircuitBreaker::attach`](super::CircuitBreaker::attach) to settle or drop it.
    #[inline]
    pub(crate) fn detach(mut self) -> Detached {
        // Settled as far as this value goes: the detached permit carries the obligation.
        self.settled = true;
        Detached {
            generation: self.generation,
            probe: self.probe,
        }
    }

    /// Whether the breaker wants this call's duration ([`record_timed`](Self::record_timed)).
    pub(crate) fn tracks_slow_calls(&self) -> bool {
        self.shared.tracks_slow_calls()
    }

    /// True for a half-open probe.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.consecutive_failures = Some(1);
    /// let breaker = CircuitBreaker::new("redis.main", &config).unwrap();
    /// let permit = breaker.try_acquire().unwrap();
    /// assert!(!permit.is_probe());
    /// permit.record(Health::Failure); // opens the circuit
    /// tokio::time::advance(config.open_for).await;
    /// assert!(breaker.try_acquire().unwrap().is_probe());
    /// # }
    /// ```
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The generation of the state that admitted this permit.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// let before = breaker.try_acquire().unwrap();
    /// breaker.force_open();
    /// breaker.reset();
    /// let after = breaker.try_acquire().unwrap();
    /// assert!(after.generation() > before.generation());
    /// before.record(Health::Failure); // from an earlier generation: changes nothing
    /// # }
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A [`Permit`] taken off its breaker (see [`Permit::detach`]): settles nothing and
/// releases nothing until attached again.
#[derive(Debug)]
pub(crate) struct Detached {
    generation: u64,
    probe: bool,
}

impl Detached {
    /// The permit again, on the breaker's `shared` state that admitted it.
    #[inline]
    pub(super) fn attach(self, shared: &Shared) -> Permit<'_> {
        Permit::new(shared, self.generation, self.probe)
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.shared.release_probe(self.generation);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("target", &self.shared.target)
            .field("generation", &self.generation)
            .field("probe", &self.probe)
            .finish()
    }
}
