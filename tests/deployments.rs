//! The three stores, the same operations, on every deployment production runs (#14):
//! one node, a 3-primary cluster, a sentinel deployment, TLS with the test's own CA,
//! and an ACL user holding exactly the README's documented rights with the default
//! user off. Each deployment starts on free loopback ports and is stopped by pid.
//!
//! `cargo test -p stayfast --all-features --test deployments -- --nocapture` prints how
//! long the stores took on each.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use stayfast::{
    BackgroundConfig, FireAndForget,
    breaker::State,
    cache::{Cache, CacheConfig},
    knowledge::{KnowledgeConfig, KnowledgeStore},
    redis::{Redis, RedisConfig, RedisTls},
    test_util::{ClientAuth, RedisCluster, RedisSentinel, RedisServer, Reply, TlsRedisServer},
    transcripts::{Message, TranscriptConfig, TranscriptStore},
};
use support::{
    TempDir,
    acl::{PASSWORD, documented_acl_lines, union_of_the_documented_users},
};

/// A handle on `config`'s deployment, once a command goes through (a cluster's slots or
/// a sentinel's primary are learnt after connecting).
async fn connect(config: &RedisConfig) -> Redis {
    let redis = Redis::connect(config).await.unwrap();
    let started = Instant::now();
    while let Err(e) = redis.set("{tx:probe}", "x", None).await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no command went through: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.del("{tx:probe}").await.unwrap();
    redis
}

fn config(url: String) -> RedisConfig {
    let mut config = RedisConfig::default();
    config.url = url;
    config
}

