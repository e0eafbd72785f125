//! F3 no_secret_leak, runtime part: a redis-server requiring a sentinel password, a
//! connection made from `Settings` (the password as its own key, inside the URL, from
//! `STAYFAST_REDIS__PASSWORD` and from a `stayfast.toml` loaded by `Settings::load()`)
//! and one with a wrong password; a panic on an error built from those settings; then the facade built from the same settings — the
//! `Stayfast` entry point, its stores, the blocking API, the errors a wrong password and
//! a bad URL produce, and the rendered `/metrics`. Everything logged through `log`
//! (fred) and `tracing` (stayfast) at TRACE, every Debug and error (with its sources),
//! and every panic message are captured: neither password appears anywhere.
#![allow(clippy::unwrap_used)]
// `figment::Jail`'s closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]

mod support;

use std::{
    collections::HashMap,
    io,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use support::TempDir;

use stayfast::{
    Stayfast, blocking,
    redis::{Redis, fred::interfaces::ClientLike},
    settings::{RedisUrl, Settings},
    test_util::RedisServer,
    transcripts::Message,
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

/// An error's Debug, its Display and the Display of every source under it.
fn error_texts(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![format!("{e:?}"), e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        texts.push(s.to_string());
        source = s.source();
    }
    texts
}

/// The facade over the same server: `Stayfast` from the sentinel settings, its stores
/// and their output; a wrong password's store errors; start errors from URLs holding the
/// sentinel; the blocking API; the rendered metrics. Returns every text shown.
async fn exercise_facade(server: &RedisServer, dir: &Path) -> Vec<String> {
    let mut shown = Vec::new();
    let with_dir = |password: Option<&str>, name: &str| {
        let mut s = settings(&server.url(), password);
        s.transcripts.dir = dir.join(name);
        s
    };

    let good = with_dir(Some(SENTINEL), "good");
    let app = Stayfast::from_settings(&good).await.unwrap();
    let kb = app.knowledge().unwrap();
    let id = kb
        .store_fact("authenticated fact", serde_json::json!({}))
        .await
        .unwrap();
    shown.push(format!("{:?}", kb.get_fact(&id).await));
    shown.push(format!("{:?}", kb.health()));
    let cache = app.cache().unwrap();
    cache.set("secrets", "cached", None).await.unwrap();
    shown.push(format!("{:?}", cache.get::<String>("secrets").await));
    let tx = app.transcripts();
    tx.append("secrets", Message::new("user", "hi")).await.unwrap();
    shown.push(format!("{:?}", tx.history("secrets", 10).await));
    shown.extend([
        format!("{app:?}"),
        format!("{kb:?}"),
        format!("{cache:?}"),
        format!("{tx:?}"),
        format!("{:?}", app.redis()),
        format!("{:?}", app.telemetry()),
        format!("{:?}", app.background()),
    ]);

    // A wrong password: the start succeeds (Redis refusing is not a start error), every
    // Redis call fails, and the errors say so without either password.
    let wrong = Stayfast::from_settings(&with_dir(Some(WRONG), "wrong"))
        .await
        .unwrap();
    shown.push(format!("{wrong:?}"));
    let kb = wrong.knowledge().unwrap();
    let refused = kb
        .store_fact("never stored", serde_json::json!({}))
        .await
        .unwrap_err();
    eprintln!("facade, wrong password: {refused}");
    shown.extend(error_texts(&refused));
    shown.extend(error_texts(&kb.count().await.unwrap_err()));
    shown.extend(error_texts(
        &wrong.cache().unwrap().get::<String>("secrets").await.unwrap_err(),
    ));
    shown.push(format!("{kb:?} {:?}", kb.health()));
    // The transcript store degrades to its file instead of failing.
    let tx = wrong.transcripts();
    tx.append("secrets", Message::new("user", "hi")).await.unwrap();
    shown.push(format!("{:?}", tx.history("secrets", 10).await));

    // Start errors from URLs holding the sentinel: not a Redis URL, a bad port.
    for url in [
        format!("http://default:{SENTINEL}@127.0.0.1:1"),
        format!("redis://default:{SENTINEL}@127.0.0.1:notaport"),
        format!("redis://default:{SENTINEL}@[::1"),
    ] {
        let mut bad = with_dir(None, "bad-url");
        bad.redis.url = RedisUrl::new(url);
        let e = Stayfast::from_settings(&bad).await.unwrap_err();
        eprintln!("facade, bad URL: {e}");
        shown.extend(error_texts(&e));
    }

    // The blocking API, built where no runtime is current.
    let (good_dir, wrong_dir) = (
        with_dir(Some(SENTINEL), "blocking"),
        with_dir(Some(WRONG), "blocking-wrong"),
    );
    let blocking_texts = std::thread::spawn(move || {
        let mut shown = Vec::new();
        let app = blocking::Stayfast::from_settings(&good_dir).unwrap();
        shown.extend([
            format!("{app:?}"),
            format!("{:?}", app.knowledge()),
            format!("{:?}", app.cache()),
            format!("{:?}", app.transcripts()),
        ]);
        let wrong = blocking::Stayfast::from_settings(&wrong_dir).unwrap();
        let e = wrong.knowledge().unwrap().count().unwrap_err();
        shown.extend(error_texts(&e));
        shown.push(format!("{wrong:?}"));
        app.shutdown(Duration::from_secs(1)).unwrap();
        wrong.shutdown(Duration::from_secs(1)).unwrap();
        shown
    })
    .join()
    .unwrap();
    shown.extend(blocking_texts);

    // `/metrics`, after all of the above.
    let metrics = app.telemetry().unwrap().render();
    assert!(
        metrics.contains("stayfast_calls_total"),
        "the recorder saw the calls"
    );
    shown.push(metrics);
    app.shutdown(Duration::from_secs(1)).await;
    wrong.shutdown(Duration::from_secs(1)).await;
    shown
}

/// `Settings::load()` with the URL and the sentinel password in `STAYFAST_REDIS__*`.
fn loaded_from_env(url: &str) -> Settings {
    let mut loaded = None;
    figment::Jail::expect_with(|jail| {
        jail.set_env("STAYFAST_REDIS__URL", url);
        jail.set_env("STAYFAST_REDIS__PASSWORD", SENTINEL);
        loaded = Some(Settings::load().map_err(|e| e.to_string())?);
        Ok(())
    });
    loaded.unwrap()
}

/// `Settings::load()` with a URL holding the sentinel password in `stayfast.toml`.
fn loaded_from_file(url_with_password: &str) -> Settings {
    let mut loaded = None;
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "stayfast.toml",
            &format!("[redis]\nurl = \"{url_with_password}\"\n"),
        )?;
        loaded = Some(Settings::load().map_err(|e| e.to_string())?);
        Ok(())
    });
    loaded.unwrap()
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

    // Through `Settings::load()`: the password from the environment, then the URL
    // holding it from the file `stayfast.toml`.
    for (source, loaded) in [
        ("env", loaded_from_env(&server.url())),
        ("file", loaded_from_file(&url)),
    ] {
        shown.push(format!("{loaded:?} {:?}", loaded.redis_config()));
        let handle = Redis::connect(&loaded.redis_config()).await.unwrap();
        let out = exercise(&handle).await;
        assert!(
            out[2].contains("Some(\"v\")"),
            "authenticated from {source}: {out:?}"
        );
        shown.extend(out);
        let _ = handle.pool().quit().await;
    }

    // A panic on an error built from settings that hold the sentinel: the hook records
    // its message.
    let bad_url = url.replace("redis://", "http://");
    let refused = Settings::from_toml(&format!(
        "[redis]\nurl = \"{bad_url}\"\npassword = \"{SENTINEL}\"\n"
    ));
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| refused.map(drop).unwrap()));
    assert!(panicked.is_err(), "a URL with the wrong scheme was accepted");

    let dir = TempDir::new("secrets");
    shown.extend(exercise_facade(&server, &dir.0).await);

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
    assert!(!panics.is_empty(), "no panic recorded: the check would be empty");
    for secret in [SENTINEL, WRONG] {
        assert!(!logged.contains(secret), "log leaks {secret}");
        assert!(!traced.contains(secret), "tracing leaks {secret}");
        for text in shown.iter().chain(&panics) {
            assert!(!text.contains(secret), "leaks {secret}: {text}");
        }
    }
}
