//! Redis deployments (#14): TLS against a real `redis-server` speaking TLS with
//! certificates generated for the test (nothing checked in). With the CA the handle
//! works, with client certificates too when the server requires them; without the CA,
//! with a wrong server name or without the required client certificate it fails
//! closed: the first command fails, within the connect deadline (+250 ms slack, measured
//! from `Redis::connect`), with an error that says it is a TLS failure — never a hang,
//! never plain text. A cluster named by a `h1:p1,h2:p2` host list, and a sentinel
//! deployment whose sentinels take their own ACL credentials. Real time, serialised;
//! measured figures printed.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use stayfast_core::{
    ErrorChain,
    breaker::State,
    redis::{Redis, RedisConfig, RedisTls, fred::error::ErrorKind},
    test_util::{ClientAuth, RedisCluster, RedisSentinel, Reply, TlsRedisServer},
};

const SLACK: Duration = Duration::from_millis(250);
const CONNECT: Duration = Duration::from_millis(1000);

/// One real-server test at a time: wall-clock bounds on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(url: String, tls: Option<RedisTls>) -> RedisConfig {
    let mut config = RedisConfig::default();
    config.url = url;
    config.tls = tls;
    config.pool_size = 2;
    config.connect_timeout = CONNECT;
    config
}

fn trusting(server: &TlsRedisServer) -> RedisTls {
    let mut tls = RedisTls::default();
    tls.ca_file = Some(server.ca_file().to_path_buf());
    tls
}

fn with_client_cert(server: &TlsRedisServer) -> RedisTls {
    let mut tls = trusting(server);
    tls.client_cert = Some(server.client_cert_file().to_path_buf());
    tls.client_key = Some(server.client_key_file().to_path_buf());
    tls
}

/// Connects and runs one GET that must fail: its error text, after checking the time
/// from `connect` to the error against the connect deadline.
async fn first_command_fails(what: &str, config: &RedisConfig) -> String {
    let started = Instant::now();
    let redis = Redis::connect(config).await.unwrap(); // degraded, not failed
    let connected_after = started.elapsed();
    let err = redis.get::<Option<String>>("k").await.unwrap_err();
    let failed_after = started.elapsed();
    let text = ErrorChain(&err).to_string();
    println!(
        "{what}: connect returned after {connected_after:?}, first command failed after {failed_after:?}: {text}"
    );
    assert!(
        failed_after <= config.connect_timeout + SLACK,
        "{what}: {failed_after:?} > connect deadline {:?} + {SLACK:?}",
        config.connect_timeout
    );
    let kind = err.inner().map(|e| e.kind().clone());
    assert_eq!(kind, Some(ErrorKind::Tls), "{what}: a typed TLS error: {text}");
    assert!(
        text.contains("is unreachable: TLS handshake failed"),
        "{what}: the error says it is TLS: {text}"
    );
    assert_eq!(redis.connected().0, 0, "{what}: never connected");
    assert_eq!(
        redis
            .unreachable_reason()
            .as_deref()
            .map(|r| r.starts_with("TLS handshake failed")),
        Some(true)
    );
    // Still closed-or-open, never a plaintext fallback: a second command fails alike.
    assert!(redis.get::<Option<String>>("k").await.is_err());
    redis.close().await;
    text
}

#[tokio::test]
async fn tls_with_the_ca_serves_commands() {
    let _serial = SERIAL.lock().await;
    let server = TlsRedisServer::start(ClientAuth::None).await.unwrap();
    let redis = Redis::connect(&config(server.url(), Some(trusting(&server))))
        .await
        .unwrap();
    assert_eq!(redis.connected(), (2, 2));
    redis.set("k", "over tls", None).await.unwrap();
    assert_eq!(
        redis.get::<Option<String>>("k").await.unwrap().as_deref(),
        Some("over tls")
    );
    assert_eq!(redis.unreachable_reason(), None);
    // It went over the TLS port: the plaintext admin port sees the same key.
    let seen = server.server().command(&["GET", "k"]).await.unwrap();
    assert_eq!(seen.as_text().as_deref(), Some("over tls"));

    // A `tls` table turns TLS on for a redis:// URL too; with the name to verify.
    let mut tls = trusting(&server);
    tls.server_name = Some(TlsRedisServer::SERVER_NAME.into());
    let plain_url = format!("redis://127.0.0.1:{}", server.tls_port());
    let redis = Redis::connect(&config(plain_url, Some(tls))).await.unwrap();
    assert_eq!(
        redis.get::<Option<String>>("k").await.unwrap().as_deref(),
        Some("over tls")
    );
}

