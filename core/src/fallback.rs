//! Fallback results: which path served a call, and why the primary did not.

use std::fmt;

use crate::Error;

/// Which path served a call made with
/// [`Policy::call_with_fallback`](crate::Policy::call_with_fallback).
///
/// # Examples
///
/// ```
/// use stayfast_core::{FallbackReason, Source};
/// assert!(Source::Fallback(FallbackReason::Timeout).is_fallback());
/// assert!(!Source::Primary.is_fallback());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The operation itself.
    Primary,
    /// The fallback, because the primary path failed for this reason.
    Fallback(FallbackReason),
}

impl Source {
    /// True when the fallback served the call.
    ///
    /// ```
    /// # use stayfast_core::{FallbackReason, Served, Source};
    /// let served = Served { value: "cached", source: Source::Fallback(FallbackReason::Rejected) };
    /// assert!(served.source.is_fallback()); // e.g. mark the response as stale
    /// ```
    pub fn is_fallback(self) -> bool {
        matches!(self, Source::Fallback(_))
    }
}

/// A value and the path that produced it.
///
/// # Examples
///
/// ```
/// use stayfast_core::{Served, Source};
/// let served = Served { value: 3, source: Source::Primary };
/// assert_eq!(served.into_value(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served<T> {
    /// The value.
    pub value: T,
    /// Which path produced it.
    pub source: Source,
}

impl<T> Served<T> {
    /// The value, whichever path produced it.
    ///
    /// ```
    /// # use stayfast_core::{Policy, Source};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = Policy::builder("redis.get").build().unwrap();
    /// let served = policy
    ///     .call_with_fallback(|_| async { Ok::<_, std::io::Error>(7) }, |_| async { Ok(0) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(served.source, Source::Primary);
    /// assert_eq!(served.into_value(), 7);
    /// # }
    /// ```
    pub fn into_value(self) -> T {
        self.value
    }
}

/// Why a call went to its fallback: the `reason` label of
/// `stayfast_fallbacks_total`.
///
/// # Examples
///
/// ```
/// use stayfast_core::{Error, FallbackReason, Name};
///
/// let shed: Error<()> = Error::Shed { target: Name::from("redis.main") };
/// assert_eq!(FallbackReason::of(&shed), FallbackReason::Rejected);
/// assert_eq!(FallbackReason::Rejected.as_str(), "rejected");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The operation failed (its own error, or the retry budget ran out).
    Failure,
    /// It timed out, or its outcome is unknown.
    Timeout,
    /// It was not attempted: the circuit was open or the bulkhead full.
    Rejected,
}

impl FallbackReason {
    /// Every reason, in a fixed order (the order of metric handles).
    ///
    /// ```
    /// use stayfast_core::FallbackReason;
    /// let labels: Vec<_> = FallbackReason::ALL.iter().map(|r| r.as_str()).collect();
    /// assert_eq!(labels, ["failure", "timeout", "rejected"]);
    /// ```
    pub const ALL: [FallbackReason; 3] = [
        FallbackReason::Failure,
        FallbackReason::Timeout,
        FallbackReason::Rejected,
    ];

    /// The reason a call that ended with `error` goes to its fallback.
    ///
    /// ```
    /// # use stayfast_core::{Error, FallbackReason, Name};
    /// let unknown: Error<std::io::Error> = Error::OutcomeUnknown { operation: Name::from("redis.set"), after: None };
    /// assert_eq!(FallbackReason::of(&unknown), FallbackReason::Timeout);
    /// let failed = Error::Inner { operation: Name::from("redis.get"), source: "boom", attempts: 3 };
    /// assert_eq!(FallbackReason::of(&failed), FallbackReason::Failure);
    /// ```
    pub fn of<E>(error: &Error<E>) -> Self {
        match error {
            Error::Timeout { .. } | Error::OutcomeUnknown { .. } => FallbackReason::Timeout,
            Error::CircuitOpen { .. } | Error::Shed { .. } => FallbackReason::Rejected,
            _ => FallbackReason::Failure,
        }
    }

    /// The label value.
    ///
    /// ```
    /// # use stayfast_core::FallbackReason;
    /// assert_eq!(FallbackReason::Timeout.as_str(), "timeout");
    /// assert_eq!(FallbackReason::Failure.to_string(), "failure");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Failure => "failure",
            FallbackReason::Timeout => "timeout",
            FallbackReason::Rejected => "rejected",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
