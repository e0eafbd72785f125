//! Auto traits, checked where one file shows them all: every public type is `Send +
//! Sync` (shared by every task that calls a dependency), the futures the wrappers and
//! the file helpers return can be spawned (`Send`, and `'static` where they own what
//! they need), and the error types fit `Box<dyn Error + Send + Sync>`. Most of this is
//! decided at compile time; the spawns show the futures really run on other threads.
#![allow(clippy::unwrap_used)]

mod support;

use std::{error::Error as StdError, io, time::Duration};

use stayfast_core::{
    Bulkhead, CircuitBreaker, Elapsed, Error, Offload, OffloadConfig, OffloadError, Policy, fs::FsError,
};
use support::{Fake, breaker, fixed_retry};

fn assert_send<T: Send>(_: &T) {}
fn assert_send_static<T: Send + 'static>(_: &T) {}
fn assert_send_sync<T: Send + Sync>() {}
fn assert_error<T: StdError + Send + Sync + 'static>() {}

/// The futures `Policy::call*` return can be spawned; every public type is Send + Sync.
#[tokio::test]
async fn policy_futures_are_send_and_static_and_types_are_send_sync() {
    let policy = Policy::builder("fake.op")
        .retry(&fixed_retry(2, 1))
        .breaker(breaker(3))
        .build()
        .unwrap();
    let call = policy.call(|| async { Ok::<_, Fake>(1) });
    assert_send_static(&call);
    let with = policy.call_with_fallback(|_| async { Ok::<_, Fake>(1) }, |e| async move { Err(e) });
    assert_send_static(&with);
    assert_eq!(tokio::spawn(call).await.unwrap().unwrap(), 1);
    drop(policy);
    assert_eq!(tokio::spawn(with).await.unwrap().unwrap().value, 1);

    assert_send_sync::<Policy>();
    assert_send_sync::<stayfast_core::PolicyBuilder>();
    assert_send_sync::<CircuitBreaker>();
    assert_send_sync::<stayfast_core::breaker::Permit<'static>>();
    assert_send_sync::<stayfast_core::breaker::Rejected>();
    assert_send_sync::<stayfast_core::breaker::BreakerBuilder>();
    assert_send_sync::<Bulkhead>();
    assert_send_sync::<stayfast_core::BulkheadPermit<'static>>();
    assert_send_sync::<stayfast_core::RetryBudget>();
    assert_send_sync::<stayfast_core::retry::Backoff>();
    assert_send_sync::<stayfast_core::CallMetrics>();
    assert_send_sync::<stayfast_core::Metered<std::future::Ready<Result<(), Fake>>>>();
    assert_send_sync::<stayfast_core::Timeout<std::future::Ready<()>>>();
    assert_send_sync::<Error<Fake>>();
    assert_send_sync::<stayfast_core::Elapsed>();
    assert_send_sync::<stayfast_core::Attempt>();
    assert_send_sync::<stayfast_core::config::PolicyConfig>();
    assert_send_sync::<stayfast_core::config::ConfigError>();
    assert_send_sync::<stayfast_core::FireAndForget>();
    assert_send_sync::<stayfast_core::ShutdownReport>();
    assert_send_sync::<stayfast_core::LagWatchdog>();
    assert_send_sync::<stayfast_core::fs::AtomicFileWrite>();
    assert_send_sync::<stayfast_core::fs::DurableAppend>();
    assert_send_sync::<stayfast_core::fs::LogReader>();
    assert_send_sync::<stayfast_core::fs::FsError>();
    assert_send_sync::<stayfast_core::fs::ReadLogError>();
    assert_send_sync::<stayfast_core::fs::RealFs>();
    #[cfg(feature = "redis")]
    {
        assert_send_sync::<stayfast_core::redis::Redis>();
        assert_send_sync::<stayfast_core::redis::RedisConfig>();
        assert_send_sync::<stayfast_core::redis::RedisError>();
    }
    #[cfg(feature = "test-util")]
    assert_send_sync::<stayfast_core::test_util::RedisServer>();
}

/// The file futures are `Send`: a cheap clone of the handle moved into a task makes them
/// spawnable (they borrow the handle, like tokio's own file futures).
#[tokio::test]
async fn file_futures_are_send_and_spawnable_with_a_cloned_handle() {
    let policy = Policy::builder("fs.write").build().unwrap();
    let dir = std::env::temp_dir();
    let writer = stayfast_core::fs::AtomicFileWrite::new(policy.clone());
    let appender = stayfast_core::fs::DurableAppend::new(policy.clone());
    let reader = stayfast_core::fs::LogReader::new(policy);
    let (write, append, read) = (
        writer.write(dir.join("never-polled"), b"x".to_vec()),
        appender.append(dir.join("never-polled"), b"x".to_vec()),
        reader.read(dir.join("never-polled"), |_| true),
    );
    assert_send(&write);
    assert_send(&append);
    assert_send(&read);
    drop((write, append, read)); // never polled: nothing touches the disk
    let task = tokio::spawn({
        let reader = reader.clone();
        async move {
            reader
                .read(std::env::temp_dir().join("stayfast-no-such-log"), |_| true)
                .await
        }
    });
    assert!(task.await.unwrap().unwrap().records.is_empty());
}

/// The offload's types are shared across tasks, and its `run` future is `Send`.
#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync::<Offload>();
    assert_send_sync::<OffloadConfig>();
    assert_send_sync::<OffloadError<io::Error>>();
    let mut config = OffloadConfig::default();
    config.max_threads = 1;
    config.max_wait = Duration::ZERO;
    let offload = Offload::new("vector.index", &config).unwrap();
    let policy = Policy::builder("vector.query")
        .timeout(Duration::from_secs(1))
        .idempotent(true)
        .build()
        .unwrap();
    assert_send(&offload.run(&policy, || Ok::<_, io::Error>(1)));
}

/// `?` can turn each error into `Box<dyn Error + Send + Sync>` (or `anyhow::Error`):
/// they are errors, `Send + Sync` and `'static`.
#[test]
fn error_types_are_send_sync_and_static() {
    assert_error::<Error<io::Error>>();
    assert_error::<Error<FsError>>();
    assert_error::<Error<OffloadError>>();
    assert_error::<Elapsed>();
}
