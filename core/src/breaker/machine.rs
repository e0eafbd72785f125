//! The breaker's state machine: every transition happens here, under the breaker's lock.

use std::time::Duration;

use tokio::time::Instant;

use super::state::{State, TransitionReason};
use crate::clock;

/// Everything that changes on a transition. Guarded by the breaker's mutex; the state
/// and generation are mirrored into the lock-free snapshot after every change.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) state: State,
    /// Bumped on every transition: a permit of another generation no longer counts.
    pub(crate) generation: u64,
    /// When an open circuit may admit a probe (`None`: past the end of time).
    pub(crate) open_until: Option<Instant>,
    /// The open duration in force; grows on each failed probe, reset on closing.
    pub(crate) open_for: Duration,
    pub(crate) half_open_since: Instant,
    /// Probes admitted in this half-open generation and not given back.
    pub(crate) probes_admitted: u32,
    pub(crate) probes_succeeded: u32,
}

/// Open-duration settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenPolicy {
    pub(crate) base: Duration,
    pub(crate) growth: f64,
    pub(crate) max: Duration,
}

impl OpenPolicy {
    /// The next open duration after `current`: grown, saturating, capped.
    pub(crate) fn grow(&self, current: Duration) -> Duration {
        let grown = Duration::try_from_secs_f64(current.as_secs_f64() * self.growth).unwrap_or(Duration::MAX);
        grown.clamp(self.base, self.max)
    }
}

impl Machine {
    pub(crate) fn new(open: &OpenPolicy, now: Instant) -> Self {
        Self {
            state: State::Closed,
            generation: 0,
            open_until: None,
            open_for: open.base,
            half_open_since: now,
            probes_admitted: 0,
            probes_succeeded: 0,
        }
    }

    /// Moves to `to`, returning the state it left. Open-duration bookkeeping for the
    /// new state is done here so every path into a state sets it up the same way.
    pub(crate) fn enter(
        &mut self,
        to: State,
        reason: TransitionReason,
        open: &OpenPolicy,
        now: Instant,
    ) -> State {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.probes_admitted = 0;
        self.probes_succeeded = 0;
        match to {
            State::Open => {
                // A failed probe, or a trip while probing: the dependency is still
                // down, so wait longer before the next probe.
                let relapse = reason == TransitionReason::ProbeFailed
                    || (reason == TransitionReason::Tripped && from == State::HalfOpen);
                self.open_for = if relapse {
                    open.grow(self.open_for)
                } else {
                    open.base
                };
                self.open_until = clock::deadline_after(now, self.open_for);
            }
            State::HalfOpen => self.half_open_since = now,
            State::Closed | State::Disabled | State::ForcedOpen => {
                self.open_for = open.base;
                self.open_until = None;
            }
        }
        from
    }
}
