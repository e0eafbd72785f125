//! [`LagWatchdog`]: measures how late the runtime wakes a task — the symptom of
//! blocking code on an async thread.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use metrics::{Histogram, histogram};
use tokio::{
    runtime::Handle,
    task::AbortHandle,
    time::{Instant, sleep_until},
};

use crate::{
    clock,
    config::{ConfigError, positive},
    telemetry::{DEFAULT_PREFIX, RUNTIME_LAG_SECONDS, metric_name},
};

/// A task that sleeps for `interval` in a loop and records how much later than asked
/// it woke up, in `stayfast_runtime_lag_seconds`. On a healthy runtime the lag is
/// well under a millisecond; a task that blocks a worker thread (a synchronous file or
/// network call, a long computation) shows up as lag on every task that thread owes a
/// poll. Stops when dropped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::LagWatchdog;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let watchdog = LagWatchdog::start(Duration::from_millis(10)).unwrap();
/// tokio::time::sleep(Duration::from_millis(50)).await;
/// assert!(watchdog.samples() > 0);
/// println!("worst lag so far: {:?}", watchdog.max_lag());
/// # }
/// ```
pub struct LagWatchdog {
    task: AbortHandle,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    max_lag_nanos: AtomicU64,
    samples: AtomicU64,
}

impl LagWatchdog {
    /// Starts the watchdog on the current runtime, waking every `interval`.
    ///
    /// # Errors
    ///
    /// A zero `interval`, or no tokio runtime (field `runtime`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let watchdog = stayfast_core::LagWatchdog::start(Duration::from_millis(10)).unwrap();
    /// tokio::time::sleep(Duration::from_millis(1)).await; // let it take its first nap
    /// std::thread::sleep(Duration::from_millis(30)); // blocking code on the runtime thread…
    /// tokio::time::sleep(Duration::from_millis(15)).await;
    /// assert!(watchdog.max_lag() >= Duration::from_millis(10)); // …shows up as lag
    /// # }
    /// ```
    pub fn start(interval: Duration) -> Result<Self, ConfigError> {
        Self::with_prefix(interval, DEFAULT_PREFIX)
    }

    /// As [`start`](Self::start), recording `<prefix>_runtime_lag_seconds`.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let w = stayfast_core::LagWatchdog::with_prefix(std::time::Duration::from_millis(10), "myapp").unwrap();
    /// # drop(w);
    /// # }
    /// ```
    pub fn with_prefix(interval: Duration, prefix: &str) -> Result<Self, ConfigError> {
        positive("interval", interval)?;
        let runtime = Handle::try_current()
            .map_err(|_| ConfigError::new("runtime", "LagWatchdog must be started inside a tokio runtime"))?;
        let stats = Arc::new(Stats::default());
        let lag = histogram!(metric_name(prefix, RUNTIME_LAG_SECONDS));
        let task = runtime
            .spawn(watch(interval, lag, Arc::clone(&stats)))
            .abort_handle();
        Ok(Self { task, stats })
    }

    /// The worst lag seen since the start (or the last [`take_max_lag`](Self::take_max_lag)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let w = stayfast_core::LagWatchdog::start(std::time::Duration::from_millis(5)).unwrap();
    /// assert_eq!(w.max_lag(), std::time::Duration::ZERO); // nothing measured yet
    /// # }
    /// ```
    pub fn max_lag(&self) -> Duration {
        Duration::from_nanos(self.stats.max_lag_nanos.load(Ordering::Acquire))
    }

    /// The worst lag seen, resetting it to zero.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let w = stayfast_core::LagWatchdog::start(std::time::Duration::from_millis(5)).unwrap();
    /// let _ = w.take_max_lag();
    /// assert_eq!(w.max_lag(), std::time::Duration::ZERO);
    /// # }
    /// ```
    pub fn take_max_lag(&self) -> Duration {
        Duration::from_nanos(self.stats.max_lag_nanos.swap(0, Ordering::AcqRel))
    }

    /// How many wake-ups have been measured.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let w = stayfast_core::LagWatchdog::start(std::time::Duration::from_millis(5)).unwrap();
    /// assert_eq!(w.samples(), 0);
    /// # }
    /// ```
    pub fn samples(&self) -> u64 {
        self.stats.samples.load(Ordering::Acquire)
    }
}

async fn watch(interval: Duration, lag_histogram: Histogram, stats: Arc<Stats>) {
    let mut from = Instant::now();
    loop {
        // An interval past the end of time never comes due: `from + interval` would
        // overflow (and panic), so there is nothing to measure; wait until aborted.
        let Some(due) = clock::deadline_after(from, interval) else {
            return std::future::pending().await;
        };
        sleep_until(due).await;
        let now = Instant::now();
        let lag = now.saturating_duration_since(due);
        lag_histogram.record(lag.as_secs_f64());
        let nanos = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        stats.max_lag_nanos.fetch_max(nanos, Ordering::AcqRel);
        stats.samples.fetch_add(1, Ordering::AcqRel);
        from = now;
    }
}

impl Drop for LagWatchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for LagWatchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LagWatchdog")
            .field("max_lag", &self.max_lag())
            .field("samples", &self.samples())
            .finish()
    }
}
