//! The `run` path every command takes: the probe held back while unconnected, the
//! in-flight count, the command's policy, and the attempt's deadline handed to fred.

use std::{future::Future, time::Duration};

use fred::{
    clients::{Client, Pool, WithOptions},
    error::Error as FredError,
    interfaces::ClientLike,
    types::config::Options,
};

use super::{Command, Redis, RedisError, lanes::Lane};
use crate::{Attempt, Error, Outcome, Policy, breaker::State};

/// The fred options for one attempt: its deadline, a little early; fail fast while
/// disconnected; one attempt inside fred.
pub(super) fn options(attempt: &Attempt, margin: Duration) -> Options {
    // NOTE: the time allotted, not the time remaining: the options are made as the
    // attempt starts, and a clock read per command is measurable (the Redis benchmark).
    options_within(attempt.allotted(), margin)
}

/// The fred options for one attempt of a command of `lane`: a write's carry its
/// deadline ([`options`]), a read's none.
///
/// A write carries its deadline into fred so that, if fred has not written it when time
/// runs out, fred drops it rather than sending it after the caller gave up (a ghost
/// write). A read needs no such guard — sent late, it changes nothing — and fred's
/// deadline is a tokio timer per command, set and cancelled on every call: about 1,400
/// instructions, as much as the rest of the handle's cost (callgrind, 50 callers). So a
/// read's deadline is zero (no timer in fred) and the handle's backstop ends it if it
/// runs past its deadline.
#[inline]
fn options_in(lane: Lane, attempt: &Attempt, margin: Duration) -> Options {
    match lane {
        Lane::Read => read_options(margin),
        Lane::Write => options(attempt, margin),
    }
}

/// A read's fred options, the same for every attempt (see [`options_in`]).
fn read_options(margin: Duration) -> Options {
    Options {
        timeout: Some(Duration::ZERO), // fred: no deadline (`None` is its default one)
        ..options_within(None, margin)
    }
}

/// Every connection of `pool`, in order, with a read's options: what
/// [`Redis::read`] lends.
pub(super) fn readers(pool: &Pool, margin: Duration) -> Box<[WithOptions<Client>]> {
    let options = read_options(margin);
    pool.clients().iter().map(|c| c.with_options(&options)).collect()
}

/// The fred options for a command that must end within `left` (none: fred's default
/// command timeout, `RedisConfig::command_timeout`).
pub(super) fn options_within(left: Option<Duration>, margin: Duration) -> Options {
    let timeout = left.map(|left| {
        left.checked_sub(margin)
            .filter(|t| !t.is_zero())
            .unwrap_or(Duration::from_millis(1))
    });
    Options {
        timeout,
        fail_fast: true,
        max_attempts: Some(1),
        ..Options::default()
    }
}

impl Redis {
    pub(super) fn policy(&self, command: Command) -> &Policy {
        &self.inner.policies[command as usize]
    }

    /// Holds back the breaker's half-open probe while no connection of the pool is up.
    ///
    /// fred fails a command at once, unsent, while its client is not connected (the
    /// `fail_fast` option): as a probe, it asks Redis nothing. Counted as a failed probe,
    /// it re-opened the circuit with a grown break (1 s, 2 s, 4 s… up to `max_open_for`)
    /// while fred was still reconnecting, and a Redis restarted meanwhile was not used
    /// again until that break had passed (issue #12 item 19: about 25 s). Instead the
    /// call is rejected as the open circuit would reject it and the breaker is left
    /// open: the probe goes with the first call after fred has reconnected, and a
    /// restarted Redis serves again within fred's reconnect delay. Only an attempted
    /// probe that fails (a timeout, an error reply) grows the break.
    ///
    /// Also fails a call at once, without an attempt, while Redis refuses this client's
    /// connections (a wrong password, a right the setup needs: see `refusal`).
    #[inline]
    pub(super) fn hold_probe_while_unconnected(&self, command: Command) -> Result<(), RedisError> {
        if self.inner.breaker.state() == State::Closed && !self.inner.unreachable.refused() {
            return Ok(()); // the hot path: two atomic loads
        }
        self.hold_probe_slow(command)
    }

