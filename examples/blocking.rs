//! The blocking API, for code that is not async yet (a CLI, a worker built on threads, a
//! synchronous web framework): the same stores, no `async`, no `#[tokio::main]`.
//!
//! Run: `cargo run --example blocking`. Redis as in the quickstart: `REDIS_URL`, else a
//! throwaway redis-server, else file-only.

use std::time::Duration;

use serde_json::json;
use stayfast::{blocking::Stayfast, settings::Settings, transcripts::Message};

mod common;

fn main() -> std::process::ExitCode {
    common::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut settings = Settings::load()?;
    let dir = std::env::temp_dir().join(format!("stayfast-blocking-example-{}", std::process::id()));
    settings.transcripts.dir = dir.clone();
    // Only to start the example's throwaway redis-server; your code would not need it.
    let helper = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = helper.block_on(common::choose_redis(&mut settings));

    // Everything below is plain blocking code.
    let app = Stayfast::from_settings(&settings)?;

    let chat = app.transcripts();
    chat.append(
        "session-1",
        Message::new("user", "Is my parcel on its way?").with_id("m1"),
    )?;
    chat.append(
        "session-1",
        Message::new("assistant", "Yes, it ships today.").with_id("m2"),
    )?;
    let history = chat.history("session-1", 10)?;
    println!(
        "history: {} messages from {}",
        history.records.len(),
        history.source.as_str()
    );

    if let Some(kb) = app.knowledge() {
        kb.store_fact("Parcels ship within two days.", json!({"source": "faq"}))?;
        let hits = kb.search("parcels ship", 3)?;
        println!(
            "search: {:?}",
            hits.iter().map(|f| &f.content).collect::<Vec<_>>()
        );
    }

    if let Some(cache) = app.cache() {
        for round in 1..=2 {
            let started = std::time::Instant::now();
            let rate: f64 = cache.get_or_insert_with(&("fx", "EUR", "USD"), None, || {
                std::thread::sleep(Duration::from_millis(200)); // a slow blocking client
                Ok::<_, stayfast::StoreError>(1.08)
            })?;
            println!("round {round}: rate {rate} in {:.1?}", started.elapsed());
        }
    }

    app.shutdown(Duration::from_secs(5))?;
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
