//! From raw fred calls to stayfast, under the fault that hurt most in production: a
//! Redis server that accepts connections and never answers (here: SIGSTOP).
//!
//! The same workload — 20 callers each doing one GET — runs twice while the server is
//! stopped for 3 seconds:
//! - raw fred, configured as most code does (`Config::from_url`, defaults): every call
//!   hangs until the server comes back;
//! - the stayfast handle: every call returns within its deadline, the breaker opens and
//!   later calls fail in microseconds, until the server is back.
//!
//! Run: `cargo run --example migration` (needs `redis-server` installed; it starts its
//! own on a free loopback port and stops it at the end).

use std::time::{Duration, Instant};

use stayfast::{
    Error,
    redis::{
        Redis, RedisConfig,
        fred::{interfaces::ClientLike, interfaces::KeysInterface, prelude::Builder, types::config::Config},
    },
    test_util::RedisServer,
};

const CALLERS: usize = 20;
const STOPPED_FOR: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let server = RedisServer::start().await?;
    println!("redis-server on {} (pid {:?})", server.url(), server.pid());

    // Before: a raw fred client, the way the docs' first example builds one.
    let raw = Builder::from_config(Config::from_url(&server.url())?).build()?;
    raw.init().await?;
    // After: the stayfast handle, 250 ms per GET, breaker after 5 straight failures.
    let mut config = RedisConfig::default();
    config.url = server.url();
    config.command_timeout = Duration::from_millis(250);
    config.breaker.consecutive_failures = Some(5);
    let wrapped = Redis::connect(&config).await?;
    let _: Option<String> = wrapped.get("warm-up").await?;

    println!("\nSIGSTOP the server for {STOPPED_FOR:?}; {CALLERS} callers each GET once.\n");

    server.pause()?;
    let resume_at = Instant::now() + STOPPED_FOR;
    let raw_calls = (0..CALLERS).map(|i| {
        let raw = raw.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result: Result<Option<String>, _> = raw.get(format!("key:{i}")).await;
            (started.elapsed(), result.is_ok())
        })
    });
    let raw_calls: Vec<_> = raw_calls.collect();
    let wrapped_timings = {
        let mut timings = Vec::new();
        for i in 0..CALLERS {
            let started = Instant::now();
            let result = wrapped.get::<Option<String>>(format!("key:{i}")).await;
            let kind = match &result {
                Ok(_) => "ok",
                Err(Error::Timeout { .. }) => "timeout",
                Err(Error::CircuitOpen { .. }) => "circuit open",
                Err(_) => "error",
            };
            timings.push((started.elapsed(), kind));
        }
        timings
    };
    tokio::time::sleep_until(resume_at.into()).await;
    server.resume()?;

    let mut raw_timings = Vec::new();
    for call in raw_calls {
        raw_timings.push(call.await?);
    }

    println!("raw fred (no deadline):");
    let slowest_raw = raw_timings.iter().map(|(t, _)| *t).max().unwrap_or_default();
    let raw_ok = raw_timings.iter().filter(|(_, ok)| *ok).count();
    println!("  {CALLERS} calls, slowest {slowest_raw:.2?}, {raw_ok} answered only after the server resumed");

    println!("stayfast handle (250 ms deadline, breaker):");
    for (i, (t, kind)) in wrapped_timings.iter().enumerate() {
        println!("  call {i:>2}: {kind:<13} after {t:>9.2?}");
    }
    let total: Duration = wrapped_timings.iter().map(|(t, _)| *t).sum();
    println!("  all {CALLERS} calls, one after another, took {total:.2?} in total");

    // The breaker lets a probe through after its break; wait for recovery.
    let started = Instant::now();
    loop {
        if wrapped.get::<Option<String>>("after").await.is_ok() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the handle did not recover within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "\nserver resumed: the handle serves again {:.2?} later (the breaker lets a probe through \
         once its break, `open_for` = {:?}, has passed)",
        started.elapsed(),
        config.breaker.open_for
    );
    raw.quit().await?;
    wrapped.close().await;
    Ok(())
}
