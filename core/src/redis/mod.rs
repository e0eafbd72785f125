//! A resilient handle over a [`fred::clients::Pool`] (feature `redis`).
//!
//! Every command runs through its own [`Policy`] — named `redis.<command>`, bounded,
//! metered, retried only when idempotent — and every policy shares one
//! [`CircuitBreaker`] for the Redis target. Each attempt's deadline is handed *into*
//! fred (`Options { timeout, fail_fast, max_attempts: 1 }`), slightly before stayfast's
//! own timer, so a command fred has not written yet when time runs out is dropped,
//! never sent after the caller gave up.
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

mod classify;
mod config;
mod events;
mod gauges;

use std::{fmt, future::Future, sync::Arc, time::Duration};

use fred::{
    clients::{Pipeline, Pool},
    error::Error as FredError,
    interfaces::{ClientLike, HashesInterface, KeysInterface, ListInterface, SetsInterface},
    prelude::{Builder, Config, Expiration, ReconnectPolicy},
    types::{
        ClusterHash, CustomCommand, FromValue, Key, Map, MultipleKeys, MultipleValues, Value,
        config::{Options, UnresponsiveConfig},
    },
};

pub use self::config::{OperationTimeouts, RedisConfig};
use self::gauges::InFlight;
use crate::{
    Attempt, CallMetrics, CircuitBreaker, Error, ErrorChain, Name, Outcome, Policy, backstop::Backstop,
    breaker::State, config::ConfigError, telemetry::DEFAULT_PREFIX,
};
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

/// A command the handle runs, with its own policy (`redis.<name>`).
///
/// ```
/// use stayfast_core::redis::Command;
/// assert_eq!(Command::Hgetall.name(), "redis.hgetall");
/// assert!(Command::Get.is_idempotent() && !Command::Rpush.is_idempotent());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// GET
    Get,
    /// SET
    Set,
    /// DEL
    Del,
    /// EXISTS
    Exists,
    /// EXPIRE
    Expire,
    /// INCR
    Incr,
    /// HGETALL
    Hgetall,
    /// HSET
    Hset,
    /// HDEL
    Hdel,
    /// LRANGE
    Lrange,
    /// RPUSH
    Rpush,
    /// LTRIM
    Ltrim,
    /// SADD
    Sadd,
    /// SREM
    Srem,
    /// SMEMBERS
    Smembers,
    /// SINTER
    Sinter,
    /// SCAN, every page
    Scan,
    /// A pipeline
    Pipeline,
    /// EVAL
    Eval,
    /// Anything else, run through [`Redis::run`]
    Other,
}

impl Command {
    const ALL: [Command; 20] = [
        Command::Get,
        Command::Set,
        Command::Del,
        Command::Exists,
        Command::Expire,
        Command::Incr,
        Command::Hgetall,
        Command::Hset,
        Command::Hdel,
        Command::Lrange,
        Command::Rpush,
        Command::Ltrim,
        Command::Sadd,
        Command::Srem,
        Command::Smembers,
        Command::Sinter,
        Command::Scan,
        Command::Pipeline,
        Command::Eval,
        Command::Other,
    ];

