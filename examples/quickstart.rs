//! The main job end to end: facts in Redis, chat history with durable file transcripts,
//! a cache in front of an expensive call, metrics — and what happens when Redis stops
//! answering.
//!
//! Run: `cargo run --example quickstart`
//!
//! Redis: `REDIS_URL` when set; otherwise a throwaway `redis-server` on a free loopback
//! port when one is installed (stopped at the end); otherwise file-only, and it says so.
//! Settings: the defaults, then `stayfast.toml` and `STAYFAST_*` variables if present;
//! transcripts go to a temporary directory, removed at the end.

use std::time::{Duration, Instant};

use serde_json::json;
use stayfast::{Stayfast, settings::Settings, transcripts::Message};

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut settings = Settings::load()?;
    let dir = std::env::temp_dir().join(format!("stayfast-quickstart-{}", std::process::id()));
    settings.transcripts.dir = dir.clone();
    // Short deadlines so the outage below is quick to watch.
    settings.timeouts.redis.operations.default = Duration::from_millis(200);

    let server = common::choose_redis(&mut settings).await;

    let app = Stayfast::from_settings(&settings).await?;

    // 1. Facts in Redis, with AND search.
    if let Some(kb) = app.knowledge() {
        println!("\n== knowledge");
        kb.store_fact("The shop opens at 9 on weekdays.", json!({"source": "faq"}))
            .await?;
        kb.store_fact("The shop is closed on Sundays.", json!({"source": "faq"}))
            .await?;
        kb.store_fact("Parcels ship within two days.", json!({"source": "shipping"}))
            .await?;
        let hits = kb.search("shop sundays", 5).await?;
        println!(
            "search \"shop sundays\": {:?}",
            hits.iter().map(|f| &f.content).collect::<Vec<_>>()
        );
        println!("facts stored: {}", kb.count().await?);
    }

    // 2. Chat history: the file is the record, Redis the cache.
    println!("\n== transcripts (files in {})", dir.display());
    let chat = app.transcripts();
    chat.append(
        "session-1",
        Message::new("user", "When do you open?").with_id("m1"),
    )
    .await?;
    chat.append(
        "session-1",
        Message::new("assistant", "At 9 on weekdays.").with_id("m2"),
    )
    .await?;
    // A retried append (same id) is not stored twice.
    chat.append(
        "session-1",
        Message::new("assistant", "At 9 on weekdays.").with_id("m2"),
    )
    .await?;
    let history = chat.history("session-1", 10).await?;
    println!(
        "history: {} messages from {}",
        history.records.len(),
        history.source.as_str()
    );
    for r in &history.records {
        println!("  #{} {}: {}", r.seq, r.role, r.content);
    }

    // 3. A cache in front of an expensive call.
    if let Some(cache) = app.cache() {
        println!("\n== cache");
        for round in 1..=2 {
            let started = Instant::now();
            let answer: String = cache
                .get_or_insert_with(&("weather", "Lisbon"), None, || async {
                    tokio::time::sleep(Duration::from_millis(300)).await; // the slow API
                    Ok::<_, std::io::Error>("sunny".to_owned())
                })
                .await?;
            println!("round {round}: {answer} in {:.1?}", started.elapsed());
        }
    }

    // 4. Redis stops answering (SIGSTOP): nothing hangs.
    if let Some(server) = &server {
        println!("\n== outage: redis-server stopped (SIGSTOP)");
        server.pause()?;
        let started = Instant::now();
        let receipt = chat
            .append("session-1", Message::new("user", "Are you there?"))
            .await?;
        println!(
            "append during the outage: stored in the file ({:?}) in {:.1?}",
            receipt.durability,
            started.elapsed()
        );
        let started = Instant::now();
        let history = chat.history("session-1", 10).await?;
        println!(
            "history during the outage: {} messages from {} (degraded: {}) in {:.1?}",
            history.records.len(),
            history.source.as_str(),
            history.degraded,
            started.elapsed()
        );
        if let Some(kb) = app.knowledge() {
            let started = Instant::now();
            let result = kb.search("shop", 5).await;
            println!(
                "search during the outage: {} in {:.1?}",
                result.map_or_else(|e| format!("error: {e}"), |h| format!("{} hits", h.len())),
                started.elapsed()
            );
        }
        server.resume()?;
        println!("redis-server resumed (SIGCONT)");
        // The breaker lets a probe through after its break; Redis is repopulated from
        // the file in the background.
        let started = Instant::now();
        loop {
            let history = chat.history("session-1", 10).await?;
            if history.source.as_str() == "redis" && !history.degraded {
                println!(
                    "history from Redis again after {:.1?}: {} messages, equal to the file",
                    started.elapsed(),
                    history.records.len()
                );
                break;
            }
            if started.elapsed() > Duration::from_secs(15) {
                println!("Redis has not recovered within 15 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 5. What Prometheus would scrape.
    if let Some(telemetry) = app.telemetry() {
        let text = telemetry.render();
        let calls: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("stayfast_calls_total{") && !l.ends_with(" 0"))
            .collect();
        println!("\n== metrics: stayfast_calls_total, the non-zero series");
        for line in calls {
            println!("  {line}");
        }
    }

    let report = app.shutdown(Duration::from_secs(5)).await;
    println!(
        "\nshut down: {} background tasks still running were aborted",
        report.aborted
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
