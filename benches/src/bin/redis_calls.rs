//! A fixed number of Redis calls, raw fred or through stayfast's handle, for counting
//! the client's instructions per call under callgrind (`scripts/redis-instructions`):
//! instruction counts repeat whatever else the machine runs, where times do not.
//!
//! `redis_calls <raw|stayfast> <get|hset|hgetall> <calls>`: starts a throwaway
//! redis-server on a free loopback port (not traced: callgrind follows no child), then
//! makes `calls` calls from 50 tasks on a current-thread runtime, so the commands
//! pipeline as under load. The runtime, the connection set-up and the server are the
//! same whatever `calls` is: the difference between two counts is the calls' own cost.

use std::{collections::HashMap, process::ExitCode};

use fred::{
    interfaces::{ClientLike, HashesInterface, KeysInterface},
    prelude::{Builder, Config},
};
use stayfast_core::{
    redis::{Redis, RedisConfig},
    test_util::RedisServer,
};

const TASKS: usize = 50;

fn usage(problem: &str) -> ExitCode {
    eprintln!("redis_calls: {problem}\nusage: redis_calls <raw|stayfast> <get|hset|hgetall> <calls>");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [client, op, calls] = args.as_slice() else {
        return usage("three arguments expected");
    };
    let raw = match client.as_str() {
        "raw" => true,
        "stayfast" => false,
        other => return usage(&format!("unknown client `{other}`")),
    };
    if !matches!(op.as_str(), "get" | "hset" | "hgetall") {
        return usage(&format!("unknown command `{op}`"));
    }
    let Ok(calls) = calls.parse::<usize>() else {
        return usage(&format!("`{calls}` is not a number of calls"));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async move {
        let server = RedisServer::start()
            .await
            .expect("redis-server (Debian/Ubuntu: sudo apt-get install -y redis-server)");
        let pool = Builder::from_config(Config::from_url(&server.url()).expect("the server's URL"))
            .build_pool(4)
            .expect("a fred pool");
        pool.init().await.expect("raw fred connected");
        let mut config = RedisConfig::default();
        config.url = server.url();
        let redis = Redis::connect(&config).await.expect("stayfast's handle");
        pool.set::<(), _, _>("k", "v", None, None, false)
            .await
            .expect("seed k");
        pool.hset::<i64, _, _>("h", [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")])
            .await
            .expect("seed h");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (pool, redis, op) = (pool.clone(), redis.clone(), op.clone());
                // The calls split over the tasks, the remainder to the first ones.
                let mine = calls / TASKS + usize::from(task < calls % TASKS);
                tokio::spawn(async move {
                    for _ in 0..mine {
                        let ok = match (raw, op.as_str()) {
                            (true, "get") => pool.get::<Option<String>, _>("k").await.is_ok(),
                            (true, "hset") => pool.hset::<i64, _, _>("h", [("a", "1")]).await.is_ok(),
                            (true, _) => pool.hgetall::<HashMap<String, String>, _>("h").await.is_ok(),
                            (false, "get") => redis.get::<Option<String>>("k").await.is_ok(),
                            (false, "hset") => redis.hset("h", [("a", "1")]).await.is_ok(),
                            (false, _) => redis.hgetall::<HashMap<String, String>>("h").await.is_ok(),
                        };
                        assert!(ok, "a {op} failed");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a calling task");
        }
        let _ = pool.quit().await;
    });
    ExitCode::SUCCESS
}
