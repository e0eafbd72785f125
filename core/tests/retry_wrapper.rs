//! [`Retry`] on its own, outside a policy: attempts, classification, backoff, budget,
//! limits and cancellation, all on paused tokio time.
#![allow(clippy::unwrap_used)]

use std::{cell::Cell, future::Future, io, time::Duration};

use stayfast_core::{
    Error, Policy, Retry, Verdict,
    config::{BudgetConfig, RetryConfig},
};
use tokio::time::{Instant, advance, sleep};

/// `max_attempts` attempts, fixed delays of `min_ms` × 2^(n-1) (no jitter), no budget.
fn config(max_attempts: u32, min_ms: u64) -> RetryConfig {
    let mut config = RetryConfig::default();
    config.max_attempts = max_attempts;
    config.min_delay = Duration::from_millis(min_ms);
    config.max_delay = Duration::from_secs(60);
    config.multiplier = 2.0;
    config.jitter = false;
    config.budget = None;
    config
}

fn refused() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionRefused)
}

/// An operation that fails with `error()` and counts the futures it made (`made`) and
/// the ones that ran to their end (`finished`): each attempt must get a fresh one.
fn failing<'a>(
    made: &'a Cell<u32>,
    finished: &'a Cell<u32>,
    error: fn() -> io::Error,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, io::Error>> + 'a>> {
    move || {
        made.set(made.get() + 1);
        let id = made.get();
        Box::pin(async move {
            // A future polled again after it finished would panic ("`async fn` resumed
            // after completion"), so finishing each once proves each attempt is new.
            finished.set(finished.get() + 1);
            assert_eq!(finished.get(), id, "attempt {id} ran a future made for another");
            Err(error())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn retries_up_to_max_attempts_with_a_fresh_future_each_time() {
    let retry = Retry::new(&config(4, 10)).unwrap().operation("http.fetch");
    let (made, finished) = (Cell::new(0), Cell::new(0));
    let err = retry.call(failing(&made, &finished, refused)).await.unwrap_err();
    assert_eq!((made.get(), finished.get()), (4, 4));
    assert_eq!(err.attempts(), Some(4));
    assert_eq!(err.to_string(), "http.fetch failed after 4 attempts");
    assert!(
        matches!(err, Error::Inner { ref source, .. } if source.kind() == io::ErrorKind::ConnectionRefused)
    );

    // A success on a later attempt ends the call with its value.
    let calls = Cell::new(0);
    let value = retry
        .call(|| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 3 { Err(refused()) } else { Ok(n) } }
        })
        .await
        .unwrap();
    assert_eq!(value, 3);
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_ends_the_call_at_once() {
    let retry = Retry::new(&config(5, 10)).unwrap();
    let (made, finished) = (Cell::new(0), Cell::new(0));
    let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
    let start = Instant::now();
    let err = retry.call(failing(&made, &finished, denied)).await.unwrap_err();
    assert_eq!(made.get(), 1);
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no backoff after the last attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_is_retried_only_when_idempotent() {
    let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
    let (made, finished) = (Cell::new(0), Cell::new(0));
    let retry = Retry::new(&config(3, 10)).unwrap().operation("redis.set");
    let err = retry.call(failing(&made, &finished, reset)).await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err}");
    assert_eq!(made.get(), 1);

    let (made, finished) = (Cell::new(0), Cell::new(0));
    let retry = retry.idempotent(true);
    let err = retry.call(failing(&made, &finished, reset)).await.unwrap_err();
    assert_eq!((made.get(), err.attempts()), (3, Some(3)));
}

#[tokio::test(start_paused = true)]
async fn attempts_are_spaced_by_the_backoff() {
    let retry = Retry::new(&config(4, 100)).unwrap();
    let start = Instant::now();
    let begun = std::cell::RefCell::new(Vec::new());
    let _ = retry
        .call(|| {
            begun.borrow_mut().push(start.elapsed());
            async { Err::<(), _>(refused()) }
        })
        .await;
    let ms = |n| Duration::from_millis(n);
    assert_eq!(*begun.borrow(), [ms(0), ms(100), ms(300), ms(700)]);
    assert_eq!(start.elapsed(), ms(700), "no sleep after the last attempt");
}

#[tokio::test(start_paused = true)]
async fn a_jittered_backoff_stays_within_its_bounds_and_a_seed_repeats_it() {
    let mut jittered = config(4, 100);
    jittered.jitter = true;
    jittered.max_delay = Duration::from_millis(250);
    let give_up = async |seed| {
        let retry = Retry::new(&jittered).unwrap().jitter_seed(seed);
        let start = Instant::now();
        let _ = retry.call(|| async { Err::<(), _>(refused()) }).await;
        start.elapsed()
    };
    let took = give_up(7).await;
    // Three delays, each within [min_delay, max_delay].
    assert!(
        (Duration::from_millis(300)..=Duration::from_millis(750)).contains(&took),
        "{took:?}"
    );
    assert_eq!(give_up(7).await, took);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_hinted_delay_replaces_the_backoff() {
    let retry = Retry::new(&config(2, 10))
        .unwrap()
        .classify(|_: &io::Error| Verdict::retry_after(Duration::from_secs(3)));
    let start = Instant::now();
    let _ = retry.call(|| async { Err::<(), _>(refused()) }).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retrying() {
    let mut budget = BudgetConfig::default();
    budget.min_retries = 1;
    budget.ratio = 0.1;
    let mut with_budget = config(5, 10);
    with_budget.budget = Some(budget);
    let retry = Retry::new(&with_budget).unwrap();

    let (made, finished) = (Cell::new(0), Cell::new(0));
    let err = retry.call(failing(&made, &finished, refused)).await.unwrap_err();
    assert_eq!(made.get(), 2, "the one retry the budget holds, then none");
    assert!(err.is_budget_exhausted(), "{err}");
    let Error::BudgetExhausted { last } = err else {
        unreachable!()
    };
    assert_eq!(last.attempts(), Some(2));

    // The next call gets no retry at all: a tenth of a retry is not one.
    let (made, finished) = (Cell::new(0), Cell::new(0));
    assert!(
        retry
            .call(failing(&made, &finished, refused))
            .await
            .unwrap_err()
            .is_budget_exhausted()
    );
    assert_eq!(made.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_before_a_retry_that_would_overrun_it() {
    let mut limited = config(10, 100);
    limited.max_elapsed = Some(Duration::from_millis(350));
    let retry = Retry::new(&limited).unwrap();
    let (made, finished) = (Cell::new(0), Cell::new(0));
    let start = Instant::now();
    let _ = retry.call(failing(&made, &finished, refused)).await;
    // Attempts at 0, 100 and 300 ms; the next would resume at 700 ms, past 350 ms.
    assert_eq!(made.get(), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_stops_further_attempts() {
    let retry = Retry::new(&config(10, 100)).unwrap();

    // Dropped during the backoff after the first attempt.
    let (made, finished) = (Cell::new(0), Cell::new(0));
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        retry.call(failing(&made, &finished, refused)),
    )
    .await;
    assert!(cut.is_err());
    advance(Duration::from_secs(60)).await;
    assert_eq!(made.get(), 1);

    // Dropped while an attempt runs: that attempt never finishes, none follows.
    let (made, finished) = (Cell::new(0), Cell::new(0));
    let slow = || {
        made.set(made.get() + 1);
        async {
            sleep(Duration::from_secs(1)).await;
            finished.set(finished.get() + 1);
            Err::<(), _>(refused())
        }
    };
    let cut = tokio::time::timeout(Duration::from_millis(500), retry.call(slow)).await;
    assert!(cut.is_err());
    advance(Duration::from_secs(60)).await;
    assert_eq!((made.get(), finished.get()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_retry_classifies_like_a_policy() {
    let kinds = [
        io::ErrorKind::ConnectionRefused,
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::TimedOut,
        io::ErrorKind::NotFound,
        io::ErrorKind::InvalidInput,
    ];
    for idempotent in [false, true] {
        let retry = Retry::new(&config(3, 10))
            .unwrap()
            .operation("op")
            .idempotent(idempotent);
        let policy = Policy::builder("op")
            .retry(&config(3, 10))
            .idempotent(idempotent)
            .without_metrics()
            .build()
            .unwrap();
        for kind in kinds {
            let alone = retry
                .call(|| async move { Err::<(), _>(io::Error::from(kind)) })
                .await;
            let stacked = policy
                .call(|| async move { Err::<(), _>(io::Error::from(kind)) })
                .await;
            let (alone, stacked) = (alone.unwrap_err(), stacked.unwrap_err());
            assert_eq!(
                alone.to_string(),
                stacked.to_string(),
                "{kind:?}, idempotent: {idempotent}"
            );
            assert_eq!(
                alone.attempts(),
                stacked.attempts(),
                "{kind:?}, idempotent: {idempotent}"
            );
        }
    }
}

#[test]
fn invalid_settings_are_errors_naming_the_field() {
    let mut bad = RetryConfig::default();
    bad.max_attempts = 0;
    assert_eq!(Retry::new(&bad).unwrap_err().field(), "max_attempts");
    let mut bad = RetryConfig::default();
    let mut budget = BudgetConfig::default();
    budget.ratio = 2.0;
    bad.budget = Some(budget);
    assert_eq!(Retry::new(&bad).unwrap_err().field(), "budget.ratio");
}

#[test]
fn a_retry_is_send_and_sync_and_so_is_its_call() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let retry = Retry::new(&RetryConfig::default()).unwrap();
    assert_send_sync(&retry);
    let call = retry.call(|| async { Ok::<_, io::Error>(()) });
    assert_send(&call);
}
