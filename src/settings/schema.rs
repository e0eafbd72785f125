//! The sections of [`Settings`](super::Settings) that are the facade's own: timeouts and
//! the Redis connection. (The others are the wrappers' and stores' config types.)

use std::time::Duration;

use serde::Deserialize;
use stayfast_core::{
    config::duration,
    redis::{RedisConfig, RedisTls},
};

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

/// Declares [`RedisSettings`] from one list of the [`RedisConfig`] fields `[redis]`
/// carries as they are: the struct's fields, their defaults (core's) and their copy into
/// a [`RedisConfig`] are generated from that list, so a field added to it reaches all
/// three; a field left out of it is simply not settable (a test compares every field
/// of the resulting config with core's defaults).
macro_rules! redis_settings {
    ($(#[$struct_meta:meta])* pub struct $name:ident {
        $(#[$own_meta:meta])* enabled: bool,
        $(#[$url_meta:meta])* url: RedisUrl,
        $(#[$password_meta:meta])* password: Option<Secret>,
        $(#[$sentinel_password_meta:meta])* sentinel_password: Option<Secret>,
        $( $(#[$meta:meta])* $field:ident: $ty:ty, )*
    }) => {
        $(#[$struct_meta])*
        pub struct $name {
            $(#[$own_meta])*
            pub enabled: bool,
            $(#[$url_meta])*
            pub url: RedisUrl,
            $(#[$password_meta])*
            pub password: Option<Secret>,
            $(#[$sentinel_password_meta])*
            pub sentinel_password: Option<Secret>,
            $( $(#[$meta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                let core = RedisConfig::default();
                Self {
                    enabled: true,
                    url: RedisUrl::new(core.url),
                    password: core.password.map(Secret::new),
                    sentinel_password: core.sentinel_password.map(Secret::new),
                    $( $field: core.$field, )*
                }
            }
        }

        impl $name {
            /// Copies `[redis]` into `config`, the URL and passwords exposed for the client.
            pub(super) fn apply(&self, config: &mut RedisConfig) {
                config.url = self.url.expose().to_owned();
                config.password = self.password.as_ref().map(|p| p.expose().to_owned());
                config.sentinel_password =
                    self.sentinel_password.as_ref().map(|p| p.expose().to_owned());
                $( config.$field = self.$field.clone(); )*
            }
        }
    };
}

redis_settings! {
    /// `[redis]`: the connection pool. Its timeouts are under `[timeouts.redis]`, its
    /// breaker and retry are `[breaker]` and `[retry]`. Every field but `enabled` is the
    /// [`RedisConfig`] field of the same name (the URL and password kept as secrets).
    ///
    /// `Debug` shows no password: neither `password`, `sentinel_password` nor the URL's.
    ///
    /// The deployment is the URL's: `redis://` (one node), `redis-cluster://h1:p1,h2:p2`,
    /// `redis-sentinel://s1:p1,s2:p2/0?sentinelServiceName=name`; `rediss…` or a
    /// `[redis.tls]` table for TLS.
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
        enabled: bool,
        /// `redis://[user:password@]host[:port][/db]`; `rediss://` needs the `tls` feature.
        url: RedisUrl,
        /// Replaces any password in the URL, so it can come from its own secret.
        password: Option<Secret>,
        /// The sentinels' password (a `redis-sentinel://` URL), replacing the URL's
        /// `sentinelPassword`; the sentinels get only their own credentials.
        sentinel_password: Option<Secret>,
        /// The ACL user, replacing any user in the URL.
        username: Option<String>,
        /// The sentinels' ACL user, replacing the URL's `sentinelUsername`.
        sentinel_username: Option<String>,
        /// `[redis.tls]`: the CA file, a client certificate and key, the server name to
        /// verify, `insecure_skip_verify`; present, it turns TLS on for `redis://` too
        /// (feature `tls`).
        tls: Option<RedisTls>,
        /// Connections in the pool.
        pool_size: u32,
        /// Commands fred may queue while disconnected before refusing new ones.
        max_command_buffer: u32,
        /// First reconnect delay.
        #[serde(with = "duration")]
        reconnect_min_delay: Duration,
        /// Largest reconnect delay.
        #[serde(with = "duration")]
        reconnect_max_delay: Duration,
        /// How much earlier than stayfast's own bound fred's deadline fires; also how late
        /// after its bound stayfast's safety net ends a command fred failed to end.
        #[serde(with = "duration")]
        deadline_margin: Duration,
        /// Disable Nagle's algorithm (lowest latency with few callers; off gives more
        /// throughput with many).
        tcp_nodelay: bool,
        /// Open the breaker as soon as every connection is lost, before any call fails
        /// (an idle service rejects its first calls at once); off: a Redis that restarts
        /// within milliseconds does not cost the breaker's open duration.
        open_on_disconnect: bool,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::Settings;

    /// The generated struct keeps the secrets wrapped: `Debug` shows neither password,
    /// and the client's config gets both, exposed.
    #[test]
    fn generated_redis_settings_keep_secrets_out_of_debug() {
        let toml =
            "[redis]\nurl = \"redis://app:in-url-w0rd@db:6379/1\"\npassword = \"own-w0rd\"\npool_size = 3";
        let settings = Settings::from_toml(toml).unwrap();
        let shown = format!("{:?}", settings.redis);
        assert!(!shown.contains("w0rd"), "{shown}");
        let config = settings.redis_config();
        assert_eq!(config.url, "redis://app:in-url-w0rd@db:6379/1");
        assert_eq!(
            (config.password.as_deref(), config.pool_size),
            (Some("own-w0rd"), 3)
        );
    }
}
