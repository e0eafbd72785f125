//! [`CircuitBreaker`]: stop calling a dependency that is failing, and probe it before
//! trusting it again.

mod builder;
mod error;
mod in_a_row;
mod machine;
mod permit;
mod shared;
mod state;
mod window;

use std::{fmt, sync::Arc};

use tokio::{sync::watch, time::Instant};

pub(crate) use self::permit::Detached;
pub use self::{
    builder::BreakerBuilder,
    error::Rejected,
    permit::Permit,
    state::{State, Transition, TransitionReason},
};
use self::{shared::Shared, state::generation_of};
use crate::{Name, sync::Ordering};

/// A circuit breaker for one dependency, shared by every call to it.
///
/// **Closed**: calls pass; it opens after `consecutive_failures` failures in a row, or
/// when the failure or slow-call rate over its count window reaches its threshold.
/// **Open**: calls are rejected with the time left, for `open_for` (growing by
/// `open_growth` after each failed probe, up to `max_open_for`). **Half-open**: exactly
/// `half_open_probes` probes are admitted; the circuit closes when all succeed and
/// re-opens on the first failure. A probe that outlives the open duration counts as
/// failed, so a probe that never finishes cannot hold the circuit half-open. Manual
/// controls: [`force_open`](Self::force_open), [`reset`](Self::reset),
/// [`disable`](Self::disable).
///
/// The state is read without a lock ([`state`](Self::state)); a closed breaker admits
/// and records successes lock-free. Transitions take a short lock, never held across an
/// `.await`. Time is tokio's, so `tokio::time::pause` drives it in tests. Transitions are
/// published on a `watch` channel, to the callback, as `tracing` events (target
/// `stayfast::breaker`) and as metrics. Cloning is cheap and shares the state.
///
/// # Examples
///
/// ```
/// use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig, breaker::State};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut config = BreakerConfig::default();
/// config.consecutive_failures = Some(2);
/// let breaker = CircuitBreaker::new("redis.main", &config).unwrap();
///
/// for _ in 0..2 {
///     let permit = breaker.try_acquire().unwrap();
///     permit.record(Health::Failure);
/// }
/// assert_eq!(breaker.state(), State::Open);
/// let rejected = breaker.try_acquire().unwrap_err();
/// assert_eq!(rejected.retry_after(), config.open_for);
/// # }
/// ```
///
/// # Cancellation
///
/// A [`Permit`] dropped without a recorded outcome counts as nothing; a dropped
/// half-open probe gives its slot back, so a cancelled caller never wedges the breaker.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

// NOTE: construction (`new`, `builder`) lives with the builder, in `builder.rs`; the
// record path and every transition live with the shared state, in `shared.rs`.
impl CircuitBreaker {
    /// The dependency this breaker protects.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// assert_eq!(breaker.target().as_str(), "redis.main");
    /// # }
    /// ```
    pub fn target(&self) -> &Name {
        &self.shared.target
    }

    /// The current state, read without a lock. An open breaker whose open duration has
    /// passed still reads `Open` until the next call moves it to half-open.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.consecutive_failures = Some(1);
    /// let breaker = CircuitBreaker::new("redis.main", &config).unwrap();
    /// breaker.try_acquire().unwrap().record(Health::Failure);
    /// tokio::time::advance(config.open_for).await;
    /// assert_eq!(breaker.state(), State::Open); // until the next call...
    /// assert!(breaker.try_acquire().unwrap().is_probe());
    /// assert_eq!(breaker.state(), State::HalfOpen);
    /// # }
    /// ```
    pub fn state(&self) -> State {
        State::from_bits(self.shared.snapshot.load(Ordering::Acquire))
    }

