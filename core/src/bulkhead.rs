//! [`Bulkhead`]: a concurrency limit per dependency.

use std::{fmt, sync::Arc, time::Duration};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit},
    time::{Instant, timeout_at},
};

use crate::{
    Name, clock,
    config::{BulkheadConfig, ConfigError},
};

/// At most `max_concurrent` calls to one dependency at once; a call past that waits up
/// to `max_wait` for a slot and is then shed, so a slow dependency cannot take every
/// task of the service with it. Cheap to clone; clones share the limit.
///
/// # Examples
///
/// ```
/// use stayfast_core::{Bulkhead, config::BulkheadConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut config = BulkheadConfig::default();
/// config.max_concurrent = 1;
/// let bulkhead = Bulkhead::new("redis.main", &config).unwrap();
///
/// let held = bulkhead.acquire().await.unwrap();
/// assert!(bulkhead.acquire().await.is_err()); // full, and max_wait is zero
/// drop(held);
/// assert!(bulkhead.acquire().await.is_ok());
/// # }
/// ```
///
/// # Cancellation
///
/// Dropping a waiting `acquire` future leaves the queue; dropping a
/// [`BulkheadPermit`] frees its slot.
#[derive(Clone)]
pub struct Bulkhead(Arc<Inner>);

struct Inner {
    target: Name,
    /// Shared so that an offload can move a slot into a blocking closure that may
    /// outlive the call (see [`acquire_owned_until`](Bulkhead::acquire_owned_until)).
    slots: Arc<Semaphore>,
    capacity: u32,
    max_wait: Duration,
}

/// A held bulkhead slot; dropping it frees the slot.
///
/// # Examples
///
/// ```
/// # use stayfast_core::{Bulkhead, config::BulkheadConfig};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bulkhead = Bulkhead::new("fs.transcripts", &BulkheadConfig::default()).unwrap();
/// let permit = bulkhead.acquire().await.unwrap();
/// assert_eq!(bulkhead.available(), 63);
/// drop(permit);
/// assert_eq!(bulkhead.available(), 64);
/// # }
/// ```
#[must_use = "the slot is freed as soon as the permit is dropped"]
#[derive(Debug)]
pub struct BulkheadPermit<'a> {
    _slot: SemaphorePermit<'a>,
    queued: bool,
}

impl BulkheadPermit<'_> {
    /// True when the call had to wait for this slot.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Bulkhead, config::BulkheadConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BulkheadConfig::default();
    /// config.max_concurrent = 1;
    /// config.max_wait = Duration::from_secs(1);
    /// let bulkhead = Bulkhead::new("fs.transcripts", &config).unwrap();
    /// let held = bulkhead.acquire().await.unwrap();
    /// assert!(!held.queued());
    /// let release = async move { tokio::time::sleep(Duration::from_millis(10)).await; drop(held) };
    /// let (waited, ()) = tokio::join!(bulkhead.acquire(), release);
    /// assert!(waited.unwrap().queued());
    /// # }
    /// ```
    pub fn queued(&self) -> bool {
        self.queued
    }
}

/// A bulkhead refused a call: every slot was taken for longer than it may wait.
///
/// ```
/// # use stayfast_core::{Bulkhead, config::BulkheadConfig};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let mut config = BulkheadConfig::default(); config.max_concurrent = 1;
/// # let bulkhead = Bulkhead::new("fs.transcripts", &config).unwrap();
/// # let _held = bulkhead.acquire().await.unwrap();
/// let full = bulkhead.acquire().await.unwrap_err();
/// assert_eq!(full.to_string(), "fs.transcripts is at its concurrency limit of 1");
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkheadFull {
    target: Name,
    capacity: u32,
}

impl BulkheadFull {
    /// The dependency whose limit was reached.
    ///
    /// ```
    /// # use stayfast_core::{Bulkhead, config::BulkheadConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let mut config = BulkheadConfig::default(); config.max_concurrent = 1;
    /// # let bulkhead = Bulkhead::new("fs.transcripts", &config).unwrap();
    /// # let _held = bulkhead.acquire().await.unwrap();
    /// let full = bulkhead.acquire().await.unwrap_err();
    /// assert_eq!(full.target().as_str(), "fs.transcripts");
    /// # }
    /// ```
    pub fn target(&self) -> &Name {
        &self.target
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is at its concurrency limit of {}",
            self.target, self.capacity
        )
    }
}

impl std::error::Error for BulkheadFull {}

/// Why a policy could not get a slot.
pub(crate) enum Refusal {
    /// `max_wait` passed (or was zero).
    Full,
    /// The call's own deadline passed first.
    Deadline,
}

