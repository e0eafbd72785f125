//! A throwaway Redis Cluster on loopback: primaries, optionally replicas, formed with
//! plain cluster commands (no `redis-cli` needed).

use std::{fmt, io, net::TcpListener, time::Duration};

use tokio::time::{Instant, sleep};

use super::{Launch, RedisServer, Reply, TestServerError};

/// How long a new cluster may take to agree on its slots and replicas.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Cluster slots: every key hashes to one of them.
const SLOTS: u32 = crate::redis::CLUSTER_SLOTS as u32;

/// A Redis Cluster of `redis-server` processes on free loopback ports, stopped (every
/// process, by pid) when dropped, also when a test panics.
///
/// Each primary holds an equal share of the 16,384 slots; each replica follows one
/// primary. Nodes use a 1 s `cluster-node-timeout`, so a killed primary's replica is
/// promoted in seconds rather than the default 15 s. Every node's cluster bus gets its
/// own free port (`cluster-port`), so nothing depends on `port + 10000` being free.
///
/// # Examples
///
/// ```no_run
/// use stayfast_core::test_util::RedisCluster;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = RedisCluster::start(3, 0).await?; // about 1–3 s
/// let mut config = stayfast_core::redis::RedisConfig::default();
/// config.url = cluster.url(); // redis-cluster://127.0.0.1:<p1>?node=127.0.0.1:<p2>&…
/// # let _ = config;
/// # Ok(()) }
/// ```
pub struct RedisCluster {
    /// Primaries first, in slot order; then each primary's replicas, in the same order.
    nodes: Vec<RedisServer>,
    primaries: usize,
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas` replicas each, and waits until every
    /// node reports `cluster_state:ok` and knows every replica's role.
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`]; [`TestServerError::Io`] when `primaries` is 0 or the
    /// cluster does not form within 30 s (with what the nodes reported).
    pub async fn start(primaries: usize, replicas: usize) -> Result<Self, TestServerError> {
        if primaries == 0 {
            return Err(io::Error::other("a cluster needs at least one primary").into());
        }
        let mut nodes = Vec::with_capacity(primaries * (1 + replicas));
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(RedisServer::start_with(node_launch()?).await?);
        }
        let cluster = Self { nodes, primaries };
        cluster.form(replicas).await?;
        Ok(cluster)
    }

    async fn form(&self, replicas: usize) -> Result<(), TestServerError> {
        let n = self.primaries as u32;
        for (i, node) in self.nodes.iter().enumerate() {
            // A distinct epoch per node, as `redis-cli --cluster create` sets: without it
            // the nodes resolve their collisions one by one, which takes seconds.
            expect_ok(
                node.command(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])
                    .await?,
            )?;
            if i < self.primaries {
                let first = i as u32 * SLOTS / n;
                let last = (i as u32 + 1) * SLOTS / n - 1;
                expect_ok(
                    node.command(&["CLUSTER", "ADDSLOTSRANGE", &first.to_string(), &last.to_string()])
                        .await?,
                )?;
            }
        }
        let first = &self.nodes[0];
        for node in &self.nodes[1..] {
            let bus = bus_port(node).await?;
            expect_ok(
                first
                    .command(&[
                        "CLUSTER",
                        "MEET",
                        "127.0.0.1",
                        &node.port().to_string(),
                        &bus.to_string(),
                    ])
                    .await?,
            )?;
        }
        let total = self.nodes.len().to_string();
        self.wait_until("every node knows every other", |info, _| {
            field(info, "cluster_known_nodes") == Some(total.as_str())
        })
        .await?;
        for (r, replica) in self.nodes[self.primaries..].iter().enumerate() {
            let primary = &self.nodes[r % self.primaries];
            let id = text(primary.command(&["CLUSTER", "MYID"]).await?)?;
            expect_ok(replica.command(&["CLUSTER", "REPLICATE", &id]).await?)?;
        }
        let replicas_total = self.primaries * replicas;
        self.wait_until(
            "every slot is served and every replica is known",
            |info, nodes| {
                field(info, "cluster_state") == Some("ok")
                    && nodes.lines().filter(|l| l.contains("slave")).count() == replicas_total
            },
        )
        .await?;
        for replica in &self.nodes[self.primaries..] {
            self.wait_for_sync(replica).await?;
        }
        Ok(())
    }

    /// Waits until `replica` has synced with its primary (`master_link_status:up`).
    async fn wait_for_sync(&self, replica: &RedisServer) -> Result<(), TestServerError> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let info = text(replica.command(&["INFO", "replication"]).await?)?;
            if field(&info, "master_link_status") == Some("up") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "replica {} did not sync within {FORM_TIMEOUT:?}:\n{info}",
                    replica.port()
                ))
                .into());
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls every node until `ready(CLUSTER INFO, CLUSTER NODES)` holds on all of them.
    async fn wait_until(
        &self,
        what: &str,
        ready: impl Fn(&str, &str) -> bool,
    ) -> Result<(), TestServerError> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let mut last = String::new();
            let mut all = true;
            for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
                let info = text(node.command(&["CLUSTER", "INFO"]).await?)?;
                let nodes = text(node.command(&["CLUSTER", "NODES"]).await?)?;
                if !ready(&info, &nodes) {
                    all = false;
                    last = format!("node {}:\n{info}\n{nodes}", node.port());
                    break;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "the cluster did not reach \"{what}\" within {FORM_TIMEOUT:?}; last seen on {last}"
                ))
                .into());
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// fred's URL for this cluster: `redis-cluster://127.0.0.1:<first>?node=…` listing
    /// every primary (fred learns the rest from them).
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisCluster;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = RedisCluster::start(3, 0).await?;
    /// assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));
    /// # Ok(()) }
    /// ```
    pub fn url(&self) -> String {
        let mut ports = self.nodes[..self.primaries].iter().map(RedisServer::port);
        let first = ports.next().unwrap_or_default();
        let others: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        if others.is_empty() {
            format!("redis-cluster://127.0.0.1:{first}")
        } else {
            format!("redis-cluster://127.0.0.1:{first}?{}", others.join("&"))
        }
    }

    /// Every node: the primaries as started, then their replicas (roles change after a
    /// failover; ask [`primary_of`](Self::primary_of) for the current one).
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisCluster;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = RedisCluster::start(3, 1).await?;
    /// assert_eq!(cluster.nodes().len(), 6);
    /// # Ok(()) }
    /// ```
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A node, to kill, pause or restart it.
    ///
    /// # Panics
    ///
    /// When `index` is out of range (a test's own mistake).
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisCluster;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut cluster = RedisCluster::start(3, 1).await?;
    /// cluster.node_mut(0).kill()?; // kill -9 the first primary: its replica takes over
    /// # Ok(()) }
    /// ```
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// Waits until every running node reports `cluster_state:ok`: after nodes were
    /// restarted (they reload their `nodes.conf` and find each other again) or resumed.
    ///
    /// # Errors
    ///
    /// When a running node does not answer, or the state is not ok within 30 s.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisCluster;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut cluster = RedisCluster::start(3, 0).await?;
    /// for i in 0..3 {
    ///     cluster.node_mut(i).restart().await?; // empty, same port, same slots
    /// }
    /// cluster.settled().await?;
    /// # Ok(()) }
    /// ```
    pub async fn settled(&self) -> Result<(), TestServerError> {
        self.wait_until("every node serves its slots", |info, _| {
            field(info, "cluster_state") == Some("ok")
        })
        .await
    }

    /// The port of the node now serving `key`'s slot as primary, asked of any live node
    /// (`CLUSTER SHARDS` is not in Redis 7.0; `CLUSTER NODES` is).
    ///
    /// # Errors
    ///
    /// When no live node answers, or none claims the slot.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisCluster;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = RedisCluster::start(3, 0).await?;
    /// let port = cluster.primary_of("{tx:ab}:window").await?;
    /// assert!(cluster.nodes().iter().any(|n| n.port() == port));
    /// # Ok(()) }
    /// ```
    pub async fn primary_of(&self, key: &str) -> io::Result<u16> {
        let mut last = io::Error::other("no node is running");
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let slot = match node.command(&["CLUSTER", "KEYSLOT", key]).await {
                Ok(Reply::Integer(slot)) => slot,
                Ok(other) => return Err(io::Error::other(format!("CLUSTER KEYSLOT: {other:?}"))),
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let nodes = text(node.command(&["CLUSTER", "NODES"]).await?)?;
            return primary_serving(&nodes, slot)
                .ok_or_else(|| io::Error::other(format!("no primary serves slot {slot}:\n{nodes}")));
        }
        Err(last)
    }
}

