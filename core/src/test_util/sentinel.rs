//! A throwaway Sentinel deployment on loopback: a primary, a replica, and sentinels.

use std::{fmt, io, time::Duration};

use tokio::time::{Instant, sleep};

use super::{Launch, RedisServer, Reply, TestServerError};

/// How long a new deployment may take until every sentinel sees the replica.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A primary, one replica and `sentinels` sentinels monitoring them as one service,
/// each a `redis-server` on a free loopback port, stopped by pid when dropped.
///
/// The sentinels declare the primary down after 1 s without an answer
/// (`down-after-milliseconds`), so a failover drill promotes the replica in seconds. The
/// quorum is a majority of the sentinels. Each sentinel rewrites its own config file in
/// its own directory.
///
/// # Examples
///
/// ```no_run
/// use stayfast_core::test_util::RedisSentinel;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut deployment = RedisSentinel::start(3).await?;
/// let mut config = stayfast_core::redis::RedisConfig::default();
/// config.url = deployment.url(); // redis-sentinel://127.0.0.1:<s1>?sentinelServiceName=…
/// deployment.primary_mut().kill()?; // the sentinels promote the replica
/// # let _ = config;
/// # Ok(()) }
/// ```
pub struct RedisSentinel {
    primary: RedisServer,
    replica: RedisServer,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinel {
    /// The service name the sentinels monitor.
    ///
    /// ```
    /// assert_eq!(stayfast_core::test_util::RedisSentinel::SERVICE, "stayfast");
    /// ```
    pub const SERVICE: &'static str = "stayfast";

    /// Starts the primary, its replica and `sentinels` sentinels (at least one), and
    /// waits until the replica is in sync and every sentinel knows it.
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`]; [`TestServerError::Io`] when `sentinels` is 0 or the
    /// deployment is not ready within 30 s.
    pub async fn start(sentinels: usize) -> Result<Self, TestServerError> {
        if sentinels == 0 {
            return Err(io::Error::other("a sentinel deployment needs at least one sentinel").into());
        }
        let primary = RedisServer::start().await?;
        let replica = RedisServer::start_with(Launch {
            args: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port().to_string(),
            ],
            ..Launch::default()
        })
        .await?;
        let quorum = sentinels / 2 + 1;
        let config = format!(
            "sentinel monitor {service} 127.0.0.1 {port} {quorum}\n\
             sentinel down-after-milliseconds {service} 1000\n\
             sentinel failover-timeout {service} 3000\n\
             sentinel parallel-syncs {service} 1\n",
            service = Self::SERVICE,
            port = primary.port(),
        );
        let mut started = Vec::with_capacity(sentinels);
        for _ in 0..sentinels {
            started.push(
                RedisServer::start_with(Launch {
                    config: Some(config.clone()),
                    sentinel: true,
                    ..Launch::default()
                })
                .await?,
            );
        }
        let deployment = Self {
            primary,
            replica,
            sentinels: started,
        };
        deployment.wait_until_ready().await?;
        Ok(deployment)
    }

    async fn wait_until_ready(&self) -> Result<(), TestServerError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let expected_sentinels = (self.sentinels.len() - 1).to_string();
        loop {
            let mut missing = None;
            let replication = self.replica.command(&["INFO", "replication"]).await?;
            if !replication
                .as_text()
                .is_some_and(|t| t.contains("master_link_status:up"))
            {
                missing = Some("the replica is not in sync".to_owned());
            }
            for sentinel in &self.sentinels {
                if missing.is_some() {
                    break;
                }
                let reply = sentinel.command(&["SENTINEL", "MASTER", Self::SERVICE]).await?;
                let fields = pairs(&reply);
                let get = |k: &str| fields.iter().find(|(name, _)| name == k).map(|(_, v)| v.as_str());
                if get("num-slaves") != Some("1") {
                    missing = Some(format!(
                        "sentinel {} does not see the replica yet",
                        sentinel.port()
                    ));
                } else if get("num-other-sentinels") != Some(expected_sentinels.as_str()) {
                    missing = Some(format!(
                        "sentinel {} does not see every other sentinel yet",
                        sentinel.port()
                    ));
                }
            }
            let Some(missing) = missing else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "the sentinel deployment was not ready within {READY_TIMEOUT:?}: {missing}"
                ))
                .into());
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// fred's URL for this deployment: the sentinels' addresses and the service name.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisSentinel;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let deployment = RedisSentinel::start(1).await?;
    /// assert!(deployment.url().contains("sentinelServiceName=stayfast"));
    /// # Ok(()) }
    /// ```
    pub fn url(&self) -> String {
        let mut ports = self.sentinels.iter().map(RedisServer::port);
        let first = ports.next().unwrap_or_default();
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{first}?sentinelServiceName={}",
            Self::SERVICE
        );
        for port in ports {
            url.push_str(&format!("&node=127.0.0.1:{port}"));
        }
        url
    }

