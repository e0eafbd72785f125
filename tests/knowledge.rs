//! `KnowledgeStore` against a real redis-server (one per test): every call's happy
//! path, ids, E3 text_and_size, E4 glob_escape (side by side on one server, and a
//! proptest against a reference matcher), C10 scan_list_under_churn, search semantics,
//! and bounded errors with Redis down. Figures are printed with `eprintln!`
//! (`--nocapture`).
#![allow(clippy::unwrap_used)]

mod support;

use support::deployment::TestRedis;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use proptest::prelude::*;
use serde_json::json;
use stayfast::{
    StoreError,
    breaker::State,
    knowledge::{Fact, KnowledgeConfig, KnowledgeStore, MAX_QUERY_TOKENS, glob_escape},
    redis::{Redis, RedisConfig},
    test_util::Reply,
};

/// A handle with the default config.
async fn connect(server: &TestRedis) -> Redis {
    support::connect(server, |_| {}).await
}

fn store_with(redis: &Redis, prefix: &str, tune: impl FnOnce(&mut KnowledgeConfig)) -> KnowledgeStore {
    let mut c = KnowledgeConfig::default();
    c.prefix = prefix.into();
    tune(&mut c);
    KnowledgeStore::new(redis.clone(), &c).unwrap()
}

/// The one-shard layout, `{<prefix>}:fact:<id>` and `{<prefix>}:idx:<word>`, for the
/// tests that read or plant raw keys: on a cluster the default spreads a store over
/// shards whose key names these tests cannot know (`tests/knowledge_cluster.rs` checks
/// that layout's keys). Every other test runs with the deployment's default.
fn one_shard(c: &mut KnowledgeConfig) {
    c.shards = Some(1);
}

fn ids(facts: &[Fact]) -> Vec<&str> {
    facts.iter().map(|f| f.id.as_str()).collect()
}

