//! ACL least privilege (#14): the `ACL SETUSER` lines the README documents, read from
//! the README itself, run on a real `redis-server` whose default user is then turned
//! off. Each store's main operations succeed as its user, with no ACL denial logged
//! (fred's connection setup included); a right taken away makes the call fail with
//! Redis's `NOPERM` text naming it, sent once per call (never retried), and the breaker
//! stays closed.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use stayfast::{
    BackgroundConfig, ErrorChain, FireAndForget,
    breaker::State,
    cache::{Cache, CacheConfig},
    knowledge::{KnowledgeConfig, KnowledgeStore},
    redis::{
        Redis, RedisConfig,
        fred::{
            clients::Client,
            interfaces::ClientLike,
            prelude::{Builder, Config},
            types::{ClusterHash, CustomCommand, Value},
        },
    },
    test_util::{RedisServer, Reply},
    transcripts::{HistorySource, Message, Order, SeqSource, TranscriptConfig, TranscriptStore},
};
use support::{
    TempDir,
    acl::{PASSWORD, documented_acl_lines},
};

const ADMIN_PASSWORD: &str = "admin-test-Pa55";

/// A handle logged in as `user`.
async fn connect_as(server: &RedisServer, user: &str) -> Redis {
    let mut config = RedisConfig::default();
    config.url = server.url();
    config.username = Some(user.to_owned());
    config.password = Some(PASSWORD.to_owned());
    config.pool_size = 2;
    let redis = Redis::connect(&config).await.unwrap();
    assert_eq!(redis.connected(), (2, 2), "{user} logs in");
    redis
}

/// An administrator's connection (the test's own: the default user is off).
async fn admin(server: &RedisServer) -> Client {
    let url = format!("redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{}", server.port());
    let client = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

async fn admin_command(admin: &Client, args: &[&str]) -> Value {
    let (name, rest) = args.split_first().unwrap();
    let command = CustomCommand::new((*name).to_owned(), ClusterHash::Random, false);
    let args: Vec<String> = rest.iter().map(|a| (*a).to_owned()).collect();
    admin.custom(command, args).await.unwrap()
}

/// `ACL LOG`'s entries as (username, object, count).
async fn acl_log(admin: &Client) -> Vec<(String, String, i64)> {
    let Value::Array(entries) = admin_command(admin, &["ACL", "LOG"]).await else {
        panic!("ACL LOG is an array");
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(fields) = entry else {
                panic!("an ACL LOG entry is an array");
            };
            let get = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0].as_str().as_deref() == Some(name))
                    .map(|kv| kv[1].clone())
                    .unwrap()
            };
            (
                get("username").as_string().unwrap(),
                get("object").as_string().unwrap(),
                get("count").as_i64().unwrap(),
            )
        })
        .collect()
}

