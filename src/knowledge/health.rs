//! [`KnowledgeHealth`]: what the store's Redis handle looks like: read from the handle
//! without I/O, or checked with a PING.

use std::time::Duration;

use stayfast_core::{breaker::State, redis::Redis};
use tokio::time::Instant;

/// What [`KnowledgeStore::health`](super::KnowledgeStore::health) sees without any
/// I/O, or [`KnowledgeStore::check_health`](super::KnowledgeStore::check_health) with a
/// PING.
///
/// ```no_run
/// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
/// # use stayfast::redis::{Redis, RedisConfig};
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
/// let health = store.health();
/// if !health.ok {
///     eprintln!("knowledge degraded: breaker {:?}, {}/{} connections",
///         health.breaker, health.connected, health.pool_size);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnowledgeHealth {
    /// Whether calls can be expected to reach Redis. From
    /// [`check_health`](super::KnowledgeStore::check_health): a PING was answered in
    /// time. From [`health`](super::KnowledgeStore::health): at least one connection is
    /// up and the breaker does not reject calls.
    pub ok: bool,
    /// How long the PING took, when it was answered in time (`None` from
    /// [`health`](super::KnowledgeStore::health), which sends none).
    pub ping: Option<Duration>,
    /// The Redis breaker's state.
    pub breaker: State,
    /// Connected clients of the pool.
    pub connected: usize,
    /// The pool's size.
    pub pool_size: usize,
}

impl KnowledgeHealth {
    pub(super) fn of(redis: &Redis) -> Self {
        let (connected, pool_size) = redis.connected();
        let breaker = redis.breaker().state();
        Self {
            // Half-open counts as ok: probes are being let through.
            ok: connected > 0 && !matches!(breaker, State::Open | State::ForcedOpen),
            ping: None,
            breaker,
            connected,
            pool_size,
        }
    }

    /// PINGs Redis under the handle's `redis.other` policy, bounded by `timeout`.
    pub(super) async fn checked(redis: &Redis, timeout: Duration) -> Self {
        // NOTE: fred reports a connection as connected until it notices the loss, and
        // through the reconnect delay after a killed server; a server stopped (SIGSTOP)
        // or a path that drops packets looks connected indefinitely. Only an answer
        // says Redis is there.
        let started = Instant::now();
        let ping = redis.ping();
        let answered = matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)));
        let ping = answered.then(|| started.elapsed());
        let (connected, pool_size) = redis.connected();
        Self {
            ok: answered,
            ping,
            breaker: redis.breaker().state(),
            connected,
            pool_size,
        }
    }
}
