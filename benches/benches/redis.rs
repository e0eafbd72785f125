//! Raw fred against the same commands through stayfast's `Redis` handle, on one
//! throwaway redis-server, in one run: sequential latency (p50, p99) and the throughput
//! of 50 concurrent tasks, for GET, HSET and HGETALL. Three clients: raw fred as it comes
//! (no deadline at all: the configuration that hangs), raw fred with the same per-command
//! deadline stayfast hands it (`Options { timeout, fail_fast, max_attempts: 1 }`), and
//! stayfast. Runs alternate (A/B/C/A/B/C…) so drift hits all; the Prometheus recorder is
//! installed, as in production.
//!
//! Run: `cargo bench -p stayfast-benches --bench redis` (needs redis-server installed).

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
    types::config::Options,
};
use stayfast_core::{
    redis::{Redis, RedisConfig},
    test_util::RedisServer,
};

const POOL: usize = 4;
const SEQUENTIAL: usize = 20_000;
const ROUNDS: usize = 3;
const TASKS: usize = 50;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(1);

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

/// Operations per second of `TASKS` tasks calling as fast as they can.
async fn throughput<F, Fut>(call: F) -> f64
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
    let started = Instant::now();
    tokio::time::sleep(THROUGHPUT_WINDOW).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        t.await.expect("a bench task");
    }
    n as f64 / elapsed.as_secs_f64()
}

#[derive(Default)]
struct Figures {
    p50: Vec<Duration>,
    p99: Vec<Duration>,
    ops: Vec<f64>,
}

fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / `--list`: nothing to run
    }
    let _recorder = support::install_recorder();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let server = RedisServer::start().await.expect("redis-server (install it to run this bench)");
        let raw = Builder::from_config(Config::from_url(&server.url()).expect("a url"))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_pool(POOL)
            .expect("a raw pool");
        raw.init().await.expect("raw connected");
        let mut config = RedisConfig::default();
        config.url = server.url();
        config.pool_size = POOL as u32;
        let redis = Redis::connect(&config).await.expect("a handle");
        raw.set::<(), _, _>("k", "v", None, None, false).await.expect("seed k");
        raw.hset::<i64, _, _>("h", [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]).await.expect("seed h");

        println!("| command | client | p50 | p99 | ops/s (50 tasks) |");
        println!("|---|---|---|---|---|");
        let mut summary = Vec::new();
        for op in [Op::Get, Op::Hset, Op::Hgetall] {
            let (mut raw_f, mut dl_f, mut sf_f) = (Figures::default(), Figures::default(), Figures::default());
            for _ in 0..ROUNDS {
                for (f, deadline) in [(&mut raw_f, false), (&mut dl_f, true)] {
                    let l = sequential(SEQUENTIAL, || raw_op(&raw, op, deadline)).await;
                    f.p50.push(percentile(&l, 0.50));
                    f.p99.push(percentile(&l, 0.99));
                }
                let l = sequential(SEQUENTIAL, || wrapped_op(&redis, op)).await;
                sf_f.p50.push(percentile(&l, 0.50));
                sf_f.p99.push(percentile(&l, 0.99));
                for (f, deadline) in [(&mut raw_f, false), (&mut dl_f, true)] {
                    let r = raw.clone();
                    f.ops.push(
                        throughput(move || {
                            let r = r.clone();
                            async move { raw_op(&r, op, deadline).await }
                        })
                        .await,
                    );
                }
                let s = redis.clone();
                sf_f.ops.push(
                    throughput(move || {
                        let s = s.clone();
                        async move { wrapped_op(&s, op).await }
                    })
                    .await,
                );
            }
            for (client, f) in [("raw fred, no deadline", &raw_f), ("raw fred, deadline in Options", &dl_f), ("stayfast", &sf_f)] {
                println!(
                    "| {op:?} | {client} | {:.1} µs | {:.1} µs | {:.0} |",
                    median(&f.p50).as_secs_f64() * 1e6,
                    median(&f.p99).as_secs_f64() * 1e6,
                    median(&f.ops)
                );
            }
            let p50_gap = median(&sf_f.p50).as_secs_f64() * 1e6 - median(&raw_f.p50).as_secs_f64() * 1e6;
            let ratio = median(&sf_f.ops) / median(&raw_f.ops);
            let ratio_dl = median(&sf_f.ops) / median(&dl_f.ops);
            summary.push(format!(
                "{op:?}: p50 {p50_gap:+.1} µs vs raw (target ≤ 3 µs); throughput {ratio:.2}× raw, {ratio_dl:.2}× raw with a deadline \
                 (target ≥ 0.95); ops/s spread over {ROUNDS} rounds: raw {:.0}–{:.0}, stayfast {:.0}–{:.0}",
                raw_f.ops.iter().cloned().fold(f64::MAX, f64::min),
                raw_f.ops.iter().cloned().fold(0.0, f64::max),
                sf_f.ops.iter().cloned().fold(f64::MAX, f64::min),
                sf_f.ops.iter().cloned().fold(0.0, f64::max),
            ));
        }
        println!();
        for line in summary {
            println!("{line}");
        }
        let _ = raw.quit().await;
    });
}
