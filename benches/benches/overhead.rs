//! Overhead of each stayfast wrapper against the bare future and the peer stack.
//!
//! Every variant awaits the same ready future on a current-thread tokio runtime, so
//! what is measured is the wrapper alone. A Prometheus recorder is installed once as
//! the global recorder before anything is built, as in a service, and its upkeep runs
//! on a thread of its own so histogram samples do not pile up.
//!
//! - `bare`: the ready future.
//! - `tokio_timeout`, `stayfast_timeout`: a 1 s timeout around it.
//! - `stayfast_metered`: [`Metered`] with cached handles.
//! - `stayfast_breaker`: a closed [`CircuitBreaker`] permit, recorded as a success.
//! - `stayfast_bulkhead`: a [`Bulkhead`] slot.
//! - `stayfast_policy_full`(`_bulkhead`): a [`Policy`] with timeout, deadline, retry,
//!   breaker and metrics (and a bulkhead).
//! - `stayfast_policy_full_info_subscriber`: the same under a `tracing` subscriber at
//!   `INFO`, which does not want the calls' `DEBUG` spans (the usual production setup).
//! - `stayfast_policy_full_traced`: the same under a subscriber that records every span
//!   (`tracing-subscriber`'s registry at `DEBUG`, writing nothing).
//! - `floor`: what any metered call must cost: two clock reads, one histogram record
//!   and one counter increment on cached handles.
//! - `peer_stack`: backon retry → failsafe breaker → tokio timeout → `metrics` macros
//!   with labels evaluated per call.
//!
//! The report (`scripts/bench-report`) times the same variants in paired rounds
//! (`stayfast_benches::micro::overhead`).
//!
//! Run with `cargo bench -p stayfast-benches --bench overhead`.

mod support;

use std::{io, time::Duration};
use support::install_recorder;

use criterion::Criterion;
use stayfast_benches::micro::{Subjects, peer_stack_call, ready};
use stayfast_core::{Health, Metered, TimeoutExt};
use tokio::{runtime::Runtime, time::Instant};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build a current-thread runtime")
}

fn overhead(c: &mut Criterion) {
    let _recorder = install_recorder();
    let rt = runtime();

    // Everything below is built after the recorder is installed.
    let subjects = Subjects::new();
    let peer_breaker = failsafe::Config::new().build();

    let mut group = c.benchmark_group("overhead");

    group.bench_function("bare", |b| b.to_async(&rt).iter(ready));

    group.bench_function("tokio_timeout", |b| {
        b.to_async(&rt)
            .iter(|| tokio::time::timeout(Duration::from_secs(1), ready()))
    });

    group.bench_function("stayfast_timeout", |b| {
        b.to_async(&rt).iter(|| ready().timeout(Duration::from_secs(1)))
    });

    group.bench_function("stayfast_metered", |b| {
        b.to_async(&rt)
            .iter(|| Metered::new(ready(), subjects.metrics.clone()))
    });

    group.bench_function("stayfast_breaker", |b| {
        b.to_async(&rt).iter(|| async {
            let permit = subjects.breaker.try_acquire().expect("the breaker is closed");
            let result = ready().await;
            permit.record(Health::Success);
            result
        })
    });

    group.bench_function("stayfast_bulkhead", |b| {
        b.to_async(&rt).iter(|| async {
            let _slot = subjects.bulkhead.acquire().await.expect("a free slot");
            ready().await
        })
    });

    group.bench_function("stayfast_policy_full", |b| {
        b.to_async(&rt).iter(|| subjects.policy.call(ready))
    });

    group.bench_function("stayfast_policy_full_bulkhead", |b| {
        b.to_async(&rt).iter(|| subjects.policy_bulkhead.call(ready))
    });

    group.bench_function("stayfast_policy_full_info_subscriber", |b| {
        let info = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(io::sink)
            .finish();
        let _on_this_thread = tracing::subscriber::set_default(info);
        b.to_async(&rt).iter(|| subjects.policy.call(ready))
    });

    group.bench_function("stayfast_policy_full_traced", |b| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let everything = tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::DEBUG);
        let _on_this_thread = tracing::subscriber::set_default(everything);
        b.to_async(&rt).iter(|| subjects.policy.call(ready))
    });

    group.bench_function("floor", |b| {
        b.to_async(&rt).iter(|| async {
            let started = Instant::now();
            let result = ready().await;
            subjects.floor_duration.record(started.elapsed().as_secs_f64());
            subjects.floor_calls.increment(1);
            result
        })
    });

    group.bench_function("peer_stack", |b| {
        b.to_async(&rt).iter(|| peer_stack_call(&peer_breaker))
    });

    group.finish();
}

// NOTE: `criterion_group!` generates an undocumented public function, which the
// workspace's `missing_docs` lint rejects, so `main` is spelled out.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    overhead(&mut criterion);
    criterion.final_summary();
}
