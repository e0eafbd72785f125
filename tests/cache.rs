//! `Cache` against a real redis-server: round trips, TTLs, versions and the documented
//! key format; `get_or_insert_with` never failing because of the cache (corrupt
//! entries, a killed or stopped server, values over the cap); hit / miss / error counted
//! exactly, through a `DebuggingRecorder` the cache's handles were resolved from.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stayfast::{
    StoreError,
    cache::{Cache, CacheConfig},
    test_util::Reply,
};
use support::cache::{COMMAND_TIMEOUT, Counts, Fixture};

/// Scheduling and process slack on top of a bound.
const SLACK: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    plan: String,
    seats: u32,
}

fn alice() -> Profile {
    Profile {
        name: "alice".into(),
        plan: "pro".into(),
        seats: 3,
    }
}

/// A context struct: serializes as a JSON object, unlike the tuple of the same fields.
#[derive(Serialize)]
struct Lookup<'a> {
    kind: &'a str,
    id: u64,
}

/// Every fixture here is the cache `test`.
async fn fixture(config: CacheConfig) -> Fixture {
    support::cache::fixture("test", config).await
}

impl Fixture {
    /// The key the docs promise, computed here rather than asked of the cache.
    fn expected_key(&self, context: &(impl Serialize + ?Sized)) -> String {
        let json = serde_json::to_vec(context).unwrap();
        let (prefix, version) = (&self.config.prefix, self.config.version);
        format!("{prefix}:v{version}:{:x}", Sha256::digest(&json))
    }

    async fn raw_get(&self, key: &str) -> Option<String> {
        match self.server.command(&["GET", key]).await.unwrap() {
            Reply::Bulk(None) => None,
            reply => Some(reply.as_text().unwrap()),
        }
    }

    async fn ttl(&self, key: &str) -> i64 {
        self.server
            .command(&["TTL", key])
            .await
            .unwrap()
            .as_integer()
            .unwrap()
    }
}

fn counts(hit: u64, miss: u64, error: u64) -> Counts {
    Counts {
        hit,
        miss,
        error,
        ..Counts::default()
    }
}

/// A loader that counts its runs and answers `value`.
fn counting_loader<T: Clone>(
    runs: &Arc<AtomicUsize>,
    value: T,
) -> impl FnOnce() -> std::future::Ready<Result<T, String>> + use<T> {
    let runs = runs.clone();
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value))
    }
}

#[tokio::test]
async fn get_set_delete_round_trip_a_struct() {
    let mut f = fixture(CacheConfig::default()).await;
    let context = ("profile", 42);

    assert_eq!(f.cache.get::<Profile>(&context).await.unwrap(), None);
    f.cache.set(&context, &alice(), None).await.unwrap();
    assert_eq!(f.cache.get::<Profile>(&context).await.unwrap(), Some(alice()));
    assert!(f.cache.delete(&context).await.unwrap());
    assert_eq!(f.cache.get::<Profile>(&context).await.unwrap(), None);
    assert!(!f.cache.delete(&context).await.unwrap(), "nothing left to delete");

    // `set` and `delete` are not lookups: only the three `get`s are counted.
    assert_eq!(f.counts(), counts(1, 2, 0));
}

