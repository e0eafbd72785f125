//! The handle on a 3-primary Redis Cluster (#14, routing; G1–G3 in `docs/testing.md`):
//! scripts go to the primary of their keys' slot (no MOVED redirection in steady
//! state), a script whose keys span slots is refused before it is sent, and
//! `scan_keys` pages through every primary — or only the one a pattern's hash tag
//! fixes, escaped glob characters included.
//! One cluster per test (about 2–3 s to form); real time, figures printed.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use stayfast_core::{
    redis::{Redis, Script},
    test_util::{RedisCluster, Reply},
};
use support::redis::config;

const SLACK: Duration = Duration::from_millis(250);

/// One cluster test at a time: 2 cores, and per-node counters read globally.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A handle on `cluster`, once fred has its routing table and a command goes through.
async fn connect(cluster: &RedisCluster) -> Redis {
    let redis = Redis::connect(&config(&cluster.url(), 2000)).await.unwrap();
    cluster.routable(&redis, Duration::from_secs(10)).await.unwrap();
    redis
}

async fn reset_stats(cluster: &RedisCluster) {
    for node in cluster.nodes() {
        assert_eq!(
            node.command(&["CONFIG", "RESETSTAT"]).await.unwrap(),
            Reply::Simple("OK".into())
        );
    }
}

async fn dbsize(node: &stayfast_core::test_util::RedisServer) -> i64 {
    node.command(&["DBSIZE"]).await.unwrap().as_integer().unwrap()
}

/// A window push as the transcripts store runs it: two keys of one hash tag.
const PUSH: &str = "redis.call('RPUSH', KEYS[1], ARGV[1]); redis.call('SADD', KEYS[2], ARGV[1]); \
                    return redis.call('LLEN', KEYS[1])";

#[tokio::test]
async fn scripts_go_to_their_slot_without_a_redirection() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(&cluster).await;
    let push = |session: usize, n: usize| {
        let keys = vec![
            format!("{{tx:{session}}}:log"),
            format!("{{tx:{session}}}:deleted"),
        ];
        redis.eval::<i64>(PUSH, keys, vec![n.to_string()])
    };
    // Warm-up: fred has its routing table once a command went through; a few scripts more.
    // (Failures are counted, not unwrapped, so a broken routing shows its figures.)
    let mut warm_failed = 0;
    for s in 0..20 {
        if let Err(e) = push(1_000 + s, 0).await {
            warm_failed += 1;
            eprintln!("warm-up push {s}: {e}");
        }
    }
    let warm_moved = cluster
        .info_total("errorstats", "errorstat_MOVED", "count")
        .await
        .unwrap();
    println!("warm-up: 20 scripts, {warm_failed} failed, {warm_moved} MOVED");
    reset_stats(&cluster).await;

    let started = Instant::now();
    let mut failed = 0;
    for n in 0..200 {
        match push(n % 50, n).await {
            Ok(len) => assert_eq!(len as usize, n / 50 + 1),
            Err(e) => {
                failed += 1;
                eprintln!("push {n}: {e}");
            }
        }
    }
    let took = started.elapsed();
    let moved = cluster
        .info_total("errorstats", "errorstat_MOVED", "count")
        .await
        .unwrap();
    let evals = cluster
        .info_total("commandstats", "cmdstat_eval", "calls")
        .await
        .unwrap();
    let mut per_node = Vec::new();
    for node in cluster.nodes() {
        per_node.push(dbsize(node).await);
    }
    println!(
        "200 scripts over 50 sessions in {took:?}: {failed} failed, {moved} MOVED, {evals} EVAL \
         calls, keys per primary {per_node:?}"
    );
    assert_eq!(failed, 0);
    assert_eq!(moved, 0, "every script goes straight to its slot's primary");
    assert_eq!(evals, 200, "each script sent once: no redirected resend");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "sessions spread over every primary: {per_node:?}"
    );
}

