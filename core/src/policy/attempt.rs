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
}

impl Attempt {
    /// Time left before the deadline, measured now (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True for a retry.
    pub fn is_retry(&self) -> bool {
        self.number > 1
    }
}
