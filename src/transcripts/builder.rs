//! [`TranscriptStoreBuilder`]: the settings, dependencies and policies of a store.

use std::{path::Path, sync::Arc, time::Duration};

use stayfast_core::{
    BackgroundConfig, CallMetrics, CircuitBreaker, Error, FireAndForget, Policy,
    config::{BreakerConfig, ConfigError},
    fs::{DurableAppend, FsError, FsyncPolicy, LogReader, Step},
    redis::Redis,
    telemetry::DEFAULT_PREFIX,
};

use super::{
    Inner, Order, TranscriptConfig, TranscriptStore,
    ordered::{RedisOrder, replay},
    session::Sessions,
    window::Window,
};
use crate::StoreError;

/// Builds a [`TranscriptStore`]; see [`TranscriptStore::builder`].
///
/// ```
/// # use std::time::Duration;
/// # use stayfast::transcripts::{TranscriptConfig, TranscriptStore};
/// let builder = TranscriptStore::builder(&TranscriptConfig::default())
///     .timeouts(Duration::from_millis(500), Duration::from_secs(1));
/// # let _ = builder;
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `open` is awaited"]
pub struct TranscriptStoreBuilder {
    config: TranscriptConfig,
    redis: Option<Redis>,
    background: Option<FireAndForget>,
    read_timeout: Duration,
    write_timeout: Duration,
    breaker: BreakerConfig,
    metrics_prefix: String,
}

