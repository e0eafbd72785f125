//! Timeout semantics (A6): at the deadline the inner future is dropped and the error
//! names the operation; the caller's own cancellation is not a timeout.
#![allow(clippy::unwrap_used)]

use std::{
    future::Future,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use stayfast_core::{Timeout, TimeoutExt};
use tokio::time::{Instant, sleep};

/// Sets its flag when dropped: shows the inner future really was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_the_inner_future_is_dropped_and_the_error_names_the_operation() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let start = Instant::now();
    let err = async move {
        let _flag = flag;
        std::future::pending::<()>().await
    }
    .timeout(Duration::from_millis(150))
    .operation("redis.get")
    .await
    .unwrap_err();
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    assert_eq!(err.to_string(), "redis.get timed out after 150ms");
}

/// The inner future is polled before the timer: a result ready when the deadline
/// passes wins.
#[tokio::test(start_paused = true)]
async fn inner_future_is_polled_first() {
    let both_at_one_second = sleep(Duration::from_secs(1));
    let v = async {
        both_at_one_second.await;
        "inner"
    }
    .timeout(Duration::from_secs(1))
    .await;
    assert_eq!(v, Ok("inner"));
}

/// A caller's own cancellation is not a timeout: dropping the `Timeout` drops the inner
/// future and reports nothing.
#[tokio::test(start_paused = true)]
async fn caller_cancellation_is_not_reported_as_a_timeout() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let wrapped = async move {
        let _flag = flag;
        std::future::pending::<()>().await
    }
    .timeout(Duration::from_secs(10));
    let outer = tokio::time::timeout(Duration::from_millis(10), wrapped).await;
    assert!(outer.is_err(), "the caller gave up first");
    assert!(dropped.load(Ordering::SeqCst));
}

/// No timer for a future that is ready on its first poll: polled outside any runtime,
/// where creating a tokio timer would panic.
#[test]
fn no_timer_is_registered_for_a_future_ready_on_first_poll() {
    let mut cx = Context::from_waker(Waker::noop());
    let t = pin!(async { 5 }.timeout(Duration::from_secs(1)));
    assert_eq!(t.poll(&mut cx), Poll::Ready(Ok(5)));
}

/// The clock starts at the first `Pending`, not at construction: 50 ms pass between
/// building the `Timeout` and its first poll. The inner future's own clock also starts
/// at its first poll (its sleep is made there), so it finishes 80 ms after that poll,
/// 130 ms after construction: inside a 100 ms bound counted from the first `Pending`
/// (150 ms), past one counted from construction (100 ms).
#[tokio::test(start_paused = true)]
async fn clock_starts_at_first_pending() {
    let built = Instant::now();
    let t = async { sleep(Duration::from_millis(80)).await }.timeout(Duration::from_millis(100));
    tokio::time::advance(Duration::from_millis(50)).await; // not yet polled: no clock
    assert_eq!(t.await, Ok(()), "the bound was counted from construction");
    assert_eq!(built.elapsed(), Duration::from_millis(130));

    // A future that never finishes times out 100 ms after its first poll.
    let built = Instant::now();
    let t = std::future::pending::<()>().timeout(Duration::from_millis(100));
    tokio::time::advance(Duration::from_millis(50)).await;
    assert!(t.await.is_err());
    assert_eq!(built.elapsed(), Duration::from_millis(150));
}

#[tokio::test(start_paused = true)]
async fn huge_bounds_never_panic() {
    let v = async { 1 }.timeout(Duration::MAX).await;
    assert_eq!(v, Ok(1));
    let pending = sleep(Duration::from_secs(3600)).timeout(Duration::MAX);
    assert!(pending.await.is_ok());
    let t: Timeout<_> = Timeout::new(std::future::pending::<()>(), Duration::from_secs(u64::MAX));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), t).await.is_err(),
        "never times out by itself"
    );
}