#[tokio::test]
async fn ttl_defaults_to_the_config_rounds_up_and_expires() {
    let mut config = CacheConfig::default();
    config.ttl = Duration::from_secs(600);
    let f = fixture(config).await;

    f.cache.set("default", &1, None).await.unwrap();
    let ttl = f.ttl(&f.expected_key("default")).await;
    assert!((599..=600).contains(&ttl), "TTL {ttl}");

    f.cache
        .set("rounded", &1, Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert_eq!(
        f.ttl(&f.expected_key("rounded")).await,
        2,
        "1.5 s rounds up to 2 s"
    );
    f.cache.set("zero", &1, Some(Duration::ZERO)).await.unwrap();
    assert_eq!(f.ttl(&f.expected_key("zero")).await, 1, "at least 1 s");

    let sets = f.server.executions("set").await.unwrap();
    let too_long = f
        .cache
        .set("forever", &1, Some(Duration::from_secs(200 * 365 * 86_400)))
        .await;
    assert!(
        matches!(too_long, Err(StoreError::InvalidInput { what: "ttl", .. })),
        "{too_long:?}"
    );
    assert_eq!(
        f.server.executions("set").await.unwrap(),
        sets,
        "refused before any I/O"
    );

    // A real expiry: Redis expires `EX 1` after 1000 ms.
    f.cache
        .set("short", &"soon gone", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(
        f.cache.get::<String>("short").await.unwrap().as_deref(),
        Some("soon gone")
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(f.cache.get::<String>("short").await.unwrap(), None);
    eprintln!("entry with ttl 1s gone after {:?}", started.elapsed());
}

#[tokio::test]
async fn version_bump_isolates_entries() {
    let f = fixture(CacheConfig::default()).await;
    let mut v2_config = f.config.clone();
    v2_config.version = 2;
    let v2 = Cache::new(f.redis.clone(), "test", &v2_config).unwrap();

    f.cache.set("settings", &"old shape", None).await.unwrap();
    assert_eq!(
        v2.get::<String>("settings").await.unwrap(),
        None,
        "v2 does not see v1"
    );
    v2.set("settings", &"new shape", None).await.unwrap();
    assert_eq!(
        f.cache.get::<String>("settings").await.unwrap().as_deref(),
        Some("old shape")
    );
    assert_eq!(
        v2.get::<String>("settings").await.unwrap().as_deref(),
        Some("new shape")
    );
    assert!(v2.key("settings").unwrap().starts_with("cache:v2:"));
}

#[tokio::test]
async fn keys_have_the_documented_format() {
    let mut config = CacheConfig::default();
    config.prefix = "app-cache".into();
    config.version = 7;
    let f = fixture(config).await;
    let context = Lookup { kind: "user", id: 42 };

    f.cache.set(&context, &alice(), None).await.unwrap();
    let key = f.expected_key(&context);
    let hash = key.strip_prefix("app-cache:v7:").unwrap();
    assert_eq!(hash.len(), 64);
    assert!(
        hash.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{hash}"
    );
    assert_eq!(f.cache.key(&context).unwrap(), key);
    // The hash is of the context's serde_json encoding, and the value is stored as JSON.
    assert_eq!(
        key,
        format!("app-cache:v7:{:x}", Sha256::digest(br#"{"kind":"user","id":42}"#))
    );
    assert_eq!(
        f.raw_get(&key).await.as_deref(),
        Some(r#"{"name":"alice","plan":"pro","seats":3}"#)
    );
}

#[tokio::test]
async fn context_types_give_distinct_keys_and_equal_contexts_share_across_instances() {
    let f = fixture(CacheConfig::default()).await;
    let contexts = [
        f.cache.key("user:42").unwrap(),
        f.cache.key(&("user", 42)).unwrap(),
        f.cache.key(&Lookup { kind: "user", id: 42 }).unwrap(),
        f.cache.key(&42).unwrap(),
        f.cache.key("42").unwrap(),
    ];
    for (i, a) in contexts.iter().enumerate() {
        for b in &contexts[i + 1..] {
            assert_ne!(a, b);
        }
    }

    // A second cache (another handle, another name, same config) finds the same entries.
    let other = Cache::new(
        support::connect(&f.server, |c| c.command_timeout = COMMAND_TIMEOUT).await,
        "other",
        &f.config,
    )
    .unwrap();
    f.cache.set("user:42", &"by str", None).await.unwrap();
    f.cache.set(&("user", 42), &"by tuple", None).await.unwrap();
    f.cache
        .set(&Lookup { kind: "user", id: 42 }, &"by struct", None)
        .await
        .unwrap();
    assert_eq!(
        other.get::<String>("user:42").await.unwrap().as_deref(),
        Some("by str")
    );
    assert_eq!(
        other.get::<String>(&("user", 42)).await.unwrap().as_deref(),
        Some("by tuple")
    );
    let by_struct = other
        .get::<String>(&Lookup { kind: "user", id: 42 })
        .await
        .unwrap();
    assert_eq!(by_struct.as_deref(), Some("by struct"));
}

#[tokio::test]
async fn miss_runs_the_loader_once_and_stores_then_hits_skip_it() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));

    let first = f
        .cache
        .get_or_insert_with(&("profile", 1), None, counting_loader(&runs, alice()))
        .await
        .unwrap();
    assert_eq!((first, runs.load(Ordering::SeqCst)), (alice(), 1));
    let key = f.expected_key(&("profile", 1));
    assert_eq!(
        f.raw_get(&key).await.as_deref(),
        Some(r#"{"name":"alice","plan":"pro","seats":3}"#)
    );
    assert!(f.ttl(&key).await > 3500, "stored with the config's ttl (1 h)");
    assert_eq!(f.counts(), counts(0, 1, 0));
    let ten_seconds = Some(Duration::from_secs(10));
    let other = f
        .cache
        .get_or_insert_with("other", ten_seconds, counting_loader(&runs, 7))
        .await;
    assert_eq!((other, runs.load(Ordering::SeqCst)), (Ok(7), 2));
    assert_eq!(f.ttl(&f.expected_key("other")).await, 10, "the call's own ttl");
    assert_eq!(f.counts(), counts(0, 2, 0));

    // A hit, from a spawned task: the future is `Send`.
    let cache = f.cache.clone();
    let loader = counting_loader(
        &runs,
        Profile {
            name: "bob".into(),
            ..alice()
        },
    );
    let second = tokio::spawn(async move { cache.get_or_insert_with(&("profile", 1), None, loader).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (second, runs.load(Ordering::SeqCst)),
        (alice(), 2),
        "the loader did not run"
    );
    assert_eq!(f.counts(), counts(1, 2, 0));
}

#[tokio::test]
async fn loader_error_is_returned_and_never_cached() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let failing = || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err::<Profile, _>("database down".to_owned()))
    };

    let first = f.cache.get_or_insert_with("profile", None, failing).await;
    assert_eq!(first, Err("database down".to_owned()));
    assert_eq!(
        f.raw_get(&f.expected_key("profile")).await,
        None,
        "nothing stored"
    );

    let retried = f
        .cache
        .get_or_insert_with("profile", None, counting_loader(&runs, alice()))
        .await;
    assert_eq!(retried, Ok(alice()));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the next call ran the loader again"
    );
    assert!(f.raw_get(&f.expected_key("profile")).await.is_some());
    // A loader error, then a miss: the cache itself worked.
    let loader_error = Counts {
        loader_error: 1,
        ..counts(0, 1, 0)
    };
    assert_eq!(f.counts(), loader_error);
}

#[tokio::test]
async fn corrupt_entry_falls_through_to_the_loader_and_is_repaired() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let key = f.expected_key("profile");

    // Not JSON, JSON of an older shape (no `plan`, no `seats`), not even a string.
    let damage: [&[&str]; 3] = [
        &["SET", &key, "{not json"],
        &["SET", &key, r#"{"name":"alice"}"#],
        &["HSET", &key, "name", "alice"],
    ];
    for (n, command) in damage.into_iter().enumerate() {
        f.server.command(&["DEL", &key]).await.unwrap();
        f.server.command(command).await.unwrap();
        let read = f.cache.get::<Profile>("profile").await;
        assert!(matches!(read, Err(StoreError::Corrupt { .. })), "{read:?}");
        assert!(
            !read.unwrap_err().to_string().contains("alice"),
            "the entry is not echoed"
        );

        let value = f
            .cache
            .get_or_insert_with("profile", None, counting_loader(&runs, alice()))
            .await
            .unwrap();
        assert_eq!((value, runs.load(Ordering::SeqCst)), (alice(), n + 1));
        assert_eq!(
            f.raw_get(&key).await.as_deref(),
            Some(r#"{"name":"alice","plan":"pro","seats":3}"#),
            "repaired"
        );
    }
    let hit = f
        .cache
        .get_or_insert_with("profile", None, counting_loader(&runs, alice()))
        .await;
    assert_eq!((hit, runs.load(Ordering::SeqCst)), (Ok(alice()), 3));
    // Per round: the `get` and the repairing call are errors; then one hit.
    assert_eq!(f.counts(), counts(1, 0, 6));
}

#[tokio::test]
async fn failed_store_is_counted_and_the_loaded_value_still_returned() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    // Out of memory under `noeviction`: reads work, every write is refused with OOM.
    f.server
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .await
        .unwrap();

    let value = f
        .cache
        .get_or_insert_with("profile", None, counting_loader(&runs, alice()))
        .await;
    assert_eq!((value, runs.load(Ordering::SeqCst)), (Ok(alice()), 1));
    assert_eq!(
        f.raw_get(&f.expected_key("profile")).await,
        None,
        "the store failed"
    );
    assert_eq!(
        f.counts(),
        counts(0, 0, 1),
        "a miss whose store failed is an error"
    );
    let refused = f.cache.set("profile", &alice(), None).await;
    assert!(matches!(refused, Err(StoreError::Redis(_))), "{refused:?}");
}

#[tokio::test]
async fn redis_killed_the_loader_still_answers_within_the_bound() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    f.server.kill().unwrap();

    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let value = f
            .cache
            .get_or_insert_with("profile", None, counting_loader(&runs, alice()))
            .await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(value, Ok(alice()));
    }
    eprintln!("Redis killed: slowest of 5 get_or_insert_with calls {slowest:?} (bound {COMMAND_TIMEOUT:?})");
    assert!(slowest <= COMMAND_TIMEOUT + SLACK, "{slowest:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    assert_eq!(f.counts(), counts(0, 0, 5));

    // `get` and `set` report Redis's failure to their caller instead.
    assert!(matches!(
        f.cache.get::<Profile>("profile").await,
        Err(StoreError::Redis(_))
    ));
    assert!(matches!(
        f.cache.set("profile", &alice(), None).await,
        Err(StoreError::Redis(_))
    ));
}

