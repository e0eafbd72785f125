//! A3, extreme durations: an open duration of `Duration::MAX` or years, and instants near
//! overflow, saturate; nothing panics.

use super::*;

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3_600);

#[tokio::test(start_paused = true)]
async fn breaker_duration_extremes() {
    // Open for ever: retry_after saturates, the state never moves on by itself.
    let mut c = config(1, 1, 1);
    c.open_for = Duration::MAX;
    c.max_open_for = Duration::MAX;
    c.open_growth = 1e9;
    let (b, log) = logged("extreme", &c);
    trip(&b);
    assert_eq!(rejected_for(&b), Duration::MAX);
    advance(TEN_YEARS).await;
    assert_eq!(rejected_for(&b), Duration::MAX);
    assert_eq!(b.state(), Open);
    b.force_open();
    assert_eq!(rejected_for(&b), Duration::MAX);
    b.reset();
    assert!(call(&b, Health::Success));
    assert_eq!(steps(&log).len(), 3);

    // Huge growth: 1 s → 1e9 s → 1e18 s, all still representable.
    let mut c = config(1, 1, 1_000);
    c.max_open_for = Duration::MAX;
    c.open_growth = 1e9;
    let b = CircuitBreaker::new("extreme", &c).unwrap();
    trip(&b);
    advance(ms(1_000)).await;
    b.try_acquire().unwrap().record(Health::Failure);
    assert_eq!(rejected_for(&b), Duration::from_secs(1_000_000_000));
    advance(Duration::from_secs(1_000_000_000)).await;
    b.try_acquire().unwrap().record(Health::Failure);
    assert_eq!(rejected_for(&b), Duration::from_secs(1_000_000_000_000_000_000));
    advance(TEN_YEARS).await;
    assert_eq!(b.state(), Open);
    assert!(b.try_acquire().is_err());

    // Growth past what an Instant can hold (1e10 s × 1e9): open for ever, no panic.
    let mut c = config(1, 1, 10_000_000_000_000);
    c.max_open_for = Duration::MAX;
    c.open_growth = 1e9;
    let b = CircuitBreaker::new("extreme", &c).unwrap();
    trip(&b);
    advance(c.open_for).await;
    b.try_acquire().unwrap().record(Health::Failure);
    assert_eq!(rejected_for(&b), Duration::MAX);
    advance(TEN_YEARS).await;
    assert_eq!(rejected_for(&b), Duration::MAX);

    // Growth past what a Duration can hold, capped at the largest maximum.
    let mut c = config(1, 1, 1_000);
    c.max_open_for = Duration::MAX;
    c.open_growth = f64::MAX;
    let b = CircuitBreaker::new("extreme", &c).unwrap();
    trip(&b);
    advance(ms(1_000)).await;
    b.try_acquire().unwrap().record(Health::Failure);
    assert_eq!(rejected_for(&b), Duration::MAX);
    assert_eq!(b.state(), Open);

    // A huge growth with a finite cap stops exactly at the cap.
    let mut c = config(1, 1, 1_000);
    c.max_open_for = TEN_YEARS;
    c.open_growth = 1e9;
    let b = CircuitBreaker::new("extreme", &c).unwrap();
    trip(&b);
    advance(ms(1_000)).await;
    b.try_acquire().unwrap().record(Health::Failure);
    assert_eq!(rejected_for(&b), TEN_YEARS);
    advance(TEN_YEARS - ms(1)).await;
    assert_eq!(rejected_for(&b), ms(1));
    advance(ms(1)).await;
    b.try_acquire().unwrap().record(Health::Success);
    assert_eq!(b.state(), Closed);
}
