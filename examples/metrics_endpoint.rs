//! Serve stayfast's metrics on `/metrics` for Prometheus while a small workload runs.
//!
//! Run: `cargo run --example metrics_endpoint` and open http://127.0.0.1:9187/metrics
//! (or `curl -s 127.0.0.1:9187/metrics | grep stayfast_calls_total`). Ctrl-C stops it.
//!
//! Options: `--seconds N` stops after N seconds. The listener binds where
//! `metrics.listen` says (127.0.0.1:9187 by default; `STAYFAST_METRICS__LISTEN=127.0.0.1:9300`
//! moves it). Redis as in the quickstart: `REDIS_URL`, else a throwaway redis-server,
//! else file-only. Serving `/metrics` from your own web framework instead: leave
//! `metrics.http_listener` off and return `app.telemetry().unwrap().render()` from your
//! route.

use std::time::{Duration, Instant};

use serde_json::json;
use stayfast::{Stayfast, settings::Settings, transcripts::Message};

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = parse_seconds()?;
    let mut settings = Settings::load()?;
    settings.metrics.http_listener = true;
    let dir = std::env::temp_dir().join(format!("stayfast-metrics-example-{}", std::process::id()));
    settings.transcripts.dir = dir.clone();
    let _server = common::choose_redis(&mut settings).await;

    let app = Stayfast::from_settings(&settings).await?;
    if let Some(addr) = app.telemetry().and_then(|t| t.listening()) {
        println!("serving http://{addr}/metrics");
    }
    if let Some(kb) = app.knowledge() {
        kb.store_fact("The shop opens at 9.", json!({"source": "faq"}))
            .await?;
    }

    // About 50 operations a second across the stores, until stopped.
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if seconds.is_some_and(|s| started.elapsed() >= s) {
            break;
        }
        n += 1;
        let session = format!("session-{}", n % 10);
        // Errors are expected while a dependency is down: they are what the metrics show.
        let _ = app
            .transcripts()
            .append(&session, Message::new("user", format!("message {n}")))
            .await;
        let _ = app.transcripts().history(&session, 20).await;
        if let Some(kb) = app.knowledge() {
            let _ = kb.search("shop", 5).await;
        }
        if let Some(cache) = app.cache() {
            let _: Result<u64, std::io::Error> = cache
                .get_or_insert_with(&("square", n % 50), None, || async move { Ok((n % 50).pow(2)) })
                .await;
        }
        if n.is_multiple_of(500) {
            println!("{n} rounds");
        }
    }
    let report = app.shutdown(Duration::from_secs(5)).await;
    println!(
        "stopped after {n} rounds ({} background tasks aborted)",
        report.aborted
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `--seconds N`, if given.
fn parse_seconds() -> Result<Option<Duration>, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(None),
        (Some("--seconds"), Some(n)) => Ok(Some(Duration::try_from_secs_f64(n.parse::<f64>()?)?)),
        _ => Err("usage: metrics_endpoint [--seconds N]".into()),
    }
}
