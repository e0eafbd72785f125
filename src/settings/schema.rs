//! The sections of [`Settings`](super::Settings) that are the facade's own: timeouts and
//! the Redis connection. (The others are the wrappers' and stores' config types.)

use std::time::Duration;

use serde::Deserialize;
use stayfast_core::{config::duration, redis::RedisConfig};

use super::{RedisUrl, Secret};

/// `[timeouts]`: the bound of every Redis and file call.
///
/// ```
/// let t = stayfast::settings::Timeouts::default();
/// assert_eq!(t.redis.operations.default, std::time::Duration::from_secs(2));
/// assert_eq!(t.files.write, std::time::Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Timeouts {
    /// `[timeouts.redis]`.
    pub redis: RedisTimeouts,
    /// `[timeouts.files]`.
    pub files: FileTimeouts,
}

/// `[timeouts.redis]`: connection upkeep and per-command bounds.
///
/// ```
/// let t = stayfast::settings::RedisTimeouts::default();
/// assert_eq!(t.connection.connect, std::time::Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisTimeouts {
    /// `[timeouts.redis.connection]`.
    pub connection: RedisConnectionTimeouts,
    /// `[timeouts.redis.operations]`.
    pub operations: RedisOperationTimeouts,
}

/// `[timeouts.redis.connection]`.
///
/// ```
/// let t = stayfast::settings::RedisConnectionTimeouts::default();
/// assert_eq!(t.socket, std::time::Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConnectionTimeouts {
    /// Establishing a connection: TCP, TLS and AUTH.
    #[serde(with = "duration")]
    pub connect: Duration,
    /// A connection with a command outstanding that has read nothing for this long is
    /// closed and reconnected.
    #[serde(with = "duration")]
    pub socket: Duration,
    /// How often that check runs.
    #[serde(with = "duration")]
    pub health_check: Duration,
}

impl Default for RedisConnectionTimeouts {
    fn default() -> Self {
        let core = RedisConfig::default();
        Self {
            connect: core.connect_timeout,
            socket: core.unresponsive_timeout,
            health_check: core.health_check_interval,
        }
    }
}

/// `[timeouts.redis.operations]`: each command's bound (every attempt, and the call as
/// a whole); an unset one uses `default`.
///
/// ```
/// let t = stayfast::settings::RedisOperationTimeouts::default();
/// assert_eq!((t.get, t.scan), (None, Some(std::time::Duration::from_secs(5))));
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisOperationTimeouts {
    /// Every command without its own entry.
    #[serde(with = "duration")]
    pub default: Duration,
    /// GET.
    #[serde(with = "duration::option")]
    pub get: Option<Duration>,
    /// SET.
    #[serde(with = "duration::option")]
    pub set: Option<Duration>,
    /// HGETALL.
    #[serde(with = "duration::option")]
    pub hgetall: Option<Duration>,
    /// A pipeline, as a whole.
    #[serde(with = "duration::option")]
    pub pipeline: Option<Duration>,
    /// A whole SCAN, every page.
    #[serde(with = "duration::option")]
    pub scan: Option<Duration>,
}

impl Default for RedisOperationTimeouts {
    fn default() -> Self {
        let core = RedisConfig::default();
        Self {
            default: core.command_timeout,
            get: core.operations.get,
            set: core.operations.set,
            hgetall: core.operations.hgetall,
            pipeline: core.operations.pipeline,
            scan: core.operations.scan,
        }
    }
}

/// `[timeouts.files]`: transcript file I/O.
///
/// ```
/// let t = stayfast::settings::FileTimeouts::default();
/// assert_eq!(t.read, std::time::Duration::from_secs(1));
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FileTimeouts {
    /// Reading a transcript file.
    #[serde(with = "duration")]
    pub read: Duration,
    /// An append, or an atomic rewrite (temp file, fsync, rename).
    #[serde(with = "duration")]
    pub write: Duration,
}

impl Default for FileTimeouts {
    fn default() -> Self {
        Self {
            read: Duration::from_secs(1),
            write: Duration::from_secs(2),
        }
    }
}

/// `[redis]`: the connection pool. Its timeouts are under `[timeouts.redis]`, its
/// breaker and retry are `[breaker]` and `[retry]`.
///
/// `Debug` shows neither the password nor the URL's.
///
/// ```
/// let r = stayfast::settings::RedisSettings::default();
/// assert!(r.enabled);
/// assert_eq!(r.url.expose(), "redis://127.0.0.1:6379");
/// assert_eq!(r.pool_size, 4);
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `false`: file-only mode, no pool is built.
    pub enabled: bool,
    /// `redis://[user:password@]host[:port][/db]`; `rediss://` needs the `tls` feature.
    pub url: RedisUrl,
    /// Replaces any password in the URL, so it can come from its own secret.
    pub password: Option<Secret>,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Commands fred may queue while disconnected before refusing new ones.
    pub max_command_buffer: u32,
    /// First reconnect delay.
    #[serde(with = "duration")]
    pub reconnect_min_delay: Duration,
    /// Largest reconnect delay.
    #[serde(with = "duration")]
    pub reconnect_max_delay: Duration,
    /// How much earlier than stayfast's own bound fred's deadline fires; also how late
    /// after its bound stayfast's safety net ends a command fred failed to end.
    #[serde(with = "duration")]
    pub deadline_margin: Duration,
    /// Disable Nagle's algorithm (lowest latency with few callers; off gives more
    /// throughput with many).
    pub tcp_nodelay: bool,
    /// Open the breaker as soon as every connection is lost, before any call fails
    /// (an idle service rejects its first calls at once); off: a Redis that restarts
    /// within milliseconds does not cost the breaker's open duration.
    pub open_on_disconnect: bool,
}

impl Default for RedisSettings {
    fn default() -> Self {
        let core = RedisConfig::default();
        Self {
            enabled: true,
            url: RedisUrl::new(core.url),
            password: core.password.map(Secret::new),
            pool_size: core.pool_size,
            max_command_buffer: core.max_command_buffer,
            reconnect_min_delay: core.reconnect_min_delay,
            reconnect_max_delay: core.reconnect_max_delay,
            deadline_margin: core.deadline_margin,
            tcp_nodelay: core.tcp_nodelay,
            open_on_disconnect: core.open_on_disconnect,
        }
    }
}
