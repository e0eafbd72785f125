//! Stale permits: a permit taken before a transition (a probe, or a call from an earlier
//! closed period) changes nothing when it reports.

use super::*;

#[tokio::test(start_paused = true)]
async fn breaker_stale_probe_changes_nothing() {
    let (b, log) = logged("stale", &config(1, 2, 100));
    trip(&b);
    advance(ms(100)).await;
    let first = b.try_acquire().unwrap();
    let second = b.try_acquire().unwrap();
    let g = first.generation();
    assert_eq!((g, second.generation()), (2, 2));
    // The second probe fails: open (g + 1), then half-open again (g + 2).
    second.record(Health::Failure);
    assert_eq!(last(&log), Some((HalfOpen, Open, ProbeFailed, g + 1)));
    advance(ms(200)).await;
    let third = b.try_acquire().unwrap();
    assert_eq!(third.generation(), g + 2);
    assert_eq!(b.state(), HalfOpen);

    // The first probe's success belongs to generation g: nothing changes.
    first.record(Health::Success);
    assert_eq!(b.state(), HalfOpen);
    assert_eq!(last(&log), Some((Open, HalfOpen, BreakElapsed, g + 2)));
    // Nor did it free or fill a slot of generation g + 2: one slot is left.
    let fourth = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    // It did not count as a success either: two more are needed.
    third.record(Health::Success);
    assert_eq!(b.state(), HalfOpen);
    fourth.record(Health::Success);
    assert_eq!(b.state(), Closed);
    assert_eq!(steps(&log).len(), 5);

    // A stale probe dropped without recording gives back no slot of the new generation.
    trip(&b);
    advance(ms(100)).await;
    let old = b.try_acquire().unwrap();
    let failing = b.try_acquire().unwrap();
    failing.record(Health::Failure);
    advance(ms(200)).await;
    let new = b.try_acquire().unwrap();
    let _other = b.try_acquire().unwrap();
    drop(old);
    assert!(b.try_acquire().is_err(), "the stale drop freed a slot");
    drop(new);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn breaker_stale_closed_permit_changes_nothing() {
    let (b, log) = logged("stale", &config(2, 1, 100));
    let early = b.try_acquire().unwrap();
    let late = b.try_acquire().unwrap();
    let later = b.try_acquire().unwrap();
    assert_eq!(early.generation(), 0);
    assert!(call(&b, Health::Failure));
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Open);

    // Recorded after the breaker opened: nothing.
    early.record(Health::Success);
    assert_eq!(b.state(), Open);
    assert_eq!(steps(&log).len(), 1);

    // Recorded after it closed again (generation 3): still nothing, neither a failure
    // towards the new count nor a success resetting it.
    advance(ms(100)).await;
    b.try_acquire().unwrap().record(Health::Success);
    assert_eq!(b.state(), Closed);
    late.record(Health::Failure);
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Closed, "the stale failure was counted");
    later.record(Health::Success);
    assert!(call(&b, Health::Failure));
    assert_eq!(b.state(), Open, "the stale success reset the count");
    assert_eq!(steps(&log).len(), 4);
}
