//! Breaker states and the transitions between them.

use std::fmt;

use crate::Name;

/// The state of a [`CircuitBreaker`](super::CircuitBreaker).
///
/// # Examples
///
/// ```
/// use stayfast_core::breaker::State;
/// assert_eq!(State::HalfOpen.gauge_value(), 2.0);
/// assert_eq!(State::ForcedOpen.as_str(), "open");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of probes pass; their outcomes decide between closed and open.
    HalfOpen,
    /// Calls pass and nothing is counted ([`CircuitBreaker::disable`](super::CircuitBreaker::disable)).
    Disabled,
    /// Calls are rejected until [`reset`](super::CircuitBreaker::reset)
    /// ([`CircuitBreaker::force_open`](super::CircuitBreaker::force_open)).
    ForcedOpen,
}

impl State {
    /// The value of the `stayfast_circuit_state` gauge: 0 closed, 1 open (forced or
    /// not), 2 half-open, 3 disabled.
    ///
    /// ```
    /// # use stayfast_core::breaker::State;
    /// assert_eq!(State::Closed.gauge_value(), 0.0);
    /// assert_eq!(State::ForcedOpen.gauge_value(), State::Open.gauge_value());
    /// ```
    pub const fn gauge_value(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::Open | State::ForcedOpen => 1.0,
            State::HalfOpen => 2.0,
            State::Disabled => 3.0,
        }
    }

    /// The `to` label value of `stayfast_circuit_transitions_total`.
    ///
    /// ```
    /// # use stayfast_core::breaker::State;
    /// assert_eq!(State::HalfOpen.as_str(), "half_open");
    /// assert_eq!(State::ForcedOpen.to_string(), "forced open"); // `Display` tells them apart
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open | State::ForcedOpen => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
        }
    }

    /// True when calls are rejected without a probe.
    ///
    /// ```
    /// # use stayfast_core::breaker::State;
    /// assert!(State::ForcedOpen.is_open());
    /// assert!(!State::HalfOpen.is_open()); // admits probes
    /// ```
    pub const fn is_open(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    pub(crate) const fn to_bits(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::Disabled => 3,
            State::ForcedOpen => 4,
        }
    }

    pub(crate) const fn from_bits(bits: u64) -> Self {
        match bits & STATE_MASK {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::Disabled,
            _ => State::ForcedOpen,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::ForcedOpen => "forced open",
            other => other.as_str(),
        })
    }
}

/// Bits of the packed snapshot that hold the state; the rest hold the generation.
pub(crate) const STATE_MASK: u64 = 0b111;
pub(crate) const STATE_BITS: u32 = 3;

/// Packs a state and a generation into one word, so both are read in one atomic load.
pub(crate) const fn pack(state: State, generation: u64) -> u64 {
    (generation << STATE_BITS) | state.to_bits()
}

/// The generation of a packed snapshot.
pub(crate) const fn generation_of(snapshot: u64) -> u64 {
    snapshot >> STATE_BITS
}

/// Why a breaker changed state: the `reason` label of
/// `stayfast_circuit_transitions_total`.
///
/// # Examples
///
/// ```
/// use stayfast_core::breaker::TransitionReason;
/// assert_eq!(TransitionReason::SlowCalls.as_str(), "slow_calls");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// Closed → open: too many failures in a row.
    FailureThreshold,
    /// Closed → open: the failure rate over the window reached its threshold.
    FailureRate,
    /// Closed → open: the slow-call rate over the window reached its threshold.
    SlowCalls,
    /// Half-open → open: a probe failed, was slow, or outlived the open duration.
    ProbeFailed,
    /// Half-open → closed: every probe succeeded.
    ProbeSucceeded,
    /// Open → half-open: the open duration has passed.
    BreakElapsed,
    /// `force_open`, `reset` or `disable`.
    Manual,
    /// Closed or half-open → open: [`trip`](super::CircuitBreaker::trip) was called — a
    /// signal from outside the calls, such as a client reporting every connection lost.
    Tripped,
}

impl TransitionReason {
    /// The label value.
    ///
    /// ```
    /// # use stayfast_core::breaker::TransitionReason;
    /// assert_eq!(TransitionReason::ProbeFailed.as_str(), "probe_failed");
    /// assert_eq!(TransitionReason::Manual.to_string(), "manual");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            TransitionReason::FailureThreshold => "failure_threshold",
            TransitionReason::FailureRate => "failure_rate",
            TransitionReason::SlowCalls => "slow_calls",
            TransitionReason::ProbeFailed => "probe_failed",
            TransitionReason::ProbeSucceeded => "probe_succeeded",
            TransitionReason::BreakElapsed => "break_elapsed",
            TransitionReason::Manual => "manual",
            TransitionReason::Tripped => "tripped",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change, as passed to the transition callback.
///
/// # Examples
///
/// ```
/// use stayfast_core::breaker::{State, Transition, TransitionReason};
/// # fn show(t: &Transition) -> String {
/// format!("{}: {} -> {} ({})", t.target, t.from, t.to, t.reason)
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The breaker's target.
    pub target: Name,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why.
    pub reason: TransitionReason,
    /// The generation of the new state; permits of earlier generations no longer count.
    pub generation: u64,
}
