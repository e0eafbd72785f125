//! The throwaway deployments of `test_util` (#14): a Redis Cluster, a Sentinel
//! deployment and a TLS server, each on free loopback ports and stopped by pid. What
//! these tests prove is the harness itself: that the deployment is what it says (slots
//! spread over three primaries, a replica promoted when its primary dies, a server that
//! speaks only TLS with the generated CA), so the store suites can rely on it.
#![allow(clippy::unwrap_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use stayfast_core::{
    redis::{Redis, RedisConfig},
    test_util::{ClientAuth, RedisCluster, RedisSentinel, Reply, TlsRedisServer},
};

/// Polls `check` every 100 ms until it holds or `limit` passes; returns the time taken.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_cluster_spreads_keys_over_its_three_primaries() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    println!("3-primary cluster formed in {:?}", started.elapsed());
    assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));

    let mut config = RedisConfig::default();
    config.url = cluster.url();
    let redis = Redis::connect(&config).await.unwrap();
    within(
        Duration::from_secs(10),
        "fred connects to every primary",
        || async { redis.connected().0 > 0 && redis.set("probe", "x", None).await.is_ok() },
    )
    .await;
    for i in 0..300 {
        redis.set(format!("key:{i}"), i, None).await.unwrap();
    }
    let value: Option<String> = redis.get("key:7").await.unwrap();
    assert_eq!(value.as_deref(), Some("7"));
    for node in cluster.nodes() {
        let keys = node.command(&["DBSIZE"]).await.unwrap().as_integer().unwrap();
        println!("node {}: {keys} keys", node.port());
        assert!(keys >= 60, "node {} holds {keys} of 300 keys", node.port());
    }
    let owner = cluster.primary_of("key:7").await.unwrap();
    let on_owner = cluster.nodes().iter().find(|n| n.port() == owner).unwrap();
    assert_eq!(
        on_owner.command(&["GET", "key:7"]).await.unwrap(),
        Reply::Bulk(Some(b"7".to_vec()))
    );
}

#[tokio::test]
async fn a_cluster_replica_takes_over_when_its_primary_is_killed() {
    let mut cluster = RedisCluster::start(3, 1).await.unwrap();
    assert_eq!(cluster.nodes().len(), 6);
    let before = cluster.primary_of("k").await.unwrap();
    let index = cluster.nodes().iter().position(|n| n.port() == before).unwrap();
    cluster.node_mut(index).kill().unwrap();
    let took = within(Duration::from_secs(20), "a replica is promoted", || async {
        cluster.primary_of("k").await.is_ok_and(|now| now != before)
    })
    .await;
    println!("cluster failover: a replica served the slot {took:?} after kill -9");
}

#[tokio::test]
async fn sentinel_promotes_the_replica_when_the_primary_is_killed() {
    let mut deployment = RedisSentinel::start(1).await.unwrap();
    assert!(deployment.url().contains("sentinelServiceName=stayfast"));
    assert_eq!(
        deployment.current_primary().await.unwrap(),
        deployment.primary().port()
    );
    let promoted = deployment.replica().port();
    deployment.primary_mut().kill().unwrap();
    let took = within(
        Duration::from_secs(20),
        "the sentinel promotes the replica",
        || async { deployment.current_primary().await.is_ok_and(|p| p == promoted) },
    )
    .await;
    println!("sentinel failover: the replica named primary {took:?} after kill -9");
    let replica = deployment.replica();
    within(
        Duration::from_secs(10),
        "the promoted replica says it is a primary",
        || async {
            matches!(replica.command(&["ROLE"]).await, Ok(Reply::Array(Some(role)))
            if role.first().and_then(Reply::as_text).as_deref() == Some("master"))
        },
    )
    .await;
}

/// `redis-cli` (Debian's redis-tools, installed with redis-server) as an independent TLS
/// client: the generated CA and certificates must be what OpenSSL accepts.
fn redis_cli_tls(server: &TlsRedisServer, extra: &[&str]) -> (bool, String) {
    let port = server.tls_port().to_string();
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--tls"])
        .args(extra)
        .arg("PING")
        .output()
        .expect("redis-cli comes with redis-server (apt-get install -y redis-server)");
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    (text.contains("PONG"), text)
}

#[tokio::test]
async fn a_tls_server_answers_clients_that_trust_its_generated_ca() {
    let server = TlsRedisServer::start(ClientAuth::None).await.unwrap();
    assert_eq!(
        server.server().command(&["PING"]).await.unwrap(),
        Reply::Simple("PONG".into()),
        "the plaintext admin port"
    );
    let ca = server.ca_file().display().to_string();
    let (ok, text) = redis_cli_tls(&server, &["--cacert", &ca, "--sni", TlsRedisServer::SERVER_NAME]);
    assert!(ok, "trusting the CA: {text}");
    let (ok, text) = redis_cli_tls(&server, &[]);
    assert!(!ok, "without the CA the handshake must fail: {text}");

    let strict = TlsRedisServer::start(ClientAuth::Required).await.unwrap();
    let ca = strict.ca_file().display().to_string();
    let (ok, text) = redis_cli_tls(&strict, &["--cacert", &ca]);
    assert!(!ok, "no client certificate: refused ({text})");
    let cert = strict.client_cert_file().display().to_string();
    let key = strict.client_key_file().display().to_string();
    let (ok, text) = redis_cli_tls(&strict, &["--cacert", &ca, "--cert", &cert, "--key", &key]);
    assert!(ok, "with the client certificate: {text}");
}
