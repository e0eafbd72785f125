//! Policy composition, cancellation, fallback and metrics (A6, A7, B3, B5 of
//! `docs/testing.md`).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use metrics_util::{
    CompositeKey, MetricKind,
    debugging::{DebugValue, DebuggingRecorder},
};
use stayfast_core::{
    Bulkhead, CircuitBreaker, Error, FallbackReason, Policy, Served, Source,
    breaker::State,
    config::{BreakerConfig, BulkheadConfig},
};
use support::{Fake, breaker, fixed_retry};
use tokio::time::{Instant, advance};

type Series = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The value of one series in a snapshot, by name and label pairs.
fn value<'a>(
    snapshot: &'a Series,
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let key_kind = key.kind();
        let key = key.key();
        let matches = key_kind == kind
            && key.name() == name
            && labels
                .iter()
                .all(|(n, v)| key.labels().any(|l| l.key() == *n && l.value() == *v));
        matches.then_some(value)
    })
}

fn count(s: &Series, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(s, MetricKind::Counter, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

fn outcome(s: &Series, outcome: &str) -> u64 {
    count(
        s,
        "stayfast_calls_total",
        &[("operation", "fake.op"), ("outcome", outcome)],
    )
}

/// B5: the description lists the layers in the enforced order, whatever order the
/// builder was called in.
#[test]
fn composition_order_is_fixed_by_the_builder() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let bulkhead = Bulkhead::new("fake.main", &BulkheadConfig::default()).unwrap();
    let policy = Policy::builder("fake.op")
        .breaker(breaker(5))
        .timeout(Duration::from_millis(100))
        .bulkhead(bulkhead)
        .retry(&fixed_retry(3, 10))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(
        policy.to_string(),
        "Metered(Deadline(Retry(Bulkhead(CircuitBreaker(Timeout(fake.op))))))"
    );
    let bare = Policy::builder("fake.op").without_metrics().build().unwrap();
    assert_eq!(bare.to_string(), "fake.op");
    assert_eq!(policy.target().as_str(), "fake.main");
}

/// B5: the breaker sits under the retry, so it counts every attempt.
#[tokio::test(start_paused = true)]
async fn breaker_counts_every_attempt() {
    let breaker = breaker(3);
    let policy = Policy::builder("fake.op")
        .retry(&fixed_retry(3, 10))
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let err = policy
        .call(|| async { Err::<(), _>(Fake::Busy) })
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(breaker.state(), State::Open, "three attempts are three failures");
}

/// The retry stops at the open circuit instead of retrying against it.
#[tokio::test(start_paused = true)]
async fn retry_stops_when_its_attempts_open_the_circuit() {
    let breaker = breaker(2);
    let attempts = Arc::new(AtomicU32::new(0));
    let a = Arc::clone(&attempts);
    let policy = Policy::builder("fake.op")
        .retry(&fixed_retry(5, 10))
        .breaker(breaker)
        .build()
        .unwrap();
    let err = policy
        .call(move || {
            a.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Fake::Busy) }
        })
        .await
        .unwrap_err();
    assert!(err.is_circuit_open(), "{err}");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

