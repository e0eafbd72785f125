//! [`Attempt`]: what each attempt of a policy call is told.

use std::time::Duration;

use tokio::time::Instant;

/// One attempt of a call made with [`Policy::call_with`](crate::Policy::call_with).
///
/// `deadline` is `min(attempt start + per-attempt timeout, overall deadline)`: hand it
/// to the client library so the attempt is bounded *inside* it too (a command that
/// never left the client's queue is then dropped, not sent late).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::Policy;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let policy = Policy::builder("redis.get").timeout(Duration::from_millis(250)).build().unwrap();
/// let seen = policy
///     .call_with(|attempt| async move {
///         assert_eq!(attempt.number, 1);
///         Ok::<_, std::io::Error>(attempt.remaining())
///     })
///     .await
///     .unwrap();
/// assert_eq!(seen, Some(Duration::from_millis(250)));
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// 1 for the first attempt, 2 for the first retry, …
    pub number: u32,
    /// When this attempt will be abandoned (`None`: no bound configured).
    pub deadline: Option<Instant>,
    /// When this attempt began (after any wait for a bulkhead slot).
    pub started: Instant,
}

impl Attempt {
    /// Time left before the deadline, measured now (`None`: no deadline).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::Policy;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = Policy::builder("redis.get").timeout(Duration::from_millis(250)).build().unwrap();
    /// let left = policy
    ///     .call_with(|attempt| async move {
    ///         tokio::time::sleep(Duration::from_millis(100)).await;
    ///         Ok::<_, std::io::Error>(attempt.remaining())
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(left, Some(Duration::from_millis(150)));
    /// # }
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The time this attempt was given: from its start to its deadline (`None`: no
    /// deadline). Unlike [`remaining`](Self::remaining) it reads no clock, so it is the
    /// cheap choice for handing a timeout to a client right as the attempt begins.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::Policy;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = Policy::builder("redis.get").timeout(Duration::from_millis(250)).build().unwrap();
    /// let given = policy
    ///     .call_with(|attempt| async move { Ok::<_, std::io::Error>(attempt.allotted()) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(given, Some(Duration::from_millis(250)));
    /// # }
    /// ```
    pub fn allotted(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(self.started))
    }

    /// True for a retry.
    ///
    /// ```
    /// # use std::io;
    /// # use stayfast_core::{Policy, config::RetryConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = Policy::builder("redis.get").retry(&RetryConfig::default()).build().unwrap();
    /// let answered_by = policy
    ///     .call_with(|attempt| async move {
    ///         if attempt.is_retry() {
    ///             Ok(attempt.number)
    ///         } else {
    ///             Err(io::Error::from(io::ErrorKind::ConnectionRefused))
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(answered_by, 2);
    /// # }
    /// ```
    pub fn is_retry(&self) -> bool {
        self.number > 1
    }
}