/// A script run by its SHA1 (#16): each primary is sent the body once, on the first
/// call it serves (`NOSCRIPT`, which loads it there), and only `EVALSHA` after that; the
/// script goes to its keys' slot, no redirection.
#[tokio::test]
async fn scripts_by_sha_load_once_on_each_primary() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(&cluster).await;
    reset_stats(&cluster).await;
    let script = Script::new(PUSH);
    let started = Instant::now();
    for n in 0..200 {
        let keys = vec![
            format!("{{tx:{}}}:log", n % 50),
            format!("{{tx:{}}}:deleted", n % 50),
        ];
        let len: i64 = redis
            .eval_script(&script, keys, vec![n.to_string()])
            .await
            .unwrap();
        assert_eq!(len as usize, n / 50 + 1, "ran once");
    }
    let took = started.elapsed();
    let total = |line: &'static str, field: &'static str| cluster.info_total("commandstats", line, field);
    let (evalsha, failed, eval) = (
        total("cmdstat_evalsha", "calls").await.unwrap(),
        total("cmdstat_evalsha", "failed_calls").await.unwrap(),
        total("cmdstat_eval", "calls").await.unwrap(),
    );
    let moved = cluster
        .info_total("errorstats", "errorstat_MOVED", "count")
        .await
        .unwrap();
    let mut per_node = Vec::new();
    for node in cluster.nodes() {
        per_node.push(dbsize(node).await);
    }
    println!(
        "200 scripts by SHA1 over 50 sessions in {took:?}: {evalsha} EVALSHA ({failed} NOSCRIPT), \
         {eval} EVAL, {moved} MOVED, keys per primary {per_node:?}"
    );
    assert!(
        per_node.iter().all(|&n| n > 0),
        "every primary served: {per_node:?}"
    );
    assert_eq!((evalsha, failed, eval), (200, 3, 3), "the body once per primary");
    assert_eq!(moved, 0);
}

#[tokio::test]
async fn a_script_over_several_slots_is_refused_unsent() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(&cluster).await;
    reset_stats(&cluster).await;
    let e = redis
        .eval::<i64>(
            PUSH,
            vec!["{a}:log".into(), "{b}:deleted".into()],
            vec!["1".into()],
        )
        .await
        .unwrap_err();
    let text = format!("{e}: {e:?}");
    println!("{text}");
    assert!(text.contains("share a cluster slot"), "{text}");
    assert!(text.contains("{b}:deleted"), "names the key: {text}");
    assert_eq!(
        cluster
            .info_total("commandstats", "cmdstat_eval", "calls")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        cluster
            .info_total("errorstats", "errorstat_CROSSSLOT", "count")
            .await
            .unwrap(),
        0
    );
    // A keyless script still runs (on any node).
    assert_eq!(redis.eval::<i64>("return 7", vec![], vec![]).await.unwrap(), 7);
}

