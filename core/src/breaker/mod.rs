//! [`CircuitBreaker`]: stop calling a dependency that is failing, and probe it before
//! trusting it again.

mod in_a_row;
mod machine;
mod state;
mod window;

use std::{fmt, sync::Arc, time::Duration};

use metrics::{Gauge, counter, gauge};
use tokio::{sync::watch, time::Instant};

pub use state::{State, Transition, TransitionReason};

use self::{
    in_a_row::InARow,
    machine::{Machine, OpenPolicy},
    state::{generation_of, pack},
    window::{CountWindow, Sample},
};
use crate::{
    Health, Name, clock,
    config::{BreakerConfig, ConfigError},
    sync::{AtomicU64, Mutex, Ordering, lock},
    telemetry::{CIRCUIT_STATE, CIRCUIT_TRANSITIONS_TOTAL, DEFAULT_PREFIX, metric_name},
};

type Callback = Box<dyn Fn(&Transition) + Send + Sync>;

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

struct Shared {
    target: Name,
    consecutive_limit: Option<u32>,
    failure_rate: Option<f64>,
    minimum_calls: u64,
    slow_call: Option<Duration>,
    slow_call_rate: f64,
    probes: u32,
    open: OpenPolicy,
    /// State and generation, packed: the lock-free read path.
    snapshot: AtomicU64,
    /// Failures in a row, tagged with the generation they count for: see [`InARow`].
    consecutive_failures: AtomicU64,
    /// Present when a rate rule is on.
    window: Option<CountWindow>,
    machine: Mutex<Machine>,
    events: watch::Sender<State>,
    on_transition: Option<Callback>,
    gauge: Gauge,
    transitions_metric: String,
}

/// Builds a [`CircuitBreaker`] with a callback or a metric prefix.
///
/// # Examples
///
/// ```
/// use stayfast_core::{CircuitBreaker, config::BreakerConfig};
///
/// let breaker = CircuitBreaker::builder("redis.main")
///     .config(&BreakerConfig::default())
///     .on_transition(|t| eprintln!("{} is now {}", t.target, t.to))
///     .metrics_prefix("myapp")
///     .build()
///     .unwrap();
/// # let _ = breaker;
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct BreakerBuilder {
    target: Name,
    config: BreakerConfig,
    on_transition: Option<Callback>,
    prefix: String,
}

impl BreakerBuilder {
    /// Uses `config` (validated by [`build`](Self::build)).
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.half_open_probes = 0;
    /// let err = CircuitBreaker::builder("redis.main").config(&config).build().unwrap_err();
    /// assert_eq!(err.field(), "half_open_probes"); // checked by `build`
    /// # }
    /// ```
    pub fn config(mut self, config: &BreakerConfig) -> Self {
        self.config = config.clone();
        self
    }

    /// Calls `callback` after every transition, outside the breaker's lock. Keep it
    /// quick: it runs on the thread that caused the transition.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use stayfast_core::{CircuitBreaker, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&seen);
    /// let breaker = CircuitBreaker::builder("redis.main")
    ///     .on_transition(move |t| log.lock().unwrap().push(t.to))
    ///     .build()
    ///     .unwrap();
    /// breaker.force_open();
    /// assert_eq!(*seen.lock().unwrap(), [State::ForcedOpen]);
    /// # }
    /// ```
    pub fn on_transition(mut self, callback: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.on_transition = Some(Box::new(callback));
        self
    }

