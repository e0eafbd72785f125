//! [`Metered`]: a future's duration and outcome, recorded through cached handles.

mod batch;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, Weak},
    task::{Context, Poll},
    time::Duration,
};

use metrics::{Counter, Histogram, counter, histogram};
use pin_project::{pin_project, pinned_drop};
use tokio::time::Instant;

use self::batch::{Batch, Pending};
use crate::{
    FallbackReason, Name, Outcome, ToOutcome,
    telemetry::{
        ATTEMPTS_TOTAL, CALL_DURATION_SECONDS, CALLS_TOTAL, DEFAULT_PREFIX, FALLBACKS_TOTAL, RETRIES_TOTAL,
        metric_name,
    },
};

/// The metric handles of one operation on one target, resolved once.
///
/// Creating it registers every series of the operation with the recorder installed at
/// that moment (see [`telemetry`](crate::telemetry)); recording through it afterwards
/// touches no registry and allocates nothing. Cheap to clone.
///
/// # Examples
///
/// ```
/// use stayfast_core::CallMetrics;
///
/// let metrics = CallMetrics::new("redis.get", "redis.main");
/// let unmetered = CallMetrics::disabled();
/// # let _ = (metrics, unmetered);
/// ```
#[derive(Clone)]
pub struct CallMetrics(Arc<Handles>);

struct Handles {
    duration: Histogram,
    calls: [Counter; Outcome::ALL.len()],
    attempts: Counter,
    retries: Counter,
    fallbacks: [Counter; FallbackReason::ALL.len()],
    /// Where finished calls and attempts wait before they are written (`None`: written
    /// at once). Retries and fallbacks, rare by nature, are always written at once.
    batch: Option<Batch>,
}

/// Every batched [`CallMetrics`] alive, for [`flush`].
static BATCHED: Mutex<Vec<Weak<Handles>>> = Mutex::new(Vec::new());

/// Writes every record still waiting in a batch to the recorder.
///
/// Operations with batched metrics (the Redis handle's) write their records within
/// 100 ms while calls flow, and every second once they stop. Call this before reading
/// the recorder right after a few calls: a test's snapshot, or a render of your own.
///
/// ```
/// stayfast_core::telemetry::flush(); // every batched record is now in the recorder
/// ```
pub fn flush() {
    let mut batched = BATCHED.lock().unwrap_or_else(PoisonError::into_inner);
    batched.retain(|handles| match handles.upgrade() {
        Some(handles) => {
            handles.flush();
            true
        }
        None => false,
    });
}

impl Handles {
    fn write(&self, pending: Pending) {
        for duration in pending.durations {
            self.duration.record(duration);
        }
        for (counter, n) in self.calls.iter().zip(pending.calls) {
            if n > 0 {
                counter.increment(n);
            }
        }
        if pending.attempts > 0 {
            self.attempts.increment(pending.attempts);
        }
    }

    fn flush(&self) {
        if let Some(batch) = &self.batch {
            for pending in batch.drain() {
                self.write(pending);
            }
        }
    }
}

impl Drop for Handles {
    fn drop(&mut self) {
        self.flush();
    }
}

impl CallMetrics {
    /// Handles for `operation` on `target`, named with the default prefix `stayfast`.
    ///
    /// ```
    /// # use metrics_util::debugging::DebuggingRecorder;
    /// # use stayfast_core::CallMetrics;
    /// let recorder = DebuggingRecorder::new();
    /// let _guard = metrics::set_default_local_recorder(&recorder);
    /// let _metrics = CallMetrics::new("redis.get", "redis.main"); // registers every series now
    /// let series = recorder.snapshotter().snapshot().into_vec();
    /// assert!(series.iter().any(|(key, ..)| key.key().name() == "stayfast_calls_total"));
    /// ```
    pub fn new(operation: impl Into<Name>, target: impl Into<Name>) -> Self {
        Self::with_prefix(DEFAULT_PREFIX, &operation.into(), &target.into())
    }

    /// Handles for `operation` on `target`, named `<prefix>_calls_total` and so on.
    ///
    /// ```
    /// use stayfast_core::{CallMetrics, Name};
    /// let m = CallMetrics::with_prefix("myapp", &Name::from("fs.read"), &Name::from("fs.transcripts"));
    /// # let _ = m;
    /// ```
    pub fn with_prefix(prefix: &str, operation: &Name, target: &Name) -> Self {
        Self::build(prefix, operation, target, None)
    }

