//! The state every clone of a breaker shares, and the paths that change it: admission
//! past the lock-free check, recording outcomes, and transitions.

use std::time::Duration;

use metrics::{Gauge, counter};
use tokio::{sync::watch, time::Instant};

use super::{
    error::Rejected,
    in_a_row::InARow,
    machine::{Machine, OpenPolicy},
    state::{State, Transition, TransitionReason, generation_of, pack},
    window::{self, CountWindow, Sample},
};
use crate::{
    Health, Name, clock,
    sync::{AtomicU64, Mutex, Ordering, lock},
};

/// The callback run after every transition.
pub(super) type Callback = Box<dyn Fn(&Transition) + Send + Sync>;

/// A breaker's configuration and state, behind the `Arc` its clones share.
pub(super) struct Shared {
    pub(super) target: Name,
    pub(super) consecutive_limit: Option<u32>,
    pub(super) failure_rate: Option<f64>,
    pub(super) minimum_calls: u64,
    pub(super) slow_call: Option<Duration>,
    pub(super) slow_call_rate: f64,
    pub(super) probes: u32,
    pub(super) open: OpenPolicy,
    /// State and generation, packed: the lock-free read path.
    pub(super) snapshot: AtomicU64,
    /// Failures in a row, tagged with the generation they count for: see [`InARow`].
    pub(super) consecutive_failures: AtomicU64,
    /// Present when a rate rule is on.
    pub(super) window: Option<CountWindow>,
    pub(super) machine: Mutex<Machine>,
    pub(super) events: watch::Sender<State>,
    pub(super) on_transition: Option<Callback>,
    pub(super) gauge: Gauge,
    pub(super) transitions_metric: String,
}

impl Shared {
    /// The slow path of admission (any state but closed or disabled): moves an open
    /// circuit whose break is over to half-open, hands out probe slots, or rejects.
    /// Returns the admitted permit's generation and whether it is a probe.
    #[cold]
    #[inline(never)]
    pub(super) fn admit(&self, now: Instant) -> Result<(u64, bool), Rejected> {
        let mut m = lock(&self.machine);
        let mut moved = None;
        if m.state == State::Open && m.open_until.is_some_and(|t| now >= t) {
            moved = Some(self.enter(&mut m, State::HalfOpen, TransitionReason::BreakElapsed, now));
        }
        if m.state == State::HalfOpen
            && m.probes_admitted >= self.probes
            && now.saturating_duration_since(m.half_open_since) >= m.open_for
        {
            // Every probe has outlived the open duration: count them as failed rather
            // than stay half-open forever.
            let t = self.enter(&mut m, State::Open, TransitionReason::ProbeFailed, now);
            drop(m);
            self.announce(moved.into_iter().chain([t]));
            return Err(self.rejected_at(now));
        }
        let result = match m.state {
            State::Closed | State::Disabled => Ok((m.generation, false)),
            State::HalfOpen if m.probes_admitted < self.probes => {
                m.probes_admitted += 1;
                Ok((m.generation, true))
            }
            // Every probe is out: they count as failed once the open duration has passed.
            State::HalfOpen => Err(clock::deadline_after(m.half_open_since, m.open_for)
                .map_or(Duration::MAX, |t| t.saturating_duration_since(now))),
            State::Open => Err(m
                .open_until
                .map_or(Duration::MAX, |t| t.saturating_duration_since(now))),
            State::ForcedOpen => Err(m.open_for),
        };
        drop(m);
        self.announce(moved);
        result.map_err(|retry_after| Rejected {
            target: self.target.clone(),
            retry_after,
        })
    }

    fn rejected_at(&self, now: Instant) -> Rejected {
        let m = lock(&self.machine);
        Rejected {
            target: self.target.clone(),
            retry_after: m
                .open_until
                .map_or(Duration::MAX, |t| t.saturating_duration_since(now)),
        }
    }

    /// Whether outcomes need their duration (a slow-call rule is on).
    #[inline]
    pub(super) fn tracks_slow_calls(&self) -> bool {
        self.slow_call.is_some()
    }

    /// Records the outcome of a permit of `permit_generation`: a probe's decides the
    /// half-open state; a closed-state call's counts toward the rules, unless its
    /// generation is over.
    #[inline]
    pub(super) fn record(
        &self,
        permit_generation: u64,
        probe: bool,
        health: Health,
        elapsed: Option<Duration>,
    ) {
        let slow = matches!((self.slow_call, elapsed), (Some(limit), Some(e)) if e >= limit);
        if matches!(health, Health::Success)
            && !slow
            && !probe
            && self.success_changes_nothing(permit_generation)
        {
            return;
        }
        self.record_change(permit_generation, probe, health, slow);
    }