impl RedisCluster {
    /// A counter of `INFO <section>` summed over every running node: the `field` of the
    /// line named `line` (`info_total("errorstats", "errorstat_MOVED", "count")` counts
    /// the MOVED replies the cluster sent); 0 where the line is absent.
    ///
    /// # Errors
    ///
    /// When a running node does not answer.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::RedisCluster;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = RedisCluster::start(3, 0).await?;
    /// assert_eq!(cluster.info_total("errorstats", "errorstat_MOVED", "count").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn info_total(&self, section: &str, line: &str, field: &str) -> io::Result<u64> {
        let mut total = 0;
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let info = text(node.command(&["INFO", section]).await?)?;
            total += info
                .lines()
                .filter_map(|l| l.strip_prefix(line)?.strip_prefix(':'))
                .flat_map(|rest| rest.split(','))
                .filter_map(|kv| kv.trim().strip_prefix(field)?.strip_prefix('='))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Waits until `redis`, a handle on this cluster, gets a command through (fred has
    /// connected and loaded the slots), up to `within`.
    ///
    /// # Errors
    ///
    /// `TimedOut` when no command went through within `within`.
    ///
    /// ```no_run
    /// # use stayfast_core::{redis::{Redis, RedisConfig}, test_util::RedisCluster};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = RedisCluster::start(3, 0).await?;
    /// let mut config = RedisConfig::default();
    /// config.url = cluster.url();
    /// let redis = Redis::connect(&config).await?;
    /// cluster.routable(&redis, std::time::Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn routable(&self, redis: &crate::redis::Redis, within: Duration) -> io::Result<()> {
        let started = Instant::now();
        while redis.set("stayfast:test:probe", "x", None).await.is_err() {
            if started.elapsed() >= within {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no command went through the cluster within {within:?}"),
                ));
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("primaries", &self.primaries)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// A cluster node's arguments, with a free port of its own for the cluster bus.
fn node_launch() -> io::Result<Launch> {
    let bus = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--cluster-port",
        &bus.to_string(),
        // A replica may take over however stale its data: a drill kills a primary
        // moments after the replica attached, before the staleness check would pass.
        "--cluster-replica-validity-factor",
        "0",
    ];
    Ok(Launch {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Launch::default()
    })
}

/// The cluster bus port a node listens on (`CONFIG GET cluster-port`).
async fn bus_port(node: &RedisServer) -> io::Result<u16> {
    match node.command(&["CONFIG", "GET", "cluster-port"]).await? {
        Reply::Array(Some(items)) => items
            .get(1)
            .and_then(|v| match v {
                Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
                _ => None,
            })
            .ok_or_else(|| io::Error::other("CONFIG GET cluster-port: no port")),
        other => Err(io::Error::other(format!("CONFIG GET cluster-port: {other:?}"))),
    }
}

/// The port of the primary whose slot ranges in `CLUSTER NODES` include `slot`.
fn primary_serving(nodes: &str, slot: i64) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let is_live_primary = fields
            .get(2)
            .is_some_and(|f| f.contains("master") && !f.contains("fail"));
        let serves = fields.iter().skip(8).any(|range| {
            let mut ends = range.split('-').map(|n| n.parse::<i64>());
            match (ends.next(), ends.next()) {
                (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                (Some(Ok(a)), None) => a == slot,
                _ => false,
            }
        });
        if !(is_live_primary && serves) {
            return None;
        }
        // `127.0.0.1:7000@17000` (Redis 7 may append `,hostname`).
        let addr = fields.get(1)?.split('@').next()?;
        addr.rsplit(':').next()?.parse().ok()
    })
}

/// A `key:value` line of an `INFO`-style reply.
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

fn text(reply: Reply) -> io::Result<String> {
    match reply {
        Reply::Error(e) => Err(io::Error::other(e)),
        other => other
            .as_text()
            .ok_or_else(|| io::Error::other(format!("expected text, got {other:?}"))),
    }
}

fn expect_ok(reply: Reply) -> io::Result<()> {
    match reply {
        Reply::Simple(ok) if ok == "OK" => Ok(()),
        other => Err(io::Error::other(format!("expected OK, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_primary_serving_a_slot() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922 12000
c3 127.0.0.1:7003@17003 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
";
        assert_eq!(primary_serving(nodes, 0), Some(7001));
        assert_eq!(primary_serving(nodes, 5461), Some(7002));
        assert_eq!(primary_serving(nodes, 12000), Some(7002));
        assert_eq!(
            primary_serving(nodes, 16383),
            None,
            "a failed primary serves nothing"
        );
    }
}
