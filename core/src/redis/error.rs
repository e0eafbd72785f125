//! The questions the stores ask of a [`RedisError`], answered once, here, so no caller
//! decodes fred's error kinds and messages itself.

use super::RedisError;

/// The reply prefix Redis sends when a command meets a key holding another type.
const WRONG_TYPE: &str = "WRONGTYPE";

impl RedisError {
    /// True when Redis answered `WRONGTYPE`: the key exists but holds another type
    /// than the command works on (a hash where a string was expected…). The data at
    /// the key is not what the caller wrote there; Redis itself is fine (the breaker
    /// ignores it, and it is not retried).
    ///
    /// The rule: the operation's own error (of [`Error::Inner`](crate::Error::Inner),
    /// or the last attempt of a [`BudgetExhausted`](crate::Error::BudgetExhausted)) is
    /// a reply starting with `WRONGTYPE`, whatever kind fred files it under (fred 10
    /// maps it to `InvalidArgument`; the reply text is what Redis said, the kind is
    /// fred's reading of it). A pipeline that met one fails with the same error.
    ///
    /// ```
    /// use stayfast_core::{Error, Name, redis::{RedisError, fred::error::{Error as FredError, ErrorKind}}};
    /// let reply = FredError::new(ErrorKind::InvalidArgument, "WRONGTYPE Operation against a key holding the wrong kind of value");
    /// let e: RedisError = Error::Inner { operation: Name::from("redis.get"), source: reply, attempts: 1 };
    /// assert!(e.is_wrong_type());
    /// let e: RedisError = Error::Shed { target: Name::from("redis.main") };
    /// assert!(!e.is_wrong_type());
    /// ```
    pub fn is_wrong_type(&self) -> bool {
        self.inner().is_some_and(|e| e.details().starts_with(WRONG_TYPE))
    }
}

#[cfg(test)]
mod tests {
    use fred::error::{Error as FredError, ErrorKind};

    use crate::{Error, Name, redis::RedisError};

    fn inner(kind: ErrorKind, details: &'static str) -> RedisError {
        Error::Inner {
            operation: Name::from("redis.get"),
            source: FredError::new(kind, details),
            attempts: 1,
        }
    }

    /// The cache matched the reply text of `Inner` only; the knowledge store matched
    /// `InvalidArgument` plus the text, through `BudgetExhausted` too. One rule now: the
    /// text, through both.
    #[test]
    fn wrong_type_is_the_reply_text_whatever_the_kind() {
        let text = "WRONGTYPE Operation against a key holding the wrong kind of value";
        assert!(inner(ErrorKind::InvalidArgument, text).is_wrong_type());
        assert!(inner(ErrorKind::Unknown, text).is_wrong_type());
        let last = Box::new(inner(ErrorKind::InvalidArgument, text));
        assert!(Error::BudgetExhausted { last }.is_wrong_type());
        assert!(!inner(ErrorKind::InvalidArgument, "ERR wrong number of arguments").is_wrong_type());
        assert!(!inner(ErrorKind::Unknown, "OOM command not allowed").is_wrong_type());
    }
}