#[tokio::test]
async fn scan_keys_covers_every_primary_and_stops_at_its_limit() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(&cluster).await;
    let total = 3_000;
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        let mut batch = stayfast_core::redis::Batch::new();
        for i in chunk {
            batch.hset(format!("scan:{i}"), [("i", i.to_string())]);
        }
        redis.batch(&batch).await.unwrap();
    }
    let mut per_node = Vec::new();
    for node in cluster.nodes() {
        per_node.push(dbsize(node).await);
    }
    println!("{total} keys, per primary {per_node:?}");
    assert!(per_node.iter().all(|&n| n >= 800), "{per_node:?}");

    let started = Instant::now();
    let keys = redis.scan_keys("scan:*", 200, usize::MAX).await.unwrap();
    let took = started.elapsed();
    let unique: HashSet<&String> = keys.iter().collect();
    println!(
        "scan_keys found {} keys ({} distinct) in {took:?}",
        keys.len(),
        unique.len()
    );
    assert_eq!(unique.len(), total, "every key of every primary");
    assert!(took < Duration::from_millis(2000) + SLACK, "{took:?}");

    // The limit: a first page large enough ends the scan, one SCAN sent in all.
    reset_stats(&cluster).await;
    let some = redis.scan_keys("scan:*", 1_000, 10).await.unwrap();
    let scans = cluster
        .info_total("commandstats", "cmdstat_scan", "calls")
        .await
        .unwrap();
    println!("limit 10: {} keys, {scans} SCAN pages", some.len());
    assert_eq!((some.len(), scans), (10, 1));
    // A limit past the first primary's keys pages on into the next one, no further.
    reset_stats(&cluster).await;
    let most = redis.scan_keys("scan:*", 100, 1_500).await.unwrap();
    let scans = cluster
        .info_total("commandstats", "cmdstat_scan", "calls")
        .await
        .unwrap();
    println!("limit 1500: {} keys, {scans} SCAN pages", most.len());
    assert_eq!(most.len(), 1_500);
    assert!(scans < 3_000 / 100 + 3, "stopped early: {scans} pages");

    // Dropped mid-scan (small pages, a short outer timeout): no page is sent after.
    reset_stats(&cluster).await;
    let dropped = tokio::time::timeout(
        Duration::from_millis(5),
        redis.scan_keys("scan:*", 10, usize::MAX),
    )
    .await;
    assert!(dropped.is_err(), "the scan of 300+ pages outlived 5 ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at_drop = cluster
        .info_total("commandstats", "cmdstat_scan", "calls")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = cluster
        .info_total("commandstats", "cmdstat_scan", "calls")
        .await
        .unwrap();
    println!("dropped after 5 ms: {at_drop} pages sent, {later} 300 ms later");
    assert_eq!(at_drop, later, "no page after the drop");
    assert!(at_drop < 300, "{at_drop}");

    // One primary stopped: the scan as a whole ends at `operations.scan` (2 s here).
    cluster.nodes()[2].pause().unwrap();
    let t = Instant::now();
    let stuck = redis.scan_keys("scan:*", 200, usize::MAX).await;
    let took = t.elapsed();
    cluster.nodes()[2].resume().unwrap();
    println!(
        "scan with a primary stopped: {:?} after {took:?}",
        stuck.as_ref().map(Vec::len)
    );
    assert!(stuck.is_err());
    assert!(took < Duration::from_millis(2000) + SLACK, "{took:?}");
}

#[tokio::test]
async fn an_escaped_hash_tag_scans_its_keys_own_primary() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(&cluster).await;
    // A prefix whose escaped tag lives on another primary than its keys: the case
    // where hashing the pattern as written (fred's routing) scans the wrong node.
    let prefix = (0..100)
        .map(|i| format!("kb{i}*"))
        .find(|p| {
            let raw = fred::util::redis_keyslot(p.as_bytes());
            let escaped = fred::util::redis_keyslot(p.replace('*', "\\*").as_bytes());
            (raw < 5461) != (escaped < 5461)
        })
        .unwrap();
    let (ours, theirs) = (
        format!("{{{prefix}}}:fact:"),
        format!("{{{}}}:fact:", prefix.replace('*', "2")),
    );
    assert_ne!(
        cluster.primary_of(&format!("{ours}x")).await.unwrap(),
        cluster
            .primary_of(&format!("{{{}}}:fact:x", prefix.replace('*', "\\*")))
            .await
            .unwrap()
    );
    for i in 0..50 {
        redis.set(format!("{ours}{i}"), i, None).await.unwrap();
        redis.set(format!("{theirs}{i}"), i, None).await.unwrap();
    }
    let pattern = format!("{{{}}}:fact:*", prefix.replace('*', "\\*"));
    reset_stats(&cluster).await;
    let found = redis.scan_keys(&pattern, 100, usize::MAX).await.unwrap();
    let mut scanned = Vec::new();
    for node in cluster.nodes() {
        let info = node
            .command(&["INFO", "commandstats"])
            .await
            .unwrap()
            .as_text()
            .unwrap();
        if info.contains("cmdstat_scan:") {
            scanned.push(node.port());
        }
    }
    println!("`{pattern}`: {} keys, SCAN sent to {scanned:?}", found.len());
    assert_eq!(found.len(), 50, "{found:?}");
    assert!(found.iter().all(|k| k.starts_with(&ours)));
    let owner = cluster.primary_of(&format!("{ours}0")).await.unwrap();
    assert_eq!(scanned, [owner], "only the primary of the keys' slot is scanned");
}
