//! Raw fred against stayfast's `Redis` handle on one throwaway redis-server: what the
//! `redis` bench and the report both measure, from this one copy.
//!
//! Four clients, each with a pool of the same size:
//!
//! - [`Client::Raw`]: raw fred as it comes (no deadline at all: the configuration
//!   that hangs when Redis does);
//! - [`Client::RawTimeout`]: the same pool, each call inside `tokio::time::timeout`
//!   with stayfast's 2 s bound (what one writes by hand to stop the hang);
//! - [`Client::RawTuned`]: raw fred given what stayfast gives it — the same
//!   per-command deadline (`Options { timeout, fail_fast, max_attempts: 1 }`) and the
//!   same connection settings (unresponsive-connection check, bounded command buffer,
//!   one attempt, connected clients preferred), so the gap to it is the wrapper's own
//!   cost;
//! - [`Client::Stayfast`]: the handle.
//!
//! Throughput is measured in paired rounds: every client back to back within a round,
//! in an order that rotates each round, so drift in the machine's speed hits all alike;
//! verdicts are medians (with quartiles) of per-round ratios.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    clients::Pool,
    interfaces::{ClientLike, HashesInterface, KeysInterface},
    prelude::{Builder, Config, ReconnectPolicy},
    types::config::{Options, UnresponsiveConfig},
};
use stayfast_core::{
    redis::{Redis, RedisConfig},
    test_util::{RedisCluster, RedisServer},
};

use crate::stats::percentile;

/// The bound the hand-written `tokio::time::timeout` uses: stayfast's default
/// `command_timeout`.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis command the benches time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET k` (a short string).
    Get,
    /// `HSET h a 1`.
    Hset,
    /// `HGETALL h` (four fields).
    Hgetall,
}

impl Op {
    /// Every command, in the order the tables list them.
    pub const ALL: [Op; 3] = [Op::Get, Op::Hset, Op::Hgetall];

    /// The command's name, upper case.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Hset => "HSET",
            Op::Hgetall => "HGETALL",
        }
    }

    /// The commands named in `STAYFAST_BENCH_OPS` (`get,hset`, any case), or all.
    pub fn selected() -> Vec<Op> {
        match std::env::var("STAYFAST_BENCH_OPS") {
            Ok(names) => Op::ALL
                .into_iter()
                .filter(|op| names.split(',').any(|n| n.trim().eq_ignore_ascii_case(op.name())))
                .collect(),
            Err(_) => Op::ALL.to_vec(),
        }
    }
}

/// One of the clients compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// Raw fred as it comes: no deadline.
    Raw,
    /// Raw fred inside `tokio::time::timeout(TIMEOUT, …)`.
    RawTimeout,
    /// Raw fred with stayfast's connection settings and per-command deadline.
    RawTuned,
    /// stayfast's `Redis` handle.
    Stayfast,
}

impl Client {
    /// All four clients.
    pub const ALL: [Client; 4] = [
        Client::Raw,
        Client::RawTimeout,
        Client::RawTuned,
        Client::Stayfast,
    ];
    /// The three the curves compare: raw, raw inside a timeout, stayfast.
    pub const CURVE: [Client; 3] = [Client::Raw, Client::RawTimeout, Client::Stayfast];

    /// A short label for tables and plot legends.
    pub fn label(self) -> &'static str {
        match self {
            Client::Raw => "raw fred",
            Client::RawTimeout => "raw fred + tokio timeout",
            Client::RawTuned => "raw fred, stayfast's settings",
            Client::Stayfast => "stayfast",
        }
    }

    /// What the label means, in a sentence.
    pub fn description(self) -> &'static str {
        match self {
            Client::Raw => "raw fred as it comes, no deadline",
            Client::RawTimeout => "raw fred as it comes, each call inside `tokio::time::timeout(2 s)`",
            Client::RawTuned => "raw fred with stayfast's connection settings and per-command deadline",
            Client::Stayfast => "stayfast's `Redis` handle",
        }
    }
}

/// One command on any fred client (a pool, or a pool carrying per-command options).
async fn raw_command<C: KeysInterface + HashesInterface + Sync>(client: &C, op: Op) -> bool {
    match op {
        Op::Get => client.get::<Option<String>, _>("k").await.is_ok(),
        Op::Hset => client.hset::<i64, _, _>("h", [("a", "1")]).await.is_ok(),
        Op::Hgetall => client.hgetall::<HashMap<String, String>, _>("h").await.is_ok(),
    }
}

/// The three pools and the handle, connected to one server, each with `pool_size`
/// connections.
#[derive(Debug)]
pub struct Clients {
    raw: Pool,
    tuned: Pool,
    tuned_options: Options,
    redis: Redis,
    pool_size: usize,
}