    /// The policy's operation name (a metric label).
    ///
    /// ```
    /// use stayfast_core::redis::Command;
    /// assert_eq!(Command::Scan.name(), "redis.scan"); // the `operation` label of its metrics
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Command::Get => "redis.get",
            Command::Set => "redis.set",
            Command::Del => "redis.del",
            Command::Exists => "redis.exists",
            Command::Expire => "redis.expire",
            Command::Incr => "redis.incr",
            Command::Hgetall => "redis.hgetall",
            Command::Hset => "redis.hset",
            Command::Hdel => "redis.hdel",
            Command::Lrange => "redis.lrange",
            Command::Rpush => "redis.rpush",
            Command::Ltrim => "redis.ltrim",
            Command::Sadd => "redis.sadd",
            Command::Srem => "redis.srem",
            Command::Smembers => "redis.smembers",
            Command::Sinter => "redis.sinter",
            Command::Scan => "redis.scan",
            Command::Pipeline => "redis.pipeline",
            Command::Eval => "redis.eval",
            Command::Other => "redis.other",
        }
    }

    /// Whether running it twice is harmless, so an attempt with an unknown outcome may
    /// be retried. Writes that add (RPUSH, INCR) are not; writes that set a state (SET,
    /// DEL, HSET, SADD…) are; pipelines, scripts and other commands are assumed not.
    ///
    /// ```
    /// use stayfast_core::redis::Command;
    /// assert!(Command::Set.is_idempotent()); // setting a value twice is harmless: retried
    /// assert!(!Command::Incr.is_idempotent()); // counting twice is not: `OutcomeUnknown` instead
    /// ```
    pub const fn is_idempotent(self) -> bool {
        !matches!(
            self,
            Command::Incr | Command::Rpush | Command::Pipeline | Command::Eval | Command::Other
        )
    }

    /// Whether every attempt of the command hands its deadline to fred, which then ends
    /// it in time by itself: stayfast's own bound is only a safety net, kept by the
    /// handle's [`Backstop`] instead of a timer per attempt. Not for SCAN (many pages,
    /// each handed the time left, the whole bounded by stayfast's timer), pipelines (the caller's build step runs
    /// outside fred) and [`Redis::run`]'s other commands.
    const fn deadline_in_fred(self) -> bool {
        !matches!(self, Command::Scan | Command::Pipeline | Command::Other)
    }

    fn timeout(self, config: &RedisConfig) -> Duration {
        let o = &config.operations;
        let specific = match self {
            Command::Get => o.get,
            Command::Set => o.set,
            Command::Hgetall => o.hgetall,
            Command::Pipeline => o.pipeline,
            Command::Scan => o.scan,
            _ => None,
        };
        specific.unwrap_or(config.command_timeout)
    }
}

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
    in_flight: InFlight,
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

/// The fred options for one attempt: its deadline, a little early; fail fast while
/// disconnected; one attempt inside fred.
fn options(attempt: &Attempt, margin: Duration) -> Options {
    // NOTE: the time allotted, not the time remaining: the options are made as the
    // attempt starts, and a clock read per command is measurable (the Redis benchmark).
    options_within(attempt.allotted(), margin)
}

/// The fred options for a command that must end within `left` (none: unbounded).
fn options_within(left: Option<Duration>, margin: Duration) -> Options {
    let timeout = left.map(|left| {
        left.checked_sub(margin)
            .filter(|t| !t.is_zero())
            .unwrap_or(Duration::from_millis(1))
    });
    Options {
        timeout,
        fail_fast: true,
        max_attempts: Some(1),
        ..Options::default()
    }
}

