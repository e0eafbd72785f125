//! The tower layer against the bare policy and tower's own stacks, on a ready service.
//!
//! Every variant calls the same `service_fn` whose future is ready on its first poll,
//! driving `poll_ready` before each `call` as a tower stack does, on a current-thread
//! runtime with the Prometheus recorder installed (as in `overhead`):
//!
//! - `bare_service`: the service alone.
//! - `stayfast_policy`: the bare [`Policy`] (timeout, deadline, retry + budget, breaker,
//!   metrics) around the same future, no tower.
//! - `stayfast_layer`: that policy as a [`PolicyLayer`] around the service.
//! - `tower_stack`: tower's concurrency limit → retry (3 attempts) → timeout.
//! - `tower_resilience_breaker`: tower-resilience's circuit breaker → tower's timeout.
//! - `tower_full_stack`: the same features as the policy, from the peers: tower's
//!   concurrency limit → retry → tower-resilience's breaker → tower's timeout.
//!
//! Run with `cargo bench -p stayfast-benches --bench tower`.

mod support;

use std::{hint::black_box, io, time::Duration};

use criterion::Criterion;
use stayfast_benches::micro::{full_policy, tower_full_stack, tower_stack};
use stayfast_core::tower::PolicyLayer;
use support::install_recorder;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_resilience::circuitbreaker::CircuitBreakerLayer;

/// The service every variant wraps: answers at once.
async fn answer(request: u64) -> Result<u64, io::Error> {
    Ok(black_box(request))
}

/// One call through `service` as a tower stack makes it: ready, then call.
async fn call<S: Service<u64>>(service: &mut S) -> Result<S::Response, S::Error> {
    service.ready().await?.call(black_box(7)).await
}

fn tower_overhead(c: &mut Criterion) {
    let _recorder = install_recorder();
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build a current-thread runtime");
    // Everything below is built after the recorder is installed.
    let policy = full_policy("bench.tower", None, true);
    let mut bare = service_fn(answer);
    let mut layered = PolicyLayer::new(full_policy("bench.tower", None, true)).layer(service_fn(answer));
    let mut tower_stack = tower_stack(service_fn(answer));
    let breaker = CircuitBreakerLayer::builder()
        .build()
        .expect("build tower-resilience's breaker");
    let mut resilience = ServiceBuilder::new()
        .layer(breaker)
        .timeout(Duration::from_secs(1))
        .service(service_fn(answer));

    let mut full_stack = tower_full_stack(service_fn(answer));

    let mut group = c.benchmark_group("tower");
    group.bench_function("bare_service", |b| {
        b.iter(|| rt.block_on(async { black_box(call(&mut bare).await.ok()) }))
    });
    group.bench_function("stayfast_policy", |b| {
        b.iter(|| rt.block_on(async { black_box(policy.call(|| answer(black_box(7))).await.ok()) }))
    });
    group.bench_function("stayfast_layer", |b| {
        b.iter(|| rt.block_on(async { black_box(call(&mut layered).await.ok()) }))
    });
    group.bench_function("tower_stack", |b| {
        b.iter(|| rt.block_on(async { black_box(call(&mut tower_stack).await.ok()) }))
    });
    group.bench_function("tower_resilience_breaker", |b| {
        b.iter(|| rt.block_on(async { black_box(call(&mut resilience).await.ok()) }))
    });
    group.bench_function("tower_full_stack", |b| {
        b.iter(|| rt.block_on(async { black_box(call(&mut full_stack).await.ok()) }))
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    tower_overhead(&mut criterion);
    criterion.final_summary();
}
