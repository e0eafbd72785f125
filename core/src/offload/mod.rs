//! [`Offload`]: a blocking call on tokio's blocking pool, under a policy, within a bound
//! that keeps counting the threads abandoned calls leave behind.

mod error;

pub use error::OffloadError;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use metrics::{Counter, Gauge, counter, gauge};
use serde::{Deserialize, Serialize};
use tokio::{sync::OwnedSemaphorePermit, task::JoinHandle};

use crate::{
    Bulkhead, Classifier, Error, Name, Policy,
    background::panic_message,
    config::{BulkheadConfig, ConfigError, at_least_one, duration},
    telemetry::{DEFAULT_PREFIX, OFFLOAD_ABANDONED_TOTAL, OFFLOAD_IN_FLIGHT, metric_name},
};

/// Settings of an [`Offload`].
///
/// # Examples
///
/// ```
/// let config: stayfast_core::OffloadConfig = toml::from_str(r#"
///     max_threads = 8
///     max_wait = "20ms"
/// "#).unwrap();
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OffloadConfig {
    /// Blocking threads the closures may occupy at once, those whose caller gave up
    /// included. Keep it well below the runtime's `max_blocking_threads` (512 by
    /// default), which every `spawn_blocking` of the process shares.
    pub max_threads: u32,
    /// How long a call may wait for a thread (zero: shed at once).
    #[serde(with = "duration")]
    pub max_wait: Duration,
}

impl Default for OffloadConfig {
    fn default() -> Self {
        Self {
            max_threads: 16,
            max_wait: Duration::ZERO,
        }
    }
}

impl OffloadConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A zero `max_threads`, or one larger than a semaphore can hold.
    ///
    /// ```
    /// let config: stayfast_core::OffloadConfig = toml::from_str("max_threads = 0").unwrap();
    /// assert_eq!(config.validate().unwrap_err().to_string(),
    ///            "invalid config `max_threads`: must be at least 1");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one("max_threads", self.max_threads)?;
        if self.max_threads as usize > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "max_threads",
                "is larger than a semaphore can hold",
            ));
        }
        Ok(())
    }
}

/// Runs blocking closures — a synchronous library call: a vector-index query, a PDF
/// parser — on tokio's blocking pool, through a [`Policy`] (deadline, breaker, retry,
/// metrics as for any call), so they neither block the async runtime nor outlive the
/// caller's patience.
///
/// A blocking thread cannot be cancelled: when the policy's deadline passes the caller
/// gets [`Error::Timeout`] at once, but the closure keeps running. So the bound of
/// `max_threads` counts every closure until it *really* returns — its slot is moved
/// into the closure and freed only then. A hung library can never occupy more than
/// `max_threads` blocking threads; a call past the bound waits up to `max_wait` for a
/// thread and is then [shed](Error::Shed), never queued without bound. Each attempt is
/// admitted like a [`Bulkhead`] slot: after the policy's own bulkhead, before its
/// breaker; the attempt's timeout starts once it has a thread.
///
/// Metrics, resolved when the offload is built: `stayfast_offload_in_flight{target}`
/// (closures holding a thread, abandoned ones included until they finish) and
/// `stayfast_offload_abandoned_total{target}` (closures whose caller stopped waiting
/// before they finished); calls, outcomes and latency come from the policy.
///
/// Build the policy `idempotent(true)` for calls that may safely run twice (a query, a
/// parse): a timed-out closure may still complete, so a non-idempotent policy reports
/// the timeout as [`Error::OutcomeUnknown`]. Cheap to clone; clones share the bound.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::{Offload, OffloadConfig, Policy};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let parser = Offload::new("pdf", &OffloadConfig::default()).unwrap();
/// let parse = Policy::builder("pdf.parse").timeout(Duration::from_secs(2)).idempotent(true).build().unwrap();
///
/// let bytes = b"%PDF-1.7".to_vec();
/// let version = parser
///     .run(&parse, move || Ok::<_, std::io::Error>(String::from_utf8_lossy(&bytes[5..]).into_owned()))
///     .await
///     .unwrap();
/// assert_eq!(version, "1.7");
/// # }
/// ```
///
/// # Cancellation
///
/// Dropping the future returned by [`run`](Self::run) — or the policy's timeout firing —
/// abandons the closure: it keeps running on its blocking thread and keeps its slot of
/// the bound until it returns; its result is then discarded. It is counted once in
/// `stayfast_offload_abandoned_total` and stays in `stayfast_offload_in_flight` until it
/// returns. A closure tokio's blocking pool had not started yet (the pool was at its
/// own `max_blocking_threads`) never runs: the pool drops it, freeing its slot, as soon
/// as it gets to it.
#[derive(Clone)]
pub struct Offload {
    inner: Arc<Inner>,
}

