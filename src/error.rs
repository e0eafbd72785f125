//! The one error type of the stores.

use stayfast_core::{
    Error, Outcome, ToOutcome,
    config::ConfigError,
    fs::{FsError, ReadLogError},
    redis::RedisError,
};

/// What a store call can fail with: bad input (checked before any I/O), or the
/// dependency's error as stayfast reports it (a timeout, an open circuit, an outcome
/// that cannot be known, Redis's or the file system's own error).
///
/// Messages name what was wrong and never echo a secret; they do not repeat user
/// content either (a 1 MiB message is not copied into an error). Each shows its own
/// level only: the cause is the [`source`](std::error::Error::source) (print the whole
/// chain with [`stayfast_core::ErrorChain`] or anyhow's `{:#}`).
///
/// ```
/// use stayfast::StoreError;
/// let e = StoreError::TooLarge { what: "content", len: 70_000, max: 65_536 };
/// assert_eq!(e.to_string(), "content is 70000 bytes, over the 65536-byte limit");
/// assert!(e.is_bad_input());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A value over its configured size limit; nothing was written.
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// What was too large (`"content"`, `"metadata"`, `"message"`…).
        what: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An argument the store cannot accept (an empty session id, a malformed fact id…);
    /// nothing was written.
    #[error("invalid {what}: {problem}")]
    InvalidInput {
        /// The argument.
        what: &'static str,
        /// Why it was refused.
        problem: String,
    },
    /// Data read back from Redis or a file that does not decode (written by something
    /// else, or damaged).
    #[error("corrupt {what}: {problem}")]
    Corrupt {
        /// What was being decoded (`"fact"`, `"transcript record"`…).
        what: &'static str,
        /// Why it does not decode.
        problem: String,
    },
    /// A value that could not be encoded (a cache value whose `Serialize` failed).
    #[error("cannot encode {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// The store needs Redis and this instance runs without it (file-only mode).
    #[error("{what} needs Redis, and this instance runs without it (`redis.enabled = false`)")]
    RedisDisabled {
        /// The store or operation.
        what: &'static str,
    },
    /// A [`blocking`](crate::blocking) method was called from inside an async runtime,
    /// where blocking would stall it: use the async API there.
    #[error("a blocking stayfast method was called from inside an async runtime; use the async API there")]
    InsideRuntime,
    /// A cache call waited on a concurrent call's load of the same entry, and that load
    /// failed, panicked or outlasted `load_timeout` (see [`CoalescedError`](crate::cache::CoalescedError)).
    #[error(transparent)]
    Coalesced(#[from] crate::cache::CoalescedError),
    /// A setting the store cannot work with.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis failed, timed out, was shed or its circuit is open.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A file operation failed, timed out or its circuit is open.
    #[error(transparent)]
    File(#[from] Error<FsError>),
    /// A transcript file could not be read back.
    #[error(transparent)]
    ReadLog(#[from] Error<ReadLogError>),
}

impl StoreError {
    /// Whether the caller's input was refused before any I/O (so retrying the same
    /// call cannot help).
    ///
    /// ```
    /// let e = stayfast::StoreError::InvalidInput { what: "session id", problem: "empty".into() };
    /// assert!(e.is_bad_input());
    /// ```
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::TooLarge { .. } | StoreError::InvalidInput { .. }
        )
    }

    /// The `outcome` label this error stands for: a dependency's timeout, open circuit
    /// or unknown outcome as such, anything else `failure`.
    ///
    /// ```
    /// use stayfast::{Outcome, StoreError};
    /// let e = StoreError::Corrupt { what: "fact", problem: "not JSON".into() };
    /// assert_eq!(e.outcome(), Outcome::Failure);
    /// ```
    pub fn outcome(&self) -> Outcome {
        match self {
            StoreError::Redis(e) => e.outcome(),
            StoreError::File(e) => e.outcome(),
            StoreError::ReadLog(e) => e.outcome(),
            _ => Outcome::Failure,
        }
    }
}

/// So a background task returning a `StoreError` is counted by what it says (work
/// refused by an open circuit is `rejected`, not `failure`): [`StoreError::outcome`].
///
/// ```
/// use stayfast::{Outcome, StoreError, ToOutcome};
/// let e = StoreError::RedisDisabled { what: "cache" };
/// assert_eq!(ToOutcome::outcome(&e), Outcome::Failure);
/// ```
impl ToOutcome for StoreError {
    fn outcome(&self) -> Outcome {
        StoreError::outcome(self)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use stayfast_core::{
        Error, Name,
        fs::{FsError, Step},
    };

    use super::StoreError;

    /// Issue #12 item 11: no level repeats the next one's message.
    fn assert_each_cause_once(e: &(dyn std::error::Error + 'static)) -> usize {
        let mut levels = 1;
        let mut level = e;
        while let Some(next) = level.source() {
            let (shown, below) = (level.to_string(), next.to_string());
            assert!(!shown.contains(&below), "{shown:?} repeats its source {below:?}");
            levels += 1;
            level = next;
        }
        levels
    }

    #[test]
    fn store_errors_print_each_cause_once() {
        let json = serde_json::from_str::<u8>("x")
            .err()
            .map(|source| StoreError::Encode {
                what: "value",
                source,
            });
        let Some(encode) = json else {
            panic!("not an error")
        };
        assert_eq!(encode.to_string(), "cannot encode value");
        assert_eq!(assert_each_cause_once(&encode), 2);

        let io = std::io::Error::other("disk on fire");
        let file = StoreError::File(Error::Inner {
            operation: Name::from("fs.append"),
            source: FsError::new("/t.jsonl", Step::Write, io),
            attempts: 1,
        });
        // Transparent: the policy's error is the top level, then the file's, then io's.
        assert_eq!(assert_each_cause_once(&file), 3);
        assert!(file.source().is_some());
    }
}