impl Redis {
    /// Builds the pool and starts connecting in the background. Redis being down is not
    /// an error: the handle starts degraded (calls fail fast, the breaker opens) and
    /// reconnects by itself.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an invalid configuration — never echoing the URL.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = RedisConfig::default();
    /// config.url = "redis://127.0.0.1:6379".into();
    /// let redis = Redis::connect(&config).await?; // `Ok` even while Redis is down
    /// config.url = "http://127.0.0.1:6379".into();
    /// assert_eq!(Redis::connect(&config).await.unwrap_err().field(), "url");
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: &RedisConfig) -> Result<Self, ConfigError> {
        Self::connect_named(config, "redis.main", DEFAULT_PREFIX).await
    }

    /// As [`connect`](Self::connect), naming the target (the `target` label) and the
    /// metric prefix.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = RedisConfig::default();
    /// config.url = "redis://127.0.0.1:6379".into();
    /// let cache = Redis::connect_named(&config, "redis.cache", "myapp").await?;
    /// assert_eq!(cache.breaker().target().as_str(), "redis.cache"); // metrics: `myapp_*`
    /// # Ok(()) }
    /// ```
    pub async fn connect_named(
        config: &RedisConfig,
        target: &'static str,
        prefix: &str,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut fred_config = Config::from_url(&config.url)
            .map_err(|e| ConfigError::new("url", format!("not a valid Redis URL ({:?})", e.kind())))?;
        // NOTE: `false` at the client level: with `true`, a failed first connection ends
        // fred's connection task for good (no reconnect), and a service started while
        // Redis is down would never recover. Every command sets `fail_fast` itself.
        fred_config.fail_fast = false;
        if let Some(password) = &config.password {
            fred_config.password = Some(password.clone());
        }
        let mut builder = Builder::from_config(fred_config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = config.connect_timeout;
                c.internal_command_timeout = config.connect_timeout;
                c.max_command_attempts = 1;
                c.max_command_buffer_len = config.max_command_buffer as usize;
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(config.unresponsive_timeout),
                    interval: config.health_check_interval,
                };
                c.tcp.nodelay = Some(config.tcp_nodelay);
            })
            .with_performance_config(|p| p.default_command_timeout = config.command_timeout)
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                millis(config.reconnect_min_delay),
                millis(config.reconnect_max_delay),
                2,
            ));
        let pool = builder
            .build_pool(config.pool_size as usize)
            .map_err(|e| ConfigError::new("redis", format!("cannot build the pool ({:?})", e.kind())))?;
        pool.prefer_connected(true);
        let breaker = CircuitBreaker::builder(target)
            .config(&config.breaker)
            .metrics_prefix(prefix)
            .on_transition(reset_on_open(pool.clone(), config.connect_timeout))
            .build()
            .map_err(|e| e.prefixed("breaker"))?;
        // One sweeper for the safety net of every command whose deadline fred holds,
        // ending a call at most one margin after its deadline if fred did not.
        let (backstop, sweeper) = Backstop::start(config.deadline_margin);
        let policies = Command::ALL
            .iter()
            .map(|&command| {
                // The bound applies to each attempt *and* to the call: a retry happens
                // only if time is left.
                let bound = command.timeout(config);
                let mut builder = Policy::builder(command.name())
                    .target(target)
                    .timeout(bound)
                    .deadline(bound)
                    .idempotent(command.is_idempotent())
                    .breaker(breaker.clone())
                    .metrics_prefix(prefix)
                    // Batched: two cores recording one series per command cost more
                    // than the rest of the wrapper (see `metered::batch`).
                    .batch_metrics();
                if command.is_idempotent() {
                    builder = builder.retry(&config.retry);
                }
                if command.deadline_in_fred() {
                    builder = builder.backstop(backstop.clone());
                }
                builder.build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let held = Command::ALL
            .iter()
            .map(|&command| CallMetrics::with_prefix(prefix, &command.into(), &Name::new_static(target)))
            .collect();
        // Connect in the background: a Redis that is down must not stop the service.
        let _connection_tasks = pool.connect_pool();
        if tokio::time::timeout(config.connect_timeout, pool.wait_for_connect())
            .await
            .is_err()
        {
            tracing::warn!(
                target: "stayfast::redis", redis = %target, url = %config.redacted_url(),
                "Redis is not reachable; starting degraded and reconnecting in the background"
            );
        }
        let in_flight = InFlight::default();
        let mut tasks = vec![
            tokio::spawn(gauges::sample(
                pool.clone(),
                in_flight.clone(),
                target,
                prefix.to_owned(),
            ))
            .abort_handle(),
        ];
        if config.open_on_disconnect {
            tasks.extend(events::trip_on_disconnect(&pool, &breaker));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                breaker,
                policies,
                held,
                margin: config.deadline_margin,
                reconnect_max_delay: config.reconnect_max_delay,
                url: config.redacted_url(),
                in_flight,
                tasks,
                sweeper,
            }),
        })
    }

    /// Closes every connection of the pool (QUIT) and stops reconnecting: later calls
    /// on any clone fail fast. For an orderly shutdown; dropping the last clone also
    /// ends the connections, without a QUIT.
    ///
    /// # Cancellation
    ///
    /// Dropping the future may leave some connections open until the last clone drops.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = Redis::connect(&RedisConfig::default()).await?;
    /// redis.close().await;
    /// assert!(redis.get::<Option<String>>("k").await.is_err()); // closed: fails fast
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        // The listeners first: closing is not an outage.
        self.inner.tasks.iter().for_each(tokio::task::AbortHandle::abort);
        if let Err(e) = self.inner.pool.quit().await {
            tracing::debug!(target: "stayfast::redis", error = %ErrorChain(&e), "QUIT failed while closing");
        }
    }

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

    fn policy(&self, command: Command) -> &Policy {
        &self.inner.policies[command as usize]
    }

    /// Holds back the breaker's half-open probe while no connection of the pool is up.
    ///
    /// fred fails a command at once, unsent, while its client is not connected (the
    /// `fail_fast` option): as a probe, it asks Redis nothing. Counted as a failed probe,
    /// it re-opened the circuit with a grown break (1 s, 2 s, 4 s… up to `max_open_for`)
    /// while fred was still reconnecting, and a Redis restarted meanwhile was not used
    /// again until that break had passed (issue #12 item 19: about 25 s). Instead the
    /// call is rejected as the open circuit would reject it and the breaker is left
    /// open: the probe goes with the first call after fred has reconnected, and a
    /// restarted Redis serves again within fred's reconnect delay. Only an attempted
    /// probe that fails (a timeout, an error reply) grows the break.
    #[inline]
    fn hold_probe_while_unconnected(&self, command: Command) -> Result<(), RedisError> {
        if self.inner.breaker.state() == State::Closed {
            return Ok(()); // the hot path: one atomic load
        }
        self.hold_probe_slow(command)
    }

    #[cold]
    #[inline(never)]
    fn hold_probe_slow(&self, command: Command) -> Result<(), RedisError> {
        let breaker = &self.inner.breaker;
        if !breaker.probe_due() || self.inner.pool.clients().iter().any(ClientLike::is_connected) {
            return Ok(());
        }
        // Counted as the policy counts the calls an open circuit rejects.
        self.inner.held[command as usize].record(Outcome::Rejected, Duration::ZERO);
        Err(Error::CircuitOpen {
            target: breaker.target().clone(),
            retry_after: self.inner.reconnect_max_delay,
        })
    }

    /// Runs `op` under `command`'s policy, handing it a pool whose commands carry the
    /// attempt's deadline. Use it for commands the handle does not wrap.
    ///
    /// Methods that ignore the options (`eval`, `pipeline()`, `scan`, transactions —
    /// fred's `WithOptions` falls through to the bare client for them) must not be called
    /// on the handed pool: use [`eval`](Self::eval), [`pipeline`](Self::pipeline) and
    /// [`scan_keys`](Self::scan_keys).
    ///
    /// # Errors
    ///
    /// The policy's [`Error`], around fred's errors; [`Error::CircuitOpen`] also while
    /// the circuit's break is over but no connection is up (see the [module docs](self)).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// use fred::interfaces::KeysInterface;
    /// use stayfast_core::redis::Command;
    /// // INCR, which the handle does not wrap, under the (non-idempotent) `redis.other` policy:
    /// let visits: i64 = redis.run(Command::Other, |c| async move { c.incr("visits").await }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<T, F, Fut>(&self, command: Command, mut op: F) -> Result<T, RedisError>
    where
        F: FnMut(fred::clients::WithOptions<Pool>) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        let (pool, margin) = (&self.inner.pool, self.inner.margin);
        // NOTE: counted per call, around the policy, not per attempt inside it: wrapping
        // every attempt's future in one more async block cost 5–8 % of GET throughput
        // on the Redis benchmark; this guard is a local of this future and cost nothing
        // measurable.
        self.hold_probe_while_unconnected(command)?;
        let _counted = self.inner.in_flight.enter();
        self.policy(command)
            .call_borrowed(|attempt| op(pool.with_options(&options(&attempt, margin))))
            .await
    }

    /// `GET key`.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let name: Option<String> = redis.get("user:1:name").await?; // `None`: no such key
    /// let visits: Option<i64> = redis.get("visits").await?; // converted by fred's `FromValue`
    /// # Ok(()) }
    /// ```
    pub async fn get<R: FromValue>(&self, key: impl Into<Key>) -> Result<R, RedisError> {
        let key = key.into();
        self.run(Command::Get, |c| {
            let key = key.clone();
            async move { c.get(key).await }
        })
        .await
    }

    /// `SET key value [EX seconds]`.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// redis.set("session:42", "alice", Some(3600)).await?; // expires in an hour
    /// redis.set("mode", "fast", None).await?; // never expires
    /// # Ok(()) }
    /// ```
    pub async fn set(
        &self,
        key: impl Into<Key>,
        value: impl Into<Value>,
        expire_secs: Option<i64>,
    ) -> Result<(), RedisError> {
        let (key, value) = (key.into(), value.into());
        self.run(Command::Set, |c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.set::<(), _, _>(key, value, expire_secs.map(Expiration::EX), None, false)
                    .await
            }
        })
        .await
    }

    /// `DEL keys…`; how many were removed.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let removed = redis.del(vec!["session:42", "session:43"]).await?;
    /// assert!(removed <= 2); // keys that did not exist are not counted
    /// # Ok(()) }
    /// ```
    pub async fn del(&self, keys: impl Into<MultipleKeys>) -> Result<i64, RedisError> {
        let keys = keys.into();
        self.run(Command::Del, |c| {
            let keys = keys.clone();
            async move { c.del(keys).await }
        })
        .await
    }

    /// `EXPIRE key seconds`; whether the key exists.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// if !redis.expire("session:42", 60).await? {
    ///     // The key was already gone: nothing to extend.
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn expire(&self, key: impl Into<Key>, seconds: i64) -> Result<bool, RedisError> {
        let key = key.into();
        self.run(Command::Expire, |c| {
            let key = key.clone();
            async move { c.expire(key, seconds, None).await }
        })
        .await
    }

    /// `HGETALL key`.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// use std::collections::HashMap;
    /// redis.hset("user:1", [("name", "alice"), ("plan", "pro")]).await?;
    /// let user: HashMap<String, String> = redis.hgetall("user:1").await?; // empty if missing
    /// assert_eq!(user["plan"], "pro");
    /// # Ok(()) }
    /// ```
    pub async fn hgetall<R: FromValue>(&self, key: impl Into<Key>) -> Result<R, RedisError> {
        let key = key.into();
        self.run(Command::Hgetall, |c| {
            let key = key.clone();
            async move { c.hgetall(key).await }
        })
        .await
    }

    /// `HSET key field value…`; how many fields were added.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// redis.hset("user:1", [("name", "alice"), ("plan", "pro")]).await?;
    /// let added = redis.hset("user:1", [("plan", "team")]).await?;
    /// assert_eq!(added, 0); // an existing field is updated, not added
    /// # Ok(()) }
    /// ```
    pub async fn hset<F>(&self, key: impl Into<Key>, fields: F) -> Result<i64, RedisError>
    where
        F: TryInto<Map>,
        F::Error: Into<FredError>,
    {
        let key = key.into();
        let fields = convert(Command::Hset, fields)?;
        self.run(Command::Hset, |c| {
            let (key, fields) = (key.clone(), fields.clone());
            async move { c.hset(key, fields).await }
        })
        .await
    }

    /// `RPUSH key values…`; the list's new length. Not idempotent: an attempt that timed
    /// out is `OutcomeUnknown`, never retried.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// match redis.rpush("jobs", vec!["job-1"]).await {
    ///     Ok(len) => println!("{len} jobs queued"),
    ///     Err(e) if e.is_outcome_unknown() => { /* maybe queued: do not push it again blindly */ }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn rpush<V>(&self, key: impl Into<Key>, values: V) -> Result<i64, RedisError>
    where
        V: TryInto<MultipleValues>,
        V::Error: Into<FredError>,
    {
        let key = key.into();
        let values = convert(Command::Rpush, values)?;
        self.run(Command::Rpush, |c| {
            let (key, values) = (key.clone(), values.clone());
            async move { c.rpush(key, values).await }
        })
        .await
    }

    /// `LRANGE key start stop`.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// redis.rpush("l", vec!["x", "y", "z"]).await?;
    /// let all: Vec<String> = redis.lrange("l", 0, -1).await?; // -1: the last element
    /// let last_two: Vec<String> = redis.lrange("l", -2, -1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn lrange<R: FromValue>(
        &self,
        key: impl Into<Key>,
        start: i64,
        stop: i64,
    ) -> Result<R, RedisError> {
        let key = key.into();
        self.run(Command::Lrange, |c| {
            let key = key.clone();
            async move { c.lrange(key, start, stop).await }
        })
        .await
    }

    /// `SADD key members…`; how many were added.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// # redis.del("tags").await?;
    /// assert_eq!(redis.sadd("tags", vec!["a", "b"]).await?, 2);
    /// assert_eq!(redis.sadd("tags", vec!["b", "c"]).await?, 1); // "b" was already a member
    /// # Ok(()) }
    /// ```
    pub async fn sadd<V>(&self, key: impl Into<Key>, members: V) -> Result<i64, RedisError>
    where
        V: TryInto<MultipleValues>,
        V::Error: Into<FredError>,
    {
        let key = key.into();
        let members = convert(Command::Sadd, members)?;
        self.run(Command::Sadd, |c| {
            let (key, members) = (key.clone(), members.clone());
            async move { c.sadd(key, members).await }
        })
        .await
    }

    /// `SINTER keys…`.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// redis.sadd("{tags}:1", vec!["a", "b"]).await?;
    /// redis.sadd("{tags}:2", vec!["b", "c"]).await?;
    /// let both: Vec<String> = redis.sinter(vec!["{tags}:1", "{tags}:2"]).await?;
    /// assert_eq!(both, ["b"]);
    /// # Ok(()) }
    /// ```
    pub async fn sinter<R: FromValue>(&self, keys: impl Into<MultipleKeys>) -> Result<R, RedisError> {
        let keys = keys.into();
        self.run(Command::Sinter, |c| {
            let keys = keys.clone();
            async move { c.sinter(keys).await }
        })
        .await
    }

    /// `EVAL script numkeys keys… args…`, sent as a custom command so the attempt's
    /// deadline applies (fred's `WithOptions` drops it for its Lua interface). Not
    /// idempotent.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    /// let visits: i64 = redis.eval(script, vec!["visits".into()], vec!["5".into()]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn eval<R: FromValue>(
        &self,
        script: &str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, RedisError> {
        let mut argv: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
        argv.push(script.into());
        argv.push((keys.len() as i64).into());
        argv.extend(keys.into_iter().map(Value::from));
        argv.extend(args.into_iter().map(Value::from));
        self.run(Command::Eval, |c| {
            let argv = argv.clone();
            async move {
                let cmd = CustomCommand::new_static("EVAL", ClusterHash::Random, false);
                c.custom(cmd, argv).await
            }
        })
        .await
    }

    /// Sends the commands `build` queues on the pipeline in one round trip and returns
    /// every reply. The deadline is set on the pipeline itself (`pipeline()
    /// .with_options`), the form fred honours. Not idempotent.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// use fred::interfaces::KeysInterface;
    /// let (a, b): (Option<String>, Option<String>) = redis
    ///     .pipeline(|p| async move {
    ///         let () = p.get("a").await?; // queued, not sent yet
    ///         let () = p.get("b").await?;
    ///         Ok(p)
    ///     })
    ///     .await?; // one round trip, every reply
    /// # Ok(()) }
    /// ```
    pub async fn pipeline<R, F, Fut>(&self, mut build: F) -> Result<R, RedisError>
    where
        R: FromValue,
        F: FnMut(PipelineWithDeadline) -> Fut,
        Fut: Future<Output = Result<PipelineWithDeadline, FredError>>,
    {
        let (pool, margin) = (&self.inner.pool, self.inner.margin);
        self.hold_probe_while_unconnected(Command::Pipeline)?;
        // One round trip: counted as one command in flight, however many it holds.
        let _counted = self.inner.in_flight.enter();
        self.policy(Command::Pipeline)
            .call_borrowed(|attempt| {
                // NOTE: `pipeline().with_options(..)`, not `with_options(..).pipeline()`:
                // the latter derefs to the bare client and loses the deadline.
                let pipeline = pool
                    .next_connected()
                    .pipeline()
                    .with_options(&options(&attempt, margin));
                let queued = build(pipeline);
                async move { queued.await?.all().await }
            })
            .await
    }

    /// Every key matching `pattern` (a SCAN glob: escape user input), `count` per page,
    /// at most `limit` keys. The whole scan is bounded by `operations.scan` (stayfast's
    /// timer), and each page is one SCAN command carrying the time left as its fred
    /// deadline. Pages are requested one at a time, cursor by cursor, only while the
    /// call runs: a scan that reaches `limit`, runs out of time or is dropped sends no
    /// further page (fred's `scan_buffered` kept paging after its receiver was gone).
    /// Keys that are not UTF-8 are skipped.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the scan: at most the page in flight is still run by
    /// the server, and only if fred had not dropped it at its deadline.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let sessions = redis.scan_keys("session:*", 100, 10_000).await?;
    /// assert!(sessions.len() <= 10_000); // stops at `limit`
    /// # Ok(()) }
    /// ```
    pub async fn scan_keys(
        &self,
        pattern: &str,
        count: u32,
        limit: usize,
    ) -> Result<Vec<String>, RedisError> {
        let (pool, margin) = (&self.inner.pool, self.inner.margin);
        self.hold_probe_while_unconnected(Command::Scan)?;
        // One page outstanding at a time: the whole scan counts as one command.
        let _counted = self.inner.in_flight.enter();
        self.policy(Command::Scan)
            .call_borrowed(|attempt| async move {
                let mut keys = Vec::new();
                let mut cursor = String::from("0");
                loop {
                    // Each page gets the time left, so fred drops a page it could not
                    // write in time rather than run it after the caller gave up.
                    let client = pool.with_options(&options_within(attempt.remaining(), margin));
                    let (next, page): (String, Vec<Key>) =
                        client.scan_page(cursor, pattern, Some(count), None).await?;
                    keys.extend(page.into_iter().filter_map(Key::into_string));
                    if keys.len() >= limit {
                        keys.truncate(limit);
                        break;
                    }
                    if next == "0" {
                        break; // the server's cursor came back to its start: done
                    }
                    cursor = next;
                }
                Ok(keys)
            })
            .await
    }
}

