//! `Cache`: JSON values in Redis with a TTL, keyed by a stable hash of their context.
//!
//! A [`Cache`] stores values of any `Serialize + DeserializeOwned` type as JSON, under a
//! key derived from a *context*: whatever identifies the value — a `&str`, a tuple, a
//! struct. It is an optimisation, and [`Cache::get_or_insert_with`] treats it as one: a
//! Redis that is down or slow, or an entry that no longer decodes, never fails the call;
//! the loader answers instead.
//!
//! # Keys
//!
//! `<prefix>:v<version>:<hex SHA-256 of the context's serde_json encoding>`, one key per
//! command (so it works unchanged on Redis Cluster). For example, with the default
//! [`CacheConfig`], the context `("user", 42)` is encoded as `["user",42]` and stored
//! under `cache:v1:` followed by 64 hex digits.
//!
//! - A key is **stable** — across processes, machines and releases — as long as the
//!   context type's serialization is: the same fields in the same order, the same
//!   names. Renaming a field of a context struct changes its keys (old entries are then
//!   never read again, and expire).
//! - A `HashMap` serializes in a random order that differs between processes: inside a
//!   context, use a `BTreeMap` (or a `Vec` of pairs), or equal contexts get different
//!   keys and the cache misses.
//! - The value's type is not part of the key: two value types cached under one prefix
//!   with the same context share one entry, and each may read the other's as corrupt.
//!   Give each kind of value its own prefix, or tag the context (`("user", id)`).
//! - Bump [`CacheConfig::version`] when a value's shape changes: old entries are then
//!   simply never read again.
//!
//! # Single flight
//!
//! Concurrent [`get_or_insert_with`](Cache::get_or_insert_with) calls that miss one
//! entry run one loader: the first *leads* (looks again, loads, stores), the others
//! wait on it and decode their own `T` from the value it loaded. A waiter gives up after
//! [`CacheConfig::max_wait`] and runs its own loader instead; every loader the cache
//! runs is bounded by [`CacheConfig::load_timeout`], so a hung loader holds its entry
//! that long at most. A loader error reaches every waiter as a [`CoalescedError`] and is
//! never cached. If the leading call is dropped midway, one waiter takes over with its
//! own loader; if its loader panics, every waiter gets a [`CoalescedError`] at once.
//! Flights are per `Cache` (shared by its clones), not across processes; at most
//! [`CacheConfig::max_in_flight`] at a time, see [`Cache::in_flight`].
//!
//! # Metrics
//!
//! `<prefix>_cache_requests_total{cache, result}` (prefix `stayfast` unless set with
//! [`Cache::with_metrics_prefix`]). Every call to [`get`](Cache::get) or
//! [`get_or_insert_with`](Cache::get_or_insert_with) that finishes counts exactly one
//! `result`, so `hit / (sum of all five)` is the hit ratio, and
//! `(hit + coalesced) / (sum of all five)` the share of calls that ran no loader:
//!
//! | `result` | when |
//! |---|---|
//! | `hit` | the entry was there and decoded |
//! | `miss` | no entry; for `get_or_insert_with`: this call ran the loader, and its value was stored, or was over the size cap and not stored |
//! | `coalesced` | no entry, and this call waited on another call's load instead of running its own: it got the value, or the loader's error, panic or timeout |
//! | `loader_error` | no entry, and this call ran the loader, which failed or ran past `load_timeout` (a panicking loader counts nothing) |
//! | `error` | the cache failed the call: Redis failed, the entry did not decode, the context could not be encoded, (`get_or_insert_with`) storing the loaded value failed, or too many other entries were loading to coalesce this one (`max_in_flight`) |
//!
//! `error` takes precedence: a call whose lookup failed counts `error` whatever comes
//! next. [`set`](Cache::set) and [`delete`](Cache::delete) are not counted (the Redis
//! handle's own metrics cover them). The handles are resolved in [`Cache::new`]: install
//! the metrics recorder before building caches.
//!
//! # Examples
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use stayfast::cache::{Cache, CacheConfig};
//! use stayfast::redis::{Redis, RedisConfig};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Profile {
//!     name: String,
//!     plan: String,
//! }
//!
//! async fn load_profile(id: u64) -> Result<Profile, std::io::Error> {
//!     // The slow path: a database, a remote API…
//! # Ok(Profile { name: "alice".into(), plan: "pro".into() })
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut redis_config = RedisConfig::default();
//! redis_config.url = "redis://127.0.0.1:6390".into();
//! let redis = Redis::connect(&redis_config).await?;
//! let profiles = Cache::new(redis, "profiles", &CacheConfig::default())?;
//!
//! let id = 42;
//! // The database is asked on a miss only; with Redis down, it is simply asked every time.
//! let profile = profiles.get_or_insert_with(&("profile", id), None, || load_profile(id)).await?;
//! # let _ = profile;
//! # Ok(()) }
//! ```