impl Clients {
    /// Connects every client to `url`, with `pool_size` connections each (stayfast's
    /// `RedisConfig::pool_size` and fred's pool size alike), on the current runtime.
    ///
    /// # Panics
    ///
    /// When a client cannot connect: a bench has nothing to measure then.
    pub async fn connect(url: &str, pool_size: usize) -> Self {
        let mut config = RedisConfig::default();
        config.url = url.to_owned();
        config.pool_size = u32::try_from(pool_size).expect("a pool size that fits u32");
        let raw = Builder::from_config(Config::from_url(url).expect("a url"))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_pool(pool_size)
            .expect("a raw pool");
        raw.init().await.expect("raw fred connected");
        let tuned = Builder::from_config(Config::from_url(url).expect("a url"))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .with_connection_config(|c| {
                c.max_command_attempts = 1;
                c.max_command_buffer_len = config.max_command_buffer as usize;
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(config.unresponsive_timeout),
                    interval: config.health_check_interval,
                };
            })
            .build_pool(pool_size)
            .expect("a tuned raw pool");
        tuned.prefer_connected(true);
        tuned.init().await.expect("tuned raw fred connected");
        let redis = Redis::connect(&config)
            .await
            .expect("stayfast's handle connected");
        let tuned_options = Options {
            timeout: Some(config.command_timeout),
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        Self {
            raw,
            tuned,
            tuned_options,
            redis,
            pool_size,
        }
    }

    /// The pool size every client was given.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Writes the keys the commands read (`k`, and `h` with four fields).
    ///
    /// # Panics
    ///
    /// When Redis refuses.
    pub async fn seed(&self) {
        self.raw
            .set::<(), _, _>("k", "v", None, None, false)
            .await
            .expect("seed k");
        self.raw
            .hset::<i64, _, _>("h", [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")])
            .await
            .expect("seed h");
    }

    /// One `op` through `client`.
    ///
    /// # Panics
    ///
    /// When the command fails: on loopback with nothing injected, it must not.
    pub async fn call(&self, client: Client, op: Op) {
        let ok = match client {
            Client::Raw => raw_command(&self.raw, op).await,
            Client::RawTimeout => matches!(
                tokio::time::timeout(TIMEOUT, raw_command(&self.raw, op)).await,
                Ok(true)
            ),
            Client::RawTuned => raw_command(&self.tuned.with_options(&self.tuned_options), op).await,
            Client::Stayfast => match op {
                Op::Get => self.redis.get::<Option<String>>("k").await.is_ok(),
                Op::Hset => self.redis.hset("h", [("a", "1")]).await.is_ok(),
                Op::Hgetall => self.redis.hgetall::<HashMap<String, String>>("h").await.is_ok(),
            },
        };
        assert!(ok, "{client:?} {op:?} failed");
    }

    /// Closes the raw pools (the handle closes when dropped).
    pub async fn quit(self) {
        let _ = self.raw.quit().await;
        let _ = self.tuned.quit().await;
    }
}

/// Latencies of `n` sequential calls, sorted.
pub async fn sequential<F, Fut>(n: usize, mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call().await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// CPU time used so far by this process's threads (the client side: redis-server is
/// another process), from Linux's per-thread scheduler statistics in nanoseconds; `None`
/// elsewhere.
pub fn client_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// What some tasks calling as fast as they can achieved in one window.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Calls completed per second.
    pub ops_per_sec: f64,
    /// Client CPU per call (all threads of this process): what the client's code costs,
    /// less swayed than throughput by how the cores are shared with redis-server.
    pub cpu_per_op: Option<Duration>,
}

/// `tasks` tasks calling `client`'s `op` back to back for `window`.
pub async fn throughput(
    clients: &Arc<Clients>,
    client: Client,
    op: Op,
    tasks: usize,
    window: Duration,
) -> Rate {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (stop, done, clients) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(clients));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    clients.call(client, op).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (started, cpu_before) = (Instant::now(), client_cpu());
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let (elapsed, cpu_after) = (started.elapsed(), client_cpu());
    for handle in handles {
        handle.await.expect("a bench task");
    }
    Rate {
        ops_per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_per_op: cpu_before.zip(cpu_after).map(|(before, after)| {
            after.saturating_sub(before) / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
        }),
    }
}

/// Per-client series of paired rounds, indexed like the `set` they were measured for.
#[derive(Clone, Debug)]
pub struct Rounds {
    /// The clients, in the order of the series.
    pub set: Vec<Client>,
    /// Calls per second, one per round, per client.
    pub ops: Vec<Vec<f64>>,
    /// Client CPU per call in seconds, one per round, per client (empty off Linux).
    pub cpu: Vec<Vec<f64>>,
}

impl Rounds {
    fn index(&self, client: Client) -> usize {
        self.set
            .iter()
            .position(|c| *c == client)
            .expect("a client measured in these rounds")
    }

