//! Server-side resilience: `GET /facts/search` runs under a stayfast [`Policy`] applied
//! as a tower layer on the route, the same `PolicyLayer` the upstream client uses on
//! its way out. The policy gives the route
//!
//! - a deadline ([`SEARCH_DEADLINE`]): the answer is due within it whatever the search
//!   waits for; past it the handler's future is dropped (a search only reads, so
//!   dropping it loses nothing) and the client gets 504;
//! - a bulkhead ([`SEARCH_CONCURRENCY`] searches at once): a search past that waits up
//!   to [`SEARCH_QUEUE_WAIT`] for a slot, then is shed with 503 and `Retry-After: 1`,
//!   so a slow Redis cannot pile every connection of the service onto one route.
//!
//! No retry: a handler is not a call to repeat (the client retries, told when by
//! `Retry-After`), and axum's `Request<Body>` is not `Clone` — its body is a stream,
//! read once — so there is no second copy to send. No breaker either: the search's
//! Redis commands already go through the `redis.main` breaker, whose open state answers
//! 503 with its own `Retry-After`; a second breaker here would count the same outage
//! twice and hide that wait behind its own.
//!
//! axum serves only services that cannot fail (`Error = Infallible`); the policy's
//! refusals come back as a typed [`Error`], which [`HandleErrorLayer`] turns into the
//! answer `HttpFailure` prescribes ([`refusal`]). Nothing else is hidden in the stack:
//! it is these two layers, in this order, on this one route.
//!
//! Settings: the metrics prefix is `metrics.prefix`; the route's own bounds are the
//! constants below (`Settings` has no section for the HTTP routes of a service).

use std::{convert::Infallible, future::Ready, io, time::Duration};

use axum::{body::Body, error_handling::HandleErrorLayer, extract::Request};
use stayfast::{
    Bulkhead, ByTrait, Error, Policy, Settings, config::BulkheadConfig, http::HttpFailure, tower::PolicyLayer,
};

use super::failure::ApiError;

/// How long a search may take as a whole, from the request's arrival at the route
/// (waiting for a bulkhead slot included) to its answer: what an interactive search
/// promises its client. Tighter than the store's own bound (`knowledge.search_timeout`,
/// 2 s by default), which stays the backstop for the store's other callers.
pub(crate) const SEARCH_DEADLINE: Duration = Duration::from_secs(1);
/// Searches served at once: above what the load generator (`benches/src/bin/load.rs`,
/// 32 connections taking the routes in turn) puts on this route, so its figures in the
/// README are those of an unlimited route.
pub(crate) const SEARCH_CONCURRENCY: u32 = 32;
/// How long a search past the limit waits for a slot before it is shed: a queue bounded
/// in time, long enough to absorb a burst, far shorter than the deadline.
pub(crate) const SEARCH_QUEUE_WAIT: Duration = Duration::from_millis(50);

/// The operation (and bulkhead target) name of the route in metrics and errors.
const OPERATION: &str = "http.facts.search";

/// The layers of the search route, outermost first: the refusal as an answer, then the
/// policy.
pub(crate) type SearchLayers = (
    HandleErrorLayer<fn(Error<Infallible>) -> Ready<ApiError>, ()>,
    PolicyLayer<ByTrait, fn(&Request) -> Request>,
);

/// The policy of `GET /facts/search`: [`SEARCH_DEADLINE`] and a bulkhead of
/// [`SEARCH_CONCURRENCY`] slots, metrics under `settings.metrics.prefix`.
///
/// # Errors
///
/// A metrics prefix the policy refuses (the constants are valid).
pub(crate) fn search_policy(settings: &Settings) -> io::Result<Policy> {
    let mut limit = BulkheadConfig::default();
    limit.max_concurrent = SEARCH_CONCURRENCY;
    limit.max_wait = SEARCH_QUEUE_WAIT;
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
    Policy::builder(OPERATION)
        .deadline(SEARCH_DEADLINE)
        .idempotent(true) // a search only reads
        .bulkhead(Bulkhead::new(OPERATION, &limit).map_err(invalid)?)
        .metrics_prefix(settings.metrics.prefix.as_str())
        .build()
        .map_err(invalid)
}

/// The route's layers over `policy`.
pub(crate) fn search_layers(policy: Policy) -> SearchLayers {
    (
        HandleErrorLayer::new(refusal as fn(Error<Infallible>) -> Ready<ApiError>),
        PolicyLayer::new(policy).replay_with(without_body as fn(&Request) -> Request),
    )
}

/// The policy's refusal as the answer `HttpFailure` prescribes: 504 past the deadline,
/// 503 with `Retry-After: 1` when the bulkhead sheds. (The handler's own failures —
/// Redis timing out, an open breaker — are responses already, not errors.)
fn refusal(error: Error<Infallible>) -> Ready<ApiError> {
    let failure = HttpFailure::of(&error, |never| match *never {});
    std::future::ready(ApiError::of(failure, &error))
}

/// The request the handler gets. `PolicyLayer` makes each attempt's request with a
/// `Replay`, the first attempt's included, and `Request<Body>` is not `Clone`; this
/// route is a GET that reads only its query, so the copy leaves the body behind and
/// keeps the rest: method, URI, version, headers and extensions (where axum keeps the
/// matched path and the path parameters). A route that reads its body cannot be
/// wrapped this way.
fn without_body(request: &Request) -> Request {
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}
