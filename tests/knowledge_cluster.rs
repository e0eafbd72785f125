//! The sharded `KnowledgeStore` (#14, "a knowledge store that spreads"; G4–G7 in
//! `docs/testing.md`): on a 3-primary Redis Cluster, 10,000 facts spread over every
//! primary, and `list_facts`, `count` and `search` see all of them (search in one
//! merged, newest-first order, under one deadline);
//! glob-hostile prefixes stay in their own keys; and `migrate_layout` moves facts of
//! the single-tag layout `{<prefix>}` (and of another shard count) into the shards,
//! idempotently — on a cluster and on a single server. Real time, figures printed.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::json;
use stayfast::{
    knowledge::{KnowledgeConfig, KnowledgeStore},
    redis::{Redis, RedisConfig},
};
use stayfast_core::test_util::{RedisCluster, RedisServer, Reply};

const SLACK: Duration = Duration::from_millis(250);

/// One cluster test at a time: 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn connect(url: String) -> Redis {
    let mut c = RedisConfig::default();
    c.url = url;
    c.pool_size = 4;
    c.operations.scan = Some(Duration::from_secs(10));
    c.operations.pipeline = Some(Duration::from_secs(5));
    let redis = Redis::connect(&c).await.unwrap();
    let started = Instant::now();
    while redis.set("probe", "x", None).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "fred never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis
}

fn store(redis: &Redis, prefix: &str, shards: u16) -> KnowledgeStore {
    let mut c = KnowledgeConfig::default();
    c.prefix = prefix.into();
    c.shards = Some(shards);
    c.search_timeout = Duration::from_secs(10);
    KnowledgeStore::new(redis.clone(), &c).unwrap()
}

/// Stores `n` facts `"<word> fact number <i> about topic<i % 50>"`, 32 at a time; their
/// ids in the order given.
async fn fill(store: &KnowledgeStore, word: &str, n: usize) -> Vec<String> {
    stream::iter(0..n)
        .map(|i| {
            store.store_fact(
                format!("{word} fact number {i} about topic{}", i % 50),
                json!({"i": i}),
            )
        })
        .buffered(32)
        .try_collect()
        .await
        .unwrap()
}

/// The keys of `node` matching `pattern`, by SCAN on that node alone.
async fn node_keys(node: &RedisServer, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply = node
            .command(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
            .await
            .unwrap();
        let Reply::Array(Some(parts)) = reply else {
            panic!("SCAN: {reply:?}")
        };
        cursor = parts[0].as_text().unwrap();
        let Reply::Array(Some(page)) = &parts[1] else {
            panic!("SCAN page: {parts:?}")
        };
        keys.extend(page.iter().filter_map(Reply::as_text));
        if cursor == "0" {
            return keys;
        }
    }
}

fn ids(facts: Vec<stayfast::knowledge::Fact>) -> Vec<String> {
    facts.into_iter().map(|f| f.id).collect()
}

#[tokio::test]
async fn ten_thousand_facts_spread_over_three_primaries() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(cluster.url()).await;
    // The default config on a cluster: `CLUSTER_SHARDS` shards.
    let mut config = KnowledgeConfig::default();
    config.search_timeout = Duration::from_secs(10);
    let kb = KnowledgeStore::new(redis.clone(), &config).unwrap();

    let started = Instant::now();
    let stored = fill(&kb, "alpha", 10_000).await;
    println!("10,000 facts stored in {:?} (32 at a time)", started.elapsed());

    // Every primary holds a fair share of the facts' keys.
    let mut shares = Vec::new();
    for node in cluster.nodes() {
        shares.push(node_keys(node, "{kb#*}:fact:*").await.len());
    }
    let total: usize = shares.iter().sum();
    let percent: Vec<String> = shares
        .iter()
        .map(|n| format!("{:.1} %", *n as f64 * 100.0 / total as f64))
        .collect();
    println!("fact keys per primary: {shares:?} of {total} ({percent:?})");
    assert_eq!(total, 10_000);
    assert!(
        shares.iter().all(|&n| n * 5 >= total),
        "each primary ≥ 20 %: {shares:?}"
    );

    // count and list_facts see every fact; list in insertion order.
    let t = Instant::now();
    assert_eq!(kb.count().await.unwrap(), 10_000);
    let count_took = t.elapsed();
    let t = Instant::now();
    let listed = ids(kb.list_facts().await.unwrap());
    let list_took = t.elapsed();
    println!("count in {count_took:?}, list_facts of 10,000 in {list_took:?}");
    assert_eq!(listed.len(), 10_000);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>(),
        stored.iter().collect::<HashSet<_>>()
    );

    // search merges every shard: all 10,000 matches, newest first — list's order reversed.
    let t = Instant::now();
    let all = ids(kb.search("ALPHA fact", 10_000).await.unwrap());
    let search_all = t.elapsed();
    let newest_first: Vec<String> = listed.iter().rev().cloned().collect();
    assert_eq!(all, newest_first, "one order over every shard");
    let t = Instant::now();
    let topic = ids(kb.search("topic7", 5).await.unwrap());
    let search_5 = t.elapsed();
    let expected: Vec<String> = newest_first
        .iter()
        .filter(|id| stored.iter().position(|s| s == *id).is_some_and(|i| i % 50 == 7))
        .take(5)
        .cloned()
        .collect();
    assert_eq!(
        topic, expected,
        "the 5 newest of 200 matches, from whichever shards"
    );
    println!("search of 10,000 matches in {search_all:?}; of 200 matches, limit 5, in {search_5:?}");
    assert!(search_5 < Duration::from_millis(500) + SLACK, "{search_5:?}");
    assert_eq!(kb.list_facts_limited(3).await.unwrap().len(), 3);

    // Delete, and get, find each fact in its shard.
    assert!(kb.get_fact(&stored[0]).await.unwrap().is_some());
    assert!(kb.delete_fact(&stored[0]).await.unwrap());
    assert_eq!(kb.count().await.unwrap(), 9_999);
    assert!(kb.get_fact(&stored[0]).await.unwrap().is_none());

    // Every command of the whole run went straight to its slot's primary, and none
    // spanned slots.
    let (mut moved, mut crossslot) = (0, 0);
    for node in cluster.nodes() {
        let info = node
            .command(&["INFO", "errorstats"])
            .await
            .unwrap()
            .as_text()
            .unwrap();
        let count = |name: &str| {
            info.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("errorstat_{name}:count="))?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        moved += count("MOVED");
        crossslot += count("CROSSSLOT");
    }
    println!("the whole run: {moved} MOVED, {crossslot} CROSSSLOT");
    assert_eq!((moved, crossslot), (0, 0));
}

