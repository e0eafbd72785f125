//! Transcript appends under load: 200 sessions (one task each) appending as fast as
//! their appends are acknowledged, `fsync = "always"`, for a fixed window; reports the
//! appends per second and the CPU each acknowledged append cost — this process's (all
//! its threads, the kernel's work on their behalf included: the `write`, `fsync` and
//! the rest of the syscalls) and, with Redis on, redis-server's (the window pushes).
//!
//! Two configurations, alternated round by round so drift on the shared machine hits
//! both: the default one (Redis + file, `order = "file"`) and file-only (no Redis). The
//! transcript files live on the work disk (a real fsync), in a fresh directory under the
//! system's temporary directory (`STAYFAST_BENCH_DIR` to choose another), removed at
//! the end. CPU is read from `/proc/self/stat` and `/proc/<redis pid>/stat` (user +
//! system time, threads that ended included), so the figures are Linux-only.
//!
//! Run: `cargo bench -p stayfast-benches --bench transcripts` (needs redis-server
//! installed). `STAYFAST_BENCH_WINDOW_MS` (default 3000) and `STAYFAST_BENCH_ROUNDS`
//! (default 5) change the window and the rounds; `STAYFAST_BENCH_MODES=file` (or
//! `redis`) runs one configuration only.

mod support;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use stayfast::{
    redis::{Redis, RedisConfig},
    transcripts::{Durability, Message, TranscriptConfig, TranscriptStore},
};
use stayfast_core::{fs::FsyncPolicy, test_util::RedisServer};

/// Concurrent sessions, one appending task each.
const SESSIONS: usize = 200;
/// A chat message of a typical length.
const CONTENT: &str = "Thanks, that helps. Could you also check whether the replacement part ships \
    from the same warehouse, and whether I can change the delivery address to my office \
    before it leaves? The order number is in my previous message.";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time of process `pid` (`self` for this one), all its threads,
/// those that ended included, from `/proc/<pid>/stat` (in clock ticks, 100 per second).
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, which may hold spaces): state is
    // field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// One configuration under test.
struct Subject {
    name: &'static str,
    store: TranscriptStore,
    dir: PathBuf,
    /// redis-server's pid, when the configuration has Redis.
    redis_pid: Option<u32>,
}

/// What one window achieved.
#[derive(Clone, Copy, Debug)]
struct Rate {
    appends_per_sec: f64,
    cpu_per_append: Duration,
    redis_cpu_per_append: Option<Duration>,
}