    /// Names the breaker's metrics `<prefix>_circuit_state` and so on.
    ///
    /// ```
    /// # use metrics_util::debugging::DebuggingRecorder;
    /// # use stayfast_core::CircuitBreaker;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// # let recorder = DebuggingRecorder::new();
    /// # let _guard = metrics::set_default_local_recorder(&recorder);
    /// let breaker = CircuitBreaker::builder("redis.main").metrics_prefix("myapp").build().unwrap();
    /// let series = recorder.snapshotter().snapshot().into_vec();
    /// assert!(series.iter().any(|(key, ..)| key.key().name() == "myapp_circuit_state"));
    /// # drop(breaker);
    /// # }
    /// ```
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Validates the configuration and builds the breaker, resolving its metric handles
    /// from the recorder installed now.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, breaker::State};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::builder("redis.main").build().unwrap();
    /// assert_eq!(breaker.state(), State::Closed);
    /// # }
    /// ```
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let c = &self.config;
        c.validate()?;
        let open = OpenPolicy {
            base: c.open_for,
            growth: c.open_growth,
            max: c.max_open_for,
        };
        let rates_on = c.failure_rate.is_some() || c.slow_call_duration.is_some();
        let target_label = self.target.to_label();
        let gauge = gauge!(metric_name(&self.prefix, CIRCUIT_STATE), "target" => target_label);
        gauge.set(State::Closed.gauge_value());
        let (events, _) = watch::channel(State::Closed);
        Ok(CircuitBreaker {
            shared: Arc::new(Shared {
                consecutive_limit: c.consecutive_failures,
                failure_rate: c.failure_rate,
                minimum_calls: u64::from(c.minimum_calls),
                slow_call: c.slow_call_duration,
                slow_call_rate: c.slow_call_rate,
                probes: c.half_open_probes,
                snapshot: AtomicU64::new(pack(State::Closed, 0)),
                consecutive_failures: AtomicU64::new(InARow::start(0)),
                window: rates_on.then(|| CountWindow::new(c.window)),
                machine: Mutex::new(Machine::new(&open, Instant::now())),
                open,
                events,
                on_transition: self.on_transition,
                gauge,
                transitions_metric: metric_name(&self.prefix, CIRCUIT_TRANSITIONS_TOTAL),
                target: self.target,
            }),
        })
    }
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("target", &self.target)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

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
    target: Name,
    retry_after: Duration,
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

impl CircuitBreaker {
    /// A breaker for `target` with `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, config::BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut config = BreakerConfig::default();
    /// config.failure_rate = Some(0.0);
    /// let err = CircuitBreaker::new("redis.main", &config).unwrap_err();
    /// assert_eq!(err.field(), "failure_rate");
    /// # }
    /// ```
    pub fn new(target: impl Into<Name>, config: &BreakerConfig) -> Result<Self, ConfigError> {
        Self::builder(target).config(config).build()
    }