    /// [`record`](Self::record) for an outcome that may change something: apart, so
    /// that the healthy path's loads are all a call inlines.
    #[inline(never)]
    fn record_change(&self, permit_generation: u64, probe: bool, health: Health, slow: bool) {
        if probe {
            return self.record_probe(permit_generation, health, slow);
        }
        let snapshot = self.snapshot.load(Ordering::Acquire);
        if generation_of(snapshot) != permit_generation || State::from_bits(snapshot) != State::Closed {
            return; // a permit from an earlier state, or the breaker is disabled
        }
        let (in_a_row, sample) = match health {
            Health::Ignore => return,
            Health::Success => {
                if !slow {
                    InARow::success(&self.consecutive_failures, permit_generation);
                }
                (0, if slow { Sample::Slow } else { Sample::Success })
            }
            Health::Failure => match InARow::failure(&self.consecutive_failures, permit_generation) {
                Some(in_a_row) => (in_a_row, Sample::Failure),
                None => return, // the generation ended after the check above
            },
        };
        // NOTE: the rate rules are checked after every sample, successes included: the
        // sample that brings the window to `minimum_calls` may be a success.
        let counts = match &self.window {
            Some(w) => {
                let (counts, written) = w.push(sample, permit_generation);
                // NOTE: the generation may have ended between the check above and the
                // push, and a reset cleared the window for the next: take the stale
                // sample back. A window is cleared only on entering closed, always from
                // another state whose generation was published before the clear; a push
                // that landed after the clear read a slot the clear released, so this
                // load sees a later generation than the permit's.
                if let Some(written) = written
                    && generation_of(self.snapshot.load(Ordering::Acquire)) != permit_generation
                {
                    w.undo(written);
                    return;
                }
                Some(counts)
            }
            None => None,
        };
        let reason = if self.consecutive_limit.is_some_and(|limit| in_a_row >= limit) {
            Some(TransitionReason::FailureThreshold)
        } else {
            counts.and_then(|c| self.rate_rule(c))
        };
        if let Some(reason) = reason {
            self.open_once(permit_generation, reason);
        }
    }

    /// Whether a success (not slow) of a closed-state permit of `generation` would
    /// change nothing: there is no run of failures for it to end, and the window, if
    /// any, holds only successes, so its push writes nothing and no rule can trip. The
    /// healthy path, checked with loads alone, before anything else.
    #[inline]
    fn success_changes_nothing(&self, generation: u64) -> bool {
        let snapshot = self.snapshot.load(Ordering::Acquire);
        let current = generation_of(snapshot) == generation && State::from_bits(snapshot) == State::Closed;
        // NOTE: a permit of another generation, or a breaker no longer closed, is
        // ignored by the full path too: it changes nothing either.
        !current
            || (InARow::count(self.consecutive_failures.load(Ordering::Relaxed)) == 0
                && self.window.as_ref().is_none_or(CountWindow::holds_only_successes))
    }

    /// Which rate rule, if any, the window's counts break.
    #[inline]
    fn rate_rule(&self, c: window::Counts) -> Option<TransitionReason> {
        // NOTE: both rates are validated to be above zero, so a window with no failure
        // and no slow call breaks neither: the healthy path skips the arithmetic.
        if c.calls < self.minimum_calls || (c.failures == 0 && c.slow == 0) {
            return None;
        }
        let calls = c.calls as f64;
        if self
            .failure_rate
            .is_some_and(|rate| c.failures as f64 >= rate * calls)
        {
            Some(TransitionReason::FailureRate)
        } else if self.slow_call.is_some() && c.slow as f64 >= self.slow_call_rate * calls {
            Some(TransitionReason::SlowCalls)
        } else {
            None
        }
    }

    /// Failures in a row the closed state has counted (for the model checks).
    #[cfg(all(test, stayfast_loom))]
    pub(super) fn failures_in_a_row(&self) -> u32 {
        InARow::count(self.consecutive_failures.load(Ordering::Acquire))
    }

    /// Closed → open, once per generation however many callers see the threshold.
    #[cold]
    #[inline(never)]
    fn open_once(&self, generation: u64, reason: TransitionReason) {
        let mut m = lock(&self.machine);
        if m.generation != generation || m.state != State::Closed {
            return;
        }
        let t = self.enter(&mut m, State::Open, reason, Instant::now());
        drop(m);
        self.announce([t]);
    }

