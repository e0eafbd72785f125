//! [`FireAndForget`]: background work that never blocks the caller.

mod admission;

use std::{any::Any, fmt, future::Future, panic::AssertUnwindSafe, pin::pin, sync::Arc, time::Duration};

use futures_util::{
    FutureExt,
    future::{Either, select},
};
use metrics::{Counter, Gauge, counter, gauge};
use serde::{Deserialize, Serialize};
use tokio::{
    runtime::Handle,
    sync::{Notify, watch},
    time::{Instant, timeout, timeout_at},
};

use self::admission::Admission;
use crate::{
    Name, Outcome, ToOutcome, clock,
    config::{ConfigError, at_least_one, duration, positive},
    telemetry::{BACKGROUND_IN_FLIGHT, BACKGROUND_TASKS_TOTAL, DEFAULT_PREFIX, metric_name},
};

/// Settings of a [`FireAndForget`] spawner.
///
/// # Examples
///
/// ```
/// let config: stayfast_core::BackgroundConfig = toml::from_str(r#"
///     max_in_flight = 256
///     task_timeout = "5s"
/// "#).unwrap();
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackgroundConfig {
    /// Tasks allowed in flight at once; past that, new tasks are shed and counted.
    pub max_in_flight: u32,
    /// Each task is abandoned (and counted as `timeout`) after this long (`None`: never).
    #[serde(with = "duration::option")]
    pub task_timeout: Option<Duration>,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            task_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl BackgroundConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A zero `max_in_flight` or `task_timeout`.
    ///
    /// ```
    /// let mut config = stayfast_core::BackgroundConfig::default();
    /// config.max_in_flight = 0;
    /// assert_eq!(config.validate().unwrap_err().field(), "max_in_flight");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one("max_in_flight", self.max_in_flight)?;
        if let Some(t) = self.task_timeout {
            positive("task_timeout", t)?;
        }
        Ok(())
    }
}

/// How a background task ended: the `outcome` label of
/// `stayfast_background_tasks_total`.
///
/// # Examples
///
/// ```
/// assert_eq!(stayfast_core::TaskOutcome::Panicked.as_str(), "panicked");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskOutcome {
    /// It returned `Ok`.
    Success,
    /// It returned `Err` (logged).
    Failure,
    /// It outlived the task timeout and was dropped.
    Timeout,
    /// It was never started: the spawner was at its bound or shut down. Or it ran and
    /// returned an error saying its work was shed by a full bulkhead (an error whose
    /// [`ToOutcome::outcome`] is [`Outcome::Shed`]).
    Shed,
    /// It panicked (the panic was caught, logged and counted).
    Panicked,
    /// It was still running when `shutdown`'s grace period ended, and was dropped.
    Aborted,
    /// It returned an error saying its work was refused by an open circuit (an error
    /// whose [`ToOutcome::outcome`] is [`Outcome::Rejected`]). Not a failure: the
    /// circuit is open because of failures already counted where they happened, and
    /// counting every refused task again would page on each second of an outage.
    Rejected,
}

impl TaskOutcome {
    const ALL: [TaskOutcome; 7] = [
        TaskOutcome::Success,
        TaskOutcome::Failure,
        TaskOutcome::Timeout,
        TaskOutcome::Shed,
        TaskOutcome::Panicked,
        TaskOutcome::Aborted,
        TaskOutcome::Rejected,
    ];

    /// The outcome of a task that returned `error`: refused work (an open circuit, a
    /// full bulkhead) as such, any other error a failure.
    ///
    /// ```
    /// use stayfast_core::{Error, Name, TaskOutcome};
    /// let open: Error<std::io::Error> = Error::CircuitOpen { target: Name::from("redis"), retry_after: std::time::Duration::from_secs(1) };
    /// assert_eq!(TaskOutcome::of_error(&open), TaskOutcome::Rejected);
    /// let io = std::io::Error::other("disk on fire");
    /// assert_eq!(TaskOutcome::of_error(&io), TaskOutcome::Failure);
    /// ```
    pub fn of_error<E: ToOutcome + ?Sized>(error: &E) -> Self {
        match error.outcome() {
            Outcome::Rejected => TaskOutcome::Rejected,
            Outcome::Shed => TaskOutcome::Shed,
            _ => TaskOutcome::Failure,
        }
    }

