//! [`RedisConfig`]: how the handle connects, and the bound of every command.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use super::RedisTls;
use crate::config::{BreakerConfig, ConfigError, RetryConfig, at_least_one, duration, positive};

/// Settings of a [`Redis`](super::Redis) handle.
///
/// Every command is bounded — every attempt and the call as a whole — by its entry in
/// `operations`, else by `command_timeout`.
/// fred is configured so that failures surface instead of queueing: one attempt per
/// command inside fred (stayfast retries, once, in one place), a bounded command
/// buffer, an unbounded reconnect policy with capped backoff, unresponsive-connection
/// detection, and the per-attempt deadline handed into fred so that a command not yet
/// written when it expires is dropped, never sent late.
///
/// The deployment comes from the URL's scheme: `redis://host:port/db` (one node),
/// `redis-cluster://h1:p1,h2:p2` (a cluster, any of its nodes), or
/// `redis-sentinel://s1:p1,s2:p2/db?sentinelServiceName=name` (the primary a sentinel
/// names); the `s` forms (`rediss://`…) and a [`tls`](Self::tls) table connect over TLS.
///
/// `Debug` never shows a password: the URL's, `password` or `sentinel_password`.
///
/// # Examples
///
/// ```
/// let config: stayfast_core::redis::RedisConfig = toml::from_str(r#"
///     url = "redis://:hunter2@127.0.0.1:6390/0"
///     pool_size = 2
///     command_timeout = "500ms"
///     [operations]
///     scan = "5s"
/// "#).unwrap();
/// assert!(config.validate().is_ok());
/// assert!(!format!("{config:?}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`; `rediss://` needs the `tls` feature.
    pub url: String,
    /// The password, replacing any in the URL (so it can come from a secret store
    /// rather than sit inside a URL). Never shown by `Debug`.
    pub password: Option<String>,
    /// The ACL user, replacing any user in the URL (`AUTH username password`).
    pub username: Option<String>,
    /// The ACL user for the sentinels of a `redis-sentinel://` URL, replacing the URL's
    /// `sentinelUsername`.
    pub sentinel_username: Option<String>,
    /// The sentinels' password, replacing the URL's `sentinelPassword`. The sentinels
    /// get only their own credentials: `password` and `username` are the data nodes'.
    /// Never shown by `Debug`.
    pub sentinel_password: Option<String>,
    /// TLS: the CA to trust, a client certificate, the name to verify (feature `tls`).
    /// Present, it turns TLS on for a `redis://` URL too.
    pub tls: Option<RedisTls>,
    /// Connections in the pool. Reads go down the first, everything else down the one in
    /// the middle (`pool_size / 2`), each shared by every caller so their commands
    /// pipeline; the others stand by, connected, and take over at once when one drops.
    /// With 1, reads and writes share the connection, and reads wait behind writes a
    /// server holds (`CLIENT PAUSE WRITE`); 2 keeps them apart, 4 (the default) also
    /// gives each a stand-by.
    pub pool_size: u32,
    /// Bound on establishing a connection (TCP, TLS, AUTH).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// A connection with a command outstanding that has read nothing for this long is
    /// closed and reconnected (fred's unresponsive check; it cannot see a path that
    /// drops some bytes yet delivers others).
    #[serde(with = "duration")]
    pub unresponsive_timeout: Duration,
    /// How often the unresponsive check runs.
    #[serde(with = "duration")]
    pub health_check_interval: Duration,
    /// Bound on each command without an entry in `operations`.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// Per-operation bounds.
    pub operations: OperationTimeouts,
    /// Commands fred may queue while disconnected before refusing new ones.
    pub max_command_buffer: u32,
    /// First reconnect delay.
    #[serde(with = "duration")]
    pub reconnect_min_delay: Duration,
    /// Largest reconnect delay.
    #[serde(with = "duration")]
    pub reconnect_max_delay: Duration,
    /// How much earlier than stayfast's own bound fred's deadline fires, so fred — which
    /// can drop a command it has not written yet — always decides first. Also how often
    /// the safety net sweeps for commands whose deadline fred holds: if fred failed to
    /// end one, stayfast ends it at most this long after its bound.
    #[serde(with = "duration")]
    pub deadline_margin: Duration,
    /// Disable Nagle's algorithm on the connections. Off by default (fred's default): with
    /// many concurrent callers, letting the kernel batch pipelined writes gave 17 % more
    /// throughput on the project's benchmark at no cost to sequential latency; turn it on
    /// for the lowest latency with few callers.
    pub tcp_nodelay: bool,
    /// Open the breaker as soon as fred reports a lost connection and no connection of
    /// the pool is left, before any call fails: a service idle during an outage then
    /// rejects its first calls at once instead of spending them on failures. Off by
    /// default: calls fail fast while disconnected anyway, and with it on a Redis that
    /// restarts within milliseconds still costs the breaker's whole open duration.
    pub open_on_disconnect: bool,
    /// Retries of idempotent commands.
    pub retry: RetryConfig,
    /// The breaker shared by every command to this Redis.
    pub breaker: BreakerConfig,
}