#[tokio::test]
async fn glob_hostile_prefixes_and_the_old_layout_on_a_cluster() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(cluster.url()).await;

    // `kb*` would match `kb2`'s keys as a glob; `kb?` too; `kb` is a prefix of both.
    let prefixes = ["kb*", "kb2", "kb?", "kb"];
    let mut own: HashMap<&str, HashSet<String>> = HashMap::new();
    for prefix in prefixes {
        let s = store(&redis, prefix, 16);
        own.insert(prefix, fill(&s, "shared", 40).await.into_iter().collect());
    }
    for prefix in prefixes {
        let s = store(&redis, prefix, 16);
        let listed: HashSet<String> = ids(s.list_facts().await.unwrap()).into_iter().collect();
        let found: HashSet<String> = ids(s.search("shared fact", 1_000).await.unwrap())
            .into_iter()
            .collect();
        println!("{prefix}: {} listed, {} found", listed.len(), found.len());
        assert_eq!(listed, own[prefix], "list of {prefix}");
        assert_eq!(found, own[prefix], "search of {prefix}");
        assert_eq!(s.count().await.unwrap(), 40, "count of {prefix}");
    }

    // A migration scans every key starting with `{<prefix>`: `kb`'s sees the others'
    // keys too, and must move none of them.
    for prefix in prefixes {
        let done = store(&redis, prefix, 16).migrate_layout().await.unwrap();
        assert_eq!((done.moved, done.removed), (0, 0), "{prefix}: {done:?}");
    }
    for prefix in prefixes {
        assert_eq!(
            store(&redis, prefix, 16).count().await.unwrap(),
            40,
            "{prefix} after migrations"
        );
    }

    // The single-tag layout of old (`shards = 1`: `{old}:…`, one slot) moves into 16
    // shards over every primary; another store's old keys stay.
    let legacy = store(&redis, "old", 1);
    let before = ids(legacy.list_facts().await.unwrap());
    assert!(before.is_empty());
    let old_ids = fill(&legacy, "legacy", 300).await;
    let old_list = ids(legacy.list_facts().await.unwrap());
    let other_legacy = store(&redis, "old2", 1);
    fill(&other_legacy, "legacy", 20).await;

    // A stale index entry (left by a fact indexed under other caps, say): the moves
    // empty (so Redis removes) every set they clean; this one is left to the sweep.
    redis
        .sadd("{old}:idx:ghost", vec!["1:67e55044-10b1-426f-9247-bb680e5fe0c8"])
        .await
        .unwrap();

    let sharded = store(&redis, "old", 16);
    assert_eq!(
        sharded.count().await.unwrap(),
        0,
        "not found before the migration"
    );
    let t = Instant::now();
    let done = sharded.migrate_layout().await.unwrap();
    println!("migrated 300 facts to 16 shards in {:?}: {done:?}", t.elapsed());
    assert_eq!((done.moved, done.skipped), (300, 0));
    assert_eq!(done.removed, 1, "the stale set of the old tag is swept");
    assert_eq!(sharded.count().await.unwrap(), 300);
    assert_eq!(ids(sharded.list_facts().await.unwrap()), old_list, "same order");
    assert_eq!(
        ids(sharded.search("legacy", 300).await.unwrap()),
        old_list.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(old_ids.len(), 300);
    let again = sharded.migrate_layout().await.unwrap();
    assert_eq!((again.moved, again.removed), (0, 0), "idempotent");
    let mut leftover = Vec::new();
    for node in cluster.nodes() {
        leftover.extend(node_keys(node, "{old}:*").await);
    }
    assert_eq!(leftover, ["{old}:seq"], "only the shared counter stays");
    assert_eq!(
        other_legacy.count().await.unwrap(),
        20,
        "another store's keys untouched"
    );
    // New facts continue the one order after the migrated ones.
    let newest = sharded.store_fact("legacy newest", json!({})).await.unwrap();
    assert_eq!(ids(sharded.search("legacy", 1).await.unwrap()), [newest]);
}