#[tokio::test]
async fn redis_stopped_costs_one_bound_not_two() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    // SIGSTOP: connections stay open, nothing answers — the lookup waits out its bound.
    f.server.pause().unwrap();

    let started = Instant::now();
    let value = f
        .cache
        .get_or_insert_with("profile", None, counting_loader(&runs, alice()))
        .await;
    let took = started.elapsed();
    f.server.resume().unwrap();
    eprintln!("Redis stopped: get_or_insert_with returned after {took:?} (bound {COMMAND_TIMEOUT:?})");
    assert_eq!(value, Ok(alice()));
    assert!(
        took <= COMMAND_TIMEOUT + SLACK,
        "no store after a failed lookup: {took:?}"
    );
    assert_eq!(f.counts(), counts(0, 0, 1));
}

#[tokio::test]
async fn value_over_the_cap_is_returned_not_stored() {
    let mut config = CacheConfig::default();
    config.max_value_bytes = 16;
    let mut f = fixture(config).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let big = "x".repeat(100);

    let sets = f.server.executions("set").await.unwrap();
    let refused = f.cache.set("big", &big, None).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::TooLarge {
                len: 102,
                max: 16,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        f.server.executions("set").await.unwrap(),
        sets,
        "refused before any I/O"
    );

    for n in 1..=2 {
        let value = f
            .cache
            .get_or_insert_with("big", None, counting_loader(&runs, big.clone()))
            .await;
        assert_eq!(value.as_deref(), Ok(big.as_str()));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            n,
            "never cached, so loaded each time"
        );
    }
    assert_eq!(f.raw_get(&f.expected_key("big")).await, None);
    assert_eq!(f.server.executions("set").await.unwrap(), sets);
    // At the cap exactly, it is stored: `"` + 14 bytes + `"`.
    let fits = "y".repeat(14);
    f.cache.set("fits", &fits, None).await.unwrap();
    assert_eq!(f.cache.get::<String>("fits").await.unwrap(), Some(fits));
    assert_eq!(f.counts(), counts(1, 2, 0));
}