/// Per-operation bounds; an absent one falls back to `command_timeout`.
///
/// ```
/// let t = stayfast_core::redis::OperationTimeouts::default();
/// assert_eq!(t.scan, Some(std::time::Duration::from_secs(5)));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OperationTimeouts {
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

impl Default for OperationTimeouts {
    fn default() -> Self {
        Self {
            get: None,
            set: None,
            hgetall: None,
            pipeline: None,
            scan: Some(Duration::from_secs(5)),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        let retry = RetryConfig {
            max_attempts: 2,
            ..RetryConfig::default()
        };
        Self {
            url: "redis://127.0.0.1:6379".into(),
            password: None,
            username: None,
            sentinel_username: None,
            sentinel_password: None,
            tls: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            unresponsive_timeout: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            operations: OperationTimeouts::default(),
            max_command_buffer: 10_000,
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(2),
            deadline_margin: Duration::from_millis(25),
            tcp_nodelay: false,
            open_on_disconnect: false,
            retry,
            breaker: BreakerConfig::default(),
        }
    }
}

impl RedisConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field (never echoing the URL, which may
    /// hold a password): among others a URL fred cannot parse (`url`), and a bound no
    /// longer than `deadline_margin` (`command_timeout`, `operations.<name>`), which
    /// would leave fred no time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut c = stayfast_core::redis::RedisConfig::default();
    /// c.pool_size = 0;
    /// assert_eq!(c.validate().unwrap_err().field(), "pool_size");
    /// c.pool_size = 4;
    /// c.url = "redis://127.0.0.1:99999".into();
    /// assert_eq!(c.validate().unwrap_err().problem(), "not a valid Redis URL (InvalidPort)");
    /// c.url = "redis://127.0.0.1:6379".into();
    /// c.operations.get = Some(c.deadline_margin);
    /// assert_eq!(c.validate().unwrap_err().field(), "operations.get");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let scheme = self.url.split("://").next().unwrap_or_default();
        match scheme {
            "redis" | "redis-cluster" | "redis-sentinel" => {}
            "rediss" | "rediss-cluster" | "rediss-sentinel" if cfg!(feature = "tls") => {}
            "rediss" | "rediss-cluster" | "rediss-sentinel" => {
                return Err(ConfigError::new(
                    "url",
                    "rediss:// needs stayfast-core's `tls` feature; refusing to connect in plain text",
                ));
            }
            _ => return Err(ConfigError::new("url", "must start with redis:// or rediss://")),
        }
        at_least_one("pool_size", self.pool_size)?;
        positive("connect_timeout", self.connect_timeout)?;
        positive("unresponsive_timeout", self.unresponsive_timeout)?;
        positive("health_check_interval", self.health_check_interval)?;
        self.credentials_and_tls(scheme)?;
        positive("command_timeout", self.command_timeout)?;
        let o = &self.operations;
        for (name, t) in [
            ("get", o.get),
            ("set", o.set),
            ("hgetall", o.hgetall),
            ("pipeline", o.pipeline),
            ("scan", o.scan),
        ] {
            if let Some(t) = t {
                positive(name, t).map_err(|e| e.prefixed("operations"))?;
            }
        }
        at_least_one("max_command_buffer", self.max_command_buffer)?;
        positive("reconnect_min_delay", self.reconnect_min_delay)?;
        if self.reconnect_max_delay < self.reconnect_min_delay {
            return Err(ConfigError::new(
                "reconnect_max_delay",
                "must be at least `reconnect_min_delay`",
            ));
        }
        self.url_parses()?;
        self.margin_leaves_time()?;
        self.retry.validate().map_err(|e| e.prefixed("retry"))?;
        self.breaker.validate().map_err(|e| e.prefixed("breaker"))
    }

