//! [`Error`]: the one error type of a call made through a [`Policy`](crate::Policy).

use std::{fmt, time::Duration};

use crate::{Name, Outcome, ToOutcome};

/// Why a call made through a [`Policy`](crate::Policy) did not return a value.
///
/// `E` is the operation's own error type. Every variant maps to one
/// [`Outcome`] label ([`Error::outcome`]), and each message names the operation or
/// target and the bound that was hit ("redis.get timed out after 2s").
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a `_` arm,
/// or use the `is_*()` helpers.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::{Error, Name};
///
/// let e: Error<std::io::Error> = Error::Timeout {
///     operation: Name::from("redis.get"),
///     after: Duration::from_secs(2),
/// };
/// assert!(e.is_timeout());
/// assert_eq!(e.to_string(), "redis.get timed out after 2s");
/// assert_eq!(e.outcome().as_str(), "timeout");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// An attempt, or the overall deadline, ran out of time. The attempt's future was
    /// dropped. For an operation not declared idempotent this becomes
    /// [`OutcomeUnknown`](Error::OutcomeUnknown) instead.
    Timeout {
        /// The operation that timed out.
        operation: Name,
        /// The bound that was hit.
        after: Duration,
    },
    /// The target's circuit breaker is open (or half-open with every probe taken): the
    /// operation was not attempted.
    CircuitOpen {
        /// The dependency whose circuit is open.
        target: Name,
        /// How long until the breaker admits a probe; a hint, not a promise.
        retry_after: Duration,
    },
    /// The shared retry budget refused a retry; carries the error of the last attempt
    /// (its [`source`](std::error::Error::source)).
    BudgetExhausted {
        /// The error the last attempt ended with.
        last: Box<Error<E>>,
    },
    /// The target's bulkhead was full and the call could not wait: it was not attempted.
    Shed {
        /// The dependency whose concurrency limit was reached.
        target: Name,
    },
    /// A non-idempotent operation's attempt timed out or lost its connection after it
    /// may have been sent: it may or may not have been applied, and it was not retried.
    OutcomeUnknown {
        /// The operation whose outcome is unknown.
        operation: Name,
        /// The bound that was hit when the attempt timed out; `None` when it lost its
        /// connection (or failed in some other way that leaves the outcome open).
        after: Option<Duration>,
    },
    /// The operation itself failed and was not (or no longer) retried. The message
    /// names the operation and the attempts; the operation's error is the
    /// [`source`](std::error::Error::source), not repeated in the message.
    Inner {
        /// The operation that failed.
        operation: Name,
        /// The operation's error.
        source: E,
        /// How many attempts were made, this one included.
        attempts: u32,
    },
}