    /// The server started as primary (after a failover, the replica is the primary).
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisSentinel;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let deployment = RedisSentinel::start(1).await?;
    /// assert_eq!(deployment.current_primary().await?, deployment.primary().port());
    /// # Ok(()) }
    /// ```
    pub fn primary(&self) -> &RedisServer {
        &self.primary
    }

    /// The server started as primary, to kill or pause it.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisSentinel;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut deployment = RedisSentinel::start(1).await?;
    /// deployment.primary_mut().kill()?;
    /// # Ok(()) }
    /// ```
    pub fn primary_mut(&mut self) -> &mut RedisServer {
        &mut self.primary
    }

    /// The server started as replica.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisSentinel;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let deployment = RedisSentinel::start(1).await?;
    /// assert_ne!(deployment.replica().port(), deployment.primary().port());
    /// # Ok(()) }
    /// ```
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// The server started as replica, to kill or pause it.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisSentinel;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut deployment = RedisSentinel::start(1).await?;
    /// deployment.replica_mut().pause()?; // nothing to fail over to
    /// deployment.replica_mut().resume()?;
    /// # Ok(()) }
    /// ```
    pub fn replica_mut(&mut self) -> &mut RedisServer {
        &mut self.replica
    }

    /// The sentinels.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisSentinel;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let deployment = RedisSentinel::start(3).await?;
    /// assert_eq!(deployment.sentinels().len(), 3);
    /// # Ok(()) }
    /// ```
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The port of the primary the sentinels name now
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`, asked of the first sentinel that answers).
    ///
    /// # Errors
    ///
    /// When no sentinel answers with an address.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisSentinel;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut deployment = RedisSentinel::start(1).await?;
    /// deployment.primary_mut().kill()?;
    /// let promoted = deployment.replica().port();
    /// while deployment.current_primary().await? != promoted {
    ///     tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn current_primary(&self) -> io::Result<u16> {
        let mut last = io::Error::other("no sentinel is running");
        for sentinel in &self.sentinels {
            match sentinel
                .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::SERVICE])
                .await
            {
                Ok(Reply::Array(Some(addr))) => {
                    if let Some(port) = addr.get(1).and_then(Reply::as_text).and_then(|p| p.parse().ok()) {
                        return Ok(port);
                    }
                    last = io::Error::other(format!("SENTINEL GET-MASTER-ADDR-BY-NAME: {addr:?}"));
                }
                Ok(other) => last = io::Error::other(format!("SENTINEL GET-MASTER-ADDR-BY-NAME: {other:?}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl fmt::Debug for RedisSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSentinel")
            .field("primary", &self.primary)
            .field("replica", &self.replica)
            .field("sentinels", &self.sentinels)
            .finish()
    }
}

/// A flat array reply of alternating names and values, as pairs.
fn pairs(reply: &Reply) -> Vec<(String, String)> {
    let Reply::Array(Some(items)) = reply else {
        return Vec::new();
    };
    items
        .chunks(2)
        .filter_map(|pair| Some((pair.first()?.as_text()?, pair.get(1)?.as_text()?)))
        .collect()
}
