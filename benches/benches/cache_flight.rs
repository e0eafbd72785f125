//! Single flight in `Cache::get_or_insert_with`, on one throwaway redis-server: 1000
//! concurrent callers of one cold key with a 5 ms loader (coalesced: one load), against
//! 1000 independent loads of the same loader — bare (1000 concurrent loader calls, no
//! cache: what the backend sees without coalescing) and through the cache (1000
//! callers, each its own cold key, so each loads). Figures: wall time until every caller
//! has its value, loader calls, Redis GETs and SETs. Runs alternate (A/B/C/A/B/C…) so
//! drift hits all; the Prometheus recorder is installed, as in production.
//!
//! Run: `cargo bench -p stayfast-benches --bench cache_flight` (needs redis-server).

mod support;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use stayfast::{
    cache::{Cache, CacheConfig},
    redis::{Redis, RedisConfig},
};
use stayfast_core::test_util::RedisServer;

const CALLERS: usize = 1000;
const LOAD: Duration = Duration::from_millis(5);
const ROUNDS: usize = 7;

/// The expensive call: 5 ms, counted.
async fn load(calls: Arc<AtomicU64>, n: usize) -> Result<String, std::io::Error> {
    calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(LOAD).await;
    Ok(format!("value {n}"))
}

/// Wall time until all `CALLERS` tasks made by `call` are done.
async fn all<F, Fut>(call: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS).map(|i| tokio::spawn(call(i))).collect();
    for task in tasks {
        task.await.expect("a bench task");
    }
    started.elapsed()
}

#[derive(Default)]
struct Figures {
    wall: Vec<Duration>,
    loads: Vec<u64>,
    gets: Vec<u64>,
    sets: Vec<u64>,
}

impl Figures {
    fn row(&self, name: &str) {
        let mut wall = self.wall.clone();
        wall.sort();
        let per_round = |v: &[u64]| {
            let (min, max) = (
                v.iter().min().copied().unwrap_or(0),
                v.iter().max().copied().unwrap_or(0),
            );
            if min == max {
                format!("{min}")
            } else {
                format!("{min}–{max}")
            }
        };
        println!(
            "| {name} | {:.1} ms | {:.1}–{:.1} ms | {} | {} | {} |",
            wall[wall.len() / 2].as_secs_f64() * 1e3,
            wall[0].as_secs_f64() * 1e3,
            wall[wall.len() - 1].as_secs_f64() * 1e3,
            per_round(&self.loads),
            per_round(&self.gets),
            per_round(&self.sets),
        );
    }
}

async fn executions(server: &RedisServer, command: &str) -> u64 {
    server.executions(command).await.expect("INFO commandstats")
}

fn main() {
    let Some((_recorder, rt)) = support::real_server_bench() else {
        return;
    };
    rt.block_on(async {
        let server = RedisServer::start()
            .await
            .expect("redis-server (install it to run this bench)");
        let mut config = RedisConfig::default();
        config.url = server.url();
        let redis = Redis::connect(&config).await.expect("a handle");
        let cache = Cache::new(redis, "bench", &CacheConfig::default()).expect("a cache");

        let (mut coalesced, mut bare, mut independent) =
            (Figures::default(), Figures::default(), Figures::default());
        for round in 0..ROUNDS {
            // A: 1000 callers, one cold key.
            let calls = Arc::new(AtomicU64::new(0));
            let (gets, sets) = (executions(&server, "get").await, executions(&server, "set").await);
            let wall = all(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                async move {
                    let v: String = cache
                        .get_or_insert_with(&("one", round), None, || load(calls, round))
                        .await
                        .expect("a value");
                    assert_eq!(v, format!("value {round}"));
                }
            })
            .await;
            coalesced.wall.push(wall);
            coalesced.loads.push(calls.load(Ordering::Relaxed));
            coalesced.gets.push(executions(&server, "get").await - gets);
            coalesced.sets.push(executions(&server, "set").await - sets);
            assert_eq!(cache.in_flight(), 0);

            // B: 1000 loader calls, no cache.
            let calls = Arc::new(AtomicU64::new(0));
            let wall = all(|n| {
                let calls = calls.clone();
                async move {
                    load(calls, n).await.expect("a value");
                }
            })
            .await;
            bare.wall.push(wall);
            bare.loads.push(calls.load(Ordering::Relaxed));
            bare.gets.push(0);
            bare.sets.push(0);

            // C: 1000 callers, each its own cold key.
            let calls = Arc::new(AtomicU64::new(0));
            let (gets, sets) = (executions(&server, "get").await, executions(&server, "set").await);
            let wall = all(|n| {
                let (cache, calls) = (cache.clone(), calls.clone());
                async move {
                    let v: String = cache
                        .get_or_insert_with(&("many", round, n), None, || load(calls, n))
                        .await
                        .expect("a value");
                    assert_eq!(v, format!("value {n}"));
                }
            })
            .await;
            independent.wall.push(wall);
            independent.loads.push(calls.load(Ordering::Relaxed));
            independent.gets.push(executions(&server, "get").await - gets);
            independent.sets.push(executions(&server, "set").await - sets);
            assert_eq!(cache.in_flight(), 0);
        }

        println!(
            "{CALLERS} concurrent callers, a {LOAD:?} loader, {ROUNDS} rounds (median wall time, range)\n"
        );
        println!("| variant | wall (median) | wall (range) | loader calls | Redis GETs | Redis SETs |");
        println!("|---|---|---|---|---|---|");
        coalesced.row("coalesced: one cold key through the cache");
        bare.row("independent: 1000 bare loader calls, no cache");
        independent.row("independent: 1000 cold keys through the cache");
    });
}
