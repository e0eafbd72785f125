//! The Redis a store suite runs against, chosen by `STAYFAST_TEST_DEPLOYMENT`: one node
//! (the default), a 3-primary cluster, a sentinel deployment, TLS, or an ACL user with
//! the default user off. `scripts/test` runs the knowledge, transcript and cache suites
//! once per deployment; their tests do not know which one they got.
//!
//! What a test does to "the Redis" happens to the whole deployment: `kill`, `pause`,
//! `resume` and `restart` act on every data node (a cluster's primaries, a sentinel
//! deployment's primary and replica — so there is nothing to fail over to, as with one
//! node), and a raw `command` goes where its key lives (the slot's primary, the
//! sentinels' primary) or, without a key (`KEYS`, `CONFIG SET`), to every primary, its
//! replies merged.

use std::io;

use stayfast::{
    redis::{RedisConfig, RedisTls},
    test_util::{
        ClientAuth, RedisCluster, RedisSentinel, RedisServer, Reply, TestServerError, TlsRedisServer,
    },
};

use super::acl::{PASSWORD, documented_acl_lines, union_of_the_documented_users};

/// The variable naming the deployment.
pub(crate) const VARIABLE: &str = "STAYFAST_TEST_DEPLOYMENT";

/// The deployments a suite runs on, by their `STAYFAST_TEST_DEPLOYMENT` names.
pub(crate) const NAMES: [&str; 5] = ["single", "cluster", "sentinel", "tls", "acl"];

/// The ACL deployment's user, and the administrator the raw commands run as.
const USER: &str = "stayfast";
const ADMIN: &str = "stayfast-admin";

enum Nodes {
    Single(RedisServer),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
    Tls(TlsRedisServer),
    Acl(RedisServer),
}

/// A Redis deployment this test owns; every process is stopped by pid when it drops.
pub(crate) struct TestRedis {
    nodes: Nodes,
}

impl TestRedis {
    /// Starts the deployment `STAYFAST_TEST_DEPLOYMENT` names (one node when unset).
    ///
    /// # Panics
    ///
    /// When the variable names no deployment (listing those it may name).
    pub(crate) async fn start() -> Result<Self, TestServerError> {
        let name = std::env::var(VARIABLE).unwrap_or_default();
        let nodes = match name.as_str() {
            "" | "single" => Nodes::Single(RedisServer::start().await?),
            "cluster" => Nodes::Cluster(RedisCluster::start(3, 0).await?),
            "sentinel" => Nodes::Sentinel(RedisSentinel::start(1).await?),
            "tls" => Nodes::Tls(TlsRedisServer::start(ClientAuth::None).await?),
            "acl" => {
                let mut server = RedisServer::start().await?;
                least_privilege(&mut server).await?;
                Nodes::Acl(server)
            }
            other => panic!("{VARIABLE}={other:?}: not one of {NAMES:?}"),
        };
        Ok(Self { nodes })
    }

    /// Points `config` at the deployment: its URL, and the CA (TLS) or the user (ACL).
    pub(crate) fn configure(&self, config: &mut RedisConfig) {
        match &self.nodes {
            Nodes::Single(server) => config.url = server.url(),
            Nodes::Cluster(cluster) => config.url = cluster.url(),
            Nodes::Sentinel(sentinel) => config.url = sentinel.url(),
            Nodes::Tls(server) => {
                config.url = server.url();
                let mut tls = RedisTls::default();
                tls.ca_file = Some(server.ca_file().to_path_buf());
                config.tls = Some(tls);
            }
            Nodes::Acl(server) => {
                config.url = server.url();
                config.username = Some(USER.into());
                config.password = Some(PASSWORD.into());
            }
        }
    }

    /// Whether commands reach the deployment only once fred has learnt its layout (a
    /// cluster's slots, the sentinels' primary).
    pub(crate) fn learnt_after_connecting(&self) -> bool {
        matches!(self.nodes, Nodes::Cluster(_) | Nodes::Sentinel(_))
    }

