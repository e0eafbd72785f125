//! The metrics stayfast-core records: their names, descriptions and histogram buckets.
//!
//! Handles are resolved once, when a [`Policy`](crate::Policy) or
//! [`CircuitBreaker`](crate::CircuitBreaker) is built, from the recorder installed *at
//! that moment*: install your recorder (for example the `stayfast` facade's telemetry,
//! or `metrics-exporter-prometheus`) before building policies. Without a recorder
//! every handle is a no-op. Label values come from names fixed at build time, never
//! from call arguments, so the number of series is bounded by your configuration.
//!
//! | name (default prefix) | type | labels |
//! |---|---|---|
//! | `stayfast_call_duration_seconds` | histogram | `operation`, `target` |
//! | `stayfast_calls_total` | counter | `operation`, `target`, `outcome` |
//! | `stayfast_attempts_total` | counter | `operation`, `target` |
//! | `stayfast_retries_total` | counter | `operation`, `target` |
//! | `stayfast_fallbacks_total` | counter | `operation`, `target`, `reason` |
//! | `stayfast_circuit_state` | gauge | `target` (0 closed, 1 open, 2 half-open, 3 disabled) |
//! | `stayfast_circuit_transitions_total` | counter | `target`, `to`, `reason` |
//! | `stayfast_background_in_flight` | gauge | `spawner` |
//! | `stayfast_background_tasks_total` | counter | `spawner`, `outcome` |
//! | `stayfast_redis_connections` | gauge | `target`, `state` (connected, disconnected) |
//! | `stayfast_redis_pool_size` | gauge | `target` |
//! | `stayfast_redis_commands_in_flight` | gauge | `target` |
//! | `stayfast_redis_commands_buffered` | gauge | `target` |
//! | `stayfast_offload_in_flight` | gauge | `target` (abandoned closures included until they finish) |
//! | `stayfast_offload_abandoned_total` | counter | `target` |
//! | `stayfast_runtime_lag_seconds` | histogram | — |
//!
//! # Examples
//!
//! ```
//! use stayfast_core::telemetry;
//!
//! assert_eq!(telemetry::metric_name("stayfast", telemetry::CALLS_TOTAL), "stayfast_calls_total");
//! assert_eq!(telemetry::HISTOGRAM_BUCKETS.len(), 12);
//! telemetry::describe_metrics(telemetry::DEFAULT_PREFIX); // a no-op without a recorder
//! ```

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// The prefix of every metric name unless configured otherwise.
///
/// ```
/// use stayfast_core::telemetry::{CALLS_TOTAL, DEFAULT_PREFIX, metric_name};
/// assert_eq!(metric_name(DEFAULT_PREFIX, CALLS_TOTAL), "stayfast_calls_total");
/// ```
pub const DEFAULT_PREFIX: &str = "stayfast";

/// Bucket bounds, in seconds, for every stayfast latency histogram.
///
/// ```
/// use stayfast_core::telemetry::HISTOGRAM_BUCKETS;
/// assert_eq!((HISTOGRAM_BUCKETS[0], HISTOGRAM_BUCKETS[11]), (0.001, 60.0)); // 1 ms to 1 min
/// ```
pub const HISTOGRAM_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// Suffix of the call latency histogram.
///
/// ```
/// use stayfast_core::telemetry::{CALL_DURATION_SECONDS, metric_name};
/// assert_eq!(metric_name("stayfast", CALL_DURATION_SECONDS), "stayfast_call_duration_seconds");
/// ```
pub const CALL_DURATION_SECONDS: &str = "call_duration_seconds";
/// Suffix of the calls-by-outcome counter.
///
/// ```
/// use stayfast_core::telemetry::{CALLS_TOTAL, metric_name};
/// assert_eq!(metric_name("stayfast", CALLS_TOTAL), "stayfast_calls_total");
/// ```
pub const CALLS_TOTAL: &str = "calls_total";
/// Suffix of the attempts counter.
///
/// ```
/// use stayfast_core::telemetry::{ATTEMPTS_TOTAL, metric_name};
/// assert_eq!(metric_name("stayfast", ATTEMPTS_TOTAL), "stayfast_attempts_total");
/// ```
pub const ATTEMPTS_TOTAL: &str = "attempts_total";
/// Suffix of the retries counter.
///
/// ```
/// use stayfast_core::telemetry::{RETRIES_TOTAL, metric_name};
/// assert_eq!(metric_name("stayfast", RETRIES_TOTAL), "stayfast_retries_total");
/// ```
pub const RETRIES_TOTAL: &str = "retries_total";
/// Suffix of the fallbacks counter.
///
/// ```
/// use stayfast_core::telemetry::{FALLBACKS_TOTAL, metric_name};
/// assert_eq!(metric_name("stayfast", FALLBACKS_TOTAL), "stayfast_fallbacks_total");
/// ```
pub const FALLBACKS_TOTAL: &str = "fallbacks_total";
/// Suffix of the circuit state gauge.
///
/// ```
/// use stayfast_core::telemetry::{CIRCUIT_STATE, metric_name};
/// assert_eq!(metric_name("stayfast", CIRCUIT_STATE), "stayfast_circuit_state");
/// ```
pub const CIRCUIT_STATE: &str = "circuit_state";
/// Suffix of the circuit transitions counter.
///
/// ```
/// use stayfast_core::telemetry::{CIRCUIT_TRANSITIONS_TOTAL, metric_name};
/// assert_eq!(metric_name("stayfast", CIRCUIT_TRANSITIONS_TOTAL), "stayfast_circuit_transitions_total");
/// ```
pub const CIRCUIT_TRANSITIONS_TOTAL: &str = "circuit_transitions_total";