/// `rejected_calls` of `command` in `INFO commandstats` (ACL refusals are counted there).
async fn rejected_calls(admin: &Client, command: &str) -> u64 {
    let info = admin_command(admin, &["INFO", "commandstats"])
        .await
        .as_string()
        .unwrap();
    let prefix = format!("cmdstat_{command}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|stats| stats.split(',').find_map(|kv| kv.strip_prefix("rejected_calls=")))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_store_works_with_exactly_its_documented_rights() {
    let server = RedisServer::start().await.unwrap();
    let reply = server
        .command(&[
            "ACL",
            "SETUSER",
            "admin",
            "on",
            &format!(">{ADMIN_PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ])
        .await
        .unwrap();
    assert_eq!(reply, Reply::Simple("OK".into()));
    for line in documented_acl_lines() {
        let args: Vec<&str> = line.iter().map(String::as_str).collect();
        let reply = server.command(&args).await.unwrap();
        assert_eq!(reply, Reply::Simple("OK".into()), "{line:?}");
    }
    assert!(
        matches!(server.command(&["PING"]).await.unwrap(), Reply::Error(e) if e.starts_with("NOAUTH")),
        "the default user is off"
    );
    let admin = admin(&server).await;
    admin_command(&admin, &["ACL", "LOG", "RESET"]).await;

    // The knowledge store, as stayfast-kb.
    let kb = connect_as(&server, "stayfast-kb").await;
    let knowledge = KnowledgeStore::new(kb.clone(), &KnowledgeConfig::default()).unwrap();
    let id = knowledge
        .store_fact("least privilege works", serde_json::json!({"k": 1}))
        .await
        .unwrap();
    assert!(knowledge.get_fact(&id).await.unwrap().is_some());
    assert_eq!(knowledge.search("privilege", 10).await.unwrap().len(), 1);
    assert_eq!(knowledge.list_facts().await.unwrap().len(), 1);
    assert_eq!(knowledge.count().await.unwrap(), 1);
    assert!(knowledge.check_health(Duration::from_secs(1)).await.ok);
    assert!(knowledge.delete_fact(&id).await.unwrap());

    // The transcript store, as stayfast-tx: its window in Redis is pushed and read
    // (EVAL, LRANGE), then deleted.
    let tx = connect_as(&server, "stayfast-tx").await;
    let dir = TempDir::new("acl");
    let mut config = TranscriptConfig::default();
    config.dir = dir.0.join("tx");
    let background = FireAndForget::new("acl-test", &BackgroundConfig::default()).unwrap();
    let transcripts = TranscriptStore::builder(&config)
        .redis(tx.clone())
        .background(background.clone())
        .open()
        .await
        .unwrap();
    for text in ["hello", "least", "privilege"] {
        transcripts
            .append("s1", Message::new("user", text))
            .await
            .unwrap();
    }
    let history =
        support::history_from_redis(&transcripts, &background, "s1", 10, Duration::from_secs(10)).await;
    assert_eq!(history.records.len(), 3);
    let window = admin_command(&admin, &["KEYS", "{tx:*"]).await;
    assert!(
        matches!(&window, Value::Array(keys) if !keys.is_empty()),
        "{window:?}"
    );
    assert!(transcripts.delete_session("s1").await.unwrap());

    // The transcript store in redis order, as stayfast-tx-ordered: the order script, a
    // WAIT (no replica: 0 confirmed), the history, the delete.
    let ordered_redis = connect_as(&server, "stayfast-tx-ordered").await;
    let mut config = TranscriptConfig::default();
    config.dir = dir.0.join("tx-ordered");
    config.order = Order::Redis;
    config.wait_replicas = 1;
    config.wait_timeout = Duration::from_millis(10);
    let ordered = TranscriptStore::builder(&config)
        .redis(ordered_redis.clone())
        .background(background.clone())
        .open()
        .await
        .unwrap();
    for text in ["in", "order"] {
        let receipt = ordered.append("s2", Message::new("user", text)).await.unwrap();
        assert_eq!(receipt.seq_source, SeqSource::Redis { replicas: Some(0) });
    }
    let history = ordered.history("s2", 10).await.unwrap();
    assert_eq!((history.source, history.records.len()), (HistorySource::Redis, 2));
    assert!(ordered.delete_session("s2").await.unwrap());

    // The cache, as stayfast-cache.
    let cache_redis = connect_as(&server, "stayfast-cache").await;
    let cache = Cache::new(cache_redis.clone(), "greetings", &CacheConfig::default()).unwrap();
    cache.set("fr", "bonjour", None).await.unwrap();
    assert_eq!(
        cache.get::<String>("fr").await.unwrap().as_deref(),
        Some("bonjour")
    );
    assert!(cache.delete("fr").await.unwrap());

    let denied = acl_log(&admin).await;
    assert!(
        denied.is_empty(),
        "no right missing, fred's connection setup included: {denied:?}"
    );
    for redis in [&kb, &tx, &ordered_redis, &cache_redis] {
        assert_eq!(redis.breaker().state(), State::Closed);
    }

    // One right taken away: the call fails with Redis's NOPERM naming it, each call is
    // sent once (GET is idempotent: it would be retried were NOPERM transient), and the
    // breaker the other commands share stays closed through more refusals than its
    // threshold.
    admin_command(&admin, &["ACL", "SETUSER", "stayfast-cache", "-get"]).await;
    let calls = 12;
    for _ in 0..calls {
        let err = cache.get::<String>("fr").await.unwrap_err();
        let text = ErrorChain(&err).to_string();
        assert!(text.contains("NOPERM") && text.contains("'get'"), "{text}");
    }
    println!(
        "cache.get without +get: {}",
        ErrorChain(&cache.get::<String>("fr").await.unwrap_err())
    );
    assert_eq!(
        rejected_calls(&admin, "get").await,
        calls + 1,
        "each call sent once"
    );
    let log = acl_log(&admin).await;
    assert_eq!(
        log,
        [("stayfast-cache".to_owned(), "get".to_owned(), calls as i64 + 1)]
    );
    assert_eq!(cache_redis.breaker().state(), State::Closed);
    cache.set("fr", "salut", None).await.unwrap(); // the other rights still serve

    admin_command(&admin, &["ACL", "LOG", "RESET"]).await;
    admin_command(&admin, &["ACL", "SETUSER", "stayfast-kb", "-incr"]).await;
    let err = knowledge
        .store_fact("no counter", serde_json::json!(null))
        .await
        .unwrap_err();
    let text = ErrorChain(&err).to_string();
    println!("store_fact without +incr: {text}");
    assert!(text.contains("NOPERM") && text.contains("'incr'"), "{text}");
    assert_eq!(
        acl_log(&admin).await,
        [("stayfast-kb".to_owned(), "incr".to_owned(), 1)]
    );
    assert_eq!(kb.breaker().state(), State::Closed);
    assert_eq!(knowledge.count().await.unwrap(), 0, "reads still served");
}