impl<E> Error<E> {
    /// True for [`Error::Timeout`].
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let e: Error<()> = Error::Shed { target: Name::from("redis.main") };
    /// assert!(!e.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True for [`Error::CircuitOpen`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Error, Name};
    /// let e: Error<()> = Error::CircuitOpen { target: Name::from("redis.main"), retry_after: Duration::from_secs(1) };
    /// assert!(e.is_circuit_open());
    /// ```
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Error::CircuitOpen { .. })
    }

    /// True for [`Error::BudgetExhausted`].
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let last = Error::Inner { operation: Name::from("op"), source: (), attempts: 1 };
    /// assert!(Error::BudgetExhausted { last: Box::new(last) }.is_budget_exhausted());
    /// ```
    pub fn is_budget_exhausted(&self) -> bool {
        matches!(self, Error::BudgetExhausted { .. })
    }

    /// True for [`Error::Shed`].
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let e: Error<()> = Error::Shed { target: Name::from("redis.main") };
    /// assert!(e.is_shed());
    /// ```
    pub fn is_shed(&self) -> bool {
        matches!(self, Error::Shed { .. })
    }

    /// True for [`Error::OutcomeUnknown`].
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let e: Error<()> = Error::OutcomeUnknown { operation: Name::from("redis.set"), after: None };
    /// assert!(e.is_outcome_unknown());
    /// ```
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// True when the call ran out of time: an [`Error::Timeout`], or an
    /// [`Error::OutcomeUnknown`] whose attempt timed out (rather than lost its
    /// connection). A [`BudgetExhausted`](Error::BudgetExhausted) is not, whatever its
    /// last attempt did: the budget is why the call ended.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Error, Name};
    /// let after = Duration::from_millis(250);
    /// let write: Error<()> = Error::OutcomeUnknown { operation: Name::from("redis.set"), after: Some(after) };
    /// assert!(write.timed_out());
    /// assert_eq!(write.to_string(), "outcome of redis.set is unknown: it timed out after 250ms and may have been applied; not retried (not idempotent)");
    /// let lost: Error<()> = Error::OutcomeUnknown { operation: Name::from("redis.set"), after: None };
    /// assert!(!lost.timed_out());
    /// ```
    pub fn timed_out(&self) -> bool {
        self.timed_out_after().is_some()
    }

    /// The bound that was hit, when the call ran out of time (see
    /// [`timed_out`](Self::timed_out)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Error, Name};
    /// let e: Error<()> = Error::Timeout { operation: Name::from("redis.get"), after: Duration::from_secs(2) };
    /// assert_eq!(e.timed_out_after(), Some(Duration::from_secs(2)));
    /// ```
    pub fn timed_out_after(&self) -> Option<Duration> {
        match self {
            Error::Timeout { after, .. } => Some(*after),
            Error::OutcomeUnknown { after, .. } => *after,
            _ => None,
        }
    }

    /// True for [`Error::Inner`].
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let e = Error::Inner { operation: Name::from("op"), source: "boom", attempts: 3 };
    /// assert!(e.is_inner());
    /// ```
    pub fn is_inner(&self) -> bool {
        matches!(self, Error::Inner { .. })
    }

    /// The operation's own error, if this is [`Error::Inner`] (or a
    /// [`BudgetExhausted`](Error::BudgetExhausted) whose last attempt was).
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let e = Error::Inner { operation: Name::from("op"), source: "boom", attempts: 3 };
    /// assert_eq!(e.inner(), Some(&"boom"));
    /// ```
    pub fn inner(&self) -> Option<&E> {
        match self {
            Error::Inner { source, .. } => Some(source),
            Error::BudgetExhausted { last } => last.inner(),
            _ => None,
        }
    }

    /// Consumes the error and returns the operation's own error, if there is one.
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let e = Error::Inner { operation: Name::from("op"), source: "boom", attempts: 3 };
    /// assert_eq!(e.into_inner(), Some("boom"));
    /// ```
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner { source, .. } => Some(source),
            Error::BudgetExhausted { last } => last.into_inner(),
            _ => None,
        }
    }

    /// How many attempts were made, when the error says so.
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let e = Error::Inner { operation: Name::from("op"), source: (), attempts: 3 };
    /// assert_eq!(e.attempts(), Some(3));
    /// ```
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Error::Inner { attempts, .. } => Some(*attempts),
            Error::BudgetExhausted { last } => last.attempts(),
            _ => None,
        }
    }

    /// The `outcome` metric label this error is counted under.
    ///
    /// ```
    /// # use stayfast_core::{Error, Name, Outcome};
    /// let e: Error<()> = Error::OutcomeUnknown { operation: Name::from("redis.set"), after: None };
    /// assert_eq!(e.outcome(), Outcome::Unknown);
    /// ```
    pub fn outcome(&self) -> Outcome {
        match self {
            Error::Timeout { .. } => Outcome::Timeout,
            Error::CircuitOpen { .. } => Outcome::Rejected,
            Error::BudgetExhausted { .. } => Outcome::BudgetExhausted,
            Error::Shed { .. } => Outcome::Shed,
            Error::OutcomeUnknown { .. } => Outcome::Unknown,
            Error::Inner { .. } => Outcome::Failure,
        }
    }

    /// Maps the operation's error type, keeping everything else.
    ///
    /// ```
    /// # use stayfast_core::{Error, Name};
    /// let e = Error::Inner { operation: Name::from("op"), source: 7, attempts: 1 };
    /// let e: Error<String> = e.map_inner(|n| n.to_string());
    /// assert_eq!(e.inner().map(String::as_str), Some("7"));
    /// ```
    pub fn map_inner<F>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Error::Timeout { operation, after } => Error::Timeout { operation, after },
            Error::CircuitOpen { target, retry_after } => Error::CircuitOpen { target, retry_after },
            Error::BudgetExhausted { last } => Error::BudgetExhausted {
                last: Box::new(last.map_inner(f)),
            },
            Error::Shed { target } => Error::Shed { target },
            Error::OutcomeUnknown { operation, after } => Error::OutcomeUnknown { operation, after },
            Error::Inner {
                operation,
                source,
                attempts,
            } => Error::Inner {
                operation,
                source: f(source),
                attempts,
            },
        }
    }
}

impl<E> ToOutcome for Error<E> {
    fn outcome(&self) -> Outcome {
        Error::outcome(self)
    }
}

/// Each message shows its own level only: the operation's error of
/// [`Inner`](Error::Inner) and the last error of [`BudgetExhausted`](Error::BudgetExhausted)
/// are their [`source`](std::error::Error::source), so a report that walks the chain
/// (`anyhow`'s `{:#}`, `tracing`'s error fields) prints each cause once.
impl<E> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout { operation, after } => write!(f, "{operation} timed out after {after:?}"),
            Error::CircuitOpen { target, retry_after } => write!(
                f,
                "circuit for {target} is open; not attempted (retry after {retry_after:?})"
            ),
            Error::BudgetExhausted { .. } => f.write_str("retry budget exhausted; not retried"),
            Error::Shed { target } => {
                write!(f, "{target} is at its concurrency limit; call shed")
            }
            Error::OutcomeUnknown {
                operation,
                after: Some(after),
            } => write!(
                f,
                "outcome of {operation} is unknown: it timed out after {after:?} and may have \
                 been applied; not retried (not idempotent)"
            ),
            Error::OutcomeUnknown {
                operation,
                after: None,
            } => write!(
                f,
                "outcome of {operation} is unknown: the attempt failed after it may have been \
                 sent, so it may have been applied; not retried (not idempotent)"
            ),
            Error::Inner {
                operation, attempts, ..
            } => write!(
                f,
                "{operation} failed after {attempts} attempt{}",
                if *attempts == 1 { "" } else { "s" }
            ),
        }
    }
}

impl<E> std::error::Error for Error<E>
where
    E: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Inner { source, .. } => Some(source),
            Error::BudgetExhausted { last } => Some(&**last),
            _ => None,
        }
    }
}

/// Displays an error followed by each of its causes (the [`source`](std::error::Error::source)
/// chain), `": "`-separated: the one-line form for a log field or a message, now that
/// each level's `Display` shows only itself.
///
/// # Examples
///
/// ```
/// use std::io;
/// use stayfast_core::{Error, ErrorChain, Name};
///
/// let e = Error::Inner {
///     operation: Name::from("fs.read"),
///     source: io::Error::other("disk on fire"),
///     attempts: 1,
/// };
/// assert_eq!(e.to_string(), "fs.read failed after 1 attempt");
/// assert_eq!(ErrorChain(&e).to_string(), "fs.read failed after 1 attempt: disk on fire");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
