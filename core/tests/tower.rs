//! `stayfast_core::tower` against tower's readiness contract, with `tower-test`'s mock
//! (which panics when `call` comes before a successful `poll_ready`), on paused time.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use stayfast_core::{
    CircuitBreaker, Error, Policy, Verdict,
    config::{BreakerConfig, RetryConfig},
    tower::PolicyLayer,
};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower_test::mock;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The next request the mock received: a test fails, never hangs, when none comes (a
/// layer that broke the contract panics inside the mock, in the spawned call).
async fn next<T, U>(handle: &mut mock::Handle<T, U>) -> (T, mock::SendResponse<U>) {
    tokio::time::timeout(Duration::from_secs(30), handle.next_request())
        .await
        .expect("the request reaches the inner service")
        .expect("the mock is still open")
}

/// A policy that retries every error of the mock up to `attempts` times in all.
fn policy(attempts: u32) -> Policy<impl Fn(&BoxError) -> Verdict + Send + Sync + 'static> {
    let mut retry = RetryConfig::default();
    retry.max_attempts = attempts;
    retry.jitter = false;
    retry.budget = None;
    Policy::builder("upstream.get")
        .timeout(Duration::from_secs(1))
        .retry(&retry)
        .idempotent(true)
        .without_metrics()
        .classify(|_: &BoxError| Verdict::transient())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn poll_ready_waits_for_the_inner_service_and_call_uses_the_ready_one() {
    let (mut service, mut handle) = mock::spawn_layer::<String, String, _>(PolicyLayer::new(policy(1)));
    handle.allow(0);
    assert_pending!(
        service.poll_ready(),
        "the inner service is not ready: neither is the layer"
    );
    handle.allow(1);
    assert!(
        service.is_woken(),
        "the inner service's wake-up reaches the caller"
    );
    assert_ready_ok!(service.poll_ready());
    let response = tokio::spawn(service.call("GET /".to_owned()));
    let (request, send) = next(&mut handle).await;
    assert_eq!(request, "GET /");
    send.send_response("200".to_owned());
    assert_eq!(response.await.unwrap().unwrap(), "200");
}

#[tokio::test(start_paused = true)]
async fn an_error_in_poll_ready_comes_back_typed_with_no_attempt() {
    let (mut service, mut handle) = mock::spawn_layer::<String, String, _>(PolicyLayer::new(policy(3)));
    handle.send_error("connection pool closed");
    let error = assert_ready!(service.poll_ready()).unwrap_err();
    assert!(matches!(error, Error::Inner { attempts: 0, .. }), "{error:?}");
    assert_eq!(error.inner().unwrap().to_string(), "connection pool closed");
}

#[tokio::test(start_paused = true)]
async fn a_retry_drives_a_clone_ready_before_calling_it() {
    let (mut service, mut handle) = mock::spawn_layer::<String, String, _>(PolicyLayer::new(policy(3)));
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let response = tokio::spawn(service.call("GET /".to_owned()));
    let (_, send) = next(&mut handle).await;
    send.send_error("503 from upstream");
    // The retry's clone is not ready until the mock allows another request: the mock
    // would panic on a `call` without `poll_ready`, so a second request proves it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!response.is_finished(), "the retry waits for readiness");
    handle.allow(1);
    let (request, send) = next(&mut handle).await;
    assert_eq!(request, "GET /", "each attempt sends its own copy");
    send.send_response("200".to_owned());
    assert_eq!(response.await.unwrap().unwrap(), "200");
}

#[tokio::test(start_paused = true)]
async fn each_attempt_gets_a_rebuilt_request_when_requests_are_not_clone() {
    #[derive(Debug, PartialEq)]
    struct Upload(Vec<u8>); // not Clone
    let layer = PolicyLayer::new(policy(2)).replay_with(|u: &Upload| Upload(u.0.clone()));
    let (mut service, mut handle) = mock::spawn_layer::<Upload, String, _>(layer);
    handle.allow(2);
    assert_ready_ok!(service.poll_ready());
    let response = tokio::spawn(service.call(Upload(b"abc".to_vec())));
    let (first, send) = next(&mut handle).await;
    send.send_error("reset");
    let (second, send) = next(&mut handle).await;
    assert_eq!(
        (first, &second),
        (Upload(b"abc".to_vec()), &Upload(b"abc".to_vec()))
    );
    send.send_response("stored".to_owned());
    assert_eq!(response.await.unwrap().unwrap(), "stored");
}

#[tokio::test(start_paused = true)]
async fn a_hung_service_is_cut_at_the_attempt_timeout_and_retried() {
    let (mut service, mut handle) = mock::spawn_layer::<String, String, _>(PolicyLayer::new(policy(2)));
    handle.allow(2);
    assert_ready_ok!(service.poll_ready());
    let started = tokio::time::Instant::now();
    let response = tokio::spawn(service.call("GET /".to_owned()));
    let (_, _hung) = next(&mut handle).await; // never answered
    let (_, _also_hung) = next(&mut handle).await;
    let error = response.await.unwrap().unwrap_err();
    assert!(error.is_timeout(), "{error:?}"); // after two attempts: two requests above
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_rejects_without_calling_the_inner_service() {
    let breaker = CircuitBreaker::new("upstream", &BreakerConfig::default()).unwrap();
    breaker.force_open();
    let policy = Policy::builder("upstream.get")
        .breaker(breaker)
        .without_metrics()
        .classify(|_: &BoxError| Verdict::transient())
        .build()
        .unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<String, String, _>(PolicyLayer::new(policy));
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let error = service.call("GET /".to_owned()).await.unwrap_err();
    assert!(error.is_circuit_open(), "{error:?}");
    assert!(
        handle.poll_request().is_pending(),
        "nothing reached the inner service"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_cancels_the_attempt_and_retries_nothing() {
    let (mut service, mut handle) = mock::spawn_layer::<String, String, _>(PolicyLayer::new(policy(3)));
    handle.allow(3);
    assert_ready_ok!(service.poll_ready());
    let response = tokio::spawn(service.call("GET /".to_owned()));
    let (_, send) = next(&mut handle).await;
    response.abort();
    assert!(response.await.unwrap_err().is_cancelled());
    send.send_error("too late"); // the attempt's future is gone: nobody retries
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(handle.poll_request().is_pending(), "no retry after cancellation");
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_holds_poll_ready_until_a_call_ends() {
    let mut config = stayfast_core::config::BulkheadConfig::default();
    config.max_concurrent = 1;
    let bulkhead = stayfast_core::Bulkhead::new("upstream", &config).unwrap();
    let layer = PolicyLayer::new(policy(1)).bulkhead(bulkhead.clone());
    let (mut first, mut handle) = mock::spawn_layer::<String, String, _>(layer);
    let mut second = mock::Spawn::new(first.get_ref().clone());
    handle.allow(2);
    assert_ready_ok!(first.poll_ready());
    assert_eq!(bulkhead.available(), 0, "poll_ready took the slot");
    let response = tokio::spawn(first.call("one".to_owned()));
    assert_pending!(second.poll_ready());
    let (_, send) = next(&mut handle).await;
    send.send_response("1".to_owned());
    assert_eq!(response.await.unwrap().unwrap(), "1");
    assert!(second.is_woken(), "the freed slot wakes the waiting caller");
    assert_ready_ok!(second.poll_ready());
    drop(second);
    assert_eq!(
        bulkhead.available(),
        1,
        "a ready service dropped unused gives its slot back"
    );
}

#[tokio::test(start_paused = true)]
async fn call_without_poll_ready_is_shed_not_let_past_the_limit() {
    let bulkhead = stayfast_core::Bulkhead::new("upstream", &Default::default()).unwrap();
    let layer = PolicyLayer::new(policy(1)).bulkhead(bulkhead);
    let (mut service, mut handle) = mock::spawn_layer::<String, String, _>(layer);
    handle.allow(1);
    let error = service.call("GET /".to_owned()).await.unwrap_err();
    assert!(error.is_shed(), "{error:?}");
    assert!(
        handle.poll_request().is_pending(),
        "nothing reached the inner service"
    );
}

/// A `PolicyService` over a `Sync` service is `Sync` (axum's state must be), also
/// while it waits for a bulkhead slot.
#[tokio::test(start_paused = true)]
async fn the_service_is_send_and_sync_even_waiting_for_a_slot() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let mut config = stayfast_core::config::BulkheadConfig::default();
    config.max_concurrent = 1;
    let bulkhead = stayfast_core::Bulkhead::new("upstream", &config).unwrap();
    let layer = PolicyLayer::new(policy(1)).bulkhead(bulkhead);
    let (mut first, _handle) = mock::spawn_layer::<String, String, _>(layer);
    let mut second = mock::Spawn::new(first.get_ref().clone());
    assert_ready_ok!(first.poll_ready());
    assert_pending!(second.poll_ready(), "the second waits for the slot");
    assert_send_sync(second.get_ref());
}
