//! [`Classify`]: the two questions asked of every error — retry it? and does it say
//! the dependency is unhealthy?

use std::{io, time::Duration};

use crate::{Elapsed, Error};

/// Whether an error may be retried.
///
/// # Examples
///
/// ```
/// use stayfast_core::Retryable;
/// assert_ne!(Retryable::Yes, Retryable::IfIdempotent);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retryable {
    /// Never retry: retrying cannot succeed (a bad argument, wrong credentials).
    No,
    /// Retry: the attempt certainly had no effect (connection refused, queue full).
    Yes,
    /// The attempt may have been applied (timed out or disconnected after it may have
    /// been sent): retry only if the operation is declared idempotent; otherwise the
    /// call ends with [`Error::OutcomeUnknown`].
    IfIdempotent,
    /// The dependency asked for a pause: retry after this delay (instead of the backoff).
    After(Duration),
}

/// What an outcome says about the dependency's health: the circuit breaker's input.
///
/// # Examples
///
/// ```
/// use stayfast_core::Health;
/// assert_eq!(Health::default(), Health::Failure);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The dependency looks unhealthy: counts towards opening the circuit.
    #[default]
    Failure,
    /// The dependency answered as expected (a BLPOP that timed out with nil).
    Success,
    /// Says nothing about the dependency (the caller's mistake, a cancellation): not
    /// counted at all; a half-open probe permit is returned.
    Ignore,
}

/// The answer to both questions for one error.
///
/// # Examples
///
/// ```
/// use stayfast_core::{Health, Retryable, Verdict};
///
/// let v = Verdict::transient();
/// assert_eq!((v.retry, v.health), (Retryable::Yes, Health::Failure));
/// assert_eq!(Verdict::caller_error().health, Health::Ignore);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verdict {
    /// Retry it?
    pub retry: Retryable,
    /// Does it say the dependency is unhealthy?
    pub health: Health,
    /// Is it the client library's own deadline passing (one handed in through
    /// [`Attempt::deadline`](crate::Attempt::deadline))? The policy then reports it as
    /// [`Error::Timeout`] (or `OutcomeUnknown`), exactly like its own timer.
    pub timed_out: bool,
}

impl Verdict {
    /// A verdict from both answers.
    ///
    /// ```
    /// # use stayfast_core::{Health, Retryable, Verdict};
    /// let v = Verdict::new(Retryable::No, Health::Success);
    /// assert_eq!(v.health, Health::Success);
    /// ```
    pub const fn new(retry: Retryable, health: Health) -> Self {
        Self {
            retry,
            health,
            timed_out: false,
        }
    }

    /// The client library's own deadline passed: may have been applied, the dependency
    /// is slow; reported as a timeout.
    ///
    /// ```
    /// # use stayfast_core::{Retryable, Verdict};
    /// let v = Verdict::timed_out();
    /// assert!(v.timed_out && v.retry == Retryable::IfIdempotent);
    /// ```
    pub const fn timed_out() -> Self {
        Self {
            retry: Retryable::IfIdempotent,
            health: Health::Failure,
            timed_out: true,
        }
    }

    /// Not applied and worth retrying; the dependency is struggling (connection refused,
    /// `LOADING`, `BUSY`, `TRYAGAIN`).
    ///
    /// ```
    /// # use stayfast_core::{Retryable, Verdict};
    /// assert_eq!(Verdict::transient().retry, Retryable::Yes);
    /// ```
    pub const fn transient() -> Self {
        Self::new(Retryable::Yes, Health::Failure)
    }

    /// May have been applied (timeout, connection reset): retried only when idempotent;
    /// the dependency is struggling.
    ///
    /// ```
    /// # use stayfast_core::{Retryable, Verdict};
    /// assert_eq!(Verdict::indeterminate().retry, Retryable::IfIdempotent);
    /// ```
    pub const fn indeterminate() -> Self {
        Self::new(Retryable::IfIdempotent, Health::Failure)
    }

    /// Will not get better by retrying, and the dependency is unhealthy (`NOAUTH`,
    /// disk full).
    ///
    /// ```
    /// # use stayfast_core::{Retryable, Verdict};
    /// assert_eq!(Verdict::permanent().retry, Retryable::No);
    /// ```
    pub const fn permanent() -> Self {
        Self::new(Retryable::No, Health::Failure)
    }

    /// The dependency refuses this kind of request, and will keep refusing it, while it
    /// serves others: Redis's `OOM` (writes refused at `maxmemory`; reads still work)
    /// or `NOPERM` (a right the ACL user lacks). Not retried, and ignored by the
    /// breaker, so that refused writes never open a circuit the reads share; alert on
    /// the calls' `failure` outcome instead.
    ///
    /// ```
    /// # use stayfast_core::{Health, Retryable, Verdict};
    /// let v = Verdict::refused();
    /// assert_eq!((v.retry, v.health), (Retryable::No, Health::Ignore));
    /// ```
    pub const fn refused() -> Self {
        Self::new(Retryable::No, Health::Ignore)
    }