    /// The label value.
    ///
    /// ```
    /// assert_eq!(stayfast_core::TaskOutcome::Shed.as_str(), "shed");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Success => "success",
            TaskOutcome::Failure => "failure",
            TaskOutcome::Timeout => "timeout",
            TaskOutcome::Shed => "shed",
            TaskOutcome::Panicked => "panicked",
            TaskOutcome::Aborted => "aborted",
            TaskOutcome::Rejected => "rejected",
        }
    }
}

/// Why [`FireAndForget::spawn`] did not start a task. The task was dropped unpolled
/// and counted as `shed`.
///
/// ```
/// assert_eq!(stayfast_core::SpawnError::Shed.to_string(),
///            "background work shed: the spawner is at its in-flight bound");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// `max_in_flight` tasks are already running.
    Shed,
    /// The spawner has been shut down.
    ShutDown,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpawnError::Shed => "background work shed: the spawner is at its in-flight bound",
            SpawnError::ShutDown => "background work refused: the spawner has been shut down",
        })
    }
}

impl std::error::Error for SpawnError {}

/// What [`FireAndForget::shutdown`] did.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// # let spawner = stayfast_core::FireAndForget::new("cache", &Default::default()).unwrap();
/// let report = spawner.shutdown(std::time::Duration::from_secs(1)).await;
/// assert_eq!((report.in_flight, report.aborted), (0, 0));
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks running when shutdown began.
    pub in_flight: usize,
    /// Of those, how many were still running when the grace period ended and were
    /// dropped.
    pub aborted: usize,
}

/// Runs background work — cache repopulation, best-effort writes — off the caller's
/// path.
///
/// [`spawn`](Self::spawn) is a plain function: it never awaits and never blocks. At
/// most `max_in_flight` tasks run at once; past that a task is shed (dropped unpolled
/// and counted), never queued without bound. Each task is bounded by `task_timeout`;
/// its error or panic is caught, logged through `tracing` (target
/// `stayfast::background`) and counted in `stayfast_background_tasks_total{spawner,
/// outcome}` ([`TaskOutcome`]: an error saying the work was refused, by an open circuit
/// or a full bulkhead, counts as `rejected` or `shed`, not `failure`);
/// `stayfast_background_in_flight{spawner}` shows the current load.
/// [`shutdown`](Self::shutdown) stops new work, lets running tasks finish for a grace
/// period, then drops the rest and reports how many. Cheap to clone.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::{BackgroundConfig, FireAndForget};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let spawner = FireAndForget::new("cache", &BackgroundConfig::default()).unwrap();
/// spawner.spawn("repopulate", async { Ok::<_, std::io::Error>(()) }).unwrap();
/// let report = spawner.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(report.aborted, 0);
/// # }
/// ```
///
/// # Cancellation
///
/// Tasks run on the runtime the spawner was created in, independent of the caller:
/// dropping the caller's future does not affect them. A task dropped by its timeout or
/// by `shutdown` stops at its next `.await`; work it handed to a blocking thread keeps
/// running. Tasks still running when the runtime itself shuts down are dropped by
/// tokio: call `shutdown` first.
#[derive(Clone)]
pub struct FireAndForget {
    inner: Arc<Inner>,
}

struct Inner {
    name: Name,
    runtime: Handle,
    capacity: u32,
    task_timeout: Option<Duration>,
    /// The closed flag and the in-flight count, changed together.
    admission: Admission,
    /// Signalled whenever a task finishes, so `shutdown` can wait for the count to drop.
    finished: Notify,
    /// Set to `true` when the grace period is over: running tasks drop themselves.
    abort: watch::Sender<bool>,
    gauge: Gauge,
    outcomes: [Counter; TaskOutcome::ALL.len()],
}

impl FireAndForget {
    /// A spawner named `name` (the `spawner` label), running tasks on the current
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an invalid config, or when called outside a tokio runtime
    /// (field `runtime`).
    ///
    /// ```
    /// use stayfast_core::{BackgroundConfig, FireAndForget};
    /// // Outside a tokio runtime there is nowhere to run the tasks:
    /// let err = FireAndForget::new("cache", &BackgroundConfig::default()).unwrap_err();
    /// assert_eq!(err.field(), "runtime");
    /// ```
    pub fn new(name: impl Into<Name>, config: &BackgroundConfig) -> Result<Self, ConfigError> {
        Self::with_prefix(name, config, DEFAULT_PREFIX)
    }

