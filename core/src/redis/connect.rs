//! Building a [`Redis`] handle: fred's pool, the breaker and one policy per command;
//! closing it.

use std::{sync::Arc, time::Duration};

use fred::{
    clients::Pool,
    prelude::{Builder, ClientLike, Config, ReconnectPolicy, ServerConfig},
    types::config::UnresponsiveConfig,
};

use super::{
    Command, Inner, Redis, RedisConfig, events,
    gauges::{self, InFlight},
};
use crate::{
    CallMetrics, CircuitBreaker, ErrorChain, Name, Policy, backstop::Backstop, config::ConfigError,
    telemetry::DEFAULT_PREFIX,
};

impl Redis {
    /// Builds the pool and starts connecting in the background. Redis being down is not
    /// an error: the handle starts degraded (calls fail fast, the breaker opens) and
    /// reconnects by itself.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an invalid configuration — never echoing the URL — among
    /// others a TLS file that cannot be read or parsed (`tls.ca_file`, `tls.client_key`…,
    /// naming the path). A TLS handshake that fails (an untrusted certificate, a wrong
    /// name) is not an error here: `connect` stops waiting and the commands fail with
    /// it ([`unreachable_reason`](Self::unreachable_reason)).
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
        let mut fred_config = super::config::fred_config_from_url(&config.url)
            .map_err(|e| ConfigError::new("url", format!("not a valid Redis URL ({:?})", e.kind())))?;
        // NOTE: `false` at the client level: with `true`, a failed first connection ends
        // fred's connection task for good (no reconnect), and a service started while
        // Redis is down would never recover. Every command sets `fail_fast` itself.
        fred_config.fail_fast = false;
        credentials(&mut fred_config, config);
        #[cfg(feature = "tls")]
        if config.uses_tls() {
            let tls = config.tls.clone().unwrap_or_default();
            let mut fred_tls: fred::types::config::TlsConfig = tls.client_config()?.into();
            if let Some(name) = &tls.server_name {
                server_name_everywhere(&mut fred_config.server, &mut fred_tls, name);
            }
            fred_config.tls = Some(fred_tls);
            if tls.insecure_skip_verify {
                tracing::warn!(
                    target: "stayfast::redis", redis = %target, url = %config.redacted_url(),
                    "tls.insecure_skip_verify is set: the server's certificate is not checked, \
                     anyone on the path can impersonate Redis"
                );
            }
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
        // Listening before connecting: the first connection's error is the one to tell.
        let unreachable = super::unreachable::LastConnectionError::default();
        let mut tasks = unreachable.listen(&pool);
        // Connect in the background: a Redis that is down must not stop the service.
        let _connection_tasks = pool.connect_pool();
        // Waits for every connection, up to the connect deadline — or until a first
        // attempt has failed (refused, untrusted certificate, wrong password): waiting
        // would not cure it, the service starts degraded at once, and the commands'
        // errors say why.
        let connected = tokio::time::timeout(config.connect_timeout, async {
            tokio::select! {
                result = pool.wait_for_connect() => result.map_err(|e| ErrorChain(&e).to_string()),
                () = unreachable.first_failure() => Err(unreachable
                    .reason()
                    .unwrap_or_else(|| "a connection attempt failed".to_owned())),
            }
        });
        let why = match connected.await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some(format!("not connected within {:?}", config.connect_timeout)),
        };
        if let Some(why) = why {
            tracing::warn!(
                target: "stayfast::redis", redis = %target, url = %config.redacted_url(), error = %why,
                "Redis is not reachable; starting degraded and reconnecting in the background"
            );
        }
        let in_flight = InFlight::default();
        tasks.push(
            tokio::spawn(gauges::sample(
                pool.clone(),
                in_flight.clone(),
                target,
                prefix.to_owned(),
            ))
            .abort_handle(),
        );
        if config.open_on_disconnect {
            tasks.extend(events::trip_on_disconnect(&pool, &breaker));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                readers: super::run::readers(&pool, config.deadline_margin),
                lanes: super::lanes::Lanes::new(pool.size()),
                pool,
                breaker,
                policies,
                held,
                margin: config.deadline_margin,
                reconnect_max_delay: config.reconnect_max_delay,
                url: config.redacted_url(),
                unreachable,
                in_flight,
                evalsha_refused: std::sync::atomic::AtomicBool::new(false),
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

/// The ACL user and the sentinels' credentials of `config`, over the URL's.
fn credentials(fred_config: &mut Config, config: &RedisConfig) {
    if let Some(password) = &config.password {
        fred_config.password = Some(password.clone());
    }
    if let Some(username) = &config.username {
        fred_config.username = Some(username.clone());
    }
    if let ServerConfig::Sentinel {
        username, password, ..
    } = &mut fred_config.server
    {
        if let Some(u) = &config.sentinel_username {
            *username = Some(u.clone());
        }
        if let Some(p) = &config.sentinel_password {
            *password = Some(p.clone());
        }
    }
}

/// `tls.server_name` as the name fred's TLS handshakes send (SNI) and verify, not
/// only verify: for the configured nodes, and for the cluster nodes `CLUSTER SLOTS`
/// names by address. A proxy or a managed Redis that routes by SNI needs it. (A
/// sentinel deployment's primary is reached at the address the sentinels name; fred
/// offers no mapping there, so its SNI is that address, verification still the name.)
#[cfg(feature = "tls")]
fn server_name_everywhere(server: &mut ServerConfig, tls: &mut fred::types::config::TlsConfig, name: &str) {
    use fred::types::config::TlsHostMapping;

    let configured: Vec<&mut fred::types::config::Server> = match server {
        ServerConfig::Centralized { server } => vec![server],
        ServerConfig::Clustered { hosts, .. } | ServerConfig::Sentinel { hosts, .. } => {
            hosts.iter_mut().collect()
        }
        #[allow(unreachable_patterns)] // fred's `unix-sockets` feature adds a variant
        _ => Vec::new(),
    };
    for node in configured {
        node.tls_server_name = Some(name.into());
    }
    tls.hostnames = TlsHostMapping::Custom(std::sync::Arc::new(OneServerName(name.to_owned())));
}

/// Every cluster node's address maps to the one configured server name.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct OneServerName(String);

#[cfg(feature = "tls")]
impl fred::types::config::HostMapping for OneServerName {
    fn map(&self, _: &std::net::IpAddr, _: &str) -> Option<String> {
        Some(self.0.clone())
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fred::types::config::{ServerConfig, TlsHostMapping};

    use super::server_name_everywhere;
    use crate::redis::RedisTls;

    /// On a cluster the name goes to the configured nodes and, through the host mapping,
    /// to every node `CLUSTER SLOTS` names by address (fred asks the mapping only for
    /// those).
    #[test]
    fn the_server_name_reaches_every_cluster_node() {
        let mut config =
            super::super::config::fred_config_from_url("redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000")
                .unwrap();
        let settings = RedisTls {
            insecure_skip_verify: true, // no CA file or system CAs needed here
            ..RedisTls::default()
        };
        let mut tls: fred::types::config::TlsConfig = settings.client_config().unwrap().into();
        server_name_everywhere(&mut config.server, &mut tls, "redis.internal");
        let ServerConfig::Clustered { hosts, .. } = &config.server else {
            panic!("{:?}", config.server)
        };
        assert_eq!(hosts.len(), 2);
        for host in hosts {
            assert_eq!(
                host.tls_server_name.as_deref(),
                Some("redis.internal"),
                "{host:?}"
            );
        }
        let TlsHostMapping::Custom(mapping) = &tls.hostnames else {
            panic!("no mapping for discovered nodes")
        };
        let discovered = "10.0.0.9".parse().unwrap();
        assert_eq!(
            mapping.map(&discovered, "10.0.0.1").as_deref(),
            Some("redis.internal")
        );
    }
}
