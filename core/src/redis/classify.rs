//! What fred's errors say: retry them? is Redis unhealthy?

use fred::error::{Error as FredError, ErrorKind};

use crate::{Classify, Verdict};

/// Server error prefixes that mean "busy or failing over, try again".
const TRANSIENT_REPLIES: [&str; 5] = ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY"];
/// fred's own messages for a command it never wrote (no connection to route it to), and
/// for one it wrote and had to give up on after reconnecting.
const NOT_SENT: &str = "Failed to route command.";
const WRITTEN_THEN_LOST: &str = "Too many failed write attempts.";
/// Server error prefixes that mean "Redis refuses this connection, and will keep
/// refusing": every command fails alike, so they open the breaker.
const AUTH_REPLIES: [&str; 2] = ["NOAUTH", "WRONGPASS"];
/// Server error prefixes that mean "Redis refuses this kind of command" while it
/// serves others: `OOM` refuses writes while reads work (a server state), `NOPERM`
/// refuses what the ACL user lacks a right to (a configuration error). Not retried,
/// and ignored by the breaker: the one breaker every store's reads share must not
/// open because writes are refused (issue #12 item 13).
const REFUSED_COMMAND_REPLIES: [&str; 2] = ["OOM", "NOPERM"];

/// How each fred error is classified. Transient: a command that was certainly not applied (`Canceled`
/// by `fail_fast`, `Backpressure`, routing changes, fred's "Failed to route command.", `LOADING`/`BUSY`/`TRYAGAIN`/
/// `MASTERDOWN`/`READONLY`). Indeterminate: an `IO` error (the connection dropped, maybe
/// after the command was written). A `Timeout` is fred's own deadline — the one handed
/// in through [`Attempt::deadline`](crate::Attempt::deadline) — reported as a timeout.
/// Not retried but unhealthy: `Auth`, `NOAUTH`/`WRONGPASS`, TLS and protocol
/// failures. Refused commands, not retried and ignored by the breaker
/// ([`Verdict::refused`]): `OOM` (writes refused at `maxmemory`, reads still served)
/// and `NOPERM` (a right the ACL user lacks): `OOM` is a state of the server that
/// refuses writes while it still serves reads, so it must not open the breaker the
/// reads share. The caller's mistakes, ignored by the breaker: `WRONGTYPE` (an
/// `InvalidArgument`), parse and not-found errors, other `ERR` replies. A BLPOP-style
/// nil timeout also arrives as `Timeout`: give such an operation its own classifier
/// ([`Verdict::expected`]).
impl Classify for FredError {
    fn classify(&self) -> Verdict {
        let reply_starts = |prefixes: &[&str]| prefixes.iter().any(|p| self.details().starts_with(p));
        #[allow(unreachable_patterns)] // `Tls` and `Replica` exist only under some features
        match self.kind() {
            ErrorKind::Timeout => Verdict::timed_out(),
            ErrorKind::Canceled | ErrorKind::Backpressure | ErrorKind::Routing | ErrorKind::Cluster => {
                Verdict::transient()
            }
            ErrorKind::Sentinel => Verdict::transient(),
            ErrorKind::IO => Verdict::indeterminate(),
            ErrorKind::Auth => Verdict::permanent(),
            ErrorKind::Unknown if self.details() == NOT_SENT => Verdict::transient(),
            ErrorKind::Unknown if self.details() == WRITTEN_THEN_LOST => Verdict::indeterminate(),
            ErrorKind::Unknown if reply_starts(&TRANSIENT_REPLIES) => Verdict::transient(),
            ErrorKind::Unknown if reply_starts(&REFUSED_COMMAND_REPLIES) => Verdict::refused(),
            ErrorKind::Unknown if reply_starts(&AUTH_REPLIES) => Verdict::permanent(),
            ErrorKind::Unknown if self.details().starts_with("ERR") => Verdict::caller_error(),
            ErrorKind::Unknown => Verdict::permanent(),
            ErrorKind::InvalidArgument
            | ErrorKind::InvalidCommand
            | ErrorKind::Parse
            | ErrorKind::NotFound
            | ErrorKind::Url => Verdict::caller_error(),
            ErrorKind::Config | ErrorKind::Protocol => Verdict::permanent(),
            _ => Verdict::permanent(),
        }
    }
}

#[cfg(test)]
mod tests {
    use fred::error::{Error as FredError, ErrorKind};

    use crate::{Classify, Health, Retryable, Verdict};

    /// The classification above, over the errors fred actually produces (server replies are
    /// mapped by prefix: WRONGTYPE → InvalidArgument, NOAUTH/WRONGPASS → Auth, the rest
    /// → Unknown with the reply as details).
    #[test]
    fn fred_errors_classified() {
        let cases = [
            (ErrorKind::Timeout, "Request timed out.", Verdict::timed_out()),
            (
                ErrorKind::IO,
                "Connection reset by peer",
                Verdict::indeterminate(),
            ),
            (
                ErrorKind::Canceled,
                "Connection closed unexpectedly.",
                Verdict::transient(),
            ),
            (
                ErrorKind::Backpressure,
                "Max command queue length exceeded.",
                Verdict::transient(),
            ),
            (
                ErrorKind::Unknown,
                "LOADING Redis is loading the dataset in memory",
                Verdict::transient(),
            ),
            (
                ErrorKind::Unknown,
                "BUSY Redis is busy running a script",
                Verdict::transient(),
            ),
            (
                ErrorKind::Unknown,
                "TRYAGAIN Multiple keys request during rehashing",
                Verdict::transient(),
            ),
            (
                ErrorKind::Unknown,
                "MASTERDOWN Link with MASTER is down",
                Verdict::transient(),
            ),
            (
                ErrorKind::Unknown,
                "READONLY You can't write against a read only replica.",
                Verdict::transient(),
            ),
            (
                ErrorKind::Auth,
                "WRONGPASS invalid username-password pair",
                Verdict::permanent(),
            ),
            (
                ErrorKind::Unknown,
                "NOPERM this user has no permissions",
                Verdict::refused(),
            ),
            (
                ErrorKind::Unknown,
                "OOM command not allowed when used memory > 'maxmemory'.",
                Verdict::refused(),
            ),
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                Verdict::caller_error(),
            ),
            (
                ErrorKind::Parse,
                "Could not convert to i64",
                Verdict::caller_error(),
            ),
            (
                ErrorKind::NotFound,
                "Cannot convert nil to number.",
                Verdict::caller_error(),
            ),
            (ErrorKind::Unknown, "ERR syntax error", Verdict::caller_error()),
            // fred's own: never written (no connection), and written then lost.
            (
                ErrorKind::Unknown,
                "Failed to route command.",
                Verdict::transient(),
            ),
            (
                ErrorKind::Unknown,
                "Too many failed write attempts.",
                Verdict::indeterminate(),
            ),
        ];
        for (kind, details, expected) in cases {
            let got = FredError::new(kind.clone(), details).classify();
            assert_eq!(got, expected, "{kind:?} {details}");
        }
        // What the policy does with those answers.
        assert_eq!(Verdict::timed_out().retry, Retryable::IfIdempotent);
        assert_eq!(Verdict::caller_error().health, Health::Ignore);
    }
}