/// On a single server the default is the single-tag layout of 0.1 (existing data needs
/// nothing); a sharded layout there has the same semantics; and a move from the
/// single-tag layout and between shard counts.
#[tokio::test]
async fn sharded_layout_on_a_single_server_and_its_migrations() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let redis = connect(server.url()).await;
    let single = KnowledgeStore::new(redis.clone(), &KnowledgeConfig::default()).unwrap();
    assert_eq!(KnowledgeConfig::default().shards, None);
    let id = single
        .store_fact("Lisbon is in Portugal", json!({}))
        .await
        .unwrap();
    assert_eq!(
        server
            .command(&["EXISTS", &format!("{{kb}}:fact:{id}")])
            .await
            .unwrap(),
        Reply::Integer(1),
        "the default on one node is the single `{{kb}}` tag"
    );
    assert!(single.delete_fact(&id).await.unwrap());

    let default = store(&redis, "kb", 16);
    let id = default.store_fact("Paris is in France", json!({})).await.unwrap();
    assert_eq!(
        ids(default.search("france PARIS", 10).await.unwrap()),
        std::slice::from_ref(&id)
    );
    assert_eq!(default.count().await.unwrap(), 1);
    assert!(default.delete_fact(&id).await.unwrap());
    assert_eq!(default.count().await.unwrap(), 0);

    let legacy = store(&redis, "s", 1);
    let stored = fill(&legacy, "moving", 500).await;
    let order = ids(legacy.list_facts().await.unwrap());
    assert_eq!(order.len(), stored.len());
    for shards in [16, 5, 16, 1] {
        let s = store(&redis, "s", shards);
        let t = Instant::now();
        let done = s.migrate_layout().await.unwrap();
        println!("to {shards} shards in {:?}: {done:?}", t.elapsed());
        assert!(done.moved > 0 && done.skipped == 0, "{done:?}");
        assert_eq!(s.count().await.unwrap(), 500, "{shards} shards");
        assert_eq!(ids(s.list_facts().await.unwrap()), order, "{shards} shards");
        let topic: Vec<String> = ids(s.search("topic3", 100).await.unwrap());
        assert_eq!(topic.len(), 10, "{shards} shards");
        assert_eq!(s.migrate_layout().await.unwrap().moved, 0);
    }
    let left = server.command(&["KEYS", "{s#*"]).await.unwrap();
    assert_eq!(
        left,
        Reply::Array(Some(vec![])),
        "back to one tag: no shard keys left"
    );

    let mut bad = KnowledgeConfig::default();
    bad.shards = Some(0);
    assert_eq!(bad.validate().unwrap_err().field(), "shards");
    bad.shards = Some(257);
    assert_eq!(bad.validate().unwrap_err().field(), "shards");
    bad = KnowledgeConfig::default();
    bad.prefix = "a#b".into();
    assert_eq!(bad.validate().unwrap_err().field(), "prefix");
}

/// `search` asks every shard at once under one deadline (`search_timeout`), not one
/// per shard: with one primary stopped (SIGSTOP), it fails at that deadline — well
/// before the Redis command bound (2 s) — and serves again once the primary is back.
#[tokio::test]
async fn search_has_one_deadline_over_every_shard() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(cluster.url()).await;
    let mut c = KnowledgeConfig::default();
    c.search_timeout = Duration::from_millis(300);
    let kb = KnowledgeStore::new(redis.clone(), &c).unwrap();
    fill(&kb, "alpha", 100).await;
    let t = Instant::now();
    assert_eq!(kb.search("alpha", 10).await.unwrap().len(), 10);
    println!("search over 16 shards, all up: {:?}", t.elapsed());

    cluster.nodes()[1].pause().unwrap();
    let t = Instant::now();
    let e = kb.search("alpha", 10).await.unwrap_err();
    let took = t.elapsed();
    cluster.nodes()[1].resume().unwrap();
    println!("search with a primary stopped: {e} after {took:?}");
    assert!(
        matches!(&e, stayfast::StoreError::Redis(stayfast::Error::Timeout { operation, after })
            if operation.as_str() == "knowledge.search" && *after == Duration::from_millis(300)),
        "{e:?}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(300) + SLACK,
        "{took:?}"
    );

    let started = Instant::now();
    while kb.search("alpha", 10).await.map(|f| f.len()).unwrap_or(0) != 10 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "search never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "search served again {:?} after the primary resumed",
        started.elapsed()
    );
}
