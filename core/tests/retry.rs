//! Retry behaviour under paused time: A4 (backoff bounds) and A5 (which errors are
//! retried) of `docs/testing.md`, with fakes.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use proptest::prelude::*;
use stayfast_core::{
    Error, Policy, RetryBudget,
    breaker::State,
    config::{BudgetConfig, RetryConfig},
    retry::Backoff,
};
use support::{Fake, breaker, fixed_retry};
use tokio::time::Instant;

fn backoff(min_ms: u64, max_ms: u64, multiplier: f64, jitter: bool) -> Backoff {
    let mut c = RetryConfig::default();
    c.min_delay = Duration::from_millis(min_ms);
    c.max_delay = Duration::from_millis(max_ms);
    c.multiplier = multiplier;
    c.jitter = jitter;
    Backoff::new(&c).unwrap()
}

proptest! {
    /// A4: for any settings, every delay lies in [min, max]; nothing overflows or panics,
    /// whatever the attempt number (2049 and u32::MAX included).
    #[test]
    fn backoff_delay_always_within_min_and_max(
        min_ms in 0u64..10_000_000,
        extra_ms in 0u64..10_000_000_000,
        multiplier in 1.0f64..1e9,
        jitter in any::<bool>(),
        retry in prop_oneof![1u32..64, Just(2049u32), Just(u32::MAX), any::<u32>()],
        seed in any::<u64>(),
    ) {
        let b = backoff(min_ms, min_ms + extra_ms, multiplier, jitter).seeded(seed);
        let d = b.delay(retry);
        prop_assert!(d >= Duration::from_millis(min_ms), "{d:?} below min");
        prop_assert!(d <= Duration::from_millis(min_ms + extra_ms), "{d:?} above max");
    }
}

#[test]
fn backoff_without_jitter_grows_exponentially_then_caps() {
    let b = backoff(100, 1_000, 2.0, false);
    let delays: Vec<_> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    assert_eq!(b.delay(2049), Duration::from_millis(1_000));
}

#[test]
fn jitter_is_on_by_default_and_spans_half_the_range() {
    assert!(RetryConfig::default().jitter, "jitter must be on by default");
    let mut c = RetryConfig::default();
    c.min_delay = Duration::from_millis(100);
    c.max_delay = Duration::from_millis(1_100);
    let b = Backoff::new(&c).unwrap().seeded(42);
    // Retry 20 has an uncapped delay far above max, so draws cover [min, max].
    let samples: Vec<_> = (0..1000).map(|_| b.delay(20)).collect();
    let lo = samples.iter().min().unwrap();
    let hi = samples.iter().max().unwrap();
    let span = (*hi - *lo).as_secs_f64() / (c.max_delay - c.min_delay).as_secs_f64();
    println!(
        "jitter span over 1000 samples: {:.1}% of [min, max]",
        span * 100.0
    );
    assert!(span >= 0.5, "jitter spanned only {:.1}%", span * 100.0);
}

#[test]
fn invalid_backoff_settings_are_errors_naming_the_field() {
    for (m, field) in [
        (f64::NAN, "multiplier"),
        (f64::INFINITY, "multiplier"),
        (0.5, "multiplier"),
    ] {
        let mut c = RetryConfig::default();
        c.multiplier = m;
        assert_eq!(Backoff::new(&c).unwrap_err().field(), field);
    }
    let mut c = RetryConfig::default();
    c.max_delay = Duration::from_millis(1);
    assert_eq!(Backoff::new(&c).unwrap_err().field(), "max_delay");
}