    /// As [`new`](Self::new), with metrics named `<prefix>_background_*`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spawner = stayfast_core::FireAndForget::with_prefix("cache", &Default::default(), "myapp").unwrap();
    /// # let _ = spawner;
    /// # }
    /// ```
    pub fn with_prefix(
        name: impl Into<Name>,
        config: &BackgroundConfig,
        prefix: &str,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let runtime = Handle::try_current().map_err(|_| {
            ConfigError::new("runtime", "FireAndForget must be created inside a tokio runtime")
        })?;
        let name = name.into();
        let label = name.to_label();
        let tasks = metric_name(prefix, BACKGROUND_TASKS_TOTAL);
        Ok(Self {
            inner: Arc::new(Inner {
                runtime,
                capacity: config.max_in_flight,
                task_timeout: config.task_timeout,
                admission: Admission::new(config.max_in_flight),
                finished: Notify::new(),
                abort: watch::Sender::new(false),
                gauge: gauge!(metric_name(prefix, BACKGROUND_IN_FLIGHT), "spawner" => label.clone()),
                outcomes: TaskOutcome::ALL
                    .map(|o| counter!(tasks.clone(), "spawner" => label.clone(), "outcome" => o.as_str())),
                name,
            }),
        })
    }

    /// Tasks running now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spawner = stayfast_core::FireAndForget::new("cache", &Default::default()).unwrap();
    /// assert_eq!(spawner.in_flight(), 0);
    /// # }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.inner.admission.in_flight()
    }

    /// Starts `task` in the background, named `task_name` in logs. Returns at once.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Shed`] at the in-flight bound, [`SpawnError::ShutDown`] after
    /// `shutdown`; the task is then dropped unpolled and counted as `shed`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut config = stayfast_core::BackgroundConfig::default();
    /// config.max_in_flight = 1;
    /// let spawner = stayfast_core::FireAndForget::new("cache", &config).unwrap();
    /// let stalled = std::future::pending::<Result<(), std::io::Error>>();
    /// assert!(spawner.spawn("first", stalled).is_ok());
    /// let err = spawner.spawn("second", async { Ok::<_, std::io::Error>(()) }).unwrap_err();
    /// assert_eq!(err, stayfast_core::SpawnError::Shed);
    /// # }
    /// ```
    pub fn spawn<F, E>(&self, task_name: &'static str, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + ToOutcome + Send + 'static,
    {
        let inner = &*self.inner;
        if let Err(refused) = inner.admission.try_reserve() {
            inner.count(TaskOutcome::Shed);
            return Err(refused);
        }
        inner.gauge.increment(1.0);
        let slot = Slot(Arc::clone(&self.inner));
        let mut abort = inner.abort.subscribe();
        inner.runtime.spawn(async move {
            let inner = &*slot.0;
            let work = AssertUnwindSafe(bounded(task, inner.task_timeout)).catch_unwind();
            let aborted = abort.wait_for(|abort| *abort);
            let outcome = match select(pin!(work), pin!(aborted)).await {
                Either::Left((Ok(Some(Ok(()))), _)) => TaskOutcome::Success,
                Either::Left((Ok(Some(Err(e))), _)) => match TaskOutcome::of_error(&e) {
                    TaskOutcome::Failure => {
                        tracing::warn!(target: "stayfast::background", spawner = %inner.name, task = task_name, error = %e, "background task failed");
                        TaskOutcome::Failure
                    }
                    // Refused work comes by the thousand in an outage; the breaker and
                    // bulkhead log their own state changes.
                    refused => {
                        tracing::debug!(target: "stayfast::background", spawner = %inner.name, task = task_name, error = %e, "background task's work refused");
                        refused
                    }
                },
                Either::Left((Ok(None), _)) => {
                    tracing::warn!(target: "stayfast::background", spawner = %inner.name, task = task_name, timeout = ?inner.task_timeout, "background task timed out");
                    TaskOutcome::Timeout
                }
                Either::Left((Err(panic), _)) => {
                    tracing::error!(target: "stayfast::background", spawner = %inner.name, task = task_name, panic = panic_message(&*panic), "background task panicked");
                    TaskOutcome::Panicked
                }
                Either::Right(_) => {
                    tracing::warn!(target: "stayfast::background", spawner = %inner.name, task = task_name, "background task aborted at shutdown");
                    TaskOutcome::Aborted
                }
            };
            inner.count(outcome);
            drop(slot);
        });
        Ok(())
    }

    /// Stops accepting work, waits up to `grace` for running tasks, then drops the rest.
    ///
    /// Every task accepted by [`spawn`](Self::spawn) before this was called is counted
    /// and waited for; every later `spawn` is refused. It returns within `grace` plus a
    /// tenth of it (at most 1 s more): that margin lets the dropped tasks unwind and
    /// count themselves, and only runs out when a task is blocked inside a poll
    /// (blocking code on an async worker), which nothing can stop; such a task is
    /// logged and still counts in [`in_flight`](Self::in_flight).
    ///
    /// Calling it again (or from a clone) waits for what is left.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let spawner = stayfast_core::FireAndForget::new("cache", &Default::default()).unwrap();
    /// spawner.spawn("stuck", std::future::pending::<Result<(), std::io::Error>>()).unwrap();
    /// let report = spawner.shutdown(Duration::from_secs(1)).await;
    /// assert_eq!((report.in_flight, report.aborted), (1, 1)); // dropped after the grace period
    /// assert!(spawner.spawn("late", async { Ok::<_, std::io::Error>(()) }).is_err());
    /// # }
    /// ```
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &*self.inner;
        let in_flight = inner.admission.close();
        let drained = match clock::deadline_after(Instant::now(), grace) {
            Some(deadline) => timeout_at(deadline, inner.drained()).await.is_ok(),
            None => {
                inner.drained().await;
                true
            }
        };
        let mut aborted = 0;
        if !drained {
            aborted = self.in_flight();
            inner.abort.send_replace(true);
            // An aborted task stops at its next poll, then counts itself and frees its
            // slot: wait for that, so the metrics and `in_flight` agree with the report
            // when this returns. A task blocked inside a poll (blocking code on an async
            // worker) cannot be stopped at all: the wait is bounded by the grace.
            if timeout(unwind_time(grace), inner.drained()).await.is_err() {
                tracing::warn!(target: "stayfast::background", spawner = %inner.name, stuck = self.in_flight(), "background tasks did not stop when aborted: blocked inside a poll");
            }
        }
        ShutdownReport { in_flight, aborted }
    }
}

