//! A resilient handle over a [`fred::clients::Pool`] (feature `redis`).
//!
//! Every command runs through its own [`Policy`] — named `redis.<command>`, bounded,
//! metered, retried only when idempotent — and every policy shares one
//! [`CircuitBreaker`] for the Redis target. Each write attempt's deadline is handed
//! *into* fred (`Options { timeout, fail_fast, max_attempts: 1 }`), slightly before
//! stayfast's own bound, so a write fred has not sent yet when time runs out is dropped,
//! never sent after the caller gave up. A read carries no deadline into fred — sent
//! late, it changes nothing, and fred's timer per command cost as much as the rest of
//! the handle — and ends by stayfast's bound, at most one `deadline_margin` after its
//! deadline. Every command of a kind goes down one connection, pipelined with the
//! other callers' (reads on their own, so a server holding writes still answers them).
//!
//! The breaker's half-open probe waits for a connection: while the circuit is open and
//! no connection of the pool is up (fred still reconnecting), a call after the break is
//! rejected as [`Error::CircuitOpen`] rather than sent as a probe fred would fail unsent
//! — which would grow the break while Redis may already be back. The first call after
//! fred has reconnected is the probe, so a restarted Redis serves again within fred's
//! reconnect delay, not after a grown break.
//!
//! Every second the handle samples its pool into the saturation gauges (per `target`):
//! `stayfast_redis_pool_size`, `stayfast_redis_connections{state}`,
//! `stayfast_redis_commands_in_flight` ([`Redis::commands_in_flight`]) and
//! `stayfast_redis_commands_buffered` ([`Redis::commands_buffered`]). A call costs the
//! gauges one relaxed atomic increment and decrement, never a metrics update.
//!
//! Where things are: the handle and its accessors here; building it in `connect.rs`;
//! the `run` path every command takes in `run.rs`; the command catalogue ([`Command`]:
//! names, idempotency, bounds) in `command.rs`; the typed commands in `commands.rs`,
//! `pipeline.rs`, `batch.rs` and `scan.rs`; scripts run by their SHA1 ([`Script`]) in
//! `script.rs` and `evalsha.rs`; what the stores ask of an error
//! ([`RedisError::is_wrong_type`]) in `error.rs`; TLS ([`RedisTls`]) in `tls.rs`; why
//! Redis is unreachable ([`Redis::unreachable_reason`]), put into the errors of commands
//! that found no connection, in `unreachable.rs`.

mod batch;
mod classify;
mod command;
mod commands;
mod config;
mod connect;
mod error;
mod evalsha;
mod events;
mod gauges;
mod lanes;
mod pipeline;
mod run;
mod scan;
mod script;
mod slots;
mod tls;
mod unreachable;
mod value;

use std::{
    fmt,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use fred::{
    clients::{Pipeline, Pool},
    error::Error as FredError,
    interfaces::ClientLike,
};

use self::gauges::InFlight;
pub use self::{
    batch::Batch,
    command::Command,
    config::{OperationTimeouts, RedisConfig},
    script::Script,
    slots::{CLUSTER_SLOTS, key_slot},
    tls::RedisTls,
    value::RedisValue,
};
use crate::{CallMetrics, CircuitBreaker, Error, Policy};
/// The fred version this handle is built on, for its types (`Value`, `Map`, the
/// command traits a [`Redis::run`] closure calls) without a second dependency to keep
/// in step.
///
/// ```
/// use stayfast_core::redis::fred::types::Value;
/// assert_eq!(Value::from(1), Value::Integer(1));
/// ```
pub use fred;

/// The error type of every Redis call: stayfast's [`Error`] around fred's.
///
/// ```
/// use stayfast_core::redis::{Redis, RedisError};
/// async fn user_name(redis: &Redis, id: u64) -> Result<Option<String>, RedisError> {
///     redis.get(format!("user:{id}:name")).await // Redis's error, or a timeout, an open circuit…
/// }
/// ```
pub type RedisError = Error<FredError>;

/// The pipeline [`Redis::pipeline`] hands out: its commands carry the attempt's deadline.
///
/// ```
/// use fred::interfaces::KeysInterface;
/// use stayfast_core::redis::PipelineWithDeadline;
/// async fn queue(p: PipelineWithDeadline) -> Result<PipelineWithDeadline, fred::error::Error> {
///     let () = p.get("a").await?; // only queued: replies come back from `Redis::pipeline`
///     Ok(p)
/// }
/// ```
pub type PipelineWithDeadline = fred::clients::WithOptions<Pipeline<fred::clients::Client>>;

/// A resilient handle over a fred pool. Cheap to clone. See the [module docs](self).
///
/// # Examples
///
/// ```no_run
/// use stayfast_core::redis::{Redis, RedisConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = RedisConfig::default();
/// config.url = "redis://127.0.0.1:6390".into();
/// let redis = Redis::connect(&config).await?;   // degraded, not failed, if Redis is down
/// redis.set("greeting", "hello", None).await?;
/// let v: Option<String> = redis.get("greeting").await?;
/// assert_eq!(v.as_deref(), Some("hello"));
/// # Ok(()) }
/// ```
///
/// # Cancellation
///
/// Dropping a call's future abandons it: a command fred has not written yet is dropped
/// when its deadline passes; one already written may still be applied by the server.
/// A write whose attempt timed out ends in [`Error::OutcomeUnknown`], never "not
/// applied".
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The pool's connections with a read's options (`run.rs`), made once, in the
    /// pool's order: a read the handle wraps borrows one, where `with_options` per call
    /// cloned the client — a reference count every caller's thread writes.
    readers: Box<[fred::clients::WithOptions<fred::clients::Client>]>,
    /// Which connection each command goes to (`lanes.rs`).
    lanes: lanes::Lanes,
    breaker: CircuitBreaker,
    policies: Vec<Policy>,
    /// Each command's call metrics (the series its policy writes), for the calls the
    /// handle rejects itself while it holds the probe back.
    held: Vec<CallMetrics>,
    margin: Duration,
    /// fred's longest reconnect delay: when a probe held back for want of a connection
    /// may be tried again at the latest.
    reconnect_max_delay: Duration,
    url: String,
    /// The last connection error, for the errors of commands that found no connection.
    unreachable: unreachable::LastConnectionError,
    in_flight: InFlight,
    /// Set once Redis refused `EVALSHA` to this handle's ACL user (`NOPERM`): scripts
    /// are then sent whole (`EVAL`) from the start (`evalsha.rs`).
    evalsha_refused: AtomicBool,
    /// The background tasks: the gauge sampler and the disconnect listeners.
    tasks: Vec<tokio::task::AbortHandle>,
    /// The safety net's sweeper: kept after `close` too, until the last clone drops.
    sweeper: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::AbortHandle::abort);
        self.sweeper.abort();
    }
}

