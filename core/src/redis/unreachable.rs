//! Why Redis is unreachable: the last connection error fred reported, put into the
//! errors of the commands that failed for want of a connection.
//!
//! fred fails a command sent while its client is not connected with a generic
//! `Canceled: "Connection closed unexpectedly."`, whatever kept it from connecting — a
//! refused port, a TLS certificate it does not trust, a wrong password. The reason
//! only reaches fred's error events. A listener per client remembers the last one (and
//! forgets it on reconnect); a command that failed unsent while no connection of the
//! pool is up gets it as its error: `Redis at rediss://host:6380 is unreachable: TLS
//! handshake failed: InvalidCertificate(UnknownIssuer)`. Successful commands never look
//! at it: the lookup runs on the error path only.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, Ordering},
};

use fred::{
    clients::Pool,
    error::{Error as FredError, ErrorKind},
    interfaces::{ClientLike, EventInterface},
};
use tokio::{
    sync::{broadcast::error::RecvError, watch},
    task::AbortHandle,
};

use super::{Redis, RedisError};
use crate::Error;

/// fred's message for a command never written because no connection was up.
const NOT_SENT: &str = "Failed to route command.";

/// The last connection error of a pool, as text, until a client reconnects; and
/// whether any connection attempt has failed yet.
#[derive(Clone)]
pub(super) struct LastConnectionError {
    last: Arc<Mutex<Option<Reason>>>,
    failed: Arc<watch::Sender<bool>>,
    /// The last connection error is Redis refusing this client (see [`Reason::refused`]):
    /// read on every call, so a flag of its own rather than the mutex.
    refused: Arc<AtomicBool>,
}

impl Default for LastConnectionError {
    fn default() -> Self {
        Self {
            last: Arc::default(),
            failed: Arc::new(watch::channel(false).0),
            refused: Arc::default(),
        }
    }
}

/// One remembered connection error.
#[derive(Clone)]
struct Reason {
    /// What failed, for people: `TLS handshake failed: …`, `IO error: …`.
    text: Arc<str>,
    /// A TLS failure (certificate, name, handshake).
    tls: bool,
    /// Redis answered the connection's setup with a refusal only an operator changes: a
    /// wrong password (`WRONGPASS`, `NOAUTH`) or a right the setup needs and the ACL
    /// user lacks (`NOPERM` for `SELECT`, or for `ROLE` on a sentinel's primary).
    refused: bool,
}

/// Replies to a connection's setup that mean "this client is refused until an operator
/// changes the user": retrying cannot help, and Redis itself is healthy.
const REFUSALS: [&str; 3] = ["NOPERM", "WRONGPASS", "NOAUTH"];

impl LastConnectionError {
    /// Subscribes to every client's error and reconnect events; call it before the pool
    /// connects, so the first failure is seen. Each listener runs until aborted or until
    /// its client is closed.
    pub(super) fn listen(&self, pool: &Pool) -> Vec<AbortHandle> {
        let mut tasks = Vec::with_capacity(2 * pool.size());
        for client in pool.clients() {
            let (mut errors, last) = (client.error_rx(), self.clone());
            tasks.push(
                tokio::spawn(async move {
                    loop {
                        match errors.recv().await {
                            Ok((e, _server)) => last.set(Some(Reason::of(&e))),
                            Err(RecvError::Lagged(_)) => {}
                            Err(RecvError::Closed) => return,
                        }
                    }
                })
                .abort_handle(),
            );
            let (mut reconnects, last) = (client.reconnect_rx(), self.clone());
            tasks.push(
                tokio::spawn(async move {
                    loop {
                        match reconnects.recv().await {
                            Ok(_) | Err(RecvError::Lagged(_)) => last.set(None),
                            Err(RecvError::Closed) => return,
                        }
                    }
                })
                .abort_handle(),
            );
        }
        tasks
    }

    /// Resolves once a connection attempt has failed, for whatever reason: `connect`
    /// then stops waiting and starts degraded at once, rather than holding a service's
    /// start for the whole connect deadline (a refused port or an untrusted certificate
    /// does not answer sooner for being waited on; fred keeps reconnecting either way).
    pub(super) async fn first_failure(&self) {
        let mut seen = self.failed.subscribe();
        if seen.wait_for(|failed| *failed).await.is_err() {
            std::future::pending::<()>().await; // never happens: `self` holds the sender
        }
    }

