//! Circuit breaker behaviour, one module per behaviour: transitions at their exact
//! boundaries under paused time ([`transitions`], A1), the half-open probe limit, also
//! under contention ([`half_open`], A2), [`stale_permits`], [`manual`] controls,
//! [`extreme_durations`] (A3), the breaker's [`state_metrics`], a multi-threaded [`stress`] run
//! (B2) and a property test against a reference [`model`] (B4). Test ids are listed in
//! `docs/testing.md`.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

mod extreme_durations;
mod half_open;
mod manual;
mod model;
mod stale_permits;
mod state_metrics;
mod stress;
mod transitions;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use State::{Closed, Disabled, ForcedOpen, HalfOpen, Open};
use TransitionReason::{
    BreakElapsed, FailureRate, FailureThreshold, Manual, ProbeFailed, ProbeSucceeded, SlowCalls, Tripped,
};
use metrics_util::{
    MetricKind,
    debugging::{DebugValue, DebuggingRecorder, Snapshotter},
};
use proptest::prelude::*;
use stayfast_core::{
    CircuitBreaker, Health,
    breaker::{Permit, State, Transition, TransitionReason},
    config::BreakerConfig,
};
use support::XorShift;
use tokio::time::advance;

type Log = Arc<Mutex<Vec<Transition>>>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Consecutive-failure rule only (no rate rule), `probes` half-open probes, open for
/// `open_ms`, doubling on each failed probe up to 10× `open_ms`.
fn config(consecutive: u32, probes: u32, open_ms: u64) -> BreakerConfig {
    let mut c = BreakerConfig::default();
    c.consecutive_failures = Some(consecutive);
    c.failure_rate = None;
    c.half_open_probes = probes;
    c.open_for = ms(open_ms);
    c.open_growth = 2.0;
    c.max_open_for = ms(open_ms * 10);
    c
}

/// A breaker whose transitions are collected, in callback order, into the returned log.
fn logged(target: &'static str, config: &BreakerConfig) -> (CircuitBreaker, Log) {
    let log = Log::default();
    let sink = Arc::clone(&log);
    let breaker = CircuitBreaker::builder(target)
        .config(config)
        .on_transition(move |t| sink.lock().unwrap().push(t.clone()))
        .build()
        .unwrap();
    (breaker, log)
}

/// The log as `(from, to, reason, generation)`.
fn steps(log: &Log) -> Vec<(State, State, TransitionReason, u64)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|t| (t.from, t.to, t.reason, t.generation))
        .collect()
}

fn last(log: &Log) -> Option<(State, State, TransitionReason, u64)> {
    steps(log).last().copied()
}

/// One whole call: acquire and record at once. False when rejected.
fn call(breaker: &CircuitBreaker, health: Health) -> bool {
    match breaker.try_acquire() {
        Ok(permit) => {
            permit.record(health);
            true
        }
        Err(_) => false,
    }
}

/// The `retry_after` of a rejection; panics when the call is admitted.
fn rejected_for(breaker: &CircuitBreaker) -> Duration {
    match breaker.try_acquire() {
        Ok(permit) => panic!("expected a rejection, got {permit:?} in {:?}", breaker.state()),
        Err(rejected) => rejected.retry_after(),
    }
}

/// Trips a `config(1, ..)` breaker with one failure.
fn trip(breaker: &CircuitBreaker) {
    assert!(call(breaker, Health::Failure));
    assert_eq!(breaker.state(), State::Open);
}