/// A4: under paused time the elapsed time of a retried call is exactly the sum of the
/// delays the hook was told about (to tokio's 1 ms timer resolution).
#[tokio::test(start_paused = true)]
async fn elapsed_equals_sum_of_backoff_delays() {
    let delays = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&delays);
    let mut retry = RetryConfig::default();
    retry.max_attempts = 6;
    retry.budget = None;
    let policy = Policy::builder("fake.get")
        .retry(&retry)
        .jitter_seed(7)
        .on_retry(move |e| seen.lock().unwrap().push(e.delay))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = policy
        .call(|| async { Err::<(), _>(Fake::Busy) })
        .await
        .unwrap_err();
    let total: Duration = delays.lock().unwrap().iter().sum();
    assert_eq!(err.attempts(), Some(6));
    assert_eq!(delays.lock().unwrap().len(), 5);
    // tokio's timer has 1 ms resolution: each sleep ends on the next millisecond.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= total && elapsed <= total + Duration::from_millis(5),
        "{elapsed:?} vs {total:?}"
    );
}

async fn attempts_for(kind: Fake, idempotent: bool) -> (u32, Result<(), Error<Fake>>) {
    let count = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&count);
    let policy = Policy::builder("fake.op")
        .retry(&fixed_retry(3, 10))
        .idempotent(idempotent)
        .build()
        .unwrap();
    let result = policy
        .call(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Err::<(), _>(kind) }
        })
        .await;
    (count.load(Ordering::SeqCst), result)
}

/// A5 with fakes: which errors are retried, for idempotent and non-idempotent operations.
#[tokio::test(start_paused = true)]
async fn retry_error_classes() {
    use Fake::*;
    // (kind, attempts when idempotent, attempts when not)
    let table = [
        (ConnectionRefused, 3, 3), // definitely not applied: safe to retry either way
        (Loading, 3, 3),
        (Busy, 3, 3),
        (TryAgain, 3, 3),
        (RetryAfterMs(50), 3, 3),
        (ConnectionReset, 3, 1), // may have been applied: only idempotent operations retry
        (NoAuth, 1, 1),
        (WrongPass, 1, 1),
        (NoPerm, 1, 1),
        (Oom, 1, 1),
        (WrongType, 1, 1),
        (NotFound, 1, 1),
        (BadArgument, 1, 1),
        (NilTimeout, 1, 1),
    ];
    for (kind, idempotent_attempts, other_attempts) in table {
        let (n, result) = attempts_for(kind, true).await;
        assert_eq!(n, idempotent_attempts, "{kind:?}, idempotent");
        assert_eq!(result.unwrap_err().inner(), Some(&kind));
        let (n, result) = attempts_for(kind, false).await;
        assert_eq!(n, other_attempts, "{kind:?}, not idempotent");
        let err = result.unwrap_err();
        if kind == ConnectionReset {
            assert!(err.is_outcome_unknown(), "{kind:?}: {err}");
        } else {
            assert_eq!(err.inner(), Some(&kind));
        }
    }
}

