//! What a server answers when a call it depends on fails: an HTTP status and, when the
//! wait is known, `Retry-After` — a small mapping to use in a handler, not a hidden
//! layer.
//!
//! | [`Error`] | status | `Retry-After` |
//! |---|---|---|
//! | `Timeout`, `OutcomeUnknown` | 504 Gateway Timeout | — |
//! | `CircuitOpen { retry_after }` | 503 Service Unavailable | `retry_after`, in whole seconds, rounded up |
//! | `Shed` | 503 Service Unavailable | 1 s |
//! | `BudgetExhausted { last }` | what `last` maps to | as `last` |
//! | `Inner { source }` | what your mapping says for `source` | — |
//!
//! A shed call answers 503, not 429: the server as a whole is out of room for this
//! dependency, which is no fault of the client's request rate (429 says it is).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use http::StatusCode;
//! use stayfast_core::{Error, Name, http::HttpFailure};
//!
//! let open: Error<std::io::Error> = Error::CircuitOpen {
//!     target: Name::from("redis.main"),
//!     retry_after: Duration::from_millis(1500),
//! };
//! let failure = HttpFailure::of(&open, |_io| StatusCode::BAD_GATEWAY);
//! assert_eq!(failure.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(failure.headers()["retry-after"], "2");
//! // In axum, `(failure.status(), failure.headers())` is a response as it stands.
//! let response: http::Response<()> = failure.into_response();
//! assert_eq!(response.status(), 503);
//! ```

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header::RETRY_AFTER};

use crate::Error;

/// The HTTP answer for a failed call: see the [module docs](self) for the mapping.
///
/// ```
/// use http::StatusCode;
/// use stayfast_core::{Error, Name, http::HttpFailure};
/// let timeout: Error<()> = Error::Timeout { operation: Name::from("redis.get"), after: std::time::Duration::from_millis(250) };
/// assert_eq!(HttpFailure::of(&timeout, |_| StatusCode::BAD_GATEWAY).status(), StatusCode::GATEWAY_TIMEOUT);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpFailure {
    status: StatusCode,
    retry_after: Option<Duration>,
}

impl HttpFailure {
    /// The answer for `error`; `inner` maps the operation's own error (for instance 502
    /// Bad Gateway for a dependency's failure, 404 for a missing record).
    ///
    /// ```
    /// use http::StatusCode;
    /// use stayfast_core::{Error, Name, http::HttpFailure};
    /// let missing: Error<&str> = Error::Inner { operation: Name::from("db.get"), source: "no such row", attempts: 1 };
    /// let failure = HttpFailure::of(&missing, |_| StatusCode::NOT_FOUND);
    /// assert_eq!(failure.status(), StatusCode::NOT_FOUND);
    /// assert_eq!(failure.retry_after(), None);
    /// ```
    pub fn of<E>(error: &Error<E>, inner: impl FnOnce(&E) -> StatusCode) -> Self {
        let (status, retry_after) = match error {
            Error::Timeout { .. } | Error::OutcomeUnknown { .. } => (StatusCode::GATEWAY_TIMEOUT, None),
            Error::CircuitOpen { retry_after, .. } => (StatusCode::SERVICE_UNAVAILABLE, Some(*retry_after)),
            Error::Shed { .. } => (StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(1))),
            Error::BudgetExhausted { last } => return Self::of(last, inner),
            Error::Inner { source, .. } => (inner(source), None),
        };
        Self { status, retry_after }
    }

    /// The status to answer with.
    ///
    /// ```
    /// use http::StatusCode;
    /// use stayfast_core::{Error, Name, http::HttpFailure};
    /// let shed: Error<()> = Error::Shed { target: Name::from("redis.main") };
    /// assert_eq!(HttpFailure::of(&shed, |_| StatusCode::BAD_GATEWAY).status(), 503);
    /// ```
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// How long the client should wait before trying again, when that is known.
    ///
    /// ```
    /// use http::StatusCode;
    /// use stayfast_core::{Error, Name, http::HttpFailure};
    /// let shed: Error<()> = Error::Shed { target: Name::from("redis.main") };
    /// let failure = HttpFailure::of(&shed, |_| StatusCode::BAD_GATEWAY);
    /// assert_eq!(failure.retry_after(), Some(std::time::Duration::from_secs(1)));
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The headers to send: `Retry-After` in whole seconds, rounded up (at least 1: a
    /// client reading 0 would retry at once, into the same open circuit).
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::StatusCode;
    /// use stayfast_core::{Error, Name, http::HttpFailure};
    /// let open: Error<()> = Error::CircuitOpen { target: Name::from("redis.main"), retry_after: Duration::from_millis(10) };
    /// assert_eq!(HttpFailure::of(&open, |_| StatusCode::BAD_GATEWAY).headers()["retry-after"], "1");
    /// ```
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        headers
    }

    /// An empty-bodied response with the status and headers.
    ///
    /// ```
    /// use http::StatusCode;
    /// use stayfast_core::{Error, Name, http::HttpFailure};
    /// let shed: Error<()> = Error::Shed { target: Name::from("redis.main") };
    /// let response: http::Response<String> = HttpFailure::of(&shed, |_| StatusCode::BAD_GATEWAY).into_response();
    /// assert!(response.headers().contains_key("retry-after"));
    /// ```
    pub fn into_response<B: Default>(self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers();
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Name;

    fn failure(error: &Error<u16>) -> HttpFailure {
        HttpFailure::of(error, |code| {
            StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY)
        })
    }

    #[test]
    fn every_outcome_has_its_status() {
        let op = || Name::from("op");
        let timeout = Error::Timeout {
            operation: op(),
            after: Duration::from_secs(1),
        };
        let unknown = Error::OutcomeUnknown {
            operation: op(),
            after: None,
        };
        let open = Error::CircuitOpen {
            target: op(),
            retry_after: Duration::from_secs(5),
        };
        let shed = Error::Shed { target: op() };
        let inner = Error::Inner {
            operation: op(),
            source: 404,
            attempts: 1,
        };
        let exhausted = Error::BudgetExhausted {
            last: Box::new(Error::CircuitOpen {
                target: op(),
                retry_after: Duration::from_millis(2001),
            }),
        };
        let seen: Vec<(u16, Option<String>)> = [timeout, unknown, open, shed, inner, exhausted]
            .iter()
            .map(|e| {
                let f = failure(e);
                let header = f
                    .headers()
                    .get(RETRY_AFTER)
                    .map(|v| v.to_str().unwrap_or("?").to_owned());
                (f.status().as_u16(), header)
            })
            .collect();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            seen,
            [
                (504, None),
                (504, None),
                (503, s("5")),
                (503, s("1")),
                (404, None),
                (503, s("3"))
            ]
        );
    }
}
