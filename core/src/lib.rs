//! Composable resilience wrappers for async Rust, built to keep a service responsive
//! when a dependency hangs or fails.
//!
//! Every call to a dependency gets a deadline ([`Timeout`]), a [`CircuitBreaker`]
//! shared by all calls to that dependency, bounded retries with backoff, jitter and a
//! budget, an optional concurrency limit ([`Bulkhead`]), metrics ([`Metered`]) and an
//! optional fallback — stacked in one fixed, documented order by a [`Policy`]:
//!
//! ```text
//! Metered → Fallback → Deadline → Retry → Bulkhead → CircuitBreaker → Timeout → operation
//! ```
//!
//! Errors are one typed [`Error<E>`] whose variants map to the `outcome` metric label;
//! what to retry and what counts against the breaker is decided by [`Classify`]. Time is
//! tokio's throughout, so `tokio::time::pause` makes every behaviour testable.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use stayfast_core::{CircuitBreaker, Policy, config::{BreakerConfig, RetryConfig}};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let breaker = CircuitBreaker::new("db", &BreakerConfig::default()).unwrap();
//! let policy = Policy::builder("db.query")
//!     .timeout(Duration::from_millis(500))
//!     .retry(&RetryConfig::default())
//!     .idempotent(true)
//!     .breaker(breaker)
//!     .build()
//!     .unwrap();
//!
//! let rows = policy.call(|| async { Ok::<_, std::io::Error>(vec![1, 2, 3]) }).await.unwrap();
//! assert_eq!(rows.len(), 3);
//! # }
//! ```
//!
//! Install your metrics recorder *before* building policies and breakers: their metric
//! handles are resolved when they are built (see [`telemetry`]).

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod background;
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis handle uses it so far
mod backstop;
pub mod breaker;
mod bulkhead;
mod classify;
mod clock;
pub mod config;
mod error;
mod fallback;
#[cfg(unix)]
pub mod fs;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod metered;
mod name;
mod offload;
mod outcome;
mod policy;
mod redact;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod retry;
mod sync;
pub mod telemetry;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
mod timeout;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
mod trace;
mod watchdog;

pub use background::{BackgroundConfig, FireAndForget, ShutdownReport, SpawnError, TaskOutcome};
pub use breaker::CircuitBreaker;
pub use bulkhead::{Bulkhead, BulkheadFull, BulkheadPermit};
pub use classify::{ByTrait, Classifier, Classify, Health, Retryable, Verdict};
pub use error::{Error, ErrorChain};
pub use fallback::{FallbackReason, Served, Source};
pub use metered::{CallMetrics, Metered};
pub use name::Name;
pub use offload::{Offload, OffloadConfig, OffloadError};
pub use outcome::{Outcome, ToOutcome};
pub use policy::{Attempt, Policy, PolicyBuilder};
pub use redact::redact_url;
pub use retry::{Retry, RetryBudget};
pub use timeout::{Elapsed, Timeout, TimeoutExt};
pub use watchdog::LagWatchdog;
