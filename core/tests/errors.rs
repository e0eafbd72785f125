//! Error messages (issue #12 item 11): each cause is printed once — a level's `Display`
//! shows only itself and `source()` returns the cause — `Error<E>` goes into `anyhow`
//! and `Box<dyn Error + Send + Sync>` with `?`, and a timed-out non-idempotent call
//! keeps its bound.
#![allow(clippy::unwrap_used)]

mod support;

use std::{error::Error as StdError, io, time::Duration};

use stayfast_core::{
    Error, ErrorChain, Name, OffloadError, Policy, TimeoutExt, Verdict,
    config::ConfigError,
    fs::{FsError, Step},
};
use support::Fake;

/// Walks the `source()` chain of `e` and fails if any level's message contains the
/// next level's message (the cause printed twice). Returns the chain's messages.
fn assert_each_cause_once(e: &(dyn StdError + 'static)) -> Vec<String> {
    let mut levels = vec![e.to_string()];
    let mut level = e;
    while let Some(next) = level.source() {
        let (shown, below) = (level.to_string(), next.to_string());
        assert!(
            below.is_empty() || !shown.contains(&below),
            "{shown:?} repeats its source {below:?} (chain of {e:?})"
        );
        levels.push(below);
        level = next;
    }
    levels
}

fn io_error() -> io::Error {
    io::Error::other("disk on fire")
}

fn inner<E>(source: E) -> Error<E> {
    Error::Inner {
        operation: Name::from("fs.write"),
        source,
        attempts: 2,
    }
}

fn fs_error() -> FsError {
    FsError::new("/data/t.jsonl", Step::Write, io_error())
}

#[test]
fn every_error_prints_each_cause_once() {
    let chain = assert_each_cause_once(&inner(io_error()));
    assert_eq!(chain, ["fs.write failed after 2 attempts", "disk on fire"]);

    let chain = assert_each_cause_once(&inner(fs_error()));
    assert_eq!(
        chain,
        [
            "fs.write failed after 2 attempts",
            "write /data/t.jsonl",
            "disk on fire"
        ]
    );

    let budget = Error::BudgetExhausted {
        last: Box::new(inner(fs_error())),
    };
    assert_eq!(assert_each_cause_once(&budget).len(), 4);

    // An offloaded closure's error is transparent: shown once, by the closure's error.
    let chain = assert_each_cause_once(&inner(OffloadError::Failed(fs_error())));
    assert_eq!(
        chain,
        [
            "fs.write failed after 2 attempts",
            "write /data/t.jsonl",
            "disk on fire"
        ]
    );
    assert_each_cause_once(&inner(OffloadError::<io::Error>::Panicked("boom".into())));

    for leaf in [
        Error::<io::Error>::Timeout {
            operation: Name::from("redis.get"),
            after: Duration::from_secs(2),
        },
        Error::OutcomeUnknown {
            operation: Name::from("redis.set"),
            after: Some(Duration::from_millis(250)),
        },
        Error::Shed {
            target: Name::from("redis.main"),
        },
    ] {
        assert_eq!(assert_each_cause_once(&leaf).len(), 1);
    }
    assert_each_cause_once(&ConfigError::new("pool_size", "must be at least 1"));
}

#[cfg(feature = "redis")]
#[test]
fn redis_errors_print_each_cause_once() {
    use fred::error::{Error as FredError, ErrorKind};
    let e: stayfast_core::redis::RedisError = inner(FredError::new(ErrorKind::IO, "connection reset"));
    let chain = assert_each_cause_once(&e);
    assert_eq!(chain.len(), 2);
    assert_eq!(chain.iter().filter(|m| m.contains("connection reset")).count(), 1);
}

/// anyhow's `{:#}` walks the chain: the io error appears once (it appeared three times
/// when `Error` and `FsError` each printed their source too).
#[test]
fn anyhow_alternate_shows_the_io_error_once() {
    let e = anyhow::Error::new(inner(fs_error()));
    let shown = format!("{e:#}");
    assert_eq!(shown.matches("disk on fire").count(), 1, "{shown}");
    assert_eq!(
        shown,
        "fs.write failed after 2 attempts: write /data/t.jsonl: disk on fire"
    );
    assert_eq!(ErrorChain(e.as_ref()).to_string(), shown);
}

// Compile tests: `?` converts `Error<E>` for the usual `E`.
fn _into_anyhow(r: Result<(), Error<FsError>>, io: Result<(), Error<io::Error>>) -> anyhow::Result<()> {
    r?;
    io?;
    Ok(())
}

fn _into_box(r: Result<(), Error<FsError>>) -> Result<(), Box<dyn StdError + Send + Sync>> {
    r?;
    Ok(())
}

fn _offload_into_anyhow(r: Result<(), Error<OffloadError>>) -> anyhow::Result<()> {
    r?;
    Ok(())
}

#[cfg(feature = "redis")]
fn _redis_into_anyhow(r: Result<(), stayfast_core::redis::RedisError>) -> anyhow::Result<()> {
    r?;
    Ok(())
}

#[test]
fn errors_convert_with_the_question_mark() {
    let failed = _into_anyhow(Err(inner(fs_error())), Ok(())).unwrap_err();
    assert!(failed.downcast_ref::<Error<FsError>>().is_some());
    let boxed = _into_box(Err(inner(fs_error()))).unwrap_err();
    assert_eq!(boxed.to_string(), "fs.write failed after 2 attempts");
}

/// A non-idempotent call that times out keeps its bound in `OutcomeUnknown`.
#[tokio::test(start_paused = true)]
async fn a_timed_out_write_keeps_its_bound() {
    let policy = Policy::builder("fake.set")
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let err = policy
        .call(std::future::pending::<Result<(), Fake>>)
        .await
        .unwrap_err();
    assert!(err.is_outcome_unknown(), "{err}");
    assert!(err.timed_out());
    assert_eq!(err.timed_out_after(), Some(Duration::from_millis(250)));
    assert!(err.to_string().contains("timed out after 250ms"), "{err}");

    // The client's own timeout, when the policy handed in no deadline: the bound is how
    // long the attempt ran, never zero.
    let policy = Policy::builder("fake.set")
        .classify(|_: &Fake| Verdict::timed_out())
        .build()
        .unwrap();
    let err = policy
        .call(|| async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Err::<(), _>(Fake::Busy)
        })
        .await
        .unwrap_err();
    assert!(err.is_outcome_unknown(), "{err}");
    assert_eq!(err.timed_out_after(), Some(Duration::from_millis(250)), "{err}");
    assert!(!err.to_string().contains("0ns"), "{err}");

    // A lost connection is no timeout.
    let err = Policy::builder("fake.set")
        .build()
        .unwrap()
        .call(|| async { Err::<(), _>(Fake::ConnectionReset) })
        .await
        .unwrap_err();
    assert!(err.is_outcome_unknown() && !err.timed_out(), "{err}");

    // A timeout of the idempotent kind says so too.
    let err = std::future::pending::<()>()
        .timeout(Duration::from_millis(5))
        .await
        .unwrap_err();
    assert_eq!(err.after(), Duration::from_millis(5));
}