/// The members of a set, by a raw connection (independent of the store).
async fn smembers(server: &TestRedis, key: &str) -> HashSet<String> {
    match server.command(&["SMEMBERS", key]).await.unwrap() {
        Reply::Array(Some(items)) => items.iter().filter_map(Reply::as_text).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_call_happy_path() {
    let server = TestRedis::start().await.unwrap();
    let store = store_with(&connect(&server).await, "kb", one_shard);

    let health = store.health();
    assert!(health.ok, "{health:?}");
    assert_eq!(health.breaker, State::Closed);
    assert!(health.connected >= 1 && health.connected <= health.pool_size);

    assert_eq!(store.count().await.unwrap(), 0);
    assert!(store.list_facts().await.unwrap().is_empty());
    let meta = json!({"source": "atlas", "page": 12, "tags": ["geo", "eu"]});
    let t0 = SystemTime::now();
    let paris = store
        .store_fact("Paris is the capital of France", meta.clone())
        .await
        .unwrap();
    let rhine = store
        .store_fact(String::from("The Rhine flows into the North Sea"), json!(null))
        .await
        .unwrap();
    assert_ne!(paris, rhine);
    let uuid = uuid::Uuid::parse_str(&paris).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(uuid.hyphenated().to_string(), paris);

    let fact = store.get_fact(&paris).await.unwrap().unwrap();
    assert_eq!(fact.id, paris);
    assert_eq!(fact.content, "Paris is the capital of France");
    assert_eq!(fact.metadata, meta);
    let created = humantime::parse_rfc3339(&fact.created_at).unwrap();
    assert!(created >= t0 - Duration::from_secs(1) && created <= SystemTime::now());
    assert_eq!(fact.created_at.len(), "2026-01-01T00:00:00.000000Z".len());
    let serialized = serde_json::to_value(&fact).unwrap();
    assert_eq!(serialized["metadata"]["page"], 12);
    assert_eq!(serialized["id"], paris.as_str());
    // An upper-case id names the same fact.
    assert_eq!(
        store.get_fact(&paris.to_uppercase()).await.unwrap(),
        Some(fact.clone())
    );

    assert_eq!(store.count().await.unwrap(), 2);
    let listed = store.list_facts().await.unwrap();
    assert_eq!(ids(&listed), [paris.as_str(), rhine.as_str()]); // insertion order
    assert_eq!(listed[0], fact);
    assert_eq!(
        ids(&store.search("capital FRANCE", 10).await.unwrap()),
        [paris.as_str()]
    );
    assert_eq!(
        ids(&store.search("the", 10).await.unwrap()),
        [rhine.as_str(), paris.as_str()]
    ); // newest first

    assert!(store.delete_fact(&paris).await.unwrap());
    assert_eq!(store.get_fact(&paris).await.unwrap(), None);
    assert!(!store.delete_fact(&paris).await.unwrap());
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(ids(&store.list_facts().await.unwrap()), [rhine.as_str()]);
    assert!(store.search("paris", 10).await.unwrap().is_empty());
    // The hash and every index entry of the deleted fact are gone; the other's remain.
    let keys = match server.command(&["KEYS", "*"]).await.unwrap() {
        Reply::Array(Some(k)) => k.iter().filter_map(Reply::as_text).collect::<HashSet<_>>(),
        other => panic!("{other:?}"),
    };
    assert!(
        !keys.iter().any(|k| k.contains("paris") || k.contains(&paris)),
        "{keys:?}"
    );
    assert!(keys.contains(&format!("{{kb}}:fact:{rhine}")));
    assert!(keys.contains("{kb}:idx:rhine"));
    eprintln!("happy path: {} keys left: {keys:?}", keys.len());
}

#[tokio::test]
async fn absent_and_malformed_ids() {
    let server = TestRedis::start().await.unwrap();
    let store = store_with(&connect(&server).await, "kb", one_shard);
    let absent = uuid::Uuid::new_v4().to_string();
    assert_eq!(store.get_fact(&absent).await.unwrap(), None);
    assert!(!store.delete_fact(&absent).await.unwrap());
    for bad in [
        "",
        "not-a-uuid",
        "../../etc/passwd",
        "*",
        "67e5504410b1426f9247bb680e5fe0c8", // simple form: not the store's
        "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
        "67e55044-10b1-426f-9247-bb680e5fe0c8\0",
    ] {
        for e in [
            store.get_fact(bad).await.unwrap_err(),
            store.delete_fact(bad).await.unwrap_err(),
        ] {
            assert!(
                matches!(e, StoreError::InvalidInput { what: "fact id", .. }),
                "{bad:?}: {e}"
            );
            assert!(
                !e.to_string().contains("passwd"),
                "the error does not echo the input"
            );
        }
    }
    // A key at a fact's place holding another type is reported, not decoded.
    let planted = uuid::Uuid::new_v4().to_string();
    server
        .command(&["SET", &format!("{{kb}}:fact:{planted}"), "x"])
        .await
        .unwrap();
    let e = store.get_fact(&planted).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { what: "fact", .. }), "{e}");
    eprintln!("planted string key: {e}");
}

