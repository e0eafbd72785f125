//! The in-flight table of a cache: at most one load per key at a time (single flight).
//!
//! The first call to miss a key *leads*: it registers a flight and runs its loader. The
//! calls that miss the same key meanwhile *wait* on that flight's landing. The flight
//! is removed from the table by the leader's guard, whatever way the leader ends:
//! finished, failed, panicked or dropped. The table holds at most `max` flights.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{sync::watch, time::Instant};

/// What a flight hands the calls that waited on it.
#[derive(Clone, Debug)]
pub(super) enum Landing {
    /// The value, as JSON (the stored entry's bytes): each waiter decodes its own `T`.
    Value(Arc<[u8]>),
    /// The loader failed: the `Display` of its error (the error itself went to the leader).
    Failed(Arc<str>),
    /// The loader panicked: the panic's message.
    Panicked(Arc<str>),
    /// The loader ran past `load_timeout` and was dropped.
    TimedOut,
    /// The value has no JSON encoding (its `Serialize` failed): waiters load on their own.
    Unshareable,
}

/// A flight, as its waiters see it: `None` until it lands; closed (the sender dropped)
/// without a landing when the leader was dropped first.
type Watch = watch::Receiver<Option<Landing>>;

/// The flights of one cache (shared by its clones), by Redis key.
#[derive(Debug)]
pub(super) struct Flights {
    table: Mutex<HashMap<String, Watch>>,
    max: usize,
    /// Whether the table being full was logged already: once is enough (it is counted).
    warned_full: AtomicBool,
}

/// What a call missing a key does.
pub(super) enum Role {
    /// Runs its loader, and lands the flight for the others.
    Lead(Leader),
    /// Waits on the flight of another call.
    Wait(Watch),
    /// The table is full: load alone, without coalescing.
    Full,
}

/// How a wait ended.
pub(super) enum Waited {
    Landed(Landing),
    /// The leader was dropped (or panicked outside its loader) before landing.
    Abandoned,
    /// The waiter's own deadline passed first.
    TimedOut,
}

impl Flights {
    pub(super) fn new(max: usize) -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            max,
            warned_full: AtomicBool::new(false),
        }
    }

    /// Joins the flight of `key`, or starts one.
    pub(super) fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut table = self.lock();
        if let Some(flight) = table.get(key) {
            return Role::Wait(flight.clone());
        }
        if table.len() >= self.max {
            return Role::Full;
        }
        let (landing, flight) = watch::channel(None);
        table.insert(key.to_owned(), flight);
        Role::Lead(Leader {
            flights: Arc::clone(self),
            key: key.to_owned(),
            landing,
        })
    }

    /// Flights under way.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// `true` the first time only.
    pub(super) fn first_time_full(&self) -> bool {
        !self.warned_full.swap(true, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Watch>> {
        // NOTE: no code under this lock can panic halfway through a change (a map insert
        // or remove): a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits on `flight` until it lands, is abandoned, or `deadline` passes.
pub(super) async fn wait(mut flight: Watch, deadline: Instant) -> Waited {
    // NOTE: the landing is cloned out at once: `wait_for`'s `Ref` holds the channel's read
    // lock, and is not `Send`.
    let waited = tokio::time::timeout_at(deadline, flight.wait_for(Option::is_some))
        .await
        .map(|landed| landed.map(|landing| landing.clone()));
    match waited {
        Ok(Ok(landing)) => landing.map_or(Waited::Abandoned, Waited::Landed),
        Ok(Err(_closed)) => Waited::Abandoned,
        Err(_elapsed) => Waited::TimedOut,
    }
}

/// The leading call's hold on its flight: removes it from the table when dropped, so a
/// flight never outlives its leader (finished, failed, panicked or cancelled).
pub(super) struct Leader {
    flights: Arc<Flights>,
    key: String,
    landing: watch::Sender<Option<Landing>>,
}

impl Leader {
    /// Hands `landing` to every waiter, present and to come until this guard drops.
    pub(super) fn land(&self, landing: Landing) {
        self.landing.send_replace(Some(landing));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // NOTE: removed before the sender drops (after this body): a waiter woken by the
        // closed channel finds no stale entry, and starts (or joins) the flight that
        // takes over.
        self.flights.lock().remove(&self.key);
    }
}