    /// How many nodes hold data: a cluster's primaries, the sentinel deployment's
    /// primary and replica, the one server otherwise.
    fn data_nodes(&self) -> usize {
        match &self.nodes {
            Nodes::Cluster(cluster) => cluster.nodes().len(),
            Nodes::Sentinel(_) => 2,
            _ => 1,
        }
    }

    /// The `index`th data node.
    fn data_node(&mut self, index: usize) -> &mut RedisServer {
        match &mut self.nodes {
            Nodes::Single(server) | Nodes::Acl(server) => server,
            Nodes::Tls(server) => server.server_mut(),
            Nodes::Cluster(cluster) => cluster.node_mut(index),
            Nodes::Sentinel(sentinel) => {
                if index == 0 {
                    sentinel.primary_mut()
                } else {
                    sentinel.replica_mut()
                }
            }
        }
    }

    /// The data nodes, to read.
    fn data_nodes_ref(&self) -> Vec<&RedisServer> {
        match &self.nodes {
            Nodes::Single(server) | Nodes::Acl(server) => vec![server],
            Nodes::Tls(server) => vec![server.server()],
            Nodes::Cluster(cluster) => cluster.nodes().iter().collect(),
            Nodes::Sentinel(sentinel) => vec![sentinel.primary(), sentinel.replica()],
        }
    }

    /// `kill -9` of every data node: Redis is gone.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        for i in 0..self.data_nodes() {
            self.data_node(i).kill()?;
        }
        Ok(())
    }

    /// `SIGSTOP` of every data node: connections stay open, nothing answers.
    pub(crate) fn pause(&self) -> io::Result<()> {
        for node in self.data_nodes_ref() {
            node.pause()?;
        }
        Ok(())
    }

    /// `SIGCONT` of every data node.
    pub(crate) fn resume(&self) -> io::Result<()> {
        for node in self.data_nodes_ref() {
            node.resume()?;
        }
        Ok(())
    }

    /// Every data node killed and started again, empty, on its port; returns once the
    /// deployment serves again (a cluster's slots, the ACL users set up again).
    pub(crate) async fn restart(&mut self) -> Result<(), TestServerError> {
        if let Nodes::Acl(server) = &mut self.nodes {
            // The users live in memory: the fresh server has only the default user.
            server.authenticate_as(None);
        }
        self.kill()?;
        for i in 0..self.data_nodes() {
            self.data_node(i).restart().await?;
        }
        match &mut self.nodes {
            Nodes::Cluster(cluster) => cluster.settled().await?,
            Nodes::Acl(server) => least_privilege(server).await?,
            _ => {}
        }
        Ok(())
    }

    /// Sends one raw command (see the [module docs](self)) over a fresh connection.
    pub(crate) async fn command(&self, args: &[&str]) -> io::Result<Reply> {
        match &self.nodes {
            Nodes::Single(server) | Nodes::Acl(server) => server.command(args).await,
            Nodes::Tls(server) => server.server().command(args).await,
            Nodes::Sentinel(sentinel) => current_primary(sentinel).await?.command(args).await,
            Nodes::Cluster(cluster) => match key_of(args) {
                Some(key) => {
                    let port = cluster.primary_of(key).await?;
                    let node = cluster
                        .nodes()
                        .iter()
                        .find(|n| n.port() == port)
                        .ok_or_else(|| io::Error::other(format!("no node on port {port}")))?;
                    node.command(args).await
                }
                None => {
                    let mut replies = Vec::new();
                    for node in cluster.nodes() {
                        replies.push(node.command(args).await?);
                    }
                    Ok(merge(replies))
                }
            },
        }
    }

    /// How many times the deployment executed `command` (lower case) for its clients,
    /// summed over its primaries (`INFO commandstats`' `calls=`; a replica counts the
    /// commands it replays too).
    pub(crate) async fn executions(&self, command: &str) -> io::Result<u64> {
        if let Nodes::Sentinel(sentinel) = &self.nodes {
            return current_primary(sentinel).await?.executions(command).await;
        }
        let mut total = 0;
        for node in self.data_nodes_ref() {
            if node.pid().is_some() {
                total += node.executions(command).await?;
            }
        }
        Ok(total)
    }
}