    /// Handles whose finished calls and attempts wait in per-thread batches before
    /// reaching the recorder (see [`flush`]): for operations hot enough that two cores
    /// recording the same series at once cost more than the call.
    pub(crate) fn batched(prefix: &str, operation: &Name, target: &Name) -> Self {
        let metrics = Self::build(prefix, operation, target, Some(Batch::default()));
        BATCHED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&metrics.0));
        metrics
    }

    fn build(prefix: &str, operation: &Name, target: &Name, batch: Option<Batch>) -> Self {
        let op = operation.to_label();
        let tg = target.to_label();
        let name = |suffix| metric_name(prefix, suffix);
        let labels = [("operation", op.clone()), ("target", tg.clone())];
        Self(Arc::new(Handles {
            duration: histogram!(name(CALL_DURATION_SECONDS), &labels),
            calls: Outcome::ALL.map(|o| {
                counter!(name(CALLS_TOTAL), "operation" => op.clone(), "target" => tg.clone(), "outcome" => o.as_str())
            }),
            attempts: counter!(name(ATTEMPTS_TOTAL), &labels),
            retries: counter!(name(RETRIES_TOTAL), &labels),
            fallbacks: FallbackReason::ALL.map(|r| {
                counter!(name(FALLBACKS_TOTAL), "operation" => op.clone(), "target" => tg.clone(), "reason" => r.as_str())
            }),
            batch,
        }))
    }

    /// Handles that record nothing.
    ///
    /// ```
    /// # use metrics_util::debugging::DebuggingRecorder;
    /// # use stayfast_core::{CallMetrics, Metered};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let recorder = DebuggingRecorder::new();
    /// let _guard = metrics::set_default_local_recorder(&recorder);
    /// let done = Metered::new(async { Ok::<_, std::io::Error>(1) }, CallMetrics::disabled()).await;
    /// assert_eq!(done.unwrap(), 1);
    /// assert!(recorder.snapshotter().snapshot().into_vec().is_empty()); // nothing recorded
    /// # }
    /// ```
    pub fn disabled() -> Self {
        Self(Arc::new(Handles {
            duration: Histogram::noop(),
            calls: Outcome::ALL.map(|_| Counter::noop()),
            attempts: Counter::noop(),
            retries: Counter::noop(),
            fallbacks: FallbackReason::ALL.map(|_| Counter::noop()),
            batch: None,
        }))
    }

    /// Records one finished logical call: its duration and outcome. For calls your own
    /// code composes (a read that falls back to another source by itself); calls through
    /// a [`Policy`](crate::Policy) or [`Metered`] are recorded for you.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use stayfast_core::{CallMetrics, Outcome};
    /// let metrics = CallMetrics::new("history.read", "redis.main");
    /// metrics.record(Outcome::Fallback, Duration::from_millis(3)); // served by the fallback path
    /// ```
    #[inline]
    pub fn record(&self, outcome: Outcome, elapsed: Duration) {
        self.0.duration.record(elapsed.as_secs_f64());
        self.0.calls[outcome.index()].increment(1);
    }

    /// Whether finished calls and attempts wait in a batch.
    #[inline]
    fn is_batched(&self) -> bool {
        self.0.batch.is_some()
    }

    /// Records a call a policy finished at `now`, with the `attempts` it made that are
    /// not counted yet (a batched call counts its attempts when it ends).
    #[inline]
    fn finish(&self, outcome: Outcome, elapsed: Duration, attempts: u64, now: Instant) {
        match &self.0.batch {
            Some(batch) => {
                if let Some(due) = batch.call(outcome, elapsed, attempts, now) {
                    self.0.write(due);
                }
            }
            None => self.record(outcome, elapsed),
        }
    }

    #[inline]
    pub(crate) fn retry(&self) {
        self.0.retries.increment(1);
    }

    /// Counts one fallback (`fallbacks_total{reason}`) your own code performed, with the
    /// reason the primary path failed ([`FallbackReason::of`] maps an error).
    ///
    /// ```
    /// use stayfast_core::{CallMetrics, FallbackReason};
    /// let metrics = CallMetrics::new("history.read", "redis.main");
    /// metrics.fallback(FallbackReason::Timeout); // Redis timed out: the file answered
    /// ```
    pub fn fallback(&self, reason: FallbackReason) {
        self.0.fallbacks[reason.index()].increment(1);
    }
}

impl fmt::Debug for CallMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallMetrics").finish_non_exhaustive()
    }
}

/// A call in progress, without its metrics: when it began, and the attempts it made
/// that are not counted yet. For a future that owns its metrics (through its policy)
/// and so cannot hold an [`InFlight`] borrowing them; it records nothing by itself
/// when dropped: its owner records `cancelled` with [`finish`](Self::finish).
pub(crate) struct Meter {
    started: Instant,
    /// Attempts not yet counted: a batched call counts them as it ends, so an attempt
    /// takes no lock of its own.
    attempts: u64,
}

