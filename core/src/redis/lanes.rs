//! Which of the pool's connections a command goes to: its lane's connection.
//!
//! **Lanes.** Redis serves a connection's commands in order, and holds a connection
//! whole while it holds one of its commands: during `CLIENT PAUSE WRITE` (a failover's
//! or an operator's), every write and every script waits, and so does every command
//! queued behind it on that connection. Reads and writes sharing connections made a
//! transcript `history` (an `LRANGE`) wait seconds behind paused appends (`EVAL`). So
//! the pool is split: reads go to their own connections, everything Redis may hold to
//! the others. A pool of one connection has one lane for both.
//!
//! **One connection per lane, shared by every caller.** Redis answers a pipeline of
//! commands on one connection far cheaper than the same commands spread over several
//! (one read and one write system call per batch, on both sides), and fred pipelines
//! whatever is queued on a connection when it writes. So every command of a lane, from
//! every task and thread, goes to the lane's first connection: concurrent callers share
//! its pipeline. Spread over connections — fred's round robin, or one connection per
//! worker thread — the same 50 callers made 0.55–0.85× the calls per second (the Redis
//! benchmark). The lane's other connections stand by, connected: when the first is
//! down, the next connected one serves at once (of either lane: a lane down is no
//! reason to fail), while fred reconnects the first.

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

/// The pool's connections by lane: the first half reads (the first of them in use, the
/// others standing by), the rest the others.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lanes {
    /// The write lane's first connection: the middle of the pool, 0 in a pool of one.
    writes: usize,
}

impl Lanes {
    /// The lanes of a pool of `size` connections.
    pub(super) fn new(size: usize) -> Self {
        Self { writes: size / 2 }
    }

    /// The connection `lane`'s commands go to while it is up.
    fn home(self, lane: Lane) -> usize {
        match lane {
            Lane::Read => 0,
            Lane::Write => self.writes,
        }
    }

    /// The connection `lane`'s commands go to, or the first connected one after it
    /// when it is down.
    #[inline]
    pub(super) fn choose(self, pool: &Pool, lane: Lane) -> &Client {
        &pool.clients()[self.choose_index(pool, lane)]
    }

    /// Where [`choose`](Self::choose)'s connection stands in the pool.
    #[inline]
    pub(super) fn choose_index(self, pool: &Pool, lane: Lane) -> usize {
        let clients = pool.clients();
        let home = self.home(lane) % clients.len();
        if clients[home].is_connected() {
            return home;
        }
        fallback(clients, home)
    }
}

/// The first connected client after `home`, or `home` itself (a command sent there
/// fails at once, unsent: the caller's breaker and errors say why).
#[cold]
#[inline(never)]
fn fallback(clients: &[Client], home: usize) -> usize {
    (1..clients.len())
        .map(|i| (home + i) % clients.len())
        .find(|&i| clients[i].is_connected())
        .unwrap_or(home)
}

#[cfg(test)]
mod tests {
    use super::{Lane, Lanes};

    #[test]
    fn reads_and_writes_get_their_own_connections_from_two_up() {
        assert_eq!(Lanes::new(1).home(Lane::Read), 0);
        assert_eq!(Lanes::new(1).home(Lane::Write), 0);
        assert_eq!(Lanes::new(2).home(Lane::Read), 0);
        assert_eq!(Lanes::new(2).home(Lane::Write), 1);
        assert_eq!(Lanes::new(4).home(Lane::Read), 0);
        assert_eq!(Lanes::new(4).home(Lane::Write), 2);
        assert_eq!(Lanes::new(5).home(Lane::Write), 2);
        assert_eq!(Lanes::new(0).home(Lane::Write), 0);
    }
}
