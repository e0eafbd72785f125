//! The reference service's routes over one [`Stayfast`], and its graceful shutdown.
//! `examples/service/main.rs` runs it; `tests/service.rs` includes this module with
//! `#[path]` and drives the very same router over HTTP.

mod chat;
mod facts;
mod failure;
mod health;
pub(crate) mod route_policy;
pub(crate) mod upstream;

use std::{
    future::{Future, IntoFuture},
    io,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    routing::{get, post},
};
use stayfast::{Policy, Settings, ShutdownReport, Stayfast};

use self::upstream::UpstreamClient;

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) app: Stayfast,
    pub(crate) upstream: UpstreamClient,
    /// `background.max_in_flight`: a background queue at its cap sheds new work, so
    /// the instance reports itself not ready.
    pub(crate) background_cap: usize,
}

/// The routes, over `shared`; `GET /facts/search` runs under `search`, the policy
/// [`route_policy::search_policy`] builds (a deadline and a bulkhead, applied as a tower
/// layer on that route only).
pub(crate) fn router(shared: Arc<Shared>, search: Policy) -> Router {
    Router::new()
        .route("/chat/{session}", post(chat::append).get(chat::history))
        .route("/facts", post(facts::store))
        .route(
            "/facts/search",
            get(facts::search).layer(route_policy::search_layers(search)),
        )
        .route("/upstream/{key}", get(upstream::get))
        .route("/metrics", get(health::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(shared)
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets the
/// requests in flight finish (axum's graceful shutdown; within `grace`), and shuts
/// `app` down within another `grace`: background work drained, transcript files
/// fsynced, the Redis pool closed.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Stayfast,
    settings: &Settings,
    upstream: UpstreamClient,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<ShutdownReport> {
    let search = route_policy::search_policy(settings)?;
    let shared = Arc::new(Shared {
        app,
        upstream,
        background_cap: usize::try_from(settings.background.max_in_flight).unwrap_or(usize::MAX),
    });
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = signalled.send(());
    };
    let serving = axum::serve(listener, router(Arc::clone(&shared), search))
        .with_graceful_shutdown(signal)
        .into_future();
    // A request that never ends (a client that stops reading) must not hold the
    // shutdown forever: the requests in flight get `grace` after the signal.
    let overdue = async {
        if on_signal.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serving => served?,
        () = overdue => tracing::warn!(?grace, "requests still in flight after the grace; shutting down anyway"),
    }
    // Every connection is closed; the app shuts down through `&self`, however many
    // clones of it the connection tasks still hold for a moment.
    Ok(shared.app.shutdown(grace).await)
}