    fn set(&self, reason: Option<Reason>) {
        // The reason first, then the wake-up: a caller `first_failure` lets go of must
        // find it (and the refusal flag) in place.
        let failed = reason.is_some();
        self.refused
            .store(reason.as_ref().is_some_and(|r| r.refused), Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = reason;
        if failed {
            self.failed.send_replace(true);
        }
    }

    /// The last connection error, as text.
    /// Whether the last connection error was a refusal (no client reconnected since).
    #[inline]
    pub(super) fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    pub(super) fn reason(&self) -> Option<String> {
        self.get().map(|r| r.text.to_string())
    }

    fn get(&self) -> Option<Reason> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Reason {
    fn of(e: &FredError) -> Self {
        let details = e.details();
        // NOTE: tokio-rustls reports a failed handshake as an `io::Error` wrapping the
        // rustls error, which fred files as `IO` with the error's Debug text
        // (`Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }`).
        let inner = details
            .split_once("error: ")
            .map_or(details, |(_, rest)| rest.trim_end_matches(" }"));
        let tls = is_tls_kind(e.kind())
            || [
                "InvalidCertificate",
                "AlertReceived",
                "HandshakeFailure",
                "InvalidMessage",
                "PeerIncompatible",
                "PeerMisbehaved",
                "NoCertificatesPresented",
                "CorruptMessage",
            ]
            .iter()
            .any(|name| details.contains(name));
        let text = if tls {
            format!("TLS handshake failed: {inner}")
        } else {
            format!("{}: {inner}", e.kind().to_str())
        };
        let refused = !tls && REFUSALS.iter().any(|r| details.contains(r));
        Self {
            text: text.into(),
            tls,
            refused,
        }
    }
}

#[allow(unreachable_patterns)] // `Tls` exists only with a TLS feature of fred
fn is_tls_kind(kind: &ErrorKind) -> bool {
    #[cfg(feature = "tls")]
    if matches!(kind, ErrorKind::Tls) {
        return true;
    }
    let _ = kind;
    false
}

impl Redis {
    /// Why Redis is unreachable, when it is: the last connection error fred reported
    /// (`TLS handshake failed: InvalidCertificate(UnknownIssuer)`, `IO Error: …
    /// Connection refused …`), while no connection of the pool is up. `None` while any
    /// connection is up, or before any connection error.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = Redis::connect(&RedisConfig::default()).await?;
    /// if let Some(why) = redis.unreachable_reason() {
    ///     eprintln!("Redis is down: {why}"); // for a health endpoint
    /// }
    /// # Ok(()) }
    /// ```
    pub fn unreachable_reason(&self) -> Option<String> {
        if self.inner.pool.clients().iter().any(ClientLike::is_connected) {
            return None;
        }
        self.inner.unreachable.reason()
    }

    /// `e`, with fred's generic "not connected" error replaced by why Redis is
    /// unreachable when no connection is up (see the module docs). Error path only.
    #[cold]
    #[inline(never)]
    pub(super) fn explain(&self, e: RedisError) -> RedisError {
        match e {
            Error::Inner {
                operation,
                source,
                attempts,
            } if unsent(&source) => {
                let source = match self.reason_while_unconnected() {
                    Some(reason) => FredError::new(
                        if reason.tls {
                            tls_kind()
                        } else {
                            source.kind().clone()
                        },
                        format!("Redis at {} is unreachable: {}", self.inner.url, reason.text),
                    ),
                    None => source,
                };
                Error::Inner {
                    operation,
                    source,
                    attempts,
                }
            }
            Error::BudgetExhausted { last } => Error::BudgetExhausted {
                last: Box::new(self.explain(*last)),
            },
            other => other,
        }
    }

    /// The error of a call made while Redis refuses this client (a wrong password, a
    /// right the connection's setup needs): it fails at once, naming the refusal, without
    /// an attempt — never retried, never counted against the breaker: Redis is healthy,
    /// the configuration is not. `None` once a connection is up.
    #[cold]
    #[inline(never)]
    pub(super) fn refusal(&self, command: super::Command) -> Option<RedisError> {
        let reason = self.reason_while_unconnected().filter(|r| r.refused)?;
        Some(Error::Inner {
            operation: command.into(),
            source: FredError::new(
                ErrorKind::Auth,
                format!("Redis at {} refuses this client: {}", self.inner.url, reason.text),
            ),
            attempts: 0,
        })
    }

    fn reason_while_unconnected(&self) -> Option<Reason> {
        if self.inner.pool.clients().iter().any(ClientLike::is_connected) {
            return None;
        }
        self.inner.unreachable.get()
    }
}

/// A command fred failed without sending it for want of a connection.
fn unsent(e: &FredError) -> bool {
    matches!(e.kind(), ErrorKind::Canceled) || e.details() == NOT_SENT
}

/// fred's kind for a TLS failure: `Tls`, which exists only with a TLS feature.
fn tls_kind() -> ErrorKind {
    #[cfg(feature = "tls")]
    return ErrorKind::Tls;
    #[cfg(not(feature = "tls"))]
    ErrorKind::IO
}