/// Suffix of the background in-flight gauge.
///
/// ```
/// use stayfast_core::telemetry::{BACKGROUND_IN_FLIGHT, metric_name};
/// assert_eq!(metric_name("stayfast", BACKGROUND_IN_FLIGHT), "stayfast_background_in_flight");
/// ```
pub const BACKGROUND_IN_FLIGHT: &str = "background_in_flight";
/// Suffix of the background tasks counter.
///
/// ```
/// use stayfast_core::telemetry::{BACKGROUND_TASKS_TOTAL, metric_name};
/// assert_eq!(metric_name("stayfast", BACKGROUND_TASKS_TOTAL), "stayfast_background_tasks_total");
/// ```
pub const BACKGROUND_TASKS_TOTAL: &str = "background_tasks_total";
/// Suffix of the offload in-flight gauge (`target`): closures holding a blocking
/// thread, abandoned ones included until they finish.
///
/// ```
/// use stayfast_core::telemetry::{OFFLOAD_IN_FLIGHT, metric_name};
/// assert_eq!(metric_name("stayfast", OFFLOAD_IN_FLIGHT), "stayfast_offload_in_flight");
/// ```
pub const OFFLOAD_IN_FLIGHT: &str = "offload_in_flight";
/// Suffix of the offload abandoned-closures counter (`target`).
///
/// ```
/// use stayfast_core::telemetry::{OFFLOAD_ABANDONED_TOTAL, metric_name};
/// assert_eq!(metric_name("stayfast", OFFLOAD_ABANDONED_TOTAL), "stayfast_offload_abandoned_total");
/// ```
pub const OFFLOAD_ABANDONED_TOTAL: &str = "offload_abandoned_total";
/// Suffix of the scheduler lag histogram.
///
/// ```
/// use stayfast_core::telemetry::{RUNTIME_LAG_SECONDS, metric_name};
/// assert_eq!(metric_name("stayfast", RUNTIME_LAG_SECONDS), "stayfast_runtime_lag_seconds");
/// ```
pub const RUNTIME_LAG_SECONDS: &str = "runtime_lag_seconds";
/// Suffix of the Redis connections gauge (`target`, `state`).
///
/// ```
/// use stayfast_core::telemetry::{REDIS_CONNECTIONS, metric_name};
/// assert_eq!(metric_name("stayfast", REDIS_CONNECTIONS), "stayfast_redis_connections");
/// ```
pub const REDIS_CONNECTIONS: &str = "redis_connections";
/// Suffix of the Redis pool size gauge (`target`).
///
/// ```
/// use stayfast_core::telemetry::{REDIS_POOL_SIZE, metric_name};
/// assert_eq!(metric_name("stayfast", REDIS_POOL_SIZE), "stayfast_redis_pool_size");
/// ```
pub const REDIS_POOL_SIZE: &str = "redis_pool_size";
/// Suffix of the gauge of Redis commands sent through the handle with no reply yet
/// (`target`).
///
/// ```
/// use stayfast_core::telemetry::{REDIS_COMMANDS_IN_FLIGHT, metric_name};
/// assert_eq!(metric_name("stayfast", REDIS_COMMANDS_IN_FLIGHT), "stayfast_redis_commands_in_flight");
/// ```
pub const REDIS_COMMANDS_IN_FLIGHT: &str = "redis_commands_in_flight";
/// Suffix of the gauge of Redis commands queued inside fred, not yet written (`target`).
///
/// ```
/// use stayfast_core::telemetry::{REDIS_COMMANDS_BUFFERED, metric_name};
/// assert_eq!(metric_name("stayfast", REDIS_COMMANDS_BUFFERED), "stayfast_redis_commands_buffered");
/// ```
pub const REDIS_COMMANDS_BUFFERED: &str = "redis_commands_buffered";

