//! A policy call's first attempt, which runs outside the retry loop when no bulkhead,
//! offload bound, backstop or tracing subscriber is involved: its metrics, its breaker
//! permit and its cancellation must be those of the loop.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use metrics_util::{
    MetricKind,
    debugging::{DebugValue, DebuggingRecorder, Snapshotter},
};
use stayfast_core::{CircuitBreaker, Error, Policy, breaker::State, config::BreakerConfig};
use support::{Fake, breaker, fixed_retry};
use tokio::time::advance;

/// What a policy on `fake.op` recorded: `(outcome, n)` for every outcome seen, the
/// attempts, the retries and the number of durations.
#[derive(Debug, PartialEq, Eq)]
struct Recorded {
    outcomes: Vec<(String, u64)>,
    attempts: u64,
    retries: u64,
    durations: usize,
}

fn recorded(snapshotter: &Snapshotter) -> Recorded {
    let mut r = Recorded {
        outcomes: Vec::new(),
        attempts: 0,
        retries: 0,
        durations: 0,
    };
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = (key.kind(), key.key());
        match (kind, key.name(), value) {
            (MetricKind::Counter, "stayfast_calls_total", DebugValue::Counter(n)) if n > 0 => {
                let outcome = key.labels().find(|l| l.key() == "outcome").unwrap();
                r.outcomes.push((outcome.value().to_owned(), n));
            }
            (MetricKind::Counter, "stayfast_attempts_total", DebugValue::Counter(n)) => r.attempts = n,
            (MetricKind::Counter, "stayfast_retries_total", DebugValue::Counter(n)) => r.retries = n,
            (MetricKind::Histogram, "stayfast_call_duration_seconds", DebugValue::Histogram(d)) => {
                r.durations = d.len();
            }
            _ => {}
        }
    }
    r
}

fn expect(outcome: &str, attempts: u64, retries: u64) -> Recorded {
    Recorded {
        outcomes: vec![(outcome.to_owned(), 1)],
        attempts,
        retries,
        durations: 1,
    }
}

fn policy(breaker: &CircuitBreaker) -> Policy {
    Policy::builder("fake.op")
        .timeout(Duration::from_secs(1))
        .deadline(Duration::from_secs(5))
        .retry(&fixed_retry(3, 10))
        .idempotent(true)
        .breaker(breaker.clone())
        .build()
        .unwrap()
}

/// A first attempt that was pending when the caller gave up: `cancelled` once, its
/// attempt counted, the breaker untouched.
#[tokio::test(start_paused = true)]
async fn a_call_dropped_during_its_first_attempt_records_cancelled_once() {
    let recorder = DebuggingRecorder::new();
    let s = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let breaker = breaker(1);
    let policy = policy(&breaker);
    let call = policy.call(std::future::pending::<Result<(), Fake>>);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err()
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(recorded(&s), expect("cancelled", 1, 0));
    assert_eq!(
        breaker.state(),
        State::Closed,
        "a cancelled attempt is no failure"
    );
}

/// Dropped during the backoff that follows a failed first attempt: the loop took the
/// call over and records `cancelled` once; nothing is counted twice.
#[tokio::test(start_paused = true)]
async fn a_call_dropped_during_the_backoff_after_its_first_attempt_records_cancelled_once() {
    let recorder = DebuggingRecorder::new();
    let s = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let breaker = breaker(5);
    let policy = policy(&breaker);
    let call = policy.call(|| async { Err::<(), _>(Fake::Busy) });
    assert!(
        tokio::time::timeout(Duration::from_millis(5), call)
            .await
            .is_err()
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(recorded(&s), expect("cancelled", 1, 1));
}

/// A first attempt that fails (at once, or after a `Pending`) is retried by the loop,
/// which numbers the next attempt 2 and records the call once.
#[tokio::test(start_paused = true)]
async fn a_failed_first_attempt_is_retried_and_recorded_once() {
    let recorder = DebuggingRecorder::new();
    let s = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let breaker = breaker(5);
    let policy = policy(&breaker);
    for pending_first in [false, true] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let value = policy
            .call_with(move |attempt| {
                log.lock().unwrap().push(attempt.number);
                async move {
                    if pending_first {
                        tokio::task::yield_now().await;
                    }
                    if attempt.is_retry() {
                        Ok(attempt.number)
                    } else {
                        Err(Fake::Busy)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(value, 2);
        assert_eq!(*seen.lock().unwrap(), [1, 2]);
        assert_eq!(
            recorded(&s),
            expect("success", 2, 1),
            "pending first: {pending_first}"
        );
    }
}

/// A first attempt that times out under its own bound counts as a breaker failure and
/// ends the call as a timeout once the retries are spent.
#[tokio::test(start_paused = true)]
async fn a_first_attempt_that_times_out_is_a_breaker_failure() {
    let recorder = DebuggingRecorder::new();
    let s = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let breaker = breaker(1);
    let policy = Policy::builder("fake.op")
        .timeout(Duration::from_millis(100))
        .idempotent(true)
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let err = policy
        .call(std::future::pending::<Result<(), Fake>>)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.to_string(), "fake.op timed out after 100ms");
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(recorded(&s), expect("timeout", 1, 0));
}

/// A call the breaker refuses makes no attempt and is recorded as `rejected` once.
#[tokio::test(start_paused = true)]
async fn a_rejected_call_makes_no_attempt() {
    let recorder = DebuggingRecorder::new();
    let s = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let breaker = CircuitBreaker::new("fake.main", &BreakerConfig::default()).unwrap();
    let policy = policy(&breaker);
    breaker.force_open();
    let err = policy.call(|| async { Ok::<_, Fake>(()) }).await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err}");
    assert_eq!(recorded(&s), expect("rejected", 0, 0));
}
