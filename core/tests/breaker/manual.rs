//! Manual controls: `force_open`, `reset`, `disable` and `trip`, and what each announces.

use super::*;

#[tokio::test(start_paused = true)]
async fn breaker_force_open_reset_disable() {
    let (b, log) = logged("manual", &config(3, 1, 100));
    let mut rx = b.subscribe();

    // force_open rejects until reset, however long it waits.
    b.force_open();
    assert_eq!(b.state(), ForcedOpen);
    assert_eq!(*rx.borrow_and_update(), ForcedOpen);
    assert_eq!(last(&log), Some((Closed, ForcedOpen, Manual, 1)));
    assert!(b.try_acquire().is_err());
    advance(Duration::from_secs(3_600)).await;
    assert!(b.try_acquire().is_err());
    assert_eq!(b.state(), ForcedOpen);
    b.force_open(); // no-op
    assert_eq!(steps(&log).len(), 1);
    b.reset();
    assert_eq!(b.state(), Closed);
    assert_eq!(*rx.borrow_and_update(), Closed);
    assert_eq!(last(&log), Some((ForcedOpen, Closed, Manual, 2)));

    // reset clears the failure count.
    assert!(call(&b, Health::Failure));
    assert!(call(&b, Health::Failure));
    b.reset(); // already closed: no transition announced
    assert_eq!(steps(&log).len(), 2);
    assert!(call(&b, Health::Failure));
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Closed);
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Open);

    // reset closes an open breaker before its open duration is over.
    b.reset();
    assert_eq!(b.state(), Closed);
    assert_eq!(last(&log).unwrap().2, Manual);

    // disable admits everything and counts nothing.
    b.disable();
    assert_eq!(b.state(), Disabled);
    assert_eq!(*rx.borrow_and_update(), Disabled);
    for _ in 0..100 {
        let permit = b.try_acquire().unwrap();
        assert!(!permit.is_probe());
        permit.record(Health::Failure);
    }
    assert_eq!(b.state(), Disabled);
    b.disable(); // no-op
    let before = steps(&log).len();
    b.reset();
    assert!(call(&b, Health::Failure));
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Closed, "failures while disabled were counted");

    // force_open overrides disable; disable overrides an open circuit.
    b.disable();
    b.force_open();
    assert!(b.try_acquire().is_err());
    b.disable();
    assert!(b.try_acquire().is_ok());
    b.reset();
    let tail: Vec<_> = steps(&log)[before..].iter().map(|s| (s.0, s.1, s.2)).collect();
    assert_eq!(
        tail,
        vec![
            (Disabled, Closed, Manual),
            (Closed, Disabled, Manual),
            (Disabled, ForcedOpen, Manual),
            (ForcedOpen, Disabled, Manual),
            (Disabled, Closed, Manual),
        ]
    );
    assert_eq!(*rx.borrow(), Closed);
}

/// `reset` on a closed breaker forgets the counts without a new generation: nothing
/// changed state, so nothing is announced and in-flight permits still count.
#[tokio::test(start_paused = true)]
async fn breaker_reset_when_closed_clears_counts_only() {
    let (breaker, log) = logged("reset.closed", &config(2, 1, 100));
    let in_flight = breaker.try_acquire().unwrap();
    assert!(call(&breaker, Health::Failure));
    breaker.reset();
    assert!(call(&breaker, Health::Failure)); // one failure since the reset: still closed
    assert_eq!(breaker.state(), Closed);
    assert!(steps(&log).is_empty());
    in_flight.record(Health::Failure); // same generation: counts, and trips
    assert_eq!(last(&log), Some((Closed, Open, FailureThreshold, 1)));
}

/// `trip`: opens a closed breaker at once, which then recovers through half-open like
/// any trip; a trip while probing waits longer (as a failed probe does); an open,
/// forced-open or disabled breaker is left alone; permits taken before it no longer
/// count.
#[tokio::test(start_paused = true)]
async fn breaker_trip_opens_now_and_recovers_through_half_open() {
    let (b, log) = logged("tripped", &config(3, 1, 100));
    let before = b.try_acquire().unwrap();
    assert!(b.trip());
    assert_eq!(last(&log), Some((Closed, Open, Tripped, 1)));
    assert_eq!(rejected_for(&b), ms(100));
    before.record(Health::Failure); // from the closed generation: changes nothing
    assert!(!b.trip(), "already open");
    assert_eq!(steps(&log).len(), 1);

    advance(ms(100)).await;
    let probe = b.try_acquire().unwrap();
    assert_eq!(b.state(), HalfOpen);
    assert!(b.trip(), "a trip while probing");
    assert_eq!(last(&log), Some((HalfOpen, Open, Tripped, 3)));
    assert_eq!(
        rejected_for(&b),
        ms(200),
        "open for longer, as after a failed probe"
    );
    probe.record(Health::Success); // stale: changes nothing
    assert_eq!(b.state(), Open);

    advance(ms(200)).await;
    assert!(call(&b, Health::Success));
    assert_eq!(b.state(), Closed);
    assert_eq!(last(&log).unwrap().2, ProbeSucceeded);

    b.force_open();
    assert!(!b.trip());
    assert_eq!(b.state(), ForcedOpen);
    b.disable();
    assert!(!b.trip());
    assert_eq!(b.state(), Disabled);
}
