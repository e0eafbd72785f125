//! [`Stayfast`]: the stores assembled from [`Settings`], sharing one Redis pool, one
//! breaker per dependency and one background spawner.

use std::time::Duration;

use stayfast_core::{
    CircuitBreaker, ErrorChain, FireAndForget, LagWatchdog, ShutdownReport,
    config::ConfigError,
    redis::{Redis, RedisConfig},
};

use crate::{
    StoreError,
    cache::Cache,
    knowledge::{KnowledgeHealth, KnowledgeStore},
    settings::{Settings, SettingsError},
    telemetry::{Telemetry, TelemetryError},
    transcripts::TranscriptStore,
};

/// How often the runtime-lag watchdog wakes (`stayfast_runtime_lag_seconds`).
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(100);

/// Why [`Stayfast::from_settings`] could not start.
///
/// ```
/// let e = stayfast::StartError::Telemetry(stayfast::telemetry::TelemetryError::NoRuntime);
/// assert!(e.to_string().starts_with("metrics"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is invalid (its dotted key and source are named).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A component refused its configuration (its dotted key is named).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Prometheus exporter could not be installed.
    #[error("metrics")]
    Telemetry(#[from] TelemetryError),
    /// A store could not be opened (the transcript directory, say).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The [`blocking`](crate::blocking) API's runtime could not start its threads.
    #[error("cannot start the blocking API's runtime")]
    Runtime(#[source] std::io::Error),
}

/// The facade's entry point: everything [`Settings`] describes, built in the right
/// order — telemetry first (metric handles are resolved when policies are built), then
/// one Redis pool with one breaker, one background spawner, and the stores over them.
///
/// Redis being down at start-up is not an error: the stores start degraded and recover
/// by themselves. With `redis.enabled = false` only the file-backed
/// [`TranscriptStore`] exists.
///
/// # Examples
///
/// ```no_run
/// use stayfast::{Stayfast, settings::Settings, transcripts::Message};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = Settings::load()?; // defaults < stayfast.toml < STAYFAST_* env
/// let app = Stayfast::from_settings(&settings).await?;
/// app.transcripts().append("session-1", Message::new("user", "hello")).await?;
/// if let Some(kb) = app.knowledge() {
///     kb.store_fact("The shop opens at 9.", serde_json::json!({"source": "faq"})).await?;
/// }
/// app.shutdown(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Stayfast {
    telemetry: Option<Telemetry>,
    redis: Option<Redis>,
    background: FireAndForget,
    knowledge: Option<KnowledgeStore>,
    transcripts: TranscriptStore,
    cache: Option<Cache>,
    watchdog: LagWatchdog,
    /// `timeouts.redis.connection.health_check`: the bound of [`Stayfast::health`].
    health_check: Duration,
}

