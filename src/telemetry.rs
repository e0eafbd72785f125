//! Telemetry: the Prometheus recorder every stayfast metric goes to.
//!
//! [`Telemetry::install`] must run *before* any policy, breaker or spawner is built:
//! their metric handles are resolved when they are built, from the recorder installed at
//! that moment (without one, they record nothing).

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    cache::CACHE_REQUESTS_TOTAL,
    transcripts::{
        TRANSCRIPTS_PENDING_RECORDS, TRANSCRIPTS_REPLAY_FAILURES_TOTAL, TRANSCRIPTS_REPLAYED_TOTAL,
    },
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use stayfast_core::{
    config::{ConfigError, duration},
    telemetry::{DEFAULT_PREFIX, HISTOGRAM_BUCKETS, describe_metrics, metric_name},
};

#[doc(inline)]
pub use stayfast_core::telemetry::flush;

/// Settings of the Prometheus exporter.
///
/// # Examples
///
/// ```
/// let config: stayfast::telemetry::TelemetryConfig = toml::from_str(r#"
///     http_listener = true
///     listen = "127.0.0.1:9187"
/// "#).unwrap();
/// assert!(config.http_listener);
/// assert!(config.listen.ip().is_loopback());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TelemetryConfig {
    /// Serve `/metrics` over HTTP at `listen` (off: serve [`Telemetry::render`] yourself).
    /// The listener renders without a [`flush`]: the Redis commands' call records reach
    /// it within a second of the call.
    pub http_listener: bool,
    /// Where the listener binds: loopback by default. Binding another address exposes
    /// the metrics to whoever can reach it.
    pub listen: SocketAddr,
    /// Prefix of every metric name.
    pub prefix: String,
    /// How often histogram samples are folded in, bounding their memory between scrapes.
    #[serde(with = "duration")]
    pub upkeep_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            http_listener: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            prefix: DEFAULT_PREFIX.to_owned(),
            upkeep_interval: Duration::from_secs(5),
        }
    }
}

/// Why telemetry could not be installed.
///
/// ```
/// let e = stayfast::telemetry::TelemetryError::NoRuntime;
/// assert!(e.to_string().contains("tokio runtime"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A global metrics recorder is already installed (by this or another library).
    #[error("a global metrics recorder is already installed")]
    AlreadyInstalled,
    /// Telemetry runs its upkeep (and listener) on tokio: install it inside a runtime.
    #[error("telemetry must be installed inside a tokio runtime")]
    NoRuntime,
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The exporter could not be built (the listener's address is taken, say).
    #[error("the Prometheus exporter could not be built: {0}")]
    Exporter(String),
}

impl From<BuildError> for TelemetryError {
    fn from(e: BuildError) -> Self {
        TelemetryError::Exporter(e.to_string())
    }
}

/// Set once stayfast's recorder is installed: a second install is refused before it
/// binds a listener or spawns a task. (A recorder installed by another library is caught
/// when ours is set.)
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The recorder stayfast installed, for [`Telemetry::installed`].
static GLOBAL: OnceLock<Telemetry> = OnceLock::new();

/// Held for a whole install: from the `INSTALLED` check to `GLOBAL` being set. Without
/// it, a concurrent install (two `Stayfast`s starting at once) could fail to set the
/// global recorder while the winner had not yet published `GLOBAL`, and so fail instead
/// of reusing it — and it would leave its own HTTP listener running.
static INSTALLING: Mutex<()> = Mutex::new(());

/// The installed Prometheus recorder: the buckets of `HISTOGRAM_BUCKETS`, every stayfast metric
/// described, upkeep running, and optionally an HTTP listener on loopback.
///
/// # Examples
///
/// ```standalone_crate
/// use stayfast::telemetry::{Telemetry, TelemetryConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = Telemetry::install(&TelemetryConfig::default()).unwrap();
/// // … build policies, stores … then serve this from your own /metrics route:
/// let text = telemetry.render();
/// assert!(text.is_empty() || text.contains("# TYPE"));
/// # }
/// ```
#[derive(Clone)]
pub struct Telemetry {
    handle: PrometheusHandle,
    listening: Option<SocketAddr>,
}