impl Bulkhead {
    /// A bulkhead for `target`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid field.
    ///
    /// ```
    /// # use stayfast_core::{Bulkhead, config::BulkheadConfig};
    /// let mut config = BulkheadConfig::default();
    /// config.max_concurrent = 0;
    /// let err = Bulkhead::new("fs.transcripts", &config).unwrap_err();
    /// assert_eq!(err.field(), "max_concurrent");
    /// ```
    pub fn new(target: impl Into<Name>, config: &BulkheadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self(Arc::new(Inner {
            target: target.into(),
            slots: Arc::new(Semaphore::new(config.max_concurrent as usize)),
            capacity: config.max_concurrent,
            max_wait: config.max_wait,
        })))
    }

    /// The dependency this bulkhead protects.
    ///
    /// ```
    /// # use stayfast_core::{Bulkhead, config::BulkheadConfig};
    /// let bulkhead = Bulkhead::new("fs.transcripts", &BulkheadConfig::default()).unwrap();
    /// assert_eq!(bulkhead.target().as_str(), "fs.transcripts");
    /// ```
    pub fn target(&self) -> &Name {
        &self.0.target
    }

    /// Free slots right now.
    ///
    /// ```
    /// # use stayfast_core::{Bulkhead, config::BulkheadConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut config = BulkheadConfig::default();
    /// config.max_concurrent = 2;
    /// let bulkhead = Bulkhead::new("fs.transcripts", &config).unwrap();
    /// let _slot = bulkhead.acquire().await.unwrap();
    /// assert_eq!(bulkhead.available(), 1);
    /// # }
    /// ```
    pub fn available(&self) -> usize {
        self.0.slots.available_permits()
    }

    /// Takes a slot, waiting up to `max_wait`.
    ///
    /// # Errors
    ///
    /// [`BulkheadFull`] when no slot freed up in time.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{Bulkhead, config::BulkheadConfig};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut config = BulkheadConfig::default();
    /// config.max_concurrent = 1;
    /// config.max_wait = Duration::from_millis(50);
    /// let bulkhead = Bulkhead::new("fs.transcripts", &config).unwrap();
    /// let _held = bulkhead.acquire().await.unwrap();
    /// let start = tokio::time::Instant::now();
    /// assert!(bulkhead.acquire().await.is_err()); // waited for `max_wait`, then shed
    /// assert_eq!(start.elapsed(), Duration::from_millis(50));
    /// # }
    /// ```
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        self.acquire_until(None).await.map_err(|_| self.full())
    }

    /// The slots themselves, for a caller that waits for one by polling (the tower
    /// layer's `poll_ready`).
    #[cfg(feature = "tower")]
    pub(crate) fn slots(&self) -> &Arc<Semaphore> {
        &self.0.slots
    }

    pub(crate) fn full(&self) -> BulkheadFull {
        BulkheadFull {
            target: self.0.target.clone(),
            capacity: self.0.capacity,
        }
    }

    /// Takes a slot, waiting up to `max_wait` or until `deadline`, whichever is first.
    pub(crate) async fn acquire_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<BulkheadPermit<'_>, Refusal> {
        let slots = &*self.0.slots;
        // Fast path: a free slot costs no clock read and no timer.
        if let Ok(permit) = slots.try_acquire() {
            return Ok(BulkheadPermit {
                _slot: permit,
                queued: false,
            });
        }
        let (until, refusal) = self.wait_bound(deadline)?;
        let acquired = match until {
            Some(until) => timeout_at(until, slots.acquire()).await.map_err(|_| refusal)?,
            None => slots.acquire().await,
        };
        // The semaphore is never closed, so `acquire` cannot fail; treat it as full.
        acquired
            .map(|permit| BulkheadPermit {
                _slot: permit,
                queued: true,
            })
            .map_err(|_| Refusal::Full)
    }

    /// As [`acquire_until`](Self::acquire_until), but the slot is not tied to a borrow
    /// of the bulkhead: it can be moved into a blocking closure and is freed only when
    /// that closure drops it. The `bool` says whether the call queued for it.
    pub(crate) async fn acquire_owned_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<(OwnedSemaphorePermit, bool), Refusal> {
        let slots = &self.0.slots;
        if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
            return Ok((permit, false));
        }
        let (until, refusal) = self.wait_bound(deadline)?;
        let acquired = match until {
            Some(until) => timeout_at(until, Arc::clone(slots).acquire_owned())
                .await
                .map_err(|_| refusal)?,
            None => Arc::clone(slots).acquire_owned().await,
        };
        // Never closed, as above.
        acquired.map(|permit| (permit, true)).map_err(|_| Refusal::Full)
    }

    /// When a call that found every slot taken stops waiting, and what it is refused
    /// with then; `Err(Full)` at once when it may not wait at all.
    fn wait_bound(&self, deadline: Option<Instant>) -> Result<(Option<Instant>, Refusal), Refusal> {
        let max_wait = self.0.max_wait;
        if max_wait.is_zero() {
            return Err(Refusal::Full);
        }
        let wait_until = clock::deadline_after(Instant::now(), max_wait);
        Ok(match (wait_until, deadline) {
            (Some(w), Some(d)) if d < w => (Some(d), Refusal::Deadline),
            (None, Some(d)) => (Some(d), Refusal::Deadline),
            (w, _) => (w, Refusal::Full),
        })
    }
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("target", &self.0.target)
            .field("capacity", &self.0.capacity)
            .field("available", &self.available())
            .field("max_wait", &self.0.max_wait)
            .finish()
    }
}