/// E3: text round-trips byte-exact through store / get / list / search; the caps are
/// inclusive and checked before any I/O.
#[tokio::test]
async fn e3_text_and_size() {
    let mut server = TestRedis::start().await.unwrap();
    let redis = connect(&server).await;
    let store = store_with(&redis, "kb", |c| {
        c.max_content_bytes = 1024;
        c.max_metadata_bytes = 64;
    });
    let texts = [
        ("nul", "nul\0inside\0\0end"),
        ("crlf", "crlf line1\r\nline2\r\n\r\n"),
        ("emoji", "emoji 😀 👍🏽 👨‍👩‍👧 🇫🇷"),
        ("rtl", "rtl שלום עולם مرحبا بالعالم \u{202E}reversed\u{202C}"),
        (
            "combining",
            "combining e\u{301} a\u{30A} Z\u{335}\u{31B} \u{1100}\u{1161}",
        ),
        ("mixed", "mixed \0\r\n😀שלוםe\u{301}\u{FEFF}\t\u{7F}"),
    ];
    let mut stored = HashMap::new();
    for (word, text) in texts {
        let id = store.store_fact(text, json!({"w": word})).await.unwrap();
        let got = store.get_fact(&id).await.unwrap().unwrap();
        assert_eq!(got.content.as_bytes(), text.as_bytes(), "{word}");
        let found = store.search(word, 10).await.unwrap();
        assert_eq!(ids(&found), [id.as_str()], "{word}");
        assert_eq!(found[0].content.as_bytes(), text.as_bytes());
        stored.insert(id, text);
    }
    for fact in store.list_facts().await.unwrap() {
        assert_eq!(fact.content.as_bytes(), stored[&fact.id].as_bytes());
    }
    // Words of other scripts are found too.
    assert_eq!(store.search("שלום", 10).await.unwrap().len(), 1);
    // "😀שלוםe\u{301}": Hebrew and Latin letters side by side make one word.
    assert_eq!(store.search("שלוםE", 10).await.unwrap().len(), 1);
    assert_eq!(store.search("مرحبا", 10).await.unwrap().len(), 1);
    assert_eq!(store.search("line2", 10).await.unwrap().len(), 1);

    // Caps in bytes, inclusive: 512 × "é" is exactly 1024 bytes.
    let at_cap = "é".repeat(512);
    let id = store.store_fact(at_cap.clone(), json!({})).await.unwrap();
    assert_eq!(store.get_fact(&id).await.unwrap().unwrap().content, at_cap);
    let over = format!("{at_cap}x");
    let e = store.store_fact(over.clone(), json!({})).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::TooLarge {
                what: "content",
                len: 1025,
                max: 1024
            }
        ),
        "{e}"
    );
    let meta_at_cap = json!({ "k": "v".repeat(64 - r#"{"k":""}"#.len()) });
    assert_eq!(meta_at_cap.to_string().len(), 64);
    store.store_fact("m", meta_at_cap).await.unwrap();
    let meta_over = json!({ "k": "v".repeat(65 - r#"{"k":""}"#.len()) });
    let e = store.store_fact("m", meta_over.clone()).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::TooLarge {
                what: "metadata",
                len: 65,
                ..
            }
        ),
        "{e}"
    );

    // Before any I/O: with the server dead, over-cap input fails at once with
    // `TooLarge`, while the same call at the cap reaches for Redis and fails there.
    server.kill().unwrap();
    let t = Instant::now();
    let e = store.store_fact(over, json!({})).await.unwrap_err();
    let too_large_took = t.elapsed();
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    let e = store.store_fact("m", meta_over).await.unwrap_err();
    assert!(matches!(e, StoreError::TooLarge { what: "metadata", .. }), "{e}");
    let e = store.get_fact("nope").await.unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput { .. }), "{e}");
    assert!(too_large_took < Duration::from_millis(20), "{too_large_took:?}");
    let t = Instant::now();
    let e = store.store_fact(at_cap, json!({})).await.unwrap_err();
    assert!(matches!(e, StoreError::Redis(_)), "{e}");
    eprintln!(
        "E3: over-cap store with Redis dead: TooLarge in {too_large_took:?}; at-cap store: Redis error in {:?} ({e})",
        t.elapsed()
    );
}

/// E4: namespaces that are globs of each other, side by side on one server: each store
/// sees exactly its own facts. The reference matcher below is checked against real
/// SCAN results on the way.
#[tokio::test]
async fn e4_glob_escape_prefixes_side_by_side() {
    let server = TestRedis::start().await.unwrap();
    let redis = connect(&server).await;
    let prefixes = [
        "ns[1]", "ns1", "a*", "a?b", r"a\b", "ab", "axb", "a", "a[^b]", "[", "]",
    ];
    let mut own: HashMap<&str, HashSet<String>> = HashMap::new();
    for prefix in prefixes {
        let store = store_with(&redis, prefix, |c| {
            one_shard(c);
            c.scan_count = 3;
        });
        for i in 0..4 {
            let id = store
                .store_fact(format!("shared fact {i} of {prefix}"), json!({"p": prefix}))
                .await
                .unwrap();
            own.entry(prefix).or_default().insert(id);
        }
    }
    for prefix in prefixes {
        let store = store_with(&redis, prefix, |c| {
            one_shard(c);
            c.scan_count = 3;
        });
        let listed: HashSet<String> = store
            .list_facts()
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(listed, own[prefix], "list of {prefix}");
        assert_eq!(store.count().await.unwrap(), 4, "count of {prefix}");
        let found: HashSet<String> = store
            .search("shared FACT", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(found, own[prefix], "search of {prefix}");
    }

    // Negative control, and the reference matcher against Redis: unescaped, the
    // prefixes really are globs that catch other stores' keys.
    let all = redis.scan_keys("*", 100, usize::MAX).await.unwrap();
    for prefix in prefixes {
        for pattern in [
            format!("{{{prefix}}}:fact:*"),
            format!("{{{}}}:fact:*", glob_escape(prefix)),
        ] {
            let by_redis: HashSet<String> = redis
                .scan_keys(&pattern, 100, usize::MAX)
                .await
                .unwrap()
                .into_iter()
                .collect();
            let by_reference: HashSet<String> = all
                .iter()
                .filter(|k| glob_match(pattern.as_bytes(), k.as_bytes()))
                .cloned()
                .collect();
            assert_eq!(by_redis, by_reference, "pattern {pattern}");
        }
    }
    let unescaped = redis.scan_keys("{ns[1]}:fact:*", 100, usize::MAX).await.unwrap();
    assert!(unescaped.iter().all(|k| k.starts_with("{ns1}")) && unescaped.len() == 4);
    let unescaped = redis.scan_keys("{a*}:fact:*", 100, usize::MAX).await.unwrap();
    eprintln!(
        "E4: {} prefixes isolated; unescaped `{{a*}}:fact:*` would list {} keys of other stores",
        prefixes.len(),
        unescaped.len()
    );
    assert!(unescaped.len() > 4);
}

/// Redis's glob (`stringmatchlen` in util.c), on bytes: `*`, `?`, `[...]` with `^`,
/// ranges and escapes, `\x`.
fn glob_match(p: &[u8], t: &[u8]) -> bool {
    match p {
        [] => t.is_empty(),
        [b'*', rest @ ..] => (0..=t.len()).any(|i| glob_match(rest, &t[i..])),
        [b'?', rest @ ..] => !t.is_empty() && glob_match(rest, &t[1..]),
        [b'\\', c, rest @ ..] => t.first() == Some(c) && glob_match(rest, &t[1..]),
        [b'[', rest @ ..] => {
            let Some(&c) = t.first() else { return false };
            let (negate, mut q) = match rest {
                [b'^', q @ ..] => (true, q),
                q => (false, q),
            };
            let mut matched = false;
            loop {
                match q {
                    [b'\\', e, tail @ ..] => {
                        matched |= *e == c;
                        q = tail;
                    }
                    [b']', tail @ ..] => {
                        q = tail;
                        break;
                    }
                    // Unterminated: Redis ends the class at the pattern's end.
                    [] => break,
                    [a, b'-', z, tail @ ..] => {
                        let (lo, hi) = if a <= z { (*a, *z) } else { (*z, *a) };
                        matched |= (lo..=hi).contains(&c);
                        q = tail;
                    }
                    [x, tail @ ..] => {
                        matched |= *x == c;
                        q = tail;
                    }
                }
            }
            matched != negate && glob_match(q, &t[1..])
        }
        [c, rest @ ..] => t.first() == Some(c) && glob_match(rest, &t[1..]),
    }
}

#[test]
fn reference_matcher_knows_the_trap() {
    // Checked by hand against redis-server 7.0: unescaped `ns[1]:*` matched `ns1:x` but
    // not `ns[1]:x`.
    assert!(glob_match(b"ns[1]:*", b"ns1:x"));
    assert!(!glob_match(b"ns[1]:*", b"ns[1]:x"));
    assert!(glob_match(br"ns\[1\]:*", b"ns[1]:x"));
    assert!(glob_match(b"a[^b]c", b"axc") && !glob_match(b"a[^b]c", b"abc"));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// E4: `glob_escape(s) + "*"` matches `t` exactly when `t` starts with `s`.
    #[test]
    fn e4_glob_escape_matches_reference(
        s in r"[ab*?\[\]\\^\-é:{}]{0,8}",
        suffix in r"[ab*?\[\]\\^\-é:{}]{0,4}",
        other in r"[ab*?\[\]\\^\-é:{}]{0,10}",
        use_suffix: bool,
    ) {
        let t = if use_suffix { format!("{s}{suffix}") } else { other };
        let pattern = format!("{}*", glob_escape(&s));
        prop_assert_eq!(glob_match(pattern.as_bytes(), t.as_bytes()), t.starts_with(&s));
    }
}

/// C10: list while other tasks store and delete: every fact alive for the whole scan is
/// returned exactly once, nothing that never existed, foreign keys under the prefix
/// (a string at `{kb}:fact:junk` and at a fact-shaped key, a hash missing fields)
/// skipped without failing the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_scan_list_under_churn() {
    let server = TestRedis::start().await.unwrap();
    let redis = connect(&server).await;
    // Small pages: many SCAN calls and pipelines, so churn interleaves with them.
    let store = store_with(&redis, "kb", |c| c.scan_count = 50);

    let t = Instant::now();
    let mut stable: HashMap<String, String> = HashMap::new();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let store = store.clone();
        writers.spawn(async move {
            let mut out = Vec::new();
            for i in (w..1000).step_by(8) {
                let content = format!("stable fact {i} group{}", i % 10);
                out.push((
                    store.store_fact(content.clone(), json!({"i": i})).await.unwrap(),
                    content,
                ));
            }
            out
        });
    }
    while let Some(batch) = writers.join_next().await {
        stable.extend(batch.unwrap());
    }
    let store_took = t.elapsed();

    let junk = uuid::Uuid::new_v4().to_string();
    let partial = uuid::Uuid::new_v4().to_string();
    server.command(&["SET", "{kb}:fact:junk", "x"]).await.unwrap();
    server
        .command(&["SET", &format!("{{kb}}:fact:{junk}"), "x"])
        .await
        .unwrap();
    server
        .command(&[
            "HSET",
            &format!("{{kb}}:fact:{partial}"),
            "content",
            "no other field",
        ])
        .await
        .unwrap();

    let t = Instant::now();
    let quiet = store.list_facts().await.unwrap();
    let list_took = t.elapsed();
    assert_eq!(quiet.len(), 1000);
    assert!(quiet.iter().all(|f| stable[&f.id] == f.content));
    let t = Instant::now();
    let group = store.search("STABLE group3", 1000).await.unwrap();
    let search_took = t.elapsed();
    assert_eq!(group.len(), 100);
    let t = Instant::now();
    let first10 = store.search("fact", 10).await.unwrap();
    let search10_took = t.elapsed();
    assert_eq!(first10.len(), 10);

    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(Mutex::new(HashSet::new()));
    let mut churners = tokio::task::JoinSet::new();
    for c in 0..4 {
        let (store, stop, created) = (store.clone(), stop.clone(), created.clone());
        churners.spawn(async move {
            let mut live = std::collections::VecDeque::new();
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = store
                    .store_fact(format!("churn {c} {ops}"), json!({}))
                    .await
                    .unwrap();
                created.lock().unwrap().insert(id.clone());
                live.push_back(id);
                if live.len() > 20 {
                    let old = live.pop_front().unwrap();
                    assert!(store.delete_fact(&old).await.unwrap());
                }
                ops += 2;
            }
            (ops, live.len() as u64)
        });
    }
    let mut lists = Vec::new();
    let t = Instant::now();
    for _ in 0..8 {
        lists.push(store.list_facts().await.unwrap());
    }
    let churn_lists_took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut churn_ops, mut churn_live) = (0, 0);
    while let Some(done) = churners.join_next().await {
        let (ops, live) = done.unwrap();
        churn_ops += ops;
        churn_live += live;
    }

    let created = std::mem::take(&mut *created.lock().unwrap());
    let mut churn_seen = 0;
    for list in &lists {
        let mut seen = HashSet::new();
        for fact in list {
            assert!(seen.insert(fact.id.as_str()), "{} listed twice", fact.id);
            assert!(
                stable.contains_key(&fact.id) || created.contains(&fact.id),
                "{} never existed",
                fact.id
            );
            assert!(fact.id != junk && fact.id != partial);
        }
        assert!(
            stable.keys().all(|id| seen.contains(id.as_str())),
            "a stable fact is missing"
        );
        churn_seen += list.len() - stable.len();
    }
    assert_eq!(store.count().await.unwrap(), 1000 + churn_live);
    eprintln!(
        "C10: stored 1000 facts (8 tasks) in {store_took:?}; list of 1000 (pages of 50) in \
         {list_took:?}; search of 2 words → 100 facts in {search_took:?}, limit 10 of 1000 in \
         {search10_took:?}; 8 lists under churn in {churn_lists_took:?} while 4 tasks made \
         {churn_ops} stores+deletes; {churn_seen} churning facts seen, none twice, none invented"
    );
}

