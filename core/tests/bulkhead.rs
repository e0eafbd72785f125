//! Bulkhead: excess callers wait up to a bound, then are shed; the call's deadline wins
//! when it is sooner.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use stayfast_core::{Bulkhead, Policy, config::BulkheadConfig};
use support::Fake;
use tokio::time::Instant;

fn bulkhead(max_concurrent: u32, max_wait_ms: u64) -> Bulkhead {
    let mut c = BulkheadConfig::default();
    c.max_concurrent = max_concurrent;
    c.max_wait = Duration::from_millis(max_wait_ms);
    Bulkhead::new("fake.main", &c).unwrap()
}

#[tokio::test(start_paused = true)]
async fn excess_waits_up_to_max_wait_then_is_shed() {
    let b = bulkhead(1, 100);
    let held = b.acquire().await.unwrap();
    let start = Instant::now();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(err.target().as_str(), "fake.main");
    drop(held);
    let p = b.acquire().await.unwrap();
    assert!(!p.queued());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_the_slot_when_it_frees() {
    let b = bulkhead(1, 100);
    let held = b.acquire().await.unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire().await.map(|p| p.queued()) });
    tokio::time::sleep(Duration::from_millis(40)).await;
    drop(held);
    assert_eq!(waiter.await.unwrap(), Ok(true));
}

#[tokio::test(start_paused = true)]
async fn policy_sheds_and_never_retries_a_shed_call() {
    let b = bulkhead(1, 0);
    let policy = Policy::builder("fake.op")
        .bulkhead(b.clone())
        .retry(&support::fixed_retry(3, 10))
        .build()
        .unwrap();
    let _held = b.acquire().await.unwrap();
    let err = policy.call(|| async { Ok::<_, Fake>(()) }).await.unwrap_err();
    assert!(err.is_shed(), "{err}");
    assert_eq!(
        err.to_string(),
        "fake.main is at its concurrency limit; call shed"
    );
}

#[tokio::test(start_paused = true)]
async fn the_call_deadline_bounds_the_wait_for_a_slot() {
    let b = bulkhead(1, 10_000);
    let policy = Policy::builder("fake.op")
        .bulkhead(b.clone())
        .deadline(Duration::from_millis(200))
        .build()
        .unwrap();
    let _held = b.acquire().await.unwrap();
    let start = Instant::now();
    let err = policy.call(|| async { Ok::<_, Fake>(()) }).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_freed_during_backoff() {
    let b = bulkhead(1, 0);
    let policy = Policy::builder("fake.op")
        .bulkhead(b.clone())
        .retry(&support::fixed_retry(2, 1_000))
        .build()
        .unwrap();
    let failing = tokio::spawn(async move { policy.call(|| async { Err::<(), _>(Fake::Busy) }).await });
    tokio::time::sleep(Duration::from_millis(500)).await; // the first attempt failed; backing off
    assert_eq!(b.available(), 1, "no slot held while sleeping");
    assert!(failing.await.unwrap().is_err());
}
