//! The pool's saturation gauges: connections, pool size, commands in flight through the
//! handle and commands buffered inside fred, sampled on a timer.
//!
//! The hot path only touches one relaxed atomic per command (an [`InFlight`] guard, on
//! the calling thread's stripe);
//! the metrics recorder is reached once per sampling period, never per call — the
//! handle's throughput is the point of it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicIsize, Ordering},
    },
    time::Duration,
};

use fred::{
    clients::Pool,
    interfaces::{ClientLike, MetricsInterface},
};
use metrics::{Gauge, gauge};

use crate::{
    sync::{SHARDS, this_threads_shard},
    telemetry::{
        REDIS_COMMANDS_BUFFERED, REDIS_COMMANDS_IN_FLIGHT, REDIS_CONNECTIONS, REDIS_POOL_SIZE, metric_name,
    },
};

/// How often the gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Commands sent through one handle (and its clones) with no reply yet. Shared by the
/// handle and its sampler; cheap to clone.
///
/// Counted in one stripe per thread shard, each on its own cache line: one counter that
/// every core increments and decrements on every command cost measurable throughput
/// with fifty callers on two cores. The gauge is the sum of the stripes.
#[derive(Clone, Default)]
pub(super) struct InFlight(Arc<[Stripe; SHARDS]>);

/// One stripe of [`InFlight`], alone on its cache line (128 bytes: two lines on CPUs
/// that fetch lines in pairs). Signed: a command counted in on one thread is counted
/// out on whichever thread it ends, so one stripe may go below zero; the sum cannot.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Stripe(AtomicIsize);

impl InFlight {
    /// Counts one command until the guard drops: on its reply, its error, its timeout,
    /// or when the caller drops the future — a cancelled call cannot leak the count.
    #[inline]
    pub(super) fn enter(&self) -> InFlightGuard<'_> {
        self.add(1);
        InFlightGuard(self)
    }

    /// Adds to the calling thread's stripe. Relaxed: the count orders nothing else,
    /// and a gauge read once a second needs no happens-before with the commands.
    #[inline]
    fn add(&self, n: isize) {
        self.0[this_threads_shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> usize {
        let sum: isize = self.0.iter().map(|stripe| stripe.0.load(Ordering::Relaxed)).sum();
        // A read racing a command that moved threads may see its exit before its entry.
        sum.max(0).unsigned_abs()
    }
}

/// One command counted in [`InFlight`]; counted out on drop, on the thread it ends on
/// (a task resumes on whichever worker its reply woke it: counting out on the stripe
/// it came in on would write another core's cache line on most calls).
pub(super) struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// Commands queued inside fred, not yet written to a socket, over every client of the
/// pool (fred's `command_queue_len`; the pool itself does not implement it).
pub(super) fn buffered(pool: &Pool) -> usize {
    pool.clients().iter().map(|c| c.command_queue_len()).sum()
}

/// Samples the pool every second into `<prefix>_redis_connections{target,state}`,
/// `<prefix>_redis_pool_size{target}`, `<prefix>_redis_commands_in_flight{target}` and
/// `<prefix>_redis_commands_buffered{target}`, and writes the commands' batched call
/// metrics to the recorder (those of a burst that ended, which no later call would
/// write). Runs until aborted.
pub(super) async fn sample(pool: Pool, in_flight: InFlight, target: &'static str, prefix: String) {
    let name = metric_name(&prefix, REDIS_CONNECTIONS);
    let connected: Gauge = gauge!(name.clone(), "target" => target, "state" => "connected");
    let disconnected: Gauge = gauge!(name, "target" => target, "state" => "disconnected");
    let size: Gauge = gauge!(metric_name(&prefix, REDIS_POOL_SIZE), "target" => target);
    let sent: Gauge = gauge!(metric_name(&prefix, REDIS_COMMANDS_IN_FLIGHT), "target" => target);
    let queued: Gauge = gauge!(metric_name(&prefix, REDIS_COMMANDS_BUFFERED), "target" => target);
    loop {
        let clients = pool.clients();
        let up = clients.iter().filter(|c| c.is_connected()).count();
        connected.set(up as f64);
        disconnected.set((clients.len() - up) as f64);
        size.set(clients.len() as f64);
        sent.set(in_flight.get() as f64);
        queued.set(buffered(&pool) as f64);
        crate::telemetry::flush();
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}