#[tokio::test]
async fn search_semantics() {
    let server = TestRedis::start().await.unwrap();
    let redis = connect(&server).await;
    let store = store_with(&redis, "kb", |c| {
        one_shard(c);
        c.scan_count = 2;
    });
    let put = async |text: &str| store.store_fact(text, json!({})).await.unwrap();
    let f1 = put("Apple banana cherry").await;
    let f2 = put("apple BANANA").await;
    let f3 = put("banana split").await;
    let f4 = put("Äpfel und Birnen — Grüße aus KÖLN").await;
    let f5 = put("東京タワー and 東京 station").await;
    let f6 = put("a well-known fact").await;
    let search = async |q: &str, limit: usize| -> Vec<String> {
        store
            .search(q, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    };
    assert_eq!(search("apple banana", 10).await, [f2.as_str(), f1.as_str()]); // AND
    assert_eq!(
        search("BANANA", 10).await,
        [f3.as_str(), f2.as_str(), f1.as_str()]
    ); // any case, newest first
    assert_eq!(search("banana", 2).await, [f3.as_str(), f2.as_str()]); // limit: the oldest dropped
    assert_eq!(
        search("banana banana Banana", 10).await,
        [f3.as_str(), f2.as_str(), f1.as_str()]
    );
    assert!(search("apple cherry split", 10).await.is_empty());
    assert!(search("banana", 0).await.is_empty());
    assert_eq!(search("äpfel köln", 10).await, [f4.as_str()]);
    assert_eq!(search("GRÜSSE", 10).await, Vec::<String>::new()); // no folding beyond lower-case
    assert_eq!(search("東京", 10).await, [f5.as_str()]);
    assert_eq!(search("東京タワー", 10).await, [f5.as_str()]);
    assert_eq!(search("known", 10).await, [f6.as_str()]);
    assert_eq!(search("well-known!", 10).await, [f6.as_str()]);
    for empty in ["", "   ", "—,;!?\r\n\0"] {
        assert!(search(empty, 10).await.is_empty());
    }
    let words = |n: usize| (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    assert!(search(&words(MAX_QUERY_TOKENS), 10).await.is_empty());
    let e = store.search(&words(MAX_QUERY_TOKENS + 1), 10).await.unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput { what: "query", .. }), "{e}");

    // Delete cleans the index: no member left behind, empty sets vanish.
    assert!(store.delete_fact(&f1).await.unwrap());
    assert_eq!(search("banana", 10).await, [f3.as_str(), f2.as_str()]);
    assert!(search("cherry", 10).await.is_empty());
    assert!(
        smembers(&server, "{kb}:idx:apple")
            .await
            .iter()
            .all(|m| !m.ends_with(&f1))
    );
    assert_eq!(smembers(&server, "{kb}:idx:apple").await.len(), 1);
    assert_eq!(
        server.command(&["EXISTS", "{kb}:idx:cherry"]).await.unwrap(),
        Reply::Integer(0)
    );

    // A member whose fact is gone (a cut-short store or delete) is skipped and the next
    // match taken: `limit` is still met, across fetch batches (scan_count = 2); the
    // newest first.
    let zeta: Vec<String> = [
        put("zeta 1").await,
        put("zeta 2").await,
        put("zeta 3").await,
        put("zeta 4").await,
    ]
    .into();
    server
        .command(&["DEL", &format!("{{kb}}:fact:{}", zeta[1])])
        .await
        .unwrap();
    assert_eq!(
        search("zeta", 3).await,
        [zeta[3].as_str(), zeta[2].as_str(), zeta[0].as_str()]
    );
    assert_eq!(
        search("zeta", 10).await,
        [zeta[3].as_str(), zeta[2].as_str(), zeta[0].as_str()]
    );
    assert_eq!(search("zeta", 2).await, [zeta[3].as_str(), zeta[2].as_str()]);
}