impl Telemetry {
    /// Installs the recorder as the process's global metrics recorder. Call it once,
    /// inside a tokio runtime, before building anything that records metrics. The upkeep
    /// task (and listener) run on that runtime for as long as it lives.
    ///
    /// # Errors
    ///
    /// [`TelemetryError::AlreadyInstalled`] on a second call (never a panic),
    /// [`TelemetryError::NoRuntime`] outside tokio, an invalid setting, or an exporter
    /// that cannot start.
    ///
    /// ```standalone_crate
    /// use stayfast::telemetry::{Telemetry, TelemetryConfig, TelemetryError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let telemetry = Telemetry::install(&TelemetryConfig::default()).unwrap(); // first, in main
    /// let again = Telemetry::install(&TelemetryConfig::default());
    /// assert!(matches!(again, Err(TelemetryError::AlreadyInstalled))); // never a panic
    /// # }
    /// ```
    pub fn install(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        if config.upkeep_interval.is_zero() {
            return Err(ConfigError::new("upkeep_interval", "must be greater than zero").into());
        }
        if config.prefix.is_empty()
            || !config
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(
                ConfigError::new("prefix", "must be non-empty letters, digits and underscores").into(),
            );
        }
        // It guards no data of its own: a poisoned lock is as good as a clean one.
        let _installing = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
        if INSTALLED.load(Ordering::Acquire) {
            return Err(TelemetryError::AlreadyInstalled);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &HISTOGRAM_BUCKETS)?
            .upkeep_timeout(config.upkeep_interval);
        let (recorder, listening) = if config.http_listener {
            let _entered = runtime.enter();
            let (recorder, exporter) = builder.with_http_listener(config.listen).build()?;
            runtime.spawn(exporter);
            (recorder, Some(config.listen))
        } else {
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let interval = config.upkeep_interval;
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    handle.run_upkeep();
                }
            });
            (recorder, None)
        };
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| TelemetryError::AlreadyInstalled)?;
        INSTALLED.store(true, Ordering::Release);
        describe_metrics(&config.prefix);
        describe_store_metrics(&config.prefix);
        let telemetry = Self { handle, listening };
        let _ = GLOBAL.set(telemetry.clone());
        Ok(telemetry)
    }

    /// The recorder [`install`](Self::install) put in place, if it did: lets a second
    /// part of the program (or a second [`Stayfast`](crate::Stayfast)) render the same
    /// metrics instead of failing with [`TelemetryError::AlreadyInstalled`].
    ///
    /// ```standalone_crate
    /// use stayfast::telemetry::{Telemetry, TelemetryConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert!(Telemetry::installed().is_none());
    /// let telemetry = Telemetry::install(&TelemetryConfig::default()).unwrap();
    /// assert_eq!(Telemetry::installed().unwrap().listening(), telemetry.listening());
    /// # }
    /// ```
    pub fn installed() -> Option<Telemetry> {
        GLOBAL.get().cloned()
    }

    /// The current metrics in Prometheus's text exposition format, for a service that
    /// serves `/metrics` from its own HTTP routes.
    ///
    /// ```standalone_crate
    /// use stayfast::{Policy, telemetry::{Telemetry, TelemetryConfig}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let telemetry = Telemetry::install(&TelemetryConfig::default()).unwrap();
    /// let query = Policy::builder("db.query").build().unwrap(); // after the install
    /// query.call(|| async { Ok::<_, std::io::Error>(()) }).await.unwrap();
    /// let body = telemetry.render(); // the body of your GET /metrics
    /// assert!(body.contains(r#"stayfast_calls_total{operation="db.query""#));
    /// # }
    /// ```
    pub fn render(&self) -> String {
        // Batched call records (the Redis handle's) first, so the page is current.
        stayfast_core::telemetry::flush();
        self.handle.render()
    }

    /// Where the HTTP listener serves, if there is one.
    ///
    /// ```standalone_crate
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let telemetry = stayfast::telemetry::Telemetry::install(&Default::default()).unwrap();
    /// assert_eq!(telemetry.listening(), None); // the listener is off by default
    /// # }
    /// ```
    pub fn listening(&self) -> Option<SocketAddr> {
        self.listening
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

/// Describes the metrics the facade's stores record (the core describes its own).
fn describe_store_metrics(prefix: &str) {
    metrics::describe_counter!(
        metric_name(prefix, CACHE_REQUESTS_TOTAL),
        metrics::Unit::Count,
        "Cache lookups by result: hit, miss, error (a Redis failure or an undecodable entry)."
    );
    metrics::describe_gauge!(
        metric_name(prefix, TRANSCRIPTS_PENDING_RECORDS),
        metrics::Unit::Count,
        "Transcript records journaled while Redis was unreachable (order = \"redis\"), awaiting their replay."
    );
    metrics::describe_counter!(
        metric_name(prefix, TRANSCRIPTS_REPLAYED_TOTAL),
        metrics::Unit::Count,
        "Pending transcript records the replay gave a seq in Redis."
    );
    metrics::describe_counter!(
        metric_name(prefix, TRANSCRIPTS_REPLAY_FAILURES_TOTAL),
        metrics::Unit::Count,
        "Replay calls that failed (Redis still unreachable); each is retried."
    );
}