impl TestRedis {
    /// How many Lua scripts the deployment ran for its clients, however they were sent
    /// ([`script_runs`], summed over its primaries).
    pub(crate) async fn script_runs(&self) -> io::Result<u64> {
        if let Nodes::Sentinel(sentinel) = &self.nodes {
            return script_runs(current_primary(sentinel).await?).await;
        }
        let mut total = 0;
        for node in self.data_nodes_ref() {
            if node.pid().is_some() {
                total += script_runs(node).await?;
            }
        }
        Ok(total)
    }
}

/// How many Lua scripts `node` ran for its clients, however they were sent: `EVAL`
/// calls, plus the `EVALSHA` calls that found their script (a `NOSCRIPT` reply is
/// counted among `EVALSHA`'s calls, and the handle then sends the body as an `EVAL`).
pub(crate) async fn script_runs(node: &RedisServer) -> io::Result<u64> {
    let sent = node.executions("eval").await? + node.executions("evalsha").await?;
    let info = node
        .command(&["INFO", "errorstats"])
        .await?
        .as_text()
        .unwrap_or_default();
    let noscript: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_NOSCRIPT:count="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Ok(sent - noscript)
}

/// The node the sentinels name as primary now.
async fn current_primary(sentinel: &RedisSentinel) -> io::Result<&RedisServer> {
    let port = sentinel.current_primary().await?;
    [sentinel.primary(), sentinel.replica()]
        .into_iter()
        .find(|n| n.port() == port)
        .ok_or_else(|| io::Error::other(format!("the sentinels name port {port}, not a node of theirs")))
}

/// The key of a raw command, for routing: its first argument, except for the commands
/// the suites send without one.
fn key_of<'a>(args: &[&'a str]) -> Option<&'a str> {
    const KEYLESS: [&str; 9] = [
        "KEYS", "CONFIG", "INFO", "FLUSHALL", "FLUSHDB", "CLIENT", "DBSIZE", "PING", "SCAN",
    ];
    let command = args.first()?;
    if KEYLESS.iter().any(|k| k.eq_ignore_ascii_case(command)) {
        None
    } else {
        args.get(1).copied()
    }
}

/// One reply from every primary's: arrays concatenated, integers summed, the first
/// error, or else the first reply (`OK` from each).
fn merge(replies: Vec<Reply>) -> Reply {
    if let Some(error) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
        return error.clone();
    }
    if replies.iter().all(|r| matches!(r, Reply::Array(_))) {
        let items = replies
            .into_iter()
            .flat_map(|r| match r {
                Reply::Array(Some(items)) => items,
                _ => Vec::new(),
            })
            .collect();
        return Reply::Array(Some(items));
    }
    if replies.iter().all(|r| matches!(r, Reply::Integer(_))) {
        return Reply::Integer(replies.iter().filter_map(Reply::as_integer).sum());
    }
    replies.into_iter().next().unwrap_or(Reply::Array(None))
}

/// The ACL deployment: the documented rights of every store as one user (with every
/// key pattern: the suites use many prefixes; `tests/acl.rs` checks the documented
/// patterns), an administrator for the raw commands, and the default user off.
async fn least_privilege(server: &mut RedisServer) -> Result<(), TestServerError> {
    let mut user: Vec<String> = union_of_the_documented_users(USER)
        .into_iter()
        .filter(|rule| !rule.starts_with('~'))
        .collect();
    user.push("~*".into());
    let admin: Vec<String> = [
        "ACL",
        "SETUSER",
        ADMIN,
        "on",
        &format!(">{PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]
    .map(String::from)
    .into();
    let off = documented_acl_lines()
        .pop()
        .ok_or_else(|| io::Error::other("the README documents `ACL SETUSER default off`"))?;
    for line in [user, admin, off] {
        let args: Vec<&str> = line.iter().map(String::as_str).collect();
        let reply = server.command(&args).await?;
        if reply != Reply::Simple("OK".into()) {
            return Err(io::Error::other(format!("{line:?}: {reply:?}")).into());
        }
    }
    server.authenticate_as(Some((ADMIN, PASSWORD)));
    Ok(())
}