#[tokio::test]
async fn tls_with_required_client_certificates() {
    let _serial = SERIAL.lock().await;
    let server = TlsRedisServer::start(ClientAuth::Required).await.unwrap();
    let redis = Redis::connect(&config(server.url(), Some(with_client_cert(&server))))
        .await
        .unwrap();
    redis.set("k", "mutual", None).await.unwrap();
    assert_eq!(
        redis.get::<Option<String>>("k").await.unwrap().as_deref(),
        Some("mutual")
    );
    redis.close().await;

    let text = first_command_fails(
        "CA but no client certificate",
        &config(server.url(), Some(trusting(&server))),
    )
    .await;
    assert!(text.contains("rediss://127.0.0.1:"), "names the server: {text}");
}

#[tokio::test]
async fn tls_fails_closed_without_the_ca() {
    let _serial = SERIAL.lock().await;
    let server = TlsRedisServer::start(ClientAuth::None).await.unwrap();
    // No `tls` table: the system's CAs, which do not include the test's.
    let text = first_command_fails("no CA", &config(server.url(), None)).await;
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[tokio::test]
async fn tls_fails_closed_with_a_wrong_server_name() {
    let _serial = SERIAL.lock().await;
    let server = TlsRedisServer::start(ClientAuth::None).await.unwrap();
    let mut tls = trusting(&server);
    tls.server_name = Some("redis.wrong.example".into());
    let text = first_command_fails("wrong server name", &config(server.url(), Some(tls))).await;
    assert!(text.contains("NotValidForName"), "{text}");
}

/// `tls.server_name` is the name the handshake sends (SNI), not only the one verified: a
/// proxy or a managed Redis routing by SNI sees it. A listener that reads the first
/// ClientHello and answers nothing records what was sent (for an IP address host rustls
/// sends no SNI at all, which is what fred did before).
#[tokio::test]
async fn tls_sends_the_configured_server_name() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut acceptor = fred::rustls::server::Acceptor::default();
        while acceptor.read_tls(&mut stream).unwrap_or(0) > 0 {
            match acceptor.accept() {
                Ok(None) => continue,
                Ok(Some(hello)) => {
                    let _ = sent.send(hello.client_hello().server_name().map(str::to_owned));
                }
                Err(_) => {}
            }
            break;
        }
    });
    let mut tls = RedisTls::default();
    tls.server_name = Some("redis.internal.example".into());
    tls.insecure_skip_verify = true; // nothing here to verify: only the ClientHello is read
    let redis = Redis::connect(&config(format!("rediss://127.0.0.1:{port}"), Some(tls)))
        .await
        .unwrap();
    let sni = received.recv_timeout(Duration::from_secs(5)).unwrap();
    println!("SNI sent to rediss://127.0.0.1:{port}: {sni:?}");
    assert_eq!(sni.as_deref(), Some("redis.internal.example"));
    redis.close().await;
}

#[tokio::test]
async fn insecure_skip_verify_connects_only_when_set() {
    let _serial = SERIAL.lock().await;
    let server = TlsRedisServer::start(ClientAuth::None).await.unwrap();
    let mut tls = RedisTls::default();
    tls.insecure_skip_verify = true;
    let redis = Redis::connect(&config(server.url(), Some(tls))).await.unwrap();
    redis.set("k", "unverified", None).await.unwrap();
    assert_eq!(redis.breaker().state(), State::Closed);
}