/// A6: a caller that gives up is not a failure: the breaker does not count
/// it, and it is not retried.
#[tokio::test(start_paused = true)]
async fn cancellation_is_not_a_failure() {
    let breaker = breaker(1);
    let attempts = Arc::new(AtomicU32::new(0));
    let a = Arc::clone(&attempts);
    let policy = Policy::builder("fake.op")
        .timeout(Duration::from_secs(10))
        .retry(&fixed_retry(3, 10))
        .idempotent(true)
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let call = policy.call(move || {
        a.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<(), Fake>>()
    });
    // The caller's own, shorter timeout fires first.
    let caller = tokio::time::timeout(Duration::from_millis(50), call).await;
    assert!(caller.is_err());
    advance(Duration::from_secs(60)).await;
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

/// A dropped half-open probe gives its permit back; the next caller may probe.
#[tokio::test(start_paused = true)]
async fn dropped_probe_returns_its_permit() {
    let breaker = breaker(1);
    let policy = Policy::builder("fake.op")
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let _ = policy.call(|| async { Err::<(), _>(Fake::Busy) }).await;
    assert_eq!(breaker.state(), State::Open);
    advance(Duration::from_secs(1)).await;
    let probe = policy.call(std::future::pending::<Result<(), Fake>>);
    assert!(
        tokio::time::timeout(Duration::from_millis(1), probe)
            .await
            .is_err()
    );
    assert_eq!(breaker.state(), State::HalfOpen);
    let ok = policy.call(|| async { Ok::<_, Fake>(7) }).await.unwrap();
    assert_eq!(ok, 7);
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn fallback_serves_when_the_primary_fails_or_the_circuit_is_open() {
    let breaker = breaker(1);
    let policy = Policy::builder("fake.op")
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let from_file = |_e: Error<Fake>| async { Ok::<_, Error<Fake>>("from file") };
    let served = policy
        .call_with_fallback(|_| async { Err::<&str, _>(Fake::Busy) }, from_file)
        .await
        .unwrap();
    assert_eq!(
        served,
        Served {
            value: "from file",
            source: Source::Fallback(FallbackReason::Failure)
        }
    );
    let served = policy
        .call_with_fallback(|_| async { Ok::<_, Fake>("from redis") }, from_file)
        .await
        .unwrap();
    assert_eq!(
        served.source,
        Source::Fallback(FallbackReason::Rejected),
        "circuit is open"
    );
    breaker.reset();
    let served = policy
        .call_with_fallback(|_| async { Ok::<_, Fake>("from redis") }, from_file)
        .await
        .unwrap();
    assert_eq!(
        served,
        Served {
            value: "from redis",
            source: Source::Primary
        }
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_may_pass_the_error_on() {
    let policy = Policy::builder("fake.op").build().unwrap();
    let err = policy
        .call_with_fallback(
            |_| async { Err::<(), _>(Fake::WrongType) },
            |e| async move {
                if e.inner() == Some(&Fake::WrongType) {
                    Err(e)
                } else {
                    Ok(())
                }
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.into_inner(), Some(Fake::WrongType));
}

/// Every outcome (success, failure, timeout, unknown, rejected, shed, …) is counted under
/// its label, exactly once per call;
/// attempts and retries are counted per attempt.
#[tokio::test(start_paused = true)]
async fn outcomes_attempts_and_retries_are_counted() {
    let recorder = DebuggingRecorder::new();
    let s = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let breaker = CircuitBreaker::new("fake.main", &{
        let mut c = BreakerConfig::default();
        c.consecutive_failures = Some(100);
        c.failure_rate = None;
        c
    })
    .unwrap();
    let bulkhead = Bulkhead::new("fake.main", &{
        let mut c = BulkheadConfig::default();
        c.max_concurrent = 1;
        c
    })
    .unwrap();
    let policy = Policy::builder("fake.op")
        .timeout(Duration::from_millis(100))
        .retry(&fixed_retry(2, 10))
        .breaker(breaker.clone())
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap();
    policy.call(|| async { Ok::<_, Fake>(()) }).await.unwrap();
    let _ = policy.call(|| async { Err::<(), _>(Fake::Busy) }).await; // 2 attempts, 1 retry
    let _ = policy.call(std::future::pending::<Result<(), Fake>>).await; // unknown
    let _ = policy
        .call_with_fallback(|_| async { Err::<(), _>(Fake::Oom) }, |_| async { Ok(()) })
        .await;
    breaker.force_open();
    let _ = policy.call(|| async { Ok::<_, Fake>(()) }).await; // rejected
    breaker.reset();
    let held = bulkhead.acquire().await.unwrap();
    let _ = policy.call(|| async { Ok::<_, Fake>(()) }).await; // shed
    drop(held);
    let cancelled = policy.call(std::future::pending::<Result<(), Fake>>);
    let _ = tokio::time::timeout(Duration::from_millis(10), cancelled).await;

    // One snapshot: taking it drains the recorder.
    let s = s.snapshot().into_vec();
    for (label, n) in [
        ("success", 1),
        ("failure", 1),
        ("unknown", 1),
        ("fallback", 1),
        ("rejected", 1),
        ("shed", 1),
        ("cancelled", 1),
        ("timeout", 0),
        ("budget_exhausted", 0),
    ] {
        assert_eq!(outcome(&s, label), n, "outcome {label}");
    }
    let labels = [("operation", "fake.op"), ("target", "fake.main")];
    assert_eq!(count(&s, "stayfast_attempts_total", &labels), 6);
    assert_eq!(count(&s, "stayfast_retries_total", &labels), 1);
    assert_eq!(count(&s, "stayfast_fallbacks_total", &[("reason", "failure")]), 1);
    match value(
        &s,
        MetricKind::Histogram,
        "stayfast_call_duration_seconds",
        &labels,
    ) {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 7),
        other => panic!("no duration histogram: {other:?}"),
    }
}

/// A call's duration runs from its start to its end, whatever the breaker reads on the
/// way: with a slow-call rule (whose attempt-end reading the call's end reuses), a
/// call that fails, backs off and is then rejected counts the backoff, and a fallback
/// counts in the duration of the call it serves.
#[tokio::test(start_paused = true)]
async fn call_duration_spans_backoffs_and_fallbacks_under_a_slow_call_rule() {
    let recorder = DebuggingRecorder::new();
    let s = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let breaker = CircuitBreaker::new("fake.main", &{
        let mut c = BreakerConfig::default();
        c.consecutive_failures = Some(1);
        c.failure_rate = None;
        c.slow_call_duration = Some(Duration::from_secs(1));
        c
    })
    .unwrap();
    let policy = Policy::builder("fake.op")
        .timeout(Duration::from_secs(1))
        .retry(&fixed_retry(2, 10))
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let after = |ms, result: Result<(), Fake>| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        result
    };
    policy.call(|| after(30, Ok(()))).await.unwrap();
    // Fails after 20 ms and opens the circuit; the retry 10 ms later is rejected.
    let err = policy.call(|| after(20, Err(Fake::Busy))).await.unwrap_err();
    assert!(err.is_circuit_open(), "{err}");
    breaker.reset();
    // Fails after 20 ms, not retried; the fallback takes 40 ms more.
    let served = policy
        .call_with_fallback(
            |_| after(20, Err(Fake::WrongType)),
            |_| async {
                tokio::time::sleep(Duration::from_millis(40)).await;
                Ok(())
            },
        )
        .await
        .unwrap();
    assert_eq!(served.source, Source::Fallback(FallbackReason::Failure));

    let s = s.snapshot().into_vec();
    let labels = [("operation", "fake.op"), ("target", "fake.main")];
    match value(
        &s,
        MetricKind::Histogram,
        "stayfast_call_duration_seconds",
        &labels,
    ) {
        Some(DebugValue::Histogram(samples)) => {
            let ms: Vec<u64> = samples.iter().map(|v| (v.0 * 1e3).round() as u64).collect();
            assert_eq!(ms, [30, 30, 60]);
        }
        other => panic!("no duration histogram: {other:?}"),
    }
}

/// B3: a storm of callers with tiny timeouts and random aborts over inner behaviours
/// {Ok, Err, Slow, Never}: no slot or probe permit leaks.
#[tokio::test(start_paused = true)]
async fn cancellation_storm_leaks_no_permits() {
    let mut bc = BreakerConfig::default();
    bc.consecutive_failures = Some(3);
    bc.failure_rate = None;
    bc.open_for = Duration::from_millis(20);
    bc.max_open_for = Duration::from_millis(20);
    let breaker = CircuitBreaker::new("fake.main", &bc).unwrap();
    let mut kc = BulkheadConfig::default();
    kc.max_concurrent = 8;
    kc.max_wait = Duration::from_millis(5);
    let bulkhead = Bulkhead::new("fake.main", &kc).unwrap();
    let policy = Policy::builder("fake.op")
        .timeout(Duration::from_millis(30))
        .retry(&fixed_retry(3, 2))
        .idempotent(true)
        .breaker(breaker.clone())
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap();
    let mut rng = support::XorShift::new(0x2545_F491_4F6C_DD1D);
    let mut next = move || rng.next_u64();
    let mut tasks = Vec::new();
    for i in 0..2000u64 {
        let behaviour = next() % 4;
        let caller_timeout = Duration::from_millis(next() % 40);
        let abort_after = Duration::from_millis(next() % 40);
        let policy = policy.clone();
        let task = tokio::spawn(async move {
            let call = policy.call(move || async move {
                match behaviour {
                    0 => Ok(i),
                    1 => Err(Fake::Busy),
                    2 => {
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        Ok(i)
                    }
                    _ => std::future::pending().await,
                }
            });
            let _ = tokio::time::timeout(caller_timeout, call).await;
        });
        let handle = task.abort_handle();
        tokio::spawn(async move {
            tokio::time::sleep(abort_after).await;
            handle.abort();
        });
        tasks.push(task);
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    advance(Duration::from_secs(1)).await;
    assert_eq!(bulkhead.available(), 8, "every bulkhead slot came back");
    // Whatever state the storm left, the breaker still admits a probe or a call.
    let ok = policy.call(|| async { Ok::<_, Fake>(1) }).await;
    assert!(ok.is_ok(), "{:?} in state {:?}", ok.err(), breaker.state());
    assert_eq!(bulkhead.available(), 8);
}

/// A7: paused-time tests use fakes; the paused clock only moves when every task waits.
#[tokio::test(start_paused = true)]
async fn attempt_deadline_is_handed_to_the_operation() {
    let policy = Policy::builder("fake.op")
        .timeout(Duration::from_millis(300))
        .deadline(Duration::from_millis(500))
        .retry(&fixed_retry(3, 100))
        .idempotent(true)
        .build()
        .unwrap();
    let start = Instant::now();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let _ = policy
        .call_with(move |attempt| {
            s.lock()
                .unwrap()
                .push((attempt.number, attempt.deadline.map(|d| d - start)));
            std::future::pending::<Result<(), Fake>>()
        })
        .await;
    let seen = seen.lock().unwrap().clone();
    // Attempt 1: min(0+300, 500); attempt 2 starts at 400: min(700, 500) = 500.
    assert_eq!(
        seen,
        [
            (1, Some(Duration::from_millis(300))),
            (2, Some(Duration::from_millis(500)))
        ]
    );
}

/// Issue #12 item 6: an attempt cut short by the caller's overall deadline (before its
/// own timeout) says nothing about the dependency: the breaker does not count it, and a
/// half-open probe cut that way gives its permit back.
#[tokio::test(start_paused = true)]
async fn deadline_cut_attempt_is_not_a_breaker_failure() {
    let breaker = breaker(1);
    let policy = Policy::builder("fake.op")
        .timeout(Duration::from_secs(1))
        .deadline(Duration::from_millis(100))
        .idempotent(true)
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = policy
        .call(std::future::pending::<Result<(), Fake>>)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the caller's deadline is not the dependency's failure"
    );

    // The client's own deadline (the one handed in through `Attempt`) passing at the
    // overall deadline is the same cut.
    let client_timeout = Policy::builder("fake.op")
        .timeout(Duration::from_secs(1))
        .deadline(Duration::from_millis(100))
        .idempotent(true)
        .breaker(breaker.clone())
        .classify(|_: &Fake| stayfast_core::Verdict::timed_out())
        .build()
        .unwrap();
    let err = client_timeout
        .call_with(|attempt| async move {
            tokio::time::sleep_until(attempt.deadline.unwrap()).await;
            Err::<(), _>(Fake::Busy)
        })
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(breaker.state(), State::Closed, "client-side cut at the deadline");

    // Open it, wait for half-open, and let the deadline cut the only probe.
    let _ = policy.call(|| async { Err::<(), _>(Fake::Busy) }).await;
    assert_eq!(breaker.state(), State::Open);
    advance(Duration::from_secs(1)).await;
    let err = policy
        .call(std::future::pending::<Result<(), Fake>>)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "a probe cut by the deadline neither closes nor reopens"
    );
    let ok = policy.call(|| async { Ok::<_, Fake>(7) }).await;
    assert_eq!(ok.unwrap(), 7, "the probe permit was given back");
    assert_eq!(breaker.state(), State::Closed);
}

/// The per-attempt timeout coming first is still the dependency's failure; so is the
/// deadline when there is no per-attempt timeout (it is then the attempt's only bound,
/// and a hung dependency must still open the circuit).
#[tokio::test(start_paused = true)]
async fn per_attempt_timeout_before_the_deadline_is_a_breaker_failure() {
    let first = breaker(1);
    let deadline_only = Policy::builder("fake.op")
        .deadline(Duration::from_millis(100))
        .idempotent(true)
        .breaker(first.clone())
        .build()
        .unwrap();
    let err = deadline_only
        .call(std::future::pending::<Result<(), Fake>>)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(first.state(), State::Open, "the deadline was the only bound");

    let breaker = breaker(1);
    let policy = Policy::builder("fake.op")
        .timeout(Duration::from_millis(100))
        .deadline(Duration::from_secs(1))
        .idempotent(true)
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let err = policy
        .call(std::future::pending::<Result<(), Fake>>)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(breaker.state(), State::Open);
}

fn _policy_call_is_a_future(p: &Policy) -> impl Future<Output = Result<u8, Error<Fake>>> {
    p.call(|| async { Ok(1) })
}