    /// A builder for a breaker on `target`, starting from the default configuration.
    ///
    /// ```
    /// # use stayfast_core::{CircuitBreaker, Health};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::builder("redis.main").build().unwrap();
    /// for _ in 0..5 {
    ///     // the default `consecutive_failures`
    ///     breaker.try_acquire().unwrap().record(Health::Failure);
    /// }
    /// assert!(breaker.state().is_open());
    /// # }
    /// ```
    pub fn builder(target: impl Into<Name>) -> BreakerBuilder {
        BreakerBuilder {
            target: target.into(),
            config: BreakerConfig::default(),
            on_transition: None,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

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

    #[inline]
    fn permit(&self, generation: u64, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            generation,
            probe,
            settled: false,
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let shared = &*self.shared;
        let mut m = lock(&shared.machine);
        let mut moved = None;
        if m.state == State::Open && m.open_until.is_some_and(|t| now >= t) {
            moved = Some(self.enter(&mut m, State::HalfOpen, TransitionReason::BreakElapsed, now));
        }
        if m.state == State::HalfOpen
            && m.probes_admitted >= shared.probes
            && now.saturating_duration_since(m.half_open_since) >= m.open_for
        {
            // Every probe has outlived the open duration: count them as failed rather
            // than stay half-open forever.
            let t = self.enter(&mut m, State::Open, TransitionReason::ProbeFailed, now);
            drop(m);
            self.announce(moved.into_iter().chain([t]));
            return Err(self.rejected_at(now));
        }
        let result = match m.state {
            State::Closed | State::Disabled => Ok(self.permit(m.generation, false)),
            State::HalfOpen if m.probes_admitted < shared.probes => {
                m.probes_admitted += 1;
                Ok(self.permit(m.generation, true))
            }
            // Every probe is out: they count as failed once the open duration has passed.
            State::HalfOpen => Err(clock::deadline_after(m.half_open_since, m.open_for)
                .map_or(Duration::MAX, |t| t.saturating_duration_since(now))),
            State::Open => Err(m
                .open_until
                .map_or(Duration::MAX, |t| t.saturating_duration_since(now))),
            State::ForcedOpen => Err(m.open_for),
        };
        drop(m);
        self.announce(moved);
        result.map_err(|retry_after| Rejected {
            target: shared.target.clone(),
            retry_after,
        })
    }

    fn rejected_at(&self, now: Instant) -> Rejected {
        let m = lock(&self.shared.machine);
        Rejected {
            target: self.shared.target.clone(),
            retry_after: m
                .open_until
                .map_or(Duration::MAX, |t| t.saturating_duration_since(now)),
        }
    }

    /// Whether outcomes need their duration (a slow-call rule is on).
    #[inline]
    pub(crate) fn tracks_slow_calls(&self) -> bool {
        self.shared.slow_call.is_some()
    }

    #[inline]
    fn record(&self, permit_generation: u64, probe: bool, health: Health, elapsed: Option<Duration>) {
        let shared = &*self.shared;
        let slow = matches!((shared.slow_call, elapsed), (Some(limit), Some(e)) if e >= limit);
        if probe {
            return self.record_probe(permit_generation, health, slow);
        }
        let snapshot = shared.snapshot.load(Ordering::Acquire);
        if generation_of(snapshot) != permit_generation || State::from_bits(snapshot) != State::Closed {
            return; // a permit from an earlier state, or the breaker is disabled
        }
        let (in_a_row, sample) = match health {
            Health::Ignore => return,
            Health::Success => {
                if !slow {
                    InARow::success(&shared.consecutive_failures, permit_generation);
                }
                (0, if slow { Sample::Slow } else { Sample::Success })
            }
            Health::Failure => match InARow::failure(&shared.consecutive_failures, permit_generation) {
                Some(in_a_row) => (in_a_row, Sample::Failure),
                None => return, // the generation ended after the check above
            },
        };
        // NOTE: the rate rules are checked after every sample, successes included: the
        // sample that brings the window to `minimum_calls` may be a success.
        let counts = match &shared.window {
            Some(w) => {
                let (counts, written) = w.push(sample, permit_generation);
                // NOTE: the generation may have ended between the check above and the
                // push, and a reset cleared the window for the next: take the stale
                // sample back. A window is cleared only on entering closed, always from
                // another state whose generation was published before the clear; a push
                // that landed after the clear read a slot the clear released, so this
                // load sees a later generation than the permit's.
                if let Some(written) = written
                    && generation_of(shared.snapshot.load(Ordering::Acquire)) != permit_generation
                {
                    w.undo(written);
                    return;
                }
                Some(counts)
            }
            None => None,
        };
        let reason = if shared.consecutive_limit.is_some_and(|limit| in_a_row >= limit) {
            Some(TransitionReason::FailureThreshold)
        } else {
            counts.and_then(|c| self.rate_rule(c))
        };
        if let Some(reason) = reason {
            self.open_once(permit_generation, reason);
        }
    }

    /// Which rate rule, if any, the window's counts break.
    #[inline]
    fn rate_rule(&self, c: window::Counts) -> Option<TransitionReason> {
        let shared = &*self.shared;
        if c.calls < shared.minimum_calls {
            return None;
        }
        let calls = c.calls as f64;
        if shared
            .failure_rate
            .is_some_and(|rate| c.failures as f64 >= rate * calls)
        {
            Some(TransitionReason::FailureRate)
        } else if shared.slow_call.is_some() && c.slow as f64 >= shared.slow_call_rate * calls {
            Some(TransitionReason::SlowCalls)
        } else {
            None
        }
    }

    /// Failures in a row the closed state has counted (for the model checks).
    #[cfg(all(test, stayfast_loom))]
    pub(crate) fn failures_in_a_row(&self) -> u32 {
        InARow::count(self.shared.consecutive_failures.load(Ordering::Acquire))
    }

    /// Closed → open, once per generation however many callers see the threshold.
    #[cold]
    #[inline(never)]
    fn open_once(&self, generation: u64, reason: TransitionReason) {
        let mut m = lock(&self.shared.machine);
        if m.generation != generation || m.state != State::Closed {
            return;
        }
        let t = self.enter(&mut m, State::Open, reason, Instant::now());
        drop(m);
        self.announce([t]);
    }

    #[cold]
    #[inline(never)]
    fn record_probe(&self, generation: u64, health: Health, slow: bool) {
        let mut m = lock(&self.shared.machine);
        if m.generation != generation || m.state != State::HalfOpen {
            return; // a stale probe: its generation is over, its result changes nothing
        }
        let t = match (health, slow) {
            (Health::Ignore, _) => {
                m.probes_admitted -= 1;
                None
            }
            (Health::Success, false) => {
                m.probes_succeeded += 1;
                (m.probes_succeeded >= self.shared.probes).then(|| {
                    self.enter(
                        &mut m,
                        State::Closed,
                        TransitionReason::ProbeSucceeded,
                        Instant::now(),
                    )
                })
            }
            (Health::Failure, _) | (Health::Success, true) => {
                Some(self.enter(&mut m, State::Open, TransitionReason::ProbeFailed, Instant::now()))
            }
        };
        drop(m);
        self.announce(t);
    }

    #[cold]
    #[inline(never)]
    fn release_probe(&self, generation: u64) {
        let mut m = lock(&self.shared.machine);
        if m.generation == generation && m.state == State::HalfOpen {
            m.probes_admitted -= 1;
        }
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
        self.manual(State::ForcedOpen);
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
        let mut m = lock(&self.shared.machine);
        if !matches!(m.state, State::Closed | State::HalfOpen) {
            return false;
        }
        let t = self.enter(&mut m, State::Open, TransitionReason::Tripped, Instant::now());
        drop(m);
        self.announce(Some(t));
        true
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
        self.manual(State::Closed);
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
        self.manual(State::Disabled);
    }

    fn manual(&self, to: State) {
        let mut m = lock(&self.shared.machine);
        if m.state == to {
            if to == State::Closed {
                // Already closed: forget the counts, keep the generation (nothing changed
                // state, so in-flight permits still count).
                InARow::restart(&self.shared.consecutive_failures, m.generation);
                if let Some(w) = &self.shared.window {
                    w.clear();
                }
            }
            return;
        }
        let t = self.enter(&mut m, to, TransitionReason::Manual, Instant::now());
        drop(m);
        self.announce(Some(t).filter(|t| t.from != t.to));
    }

    /// Applies a transition under the lock: the machine, the lock-free snapshot, the
    /// counters of the new state, the gauge and the watch channel — everything whose
    /// order must match the order of transitions.
    fn enter(&self, m: &mut Machine, to: State, reason: TransitionReason, now: Instant) -> Transition {
        let shared = &*self.shared;
        let from = m.enter(to, reason, &shared.open, now);
        if to == State::Closed {
            InARow::restart(&shared.consecutive_failures, m.generation);
            if let Some(w) = &shared.window {
                w.clear();
            }
        }
        shared.snapshot.store(pack(to, m.generation), Ordering::Release);
        shared.gauge.set(to.gauge_value());
        shared.events.send_replace(to);
        Transition {
            target: shared.target.clone(),
            from,
            to,
            reason,
            generation: m.generation,
        }
    }

    /// Publishes transitions outside the lock: callback, log, counter.
    #[cold]
    #[inline(never)]
    fn announce(&self, transitions: impl IntoIterator<Item = Transition>) {
        let shared = &*self.shared;
        for t in transitions {
            tracing::warn!(
                target: "stayfast::breaker",
                breaker = %t.target, from = %t.from, to = %t.to, reason = %t.reason,
                generation = t.generation,
                "circuit breaker changed state"
            );
            counter!(
                shared.transitions_metric.clone(),
                "target" => shared.target.to_label(), "to" => t.to.as_str(), "reason" => t.reason.as_str()
            )
            .increment(1);
            if let Some(callback) = &shared.on_transition {
                callback(&t);
            }
        }
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
        if matches!(self.state(), State::Closed | State::Disabled | State::ForcedOpen) {
            return false; // no lock on the hot path
        }
        let m = lock(&self.shared.machine);
        match m.state {
            State::Open => m.open_until.is_some_and(|t| Instant::now() >= t),
            State::HalfOpen => m.probes_admitted < self.shared.probes,
            State::Closed | State::Disabled | State::ForcedOpen => false,
        }
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

/// Permission to make one call through a [`CircuitBreaker`]; record its outcome with
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
    breaker: &'a CircuitBreaker,
    generation: u64,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
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
        self.breaker.record(self.generation, self.probe, health, None);
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
        self.breaker
            .record(self.generation, self.probe, health, Some(elapsed));
    }

    /// Whether the breaker wants this call's duration ([`record_timed`](Self::record_timed)).
    pub(crate) fn tracks_slow_calls(&self) -> bool {
        self.breaker.tracks_slow_calls()
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

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.release_probe(self.generation);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("target", self.breaker.target())
            .field("generation", &self.generation)
            .field("probe", &self.probe)
            .finish()
    }
}

#[cfg(all(test, stayfast_loom))]
mod loom_tests;