struct Inner {
    /// The bound, as a bulkhead whose slots are handed out owned.
    threads: Bulkhead,
    max_threads: u32,
    in_flight: Gauge,
    abandoned: Counter,
}

impl Offload {
    /// An offload for `target` (the `target` label of its metrics and of
    /// [`Error::Shed`]), with metrics named `stayfast_offload_*`. No runtime is needed
    /// to build it: closures run on the blocking pool of the runtime that awaits `run`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid field.
    ///
    /// ```
    /// use stayfast_core::{Offload, OffloadConfig};
    /// let mut config = OffloadConfig::default();
    /// config.max_threads = 0;
    /// assert_eq!(Offload::new("vector.index", &config).unwrap_err().field(), "max_threads");
    /// ```
    pub fn new(target: impl Into<Name>, config: &OffloadConfig) -> Result<Self, ConfigError> {
        Self::with_prefix(target, config, DEFAULT_PREFIX)
    }

    /// As [`new`](Self::new), with metrics named `<prefix>_offload_*`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// ```
    /// # use metrics_util::debugging::DebuggingRecorder;
    /// # use stayfast_core::{Offload, OffloadConfig};
    /// # let recorder = DebuggingRecorder::new();
    /// # let _guard = metrics::set_default_local_recorder(&recorder);
    /// let _offload = Offload::with_prefix("vector.index", &OffloadConfig::default(), "myapp").unwrap();
    /// let series = recorder.snapshotter().snapshot().into_vec();
    /// assert!(series.iter().any(|(key, ..)| key.key().name() == "myapp_offload_in_flight"));
    /// ```
    pub fn with_prefix(
        target: impl Into<Name>,
        config: &OffloadConfig,
        prefix: &str,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let bound = BulkheadConfig {
            max_concurrent: config.max_threads,
            max_wait: config.max_wait,
        };
        let threads = Bulkhead::new(target, &bound)?;
        let label = threads.target().to_label();
        Ok(Self {
            inner: Arc::new(Inner {
                in_flight: gauge!(metric_name(prefix, OFFLOAD_IN_FLIGHT), "target" => label.clone()),
                abandoned: counter!(metric_name(prefix, OFFLOAD_ABANDONED_TOTAL), "target" => label),
                threads,
                max_threads: config.max_threads,
            }),
        })
    }

    /// The dependency whose closures this offload runs.
    ///
    /// ```
    /// # use stayfast_core::{Offload, OffloadConfig};
    /// let offload = Offload::new("vector.index", &OffloadConfig::default()).unwrap();
    /// assert_eq!(offload.target().as_str(), "vector.index");
    /// ```
    pub fn target(&self) -> &Name {
        self.inner.threads.target()
    }

