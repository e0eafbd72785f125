//! `CoalescedError`: what a call that waited on another call's load gets when that load
//! did not give it a value.

use std::{error::Error, fmt, io, sync::Arc, time::Duration};

/// The error of a [`get_or_insert_with`](super::Cache::get_or_insert_with) call that
/// waited on a concurrent call's load of the same entry (single flight), when that load
/// failed or panicked; and of any call whose load did not finish within
/// [`load_timeout`](super::CacheConfig::load_timeout).
///
/// The loader's error itself goes, unchanged, to the call that ran it; the calls that
/// waited get its message in this error, converted into their own error type through
/// `From<CoalescedError>`. That impl exists for `std::io::Error`, `String`,
/// [`StoreError`](crate::StoreError), `Box<dyn Error (+ Send + Sync)>` (and so for
/// `anyhow::Error`); an error type of your own gets one with a `#[from]` variant.
///
/// # Examples
///
/// Two calls for one entry, at once, with Redis unreachable (so both load): one runs its
/// loader, which fails; the other waits on it and gets its error.
///
/// ```
/// use stayfast::cache::{Cache, CacheConfig, CoalescedError};
/// # use stayfast::redis::{Redis, RedisConfig};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // closed again
/// # let mut redis_config = RedisConfig::default();
/// # redis_config.url = format!("redis://127.0.0.1:{port}");
/// # redis_config.connect_timeout = std::time::Duration::from_millis(50);
/// # let redis = Redis::connect(&redis_config).await?;
/// let cache = Cache::new(redis, "quotes", &CacheConfig::default())?;
/// let loads = std::sync::atomic::AtomicUsize::new(0);
/// let load = || async {
///     loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
///     tokio::time::sleep(std::time::Duration::from_millis(100)).await;
///     Err::<String, _>(std::io::Error::other("quote API down"))
/// };
/// let (a, b) = tokio::join!(
///     cache.get_or_insert_with("EURUSD", None, load),
///     cache.get_or_insert_with("EURUSD", None, load),
/// );
/// assert_eq!(loads.into_inner(), 1, "one loader ran");
/// let (ran, waited) = if a.as_ref().unwrap_err().get_ref().unwrap().is::<CoalescedError>() {
///     (b.unwrap_err(), a.unwrap_err())
/// } else {
///     (a.unwrap_err(), b.unwrap_err())
/// };
/// assert_eq!(ran.to_string(), "quote API down");
/// let waited = waited.get_ref().unwrap().downcast_ref::<CoalescedError>().unwrap();
/// assert!(waited.is_loader_error());
/// assert_eq!(waited.message(), Some("quote API down"));
/// assert_eq!(
///     waited.to_string(),
///     "cache `quotes`: the concurrent load this call waited on failed: quote API down"
/// );
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CoalescedError {
    cache: &'static str,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Failed(Arc<str>),
    Panicked(Arc<str>),
    /// The loader ran past `load_timeout` and was dropped.
    LoadTimedOut(Duration),
}

impl CoalescedError {
    pub(super) fn failed(cache: &'static str, message: Arc<str>) -> Self {
        Self {
            cache,
            kind: Kind::Failed(message),
        }
    }

    pub(super) fn panicked(cache: &'static str, message: Arc<str>) -> Self {
        Self {
            cache,
            kind: Kind::Panicked(message),
        }
    }

    pub(super) fn load_timed_out(cache: &'static str, after: Duration) -> Self {
        Self {
            cache,
            kind: Kind::LoadTimedOut(after),
        }
    }

    /// The `cache` label of the cache the call went through.
    ///
    /// See the [type's example](CoalescedError#examples).
    pub fn cache(&self) -> &'static str {
        self.cache
    }

    /// Whether the load waited on returned an error (its message is
    /// [`message`](Self::message)).
    ///
    /// See the [type's example](CoalescedError#examples).
    pub fn is_loader_error(&self) -> bool {
        matches!(self.kind, Kind::Failed(_))
    }

    /// Whether the load waited on panicked (the panic went on in the call that ran it).
    ///
    /// See the [type's example](CoalescedError#examples).
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, Kind::Panicked(_))
    }

    /// Whether a load ran past [`load_timeout`](super::CacheConfig::load_timeout) and
    /// was dropped: the load this call ran, or the one it waited on.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // closed again
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = format!("redis://127.0.0.1:{port}");
    /// # redis_config.connect_timeout = Duration::from_millis(50);
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let mut config = CacheConfig::default();
    /// config.load_timeout = Duration::from_secs(5);
    /// let cache = Cache::new(redis, "reports", &config)?;
    /// let hung = || std::future::pending::<Result<String, std::io::Error>>();
    /// let e = cache.get_or_insert_with("weekly", None, hung).await.unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    /// let e = e.get_ref().unwrap().downcast_ref::<stayfast::cache::CoalescedError>().unwrap();
    /// assert!(e.is_timeout());
    /// assert_eq!(e.to_string(), "cache `reports`: the load did not finish within 5s (load_timeout)");
    /// # Ok(()) }
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::LoadTimedOut(_))
    }

    /// The `Display` of the loader's error, or the panic's message.
    ///
    /// See the [type's example](CoalescedError#examples).
    pub fn message(&self) -> Option<&str> {
        match &self.kind {
            Kind::Failed(message) | Kind::Panicked(message) => Some(message),
            Kind::LoadTimedOut(_) => None,
        }
    }
}

impl fmt::Display for CoalescedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = self.cache;
        match &self.kind {
            Kind::Failed(message) => {
                write!(
                    f,
                    "cache `{cache}`: the concurrent load this call waited on failed: {message}"
                )
            }
            Kind::Panicked(message) => {
                write!(
                    f,
                    "cache `{cache}`: the concurrent load this call waited on panicked: {message}"
                )
            }
            Kind::LoadTimedOut(after) => write!(
                f,
                "cache `{cache}`: the load did not finish within {after:?} (load_timeout)"
            ),
        }
    }
}

impl Error for CoalescedError {}

/// `ErrorKind::TimedOut` for a load that timed out, `ErrorKind::Other` otherwise; the
/// `CoalescedError` is the source (`get_ref`, `downcast`).
impl From<CoalescedError> for io::Error {
    fn from(e: CoalescedError) -> Self {
        let kind = if e.is_timeout() {
            io::ErrorKind::TimedOut
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(kind, e)
    }
}

/// Its `Display`.
impl From<CoalescedError> for String {
    fn from(e: CoalescedError) -> Self {
        e.to_string()
    }
}