    #[cold]
    #[inline(never)]
    fn record_probe(&self, generation: u64, health: Health, slow: bool) {
        let mut m = lock(&self.machine);
        if m.generation != generation || m.state != State::HalfOpen {
            return; // a stale probe: its generation is over, its result changes nothing
        }
        let t = match (health, slow) {
            (Health::Ignore, _) => {
                m.probes_admitted -= 1;
                None
            }
            (Health::Success, false) => {
                m.probes_succeeded += 1;
                (m.probes_succeeded >= self.probes).then(|| {
                    self.enter(
                        &mut m,
                        State::Closed,
                        TransitionReason::ProbeSucceeded,
                        Instant::now(),
                    )
                })
            }
            (Health::Failure, _) | (Health::Success, true) => {
                Some(self.enter(&mut m, State::Open, TransitionReason::ProbeFailed, Instant::now()))
            }
        };
        drop(m);
        self.announce(t);
    }

    #[cold]
    #[inline(never)]
    pub(super) fn release_probe(&self, generation: u64) {
        let mut m = lock(&self.machine);
        if m.generation == generation && m.state == State::HalfOpen {
            m.probes_admitted -= 1;
        }
    }

    /// Opens a closed or half-open circuit now (see `CircuitBreaker::trip`).
    pub(super) fn trip(&self) -> bool {
        let mut m = lock(&self.machine);
        if !matches!(m.state, State::Closed | State::HalfOpen) {
            return false;
        }
        let t = self.enter(&mut m, State::Open, TransitionReason::Tripped, Instant::now());
        drop(m);
        self.announce(Some(t));
        true
    }

    /// Moves to `to` by hand (force open, reset, disable).
    pub(super) fn manual(&self, to: State) {
        let mut m = lock(&self.machine);
        if m.state == to {
            if to == State::Closed {
                // Already closed: forget the counts, keep the generation (nothing changed
                // state, so in-flight permits still count).
                InARow::restart(&self.consecutive_failures, m.generation);
                if let Some(w) = &self.window {
                    w.clear();
                }
            }
            return;
        }
        let t = self.enter(&mut m, to, TransitionReason::Manual, Instant::now());
        drop(m);
        self.announce(Some(t).filter(|t| t.from != t.to));
    }

    /// Applies a transition under the lock: the machine, the lock-free snapshot, the
    /// counters of the new state, the gauge and the watch channel — everything whose
    /// order must match the order of transitions.
    fn enter(&self, m: &mut Machine, to: State, reason: TransitionReason, now: Instant) -> Transition {
        let from = m.enter(to, reason, &self.open, now);
        if to == State::Closed {
            InARow::restart(&self.consecutive_failures, m.generation);
            if let Some(w) = &self.window {
                w.clear();
            }
        }
        self.snapshot.store(pack(to, m.generation), Ordering::Release);
        self.gauge.set(to.gauge_value());
        self.events.send_replace(to);
        Transition {
            target: self.target.clone(),
            from,
            to,
            reason,
            generation: m.generation,
        }
    }

    /// Publishes transitions outside the lock: callback, log, counter.
    #[cold]
    #[inline(never)]
    fn announce(&self, transitions: impl IntoIterator<Item = Transition>) {
        for t in transitions {
            tracing::warn!(
                target: "stayfast::breaker",
                breaker = %t.target, from = %t.from, to = %t.to, reason = %t.reason,
                generation = t.generation,
                "circuit breaker changed state"
            );
            counter!(
                self.transitions_metric.clone(),
                "target" => self.target.to_label(), "to" => t.to.as_str(), "reason" => t.reason.as_str()
            )
            .increment(1);
            if let Some(callback) = &self.on_transition {
                callback(&t);
            }
        }
    }

    /// Whether a call made now would be admitted as a probe (see
    /// `CircuitBreaker::probe_due`); changes nothing.
    pub(super) fn probe_due(&self) -> bool {
        if matches!(
            State::from_bits(self.snapshot.load(Ordering::Acquire)),
            State::Closed | State::Disabled | State::ForcedOpen
        ) {
            return false; // no lock on the hot path
        }
        let m = lock(&self.machine);
        match m.state {
            State::Open => m.open_until.is_some_and(|t| Instant::now() >= t),
            State::HalfOpen => m.probes_admitted < self.probes,
            State::Closed | State::Disabled | State::ForcedOpen => false,
        }
    }
}
