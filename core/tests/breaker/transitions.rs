//! A1, transitions at their boundaries under paused time: closed → open → half-open →
//! open → half-open → closed, each exactly at its boundary (1 ms before it calls are
//! rejected with `retry_after` the time left); the failure-rate and slow-call rules trip
//! exactly at their thresholds.

use super::*;

#[tokio::test(start_paused = true)]
async fn breaker_transitions_paused_clock() {
    let mut c = config(3, 1, 100);
    c.max_open_for = ms(300);
    let (b, log) = logged("a1", &c);
    let mut rx = b.subscribe();
    assert_eq!(*rx.borrow_and_update(), Closed);

    // n − 1 failures keep it closed; a success in between resets the count.
    assert!(call(&b, Health::Failure));
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Closed);
    assert!(call(&b, Health::Success));
    assert!(call(&b, Health::Failure));
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Closed);
    assert!(steps(&log).is_empty());
    assert!(!rx.has_changed().unwrap());
    // The n-th failure in a row opens it.
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Open);
    assert_eq!(*rx.borrow_and_update(), Open);
    assert_eq!(last(&log), Some((Closed, Open, FailureThreshold, 1)));
    assert_eq!(rejected_for(&b), ms(100));

    // open_for − 1 ms: still rejected, 1 ms left. open_for: a probe is admitted.
    advance(ms(99)).await;
    assert_eq!(rejected_for(&b), ms(1));
    assert_eq!(b.state(), Open);
    advance(ms(1)).await;
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(probe.generation(), 2);
    assert_eq!(b.state(), HalfOpen);
    assert_eq!(*rx.borrow_and_update(), HalfOpen);
    assert!(b.try_acquire().is_err(), "one probe only");
    // A failed probe re-opens for twice as long.
    probe.record(Health::Failure);
    assert_eq!(last(&log), Some((HalfOpen, Open, ProbeFailed, 3)));
    assert_eq!(rejected_for(&b), ms(200));
    advance(ms(199)).await;
    assert_eq!(rejected_for(&b), ms(1));
    advance(ms(1)).await;
    let probe = b.try_acquire().unwrap();
    assert_eq!(b.state(), HalfOpen);
    probe.record(Health::Failure);
    // 2 × 200 ms = 400 ms, capped at max_open_for = 300 ms.
    assert_eq!(rejected_for(&b), ms(300));
    advance(ms(299)).await;
    assert_eq!(rejected_for(&b), ms(1));
    advance(ms(1)).await;
    let probe = b.try_acquire().unwrap();
    probe.record(Health::Success);
    assert_eq!(b.state(), Closed);
    assert_eq!(last(&log), Some((HalfOpen, Closed, ProbeSucceeded, 7)));

    // Closing forgot the failure count and the grown open duration.
    assert!(call(&b, Health::Failure));
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Closed);
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Open);
    assert_eq!(rejected_for(&b), ms(100));
    advance(ms(100)).await;
    b.try_acquire().unwrap().record(Health::Failure);
    assert_eq!(rejected_for(&b), ms(200), "growth restarts from open_for");
    advance(ms(200)).await;
    b.try_acquire().unwrap().record(Health::Success);
    assert_eq!(b.state(), Closed);

    assert_eq!(
        steps(&log),
        vec![
            (Closed, Open, FailureThreshold, 1),
            (Open, HalfOpen, BreakElapsed, 2),
            (HalfOpen, Open, ProbeFailed, 3),
            (Open, HalfOpen, BreakElapsed, 4),
            (HalfOpen, Open, ProbeFailed, 5),
            (Open, HalfOpen, BreakElapsed, 6),
            (HalfOpen, Closed, ProbeSucceeded, 7),
            (Closed, Open, FailureThreshold, 8),
            (Open, HalfOpen, BreakElapsed, 9),
            (HalfOpen, Open, ProbeFailed, 10),
            (Open, HalfOpen, BreakElapsed, 11),
            (HalfOpen, Closed, ProbeSucceeded, 12),
        ]
    );
    assert!(log.lock().unwrap().iter().all(|t| t.target.as_str() == "a1"));
    assert_eq!(*rx.borrow(), Closed);
    assert_eq!(*b.subscribe().borrow(), Closed);
}