    /// `client`'s calls per second, one per round.
    pub fn ops(&self, client: Client) -> &[f64] {
        &self.ops[self.index(client)]
    }

    /// `client`'s CPU per call (seconds), one per round.
    pub fn cpu(&self, client: Client) -> &[f64] {
        &self.cpu[self.index(client)]
    }

    /// Per-round throughput ratios `a / b`.
    pub fn ratio(&self, a: Client, b: Client) -> Vec<f64> {
        crate::stats::ratios(self.ops(a), self.ops(b))
    }

    /// Per-round CPU-per-call ratios `a / b`.
    pub fn cpu_ratio(&self, a: Client, b: Client) -> Vec<f64> {
        crate::stats::ratios(self.cpu(a), self.cpu(b))
    }
}

/// How a throughput comparison is run.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Concurrent callers.
    pub tasks: usize,
    /// How long each client is timed per round.
    pub window: Duration,
    /// Paired rounds.
    pub rounds: usize,
}

/// `set`'s throughput under `load`, in paired rounds whose order rotates each round.
/// Short windows (100 ms) keep a round's halves close in time: on a shared 2-core VM the
/// machine's speed drifts over seconds.
pub async fn paired_throughput(clients: &Arc<Clients>, set: &[Client], op: Op, load: Load) -> Rounds {
    let mut rounds = Rounds {
        set: set.to_vec(),
        ops: vec![Vec::with_capacity(load.rounds); set.len()],
        cpu: vec![Vec::with_capacity(load.rounds); set.len()],
    };
    for round in 0..load.rounds {
        for i in 0..set.len() {
            let index = (round + i) % set.len();
            let rate = throughput(clients, set[index], op, load.tasks, load.window).await;
            rounds.ops[index].push(rate.ops_per_sec);
            rounds.cpu[index].extend(rate.cpu_per_op.map(|d| d.as_secs_f64()));
        }
    }
    rounds
}

/// Sequential latency percentiles of one client over one round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
}

impl Percentiles {
    /// The percentiles of sorted latencies.
    pub fn of(sorted: &[Duration]) -> Self {
        Self {
            p50: percentile(sorted, 0.50),
            p90: percentile(sorted, 0.90),
            p99: percentile(sorted, 0.99),
            p999: percentile(sorted, 0.999),
        }
    }

    /// `(label, value)` pairs, in order.
    pub fn labelled(&self) -> [(&'static str, Duration); 4] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p999),
        ]
    }
}

/// Sequential latency of each client in `set`: `rounds` rounds of `calls` calls, the
/// order rotating each round; per client, one [`Percentiles`] per round.
pub async fn paired_latency(
    clients: &Clients,
    set: &[Client],
    op: Op,
    calls: usize,
    rounds: usize,
) -> Vec<Vec<Percentiles>> {
    let mut out = vec![Vec::with_capacity(rounds); set.len()];
    for round in 0..rounds {
        for i in 0..set.len() {
            let index = (round + i) % set.len();
            let sorted = sequential(calls, || clients.call(set[index], op)).await;
            out[index].push(Percentiles::of(&sorted));
        }
    }
    out
}

/// What the bench runs against: one node, or a 3-primary cluster
/// (`STAYFAST_BENCH_DEPLOYMENT=cluster`).
#[derive(Debug)]
pub enum Deployment {
    /// One redis-server.
    Single(RedisServer),
    /// A 3-primary loopback Redis Cluster.
    Cluster(RedisCluster),
}

impl Deployment {
    /// Starts what `STAYFAST_BENCH_DEPLOYMENT` names (`single`, the default, or
    /// `cluster`).
    ///
    /// # Panics
    ///
    /// When redis-server is missing or the variable names something else.
    pub async fn start() -> Self {
        match std::env::var("STAYFAST_BENCH_DEPLOYMENT").as_deref() {
            Ok("cluster") => Self::Cluster(
                RedisCluster::start(3, 0)
                    .await
                    .expect("a redis cluster (install redis-server to run this bench)"),
            ),
            Ok("single") | Err(_) => Self::Single(
                RedisServer::start()
                    .await
                    .expect("redis-server (install it to run this bench)"),
            ),
            Ok(other) => panic!("STAYFAST_BENCH_DEPLOYMENT={other}: expected `single` or `cluster`"),
        }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// `single node` or `3-primary cluster`.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Single(_) => "single node",
            Self::Cluster(_) => "3-primary cluster",
        }
    }
}
