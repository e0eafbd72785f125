//! Opening the breaker from fred's connection events
//! ([`RedisConfig::open_on_disconnect`](super::RedisConfig::open_on_disconnect)).
//!
//! fred tells listeners when a client's connection ends or a reconnect fails (an error
//! event, within a millisecond of the socket closing) and when it is connected again (a
//! reconnect event). Its own client state is no guide here: it keeps saying `Connected`
//! through the whole delay before the first reconnect attempt. So each client is marked
//! lost on an error event and restored on a reconnect event; when every client of the
//! pool is lost, Redis is unreachable and the breaker is tripped — before any call had
//! to fail to show it. One lost connection among several (a `CLIENT KILL`, an idle
//! timeout) trips nothing.
//!
//! Errors and reconnects arrive on two channels, so a burst of both may be seen out of
//! order and a client wrongly marked lost; the cost is bounded: the breaker it trips
//! lets a probe through after its open duration, and the probe closes it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use fred::{clients::Pool, interfaces::EventInterface};
use tokio::{
    sync::broadcast::{Receiver, error::RecvError},
    task::AbortHandle,
};

use crate::CircuitBreaker;

/// Starts two listeners per client of `pool` (errors, reconnects); each runs until
/// aborted or until the client is closed (QUIT closes fred's event channels).
pub(super) fn trip_on_disconnect(pool: &Pool, breaker: &CircuitBreaker) -> Vec<AbortHandle> {
    let clients = pool.clients();
    // NOTE: every client starts "up": one that never connects reports its failed
    // attempts as error events, which mark it lost.
    let lost: Arc<[AtomicBool]> = clients.iter().map(|_| AtomicBool::new(false)).collect();
    let mut tasks = Vec::with_capacity(2 * clients.len());
    for (index, client) in clients.iter().enumerate() {
        let (lost_on_error, breaker) = (Arc::clone(&lost), breaker.clone());
        tasks.push(listen(client.error_rx(), move || {
            lost_on_error[index].store(true, Ordering::Relaxed);
            if lost_on_error.iter().all(|l| l.load(Ordering::Relaxed)) && breaker.trip() {
                tracing::warn!(
                    target: "stayfast::redis", redis = %breaker.target(),
                    "every Redis connection is lost: circuit opened before any call failed"
                );
            }
        }));
        let restored = Arc::clone(&lost);
        tasks.push(listen(client.reconnect_rx(), move || {
            restored[index].store(false, Ordering::Relaxed);
        }));
    }
    tasks
}

/// Runs `on_event` for every event of `events` until the channel closes.
fn listen<T: Clone + Send + 'static>(
    mut events: Receiver<T>,
    on_event: impl Fn() + Send + 'static,
) -> AbortHandle {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => on_event(),
                Err(RecvError::Closed) => return,
            }
        }
    })
    .abort_handle()
}
