//! [`Timeout`]: bound one future by a deadline.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use pin_project::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::{Name, clock};

/// A [`Timeout`] ran out: the inner future was dropped without finishing.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::TimeoutExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let never = std::future::pending::<()>();
/// let err = never.timeout(Duration::from_millis(150)).operation("redis.get").await.unwrap_err();
/// assert_eq!(err.to_string(), "redis.get timed out after 150ms");
/// assert_eq!(err.after(), Duration::from_millis(150));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elapsed {
    operation: Name,
    after: Duration,
}

impl Elapsed {
    pub(crate) fn new(operation: Name, after: Duration) -> Self {
        Self { operation, after }
    }

    /// The operation that timed out (`"future"` unless named with
    /// [`Timeout::operation`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::TimeoutExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let err = std::future::pending::<()>().timeout(Duration::from_millis(5)).await.unwrap_err();
    /// assert_eq!(err.operation().as_str(), "future"); // not named
    /// # }
    /// ```
    pub fn operation(&self) -> &Name {
        &self.operation
    }

    /// The bound that was hit.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::TimeoutExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let slow = tokio::time::sleep(Duration::from_secs(3));
    /// let err = slow.timeout(Duration::from_secs(1)).await.unwrap_err();
    /// assert_eq!(err.after(), Duration::from_secs(1));
    /// # }
    /// ```
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} timed out after {:?}", self.operation, self.after)
    }
}

impl std::error::Error for Elapsed {}

impl crate::ToOutcome for Elapsed {
    fn outcome(&self) -> crate::Outcome {
        crate::Outcome::Timeout
    }
}

/// A future bounded by a deadline; resolves to `Ok(output)` or `Err(`[`Elapsed`]`)`.
///
/// Built by [`TimeoutExt::timeout`]. The inner future is polled *before* the timer, so
/// an output that is ready when the deadline passes wins. No timer is registered until
/// the inner future first returns `Pending`: a future that is ready on its first poll
/// costs no timer at all, and its clock starts at that first `Pending`. Nothing is
/// allocated.
///
/// # Cancellation
///
/// Dropping a `Timeout` drops the inner future; nothing is reported. When the deadline
/// passes, the inner future is dropped before `Elapsed` is returned. Dropping a future
/// does not undo what it already did: a request already written to a socket may still
/// be applied, and work it handed to another task or thread (`spawn_blocking`) keeps
/// running. A future that blocks inside `poll` cannot be timed out at all, because the
/// timer is only checked between polls.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::TimeoutExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let fast = async { 42 }.timeout(Duration::from_secs(1)).await;
/// assert_eq!(fast, Ok(42));
///
/// let slow = tokio::time::sleep(Duration::from_secs(5)).timeout(Duration::from_secs(1));
/// assert!(slow.await.is_err());
/// # }
/// ```
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Timeout<F> {
    #[pin]
    inner: Option<F>,
    #[pin]
    sleep: Option<Sleep>,
    limit: Limit,
    operation: Name,
}

#[derive(Clone, Copy, Debug)]
enum Limit {
    /// Arm the timer `after` the first `Pending`.
    After(Duration),
    /// Arm the timer for `deadline`; report `after` as the bound.
    At { deadline: Instant, after: Duration },
    /// The timer is armed, or there is none (a deadline past the end of time).
    Armed { after: Duration },
}

const DEFAULT_OPERATION: Name = Name::new_static("future");

impl<F: Future> Timeout<F> {
    /// Bounds `future` by `after`, counted from its first `Pending`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let t = stayfast_core::Timeout::new(async { 1 }, Duration::from_millis(10));
    /// assert_eq!(t.await, Ok(1));
    /// # }
    /// ```
    pub fn new(future: F, after: Duration) -> Self {
        Self::with_limit(future, Limit::After(after))
    }

    /// Bounds `future` by the instant `deadline`; `after` is the bound named in the
    /// error.
    #[inline]
    pub(crate) fn at(future: F, deadline: Instant, after: Duration) -> Self {
        Self::with_limit(future, Limit::At { deadline, after })
    }

    /// `future` with no bound at all: for a policy with neither a timeout nor a
    /// deadline, whose attempts still run inside a `Timeout`.
    #[inline]
    pub(crate) fn unbounded(future: F) -> Self {
        Self::with_limit(
            future,
            Limit::Armed {
                after: Duration::ZERO,
            },
        )
    }

    #[inline]
    fn with_limit(future: F, limit: Limit) -> Self {
        Self {
            inner: Some(future),
            sleep: None,
            limit,
            operation: DEFAULT_OPERATION,
        }
    }

    /// Names the operation in the [`Elapsed`] error.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::TimeoutExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let err = std::future::pending::<()>()
    ///     .timeout(Duration::from_secs(2))
    ///     .operation("fs.read")
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.operation().as_str(), "fs.read");
    /// # }
    /// ```
    pub fn operation(mut self, operation: impl Into<Name>) -> Self {
        self.operation = operation.into();
        self
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            panic!("`Timeout` polled after completion");
        };
        // NOTE: the inner future first, so a result that is ready wins over the timer.
        if let Poll::Ready(output) = inner.poll(cx) {
            this.inner.set(None);
            return Poll::Ready(Ok(output));
        }
        // The timer is armed lazily, at the first `Pending`.
        let (deadline, after) = match *this.limit {
            Limit::After(after) => (clock::deadline_after(Instant::now(), after), after),
            Limit::At { deadline, after } => (Some(deadline), after),
            Limit::Armed { .. } => (None, Duration::ZERO),
        };
        if let Limit::After(_) | Limit::At { .. } = this.limit {
            *this.limit = Limit::Armed { after };
            if let Some(deadline) = deadline {
                this.sleep.set(Some(sleep_until(deadline)));
            }
        }
        let Some(sleep) = this.sleep.as_pin_mut() else {
            return Poll::Pending; // the deadline lies past the end of time
        };
        match sleep.poll(cx) {
            Poll::Ready(()) => {
                this.inner.set(None); // drop the inner future before reporting
                let Limit::Armed { after } = *this.limit else {
                    unreachable!("the timer only runs once armed")
                };
                Poll::Ready(Err(Elapsed::new(this.operation.clone(), after)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("operation", &self.operation)
            .field("limit", &self.limit)
            .field("armed", &self.sleep.is_some())
            .finish_non_exhaustive()
    }
}

/// `.timeout(d)` on any future.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::TimeoutExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let v = async { "ok" }.timeout(Duration::from_millis(150)).await;
/// assert_eq!(v, Ok("ok"));
/// # }
/// ```
pub trait TimeoutExt: Future + Sized {
    /// Bounds this future by `after`; see [`Timeout`].
    fn timeout(self, after: Duration) -> Timeout<Self> {
        Timeout::new(self, after)
    }
}

impl<F: Future> TimeoutExt for F {}
