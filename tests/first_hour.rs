//! What a new user meets in their first hour, from the README's own example.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use stayfast::{ErrorChain, Stayfast};
use support::TempDir;

/// With Redis down at start (nothing listens at its address), the README's example
/// starts, and `store_fact` fails quickly with an error that says Redis is unreachable
/// and where; once the breaker knows, the next calls fail at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_fails_fast_and_says_where() {
    let dir = TempDir::new("first-hour");
    let port = support::free_port();
    let settings = support::settings(Some(format!("redis://127.0.0.1:{port}")), &dir);
    let started = Instant::now();
    let app = Stayfast::from_settings(&settings).await.unwrap();
    println!(
        "started in {:?} (connect deadline {:?})",
        started.elapsed(),
        settings.timeouts.redis.connection.connect
    );
    let kb = app.knowledge().unwrap();
    let mut timings = Vec::new();
    for _ in 0..8 {
        let call = Instant::now();
        let err = kb
            .store_fact("Parcels ship within two days.", serde_json::json!({}))
            .await
            .unwrap_err();
        timings.push((call.elapsed(), ErrorChain(&err).to_string()));
    }
    for (took, err) in &timings {
        println!("{took:?}: {err}");
    }
    let started_in = started.elapsed() - timings.iter().map(|(t, _)| *t).sum::<Duration>();
    assert!(
        started_in < settings.timeouts.redis.connection.connect,
        "a refused Redis does not hold the start for the connect deadline ({:?})",
        settings.timeouts.redis.connection.connect
    );
    let (first, first_error) = &timings[0];
    assert!(
        *first < Duration::from_millis(250),
        "the first call fails fast: {first:?}"
    );
    for part in ["unreachable", &format!("127.0.0.1:{port}"), "refused"] {
        assert!(first_error.contains(part), "{part:?} in {first_error:?}");
    }
    let (last, last_error) = timings.last().unwrap();
    assert!(
        last_error.contains("circuit") && last_error.contains("open"),
        "once the breaker knows, the calls are not attempted: {last_error}"
    );
    assert!(*last < Duration::from_millis(50), "{last:?}");
    app.shutdown(Duration::from_secs(1)).await;
}
