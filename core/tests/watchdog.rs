//! The lag watchdog sees a task that blocks the runtime (negative control) and reports
//! almost no lag without one. Real time by nature: it measures the real scheduler. Its
//! own test binary, so no other test competes for the thread.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use stayfast_core::LagWatchdog;

#[tokio::test(flavor = "current_thread")]
async fn watchdog_catches_a_blocking_task_and_is_quiet_otherwise() {
    let watchdog = LagWatchdog::start(Duration::from_millis(5)).unwrap();

    // Healthy: only async sleeps for 200 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quiet = watchdog.take_max_lag();
    println!(
        "max lag without blocking: {quiet:?} over {} samples",
        watchdog.samples()
    );
    assert!(watchdog.samples() >= 10);
    assert!(
        quiet <= Duration::from_millis(10),
        "lag {quiet:?} without any blocking"
    );

    // Negative control: a task blocks the only runtime thread for 50 ms.
    tokio::spawn(async {
        // Deliberately wrong code under test: a synchronous sleep on an async thread.
        std::thread::sleep(Duration::from_millis(50));
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let caught = watchdog.take_max_lag();
    println!("max lag with a 50 ms blocking task: {caught:?}");
    assert!(
        caught >= Duration::from_millis(40),
        "missed the blocking task: {caught:?}"
    );
}

/// Issue #12 item 10a: an extreme interval is accepted and never panics in the task
/// (`Instant + Duration::MAX` overflowed there); it simply never comes due.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_interval_past_the_end_of_time_does_not_panic() {
    let metrics = tokio::runtime::Handle::current().metrics();
    for interval in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let watchdog = LagWatchdog::start(interval).unwrap();
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(3600)).await;
            tokio::task::yield_now().await;
        }
        assert_eq!(
            metrics.num_alive_tasks(),
            1,
            "the watchdog task with interval {interval:?} died (panicked?)"
        );
        assert_eq!(watchdog.samples(), 0);
        drop(watchdog);
        tokio::task::yield_now().await;
    }
}