/// With Redis killed, every call returns `StoreError::Redis` within its configured
/// bound, never hangs or panics; `health` says so.
#[tokio::test]
async fn redis_down_errors_within_bounds() {
    let mut server = TestRedis::start().await.unwrap();
    let mut c = RedisConfig::default();
    c.command_timeout = Duration::from_millis(500);
    c.operations.scan = Some(Duration::from_millis(800));
    let redis = support::connect(&server, |r| {
        r.command_timeout = c.command_timeout;
        r.operations = c.operations.clone();
    })
    .await;
    let store = store_with(&redis, "kb", |_| {});
    let id = store.store_fact("alive once", json!({})).await.unwrap();
    server.kill().unwrap();

    let slack = Duration::from_millis(250);
    let mut report = Vec::new();
    for round in 0..3 {
        macro_rules! bounded {
            ($name:literal, $bound:expr, $call:expr) => {{
                let t = Instant::now();
                let e = $call.await.unwrap_err();
                let took = t.elapsed();
                assert!(matches!(e, StoreError::Redis(_)), "{}: {e}", $name);
                assert!(took <= $bound + slack, "{}: {took:?} ({e})", $name);
                if round == 0 {
                    report.push(format!("{} {took:.1?} ({e})", $name));
                }
            }};
        }
        bounded!("store", c.command_timeout * 2, store.store_fact("x", json!({})));
        bounded!("get", c.command_timeout, store.get_fact(&id));
        bounded!("delete", c.command_timeout, store.delete_fact(&id));
        bounded!("list", c.operations.scan.unwrap(), store.list_facts());
        bounded!("search", c.command_timeout, store.search("alive", 10));
        bounded!("count", c.command_timeout, store.count());
    }
    let t = Instant::now();
    let health = loop {
        let h = store.health();
        if !h.ok || t.elapsed() > Duration::from_secs(3) {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!health.ok, "{health:?}");
    eprintln!("Redis down: {}; health {health:?}", report.join("; "));
}

/// `check_health` PINGs: a stopped (SIGSTOP) server is unhealthy within the check's
/// bound, and a killed one before fred reconnects, though fred still reports its
/// connections up (which is all `health` sees).
#[tokio::test]
async fn check_health_pings_within_its_bound() {
    const CHECK: Duration = Duration::from_millis(300);
    let slack = Duration::from_millis(250);
    let mut server = TestRedis::start().await.unwrap();
    let redis = support::connect(&server, |c| {
        c.health_check_interval = CHECK;
        // A long reconnect delay: the window in which fred's connections look up while
        // the server is gone.
        c.reconnect_min_delay = Duration::from_secs(3);
        c.reconnect_max_delay = Duration::from_secs(3);
    })
    .await;
    let store = store_with(&redis, "kb", |_| {});
    let checked = async || {
        let t = Instant::now();
        let h = store.check_health(CHECK).await;
        (h, t.elapsed())
    };

    // The pool connects in the background (a PING before would fail, and count
    // against the breaker).
    let t = Instant::now();
    while store.health().connected < store.health().pool_size {
        assert!(t.elapsed() < Duration::from_secs(5), "not connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (up, took) = checked().await;
    assert!(up.ok && up.ping.is_some_and(|p| p <= took), "{up:?}");

    server.pause().unwrap();
    let (stopped, took) = checked().await;
    let snapshot = store.health();
    server.resume().unwrap();
    eprintln!("stopped: check_health {stopped:?} in {took:?}; health (no I/O) {snapshot:?}");
    assert!(!stopped.ok && stopped.ping.is_none(), "{stopped:?}");
    assert!(took >= CHECK && took <= CHECK + slack, "{took:?}");

    let t = Instant::now();
    while !checked().await.0.ok {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "not healthy again after resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().unwrap();
    let (killed, took) = checked().await;
    let snapshot = store.health();
    eprintln!("killed: check_health {killed:?} in {took:?}; health (no I/O) {snapshot:?}");
    assert!(!killed.ok, "{killed:?}");
    assert!(took <= CHECK + slack, "{took:?}");
}

/// The keys matching `pattern`, by a raw connection.
async fn keys_matching(server: &TestRedis, pattern: &str) -> usize {
    match server.command(&["KEYS", pattern]).await.unwrap() {
        Reply::Array(Some(items)) => items.len(),
        other => panic!("{other:?}"),
    }
}

/// A 64 KiB fact of ten thousand distinct words writes `max_indexed_words` index sets,
/// the first words of the text; words over `max_word_bytes` are not indexed; delete
/// removes every entry the store wrote.
#[tokio::test]
async fn index_is_capped_per_fact_and_by_word_length() {
    let server = TestRedis::start().await.unwrap();
    let store = store_with(&connect(&server).await, "kb", one_shard);
    let defaults = KnowledgeConfig::default();
    let (max_words, max_bytes) = (defaults.max_indexed_words, defaults.max_word_bytes);
    let long = "x".repeat(max_bytes + 1);
    let mut text = format!("{long} ");
    let mut i = 0;
    while text.len() < defaults.max_content_bytes - 8 {
        text.push_str(&format!("w{i} "));
        i += 1;
    }
    let t = Instant::now();
    let id = store.store_fact(text.as_str(), json!({})).await.unwrap();
    let took = t.elapsed();
    let indexed = keys_matching(&server, "{kb}:idx:*").await;
    eprintln!(
        "a {} byte fact of {} distinct words: {indexed} index sets (cap {max_words}), stored in {took:?}",
        text.len(),
        i + 1
    );
    assert_eq!(indexed, max_words);
    let found = |facts: Vec<Fact>| facts.into_iter().map(|f| f.id).collect::<Vec<_>>();
    assert_eq!(found(store.search("w0", 10).await.unwrap()), [id.as_str()]);
    let last = format!("w{}", max_words - 1);
    assert_eq!(found(store.search(&last, 10).await.unwrap()), [id.as_str()]);
    let past = format!("w{max_words}");
    assert!(store.search(&past, 10).await.unwrap().is_empty(), "past the cap");
    assert!(store.search(&long, 10).await.unwrap().is_empty(), "too long");
    assert_eq!(
        keys_matching(&server, &format!("{{kb}}:idx:{}", &long[..max_bytes])).await,
        0
    );
    assert!(store.delete_fact(&id).await.unwrap());
    assert_eq!(
        keys_matching(&server, "{kb}:idx:*").await,
        0,
        "delete cleans every set"
    );

    let mut c = KnowledgeConfig::default();
    c.max_indexed_words = 0;
    assert_eq!(c.validate().unwrap_err().field(), "max_indexed_words");
    c = KnowledgeConfig::default();
    c.max_word_bytes = 1025;
    assert_eq!(c.validate().unwrap_err().field(), "max_word_bytes");
}

#[tokio::test]
async fn list_facts_limited_returns_the_newest_first() {
    let server = TestRedis::start().await.unwrap();
    let store = store_with(&connect(&server).await, "kb", |c| {
        one_shard(c);
        c.scan_count = 2;
    });
    let mut stored = Vec::new();
    for i in 0..7 {
        stored.push(store.store_fact(format!("fact {i}"), json!({})).await.unwrap());
    }
    let listed = async |limit: usize| -> Vec<String> {
        store
            .list_facts_limited(limit)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    };
    let newest: Vec<String> = stored.iter().rev().cloned().collect();
    assert_eq!(listed(3).await, newest[..3]);
    assert_eq!(listed(100).await, newest);
    assert!(listed(0).await.is_empty());
    // A fact gone since the SCAN (here: before) is skipped, and the limit still met.
    server
        .command(&["DEL", &format!("{{kb}}:fact:{}", stored[5])])
        .await
        .unwrap();
    assert_eq!(
        listed(3).await,
        [stored[6].as_str(), stored[4].as_str(), stored[3].as_str()]
    );
    // A foreign key under the fact prefix, of another type, is skipped.
    server
        .command(&["SET", "{kb}:fact:67e55044-10b1-426f-9247-bb680e5fe0c8", "x"])
        .await
        .unwrap();
    assert_eq!(listed(2).await, [stored[6].as_str(), stored[4].as_str()]);
    assert_eq!(
        store.list_facts().await.unwrap().len(),
        6,
        "unlimited: oldest first, as before"
    );
}