    /// A receiver that always holds the latest state.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// let mut states = breaker.subscribe();
    /// breaker.force_open();
    /// states.changed().await.unwrap();
    /// assert_eq!(*states.borrow(), State::ForcedOpen);
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.shared.events.subscribe()
    }

    /// Asks to make one call. Returns a [`Permit`] to record the outcome on, or
    /// [`Rejected`] with the time until a probe may be admitted.
    ///
    /// # Errors
    ///
    /// [`Rejected`] while open, or half-open with every probe slot taken.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// match breaker.try_acquire() {
    ///     Ok(permit) => permit.record(Health::Success), // after making the call
    ///     Err(rejected) => eprintln!("not attempted: {rejected}"),
    /// }
    /// breaker.force_open();
    /// assert!(breaker.try_acquire().is_err());
    /// # }
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let snapshot = self.shared.snapshot.load(Ordering::Acquire);
        match State::from_bits(snapshot) {
            // The hot path: no lock, no clock.
            State::Closed | State::Disabled => Ok(self.permit(generation_of(snapshot), false)),
            _ => self.acquire_slow(Instant::now()),
        }
    }

    /// A permit [detached](Permit::detach) from this breaker, attached again to settle
    /// or drop it.
    #[inline]
    pub(crate) fn attach(&self, detached: Detached) -> Permit<'_> {
        detached.attach(&self.shared)
    }

    #[inline]
    fn permit(&self, generation: u64, probe: bool) -> Permit<'_> {
        Permit::new(&self.shared, generation, probe)
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let (generation, probe) = self.shared.admit(now)?;
        Ok(self.permit(generation, probe))
    }

    /// Opens the circuit until [`reset`](Self::reset), whatever the outcomes.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// breaker.force_open();
    /// assert_eq!(breaker.state(), State::ForcedOpen);
    /// tokio::time::advance(Duration::from_secs(3600)).await;
    /// assert!(breaker.try_acquire().is_err()); // no probe, however long it has been
    /// # }
    /// ```
    pub fn force_open(&self) {
        self.shared.manual(State::ForcedOpen);
    }

    /// Opens the circuit now, as its failure rules would: calls are rejected, and after
    /// the open duration a probe decides, as after any trip (unlike
    /// [`force_open`](Self::force_open), which holds until [`reset`](Self::reset)). For
    /// a signal that the dependency is down before any call has failed, such as a client
    /// reporting that it lost every connection. Does nothing unless the circuit is
    /// closed or half-open. Returns whether it opened the circuit.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.open_for = Duration::from_secs(1);
    /// let breaker = CircuitBreaker::new("redis.main", &config).unwrap();
    /// assert!(breaker.trip()); // e.g. every Redis connection just closed
    /// assert!(breaker.try_acquire().unwrap_err().retry_after() <= Duration::from_secs(1));
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// assert!(breaker.try_acquire().is_ok()); // a probe: recovery as after any trip
    /// assert_eq!(breaker.state(), State::HalfOpen);
    /// # }
    /// ```
    pub fn trip(&self) -> bool {
        self.shared.trip()
    }

    /// Closes the circuit and forgets every counted outcome.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// breaker.force_open();
    /// breaker.reset();
    /// assert_eq!(breaker.state(), State::Closed);
    /// assert!(breaker.try_acquire().is_ok());
    /// # }
    /// ```
    pub fn reset(&self) {
        self.shared.manual(State::Closed);
    }

    /// Lets every call through and counts nothing, until [`reset`](Self::reset) or
    /// [`force_open`](Self::force_open).
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Health, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
    /// breaker.disable();
    /// for _ in 0..100 {
    ///     breaker.try_acquire().unwrap().record(Health::Failure); // not counted
    /// }
    /// assert_eq!(breaker.state(), State::Disabled);
    /// # }
    /// ```
    pub fn disable(&self) {
        self.shared.manual(State::Disabled);
    }

    /// Whether a call made now would be admitted as a half-open probe: the circuit is
    /// open and its break is over, or half-open with a probe slot free. Changes nothing,
    /// unlike [`try_acquire`](Self::try_acquire), which moves such an open circuit to
    /// half-open. For a caller that can tell the probe could not reach the dependency
    /// yet (its client has no connection up) and keeps it for a call that can: the
    /// circuit stays open, its break does not grow, and the probe goes with the first
    /// call after the client has reconnected.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.open_for = Duration::from_secs(1);
    /// let breaker = CircuitBreaker::new("redis.main", &config).unwrap();
    /// assert!(!breaker.probe_due()); // closed: calls are not probes
    /// breaker.trip();
    /// assert!(!breaker.probe_due()); // the break is not over
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// assert!(breaker.probe_due());
    /// assert_eq!(breaker.state(), State::Open); // still open until a call takes the probe
    /// let probe = breaker.try_acquire().unwrap();
    /// assert!(!breaker.probe_due()); // the only probe slot is taken
    /// # drop(probe);
    /// # }
    /// ```
    pub fn probe_due(&self) -> bool {
        self.shared.probe_due()
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("target", &self.shared.target)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, stayfast_loom))]
mod loom_tests;