    /// Threads held now: closures queued or running, abandoned ones included.
    ///
    /// ```
    /// # use stayfast_core::{Offload, OffloadConfig};
    /// let offload = Offload::new("vector.index", &OffloadConfig::default()).unwrap();
    /// assert_eq!(offload.in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        (self.inner.max_threads as usize).saturating_sub(self.inner.threads.available())
    }

    /// Runs `work` on the blocking pool under `policy`: each attempt takes a thread of
    /// the bound (waiting up to `max_wait`), passes the policy's breaker, and runs
    /// `work` once on the blocking pool, bounded by the policy's timeout. A retry runs
    /// `work` again, on a thread of its own — hence `Fn`. Like any future, nothing
    /// happens until it is polled.
    ///
    /// `policy` classifies `OffloadError<E>`: through [`Classify`](crate::Classify)
    /// when `E` implements it, or a closure given to
    /// [`classify`](crate::PolicyBuilder::classify).
    ///
    /// # Errors
    ///
    /// [`Error::Shed`] when every thread was taken for longer than `max_wait`;
    /// [`Error::Timeout`] (or [`Error::OutcomeUnknown`] for a non-idempotent policy)
    /// when the deadline passed first — the closure is then abandoned, see
    /// [Cancellation](Self#cancellation); [`Error::Inner`] with
    /// [`OffloadError::Failed`] when the closure returned an error or
    /// [`OffloadError::Panicked`] when it panicked; or the policy's other errors (an
    /// open circuit, an exhausted budget).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stayfast_core::{Error, Offload, OffloadConfig, OffloadError, Policy};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let offload = Offload::new("vector.index", &OffloadConfig::default()).unwrap();
    /// let query = Policy::builder("vector.query").timeout(Duration::from_millis(50)).idempotent(true).build().unwrap();
    ///
    /// let hung = offload.run(&query, || {
    ///     std::thread::sleep(Duration::from_millis(300)); // a library that hangs
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// assert!(hung.await.unwrap_err().is_timeout()); // after 50 ms…
    /// assert_eq!(offload.in_flight(), 1); // …while the closure still holds its thread
    ///
    /// // (A generous bound here: printing a panic's backtrace can take longer than 50 ms.)
    /// let parse = Policy::builder("pdf.parse").timeout(Duration::from_secs(10)).build().unwrap();
    /// let crashed = offload.run(&parse, || -> Result<(), std::io::Error> { panic!("index corrupted") });
    /// match crashed.await {
    ///     Err(Error::Inner { source: OffloadError::Panicked(message), .. }) => assert_eq!(message, "index corrupted"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # }
    /// ```
    pub fn run<C, F, T, E>(
        &self,
        policy: &Policy<C>,
        work: F,
    ) -> impl Future<Output = Result<T, Error<OffloadError<E>>>> + use<C, F, T, E>
    where
        C: Classifier<OffloadError<E>>,
        F: Fn() -> Result<T, E> + Send + Sync + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let work = Arc::new(work);
        let inner = Arc::clone(&self.inner);
        policy.call_on_threads(Some(self.inner.threads.clone()), move |_, thread| {
            let running = thread.map(|slot| Running::start(Arc::clone(&inner), slot));
            let work = Arc::clone(&work);
            let handle = tokio::task::spawn_blocking(move || {
                // NOTE: the slot lives exactly as long as the closure — returned or
                // unwinding — whether or not anyone still waits for its result.
                let _running = running;
                work()
            });
            Joined {
                handle,
                inner: Arc::clone(&inner),
                finished: false,
            }
        })
    }
}

impl fmt::Debug for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offload")
            .field("target", self.target())
            .field("max_threads", &self.inner.max_threads)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// A closure's hold on a thread of the bound, and its share of the in-flight gauge.
struct Running {
    inner: Arc<Inner>,
    _slot: OwnedSemaphorePermit,
}

impl Running {
    fn start(inner: Arc<Inner>, slot: OwnedSemaphorePermit) -> Self {
        inner.in_flight.increment(1.0);
        Self { inner, _slot: slot }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // NOTE: the gauge goes down before the slot (a later field) is freed, so a caller
        // admitted on that slot never sees it counted twice.
        self.inner.in_flight.decrement(1.0);
    }
}

/// One attempt waiting for its closure; dropped unfinished, it abandons the closure.
struct Joined<T, E> {
    handle: JoinHandle<Result<T, E>>,
    inner: Arc<Inner>,
    finished: bool,
}

impl<T, E> Future for Joined<T, E> {
    type Output = Result<T, OffloadError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let joined = ready!(Pin::new(&mut self.handle).poll(cx));
        self.finished = true;
        Poll::Ready(match joined {
            Ok(result) => result.map_err(OffloadError::Failed),
            Err(e) if e.is_panic() => Err(OffloadError::Panicked(panic_message(&*e.into_panic()).to_owned())),
            Err(_) => Err(OffloadError::RuntimeShutdown),
        })
    }
}

impl<T, E> Drop for Joined<T, E> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if !self.handle.is_finished() {
            self.inner.abandoned.increment(1);
        }
        // Stops the closure only if the blocking pool has not started it (the pool then
        // drops it unrun, freeing its slot); a running one cannot be stopped.
        self.handle.abort();
    }
}