#[tokio::test]
async fn unreadable_certificate_files_are_config_errors_naming_field_and_path() {
    let server = TlsRedisServer::start(ClientAuth::Required).await.unwrap();
    let missing = server.ca_file().with_file_name("nope.pem");
    let mut tls = RedisTls::default();
    tls.ca_file = Some(missing.clone());
    let err = Redis::connect(&config(server.url(), Some(tls)))
        .await
        .unwrap_err();
    assert_eq!(err.field(), "tls.ca_file");
    assert!(err.problem().contains(&missing.display().to_string()), "{err}");

    // A key file given as the certificate, and the other way round: parsed, refused,
    // and the key's contents never echoed.
    let key_text = std::fs::read_to_string(server.client_key_file()).unwrap();
    let secret_line = key_text.lines().nth(1).unwrap();
    let mut tls = with_client_cert(&server);
    tls.client_cert = Some(server.client_key_file().to_path_buf());
    let err = Redis::connect(&config(server.url(), Some(tls)))
        .await
        .unwrap_err();
    assert_eq!(err.field(), "tls.client_cert", "{err}");
    assert!(!err.to_string().contains(secret_line));
    let mut tls = with_client_cert(&server);
    tls.client_key = Some(server.ca_file().to_path_buf());
    let err = Redis::connect(&config(server.url(), Some(tls)))
        .await
        .unwrap_err();
    assert_eq!(err.field(), "tls.client_key", "{err}");
    println!("{err}");

    // A key that does not match the certificate.
    let other = TlsRedisServer::start(ClientAuth::None).await.unwrap();
    let mut tls = with_client_cert(&server);
    tls.client_key = Some(other.client_key_file().to_path_buf());
    let err = Redis::connect(&config(server.url(), Some(tls)))
        .await
        .unwrap_err();
    assert_eq!(err.field(), "tls.client_key", "{err}");
    assert!(!format!("{err} {err:?}").contains(secret_line));
    println!("{err}");

    // Both or neither.
    let mut tls = trusting(&server);
    tls.client_key = Some(server.client_key_file().to_path_buf());
    let err = Redis::connect(&config(server.url(), Some(tls)))
        .await
        .unwrap_err();
    assert_eq!(err.field(), "tls.client_cert");
}

/// `redis-cluster://h1:p1,h2:p2,h3:p3` (the host-list form) reaches every primary.
#[tokio::test]
async fn a_cluster_from_a_host_list() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let url = format!("redis-cluster://{}", hosts.join(","));
    let redis = Redis::connect(&config(url, None)).await.unwrap();
    let started = Instant::now();
    while redis.set("probe", "x", None).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..60 {
        redis.set(format!("key:{i}"), i, None).await.unwrap();
    }
    for node in cluster.nodes() {
        let keys = node.command(&["DBSIZE"]).await.unwrap().as_integer().unwrap();
        assert!(keys > 0, "node {} holds none of the keys", node.port());
    }
}

/// The sentinels authenticate with `sentinel_username`/`sentinel_password` (an ACL user
/// that only the sentinel knows), the data nodes with their own (none here): a wrong
/// sentinel password is refused, the right one serves.
#[tokio::test]
async fn sentinels_take_their_own_credentials() {
    let _serial = SERIAL.lock().await;
    let deployment = RedisSentinel::start(1).await.unwrap();
    let sentinel = &deployment.sentinels()[0];
    let reply = sentinel
        .command(&["ACL", "SETUSER", "watcher", "on", ">w4tcher-Pa55", "+@all"])
        .await
        .unwrap();
    assert_eq!(reply, Reply::Simple("OK".into()));
    let with = |password: &str| {
        let mut c = config(deployment.url(), None);
        c.pool_size = 1;
        c.sentinel_username = Some("watcher".into());
        c.sentinel_password = Some(password.into());
        c
    };
    let right = with("w4tcher-Pa55");
    assert!(!format!("{right:?}").contains("w4tcher"), "never in Debug");
    let redis = Redis::connect(&right).await.unwrap();
    let started = Instant::now();
    while redis.set("k", "via sentinel", None).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        deployment.primary().command(&["GET", "k"]).await.unwrap(),
        Reply::Bulk(Some(b"via sentinel".to_vec()))
    );
    redis.close().await;

    let wrong = Redis::connect(&with("wr0ng-Pa55")).await.unwrap();
    let err = wrong.get::<Option<String>>("k").await.unwrap_err();
    let text = ErrorChain(&err).to_string();
    println!("wrong sentinel password: {text}");
    assert_eq!(wrong.connected().0, 0);
    assert!(!text.contains("Pa55"), "{text}");
}
