//! Saturating arithmetic on tokio instants: a bound too far in the future means "never",
//! not a panic.

use std::time::Duration;

use tokio::time::Instant;

/// `now + after`, or `None` when that lies past what an `Instant` can hold.
#[inline]
pub(crate) fn deadline_after(now: Instant, after: Duration) -> Option<Instant> {
    now.checked_add(after)
}

/// The earlier of two optional deadlines (`None` = no deadline).
#[inline]
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