    /// The caller's mistake (`WRONGTYPE`, not found, bad argument): not retried, and the
    /// dependency is fine.
    ///
    /// ```
    /// # use stayfast_core::{Health, Verdict};
    /// assert_eq!(Verdict::caller_error().health, Health::Ignore);
    /// ```
    pub const fn caller_error() -> Self {
        Self::new(Retryable::No, Health::Ignore)
    }

    /// An expected answer shaped as an error (a BLPOP-style nil timeout): not retried,
    /// and counted as a success.
    ///
    /// ```
    /// # use stayfast_core::{Health, Verdict};
    /// assert_eq!(Verdict::expected().health, Health::Success);
    /// ```
    pub const fn expected() -> Self {
        Self::new(Retryable::No, Health::Success)
    }

    /// The dependency asked to be retried after `delay` (and is busy).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Retryable, Verdict};
    /// let v = Verdict::retry_after(Duration::from_millis(100));
    /// assert_eq!(v.retry, Retryable::After(Duration::from_millis(100)));
    /// ```
    pub const fn retry_after(delay: Duration) -> Self {
        Self::new(Retryable::After(delay), Health::Failure)
    }
}

/// Errors that can answer both questions about themselves.
///
/// A [`Policy`](crate::Policy) asks it of every `Err` an attempt returns, unless the
/// policy was built with its own classifier
/// ([`PolicyBuilder::classify`](crate::PolicyBuilder::classify)).
///
/// # Examples
///
/// ```
/// use stayfast_core::{Classify, Verdict};
///
/// #[derive(Debug)]
/// enum StoreError { Unavailable, NotFound }
///
/// impl Classify for StoreError {
///     fn classify(&self) -> Verdict {
///         match self {
///             StoreError::Unavailable => Verdict::transient(),
///             StoreError::NotFound => Verdict::caller_error(),
///         }
///     }
/// }
/// assert!(StoreError::NotFound.classify() == Verdict::caller_error());
/// ```
pub trait Classify {
    /// Both answers for this error.
    fn classify(&self) -> Verdict;
}

/// `std::io::Error` by kind: refusals are transient; a timeout is a timeout; resets and
/// broken pipes are indeterminate; a full or read-only disk is permanent; not-found, permission,
/// invalid input or data and already-exists are the caller's errors. Anything else is
/// treated as permanent and unhealthy.
impl Classify for io::Error {
    fn classify(&self) -> Verdict {
        use io::ErrorKind::*;
        match self.kind() {
            ConnectionRefused | NotConnected | AddrNotAvailable | WouldBlock => Verdict::transient(),
            TimedOut => Verdict::timed_out(),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | Interrupted => {
                Verdict::indeterminate()
            }
            NotFound | PermissionDenied | InvalidInput | InvalidData | AlreadyExists | Unsupported => {
                Verdict::caller_error()
            }
            _ => Verdict::permanent(),
        }
    }
}

/// An error that cannot happen (an offloaded closure that cannot fail).
impl Classify for std::convert::Infallible {
    fn classify(&self) -> Verdict {
        match *self {}
    }
}

/// A single [`Timeout`](crate::Timeout) elapsed: the attempt may have been applied.
impl Classify for Elapsed {
    fn classify(&self) -> Verdict {
        Verdict::timed_out()
    }
}

/// For a policy whose operation calls another policy: timeouts are indeterminate, an
/// open circuit or a full bulkhead further down is not retried and not counted again,
/// and an inner error is asked itself.
impl<E: Classify> Classify for Error<E> {
    fn classify(&self) -> Verdict {
        match self {
            Error::Timeout { .. } => Verdict::timed_out(),
            Error::CircuitOpen { .. } | Error::Shed { .. } => Verdict::caller_error(),
            Error::BudgetExhausted { .. } => Verdict::caller_error(),
            Error::OutcomeUnknown { .. } => Verdict::permanent(),
            Error::Inner { source, .. } => source.classify(),
        }
    }
}

/// How a policy classifies its operation's errors: by the [`Classify`] trait
/// ([`ByTrait`], the default) or by a closure `Fn(&E) -> Verdict` given to
/// [`PolicyBuilder::classify`](crate::PolicyBuilder::classify).
///
/// # Examples
///
/// ```
/// use stayfast_core::{ByTrait, Classifier, Verdict};
///
/// let by_closure = |e: &&str| if *e == "busy" { Verdict::transient() } else { Verdict::permanent() };
/// assert_eq!(by_closure.verdict(&"busy"), Verdict::transient());
/// let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// assert_eq!(ByTrait.verdict(&io), Verdict::transient());
/// ```
pub trait Classifier<E>: Send + Sync + 'static {
    /// Both answers for `error`.
    fn verdict(&self, error: &E) -> Verdict;
}

/// Classifies errors by their [`Classify`] impl.
///
/// ```
/// use stayfast_core::{ByTrait, Classifier, Verdict};
/// let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
/// assert_eq!(ByTrait.verdict(&nf), Verdict::caller_error());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ByTrait;

impl<E: Classify> Classifier<E> for ByTrait {
    fn verdict(&self, error: &E) -> Verdict {
        error.classify()
    }
}

impl<E, F> Classifier<E> for F
where
    F: Fn(&E) -> Verdict + Send + Sync + 'static,
{
    fn verdict(&self, error: &E) -> Verdict {
        self(error)
    }
}