#[tokio::test(start_paused = true)]
async fn breaker_failure_rate_trips_exactly_at_minimum_calls_and_threshold() {
    let mut c = BreakerConfig::default();
    c.consecutive_failures = None;
    c.failure_rate = Some(0.5);
    c.window = 10;
    c.minimum_calls = 4;

    // Below minimum_calls nothing trips, even at 100 % failures.
    let (b, log) = logged("rate", &c);
    for _ in 0..3 {
        assert!(call(&b, Health::Failure));
    }
    assert_eq!(b.state(), Closed);
    // The 4th call reaches minimum_calls with 4/4 failed.
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Open);
    assert_eq!(steps(&log), vec![(Closed, Open, FailureRate, 1)]);

    // Exactly at the threshold: S S F (3 calls) stays closed; F makes 2/4 = 0.5.
    let (b, log) = logged("rate", &c);
    assert!(call(&b, Health::Success));
    assert!(call(&b, Health::Success));
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Closed);
    assert!(call(&b, Health::Failure));
    assert_eq!(steps(&log), vec![(Closed, Open, FailureRate, 1)]);

    // Just below, then at: S S S F = 1/4, F = 2/5 (closed), F = 3/6 = 0.5 (open).
    let (b, log) = logged("rate", &c);
    for _ in 0..3 {
        assert!(call(&b, Health::Success));
    }
    assert!(call(&b, Health::Failure));
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Closed);
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Open);
    assert_eq!(steps(&log), vec![(Closed, Open, FailureRate, 1)]);

    // Only the last `window` calls count: 10 successes, then failures until the window
    // holds 5 of them.
    let (b, _) = logged("rate", &c);
    for _ in 0..10 {
        assert!(call(&b, Health::Success));
    }
    for _ in 0..4 {
        assert!(call(&b, Health::Failure));
        assert_eq!(b.state(), Closed);
    }
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Open);

    // Ignored outcomes are not calls.
    let (b, _) = logged("rate", &c);
    for _ in 0..10 {
        assert!(call(&b, Health::Ignore));
    }
    for _ in 0..3 {
        assert!(call(&b, Health::Failure));
    }
    assert_eq!(b.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn breaker_slow_calls_trip_with_reason_slow_calls() {
    let mut c = BreakerConfig::default();
    c.consecutive_failures = None;
    c.failure_rate = None;
    c.slow_call_duration = Some(ms(50));
    c.slow_call_rate = 0.5;
    c.window = 10;
    c.minimum_calls = 4;
    c.open_for = ms(100);
    let (b, log) = logged("slow", &c);

    let timed = |elapsed: u64| {
        b.try_acquire()
            .unwrap()
            .record_timed(Health::Success, ms(elapsed))
    };
    timed(49); // just under the limit: not slow
    timed(50); // at the limit: slow
    timed(10);
    assert_eq!(b.state(), Closed, "3 calls < minimum_calls");
    timed(500); // 2 slow of 4 = 0.5
    assert_eq!(b.state(), Open);
    assert_eq!(steps(&log), vec![(Closed, Open, SlowCalls, 1)]);

    // A slow probe counts as a failed probe.
    advance(ms(100)).await;
    b.try_acquire().unwrap().record_timed(Health::Success, ms(50));
    assert_eq!(last(&log), Some((HalfOpen, Open, ProbeFailed, 3)));
    // A fast one closes it.
    advance(ms(200)).await;
    b.try_acquire().unwrap().record_timed(Health::Success, ms(1));
    assert_eq!(last(&log), Some((HalfOpen, Closed, ProbeSucceeded, 5)));
    assert_eq!(*b.subscribe().borrow(), Closed);
}

/// The sample that brings the window to `minimum_calls` may be a success: F F F S with
/// minimum 4 and rate 0.5 trips on the S (3 of 4 failed).
#[tokio::test(start_paused = true)]
async fn breaker_rate_rule_checked_on_the_success_that_reaches_minimum_calls() {
    let mut c = config(100, 1, 100);
    c.failure_rate = Some(0.5);
    c.window = 10;
    c.minimum_calls = 4;
    let (breaker, log) = logged("rate.success", &c);
    for _ in 0..3 {
        assert!(call(&breaker, Health::Failure));
    }
    assert_eq!(breaker.state(), Closed);
    assert!(call(&breaker, Health::Success));
    assert_eq!(last(&log), Some((Closed, Open, FailureRate, 1)));
}
