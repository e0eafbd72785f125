//! [`BreakerBuilder`]: from a configuration (and a callback, a metric prefix) to a
//! [`CircuitBreaker`].

use std::{fmt, sync::Arc};

use metrics::gauge;
use tokio::{sync::watch, time::Instant};

use super::{
    CircuitBreaker,
    in_a_row::InARow,
    machine::{Machine, OpenPolicy},
    shared::{Callback, Shared},
    state::{State, Transition, pack},
    window::CountWindow,
};
use crate::{
    Name,
    config::{BreakerConfig, ConfigError},
    sync::{AtomicU64, Mutex},
    telemetry::{CIRCUIT_STATE, CIRCUIT_TRANSITIONS_TOTAL, DEFAULT_PREFIX, metric_name},
};

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