/// When the breaker opens, reset every connection of the pool in the background.
///
/// A connection whose commands timed out may still hold their entries in fred's
/// in-flight queue; if the path lost bytes without closing (a broken proxy, a
/// black-holing middlebox), every later reply would be matched to the wrong command — a
/// wrong value returned as a success. Reconnecting discards that queue, and the open
/// breaker keeps callers away meanwhile. A healthy TCP path cannot lose bytes silently:
/// then the reset only costs a reconnect.
fn reset_on_open(
    pool: Pool,
    bound: Duration,
) -> impl Fn(&crate::breaker::Transition) + Send + Sync + 'static {
    let runtime = tokio::runtime::Handle::try_current().ok();
    move |transition| {
        if let (crate::breaker::State::Open, Some(runtime)) = (transition.to, &runtime) {
            let pool = pool.clone();
            runtime.spawn(async move {
                let _ = tokio::time::timeout(bound, pool.force_reconnection()).await;
            });
        }
    }
}

/// Converts a command's arguments once, before any attempt; a value that cannot be
/// sent is the caller's error, reported without touching Redis.
fn convert<T, V>(command: Command, value: V) -> Result<T, RedisError>
where
    V: TryInto<T>,
    V::Error: Into<FredError>,
{
    value.try_into().map_err(|e| Error::Inner {
        operation: command.into(),
        source: e.into(),
        attempts: 0,
    })
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
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

impl From<Command> for Name {
    fn from(c: Command) -> Self {
        Name::new_static(c.name())
    }
}
