//! A trivial blocking closure offloaded by stayfast against the bare
//! `tokio::task::spawn_blocking` + `tokio::time::timeout` it replaces.
//!
//! Both hop to tokio's blocking pool and back, so what differs is stayfast's
//! machinery: the thread slot (moved into the closure), the in-flight gauge, the
//! abandonment check, and the policy around it (timeout and metrics; `_full` adds a
//! breaker and retry). A Prometheus recorder is installed first, as in a service.
//!
//! - `bare`: `timeout(1s, spawn_blocking(f))`.
//! - `stayfast_offload`: `Offload::run` under a policy with a 1 s timeout.
//! - `stayfast_offload_full`: the same with a breaker, retry and a deadline.
//!
//! Each call costs two thread wake-ups (runtime → blocking thread → runtime), so on a
//! shared machine the load of other processes moves whole criterion runs by more than
//! the 10 % being judged. The run therefore ends with a paired comparison: `bare` and
//! `stayfast_offload` timed in alternating short rounds, reporting the median
//! per-call time of each and the median of the per-round ratios.
//!
//! Run with `cargo bench -p stayfast-benches --bench offload`.

mod support;

use std::{
    convert::Infallible,
    hint::black_box,
    time::{Duration, Instant},
};
use support::install_recorder;

use criterion::Criterion;
use stayfast_benches::micro::{full_policy, offload_policy};
use stayfast_core::{Offload, OffloadConfig, Policy};
use tokio::runtime::Runtime;

/// The blocking work: as little as possible, so the hop and the wrapper are measured.
fn trivial() -> u64 {
    black_box(1)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build a current-thread runtime")
}

fn offload(c: &mut Criterion) {
    let _recorder = install_recorder();
    let rt = runtime();

    let offload = Offload::new("bench", &OffloadConfig::default()).expect("build an offload");
    let policy = offload_policy();
    let full = full_policy("bench.offload_full", None, true);

    let mut group = c.benchmark_group("offload");

    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            tokio::time::timeout(Duration::from_secs(1), tokio::task::spawn_blocking(trivial)).await
        })
    });

    group.bench_function("stayfast_offload", |b| {
        b.to_async(&rt)
            .iter(|| offload.run(&policy, || Ok::<_, Infallible>(trivial())))
    });

    group.bench_function("stayfast_offload_full", |b| {
        b.to_async(&rt)
            .iter(|| offload.run(&full, || Ok::<_, Infallible>(trivial())))
    });

    group.finish();

    // Not under `--list` or `--test` (a smoke run), where criterion times nothing either.
    if !std::env::args().any(|a| a == "--list" || a == "--test") {
        paired(&rt, &offload, &policy);
    }
}

async fn bare_call() {
    let joined = tokio::time::timeout(Duration::from_secs(1), tokio::task::spawn_blocking(trivial)).await;
    let _ = black_box(joined);
}

async fn offload_call(offload: &Offload, policy: &Policy) {
    let result = offload.run(policy, || Ok::<_, Infallible>(trivial())).await;
    let _ = black_box(result);
}

/// `bare` against `stayfast_offload` in alternating rounds (the order flipped every
/// round), so load drifts hit both alike.
fn paired(rt: &Runtime, offload: &Offload, policy: &Policy) {
    const ROUNDS: usize = 41;
    const CALLS: u32 = 2_000;
    let per_call = |started: Instant| started.elapsed() / CALLS;
    let (mut bare, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let time_bare = || {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..CALLS {
                    bare_call().await;
                }
                per_call(started)
            })
        };
        let time_ours = || {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..CALLS {
                    offload_call(offload, policy).await;
                }
                per_call(started)
            })
        };
        let (b, o) = if round % 2 == 0 {
            let b = time_bare();
            (b, time_ours())
        } else {
            let o = time_ours();
            (time_bare(), o)
        };
        bare.push(b);
        ours.push(o);
        ratios.push(o.as_secs_f64() / b.as_secs_f64());
    }
    bare.sort();
    ours.sort();
    ratios.sort_by(f64::total_cmp);
    let mid = ROUNDS / 2;
    println!(
        "offload/paired ({ROUNDS} rounds of {CALLS} calls each): bare {:?}, stayfast_offload {:?} per call; \
         ratio median {:.3} (quartiles {:.3}..{:.3})",
        bare[mid],
        ours[mid],
        ratios[mid],
        ratios[ROUNDS / 4],
        ratios[3 * ROUNDS / 4]
    );
}

// NOTE: `criterion_group!` generates an undocumented public function, which the
// workspace's `missing_docs` lint rejects, so `main` is spelled out.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    offload(&mut criterion);
    criterion.final_summary();
}
