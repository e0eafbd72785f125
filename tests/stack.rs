//! The whole stack, the way an application uses it: `Stayfast::from_settings` over a real
//! redis-server and a real directory, with the HTTP `/metrics` listener on.
//!
//! One test in steps, because the metrics recorder is process-wide and installed once:
//! 1. every store method once (knowledge, transcripts, cache);
//! 2. a failing Redis (SIGSTOP): a GET times out, the breaker opens and rejects, the
//!    stores degrade (history from the file, the cache's loader answers), then recover;
//! 3. a `/metrics` scrape over HTTP, parsed as the exposition format: every metric of
//!    the metrics table that exists so far, its type, its exact label keys, the 12 buckets;
//! 4. F4 metrics_exposure: loopback by default, and 100 000 distinct session ids,
//!    10 000 cache keys and 1 000 fact ids leave the series count unchanged;
//! 5. `shutdown(grace)`: nothing aborted, pending appends flushed, the pool closed (a
//!    clone of the Redis handle fails fast afterwards).
//!
//! Figures are printed with `--nocapture`.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use support::{TempDir, scrape, service_settings};

use stayfast::{
    Stayfast,
    breaker::State,
    fs::FsyncPolicy,
    settings::Settings,
    test_util::RedisServer,
    transcripts::{HistorySource, Message},
};

/// The GET bound in this test: short, so the SIGSTOP step is quick.
const GET_TIMEOUT: Duration = Duration::from_millis(300);
/// Scheduling slack on wall-clock bounds (the machine is shared).
const SLACK: Duration = Duration::from_millis(750);
/// Concurrent callers in the F4 step.
const CONCURRENCY: usize = 64;
/// F4's figures (`docs/testing.md`): distinct ids that must not grow the series count.
const SESSIONS: usize = 100_000;
const CACHE_KEYS: usize = 10_000;
const FACT_IDS: usize = 1_000;

/// The 12 buckets of `HISTOGRAM_BUCKETS` and `+Inf`, as the exporter renders them.
const BUCKETS: [&str; 13] = [
    "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "2", "5", "10", "30", "60", "+Inf",
];

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

fn settings(server: &RedisServer, dir: &TempDir) -> Settings {
    let mut s = service_settings(server, dir, GET_TIMEOUT);
    // Batched fsync: `shutdown` must flush what the appends left unsynced.
    s.transcripts.fsync = FsyncPolicy::EveryMs(60_000);
    s
}

// ---------------------------------------------------------------------------------
// The exposition format
// ---------------------------------------------------------------------------------

/// One sample line: `name{k="v",…} value` or `name value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn keys(&self) -> Vec<&str> {
        self.labels.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    is_metric_name(name) && !name.contains(':')
}