impl TranscriptStoreBuilder {
    pub(super) fn new(config: &TranscriptConfig) -> Self {
        Self {
            config: config.clone(),
            redis: None,
            background: None,
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(2),
            breaker: BreakerConfig::default(),
            metrics_prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Cache each session's recent window in this Redis (without one: file-only).
    ///
    /// ```no_run
    /// # use stayfast::{redis::{Redis, RedisConfig}, transcripts::{TranscriptConfig, TranscriptStore}};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let store = TranscriptStore::builder(&TranscriptConfig::default()).redis(redis).open().await?;
    /// # Ok(()) }
    /// ```
    pub fn redis(mut self, redis: Redis) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Run Redis updates on this spawner (shared with other stores); by default the
    /// store makes its own, named `transcripts`.
    ///
    /// ```
    /// # use stayfast::{BackgroundConfig, FireAndForget, transcripts::{TranscriptConfig, TranscriptStore}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spawner = FireAndForget::new("app", &BackgroundConfig::default()).unwrap();
    /// let builder = TranscriptStore::builder(&TranscriptConfig::default()).background(spawner);
    /// # let _ = builder;
    /// # }
    /// ```
    pub fn background(mut self, spawner: FireAndForget) -> Self {
        self.background = Some(spawner);
        self
    }

    /// Bounds on reading a transcript file and on appending to one (defaults 1 s, 2 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast::transcripts::{TranscriptConfig, TranscriptStore};
    /// let b = TranscriptStore::builder(&TranscriptConfig::default())
    ///     .timeouts(Duration::from_secs(1), Duration::from_secs(2));
    /// # let _ = b;
    /// ```
    pub fn timeouts(mut self, read: Duration, write: Duration) -> Self {
        self.read_timeout = read;
        self.write_timeout = write;
        self
    }

    /// The breaker for the transcript directory (`target` = `fs.transcripts`): a disk
    /// that keeps failing or hanging makes file calls fail fast.
    ///
    /// ```
    /// # use stayfast::{config::BreakerConfig, transcripts::{TranscriptConfig, TranscriptStore}};
    /// let b = TranscriptStore::builder(&TranscriptConfig::default()).breaker(&BreakerConfig::default());
    /// # let _ = b;
    /// ```
    pub fn breaker(mut self, config: &BreakerConfig) -> Self {
        self.breaker = config.clone();
        self
    }

    /// Prefix of the store's metric names (default `stayfast`).
    ///
    /// ```
    /// # use stayfast::transcripts::{TranscriptConfig, TranscriptStore};
    /// let b = TranscriptStore::builder(&TranscriptConfig::default()).metrics_prefix("myapp");
    /// # let _ = b;
    /// ```
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metrics_prefix = prefix.into();
        self
    }

    /// Validates the settings, creates the directory (0700) if needed, and builds the
    /// store.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for invalid settings; [`StoreError::File`] when the
    /// directory cannot be created or is not a directory.
    ///
    /// # Cancellation
    ///
    /// Dropping the future may leave the directory created; nothing else happens.
    ///
    /// ```
    /// # use stayfast::{StoreError, transcripts::{TranscriptConfig, TranscriptStore}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut config = TranscriptConfig::default();
    /// config.cache_messages = 0;
    /// let err = TranscriptStore::builder(&config).open().await.unwrap_err();
    /// assert!(matches!(err, StoreError::Config(e) if e.field() == "transcripts.cache_messages"));
    /// # }
    /// ```
    pub async fn open(self) -> Result<TranscriptStore, StoreError> {
        let config = self.config;
        config.validate().map_err(|e| e.prefixed("transcripts"))?;
        let breaker = CircuitBreaker::builder("fs.transcripts")
            .config(&self.breaker)
            .metrics_prefix(&self.metrics_prefix)
            .build()?;
        let policy = |name: &'static str, timeout: Duration, idempotent: bool| {
            Policy::builder(name)
                .target("fs.transcripts")
                .timeout(timeout)
                .idempotent(idempotent)
                .breaker(breaker.clone())
                .metrics_prefix(&self.metrics_prefix)
                .build()
        };
        let appender =
            DurableAppend::new(policy("transcripts.append", self.write_timeout, false)?).fsync(config.fsync);
        let reader = LogReader::new(policy("transcripts.read", self.read_timeout, true)?)
            .max_record(max_record(config.max_message_bytes));
        let background = match self.background {
            Some(b) => b,
            None => {
                FireAndForget::with_prefix("transcripts", &BackgroundConfig::default(), &self.metrics_prefix)?
            }
        };
        let dir = config.directory().map_err(|e| e.prefixed("transcripts"))?;
        create_private_dir(&dir).await?;
        let ordered = match (config.order, &self.redis) {
            (Order::File, _) => None,
            (Order::Redis, None) => {
                return Err(StoreError::Config(ConfigError::new(
                    "transcripts.order",
                    "\"redis\" needs a Redis (TranscriptStoreBuilder::redis)",
                )));
            }
            (Order::Redis, Some(redis)) => {
                let confirmer = DurableAppend::new(policy("transcripts.confirm", self.write_timeout, false)?)
                    .fsync(FsyncPolicy::Never);
                Some(Arc::new(RedisOrder::new(
                    redis.clone(),
                    config.key_prefix.clone(),
                    (config.wait_replicas, config.wait_timeout),
                    confirmer,
                    &self.metrics_prefix,
                )))
            }
        };
        // With Redis order, Redis holds the whole history: no window to cache.
        let redis = self.redis.filter(|_| ordered.is_none());
        let window = redis.map(|redis| Window {
            // `history` is a call of its own: Redis, or the file when Redis fails (a
            // fallback, counted against the Redis target).
            history_metrics: CallMetrics::with_prefix(
                &self.metrics_prefix,
                &"transcripts.history".into(),
                redis.breaker().target(),
            ),
            redis,
            len: config.cache_messages,
            ttl: config.cache_ttl,
            prefix: config.key_prefix.clone(),
        });
        let store = TranscriptStore {
            inner: Arc::new(Inner {
                dir,
                write_timeout: self.write_timeout,
                max_message_bytes: config.max_message_bytes,
                fsync: config.fsync,
                window,
                background,
                appender,
                reader,
                sessions: Sessions::new(config.max_open_sessions),
                ordered,
                breaker,
            }),
        };
        if let Some(order) = &store.inner.ordered {
            // Before any append: a session's old pending records go before its new ones.
            store.inner.load_pending().await?;
            tokio::spawn(replay(Arc::downgrade(&store.inner), Arc::clone(&order.wake)));
        }
        Ok(store)
    }
}

/// The longest line the reader accepts: a record is at most the content JSON-escaped (6
/// bytes per char at worst) plus the other fields. Never below [`MIN_READ_RECORD`], so
/// records written before `max_message_bytes` was lowered are still served: the cap only
/// bounds the memory a garbage line can take.
fn max_record(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(6)
        .saturating_add(4096)
        .max(MIN_READ_RECORD)
}

/// 16 MiB: the reader's cap whatever `max_message_bytes` says (see [`max_record`]).
const MIN_READ_RECORD: usize = 16 << 20;

/// Creates `dir` and any missing parents with mode 0700 (whatever the umask).
async fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let owned = dir.to_path_buf();
    let created = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&owned)?;
        if std::fs::metadata(&owned)?.is_dir() {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            ))
        }
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    created.map_err(|e| {
        StoreError::File(Error::Inner {
            operation: "transcripts.open".into(),
            source: FsError::new(dir, Step::CreateDir, e),
            attempts: 1,
        })
    })
}