/// A5 with fakes: which errors count against the breaker.
#[tokio::test(start_paused = true)]
async fn breaker_verdict_by_error_class() {
    use Fake::*;
    let unhealthy = [
        ConnectionRefused,
        ConnectionReset,
        Loading,
        Busy,
        TryAgain,
        NoAuth,
        WrongPass,
        NoPerm,
        Oom,
    ];
    let healthy = [WrongType, NotFound, BadArgument, NilTimeout];
    for (kinds, opens) in [(&unhealthy[..], true), (&healthy[..], false)] {
        for &kind in kinds {
            let breaker = breaker(1);
            let policy = Policy::builder("fake.op")
                .breaker(breaker.clone())
                .build()
                .unwrap();
            let _ = policy.call(|| async move { Err::<(), _>(kind) }).await;
            assert_eq!(breaker.state() == State::Open, opens, "{kind:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn server_hinted_delay_replaces_the_backoff() {
    let delays = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&delays);
    let policy = Policy::builder("fake.op")
        .retry(&fixed_retry(2, 10))
        .on_retry(move |e| seen.lock().unwrap().push(e.delay))
        .build()
        .unwrap();
    let start = Instant::now();
    let _ = policy
        .call(|| async { Err::<(), _>(Fake::RetryAfterMs(700)) })
        .await;
    assert_eq!(*delays.lock().unwrap(), [Duration::from_millis(700)]);
    assert_eq!(start.elapsed(), Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_and_open_circuits_are_not_retried() {
    let breaker = breaker(1);
    let policy = Policy::builder("fake.op")
        .retry(&fixed_retry(5, 10))
        .idempotent(true)
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let err = policy
        .call(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Fake::Oom) }
        })
        .await
        .unwrap_err();
    assert_eq!((calls.load(Ordering::SeqCst), err.attempts()), (1, Some(1)));
    // The OOM opened the breaker: the next call is rejected without an attempt, once.
    let c = Arc::clone(&calls);
    let err = policy
        .call(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Fake>(()) }
        })
        .await
        .unwrap_err();
    assert!(err.is_circuit_open(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A timed-out attempt of an operation not declared idempotent may have been applied:
/// the call ends with OutcomeUnknown after one attempt, never a silent second write.
#[tokio::test(start_paused = true)]
async fn non_idempotent_timeout_is_outcome_unknown_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let policy = Policy::builder("fake.set")
        .timeout(Duration::from_millis(100))
        .retry(&fixed_retry(3, 10))
        .build()
        .unwrap();
    let err = policy
        .call(move || {
            c.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), Fake>>()
        })
        .await
        .unwrap_err();
    assert!(err.is_outcome_unknown(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(err.to_string().contains("fake.set"));
}

#[tokio::test(start_paused = true)]
async fn idempotent_timeout_is_retried_and_reports_the_bound() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let policy = Policy::builder("fake.get")
        .timeout(Duration::from_millis(100))
        .retry(&fixed_retry(3, 10))
        .idempotent(true)
        .build()
        .unwrap();
    let start = Instant::now();
    let err = policy
        .call(move || {
            c.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), Fake>>()
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "fake.get timed out after 100ms");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(320));
}

/// Max elapsed: a retry whose backoff would end at or past the limit is not started.
#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_before_the_deadline() {
    let mut retry = fixed_retry(100, 300);
    retry.max_elapsed = Some(Duration::from_secs(1));
    let policy = Policy::builder("fake.op").retry(&retry).build().unwrap();
    let start = Instant::now();
    let err = policy
        .call(|| async { Err::<(), _>(Fake::Busy) })
        .await
        .unwrap_err();
    // Attempts at 0, 300, 600, 900 ms; a fifth would start at 1200 ms > 1 s.
    assert_eq!(err.attempts(), Some(4));
    assert_eq!(start.elapsed(), Duration::from_millis(900));
}

/// The overall deadline bounds every attempt and backoff together.
#[tokio::test(start_paused = true)]
async fn deadline_bounds_all_attempts() {
    let policy = Policy::builder("fake.get")
        .timeout(Duration::from_millis(400))
        .deadline(Duration::from_secs(1))
        .retry(&fixed_retry(10, 50))
        .idempotent(true)
        .build()
        .unwrap();
    let start = Instant::now();
    let err = policy
        .call(std::future::pending::<Result<(), Fake>>)
        .await
        .unwrap_err();
    // 0–400 attempt, 50 ms backoff, 450–850 attempt, 50 ms, 900–1000 cut by the deadline.
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.to_string(), "fake.get timed out after 1s");
}

