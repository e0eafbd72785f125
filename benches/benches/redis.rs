//! Raw fred against the same commands through stayfast's `Redis` handle, on one
//! throwaway redis-server, in one run: sequential latency (p50, p99) and the throughput
//! of 50 concurrent tasks, for GET, HSET and HGETALL. Three clients: raw fred as it comes
//! (no deadline at all: the configuration that hangs); raw fred given what stayfast gives
//! it — the same per-command deadline (`Options { timeout, fail_fast, max_attempts: 1 }`)
//! and the same connection settings (unresponsive-connection check, bounded command
//! buffer, one attempt, connected clients preferred), so the gap to it is the wrapper's
//! own cost; and stayfast. Runs alternate (A/B/C, then B/C/A…) so drift hits all, and throughput is
//! judged by the median of per-round ratios; the Prometheus recorder is installed, as in
//! production.
//!
//! Run: `cargo bench -p stayfast-benches --bench redis` (needs redis-server installed);
//! `STAYFAST_BENCH_OPS=get` runs only the named commands;
//! `STAYFAST_BENCH_DEPLOYMENT=cluster` runs the same against a 3-primary loopback
//! Redis Cluster (every client connected to it as a cluster).

mod support;

use std::{
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

const POOL: usize = 4;
const SEQUENTIAL: usize = 20_000;
const LATENCY_ROUNDS: usize = 3;
const THROUGHPUT_ROUNDS: usize = 31;
const TASKS: usize = 50;
const THROUGHPUT_WINDOW: Duration = Duration::from_millis(100);

/// The three clients, as indexes into a round's figures.
const RAW: usize = 0;
const RAW_DEADLINE: usize = 1;
const STAYFAST: usize = 2;

#[derive(Clone, Copy, Debug)]
enum Op {
    Get,
    Hset,
    Hgetall,
}

/// One command on any fred client (a pool, or a pool carrying per-command options).
async fn raw_command<C: KeysInterface + HashesInterface + Sync>(client: &C, op: Op) -> bool {
    match op {
        Op::Get => client.get::<Option<String>, _>("k").await.is_ok(),
        Op::Hset => client.hset::<i64, _, _>("h", [("a", "1")]).await.is_ok(),
        Op::Hgetall => client
            .hgetall::<std::collections::HashMap<String, String>, _>("h")
            .await
            .is_ok(),
    }
}

async fn raw_op(pool: &Pool, op: Op, deadline: bool) {
    let ok = if deadline {
        let options = Options {
            timeout: Some(Duration::from_secs(2)),
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        raw_command(&pool.with_options(&options), op).await
    } else {
        raw_command(pool, op).await
    };
    assert!(ok, "raw {op:?} failed");
}

async fn wrapped_op(redis: &Redis, op: Op) {
    let ok = match op {
        Op::Get => redis.get::<Option<String>>("k").await.is_ok(),
        Op::Hset => redis.hset("h", [("a", "1")]).await.is_ok(),
        Op::Hgetall => redis
            .hgetall::<std::collections::HashMap<String, String>>("h")
            .await
            .is_ok(),
    };
    assert!(ok, "stayfast {op:?} failed");
}

/// Latencies of `n` sequential calls, sorted.
async fn sequential<F, Fut>(n: usize, mut call: F) -> Vec<Duration>
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// CPU time used so far by this process's threads (the client side: redis-server is
/// another process), from Linux's per-thread scheduler statistics in nanoseconds; `None`
/// elsewhere.
fn client_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// What `TASKS` tasks calling as fast as they can achieved.
#[derive(Clone, Copy)]
struct Rate {
    ops_per_sec: f64,
    /// Client CPU per call (all threads of this process): what the client's code costs,
    /// less swayed than throughput by how the two cores are shared with redis-server.
    cpu_per_op: Option<Duration>,
}

async fn throughput<F, Fut>(call: F) -> Rate
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (stop, done, call) = (Arc::clone(&stop), Arc::clone(&done), call.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    call().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (started, cpu_before) = (Instant::now(), client_cpu());
    tokio::time::sleep(THROUGHPUT_WINDOW).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let (elapsed, cpu_after) = (started.elapsed(), client_cpu());
    for t in tasks {
        t.await.expect("a bench task");
    }
    Rate {
        ops_per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_per_op: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| after.saturating_sub(before) / n.max(1) as u32),
    }
}

#[derive(Default)]
struct Figures {
    p50: Vec<Duration>,
    p99: Vec<Duration>,
    ops: Vec<f64>,
    cpu: Vec<Duration>,
}

fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    quantile(v, 0.5)
}

fn quantile<T: Copy + PartialOrd>(v: &[T], q: f64) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The commands to run: all, or those named in `STAYFAST_BENCH_OPS` (`get,hset`).
fn selected_ops() -> Vec<Op> {
    let all = [Op::Get, Op::Hset, Op::Hgetall];
    match std::env::var("STAYFAST_BENCH_OPS") {
        Ok(names) => all
            .into_iter()
            .filter(|op| {
                names
                    .split(',')
                    .any(|n| n.trim().eq_ignore_ascii_case(&format!("{op:?}")))
            })
            .collect(),
        Err(_) => all.to_vec(),
    }
}