/// `k="v",k2="v2"` (escapes `\\`, `\"`, `\n` in values), in order.
fn parse_labels(mut rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("no `=\"` in {rest:?}"))?;
        if !is_label_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut chars = after.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, e @ ('\\' | '"'))) => value.push(e),
                    other => return Err(format!("bad escape {other:?}")),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("unterminated value in {rest:?}"))?;
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            rest = next;
        } else if !rest.is_empty() {
            return Err(format!("junk after a label: {rest:?}"));
        }
    }
    Ok(labels)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    // The last space separates the value (the exporter writes no timestamps).
    let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
    let value: f64 = value
        .parse()
        .map_err(|_| format!("value {value:?} is not a float"))?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let inside = rest.strip_suffix('}').ok_or("labels not closed")?;
            (name, parse_labels(inside)?)
        }
        None => (series, Vec::new()),
    };
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A parsed scrape: `# TYPE`s, `# HELP`s and every sample.
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses `text`, panicking on any line that is not a comment, blank or a sample.
    fn parse(text: &str) -> Self {
        let mut types = BTreeMap::new();
        let mut helps = BTreeSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "two TYPE lines for {name}"
                );
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(!help.trim().is_empty(), "empty HELP for {name}");
                helps.insert(name.to_owned());
            } else if line.starts_with('#') {
                continue;
            } else {
                samples.push(parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}")));
            }
        }
        Self {
            types,
            helps,
            samples,
        }
    }

    fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Asserts `name` has `# TYPE kind`, `# HELP`, at least one sample, and that every
    /// sample of it (its `_bucket`/`_sum`/`_count` for a histogram) has exactly `keys`.
    fn check(&self, name: &str, kind: &str, keys: &[&str]) {
        assert_eq!(
            self.types.get(name).map(String::as_str),
            Some(kind),
            "# TYPE of {name}"
        );
        assert!(self.helps.contains(name), "no # HELP for {name}");
        let series: Vec<(String, Vec<&str>)> = if kind == "histogram" {
            let mut with_le = keys.to_vec();
            with_le.push("le");
            vec![
                (format!("{name}_bucket"), with_le),
                (format!("{name}_sum"), keys.to_vec()),
                (format!("{name}_count"), keys.to_vec()),
            ]
        } else {
            vec![(name.to_owned(), keys.to_vec())]
        };
        for (series, keys) in series {
            let mut n = 0;
            for sample in self.of(&series) {
                assert_eq!(sample.keys(), keys, "label keys of {sample:?}");
                n += 1;
            }
            assert!(n > 0, "no sample of {series}");
        }
    }

    /// The `le` values of the `_bucket` samples of `name` whose labels include `with`.
    fn buckets(&self, name: &str, with: &[(&str, &str)]) -> Vec<String> {
        self.of(&format!("{name}_bucket"))
            .filter(|s| with.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.label("le").unwrap().to_owned())
            .collect()
    }

    /// The value of the sample of `name` with exactly these label values (0 if absent).
    fn value(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.of(name)
            .filter(|s| with.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }
}

/// The series of a scrape: its non-comment, non-blank lines.
fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

// ---------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_stack() {
    // F4: the exporter's own default is 0.0.0.0:9000; ours is loopback.
    let defaults = Settings::default();
    assert!(
        defaults.metrics.listen.ip().is_loopback(),
        "{}",
        defaults.metrics.listen
    );
    assert!(!defaults.metrics.http_listener, "the listener is opt-in");

    let server = RedisServer::start().await.unwrap();
    let dir = TempDir::new("stack");
    let settings = settings(&server, &dir);
    let started = Instant::now();
    let app = Stayfast::from_settings(&settings).await.unwrap();
    eprintln!("from_settings: {:?}", started.elapsed());
    let telemetry = app.telemetry().unwrap();
    assert_eq!(telemetry.listening(), Some(settings.metrics.listen));

    exercise_every_store_method(&app).await;
    fail_and_recover(&app, &server).await;
    abandon_an_offloaded_call().await;

    let text = scrape(settings.metrics.listen).await;
    check_exposition(&text);

    series_stay_bounded(&app, settings.metrics.listen).await;

    shut_down(app, &settings).await;
}