impl Inner {
    fn count(&self, outcome: TaskOutcome) {
        self.outcomes[outcome as usize].increment(1);
    }

    /// Resolves when no task is in flight.
    async fn drained(&self) {
        loop {
            let finished = self.finished.notified();
            let mut finished = pin!(finished);
            finished.as_mut().enable();
            if self.admission.in_flight() == 0 {
                return;
            }
            finished.await;
        }
    }
}

/// A task's hold on an in-flight slot: released however the task ends, panics and
/// runtime shutdown included.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.admission.release();
        self.0.gauge.decrement(1.0);
        self.0.finished.notify_waiters();
    }
}

/// The longest [`FireAndForget::shutdown`] waits, after its grace period, for the
/// tasks it aborted to unwind: a tenth of the grace, at most this.
const MAX_UNWIND: Duration = Duration::from_secs(1);

/// How long `shutdown(grace)` waits for aborted tasks to unwind: a tenth of `grace`, at
/// most [`MAX_UNWIND`]. Unwinding takes one poll, so this only runs out for a task
/// blocked inside a poll, which nothing can stop.
fn unwind_time(grace: Duration) -> Duration {
    (grace / 10).min(MAX_UNWIND)
}

/// `task`, bounded by `limit`: `None` when it timed out.
async fn bounded<F: Future>(task: F, limit: Option<Duration>) -> Option<F::Output> {
    match limit {
        Some(limit) => timeout(limit, task).await.ok(),
        None => Some(task.await),
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

impl fmt::Debug for FireAndForget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FireAndForget")
            .field("name", &self.inner.name)
            .field("in_flight", &self.in_flight())
            .field("capacity", &self.inner.capacity)
            .field("task_timeout", &self.inner.task_timeout)
            .field("closed", &self.inner.admission.is_closed())
            .finish_non_exhaustive()
    }
}