/// The knowledge store, the transcript store and the cache, through `redis`: what each
/// suite checks first, in a few calls each.
async fn the_stores_work_on(redis: &Redis, deployment: &str) {
    let started = Instant::now();

    let knowledge = KnowledgeStore::new(redis.clone(), &KnowledgeConfig::default()).unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let text = format!("deployment fact {i} about topic{}", i % 4);
        ids.push(knowledge.store_fact(&text, json!({ "i": i })).await.unwrap());
    }
    assert_eq!(knowledge.count().await.unwrap(), 40, "{deployment}");
    assert_eq!(knowledge.list_facts().await.unwrap().len(), 40, "{deployment}");
    let hits = knowledge.search("deployment TOPIC1", 100).await.unwrap();
    assert_eq!(hits.len(), 10, "{deployment}");
    assert!(
        hits.windows(2).all(|w| w[0].created_at >= w[1].created_at),
        "newest first"
    );
    let fact = knowledge.get_fact(&ids[7]).await.unwrap().unwrap();
    assert_eq!(fact.metadata, json!({ "i": 7 }), "{deployment}");
    for id in &ids {
        assert!(knowledge.delete_fact(id).await.unwrap(), "{deployment}");
    }
    assert_eq!(knowledge.count().await.unwrap(), 0, "{deployment}");

    let dir = TempDir::new("deployments");
    let mut tx_config = TranscriptConfig::default();
    tx_config.dir = dir.0.join("tx");
    let background = FireAndForget::new("deployments", &BackgroundConfig::default()).unwrap();
    let transcripts = TranscriptStore::builder(&tx_config)
        .redis(redis.clone())
        .background(background.clone())
        .open()
        .await
        .unwrap();
    for session in 0..5 {
        for turn in 0..4 {
            let message = Message::new("user", format!("turn {turn}")).with_id(format!("m{turn}"));
            let receipt = transcripts.append(&format!("s{session}"), message).await.unwrap();
            assert_eq!(receipt.record.seq, turn + 1, "{deployment}");
        }
    }
    for session in 0..5 {
        let session = format!("s{session}");
        let history =
            support::history_from_redis(&transcripts, &background, &session, 10, Duration::from_secs(10))
                .await;
        let seqs: Vec<u64> = history.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "{deployment}");
    }
    assert!(transcripts.delete_session("s0").await.unwrap(), "{deployment}");
    assert!(transcripts.history("s0", 10).await.unwrap().records.is_empty());

    let cache = Cache::new(redis.clone(), "deployments", &CacheConfig::default()).unwrap();
    cache.set("fr", "bonjour", None).await.unwrap();
    assert_eq!(
        cache.get::<String>("fr").await.unwrap().as_deref(),
        Some("bonjour"),
        "{deployment}"
    );
    let mut loads = 0;
    for _ in 0..3 {
        let value: String = cache
            .get_or_insert_with("slow", None, || {
                loads += 1;
                async { Ok::<_, std::io::Error>("computed".to_owned()) }
            })
            .await
            .unwrap();
        assert_eq!(value, "computed");
    }
    assert_eq!(loads, 1, "{deployment}: later calls are cache hits");
    assert!(cache.delete("fr").await.unwrap(), "{deployment}");

    assert_eq!(redis.breaker().state(), State::Closed, "{deployment}");
    println!("{deployment}: the three stores in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node() {
    let server = RedisServer::start().await.unwrap();
    let redis = connect(&config(server.url())).await;
    the_stores_work_on(&redis, "one node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_primaries() {
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let redis = connect(&config(cluster.url())).await;
    assert!(redis.is_cluster());
    the_stores_work_on(&redis, "3-primary cluster").await;
    let moved = cluster
        .info_total("errorstats", "errorstat_MOVED", "count")
        .await
        .unwrap();
    println!("3-primary cluster: {moved} MOVED replies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_deployment() {
    let deployment = RedisSentinel::start(3).await.unwrap();
    let redis = connect(&config(deployment.url())).await;
    the_stores_work_on(&redis, "sentinel").await;
    redis.set("{tx:where}", "here", None).await.unwrap();
    assert_eq!(
        deployment
            .primary()
            .command(&["GET", "{tx:where}"])
            .await
            .unwrap(),
        Reply::Bulk(Some(b"here".to_vec())),
        "the primary the sentinels name serves the writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_deployments_ca() {
    let server = TlsRedisServer::start(ClientAuth::None).await.unwrap();
    let mut config = config(server.url());
    let mut tls = RedisTls::default();
    tls.ca_file = Some(server.ca_file().to_path_buf());
    config.tls = Some(tls);
    let redis = connect(&config).await;
    the_stores_work_on(&redis, "TLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_with_exactly_the_documented_rights() {
    let server = RedisServer::start().await.unwrap();
    least_privilege(&server, &[]).await;
    let mut config = config(server.url());
    config.username = Some("stayfast".into());
    config.password = Some(PASSWORD.into());
    let redis = connect(&config).await;
    the_stores_work_on(&redis, "ACL user").await;
}

/// Applies the union of the documented rights, plus `extra`, as user `stayfast` on
/// `node`, and turns its default user off.
async fn least_privilege(node: &RedisServer, extra: &[&str]) {
    documented_user(node, extra).await;
    let off = documented_acl_lines().pop().unwrap();
    let args: Vec<&str> = off.iter().map(String::as_str).collect();
    assert_eq!(node.command(&args).await.unwrap(), Reply::Simple("OK".into()));
}

/// The union of the documented rights, plus `extra`, as user `stayfast` on `node`.
async fn documented_user(node: &RedisServer, extra: &[&str]) {
    let mut user = union_of_the_documented_users("stayfast");
    user.extend(extra.iter().map(|r| (*r).to_owned()));
    for line in [user] {
        let args: Vec<&str> = line.iter().map(String::as_str).collect();
        assert_eq!(
            node.command(&args).await.unwrap(),
            Reply::Simple("OK".into()),
            "{line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_on_a_cluster_with_the_documented_cluster_rights() {
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    for node in cluster.nodes() {
        least_privilege(node, &["+cluster|slots", "+cluster|info"]).await;
    }
    let mut config = config(cluster.url());
    config.username = Some("stayfast".into());
    config.password = Some(PASSWORD.into());
    let redis = connect(&config).await;
    the_stores_work_on(&redis, "ACL user on a cluster").await;
}

/// The user as `config`'s, with the tests' password.
fn as_the_user(mut config: RedisConfig) -> RedisConfig {
    config.username = Some("stayfast".into());
    config.password = Some(PASSWORD.into());
    config
}

/// Calls through `redis`, whose user lacks a right its connections' setup needs: each
/// fails at once naming `right`, without an attempt (so never retried), and the breaker
/// stays closed (Redis is healthy; the configuration is not).
async fn refused_naming(redis: &Redis, right: &str, what: &str) {
    for _ in 0..10 {
        let started = Instant::now();
        let e = redis.get::<Option<String>>("cache:probe").await.unwrap_err();
        let took = started.elapsed();
        let text = support::error_chain(&e);
        assert!(
            text.contains("refuses this client") && text.contains("NOPERM") && text.contains(right),
            "{text}"
        );
        assert!(
            matches!(e, stayfast::Error::Inner { attempts: 0, .. }),
            "no attempt: {e:?}"
        );
        assert!(took < Duration::from_millis(50), "{what}: failed after {took:?}");
    }
    assert_eq!(redis.breaker().state(), State::Closed, "{what}");
    println!(
        "{what}: {}",
        support::error_chain(&redis.get::<Option<String>>("cache:probe").await.unwrap_err())
    );
}

/// A URL naming a database needs `+select` (fred selects it on every new connection):
/// without it no connection is set up and every command fails at once naming the right;
/// with it the stores work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_on_a_numbered_database_needs_select() {
    let without = RedisServer::start().await.unwrap();
    least_privilege(&without, &[]).await;
    let redis = Redis::connect(&as_the_user(config(format!("{}/1", without.url()))))
        .await
        .unwrap();
    refused_naming(&redis, "'select'", "database 1 without +select").await;

    let with = RedisServer::start().await.unwrap();
    least_privilege(&with, &["+select"]).await;
    let redis = connect(&as_the_user(config(format!("{}/1", with.url())))).await;
    the_stores_work_on(&redis, "ACL user on database 1").await;
}

/// A sentinel deployment's primary, as an ACL user: fred asks the node the sentinels name
/// for its `ROLE` before using it, so the user needs `+role` there; without it every
/// command fails at once naming the right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_on_a_sentinel_deployment_needs_role() {
    for (extra, works) in [(&[][..], false), (&["+role"][..], true)] {
        let deployment = RedisSentinel::start(1).await.unwrap();
        // The default user stays on: the sentinels and the replica use it.
        documented_user(deployment.primary(), extra).await;
        documented_user(deployment.replica(), extra).await;
        let config = as_the_user(config(deployment.url()));
        if works {
            let redis = connect(&config).await;
            the_stores_work_on(&redis, "ACL user on sentinel, with +role").await;
        } else {
            let redis = Redis::connect(&config).await.unwrap();
            refused_naming(&redis, "'role'", "sentinel without +role").await;
        }
    }
}