/// Step 1: every method of every store, once, against the live server.
async fn exercise_every_store_method(app: &Stayfast) {
    // Knowledge.
    let kb = app.knowledge().unwrap();
    let health = kb.health();
    assert!(health.ok, "{health:?}");
    assert_eq!(health.breaker, State::Closed);
    let before = kb.count().await.unwrap();
    let id = kb
        .store_fact("The stack test stores one fact", serde_json::json!({"step": 1}))
        .await
        .unwrap();
    let fact = kb.get_fact(&id).await.unwrap().unwrap();
    assert_eq!(fact.content, "The stack test stores one fact");
    assert_eq!(fact.metadata, serde_json::json!({"step": 1}));
    assert!(kb.list_facts().await.unwrap().iter().any(|f| f.id == id));
    assert_eq!(kb.search("STACK fact", 10).await.unwrap()[0].id, id);
    assert_eq!(kb.count().await.unwrap(), before + 1);
    assert!(kb.delete_fact(&id).await.unwrap());
    assert_eq!(kb.get_fact(&id).await.unwrap(), None);
    assert_eq!(kb.count().await.unwrap(), before);

    // Transcripts: appends, history (Redis once the background push landed), delete.
    let tx = app.transcripts();
    for (i, text) in ["hello", "hi there", "bye"].into_iter().enumerate() {
        let record = tx
            .append("stack-session", Message::new("user", text))
            .await
            .unwrap()
            .record;
        assert_eq!(record.seq, i as u64 + 1);
    }
    let history = wait_for_redis_history(app, "stack-session", 3).await;
    assert_eq!(history.records.len(), 3);
    assert_eq!(history.records[2].content, "bye");
    tx.flush().await.unwrap();
    assert!(tx.delete_session("stack-session").await.unwrap());
    assert_eq!(
        tx.history("stack-session", 10).await.unwrap().source,
        HistorySource::None
    );

    // Cache: set / get hit / get miss / delete, and get_or_insert_with miss then hit.
    let cache = app.cache().unwrap();
    cache.set(&("stack", 1), "one", None).await.unwrap();
    assert_eq!(
        cache.get::<String>(&("stack", 1)).await.unwrap().as_deref(),
        Some("one")
    );
    assert_eq!(cache.get::<String>(&("stack", 2)).await.unwrap(), None);
    assert!(cache.delete(&("stack", 1)).await.unwrap());
    assert!(!cache.delete(&("stack", 1)).await.unwrap());
    let loads = AtomicUsize::new(0);
    for _ in 0..2 {
        let v: u32 = cache
            .get_or_insert_with(&("stack", "computed"), None, || async {
                loads.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(42)
            })
            .await
            .unwrap();
        assert_eq!(v, 42);
    }
    assert_eq!(loads.load(Ordering::Relaxed), 1, "a miss, then a hit");
}

