//! Which of the pool's connections a command goes to: its lane, and this thread's
//! connection in that lane.
//!
//! **Lanes.** Redis serves a connection's commands in order, and holds a connection
//! whole while it holds one of its commands: during `CLIENT PAUSE WRITE` (a failover's
//! or an operator's), every write and every script waits, and so does every command
//! queued behind it on that connection. Reads and writes sharing connections made a
//! transcript `history` (an `LRANGE`) wait seconds behind paused appends (`EVAL`). So
//! the pool is split: reads go to their own connections, everything Redis may hold to
//! the others. A pool of one connection has one lane for both.
//!
//! **One connection per thread and lane.** fred's `Pool` picks a connection on every
//! internal lookup (3–4 per command carrying options), so a caller's commands were
//! scattered over every connection, one write each. A command here goes to the
//! connection its thread is given (threads are numbered as they first send), so the
//! commands of the tasks on one worker thread share a connection and fred writes them
//! in batches, pipelined. When that connection is down, the first connected one after
//! it serves (of either lane): a lane down is no reason to fail.

use std::sync::atomic::{AtomicUsize, Ordering};

use fred::{
    clients::{Client, Pool},
    interfaces::ClientLike,
};

use super::Command;

/// Whether Redis may hold a command back while it still serves reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    /// Reads only: never held by `CLIENT PAUSE WRITE`.
    Read,
    /// Writes, scripts, pipelines and anything unknown.
    Write,
}

impl Command {
    /// The lane of this command: reads by name; everything else may write.
    pub(super) const fn lane(self) -> Lane {
        match self {
            Command::Get
            | Command::Exists
            | Command::Hgetall
            | Command::Hget
            | Command::Lrange
            | Command::Smembers
            | Command::Sinter
            | Command::Scard
            | Command::Scan => Lane::Read,
            _ => Lane::Write,
        }
    }
}

/// The pool's connections by lane: the first half reads, the rest the others.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lanes {
    reads: usize,
    size: usize,
}

impl Lanes {
    /// The lanes of a pool of `size` connections (at least 1).
    pub(super) fn new(size: usize) -> Self {
        let size = size.max(1);
        let reads = if size >= 2 { size / 2 } else { size };
        Self { reads, size }
    }

    /// The first connection of `lane`, and how many it has.
    fn span(self, lane: Lane) -> (usize, usize) {
        match lane {
            Lane::Read => (0, self.reads),
            Lane::Write if self.size >= 2 => (self.reads, self.size - self.reads),
            Lane::Write => (0, self.size),
        }
    }

    /// The connection this thread sends `lane`'s commands on, or the first connected
    /// one after it when it is down.
    #[inline]
    pub(super) fn choose(self, pool: &Pool, lane: Lane) -> &Client {
        let clients = pool.clients();
        let (start, len) = self.span(lane);
        let home = (start + THREAD.with(|n| *n) % len) % clients.len();
        let client = &clients[home];
        if client.is_connected() {
            return client;
        }
        fallback(clients, home)
    }
}

/// The first connected client after `home`, or `home` itself (a command sent there
/// fails at once, unsent: the caller's breaker and errors say why).
#[cold]
#[inline(never)]
fn fallback(clients: &[Client], home: usize) -> &Client {
    (1..clients.len())
        .map(|i| &clients[(home + i) % clients.len()])
        .find(|c| c.is_connected())
        .unwrap_or(&clients[home])
}

/// Threads numbered in the order they first send a command.
static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD: usize = THREADS.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::{Lane, Lanes};

    #[test]
    fn reads_and_writes_get_their_own_connections_from_two_up() {
        assert_eq!(Lanes::new(1).span(Lane::Read), (0, 1));
        assert_eq!(Lanes::new(1).span(Lane::Write), (0, 1));
        assert_eq!(Lanes::new(2).span(Lane::Read), (0, 1));
        assert_eq!(Lanes::new(2).span(Lane::Write), (1, 1));
        assert_eq!(Lanes::new(4).span(Lane::Read), (0, 2));
        assert_eq!(Lanes::new(4).span(Lane::Write), (2, 2));
        assert_eq!(Lanes::new(5).span(Lane::Write), (2, 3));
        assert_eq!(Lanes::new(0).span(Lane::Write), (0, 1));
    }
}
