//! F3 no_secret_leak, runtime part: a redis-server requiring a sentinel password, a
//! connection made from `Settings` (the password as its own key, and inside the URL)
//! and one with a wrong password. Everything logged through `log` (fred) and `tracing`
//! (stayfast) at TRACE, every Debug and error, and every panic message are captured:
//! neither password appears anywhere.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use stayfast::{
    redis::{Redis, fred::interfaces::ClientLike},
    settings::Settings,
    test_util::RedisServer,
};

const SENTINEL: &str = "s3ntinel-Pa55";
const WRONG: &str = "wr0ng-Pa55word";

/// Every `log` record (fred logs through `log`), formatted with its arguments.
struct Capture {
    text: Mutex<String>,
    records: AtomicUsize,
}

static LOGGED: Capture = Capture {
    text: Mutex::new(String::new()),
    records: AtomicUsize::new(0),
};

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {} {}\n", record.level(), record.target(), record.args());
        self.text.lock().unwrap().push_str(&line);
        self.records.fetch_add(1, Ordering::Relaxed);
    }

    fn flush(&self) {}
}

/// The `tracing` fmt layer's output.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn settings(url: &str, password: Option<&str>) -> Settings {
    let password = password
        .map(|p| format!("password = \"{p}\"\n"))
        .unwrap_or_default();
    Settings::from_toml(&format!(
        "[redis]\nurl = \"{url}\"\n{password}[timeouts.redis.connection]\nconnect = \"500ms\"\n"
    ))
    .unwrap()
}

/// Runs a few commands; returns what each printed (values, errors, Debug).
async fn exercise(redis: &Redis) -> Vec<String> {
    let mut shown = vec![format!("{redis:?}")];
    let set = redis.set("secrets:k", "v", Some(60)).await;
    shown.push(format!("{set:?}"));
    let get: Result<Option<String>, _> = redis.get("secrets:k").await;
    shown.push(format!("{get:?}"));
    if let Err(e) = &get {
        shown.push(e.to_string());
    }
    let all: Result<HashMap<String, String>, _> = redis.hgetall("secrets:h").await;
    shown.push(format!("{all:?}"));
    shown.push(format!("{redis:?}"));
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leak_at_runtime() {
    log::set_logger(&LOGGED).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let traced = Buffer::default();
    let writer = traced.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let panics = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        recorded.lock().unwrap().push(info.to_string());
        previous(info);
    }));

    let server = RedisServer::start().await.unwrap();
    server
        .command(&["CONFIG", "SET", "requirepass", SENTINEL])
        .await
        .unwrap();
    let mut shown = Vec::new();

    // The password as its own key.
    let config = settings(&server.url(), Some(SENTINEL));
    shown.push(format!("{config:?} {:?}", config.redis_config()));
    let redis = Redis::connect(&config.redis_config()).await.unwrap();
    let out = exercise(&redis).await;
    assert!(out[2].contains("Some(\"v\")"), "authenticated: {out:?}");
    shown.extend(out);

    // Inside the URL.
    let url = server
        .url()
        .replace("redis://", &format!("redis://default:{SENTINEL}@"));
    let in_url = Redis::connect(&settings(&url, None).redis_config())
        .await
        .unwrap();
    let out = exercise(&in_url).await;
    assert!(
        out[2].contains("Some(\"v\")"),
        "authenticated through the URL: {out:?}"
    );
    shown.extend(out);

    // A wrong password: connects degraded, every call fails, nothing says either password.
    let started = std::time::Instant::now();
    let wrong = Redis::connect(&settings(&server.url(), Some(WRONG)).redis_config())
        .await
        .unwrap();
    let out = exercise(&wrong).await;
    assert!(out[2].starts_with("Err("), "refused: {out:?}");
    eprintln!("wrong password: refused in {:?}; {}", started.elapsed(), out[3]);
    shown.extend(out);

    for handle in [&redis, &in_url, &wrong] {
        let _ = handle.pool().quit().await;
    }
    drop((redis, in_url, wrong));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logged = LOGGED.text.lock().unwrap().clone();
    let traced = String::from_utf8(traced.0.lock().unwrap().clone()).unwrap();
    let panics = panics.lock().unwrap().clone();
    let records = LOGGED.records.load(Ordering::Relaxed);
    let events = traced.lines().count();
    eprintln!(
        "checked {records} log records ({} bytes), {events} tracing lines ({} bytes), {} Debug/error texts, {} panics",
        logged.len(),
        traced.len(),
        shown.len(),
        panics.len()
    );
    assert!(
        records > 0,
        "fred logged nothing at TRACE: the check would be empty"
    );
    for secret in [SENTINEL, WRONG] {
        assert!(!logged.contains(secret), "log leaks {secret}");
        assert!(!traced.contains(secret), "tracing leaks {secret}");
        for text in shown.iter().chain(&panics) {
            assert!(!text.contains(secret), "leaks {secret}: {text}");
        }
    }
}