#[tokio::test]
async fn unencodable_context_bypasses_the_cache() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    // JSON object keys must be strings: this map has no serde_json encoding.
    let context = std::collections::BTreeMap::from([((1, 2), "tuple key")]);

    let read = f.cache.get::<Profile>(&context).await;
    assert!(
        matches!(
            read,
            Err(StoreError::Encode {
                what: "cache context",
                ..
            })
        ),
        "{read:?}"
    );
    let value = f
        .cache
        .get_or_insert_with(&context, None, counting_loader(&runs, alice()))
        .await;
    assert_eq!((value, runs.load(Ordering::SeqCst)), (Ok(alice()), 1));
    assert_eq!(f.counts(), counts(0, 0, 2));
}

#[tokio::test]
async fn call_dropped_while_loading_stores_and_counts_nothing() {
    let mut f = fixture(CacheConfig::default()).await;
    let never = || std::future::pending::<Result<Profile, String>>();

    let call = f.cache.get_or_insert_with("profile", None, never);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err()
    );
    assert_eq!(f.raw_get(&f.expected_key("profile")).await, None);
    assert_eq!(
        f.counts(),
        counts(0, 0, 0),
        "the miss is counted only once stored"
    );
    assert_eq!(f.cache.in_flight(), 0, "its flight went with it");
}
