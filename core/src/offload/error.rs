//! [`OffloadError`]: why an offloaded closure gave no value.

use std::{convert::Infallible, fmt};

use crate::{Classify, Verdict};

/// Why an offloaded closure gave no value (the `source` of [`Error::Inner`](crate::Error::Inner)).
///
/// `E` is the closure's own error type; [`Infallible`] for a closure that cannot fail.
///
/// # Examples
///
/// ```
/// use stayfast_core::OffloadError;
///
/// let e: OffloadError = OffloadError::Panicked("index corrupted".to_owned());
/// assert_eq!(e.to_string(), "the blocking closure panicked: index corrupted");
/// ```
///
/// A closure error without a [`Classify`] impl is classified by the policy:
///
/// ```
/// use stayfast_core::{Offload, OffloadConfig, OffloadError, Policy, Verdict};
///
/// #[derive(Debug)]
/// struct NotAPdf;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let parse = Policy::builder("pdf.parse")
///     .classify(|e: &OffloadError<NotAPdf>| match e {
///         OffloadError::Failed(NotAPdf) => Verdict::caller_error(), // the input's fault
///         _ => Verdict::permanent(),
///     })
///     .build()
///     .unwrap();
/// let parser = Offload::new("pdf", &OffloadConfig::default()).unwrap();
/// let err = parser.run(&parse, || Err::<(), _>(NotAPdf)).await.unwrap_err();
/// assert!(matches!(err.into_inner(), Some(OffloadError::Failed(NotAPdf))));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum OffloadError<E = Infallible> {
    /// The closure returned this error; classified as `E` says.
    Failed(E),
    /// The closure panicked, with this message. The panic was caught on its blocking
    /// thread; the call fails (outcome `failure`), is not retried, and counts as a
    /// failure for the breaker.
    Panicked(String),
    /// The runtime was shutting down: the closure never ran. Not retried, not counted by
    /// the breaker.
    RuntimeShutdown,
}

impl<E: fmt::Display> fmt::Display for OffloadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffloadError::Failed(e) => e.fmt(f),
            OffloadError::Panicked(message) => write!(f, "the blocking closure panicked: {message}"),
            OffloadError::RuntimeShutdown => {
                f.write_str("the blocking closure did not run: the runtime is shutting down")
            }
        }
    }
}

/// `Failed` is transparent: it shows the closure's error and passes on *its* source, so
/// the closure's error is printed once in a report that walks the chain.
impl<E: std::error::Error + 'static> std::error::Error for OffloadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OffloadError::Failed(e) => e.source(),
            _ => None,
        }
    }
}

/// The closure's error as `E` classifies it; a panic is a permanent failure (a bug, or
/// a library in a state it cannot recover from: retrying would panic again); a
/// shutdown says nothing about the dependency.
impl<E: Classify> Classify for OffloadError<E> {
    fn classify(&self) -> Verdict {
        match self {
            OffloadError::Failed(e) => e.classify(),
            OffloadError::Panicked(_) => Verdict::permanent(),
            OffloadError::RuntimeShutdown => Verdict::caller_error(),
        }
    }
}