mod coalesced;
mod config;
mod flight;
mod load;

use std::{fmt, sync::Arc, time::Duration};

use metrics::{Counter, counter};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use stayfast_core::{
    config::ConfigError,
    redis::Redis,
    telemetry::{DEFAULT_PREFIX, metric_name},
};

use self::flight::Flights;
pub use self::{coalesced::CoalescedError, config::CacheConfig};
use crate::StoreError;

/// Suffix of the cache lookups counter: `<prefix>_cache_requests_total{cache, result}`.
///
/// ```
/// use stayfast::cache::CACHE_REQUESTS_TOTAL;
/// assert_eq!(format!("stayfast_{CACHE_REQUESTS_TOTAL}"), "stayfast_cache_requests_total");
/// ```
pub const CACHE_REQUESTS_TOTAL: &str = "cache_requests_total";

/// The longest TTL accepted: far below the point where Redis refuses an expiry
/// (milliseconds since the epoch overflowing an `i64`), far above any sensible entry.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What every stored value and error message calls a cache entry.
const VALUE: &str = "cache value";

/// JSON values in Redis with a TTL. Cheap to clone: clones share the Redis handle, the
/// metric handles and the loads in flight. See the [module docs](self) for keys, single
/// flight and metrics.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use stayfast::cache::{Cache, CacheConfig};
/// # use stayfast::redis::{Redis, RedisConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut redis_config = RedisConfig::default();
/// # redis_config.url = "redis://127.0.0.1:6390".into();
/// # let redis = Redis::connect(&redis_config).await?;
/// let cache = Cache::new(redis, "rates", &CacheConfig::default())?;
/// cache.set(&("EUR", "USD"), &1.08_f64, Some(Duration::from_secs(60))).await?;
/// let rate: Option<f64> = cache.get(&("EUR", "USD")).await?;
/// assert_eq!(rate, Some(1.08));
/// # Ok(()) }
/// ```
///
/// # Cancellation
///
/// Dropping a call's future abandons it, as with the [`Redis`] handle: a write (`set`,
/// `delete`, the store of `get_or_insert_with`) that was already sent may still be
/// applied.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    name: &'static str,
    /// `<prefix>:v<version>:`, ready for the hash.
    key_prefix: String,
    ttl: Duration,
    max_value_bytes: usize,
    max_wait: Duration,
    load_timeout: Duration,
    results: Results,
    /// The loads under way, by key (single flight).
    flights: Arc<Flights>,
}

/// The five `result` series of one cache, resolved once.
struct Results {
    hit: Counter,
    miss: Counter,
    coalesced: Counter,
    loader_error: Counter,
    error: Counter,
}

/// The one result a finished lookup counts.
#[derive(Clone, Copy)]
enum Outcome {
    Hit,
    Miss,
    Coalesced,
    LoaderError,
    Error,
}

impl Results {
    fn new(prefix: &str, cache: &'static str) -> Self {
        let name = metric_name(prefix, CACHE_REQUESTS_TOTAL);
        Self {
            hit: counter!(name.clone(), "cache" => cache, "result" => "hit"),
            miss: counter!(name.clone(), "cache" => cache, "result" => "miss"),
            coalesced: counter!(name.clone(), "cache" => cache, "result" => "coalesced"),
            loader_error: counter!(name.clone(), "cache" => cache, "result" => "loader_error"),
            error: counter!(name, "cache" => cache, "result" => "error"),
        }
    }

    fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Hit => self.hit.increment(1),
            Outcome::Miss => self.miss.increment(1),
            Outcome::Coalesced => self.coalesced.increment(1),
            Outcome::LoaderError => self.loader_error.increment(1),
            Outcome::Error => self.error.increment(1),
        }
    }
}

impl Cache {
    /// A cache over `redis`, its metric labelled `cache = name`, under the default
    /// metric prefix (`stayfast`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`, or `name` if it is
    /// empty.
    ///
    /// ```
    /// use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // closed again
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = format!("redis://127.0.0.1:{port}");
    /// # redis_config.connect_timeout = std::time::Duration::from_millis(50);
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let cache = Cache::new(redis.clone(), "profiles", &CacheConfig::default())?;
    /// assert_eq!(cache.name(), "profiles");
    ///
    /// let mut config = CacheConfig::default();
    /// config.max_value_bytes = 0;
    /// assert_eq!(Cache::new(redis, "profiles", &config).unwrap_err().field(), "max_value_bytes");
    /// # Ok(()) }
    /// ```
    pub fn new(redis: Redis, name: &'static str, config: &CacheConfig) -> Result<Self, ConfigError> {
        Self::with_metrics_prefix(redis, name, config, DEFAULT_PREFIX)
    }

    /// As [`new`](Self::new), naming its metric `<prefix>_cache_requests_total`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// ```
    /// use metrics_util::debugging::DebuggingRecorder;
    /// use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // closed again
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = format!("redis://127.0.0.1:{port}");
    /// # redis_config.connect_timeout = std::time::Duration::from_millis(50);
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let recorder = DebuggingRecorder::new();
    /// let config = CacheConfig::default();
    /// // The handles are resolved here, from the recorder installed now.
    /// let cache = metrics::with_local_recorder(&recorder, || {
    ///     Cache::with_metrics_prefix(redis, "profiles", &config, "myapp")
    /// })?;
    /// let series = recorder.snapshotter().snapshot().into_vec();
    /// assert!(series.iter().all(|(key, ..)| key.key().name() == "myapp_cache_requests_total"));
    /// assert_eq!(series.len(), 5); // result = hit, miss, coalesced, loader_error, error
    /// # drop(cache);
    /// # Ok(()) }
    /// ```
    pub fn with_metrics_prefix(
        redis: Redis,
        name: &'static str,
        config: &CacheConfig,
        prefix: &str,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                redis,
                name,
                key_prefix: format!("{}:v{}:", config.prefix, config.version),
                ttl: config.ttl,
                max_value_bytes: config.max_value_bytes,
                max_wait: config.max_wait,
                load_timeout: config.load_timeout,
                results: Results::new(prefix, name),
                flights: Arc::new(Flights::new(config.max_in_flight)),
            }),
        })
    }

    /// The `cache` label of its metric.
    ///
    /// ```
    /// # use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // closed again
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = format!("redis://127.0.0.1:{port}");
    /// # redis_config.connect_timeout = std::time::Duration::from_millis(50);
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let cache = Cache::new(redis, "profiles", &CacheConfig::default())?;
    /// assert_eq!(cache.name(), "profiles");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The Redis key of `context`: `<prefix>:v<version>:<hex SHA-256 of its JSON>`. No
    /// I/O; for inspecting entries (with `redis-cli`, say).
    ///
    /// # Errors
    ///
    /// [`StoreError::Encode`] if the context's `Serialize` fails (a map with non-string
    /// keys, say).
    ///
    /// ```
    /// use sha2::{Digest, Sha256};
    /// use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // closed again
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = format!("redis://127.0.0.1:{port}");
    /// # redis_config.connect_timeout = std::time::Duration::from_millis(50);
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let cache = Cache::new(redis, "profiles", &CacheConfig::default())?;
    /// let key = cache.key(&("user", 42))?;
    /// assert_eq!(key, format!("cache:v1:{:x}", Sha256::digest(br#"["user",42]"#)));
    /// # Ok(()) }
    /// ```
    pub fn key(&self, context: &(impl Serialize + ?Sized)) -> Result<String, StoreError> {
        let json = serde_json::to_vec(context).map_err(|source| StoreError::Encode {
            what: "cache context",
            source,
        })?;
        Ok(format!("{}{:x}", self.inner.key_prefix, Sha256::digest(&json)))
    }

    /// The value cached for `context`, if any. Counts one `hit`, `miss` or `error`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Redis`] if Redis failed (a timeout, an open circuit…);
    /// [`StoreError::Corrupt`] if the entry is not the JSON of a `T` (written by an older
    /// shape of `T`, or by something else) or not a Redis string at all;
    /// [`StoreError::Encode`] if the context cannot be encoded.
    ///
    /// # Cancellation
    ///
    /// Dropping the future abandons the read; nothing is counted.
    ///
    /// ```no_run
    /// # use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = "redis://127.0.0.1:6390".into();
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let cache = Cache::new(redis, "greetings", &CacheConfig::default())?;
    /// let greeting: Option<String> = cache.get("fr").await?; // `None`: not cached
    /// # Ok(()) }
    /// ```
    pub async fn get<T: DeserializeOwned>(
        &self,
        context: &(impl Serialize + ?Sized),
    ) -> Result<Option<T>, StoreError> {
        let found = match self.key(context) {
            Ok(key) => self.lookup(&key).await,
            Err(e) => Err(e),
        };
        self.inner.results.count(match &found {
            Ok(Some(_)) => Outcome::Hit,
            Ok(None) => Outcome::Miss,
            Err(_) => Outcome::Error,
        });
        found
    }

    /// Caches `value` for `context`, for `ttl` (`None`: [`CacheConfig::ttl`]). Redis
    /// expires in whole seconds: the TTL is rounded up, to at least 1 s.
    ///
    /// # Errors
    ///
    /// Before any I/O: [`StoreError::TooLarge`] if the value's JSON is over
    /// [`CacheConfig::max_value_bytes`], [`StoreError::InvalidInput`] for a TTL over 100
    /// years, [`StoreError::Encode`] if the value or the context cannot be encoded.
    /// Then [`StoreError::Redis`] if Redis failed.
    ///
    /// # Cancellation
    ///
    /// Dropping the future abandons the write; one already sent may still be applied.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = "redis://127.0.0.1:6390".into();
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let cache = Cache::new(redis, "greetings", &CacheConfig::default())?;
    /// cache.set("fr", "bonjour", None).await?; // the configured TTL
    /// cache.set("de", "hallo", Some(Duration::from_millis(1500))).await?; // expires after 2 s
    /// # Ok(()) }
    /// ```
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        context: &(impl Serialize + ?Sized),
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let key = self.key(context)?;
        self.store(&key, value, ttl).await
    }

    /// Removes the entry of `context`; whether there was one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Redis`] if Redis failed; [`StoreError::Encode`] if the context
    /// cannot be encoded.
    ///
    /// # Cancellation
    ///
    /// Dropping the future abandons the delete; one already sent may still be applied.
    ///
    /// ```no_run
    /// # use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = "redis://127.0.0.1:6390".into();
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let cache = Cache::new(redis, "profiles", &CacheConfig::default())?;
    /// // The profile changed: drop the stale entry, the next read loads it afresh.
    /// let was_cached = cache.delete(&("profile", 42)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, context: &(impl Serialize + ?Sized)) -> Result<bool, StoreError> {
        let key = self.key(context)?;
        Ok(self.inner.redis.del(key).await? > 0)
    }

    /// The entries being loaded right now by a
    /// [`get_or_insert_with`](Self::get_or_insert_with) call that concurrent calls for
    /// the same entry can wait on: one per entry, at most
    /// [`CacheConfig::max_in_flight`], shared by this cache's clones. 0 when no load is
    /// under way: an entry is removed when the call that runs its loader finishes, fails,
    /// panics or is dropped.
    ///
    /// ```
    /// # use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // closed again
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = format!("redis://127.0.0.1:{port}");
    /// # redis_config.connect_timeout = std::time::Duration::from_millis(50);
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let cache = Cache::new(redis, "reports", &CacheConfig::default())?;
    /// let slow = || async {
    ///     tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    ///     Ok::<_, std::io::Error>("report".to_owned())
    /// };
    /// let load = tokio::spawn({
    ///     let cache = cache.clone();
    ///     async move { cache.get_or_insert_with("weekly", None, slow).await }
    /// });
    /// while cache.in_flight() == 0 {
    ///     tokio::task::yield_now().await;
    /// }
    /// load.abort(); // the call running the loader is dropped: its flight goes with it
    /// let _ = load.await;
    /// assert_eq!(cache.in_flight(), 0);
    /// # Ok(()) }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    /// The value of `key`, if any: [`fetch`](Self::fetch) then [`decode`].
    async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.fetch(key).await? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The raw entry of `key`, if any.
    async fn fetch(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        // Raw bytes, not `String`: an entry that is not UTF-8 is `Corrupt` (when decoded),
        // not a Redis error (which the breaker would see).
        match self.inner.redis.get::<Option<Vec<u8>>>(key).await {
            Ok(bytes) => Ok(bytes),
            // NOTE: a hash or a list at our key (WRONGTYPE) is damaged data, not a failing
            // Redis: reported as `Corrupt`, so `get_or_insert_with` replaces it (SET
            // overwrites any type) instead of bypassing the entry forever.
            Err(e) if e.is_wrong_type() => Err(StoreError::Corrupt {
                what: VALUE,
                problem: "not a string (WRONGTYPE)".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn store<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        // The TTL first: refused before the value is even encoded.
        expire_seconds(ttl.unwrap_or(self.inner.ttl))?;
        self.write(key, encode(value)?, ttl).await
    }

    /// Stores `json`, already encoded, under `key`.
    async fn write(&self, key: &str, json: String, ttl: Option<Duration>) -> Result<(), StoreError> {
        let seconds = expire_seconds(ttl.unwrap_or(self.inner.ttl))?;
        let max = self.inner.max_value_bytes;
        if json.len() > max {
            return Err(StoreError::TooLarge {
                what: VALUE,
                len: json.len(),
                max,
            });
        }
        Ok(self.inner.redis.set(key, json, Some(seconds)).await?)
    }

    /// Logs why the cache was bypassed: a warning when the data or the configuration
    /// needs attention, debug when Redis failed (its own metrics and breaker report it).
    fn report(&self, what: &str, error: &StoreError) {
        let cache = self.inner.name;
        match error {
            StoreError::Redis(_) => tracing::debug!(target: "stayfast::cache", cache, %error, "{what}"),
            _ => tracing::warn!(target: "stayfast::cache", cache, %error, "{what}"),
        }
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what: VALUE, source })
}

fn decode<T: DeserializeOwned>(json: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::Corrupt {
        what: VALUE,
        // Where and what kind, not serde_json's message: it may quote the entry.
        problem: format!(
            "not the JSON of the expected type ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

/// Redis expires in whole seconds: round up, so an entry never lives shorter than asked.
fn expire_seconds(ttl: Duration) -> Result<i64, StoreError> {
    if ttl > MAX_TTL {
        return Err(StoreError::InvalidInput {
            what: "ttl",
            problem: format!("{ttl:?} is over the 100-year maximum"),
        });
    }
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Ok(i64::try_from(seconds.max(1)).unwrap_or(i64::MAX))
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Cache")
            .field("name", &inner.name)
            .field("key_prefix", &inner.key_prefix)
            .field("ttl", &inner.ttl)
            .field("max_value_bytes", &inner.max_value_bytes)
            .field("max_wait", &inner.max_wait)
            .field("load_timeout", &inner.load_timeout)
            .field("max_in_flight", &inner.flights.max())
            .field("in_flight", &inner.flights.len())
            .field("redis", &inner.redis)
            .finish()
    }
}