    /// The ACL and sentinel credentials and the TLS table, for the URL's `scheme`.
    fn credentials_and_tls(&self, scheme: &str) -> Result<(), ConfigError> {
        for (field, value) in [
            ("password", &self.password),
            ("username", &self.username),
            ("sentinel_username", &self.sentinel_username),
            ("sentinel_password", &self.sentinel_password),
        ] {
            if value.as_deref() == Some("") {
                return Err(ConfigError::new(field, "is empty; leave it out instead"));
            }
        }
        let sentinel = scheme.ends_with("-sentinel");
        if sentinel && !self.url.contains("sentinelServiceName=") {
            return Err(ConfigError::new(
                "url",
                "a sentinel URL needs the primary's service name: add `?sentinelServiceName=<name>`",
            ));
        }
        for (field, value) in [
            ("sentinel_username", &self.sentinel_username),
            ("sentinel_password", &self.sentinel_password),
        ] {
            if value.is_some() && !sentinel {
                return Err(ConfigError::new(
                    field,
                    "is set but `url` is not a sentinel URL (redis-sentinel://…)",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if !cfg!(feature = "tls") {
                return Err(ConfigError::new(
                    "tls",
                    "needs stayfast-core's `tls` feature; refusing to connect in plain text",
                ));
            }
            tls.validate().map_err(|e| e.prefixed("tls"))?;
        }
        Ok(())
    }

    /// True when the handle connects over TLS: a `rediss` scheme or a `tls` table.
    ///
    /// ```
    /// let mut c = stayfast_core::redis::RedisConfig::default();
    /// assert!(!c.uses_tls());
    /// c.tls = Some(Default::default());
    /// assert!(c.uses_tls()); // a `tls` table turns TLS on for redis:// too
    /// ```
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some() || self.url.starts_with("rediss")
    }

    /// A URL fred can parse (host, port, database…), beyond the scheme checked first.
    fn url_parses(&self) -> Result<(), ConfigError> {
        fred_config_from_url(&self.url).map_err(|e| {
            // NOTE: fred's details are the `url` crate's error name for a parse error
            // (`InvalidPort`), but may quote part of the URL for others: kind only.
            let why = match e.kind() {
                fred::error::ErrorKind::Url => e.details().to_owned(),
                kind => format!("{kind:?} error"),
            };
            ConfigError::new("url", format!("not a valid Redis URL ({why})"))
        })?;
        Ok(())
    }

    /// Every bound longer than `deadline_margin`: fred's deadline is the bound minus
    /// the margin, so a bound within the margin would leave fred no time at all.
    fn margin_leaves_time(&self) -> Result<(), ConfigError> {
        let (margin, o) = (self.deadline_margin, &self.operations);
        let bounds = [
            ("command_timeout", Some(self.command_timeout)),
            ("operations.get", o.get),
            ("operations.set", o.set),
            ("operations.hgetall", o.hgetall),
            ("operations.pipeline", o.pipeline),
            ("operations.scan", o.scan),
        ];
        for (field, bound) in bounds {
            if bound.is_some_and(|t| t <= margin) {
                return Err(ConfigError::new(
                    field,
                    format!("must be longer than `deadline_margin` ({margin:?}), or fred gets no time"),
                ));
            }
        }
        Ok(())
    }

    /// The URL with any password replaced by `***` (see [`redact_url`](crate::redact_url)).
    ///
    /// ```
    /// let mut c = stayfast_core::redis::RedisConfig::default();
    /// c.url = "redis://app:s3cret@db:6379/1".into();
    /// assert_eq!(c.redacted_url(), "redis://app:***@db:6379/1");
    /// ```
    pub fn redacted_url(&self) -> String {
        crate::redact_url(&self.url)
    }
}

/// fred's config for `url`, TLS left off: fred's own `rediss://` default would load the
/// system's CA certificates on every parse (and build rustls with whichever crypto
/// provider is the process default); [`Redis::connect`](super::Redis::connect) sets the
/// TLS connector itself from [`RedisConfig::tls`]. A cluster's or sentinel's host list
/// written `h1:p1,h2:p2` becomes fred's `h1:p1?node=h2:p2`.
pub(super) fn fred_config_from_url(url: &str) -> Result<fred::types::config::Config, fred::error::Error> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return fred::types::config::Config::from_url(url);
    };
    let scheme = scheme
        .strip_prefix("rediss")
        .map_or(scheme.to_owned(), |s| format!("redis{s}"));
    let rest = if scheme.ends_with("-cluster") || scheme.ends_with("-sentinel") {
        hosts_as_nodes(rest)
    } else {
        rest.to_owned()
    };
    fred::types::config::Config::from_url(&format!("{scheme}://{rest}"))
}

