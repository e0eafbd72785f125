//! The handle config of the real-server tests (`tests/redis.rs`, `tests/redis_faults.rs`).

use std::time::Duration;

use stayfast_core::redis::RedisConfig;

/// Two connections to `url`; every command (SCAN too) bounded by `timeout_ms`, connects
/// by 500 ms; retries 10–50 ms apart; a breaker that opens after 5 consecutive failures,
/// for 500 ms.
pub fn config(url: &str, timeout_ms: u64) -> RedisConfig {
    let mut c = RedisConfig::default();
    c.url = url.to_owned();
    c.pool_size = 2;
    c.command_timeout = Duration::from_millis(timeout_ms);
    c.connect_timeout = Duration::from_millis(500);
    c.operations.scan = Some(Duration::from_millis(timeout_ms));
    c.retry.min_delay = Duration::from_millis(10);
    c.retry.max_delay = Duration::from_millis(50);
    c.breaker.consecutive_failures = Some(5);
    c.breaker.open_for = Duration::from_millis(500);
    c
}
