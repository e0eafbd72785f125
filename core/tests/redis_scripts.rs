//! Scripts run by their SHA1 (`Redis::eval_script`, issue #16) against a real
//! redis-server: `EVALSHA` once the node knows the script, the body (`EVAL`) on its first
//! call and after `SCRIPT FLUSH` (`NOSCRIPT`), once per call even for a script that is
//! not idempotent, and `EVAL` only for an ACL user without `+evalsha` (`NOPERM`), with
//! one warning. What the server ran is read from `INFO commandstats`.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use stayfast_core::{
    breaker::State,
    redis::{Redis, RedisConfig, Script},
    test_util::{RedisServer, Reply},
};
use support::redis::config;

/// One real-server test at a time: 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Not idempotent: a second run of one call would show in the counter.
const ADD: &str = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

/// `(evalsha, eval)` calls the server executed (a `NOSCRIPT` reply counts as an
/// `EVALSHA` call; an ACL refusal does not: it is a rejected call).
async fn calls(server: &RedisServer) -> (u64, u64) {
    (
        server.executions("evalsha").await.unwrap(),
        server.executions("eval").await.unwrap(),
    )
}

async fn counter(server: &RedisServer) -> i64 {
    let reply = server.command(&["GET", "{n}:counter"]).await.unwrap();
    reply.as_text().unwrap().parse().unwrap()
}

fn keys() -> Vec<String> {
    vec!["{n}:counter".to_owned()]
}

#[tokio::test]
async fn a_script_runs_by_its_sha_once_the_server_knows_it() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().await.unwrap();
    let redis = Redis::connect(&config(&server.url(), 1000)).await.unwrap();
    let script = Script::new(ADD);

    // A fresh server: EVALSHA draws NOSCRIPT, the body goes next, in the same attempt.
    let n: i64 = redis
        .eval_script(&script, keys(), vec!["1".into()])
        .await
        .unwrap();
    assert_eq!(n, 1, "ran once");
    assert_eq!(
        calls(&server).await,
        (1, 1),
        "(evalsha, eval) after the first call"
    );
    assert_eq!(counter(&server).await, 1);

    // The server has it now: by its SHA1 only.
    for i in 2..=10 {
        let n: i64 = redis
            .eval_script(&script, keys(), vec!["1".into()])
            .await
            .unwrap();
        assert_eq!(n, i);
    }
    assert_eq!(calls(&server).await, (10, 1), "EVALSHA grows, EVAL stays");

    // Flushed: NOSCRIPT again, the body once, still one run per call.
    assert_eq!(
        server.command(&["SCRIPT", "FLUSH"]).await.unwrap(),
        Reply::Simple("OK".into())
    );
    let n: i64 = redis
        .eval_script(&script, keys(), vec!["1".into()])
        .await
        .unwrap();
    assert_eq!(n, 11);
    assert_eq!(calls(&server).await, (11, 2));
    assert_eq!(
        counter(&server).await,
        11,
        "one INCRBY per call, the NOSCRIPT ones too"
    );

    // With WAIT (no replica: 0 acknowledgements once its 10 ms are up), flushed first.
    server.command(&["SCRIPT", "FLUSH"]).await.unwrap();
    let wait = |n: &'static str| {
        redis.eval_script_then_wait::<i64>(&script, keys(), vec![n.into()], 1, Duration::from_millis(10))
    };
    assert_eq!(wait("5").await.unwrap(), (16, 0));
    assert_eq!(
        calls(&server).await,
        (12, 3),
        "NOSCRIPT, then the pipeline again with EVAL"
    );
    assert_eq!(wait("5").await.unwrap(), (21, 0));
    assert_eq!(calls(&server).await, (13, 3));
    assert_eq!(counter(&server).await, 21);
    assert_eq!(
        server.executions("wait").await.unwrap(),
        3,
        "one WAIT per pipeline sent"
    );

    // The one-slot rule, unsent, as `eval`'s.
    let e = redis
        .eval_script::<i64>(&script, vec!["a".into(), "b".into()], vec![])
        .await
        .unwrap_err();
    assert!(e.attempts() == Some(0) && e.is_inner(), "{e}");
    // A script's own error is the call's, not a reason to send the body.
    let failing = Script::new("return redis.error_reply('ERR nope')");
    assert!(redis.eval_script::<i64>(&failing, vec![], vec![]).await.is_err()); // NOSCRIPT, EVAL
    assert!(redis.eval_script::<i64>(&failing, vec![], vec![]).await.is_err()); // EVALSHA only
    assert_eq!(calls(&server).await, (15, 4));
    assert_eq!(redis.breaker().state(), State::Closed);
}