/// Polls `history` until the Redis window serves it (the append's push is
/// fire-and-forget).
async fn wait_for_redis_history(app: &Stayfast, session: &str, len: usize) -> stayfast::transcripts::History {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let history = app.transcripts().history(session, len).await.unwrap();
        assert!(!history.degraded, "{history:?}");
        if history.source == HistorySource::Redis || Instant::now() > deadline {
            assert_eq!(history.source, HistorySource::Redis, "never served from Redis");
            return history;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Step 2: SIGSTOP the server. A GET times out, a second one opens the circuit, the
/// next is rejected at once; history falls back to the file, the cache's loader
/// answers; after SIGCONT the circuit closes again.
async fn fail_and_recover(app: &Stayfast, server: &RedisServer) {
    let redis = app.redis().unwrap();
    let tx = app.transcripts();
    for text in ["before", "the", "outage"] {
        tx.append("outage-session", Message::new("user", text))
            .await
            .unwrap();
    }
    wait_for_redis_history(app, "outage-session", 3).await;

    server.pause().unwrap();
    let mut timeouts = Vec::new();
    while redis.breaker().state() == State::Closed && timeouts.len() < 5 {
        let started = Instant::now();
        let got = redis.get::<Option<String>>("stack:k").await;
        let took = started.elapsed();
        let e = got.unwrap_err();
        assert!(took < GET_TIMEOUT + SLACK, "GET under SIGSTOP took {took:?}: {e}");
        eprintln!("GET under SIGSTOP: {took:?}: {e}");
        timeouts.push(took);
    }
    assert_eq!(redis.breaker().state(), State::Open, "after {timeouts:?}");

    let started = Instant::now();
    let rejected = redis.get::<Option<String>>("stack:k").await.unwrap_err();
    let fast = started.elapsed();
    assert!(rejected.is_circuit_open(), "{rejected}");
    assert!(fast < Duration::from_millis(50), "rejected in {fast:?}");
    eprintln!("open circuit: rejected in {fast:?}");

    let health = app.knowledge().unwrap().health();
    assert!(!health.ok, "{health:?}");

    // The stores degrade instead of failing.
    let started = Instant::now();
    let history = tx.history("outage-session", 10).await.unwrap();
    eprintln!(
        "history while Redis is stopped: {:?} from {:?}",
        started.elapsed(),
        history.source
    );
    assert_eq!(history.source, HistorySource::File);
    assert!(history.degraded);
    assert_eq!(history.records.len(), 3);
    let v: String = app
        .cache()
        .unwrap()
        .get_or_insert_with(&("stack", "outage"), None, || async {
            Ok::<_, std::io::Error>("loaded".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(v, "loaded");

    server.resume().unwrap();
    let resumed = Instant::now();
    loop {
        if redis.get::<Option<String>>("stack:k").await.is_ok() && redis.breaker().state() == State::Closed {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(15),
            "no recovery: {:?}",
            redis.breaker().state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("recovered {:?} after SIGCONT", resumed.elapsed());
    let history = wait_for_redis_history(app, "outage-session", 3).await;
    assert_eq!(history.records[0].content, "before");
}

/// A blocking call offloaded beside the stores, whose caller gives up before it ends:
/// the offload series (`stayfast_offload_*`) are then in the scrape, with values.
async fn abandon_an_offloaded_call() {
    let offload = stayfast::Offload::new("offload.index", &stayfast::OffloadConfig::default()).unwrap();
    let query = stayfast::Policy::builder("index.query")
        .timeout(Duration::from_millis(20))
        .idempotent(true) // a read: its timeout is a plain timeout, not an unknown outcome
        .build()
        .unwrap();
    let hung = offload.run(&query, || {
        std::thread::sleep(Duration::from_millis(200));
        Ok::<_, std::convert::Infallible>(())
    });
    let error = hung.await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
}

/// Step 3: the scrape, parsed and checked: each metric of the library, its type and
/// its exact label keys.
fn check_exposition(text: &str) {
    let x = Exposition::parse(text);
    eprintln!(
        "scrape: {} bytes, {} metrics, {} samples",
        text.len(),
        x.types.len(),
        x.samples.len()
    );
    let op_target: &[&str] = &["operation", "target"];
    x.check("stayfast_call_duration_seconds", "histogram", op_target);
    x.check(
        "stayfast_calls_total",
        "counter",
        &["operation", "target", "outcome"],
    );
    x.check("stayfast_attempts_total", "counter", op_target);
    x.check("stayfast_retries_total", "counter", op_target);
    x.check(
        "stayfast_fallbacks_total",
        "counter",
        &["operation", "target", "reason"],
    );
    // History served from the file while Redis was paused (step 2) is a fallback of
    // the logical `transcripts.history` call, counted against the Redis target.
    let history = [("operation", "transcripts.history"), ("target", "redis.main")];
    // (The circuit had already opened: the reason is then `rejected`.)
    let fell_back: f64 = ["failure", "timeout", "rejected"]
        .iter()
        .map(|r| {
            x.value(
                "stayfast_fallbacks_total",
                &[history[0], history[1], ("reason", r)],
            )
        })
        .sum();
    assert!(fell_back >= 1.0, "history fallbacks: {fell_back}");
    let outcome = x.value(
        "stayfast_calls_total",
        &[history[0], history[1], ("outcome", "fallback")],
    );
    assert_eq!(
        outcome, fell_back,
        "every fallback is a `fallback` outcome of its call"
    );
    assert!(
        x.value(
            "stayfast_calls_total",
            &[history[0], history[1], ("outcome", "success")]
        ) >= 1.0
    );
    x.check("stayfast_circuit_state", "gauge", &["target"]);
    x.check(
        "stayfast_circuit_transitions_total",
        "counter",
        &["target", "to", "reason"],
    );
    x.check("stayfast_background_in_flight", "gauge", &["spawner"]);
    x.check(
        "stayfast_background_tasks_total",
        "counter",
        &["spawner", "outcome"],
    );
    x.check("stayfast_cache_requests_total", "counter", &["cache", "result"]);
    x.check("stayfast_redis_connections", "gauge", &["target", "state"]);
    x.check("stayfast_redis_pool_size", "gauge", &["target"]);
    x.check("stayfast_redis_commands_in_flight", "gauge", &["target"]);
    x.check("stayfast_redis_commands_buffered", "gauge", &["target"]);
    x.check("stayfast_runtime_lag_seconds", "histogram", &[]);
    x.check("stayfast_offload_in_flight", "gauge", &["target"]);
    x.check("stayfast_offload_abandoned_total", "counter", &["target"]);
    assert_eq!(
        x.value("stayfast_offload_abandoned_total", &[("target", "offload.index")]),
        1.0
    );

    // The 12 buckets and +Inf, on every histogram series.
    for with in [
        vec![("operation", "redis.get"), ("target", "redis.main")],
        vec![("operation", "transcripts.read"), ("target", "fs.transcripts")],
    ] {
        assert_eq!(
            x.buckets("stayfast_call_duration_seconds", &with),
            BUCKETS,
            "{with:?}"
        );
    }
    assert_eq!(x.buckets("stayfast_runtime_lag_seconds", &[]), BUCKETS);
    let histograms = x.of("stayfast_call_duration_seconds_count").count();
    assert_eq!(
        x.of("stayfast_call_duration_seconds_bucket").count(),
        histograms * BUCKETS.len()
    );

    // Every metric served is described, and has samples.
    for (name, kind) in &x.types {
        assert!(x.helps.contains(name), "{name} is not described");
        let sample = if kind == "histogram" {
            format!("{name}_count")
        } else {
            name.clone()
        };
        assert!(x.of(&sample).next().is_some(), "{name} has no sample");
    }

    // What steps 1 and 2 did is there.
    let get = [("operation", "redis.get"), ("target", "redis.main")];
    let outcome = |o: &'static str| {
        let mut with = get.to_vec();
        with.push(("outcome", o));
        x.value("stayfast_calls_total", &with)
    };
    assert!(outcome("success") >= 1.0);
    assert!(
        outcome("timeout") + outcome("failure") >= 1.0,
        "the GETs under SIGSTOP"
    );
    assert!(outcome("rejected") >= 1.0, "the GET on the open circuit");
    let transition = |to, reason| {
        x.value(
            "stayfast_circuit_transitions_total",
            &[("target", "redis.main"), ("to", to), ("reason", reason)],
        )
    };
    assert!(transition("open", "failure_threshold") >= 1.0);
    assert!(transition("closed", "probe_succeeded") >= 1.0);
    assert_eq!(
        x.value("stayfast_circuit_state", &[("target", "redis.main")]),
        0.0
    );
    let cache = |result| {
        x.value(
            "stayfast_cache_requests_total",
            &[("cache", "default"), ("result", result)],
        )
    };
    assert!(cache("hit") >= 2.0 && cache("miss") >= 2.0 && cache("error") >= 1.0);
    assert!(
        x.value(
            "stayfast_background_tasks_total",
            &[("spawner", "stayfast"), ("outcome", "success")]
        ) >= 1.0
    );
    assert!(x.value("stayfast_redis_pool_size", &[("target", "redis.main")]) >= 1.0);
    let connections = |state| {
        x.value(
            "stayfast_redis_connections",
            &[("target", "redis.main"), ("state", state)],
        )
    };
    assert_eq!(
        connections("connected") + connections("disconnected"),
        x.value("stayfast_redis_pool_size", &[("target", "redis.main")])
    );
    assert!(x.value("stayfast_runtime_lag_seconds_count", &[]) >= 1.0);
}

/// Step 4 (F4): distinct session ids, cache keys and fact ids add no series.
async fn series_stay_bounded(app: &Stayfast, listen: SocketAddr) {
    let before_text = scrape(listen).await;
    let before = series_count(&before_text);

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (tx, next) = (app.transcripts().clone(), Arc::clone(&next));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= SESSIONS {
                    return;
                }
                let h = tx.history(&format!("f4-session-{i}"), 10).await.unwrap();
                assert_eq!(h.source, HistorySource::None);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    let histories = started.elapsed();

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..CONCURRENCY {
        let (cache, kb, next) = (
            app.cache().unwrap().clone(),
            app.knowledge().unwrap().clone(),
            Arc::clone(&next),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CACHE_KEYS {
                    return;
                }
                let got: Option<String> = cache.get(&("f4", i)).await.unwrap();
                assert_eq!(got, None);
                if i < FACT_IDS {
                    let id = uuid::Uuid::new_v4().to_string();
                    assert_eq!(kb.get_fact(&id).await.unwrap(), None);
                    // A distinct bad id each time: an error text per call, never a label.
                    let bad = format!("not-a-uuid-{i}");
                    assert!(kb.get_fact(&bad).await.unwrap_err().is_bad_input());
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    let lookups = started.elapsed();

    let after_text = scrape(listen).await;
    let after = series_count(&after_text);
    eprintln!(
        "F4: {before} series before, {after} after {SESSIONS} history calls on distinct sessions \
         ({histories:?}, {:.0}/s) and {CACHE_KEYS} cache gets + {FACT_IDS} get_fact + {FACT_IDS} bad ids \
         ({lookups:?}); {CONCURRENCY} at a time",
        SESSIONS as f64 / histories.as_secs_f64()
    );
    if before != after {
        let names = |t: &str| -> BTreeSet<String> {
            t.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
                .collect()
        };
        let added: Vec<_> = names(&after_text)
            .difference(&names(&before_text))
            .cloned()
            .collect();
        panic!("series count changed {before} → {after}; new: {added:#?}");
    }
    for probe in ["f4-session", "not-a-uuid", "f4"] {
        assert!(
            !after_text.contains(&format!("\"{probe}")),
            "a call argument reached a label: {probe}"
        );
    }
}

/// Step 5: appends left unsynced, then `shutdown`: nothing aborted, the appends on
/// disk, the pool closed.
async fn shut_down(app: Stayfast, settings: &Settings) {
    let redis = app.redis().unwrap().clone();
    for i in 0..20 {
        app.transcripts()
            .append("shutdown-session", Message::new("user", format!("m{i}")))
            .await
            .unwrap();
    }
    let started = Instant::now();
    let report = app.shutdown(Duration::from_secs(5)).await;
    eprintln!(
        "shutdown: {:?}, {} in flight, {} aborted",
        started.elapsed(),
        report.in_flight,
        report.aborted
    );
    assert_eq!(report.aborted, 0);

    // Durable in the file whatever happened to Redis.
    let files: Vec<_> = std::fs::read_dir(&settings.transcripts.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    let lines: usize = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    assert_eq!(lines, 3 + 20, "outage-session and shutdown-session: {files:?}");

    // The pool is closed: a clone of the handle fails fast, not after its timeout.
    let started = Instant::now();
    let after = redis.get::<Option<String>>("stack:k").await;
    let took = started.elapsed();
    eprintln!("GET after shutdown: {took:?}: {after:?}");
    // NOTE: fred reports the closed client as `Canceled`, which the handle classifies
    // as transient and retries once or twice (its backoff is most of `took`); it never
    // waits out the GET's bound.
    let e = after.unwrap_err();
    assert!(!e.is_timeout(), "{e}");
    assert!(took < GET_TIMEOUT, "failed in {took:?}");
}