impl Redis {
    /// The breaker shared by every command.
    ///
    /// ```no_run
    /// # use stayfast_core::breaker::State;
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// if redis.breaker().state() == State::Open {
    ///     // Redis is failing: every call fails fast; serve something else meanwhile.
    /// }
    /// # Ok(()) }
    /// ```
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// The fred pool, for what the handle does not wrap. Calls made on it directly are
    /// not bounded, counted or guarded by the breaker.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let clients = redis.pool().size();
    /// println!("{clients} connections, each unguarded when used directly");
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Whether this handle talks to a Redis Cluster (a `redis-cluster://` URL), as
    /// opposed to one node or a sentinel deployment.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = RedisConfig::default();
    /// config.url = "redis-cluster://127.0.0.1:7000,127.0.0.1:7001".into();
    /// assert!(Redis::connect(&config).await?.is_cluster());
    /// # Ok(()) }
    /// ```
    pub fn is_cluster(&self) -> bool {
        self.inner.pool.is_clustered()
    }

    /// Connected clients out of the pool's size.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let (up, size) = redis.connected();
    /// if up == 0 {
    ///     eprintln!("Redis down: 0/{size} connections, calls fail fast");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn connected(&self) -> (usize, usize) {
        let clients = self.inner.pool.clients();
        (clients.iter().filter(|c| c.is_connected()).count(), clients.len())
    }

    /// Commands sent through this handle (and its clones) with no reply yet: the value
    /// of `stayfast_redis_commands_in_flight`, read now rather than at the last sample.
    ///
    /// Each call counts from the moment it enters the handle until it returns — its
    /// reply, its error, its timeout — or its future is dropped; a pipeline and a whole
    /// SCAN count as one. The backoff between a call's retries is included; a call the
    /// open breaker refuses passes in an instant. Calls made on [`pool`](Self::pool)
    /// directly are not counted.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// let redis = Redis::connect(&config).await?;
    /// assert_eq!(redis.commands_in_flight(), 0); // nothing sent yet
    /// let (_, size) = redis.connected();
    /// if redis.commands_in_flight() > 8 * size {
    ///     eprintln!("Redis is falling behind: shed optional work");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn commands_in_flight(&self) -> usize {
        self.inner.in_flight.get()
    }

    /// Commands queued inside fred, not yet written to a socket, summed over the pool's
    /// clients (fred's `command_queue_len`): the value of
    /// `stayfast_redis_commands_buffered`, read now.
    ///
    /// Near zero while the connections keep up. It grows when a client's writer is
    /// stuck — a socket whose send buffer is full because the server stopped reading —
    /// and counts every command queued there, whether through this handle or
    /// [`pool`](Self::pool), until fred takes it off the queue (a command whose caller
    /// timed out stays counted until then, and is skipped, never sent).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// let redis = Redis::connect(&config).await?;
    /// if redis.commands_buffered() > 0 {
    ///     eprintln!("commands are waiting to be written: the server is not reading");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn commands_buffered(&self) -> usize {
        gauges::buffered(&self.inner.pool)
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (up, size) = self.connected();
        f.debug_struct("Redis")
            .field("url", &self.inner.url)
            .field("connected", &format_args!("{up}/{size}"))
            .field("breaker", &self.inner.breaker)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}
