//! **stayfast** keeps async services responsive when Redis or the disk misbehaves.
//!
//! Every call to a dependency gets a deadline, a circuit breaker shared by all calls to
//! that dependency, bounded retries with jittered backoff and a retry budget, an
//! optional concurrency limit, Prometheus metrics and an optional fallback — stacked in
//! one fixed order by a [`Policy`]:
//!
//! ```text
//! Metered → Fallback → Deadline → Retry → Bulkhead → CircuitBreaker → Timeout → operation
//! ```
//!
//! This crate is the facade: it re-exports [`stayfast-core`](stayfast_core)'s wrappers
//! and assembles them into what a service adds: [`Stayfast::from_settings`] (telemetry,
//! one Redis pool with its breaker, one background spawner, the stores), the
//! [`settings`] (defaults, `stayfast.toml`, `STAYFAST_*`), the Prometheus exporter
//! ([`telemetry`]), the [`knowledge`] and [`transcripts`] stores, the [`cache`], and a
//! [`blocking`] API for code that is not async yet.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use stayfast::{CircuitBreaker, Error, Policy, config::{BreakerConfig, RetryConfig}};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let breaker = CircuitBreaker::new("redis.main", &BreakerConfig::default()).unwrap();
//! let get = Policy::builder("redis.get")
//!     .timeout(Duration::from_millis(250))
//!     .retry(&RetryConfig::default())
//!     .idempotent(true)
//!     .breaker(breaker)
//!     .build()
//!     .unwrap();
//!
//! // A dependency that never answers: the call returns after its deadline instead of
//! // hanging the request, and the breaker counts every attempt.
//! let hung = get.call(|| std::future::pending::<Result<String, std::io::Error>>()).await;
//! assert!(matches!(hung, Err(Error::Timeout { .. })));
//! # }
//! ```

#![forbid(unsafe_code)]

#[doc(inline)]
pub use stayfast_core::*;

mod app;
pub mod blocking;
pub mod cache;
mod error;
pub mod knowledge;
pub mod settings;
pub mod telemetry;
pub mod transcripts;

pub use app::{StartError, Stayfast};
pub use cache::Cache;
pub use error::StoreError;
pub use knowledge::KnowledgeStore;
pub use settings::{Settings, SettingsError};
pub use transcripts::TranscriptStore;

/// The `serde_json` this crate is built with: [`KnowledgeStore::store_fact`] takes a
/// [`serde_json::Value`] as a fact's metadata, so an application needs no dependency of
/// its own to build one.
///
/// ```
/// let metadata = stayfast::serde_json::json!({"source": "faq"});
/// assert_eq!(metadata["source"], "faq");
/// ```
pub use serde_json;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