impl Stayfast {
    /// Validates `settings`, installs telemetry (or reuses the recorder an earlier
    /// `Stayfast` installed), connects to Redis in the background and opens the stores.
    ///
    /// # Errors
    ///
    /// [`StartError::Settings`] for an invalid setting, [`StartError::Telemetry`] when the
    /// `/metrics` listener is asked for while a metrics recorder other than stayfast's is
    /// installed (without the listener, stayfast's metrics go to that recorder and
    /// [`telemetry`](Self::telemetry) is `None`), or when the listener cannot bind,
    /// [`StartError::Store`] when the transcript directory cannot be created.
    ///
    /// # Cancellation
    ///
    /// Dropping the future before it completes leaves telemetry installed and may leave
    /// the transcript directory created; nothing else persists.
    ///
    /// ```
    /// use stayfast::{Stayfast, settings::Settings};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut settings = Settings::default();
    /// settings.redis.enabled = false; // file-only
    /// settings.transcripts.dir = std::env::temp_dir().join(format!("stayfast-doc-app-{}", std::process::id()));
    /// let app = Stayfast::from_settings(&settings).await?;
    /// assert!(app.knowledge().is_none() && app.redis().is_none());
    /// app.shutdown(std::time::Duration::from_secs(1)).await;
    /// # std::fs::remove_dir_all(&settings.transcripts.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn from_settings(settings: &Settings) -> Result<Self, StartError> {
        settings.validate()?;
        let telemetry = match Telemetry::install(&settings.metrics) {
            Ok(t) => Some(t),
            Err(TelemetryError::AlreadyInstalled) if Telemetry::installed().is_some() => {
                Telemetry::installed()
            }
            // The application installed a recorder of its own (an OpenTelemetry bridge,
            // say): every stayfast metric goes to it, through the `metrics` facade. Only a
            // `/metrics` listener, which needs stayfast's Prometheus recorder, is refused.
            Err(TelemetryError::AlreadyInstalled) if !settings.metrics.http_listener => {
                tracing::info!(
                    target: "stayfast::telemetry",
                    "a metrics recorder is already installed; stayfast's metrics go to it"
                );
                None
            }
            Err(e) => return Err(e.into()),
        };
        let prefix = settings.metrics.prefix.as_str();
        let watchdog = LagWatchdog::with_prefix(WATCHDOG_INTERVAL, prefix)?;
        let background = FireAndForget::with_prefix("stayfast", &settings.background, prefix)?;
        let redis = if settings.redis.enabled {
            let config: RedisConfig = settings.redis_config();
            Some(Redis::connect_named(&config, "redis.main", prefix).await?)
        } else {
            None
        };
        let files = &settings.timeouts.files;
        let mut transcripts = TranscriptStore::builder(&settings.transcripts)
            .background(background.clone())
            .timeouts(files.read, files.write)
            .breaker(&settings.breaker)
            .metrics_prefix(prefix);
        if let Some(redis) = &redis {
            transcripts = transcripts.redis(redis.clone());
        }
        let transcripts = transcripts.open().await?;
        let (knowledge, cache) = match &redis {
            Some(redis) => (
                Some(
                    KnowledgeStore::new(redis.clone(), &settings.knowledge)
                        .map_err(|e| e.prefixed("knowledge"))?,
                ),
                Some(
                    Cache::with_metrics_prefix(redis.clone(), "default", &settings.cache, prefix)
                        .map_err(|e| e.prefixed("cache"))?,
                ),
            ),
            None => (None, None),
        };
        Ok(Self {
            telemetry,
            redis,
            background,
            knowledge,
            transcripts,
            cache,
            watchdog,
            health_check: settings.timeouts.redis.connection.health_check,
        })
    }

    /// The fact store, or `None` in file-only mode.
    ///
    /// ```no_run
    /// # async fn f(app: &stayfast::Stayfast) -> Result<(), stayfast::StoreError> {
    /// if let Some(kb) = app.knowledge() {
    ///     let hits = kb.search("opening hours", 5).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn knowledge(&self) -> Option<&KnowledgeStore> {
        self.knowledge.as_ref()
    }

    /// Whether Redis answers: [`KnowledgeStore::check_health`] on the shared pool, a
    /// PING bounded by `timeouts.redis.connection.health_check` (so it takes that long at
    /// most); `None` in file-only mode. Meant for a health endpoint: unlike
    /// [`KnowledgeStore::health`], it does not trust the connections' own state, which
    /// stays "connected" until fred notices a loss.
    ///
    /// # Cancellation
    ///
    /// Dropping the future abandons the PING; it changes nothing in Redis.
    ///
    /// ```
    /// use stayfast::{Stayfast, settings::Settings};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut settings = Settings::default();
    /// settings.redis.enabled = false; // file-only: no Redis to check
    /// settings.transcripts.dir = std::env::temp_dir().join(format!("stayfast-doc-app-health-{}", std::process::id()));
    /// let app = Stayfast::from_settings(&settings).await?;
    /// assert_eq!(app.health().await, None);
    /// app.shutdown(std::time::Duration::from_secs(1)).await;
    /// # std::fs::remove_dir_all(&settings.transcripts.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> Option<KnowledgeHealth> {
        match &self.knowledge {
            Some(kb) => Some(kb.check_health(self.health_check).await),
            None => None,
        }
    }

    /// Every breaker the app's stores share, for a readiness report: `redis.main` (with
    /// Redis; the knowledge store, the cache and the transcripts' Redis window all go
    /// through it) and `fs.transcripts` (the transcript directory). Breakers of your
    /// own policies are yours to add.
    ///
    /// ```
    /// use stayfast::{Stayfast, breaker::State, settings::Settings};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut settings = Settings::default();
    /// settings.redis.enabled = false; // file-only: the transcript directory's breaker alone
    /// settings.transcripts.dir = std::env::temp_dir().join(format!("stayfast-doc-app-breakers-{}", std::process::id()));
    /// let app = Stayfast::from_settings(&settings).await?;
    /// let states: Vec<(String, State)> = app
    ///     .breakers()
    ///     .iter()
    ///     .map(|b| (b.target().to_string(), b.state()))
    ///     .collect();
    /// assert_eq!(states, [("fs.transcripts".to_owned(), State::Closed)]);
    /// app.shutdown(std::time::Duration::from_secs(1)).await;
    /// # std::fs::remove_dir_all(&settings.transcripts.dir)?;
    /// # Ok(()) }
    /// ```
    pub fn breakers(&self) -> Vec<&CircuitBreaker> {
        let redis = self.redis.as_ref().map(Redis::breaker);
        redis
            .into_iter()
            .chain(std::iter::once(self.transcripts.breaker()))
            .collect()
    }

    /// The chat-history store (always present: the files are its record).
    ///
    /// ```no_run
    /// # async fn f(app: &stayfast::Stayfast) -> Result<(), stayfast::StoreError> {
    /// let history = app.transcripts().history("session-1", 20).await?;
    /// # Ok(()) }
    /// ```
    pub fn transcripts(&self) -> &TranscriptStore {
        &self.transcripts
    }

    /// The JSON cache (`cache` label `default`), or `None` in file-only mode.
    ///
    /// ```no_run
    /// # async fn f(app: &stayfast::Stayfast) -> Result<(), stayfast::StoreError> {
    /// if let Some(cache) = app.cache() {
    ///     let v: Option<String> = cache.get("greeting").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The shared Redis handle, for commands of your own under the same breaker.
    ///
    /// ```no_run
    /// # async fn f(app: &stayfast::Stayfast) -> Result<(), stayfast::redis::RedisError> {
    /// if let Some(redis) = app.redis() {
    ///     let n: i64 = redis.del("scratch").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn redis(&self) -> Option<&Redis> {
        self.redis.as_ref()
    }

    /// The spawner of fire-and-forget work, shared by the stores; use it for your own.
    ///
    /// ```no_run
    /// # fn f(app: &stayfast::Stayfast) {
    /// let _ = app.background().spawn("audit", async { Ok::<_, std::io::Error>(()) });
    /// # }
    /// ```
    pub fn background(&self) -> &FireAndForget {
        &self.background
    }

    /// The installed telemetry (render `/metrics` from it).
    ///
    /// ```no_run
    /// # fn f(app: &stayfast::Stayfast) {
    /// let text = app.telemetry().map(|t| t.render()).unwrap_or_default();
    /// # }
    /// ```
    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }

    /// The largest scheduler lag the watchdog saw since the last call (a blocked runtime
    /// shows here and in `stayfast_runtime_lag_seconds`).
    ///
    /// ```no_run
    /// # fn f(app: &stayfast::Stayfast) {
    /// assert!(app.take_max_runtime_lag() < std::time::Duration::from_secs(1));
    /// # }
    /// ```
    pub fn take_max_runtime_lag(&self) -> Duration {
        self.watchdog.take_max_lag()
    }

    /// Stops accepting background work and waits up to `grace` for what is in flight
    /// (aborting the rest); meanwhile, within the same `grace`, fsyncs every transcript
    /// file with appends not yet durable (`fsync = every_ms` / `never`, sessions the
    /// store no longer holds in memory included); then closes the Redis pool.
    ///
    /// # Cancellation
    ///
    /// Dropping the future midway leaves background work draining and the pool open
    /// until the last handle drops.
    ///
    /// It takes `&self`, so an app shared in an `Arc` (an axum state) shuts down without
    /// being unwrapped; afterwards the stores refuse background work and Redis calls
    /// fail fast.
    ///
    /// ```
    /// # use stayfast::{Stayfast, settings::Settings};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut settings = Settings::default();
    /// # settings.redis.enabled = false;
    /// # settings.transcripts.dir = std::env::temp_dir().join(format!("stayfast-doc-app-stop-{}", std::process::id()));
    /// let app = Stayfast::from_settings(&settings).await?;
    /// let report = app.shutdown(std::time::Duration::from_secs(1)).await;
    /// assert_eq!(report.aborted, 0);
    /// # std::fs::remove_dir_all(&settings.transcripts.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        // Both within `grace`, side by side: making acknowledged appends durable must
        // not wait for the background drain, nor outlive the grace.
        let flush = async {
            match tokio::time::timeout(grace, self.transcripts.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(target: "stayfast", error = %ErrorChain(&e), "could not flush transcripts at shutdown");
                }
                Err(_) => {
                    tracing::warn!(target: "stayfast", ?grace, "transcript flush did not finish within the grace");
                }
            }
        };
        let (report, ()) = tokio::join!(self.background.shutdown(grace), flush);
        if let Some(redis) = &self.redis {
            redis.close().await;
        }
        report
    }
}