/// `[userinfo@]h1:p1,h2:p2[/db][?query]` → `[userinfo@]h1:p1[/db]?node=h2:p2[&query]`.
fn hosts_as_nodes(rest: &str) -> String {
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let hosts_start = authority.rfind('@').map_or(0, |at| at + 1);
    let (userinfo, hosts) = authority.split_at(hosts_start);
    let mut hosts = hosts.split(',');
    let first = hosts.next().unwrap_or_default();
    let nodes: Vec<String> = hosts
        .filter(|h| !h.is_empty())
        .map(|h| format!("node={h}"))
        .collect();
    if nodes.is_empty() {
        return rest.to_owned();
    }
    let (path, query) = tail.split_once('?').map_or((tail, None), |(p, q)| (p, Some(q)));
    let mut out = format!("{userinfo}{first}{path}?{}", nodes.join("&"));
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        out.push('&');
        out.push_str(query);
    }
    out
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("username", &self.username)
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "***"),
            )
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("unresponsive_timeout", &self.unresponsive_timeout)
            .field("health_check_interval", &self.health_check_interval)
            .field("command_timeout", &self.command_timeout)
            .field("operations", &self.operations)
            .field("max_command_buffer", &self.max_command_buffer)
            .field("reconnect_min_delay", &self.reconnect_min_delay)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("deadline_margin", &self.deadline_margin)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("open_on_disconnect", &self.open_on_disconnect)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Without the `tls` feature, `rediss://` must be refused, never connected in plain
    /// text (fred itself would only log a warning). Run by `scripts/test` with
    /// `--features redis` alone, since `--all-features` compiles TLS in.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn rediss_without_tls_is_a_config_error() {
        let config = RedisConfig {
            url: "rediss://:s3cret@redis.example:6380".into(),
            ..RedisConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.field(), "url");
        assert!(err.to_string().contains("tls"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "the URL is never echoed");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn rediss_with_tls_is_accepted() {
        let config = RedisConfig {
            url: "rediss://redis.example:6380".into(),
            ..RedisConfig::default()
        };
        assert!(config.validate().is_ok());
    }

    /// Checked at connect time only, or by the settings layer, before: now by
    /// `validate` itself, naming the field.
    #[test]
    fn unparsable_urls_and_margin_swallowing_bounds_are_refused() {
        let port = RedisConfig {
            url: "redis://:s3cret@127.0.0.1:99999".into(),
            ..RedisConfig::default()
        };
        let err = port.validate().unwrap_err();
        assert_eq!(
            (err.field(), err.problem()),
            ("url", "not a valid Redis URL (InvalidPort)")
        );
        assert!(!err.to_string().contains("s3cret"), "the URL is never echoed");
        let mut tight = RedisConfig::default();
        tight.command_timeout = tight.deadline_margin;
        let err = tight.validate().unwrap_err();
        assert_eq!(err.field(), "command_timeout");
        assert_eq!(
            err.problem(),
            "must be longer than `deadline_margin` (25ms), or fred gets no time"
        );
        let mut tight = RedisConfig::default();
        tight.operations.scan = Some(Duration::from_millis(10));
        assert_eq!(tight.validate().unwrap_err().field(), "operations.scan");
        tight.operations.scan = Some(Duration::from_millis(26));
        assert!(tight.validate().is_ok());
    }

    /// Issue #14: deployments, ACL and TLS settings, each refusal naming its field.
    #[test]
    fn sentinel_acl_and_tls_settings_are_checked() {
        let sentinel = |url: &str| RedisConfig {
            url: url.into(),
            sentinel_password: Some("s3nt-w0rd".into()),
            ..RedisConfig::default()
        };
        let err = sentinel("redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/0")
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "url");
        assert!(err.problem().contains("sentinelServiceName"), "{err}");
        let ok = sentinel("redis-sentinel://127.0.0.1:26379/0?sentinelServiceName=main");
        assert!(ok.validate().is_ok());
        let shown = format!("{ok:?}");
        assert!(
            !shown.contains("w0rd") && shown.contains("sentinel_password: Some(\"***\")"),
            "{shown}"
        );
        let err = sentinel("redis://127.0.0.1:6379").validate().unwrap_err();
        assert_eq!(err.field(), "sentinel_password");

        let mut acl = RedisConfig {
            username: Some(String::new()),
            ..RedisConfig::default()
        };
        assert_eq!(acl.validate().unwrap_err().field(), "username");
        acl.username = Some("app".into());
        assert!(acl.validate().is_ok());

        let mut tls = RedisConfig {
            tls: Some(RedisTls::default()),
            ..RedisConfig::default()
        };
        assert!(tls.uses_tls(), "a tls table turns TLS on for redis://");
        if cfg!(feature = "tls") {
            assert!(tls.validate().is_ok());
            let t = tls.tls.as_mut().unwrap();
            t.client_cert = Some("/etc/redis/client.pem".into());
            assert_eq!(tls.validate().unwrap_err().field(), "tls.client_key");
            let t = tls.tls.as_mut().unwrap();
            (t.client_cert, t.client_key) = (None, Some("/etc/redis/client.key".into()));
            assert_eq!(tls.validate().unwrap_err().field(), "tls.client_cert");
            let t = tls.tls.as_mut().unwrap();
            (t.client_key, t.server_name) = (None, Some("not a name".into()));
            assert_eq!(tls.validate().unwrap_err().field(), "tls.server_name");
        } else {
            let err = tls.validate().unwrap_err();
            assert_eq!(err.field(), "tls");
            assert!(err.problem().contains("`tls` feature"), "{err}");
        }
    }

    #[test]
    fn host_lists_become_fred_nodes() {
        assert_eq!(
            hosts_as_nodes(":pw@h1:7000,h2:7001,h3:7002"),
            ":pw@h1:7000?node=h2:7001&node=h3:7002"
        );
        assert_eq!(
            hosts_as_nodes("s1:26379,s2:26379/0?sentinelServiceName=main"),
            "s1:26379/0?node=s2:26379&sentinelServiceName=main"
        );
        assert_eq!(hosts_as_nodes("h1:7000?node=h2:7001"), "h1:7000?node=h2:7001");
        let config =
            fred_config_from_url("redis-sentinel://u:p@s1:26379,s2:26380/0?sentinelServiceName=main")
                .unwrap();
        match config.server {
            fred::types::config::ServerConfig::Sentinel {
                hosts, service_name, ..
            } => {
                assert_eq!(service_name, "main");
                let mut ports: Vec<u16> = hosts.iter().map(|h| h.port).collect();
                ports.sort_unstable();
                assert_eq!(ports, [26379, 26380]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(config.password.as_deref(), Some("p"));
        let cluster = RedisConfig {
            url: "rediss-cluster://127.0.0.1:7000,127.0.0.1:7001".into(),
            ..RedisConfig::default()
        };
        assert_eq!(cluster.validate().is_ok(), cfg!(feature = "tls"));
    }

    #[test]
    fn the_password_never_reaches_debug() {
        let config = RedisConfig {
            url: "redis://app:p%40ss-w0rd@db:6379/2".into(),
            ..RedisConfig::default()
        };
        assert_eq!(config.redacted_url(), "redis://app:***@db:6379/2");
        assert!(!format!("{config:?}").contains("w0rd"));
        for url in [
            "redis://:p/w0rd@h",
            "redis://u:p?w0rd@h/1",
            "redis://u:p#w0rd@h",
            "redis://u:p@w0rd@h",
            "redis://w0rd@h",
            "redis://h/0?sentinel_password=w0rd",
        ] {
            let config = RedisConfig {
                url: url.into(),
                ..RedisConfig::default()
            };
            assert!(
                !config.redacted_url().contains("w0rd"),
                "{url} → {}",
                config.redacted_url()
            );
        }
    }
}
