//! `/metrics`, `/health/live` and `/health/ready`.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::{Value, json};
use stayfast::{CircuitBreaker, breaker::State as BreakerState};

use super::Shared;

/// The Prometheus page (the exporter's render: every stayfast metric).
pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let text = shared.app.telemetry().map(|t| t.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// 200 while the process serves HTTP at all: a liveness probe must not depend on Redis
/// (restarting the service would not bring Redis back).
pub(crate) async fn live() -> &'static str {
    "ok"
}

fn open(state: BreakerState) -> bool {
    matches!(state, BreakerState::Open | BreakerState::ForcedOpen)
}

fn describe(breaker: &CircuitBreaker, gates_readiness: bool) -> Value {
    json!({
        "target": breaker.target().as_str(),
        "state": breaker.state().to_string(),
        "gates_readiness": gates_readiness,
    })
}

/// Ready when Redis answers a PING within `timeouts.redis.connection.health_check`, no
/// breaker of the app's own dependencies (Redis, the transcript directory) is open, and
/// the background queue has room; 503 otherwise. The JSON says which.
///
/// The upstream's breaker is shown but does not gate readiness: every instance shares
/// that upstream, so taking this one out of the load balancer would not help, and its
/// cached answers still serve.
pub(crate) async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let started = Instant::now();
    let app = &shared.app;
    let redis = app.health().await; // bounded by the health-check deadline
    let own = app.breakers();
    let in_flight = app.background().in_flight();
    let queue_full = in_flight >= shared.background_cap;
    let ready = redis.as_ref().is_none_or(|h| h.ok) && !own.iter().any(|b| open(b.state())) && !queue_full;
    let mut breakers: Vec<Value> = own.iter().map(|b| describe(b, true)).collect();
    if let Some(upstream) = shared.upstream.breaker() {
        breakers.push(describe(upstream, false));
    }
    let body = json!({
        "ready": ready,
        "redis": redis.map(|h| json!({
            "ok": h.ok,
            "ping_ms": h.ping.map(|d| d.as_secs_f64() * 1e3),
            "breaker": h.breaker.to_string(),
            "connected": h.connected,
            "pool_size": h.pool_size,
        })),
        "breakers": breakers,
        "background": { "in_flight": in_flight, "max_in_flight": shared.background_cap },
        "checked_in_ms": started.elapsed().as_secs_f64() * 1e3,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