/// `SESSIONS` tasks appending as fast as acknowledged for `window`.
async fn load(subject: &Subject, window: Duration) -> Rate {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (stop, done, store) = (Arc::clone(&stop), Arc::clone(&done), subject.store.clone());
            tokio::spawn(async move {
                let session = format!("bench-session-{i}");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let message =
                        Message::new(if n.is_multiple_of(2) { "user" } else { "assistant" }, CONTENT);
                    let receipt = store.append(&session, message).await.expect("an append");
                    assert_eq!(receipt.durability, Durability::Synced, "fsync = always");
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    // Let every task reach its steady state (first appends load the files) before timing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let redis_pid = subject.redis_pid.map(|p| p.to_string());
    let (started, before, cpu_before) = (Instant::now(), done.load(Ordering::Relaxed), process_cpu("self"));
    let redis_before = redis_pid.as_deref().and_then(process_cpu);
    tokio::time::sleep(window).await;
    let (n, elapsed) = (done.load(Ordering::Relaxed) - before, started.elapsed());
    let (cpu_after, redis_after) = (process_cpu("self"), redis_pid.as_deref().and_then(process_cpu));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a bench task");
    }
    let per = |before: Option<Duration>, after: Option<Duration>| {
        before
            .zip(after)
            .map(|(b, a)| a.saturating_sub(b).div_f64(n.max(1) as f64))
    };
    Rate {
        appends_per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_per_append: per(cpu_before, cpu_after).expect("/proc/self/stat (Linux only)"),
        redis_cpu_per_append: per(redis_before, redis_after),
    }
}

fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

fn config(dir: &Path) -> TranscriptConfig {
    let mut config = TranscriptConfig::default();
    config.dir = dir.to_path_buf();
    config.fsync = FsyncPolicy::Always;
    config
}

fn main() {
    let Some((_recorder, rt)) = support::real_server_bench() else {
        return;
    };
    let window = Duration::from_millis(env_or("STAYFAST_BENCH_WINDOW_MS", 3000));
    let rounds = env_or("STAYFAST_BENCH_ROUNDS", 5) as usize;
    let modes = std::env::var("STAYFAST_BENCH_MODES").unwrap_or_else(|_| "redis,file".to_owned());
    let base = std::env::var_os("STAYFAST_BENCH_DIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(format!("stayfast-bench-transcripts-{}", std::process::id()));
    rt.block_on(async {
        let server = RedisServer::start()
            .await
            .expect("redis-server (install it to run this bench)");
        let mut subjects = Vec::new();
        if modes.contains("redis") {
            let mut redis_config = RedisConfig::default();
            redis_config.url = server.url();
            let redis = Redis::connect(&redis_config).await.expect("a Redis handle");
            let dir = base.join("redis");
            let store = TranscriptStore::builder(&config(&dir))
                .redis(redis)
                .open()
                .await
                .expect("a store with Redis");
            subjects.push(Subject {
                name: "Redis + file (order = \"file\", the default)",
                store,
                dir,
                redis_pid: server.pid(),
            });
        }
        if modes.contains("file") {
            let dir = base.join("file");
            let store = TranscriptStore::builder(&config(&dir))
                .open()
                .await
                .expect("a file-only store");
            subjects.push(Subject {
                name: "file only",
                store,
                dir,
                redis_pid: None,
            });
        }
        println!(
            "{SESSIONS} sessions, fsync = always, {} ms windows, {rounds} rounds, files in {}",
            window.as_millis(),
            base.display()
        );
        // A warm-up window each: the files are created and the writers loaded.
        for subject in &subjects {
            let _ = load(subject, Duration::from_millis(500)).await;
        }
        let mut rates: Vec<Vec<Rate>> = vec![Vec::new(); subjects.len()];
        for round in 0..rounds {
            for i in 0..subjects.len() {
                let s = (round + i) % subjects.len();
                let rate = load(&subjects[s], window).await;
                println!(
                    "round {round}: {}: {:.0} appends/s, {:.1} µs CPU per append{}",
                    subjects[s].name,
                    rate.appends_per_sec,
                    rate.cpu_per_append.as_secs_f64() * 1e6,
                    rate.redis_cpu_per_append
                        .map(|d| format!(", redis-server {:.1} µs", d.as_secs_f64() * 1e6))
                        .unwrap_or_default()
                );
                rates[s].push(rate);
            }
        }
        println!();
        println!(
            "| configuration | appends/s (median) | process CPU per append | redis-server CPU per append |"
        );
        println!("|---|---|---|---|");
        for (subject, rates) in subjects.iter().zip(&rates) {
            let ops: Vec<f64> = rates.iter().map(|r| r.appends_per_sec).collect();
            let cpu: Vec<Duration> = rates.iter().map(|r| r.cpu_per_append).collect();
            let redis: Vec<Duration> = rates.iter().filter_map(|r| r.redis_cpu_per_append).collect();
            let redis = if redis.is_empty() {
                "n/a".to_owned()
            } else {
                format!("{:.1} µs", median(&redis).as_secs_f64() * 1e6)
            };
            println!(
                "| {} | {:.0} | {:.1} µs | {redis} |",
                subject.name,
                median(&ops),
                median(&cpu).as_secs_f64() * 1e6
            );
        }
        for subject in &subjects {
            let _ = std::fs::remove_dir_all(&subject.dir);
        }
        let _ = std::fs::remove_dir_all(&base);
        drop(server);
    });
}
