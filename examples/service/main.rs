//! The reference service: chat history over `TranscriptStore`, facts over
//! `KnowledgeStore`, a slow upstream called through a tower client stack with
//! stayfast's `PolicyLayer` and cached through `Cache`, a search route served through
//! `PolicyLayer` on the server side (a deadline and a bulkhead), `/metrics`,
//! `/health/live`, `/health/ready`, and a graceful shutdown on SIGTERM or Ctrl-C.
//!
//! Run: `cargo run --example service`, then try:
//!
//! ```text
//! curl -s -XPOST localhost:3000/chat/s1 -H 'content-type: application/json' -d '{"role":"user","content":"hi"}'
//! curl -s localhost:3000/chat/s1
//! curl -s -XPOST localhost:3000/facts -H 'content-type: application/json' -d '{"content":"The shop opens at 9."}'
//! curl -s 'localhost:3000/facts/search?q=shop'
//! curl -s localhost:3000/upstream/lisbon     # slow the first time, cached after
//! curl -s localhost:3000/health/ready
//! curl -s localhost:3000/metrics | grep circuit_state
//! ```
//!
//! Configuration: `Settings` only — the defaults, then `stayfast.toml` (or the file
//! named by `STAYFAST_CONFIG`) and `STAYFAST_*` variables. When no `redis.url` is
//! configured, `REDIS_URL` is used if set, else a throwaway `redis-server` on a free
//! loopback port if one is installed, else the service runs file-only (facts and the
//! cache then answer 503). The HTTP address is `SERVICE_LISTEN` (`127.0.0.1:3000`).
//!
//! In your own crate, the `http` and `tower` features of `stayfast` give
//! `stayfast::http` and `stayfast::tower`.

use std::{net::SocketAddr, time::Duration};

use stayfast::{Settings, Stayfast};

#[path = "../common/mod.rs"]
mod common;
mod server;

use server::upstream::{SlowUpstream, UpstreamClient};

/// How long the slow upstream takes to answer.
const UPSTREAM_DELAY: Duration = Duration::from_millis(300);
/// How long shutdown waits for background work and the transcript flush.
const GRACE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Log lines on stderr at INFO and above: stayfast's warnings (a breaker opening, a
    // flush that failed) and this example's own.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
    common::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let figment = Settings::figment();
    let mut settings = Settings::from_figment(&figment)?;
    // Kept until the end: a throwaway server stops when dropped.
    let _throwaway = if settings.redis.enabled && !figment.contains("redis.url") {
        common::choose_redis(&mut settings).await
    } else {
        println!("Redis: from the settings");
        None
    };
    let listen: SocketAddr = match std::env::var("SERVICE_LISTEN") {
        Ok(addr) => addr
            .parse()
            .map_err(|e| format!("SERVICE_LISTEN={addr:?}: {e}"))?,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 3000)),
    };

    let app = Stayfast::from_settings(&settings).await?;
    let slow = SlowUpstream::start(UPSTREAM_DELAY).await?;
    let upstream = UpstreamClient::new(slow.url(), &settings)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    // The directory the store uses: the configured one, or the program's state directory.
    let transcripts = settings.transcripts.directory()?;
    println!(
        "serving on http://{listen} (transcripts in {})",
        transcripts.display()
    );
    println!("  try: curl -s localhost:{}/health/ready", listen.port());

    let report = server::serve(listener, app, &settings, upstream, shutdown_signal(), GRACE).await?;
    println!(
        "shut down: background work drained ({} aborted), transcripts flushed; the upstream served {} calls",
        report.aborted,
        slow.calls()
    );
    Ok(())
}

/// Ctrl-C, or SIGTERM (what an orchestrator sends before killing the process).
async fn shutdown_signal() {
    let terminate = async {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    println!("shutting down: no new connections; finishing the requests in flight");
}
