//! The command catalogue: each [`Command`]'s name (its policy's and its metrics'
//! `operation` label), whether it is idempotent (retried), and how its bound is chosen.

use std::time::Duration;

use super::RedisConfig;
use crate::Name;

/// A command the handle runs, with its own policy (`redis.<name>`).
///
/// ```
/// use stayfast_core::redis::Command;
/// assert_eq!(Command::Hgetall.name(), "redis.hgetall");
/// assert!(Command::Get.is_idempotent() && !Command::Rpush.is_idempotent());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// GET
    Get,
    /// SET
    Set,
    /// DEL
    Del,
    /// EXISTS
    Exists,
    /// EXPIRE
    Expire,
    /// INCR
    Incr,
    /// HGETALL
    Hgetall,
    /// HGET
    Hget,
    /// HSET
    Hset,
    /// HDEL
    Hdel,
    /// LRANGE
    Lrange,
    /// RPUSH
    Rpush,
    /// LTRIM
    Ltrim,
    /// SADD
    Sadd,
    /// SREM
    Srem,
    /// SMEMBERS
    Smembers,
    /// SINTER
    Sinter,
    /// SCARD
    Scard,
    /// SCAN, every page
    Scan,
    /// A pipeline
    Pipeline,
    /// EVAL
    Eval,
    /// Anything else, run through [`Redis::run`](super::Redis::run)
    Other,
}

impl Command {
    pub(super) const ALL: [Command; 22] = [
        Command::Get,
        Command::Set,
        Command::Del,
        Command::Exists,
        Command::Expire,
        Command::Incr,
        Command::Hgetall,
        Command::Hget,
        Command::Hset,
        Command::Hdel,
        Command::Lrange,
        Command::Rpush,
        Command::Ltrim,
        Command::Sadd,
        Command::Srem,
        Command::Smembers,
        Command::Sinter,
        Command::Scard,
        Command::Scan,
        Command::Pipeline,
        Command::Eval,
        Command::Other,
    ];

    /// The policy's operation name (a metric label).
    ///
    /// ```
    /// use stayfast_core::redis::Command;
    /// assert_eq!(Command::Scan.name(), "redis.scan"); // the `operation` label of its metrics
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Command::Get => "redis.get",
            Command::Set => "redis.set",
            Command::Del => "redis.del",
            Command::Exists => "redis.exists",
            Command::Expire => "redis.expire",
            Command::Incr => "redis.incr",
            Command::Hgetall => "redis.hgetall",
            Command::Hget => "redis.hget",
            Command::Hset => "redis.hset",
            Command::Hdel => "redis.hdel",
            Command::Lrange => "redis.lrange",
            Command::Rpush => "redis.rpush",
            Command::Ltrim => "redis.ltrim",
            Command::Sadd => "redis.sadd",
            Command::Srem => "redis.srem",
            Command::Smembers => "redis.smembers",
            Command::Sinter => "redis.sinter",
            Command::Scard => "redis.scard",
            Command::Scan => "redis.scan",
            Command::Pipeline => "redis.pipeline",
            Command::Eval => "redis.eval",
            Command::Other => "redis.other",
        }
    }

    /// Whether running it twice is harmless, so an attempt with an unknown outcome may
    /// be retried. Writes that add (RPUSH, INCR) are not; writes that set a state (SET,
    /// DEL, HSET, SADD…) are; pipelines, scripts and other commands are assumed not.
    ///
    /// ```
    /// use stayfast_core::redis::Command;
    /// assert!(Command::Set.is_idempotent()); // setting a value twice is harmless: retried
    /// assert!(!Command::Incr.is_idempotent()); // counting twice is not: `OutcomeUnknown` instead
    /// ```
    pub const fn is_idempotent(self) -> bool {
        !matches!(
            self,
            Command::Incr | Command::Rpush | Command::Pipeline | Command::Eval | Command::Other
        )
    }

    /// Whether the command's own client ends it in time, so stayfast's bound is only a
    /// safety net, kept by the handle's [`Backstop`](crate::backstop::Backstop) instead
    /// of a timer per attempt: a write hands its deadline to fred; a read hands none
    /// (sent late, it changes nothing: see `run::options_in`) and the backstop is its
    /// bound, ending it at most one `deadline_margin` after its deadline. Not for SCAN
    /// (many pages, each handed the time left, the whole bounded by stayfast's timer),
    /// pipelines (the caller's build step runs outside fred) and
    /// [`Redis::run`](super::Redis::run)'s other commands.
    pub(super) const fn deadline_in_fred(self) -> bool {
        !matches!(self, Command::Scan | Command::Pipeline | Command::Other)
    }

    pub(super) fn timeout(self, config: &RedisConfig) -> Duration {
        let o = &config.operations;
        let specific = match self {
            Command::Get => o.get,
            Command::Set => o.set,
            Command::Hgetall => o.hgetall,
            Command::Pipeline => o.pipeline,
            Command::Scan => o.scan,
            _ => None,
        };
        specific.unwrap_or(config.command_timeout)
    }
}

impl From<Command> for Name {
    fn from(c: Command) -> Self {
        Name::new_static(c.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Command;

    /// The handle finds a command's policy at `command as usize` in `ALL`'s order.
    #[test]
    fn all_lists_every_command_in_declaration_order() {
        for (i, command) in Command::ALL.iter().enumerate() {
            assert_eq!(*command as usize, i, "{command:?}");
        }
        let mut names: Vec<_> = Command::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Command::ALL.len(), "one label per command");
    }

    /// SCARD and HGET were run as `Command::Other` (labelled `redis.other`, never
    /// retried): they are reads, with their own labels, retried like GET.
    #[test]
    fn reads_have_their_own_label_and_are_retried() {
        for (command, name) in [(Command::Scard, "redis.scard"), (Command::Hget, "redis.hget")] {
            assert_eq!(command.name(), name);
            assert!(command.is_idempotent(), "{name}");
        }
        assert!(!Command::Other.is_idempotent());
    }
}