/// `<prefix>_<suffix>`.
///
/// ```
/// assert_eq!(stayfast_core::telemetry::metric_name("app", "calls_total"), "app_calls_total");
/// ```
pub fn metric_name(prefix: &str, suffix: &str) -> String {
    format!("{prefix}_{suffix}")
}

/// Describes (type, unit, help text) every metric of stayfast-core to the installed
/// recorder. Call it once after installing the recorder.
///
/// ```
/// stayfast_core::telemetry::describe_metrics("stayfast");
/// ```
pub fn describe_metrics(prefix: &str) {
    let name = |suffix| metric_name(prefix, suffix);
    describe_histogram!(
        name(CALL_DURATION_SECONDS),
        Unit::Seconds,
        "Duration of one logical call through a policy, every attempt, backoff and fallback included."
    );
    describe_counter!(
        name(CALLS_TOTAL),
        Unit::Count,
        "Logical calls through a policy, by how they ended."
    );
    describe_counter!(
        name(ATTEMPTS_TOTAL),
        Unit::Count,
        "Attempts made (the first one and every retry)."
    );
    describe_counter!(
        name(RETRIES_TOTAL),
        Unit::Count,
        "Retries made after a failed attempt."
    );
    describe_counter!(
        name(FALLBACKS_TOTAL),
        Unit::Count,
        "Calls handed to their fallback, by the reason the primary path failed."
    );
    describe_gauge!(
        name(CIRCUIT_STATE),
        Unit::Count,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 disabled."
    );
    describe_counter!(
        name(CIRCUIT_TRANSITIONS_TOTAL),
        Unit::Count,
        "Circuit breaker state changes, by the new state and the reason."
    );
    describe_gauge!(
        name(BACKGROUND_IN_FLIGHT),
        Unit::Count,
        "Background tasks running now."
    );
    describe_counter!(
        name(BACKGROUND_TASKS_TOTAL),
        Unit::Count,
        "Background tasks by how they ended: success, failure, timeout, shed, panicked, aborted."
    );
    describe_gauge!(
        name(OFFLOAD_IN_FLIGHT),
        Unit::Count,
        "Offloaded blocking closures holding a thread now, those whose caller gave up included."
    );
    describe_counter!(
        name(OFFLOAD_ABANDONED_TOTAL),
        Unit::Count,
        "Offloaded blocking closures whose caller stopped waiting (timeout or drop) before they finished."
    );
    describe_histogram!(
        name(RUNTIME_LAG_SECONDS),
        Unit::Seconds,
        "How much later than asked the runtime woke the lag watchdog."
    );
    describe_gauge!(
        name(REDIS_CONNECTIONS),
        Unit::Count,
        "Connections of a Redis pool by state: connected or disconnected."
    );
    describe_gauge!(
        name(REDIS_POOL_SIZE),
        Unit::Count,
        "Connections a Redis pool is configured to hold."
    );
    describe_gauge!(
        name(REDIS_COMMANDS_IN_FLIGHT),
        Unit::Count,
        "Redis commands sent through the handle with no reply yet (a pipeline or a whole SCAN counts as one)."
    );
    describe_gauge!(
        name(REDIS_COMMANDS_BUFFERED),
        Unit::Count,
        "Redis commands queued inside the client, not yet written to a connection."
    );
}

pub use crate::metered::flush;