/// Every line the tracing events of this thread print, until the guard drops.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A handle logged in as `user` (password `pw`).
async fn connect_as(server: &RedisServer, user: &str) -> Redis {
    let mut c: RedisConfig = config(&server.url(), 1000);
    c.username = Some(user.to_owned());
    c.password = Some("pw".to_owned());
    let redis = Redis::connect(&c).await.unwrap();
    assert_eq!(redis.connected(), (2, 2), "{user} logs in");
    redis
}

/// The ACL refusals of `EVALSHA` (`rejected_calls` in `INFO commandstats`).
async fn evalsha_refused(server: &RedisServer) -> u64 {
    let info = server
        .command(&["INFO", "commandstats"])
        .await
        .unwrap()
        .as_text()
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|stats| stats.split(',').find_map(|kv| kv.strip_prefix("rejected_calls=")))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn a_user_without_evalsha_gets_its_scripts_run_by_eval() {
    let _serial = SERIAL.lock().await;
    let mut server = RedisServer::start().await.unwrap();
    let rules = [
        "on",
        ">pw",
        "resetkeys",
        "~{n}:*",
        "-@all",
        "+ping",
        "+client|id",
        "+info",
    ];
    for (user, extra) in [
        ("admin", &["~*", "&*", "+@all"][..]),
        ("no-evalsha", &["+eval", "+incrby", "+wait"][..]),
    ] {
        let mut line = vec!["ACL", "SETUSER", user];
        line.extend(rules);
        line.extend(extra);
        assert_eq!(
            server.command(&line).await.unwrap(),
            Reply::Simple("OK".into()),
            "{line:?}"
        );
    }
    server.authenticate_as(Some(("admin", "pw")));
    let captured = Captured::default();
    let writer = captured.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let script = Script::new(ADD);

    let redis = connect_as(&server, "no-evalsha").await;
    for i in 1..=5 {
        let n: i64 = redis
            .eval_script(&script, keys(), vec!["1".into()])
            .await
            .unwrap();
        assert_eq!(n, i);
    }
    assert_eq!(evalsha_refused(&server).await, 1, "EVALSHA tried once");
    assert_eq!(
        calls(&server).await,
        (0, 5),
        "then EVAL only, the refused call's too"
    );
    // The pipeline with WAIT, on the same handle: EVAL straight away.
    let (n, _): (i64, u32) = redis
        .eval_script_then_wait(&script, keys(), vec!["1".into()], 1, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(
        (evalsha_refused(&server).await, calls(&server).await),
        (1, (0, 6))
    );

    // Another handle learns it on its own, through the pipeline this time.
    let other = connect_as(&server, "no-evalsha").await;
    let (n, _): (i64, u32) = other
        .eval_script_then_wait(&script, keys(), vec!["1".into()], 1, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(n, 7);
    assert_eq!(
        (evalsha_refused(&server).await, calls(&server).await),
        (2, (0, 7))
    );
    assert_eq!(counter(&server).await, 7, "one run per call");
    for handle in [&redis, &other] {
        assert_eq!(handle.breaker().state(), State::Closed);
    }

    let log = captured.text();
    println!("{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("+evalsha")).collect();
    assert_eq!(warnings.len(), 2, "one warning per handle: {log}");
    assert!(warnings.iter().all(|l| l.contains("WARN")), "{warnings:?}");
}