    #[cold]
    #[inline(never)]
    fn hold_probe_slow(&self, command: Command) -> Result<(), RedisError> {
        if self.inner.unreachable.refused()
            && let Some(refusal) = self.refusal(command)
        {
            self.inner.held[command as usize].record(Outcome::Failure, Duration::ZERO);
            return Err(refusal);
        }
        if self.inner.breaker.state() == State::Closed {
            return Ok(());
        }
        let breaker = &self.inner.breaker;
        if !breaker.probe_due() || self.inner.pool.clients().iter().any(ClientLike::is_connected) {
            return Ok(());
        }
        // Counted as the policy counts the calls an open circuit rejects.
        self.inner.held[command as usize].record(Outcome::Rejected, Duration::ZERO);
        Err(Error::CircuitOpen {
            target: breaker.target().clone(),
            retry_after: self.inner.reconnect_max_delay,
        })
    }

    /// Runs `op` under `command`'s policy, handing it a connection whose commands carry
    /// the attempt's deadline (for a read command, none: the policy's bound ends it).
    /// Use it for commands the handle does not wrap. The connection is the one every
    /// caller uses for `command`'s kind: reads (`Command::Get`, `Command::Lrange`…) on
    /// the read connection, anything else on the one Redis may hold during
    /// `CLIENT PAUSE WRITE` — so name the command `op` really sends.
    ///
    /// Methods that ignore the options (`eval`, `pipeline()`, `scan`, transactions —
    /// fred's `WithOptions` falls through to the bare client for them) must not be called
    /// on the handed connection: use [`eval`](Self::eval), [`pipeline`](Self::pipeline) and
    /// [`scan_keys`](Self::scan_keys).
    ///
    /// # Errors
    ///
    /// The policy's [`Error`], around fred's errors; [`Error::CircuitOpen`] also while
    /// the circuit's break is over but no connection is up (see the [module docs](super)).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// use fred::interfaces::KeysInterface;
    /// use stayfast_core::redis::Command;
    /// // INCR, which the handle does not wrap, under the (non-idempotent) `redis.other` policy:
    /// let visits: i64 = redis.run(Command::Other, |c| async move { c.incr("visits").await }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<T, F, Fut>(&self, command: Command, mut op: F) -> Result<T, RedisError>
    where
        F: FnMut(WithOptions<Client>) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        let (pool, lanes, margin) = (&self.inner.pool, self.inner.lanes, self.inner.margin);
        let lane = command.lane();
        self.guarded(command, |attempt| {
            op(lanes
                .choose(pool, lane)
                .with_options(&options_in(lane, &attempt, margin)))
        })
        .await
    }

    /// [`run`](Self::run) for a read command the handle wraps: `op` borrows the read
    /// lane's connection, with the options every read carries, made once (see
    /// `Inner::readers`).
    #[inline]
    pub(super) async fn read<'s, T, F, Fut>(&'s self, command: Command, mut op: F) -> Result<T, RedisError>
    where
        F: FnMut(&'s WithOptions<Client>) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        debug_assert_eq!(command.lane(), Lane::Read, "{command:?} is not a read");
        let (pool, lanes, readers) = (&self.inner.pool, self.inner.lanes, &self.inner.readers);
        self.guarded(command, |_| op(&readers[lanes.choose_index(pool, Lane::Read)]))
            .await
    }

    /// Runs `attempt` under `command`'s policy, as one command in flight: what every
    /// call through the handle goes through. Fails at once while the probe is held back
    /// (see [`hold_probe_while_unconnected`](Self::hold_probe_while_unconnected)); an
    /// error says why Redis is unreachable when it is (issue #14, `unreachable.rs`).
    #[inline]
    pub(super) async fn guarded<T, F, Fut>(&self, command: Command, attempt: F) -> Result<T, RedisError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        // NOTE: counted per call, around the policy, not per attempt inside it: wrapping
        // every attempt's future in one more async block cost 5–8 % of GET throughput
        // on the Redis benchmark; this guard is a local of this future and cost nothing
        // measurable.
        self.hold_probe_while_unconnected(command)?;
        let _counted = self.inner.in_flight.enter();
        self.policy(command)
            .call_borrowed(attempt)
            .await
            .map_err(|e| self.explain(e))
    }
}

/// Converts a command's arguments once, before any attempt; a value that cannot be
/// sent is the caller's error, reported without touching Redis.
pub(super) fn convert<T, V>(command: Command, value: V) -> Result<T, RedisError>
where
    V: TryInto<T>,
    V::Error: Into<FredError>,
{
    value.try_into().map_err(|e| Error::Inner {
        operation: command.into(),
        source: e.into(),
        attempts: 0,
    })
}
