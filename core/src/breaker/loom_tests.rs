//! Model checks of the breaker's concurrent paths. Run by `scripts/test` with
//! `RUSTFLAGS="--cfg stayfast_loom"`; time is passed in as a value.

use std::{
    sync::atomic::{AtomicUsize, Ordering as StdOrdering},
    time::Duration,
};

use loom::{sync::Arc, thread};
use tokio::time::Instant;

use super::*;
use crate::{Health, config::BreakerConfig};

fn config(consecutive: u32, probes: u32) -> BreakerConfig {
    let mut c = BreakerConfig::default();
    c.consecutive_failures = Some(consecutive);
    c.failure_rate = None;
    c.half_open_probes = probes;
    c.open_for = Duration::from_secs(1);
    c
}

/// A breaker that has tripped, and an instant past its open duration.
fn tripped(probes: u32) -> (CircuitBreaker, Instant) {
    let breaker = CircuitBreaker::new("loom", &config(1, probes)).expect("valid config");
    breaker.try_acquire().expect("closed").record(Health::Failure);
    assert_eq!(breaker.state(), State::Open);
    (breaker, Instant::now() + Duration::from_secs(2))
}

fn admitted_concurrently(probes: u32, callers: usize) -> usize {
    let (breaker, later) = tripped(probes);
    let handles: Vec<_> = (0..callers)
        .map(|_| {
            let breaker = breaker.clone();
            thread::spawn(move || {
                let permit = breaker.acquire_slow(later);
                let admitted = permit.is_ok();
                // Hold the probe for the rest of the model: it must not be handed out twice.
                std::mem::forget(permit);
                admitted
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .filter(|&a| a)
        .count()
}

#[test]
fn loom_half_open_admits_exactly_one_probe() {
    loom::model(|| assert_eq!(admitted_concurrently(1, 2), 1));
}

#[test]
fn loom_half_open_admits_exactly_two_probes() {
    loom::model(|| assert_eq!(admitted_concurrently(2, 3), 2));
}

#[test]
fn loom_dropped_probe_returns_its_permit() {
    loom::model(|| {
        let (breaker, later) = tripped(1);
        let other = breaker.clone();
        let t = thread::spawn(move || {
            // Taken and dropped without an outcome: the slot comes back.
            drop(other.acquire_slow(later));
        });
        let mine = breaker.acquire_slow(later);
        let mine_ok = mine.is_ok();
        drop(mine);
        t.join().expect("thread");
        let after = breaker.acquire_slow(later);
        assert!(mine_ok || after.is_ok());
        assert!(after.is_ok(), "a dropped probe must give its slot back");
    });
}

#[test]
fn loom_simultaneous_failures_trip_once() {
    loom::model(|| {
        let transitions = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&transitions);
        let breaker = CircuitBreaker::builder("loom")
            .config(&config(2, 1))
            .on_transition(move |_| {
                counted.fetch_add(1, StdOrdering::SeqCst);
            })
            .build()
            .expect("valid config");
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let breaker = breaker.clone();
                thread::spawn(move || breaker.try_acquire().expect("closed").record(Health::Failure))
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(transitions.load(StdOrdering::SeqCst), 1);
    });
}

/// #12.7: a reset racing a push leaves the window's totals equal to what its slots hold
/// (no drift: every slot change is counted once, by whoever made it).
#[test]
fn loom_clear_racing_pushes_leaves_no_drift() {
    loom::model(|| {
        let window = Arc::new(window::CountWindow::new(2));
        let _ = window.push(window::Sample::Failure, 0);
        let pusher = {
            let window = Arc::clone(&window);
            thread::spawn(move || {
                let _ = window.push(window::Sample::Failure, 0);
            })
        };
        window.clear();
        pusher.join().expect("thread");
        assert!(window.totals_match_slots(), "the totals drifted from the slots");
        // And the next failures are counted as failures.
        window.clear();
        assert_eq!(window.push(window::Sample::Failure, 0).0.failures, 1);
    });
}

/// A closed-generation permit whose failure is recorded while another thread opens and
/// resets the breaker: whatever the interleaving, the new generation starts from zero.
fn stale_failure_racing_a_reset(config: BreakerConfig) -> CircuitBreaker {
    let breaker = CircuitBreaker::new("loom", &config).expect("valid config");
    // A permit borrows its breaker, so the thread records what a permit's `record` would.
    let generation = breaker.try_acquire().expect("closed").generation();
    let recorder = {
        let breaker = breaker.clone();
        thread::spawn(move || breaker.shared.record(generation, false, Health::Failure, None))
    };
    breaker.force_open();
    breaker.reset();
    recorder.join().expect("thread");
    assert_eq!(breaker.state(), State::Closed);
    breaker
}

/// #12.7: the consecutive-failure count of the new generation never holds a failure of
/// the generation a reset ended.
#[test]
fn loom_a_stale_failure_never_counts_in_the_next_generation() {
    loom::model(|| {
        let breaker = stale_failure_racing_a_reset(config(3, 1));
        assert_eq!(
            breaker.shared.failures_in_a_row(),
            0,
            "a stale failure was counted"
        );
    });
}

/// #12.7: the same for the lock-free count window (`failure_rate` on): the stale sample
/// is never left in the new generation's window, and the totals match the slots.
#[test]
fn loom_a_stale_sample_never_lands_in_the_next_window() {
    loom::model(|| {
        let mut c = config(3, 1);
        c.consecutive_failures = None;
        c.failure_rate = Some(0.5);
        c.window = 2;
        c.minimum_calls = 2;
        let breaker = stale_failure_racing_a_reset(c);
        let window = breaker.shared.window.as_ref().expect("a rate rule is on");
        assert!(window.totals_match_slots(), "the totals drifted from the slots");
        assert_eq!(window.failures(), 0, "a stale failure landed in the new window");
    });
}
