//! The throwaway redis-server harness itself.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use stayfast_core::test_util::{RedisServer, Reply};

#[tokio::test]
async fn start_kill_pause_restart_and_cleanup() {
    let mut server = RedisServer::start().await.unwrap();
    assert_ne!(server.port(), 6379);
    assert_eq!(
        server.command(&["SET", "k", "v"]).await.unwrap(),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        server.command(&["GET", "k"]).await.unwrap(),
        Reply::Bulk(Some(b"v".to_vec()))
    );
    assert_eq!(server.executions("set").await.unwrap(), 1);

    server.pause().unwrap();
    let started = std::time::Instant::now();
    let paused = tokio::time::timeout(Duration::from_millis(300), server.command(&["PING"])).await;
    assert!(paused.is_err(), "a SIGSTOPped server answers nothing");
    println!("paused server: no reply for {:?}", started.elapsed());
    server.resume().unwrap();
    assert_eq!(
        server.command(&["PING"]).await.unwrap(),
        Reply::Simple("PONG".into())
    );

    server.kill().unwrap();
    assert!(server.command(&["PING"]).await.is_err(), "killed");
    server.restart().await.unwrap();
    assert_eq!(
        server.command(&["GET", "k"]).await.unwrap(),
        Reply::Bulk(None),
        "restarted empty"
    );

    let pid = server.pid().unwrap();
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "stopped on drop"
    );
}
