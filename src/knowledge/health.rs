//! [`KnowledgeHealth`]: what the store's Redis handle looks like, without I/O.

use stayfast_core::{breaker::State, redis::Redis};

/// What [`KnowledgeStore::health`](super::KnowledgeStore::health) sees, without any I/O.
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
    /// Whether calls can be expected to reach Redis: at least one connection is up and
    /// the breaker does not reject calls.
    pub ok: bool,
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
            breaker,
            connected,
            pool_size,
        }
    }
}