/// What the bench runs against: one node, or a 3-primary cluster
/// (`STAYFAST_BENCH_DEPLOYMENT=cluster`).
#[derive(Debug)]
enum Deployment {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Deployment {
    async fn start() -> Self {
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

    fn url(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }
}

fn main() {
    let Some((_recorder, rt)) = support::real_server_bench() else {
        return;
    };
    rt.block_on(async {
        let deployment = Deployment::start().await;
        let url = deployment.url();
        println!("against {url}");
        let mut config = RedisConfig::default();
        config.url = url.clone();
        config.pool_size = POOL as u32;
        let raw = Builder::from_config(Config::from_url(&url).expect("a url"))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_pool(POOL)
            .expect("a raw pool");
        raw.init().await.expect("raw connected");
        let tuned = Builder::from_config(Config::from_url(&url).expect("a url"))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .with_connection_config(|c| {
                c.max_command_attempts = 1;
                c.max_command_buffer_len = config.max_command_buffer as usize;
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(config.unresponsive_timeout),
                    interval: config.health_check_interval,
                };
            })
            .build_pool(POOL)
            .expect("a tuned raw pool");
        tuned.prefer_connected(true);
        tuned.init().await.expect("tuned raw connected");
        let redis = Redis::connect(&config).await.expect("a handle");
        raw.set::<(), _, _>("k", "v", None, None, false).await.expect("seed k");
        raw.hset::<i64, _, _>("h", [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]).await.expect("seed h");

        println!("| command | client | p50 | p99 | ops/s, 50 tasks (median) | client CPU per call |");
        println!("|---|---|---|---|---|---|");
        let mut summary = Vec::new();
        for op in selected_ops() {
            let mut figures: [Figures; 3] = Default::default();
            for _ in 0..LATENCY_ROUNDS {
                for (client, f) in figures.iter_mut().enumerate() {
                    let l = match client {
                        RAW => sequential(SEQUENTIAL, || raw_op(&raw, op, false)).await,
                        RAW_DEADLINE => sequential(SEQUENTIAL, || raw_op(&tuned, op, true)).await,
                        _ => sequential(SEQUENTIAL, || wrapped_op(&redis, op)).await,
                    };
                    f.p50.push(percentile(&l, 0.50));
                    f.p99.push(percentile(&l, 0.99));
                }
            }
            // Throughput in paired rounds: the three clients back to back, in an order
            // that rotates each round, so a burst of load from elsewhere on the machine
            // hits one round of each rather than one client's whole measurement. The
            // verdict is the median of the per-round ratios. Short windows (100 ms, some
            // 20k calls each) keep a pair's two halves close in time: on a shared 2-core
            // VM the machine's speed drifts over seconds, and 500 ms windows let that
            // drift into the ratio.
            let (mut vs_raw, mut vs_deadline) = (Vec::new(), Vec::new());
            for round in 0..THROUGHPUT_ROUNDS {
                let mut rates = [Rate { ops_per_sec: 0.0, cpu_per_op: None }; 3];
                for i in 0..3 {
                    let client = (round + i) % 3;
                    rates[client] = match client {
                        RAW | RAW_DEADLINE => {
                            let deadline = client == RAW_DEADLINE;
                            let r = if deadline { tuned.clone() } else { raw.clone() };
                            throughput(move || {
                                let r = r.clone();
                                async move { raw_op(&r, op, deadline).await }
                            })
                            .await
                        }
                        _ => {
                            let s = redis.clone();
                            throughput(move || {
                                let s = s.clone();
                                async move { wrapped_op(&s, op).await }
                            })
                            .await
                        }
                    };
                    figures[client].ops.push(rates[client].ops_per_sec);
                    figures[client].cpu.extend(rates[client].cpu_per_op);
                }
                vs_raw.push(rates[STAYFAST].ops_per_sec / rates[RAW].ops_per_sec);
                vs_deadline.push(rates[STAYFAST].ops_per_sec / rates[RAW_DEADLINE].ops_per_sec);
            }
            for (client, f) in ["raw fred as it comes, no deadline", "raw fred, stayfast's settings and deadline", "stayfast"]
                .iter()
                .zip(&figures)
            {
                let cpu = if f.cpu.is_empty() {
                    "n/a".to_owned()
                } else {
                    format!("{:.2} µs", median(&f.cpu).as_secs_f64() * 1e6)
                };
                println!(
                    "| {op:?} | {client} | {:.1} µs | {:.1} µs | {:.0} | {cpu} |",
                    median(&f.p50).as_secs_f64() * 1e6,
                    median(&f.p99).as_secs_f64() * 1e6,
                    median(&f.ops)
                );
            }
            let p50_gap = |baseline: usize| {
                (median(&figures[STAYFAST].p50).as_secs_f64() - median(&figures[baseline].p50).as_secs_f64()) * 1e6
            };
            summary.push(format!(
                "{op:?}: p50 {:+.1} µs vs raw, {:+.1} µs vs raw with stayfast's settings (target ≤ 3 µs); throughput, median of \
                 {THROUGHPUT_ROUNDS} paired rounds (quartiles): {:.2}× raw ({:.2}–{:.2}), {:.2}× raw with stayfast's settings \
                 ({:.2}–{:.2}) (target ≥ 0.95)",
                p50_gap(RAW),
                p50_gap(RAW_DEADLINE),
                median(&vs_raw),
                quantile(&vs_raw, 0.25),
                quantile(&vs_raw, 0.75),
                median(&vs_deadline),
                quantile(&vs_deadline, 0.25),
                quantile(&vs_deadline, 0.75),
            ));
        }
        println!();
        for line in summary {
            println!("{line}");
        }
        let _ = raw.quit().await;
        let _ = tuned.quit().await;
    });
}