/// With budget ratio r, N failing calls make at most N(1 + r) + min_retries attempts.
#[tokio::test(start_paused = true)]
async fn budget_bounds_attempts_across_calls() {
    let mut budget = BudgetConfig::default();
    budget.ratio = 0.1;
    budget.min_retries = 5;
    let shared = RetryBudget::new(&budget).unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let policy = Policy::builder("fake.op")
        .retry(&fixed_retry(10, 1))
        .retry_budget(shared.clone())
        .build()
        .unwrap();
    let n = 1000u32;
    let mut exhausted = 0;
    for _ in 0..n {
        let a = Arc::clone(&attempts);
        let result = policy
            .call(move || {
                a.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(Fake::Busy) }
            })
            .await;
        exhausted += u32::from(result.unwrap_err().is_budget_exhausted());
    }
    let made = attempts.load(Ordering::SeqCst);
    let bound = (f64::from(n) * 1.1) as u32 + 5;
    println!("{n} failing calls made {made} attempts (bound {bound}), {exhausted} ended BudgetExhausted");
    assert!(made <= bound, "{made} attempts > {bound}");
    assert!(exhausted > 0);
}

#[tokio::test(start_paused = true)]
async fn budget_exhausted_carries_the_last_error() {
    let mut budget = BudgetConfig::default();
    budget.min_retries = 0;
    budget.ratio = 0.01;
    let mut retry = fixed_retry(3, 1);
    retry.budget = Some(budget);
    let policy = Policy::builder("fake.op").retry(&retry).build().unwrap();
    let err = policy
        .call(|| async { Err::<(), _>(Fake::Busy) })
        .await
        .unwrap_err();
    assert!(err.is_budget_exhausted());
    assert_eq!(err.inner(), Some(&Fake::Busy));
    assert_eq!(err.outcome().as_str(), "budget_exhausted");
}

/// A closure given to the builder overrides the error type's own classification.
#[tokio::test(start_paused = true)]
async fn a_policy_closure_overrides_classify() {
    let attempts = Arc::new(AtomicU32::new(0));
    let a = Arc::clone(&attempts);
    let policy = Policy::builder("fake.op")
        .retry(&fixed_retry(3, 10))
        .classify(|e: &Fake| match e {
            Fake::Busy => stayfast_core::Verdict::permanent(), // this operation: never retry BUSY
            other => stayfast_core::Classify::classify(other),
        })
        .build()
        .unwrap();
    let _ = policy
        .call(move || {
            a.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Fake::Busy) }
        })
        .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

/// `std::io::Error` by kind: a refused connection is transient, a reset, broken pipe or
/// EOF indeterminate (the request may have been applied), bad input the caller's, full
/// or read-only storage permanent.
#[test]
fn io_errors_are_classified_by_kind() {
    use stayfast_core::{Classify, Verdict};
    use std::io::ErrorKind::*;
    for (kind, verdict) in [
        (ConnectionRefused, Verdict::transient()),
        (TimedOut, Verdict::timed_out()),
        (ConnectionReset, Verdict::indeterminate()),
        (BrokenPipe, Verdict::indeterminate()),
        (UnexpectedEof, Verdict::indeterminate()),
        (NotFound, Verdict::caller_error()),
        (InvalidInput, Verdict::caller_error()),
        (PermissionDenied, Verdict::caller_error()),
        (StorageFull, Verdict::permanent()),
        (ReadOnlyFilesystem, Verdict::permanent()),
        (Other, Verdict::permanent()),
    ] {
        assert_eq!(std::io::Error::from(kind).classify(), verdict, "{kind:?}");
    }
}

/// A client library's own deadline (handed in through `Attempt`) counts as a timeout:
/// `Error::Timeout` for an idempotent operation after its retries, `OutcomeUnknown`
/// for one that is not.
#[tokio::test(start_paused = true)]
async fn a_client_side_timeout_is_reported_like_our_own() {
    let timed_out = || async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::TimedOut)) };
    let read = Policy::builder("fake.get")
        .timeout(Duration::from_millis(250))
        .retry(&fixed_retry(2, 10))
        .idempotent(true)
        .build()
        .unwrap();
    let err = read.call(timed_out).await.unwrap_err();
    assert_eq!(err.to_string(), "fake.get timed out after 250ms");
    let write = Policy::builder("fake.set")
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    assert!(write.call(timed_out).await.unwrap_err().is_outcome_unknown());
}