impl Meter {
    #[inline]
    pub(crate) fn start(started: Instant) -> Self {
        Self { started, attempts: 0 }
    }

    /// When the call began.
    #[inline]
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Counts an attempt starting.
    #[inline]
    pub(crate) fn attempt(&mut self, metrics: &CallMetrics) {
        if metrics.is_batched() {
            self.attempts += 1;
        } else {
            metrics.0.attempts.increment(1);
        }
    }

    /// Records the call with one clock read, which gives both its duration and the
    /// instant a batch ages its records by.
    #[inline]
    pub(crate) fn finish(&self, metrics: &CallMetrics, outcome: Outcome) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.started);
        metrics.finish(outcome, elapsed, self.attempts, now);
    }

    /// The call, from here on recorded by an [`InFlight`] on `metrics`.
    #[inline]
    pub(crate) fn in_flight(self, metrics: &CallMetrics) -> InFlight<'_> {
        InFlight {
            metrics,
            meter: self,
            finished: false,
        }
    }
}

/// A call in progress: counts its attempts, and records its outcome when finished, or
/// `cancelled` if dropped first. Used by [`Policy`](crate::Policy), whose future is one
/// `async` block.
pub(crate) struct InFlight<'a> {
    metrics: &'a CallMetrics,
    meter: Meter,
    finished: bool,
}

impl<'a> InFlight<'a> {
    #[inline]
    pub(crate) fn start(metrics: &'a CallMetrics, started: Instant) -> Self {
        Meter::start(started).in_flight(metrics)
    }

    /// Counts an attempt starting.
    #[inline]
    pub(crate) fn attempt(&mut self) {
        self.meter.attempt(self.metrics);
    }

    #[inline]
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.meter.finish(self.metrics, outcome);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.meter.finish(self.metrics, Outcome::Cancelled);
        }
    }
}

/// A future whose duration and outcome are recorded: `<prefix>_call_duration_seconds`
/// and `<prefix>_calls_total{outcome}`.
///
/// The clock starts at the first poll. `Ok` is `success`; an error is labelled by its
/// [`ToOutcome`] impl.
///
/// # Cancellation
///
/// A `Metered` dropped after its first poll and before finishing records `cancelled`,
/// exactly once; one never polled records nothing. The inner future is dropped with it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::{CallMetrics, Metered, TimeoutExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let metrics = CallMetrics::new("fs.read", "fs.transcripts");
/// let read = async { Ok::<_, std::io::Error>(b"hello".len()) };
/// assert_eq!(Metered::new(read, metrics.clone()).await.unwrap(), 5);
///
/// // Stacked with a timeout: a timed-out call is counted as `timeout`.
/// let slow = tokio::time::sleep(Duration::from_secs(9)).timeout(Duration::from_secs(1));
/// assert!(Metered::new(slow, metrics).await.is_err());
/// # }
/// ```
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Metered<F> {
    #[pin]
    inner: F,
    metrics: CallMetrics,
    started: Option<Instant>,
}

impl<F> Metered<F> {
    /// Meters `future` through `metrics`.
    ///
    /// ```
    /// # use stayfast_core::{CallMetrics, Metered};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let metrics = CallMetrics::new("fs.read", "fs.transcripts");
    /// let read = async { Err::<usize, _>(std::io::Error::other("disk gone")) };
    /// let result = Metered::new(read, metrics).await; // counted as `failure`
    /// assert!(result.is_err()); // the output passes through unchanged
    /// # }
    /// ```
    pub fn new(future: F, metrics: CallMetrics) -> Self {
        Self {
            inner: future,
            metrics,
            started: None,
        }
    }
}

impl<F, T, E> Future for Metered<F>
where
    F: Future<Output = Result<T, E>>,
    E: ToOutcome,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let started = *this.started.get_or_insert_with(Instant::now);
        let output = std::task::ready!(this.inner.poll(cx));
        // NOTE: `started` is taken so the drop below does not record a second time.
        *this.started = None;
        let outcome = match &output {
            Ok(_) => Outcome::Success,
            Err(e) => e.outcome(),
        };
        this.metrics.record(outcome, started.elapsed());
        Poll::Ready(output)
    }
}

#[pinned_drop]
impl<F> PinnedDrop for Metered<F> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if let Some(started) = this.started.take() {
            this.metrics.record(Outcome::Cancelled, started.elapsed());
        }
    }
}

impl<F> fmt::Debug for Metered<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metered")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}
