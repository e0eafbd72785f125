//! [`Outcome`]: the closed set of values of the `outcome` metric label.

use std::fmt;

/// How one logical call ended: the value of the `outcome` label of
/// `stayfast_calls_total`.
///
/// Every [`Error`](crate::Error) variant maps to exactly one outcome
/// ([`Error::outcome`](crate::Error::outcome)); a call served by the primary path is
/// [`Success`](Outcome::Success), by the fallback [`Fallback`](Outcome::Fallback), and a
/// call whose future was dropped before it finished is [`Cancelled`](Outcome::Cancelled).
///
/// # Examples
///
/// ```
/// use stayfast_core::Outcome;
///
/// assert_eq!(Outcome::BudgetExhausted.as_str(), "budget_exhausted");
/// assert_eq!(Outcome::ALL.len(), 9);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Ok from the primary path.
    Success,
    /// Ok from the fallback.
    Fallback,
    /// The operation's own error ([`Error::Inner`](crate::Error::Inner)).
    Failure,
    /// A per-attempt timeout or the overall deadline passed.
    Timeout,
    /// A non-idempotent attempt may or may not have been applied.
    Unknown,
    /// The circuit was open.
    Rejected,
    /// The bulkhead was full.
    Shed,
    /// The retry budget refused a retry.
    BudgetExhausted,
    /// The caller dropped the future before it finished.
    Cancelled,
}

impl Outcome {
    /// Every outcome, in a fixed order (the order of metric handles).
    ///
    /// ```
    /// use stayfast_core::Outcome;
    /// assert_eq!(Outcome::ALL.len(), 9); // one `outcome` label value each
    /// assert_eq!(Outcome::ALL[0].as_str(), "success");
    /// ```
    pub const ALL: [Outcome; 9] = [
        Outcome::Success,
        Outcome::Fallback,
        Outcome::Failure,
        Outcome::Timeout,
        Outcome::Unknown,
        Outcome::Rejected,
        Outcome::Shed,
        Outcome::BudgetExhausted,
        Outcome::Cancelled,
    ];

    /// The label value, as it appears in Prometheus.
    ///
    /// ```
    /// assert_eq!(stayfast_core::Outcome::Rejected.as_str(), "rejected");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Fallback => "fallback",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::Unknown => "unknown",
            Outcome::Rejected => "rejected",
            Outcome::Shed => "shed",
            Outcome::BudgetExhausted => "budget_exhausted",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error type that knows which [`Outcome`] it stands for, so a
/// [`Metered`](crate::Metered) future can label it.
///
/// Implemented for [`Error`](crate::Error) (its table), [`Elapsed`](crate::Elapsed)
/// (`timeout`) and [`std::io::Error`] (`failure`). Implement it for your own error type
/// to meter futures that return it.
///
/// # Examples
///
/// ```
/// use stayfast_core::{Outcome, ToOutcome};
///
/// #[derive(Debug)]
/// struct NotFound;
/// impl ToOutcome for NotFound {
///     fn outcome(&self) -> Outcome { Outcome::Failure }
/// }
/// assert_eq!(NotFound.outcome(), Outcome::Failure);
/// ```
pub trait ToOutcome {
    /// The outcome this error stands for.
    fn outcome(&self) -> Outcome;
}

impl ToOutcome for std::io::Error {
    fn outcome(&self) -> Outcome {
        if self.kind() == std::io::ErrorKind::TimedOut {
            Outcome::Timeout
        } else {
            Outcome::Failure
        }
    }
}
