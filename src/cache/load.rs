//! `Cache::get_or_insert_with`: the cache in front of a loader, one load per entry at a
//! time (see the [module docs](super#single-flight)).

use std::{
    any::Any,
    fmt,
    future::Future,
    panic::{self, AssertUnwindSafe},
    sync::Arc,
    time::Duration,
};

use futures_util::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tokio::time::Instant;

use super::{
    Cache, CoalescedError, Outcome, Results, decode, encode,
    flight::{self, Landing, Leader, Role, Waited},
};
use crate::StoreError;

/// What a call's own lookup found, when it did not find a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// No entry.
    Nothing,
    /// An entry that does not decode: the loaded value replaces it.
    Corrupt,
    /// Redis failed: the loaded value is not stored (a write would most likely wait out a
    /// second bound for nothing).
    Unavailable,
}

/// A call's one result: the first [`count`](Tally::count) counts, later ones do nothing.
/// So a failure of the cache is counted at once (`error`), and stays the call's result
/// whatever comes next; a call dropped before counting counts nothing.
struct Tally<'a> {
    results: &'a Results,
    counted: bool,
}

impl Tally<'_> {
    fn count(&mut self, outcome: Outcome) {
        if !std::mem::replace(&mut self.counted, true) {
            self.results.count(outcome);
        }
    }
}

impl Cache {
    /// The cached value of `context`, or else `load`'s, which is then cached for `ttl`
    /// (`None`: [`CacheConfig::ttl`](super::CacheConfig::ttl)). Counts one `result`
    /// (see [Metrics](super#metrics)).
    ///
    /// **Single flight**: concurrent calls that miss the same entry run one loader. The
    /// first runs its `load` (after looking once more, in case a load that just ended
    /// stored the value); the others wait and decode their own `T` from the JSON of its
    /// value. A waiter's own `load` runs only once it has waited
    /// [`max_wait`](super::CacheConfig::max_wait): it then gives up on that load and runs
    /// its own, uncoalesced (and stores its value), so a slow or hung loader delays the
    /// others by `max_wait` at most. Only this `Cache` and its clones coalesce (not other
    /// processes).
    ///
    /// **Bounded loads**: every `load` the cache runs gets
    /// [`load_timeout`](super::CacheConfig::load_timeout); past it, its future is dropped
    /// (cancelled), nothing is stored, and the call fails with a [`CoalescedError`]
    /// ([`is_timeout`](CoalescedError::is_timeout)), as do the calls still waiting on it.
    /// A loader that never finishes thus holds its entry's flight that long at most.
    ///
    /// The cache never fails the call:
    /// - Redis failing (down, slow, circuit open) counts `error` and loads (coalesced);
    ///   the loaded value is then *not* stored, so a failing Redis adds at most one of
    ///   its bounds to the call, never two.
    /// - An entry that does not decode (an old shape of `T`, damaged, not a string)
    ///   counts `error`, loads, and the loaded value replaces the entry.
    /// - A failed store counts `error` and the loaded value is still returned; a value
    ///   over [`max_value_bytes`](super::CacheConfig::max_value_bytes) is returned (and
    ///   handed to the waiters) and not stored (a warning is logged; it counts as a
    ///   `miss`).
    /// - With [`max_in_flight`](super::CacheConfig::max_in_flight) other entries loading
    ///   already, the call loads on its own, uncoalesced, and counts `error`.
    ///
    /// A hit returns the decoded entry, a miss the loader's own value, a waiter the value
    /// decoded from the loader's JSON: they are equal as long as `T`'s `Serialize` and
    /// `Deserialize` are inverses.
    ///
    /// # Errors
    ///
    /// Only the loader's errors, never cached (the next call runs a loader again):
    /// - the call whose `load` ran gets `load`'s error as is;
    /// - a call that waited gets a [`CoalescedError`] converted into `E` (hence the bound
    ///   `E: From<CoalescedError>`, met by `std::io::Error`, `String`,
    ///   [`StoreError`], `Box<dyn Error>` and `anyhow::Error`): the loader's error, by
    ///   its message (hence `E: Display`), or its panic, or its timeout;
    /// - a call whose own `load` ran past `load_timeout` gets a [`CoalescedError`]
    ///   ([`is_timeout`](CoalescedError::is_timeout)) converted into `E`.
    ///
    /// # Panics
    ///
    /// If `load` panics, in the call that ran it (the panic goes on unchanged); the calls
    /// waiting on it get a [`CoalescedError`] as soon as the panic unwinds out of `load`.
    /// The panic hook runs before that: the default hook with `RUST_BACKTRACE=1`
    /// resolves a backtrace first, which can take a few hundred milliseconds.
    ///
    /// # Cancellation
    ///
    /// Dropping the call that runs the loader drops the loader's future with it, and
    /// stores nothing not yet sent (a store already sent may still be applied); the
    /// calls waiting on it wake, and one of them takes over with its own `load` (the
    /// others wait on that one, within their own `max_wait`). A waiter that already got
    /// the value keeps it. Dropping a waiting call just ends its wait. A `load` past
    /// `load_timeout` is dropped the same way, by the cache.
    ///
    /// A hit, or a failure of the cache, is counted at once; any other result once the
    /// call ends: a call dropped while loading or waiting after a miss counts nothing.
    ///
    /// ```no_run
    /// # use stayfast::cache::{Cache, CacheConfig};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # async fn fetch_weather(city: &str) -> Result<String, std::io::Error> { Ok("sunny".into()) }
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = "redis://127.0.0.1:6390".into();
    /// # let redis = Redis::connect(&redis_config).await?;
    /// let cache = Cache::new(redis, "weather", &CacheConfig::default())?;
    /// let city = "Lyon";
    /// // `fetch_weather` runs on a miss only, and once for all the calls missing at once;
    /// // its error is returned, never cached.
    /// let weather: String = cache.get_or_insert_with(city, None, || fetch_weather(city)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_or_insert_with<T, E, F, Fut>(
        &self,
        context: &(impl Serialize + ?Sized),
        ttl: Option<Duration>,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<CoalescedError> + fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut tally = Tally {
            results: &self.inner.results,
            counted: false,
        };
        let key = match self.key(context) {
            Ok(key) => key,
            Err(e) => {
                self.report("cannot derive the key; not cached", &e);
                tally.count(Outcome::Error);
                return match self.bounded(load()).await {
                    Some(loaded) => loaded,
                    None => Err(self.load_timed_out().into()),
                };
            }
        };
        let seen = match self.lookup::<T>(&key).await {
            Ok(Some(value)) => {
                tally.count(Outcome::Hit);
                return Ok(value);
            }
            Ok(None) => Seen::Nothing,
            Err(e) => self.lookup_failed(&e, &mut tally),
        };
        self.coalesce(&key, seen, ttl, load, &mut tally).await
    }

    /// Leads the flight of `key`, or waits on it (taking over an abandoned one).
    async fn coalesce<T, E, F, Fut>(
        &self,
        key: &str,
        mut seen: Seen,
        ttl: Option<Duration>,
        load: F,
        tally: &mut Tally<'_>,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<CoalescedError> + fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let name = self.inner.name;
        let max_wait = self.inner.max_wait;
        // Set at the first wait: a takeover does not restart the clock.
        let mut deadline = None;
        loop {
            let flight = match self.inner.flights.join(key) {
                Role::Lead(leader) => return self.lead(leader, key, seen, ttl, load, tally).await,
                Role::Full => {
                    self.table_full();
                    tally.count(Outcome::Error);
                    return self.load_alone(key, seen, ttl, load, tally).await;
                }
                Role::Wait(flight) => flight,
            };
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + max_wait);
            let landing = match flight::wait(flight, deadline).await {
                Waited::Landed(landing) => landing,
                // NOTE: the leader was dropped before landing (its guard removed the
                // flight first): join again — this call leads now, with its own loader,
                // unless another waiter got there first.
                Waited::Abandoned => continue,
                // NOTE: the load waited on is slow or hung: it goes on (bounded by
                // `load_timeout`, and may still store its value), and this call loads on
                // its own rather than fail, or wait on it any longer.
                Waited::TimedOut => {
                    tracing::debug!(
                        target: "stayfast::cache", cache = name, ?max_wait,
                        "a concurrent load of this entry outlasted max_wait; loading on its own"
                    );
                    return self.load_alone(key, seen, ttl, load, tally).await;
                }
            };
            match landing {
                Landing::Value(json) => match decode(&json) {
                    Ok(value) => {
                        tally.count(Outcome::Coalesced);
                        return Ok(value);
                    }
                    Err(e) => {
                        // Another `T` under the same context: as with a corrupt entry.
                        self.report("value loaded by a concurrent call does not decode; loading", &e);
                        tally.count(Outcome::Error);
                        if seen == Seen::Nothing {
                            seen = Seen::Corrupt;
                        }
                    }
                },
                Landing::Failed(message) => {
                    tally.count(Outcome::Coalesced);
                    return Err(CoalescedError::failed(name, message).into());
                }
                Landing::Panicked(message) => {
                    tally.count(Outcome::Coalesced);
                    return Err(CoalescedError::panicked(name, message).into());
                }
                Landing::TimedOut => {
                    tally.count(Outcome::Coalesced);
                    return Err(CoalescedError::load_timed_out(name, self.inner.load_timeout).into());
                }
                // Counted `error` by the leader, and here: the cache could not share it.
                Landing::Unshareable => tally.count(Outcome::Error),
            }
            return self.load_alone(key, seen, ttl, load, tally).await;
        }
    }

    /// Runs the flight: looks again, loads, lands the outcome for the waiters, stores.
    async fn lead<T, E, F, Fut>(
        &self,
        leader: Leader,
        key: &str,
        mut seen: Seen,
        ttl: Option<Duration>,
        load: F,
        tally: &mut Tally<'_>,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<CoalescedError> + fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // NOTE: look again inside the flight, as groupcache's `load` does: a call that
        // missed just before the previous flight of this key stored its value and ended
        // must find that value here, not load it again. Not after Redis failed: that would
        // add a second bound.
        if seen != Seen::Unavailable {
            match self.fetch(key).await {
                Ok(Some(json)) => match decode::<T>(&json) {
                    Ok(value) => {
                        leader.land(Landing::Value(json.into()));
                        tally.count(Outcome::Hit);
                        return Ok(value);
                    }
                    Err(e) => seen = self.lookup_failed(&e, tally),
                },
                Ok(None) => {}
                Err(e) => seen = self.lookup_failed(&e, tally),
            }
        }
        // NOTE: the panic is caught to hand its message to the waiters, then resumed
        // unchanged. A drop guard could not tell it from a cancellation: the task
        // harness drops a panicked future after catching the panic.
        let bound = self.inner.load_timeout;
        let loaded = AssertUnwindSafe(async move { tokio::time::timeout(bound, load()).await })
            .catch_unwind()
            .await;
        let value = match loaded {
            Ok(Ok(Ok(value))) => value,
            Ok(Ok(Err(e))) => {
                leader.land(Landing::Failed(e.to_string().into()));
                tally.count(Outcome::LoaderError);
                return Err(e);
            }
            // The loader's future is dropped: nothing to store, the flight ends.
            Ok(Err(_elapsed)) => {
                leader.land(Landing::TimedOut);
                tally.count(Outcome::LoaderError);
                return Err(self.load_timed_out().into());
            }
            Err(panic) => {
                leader.land(Landing::Panicked(panic_message(&*panic).into()));
                drop(leader); // the flight ends now, whoever catches the panic
                panic::resume_unwind(panic);
            }
        };
        let json = match encode(&value) {
            Ok(json) => json,
            Err(e) => {
                leader.land(Landing::Unshareable);
                self.report("loaded value has no JSON encoding; not cached", &e);
                tally.count(Outcome::Error);
                return Ok(value);
            }
        };
        leader.land(Landing::Value(Arc::from(json.as_bytes())));
        // NOTE: the flight stays until the store is done: a call missing meanwhile joins
        // it, and gets the value at once, instead of loading it again.
        if seen != Seen::Unavailable {
            let stored = self.store_loaded(key, json, ttl).await;
            tally.count(stored);
        }
        tally.count(Outcome::Miss);
        drop(leader);
        Ok(value)
    }

    /// Loads without a flight (the table is full, or the flight's value was of no use).
    async fn load_alone<T, E, F, Fut>(
        &self,
        key: &str,
        seen: Seen,
        ttl: Option<Duration>,
        load: F,
        tally: &mut Tally<'_>,
    ) -> Result<T, E>
    where
        T: Serialize,
        E: From<CoalescedError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let value = match self.bounded(load()).await {
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                tally.count(Outcome::LoaderError);
                return Err(e);
            }
            None => {
                tally.count(Outcome::LoaderError);
                return Err(self.load_timed_out().into());
            }
        };
        if seen != Seen::Unavailable {
            let stored = match encode(&value) {
                Ok(json) => self.store_loaded(key, json, ttl).await,
                Err(e) => {
                    self.report("loaded value has no JSON encoding; not cached", &e);
                    Outcome::Error
                }
            };
            tally.count(stored);
        }
        tally.count(Outcome::Miss);
        Ok(value)
    }

    /// `load`'s output, or `None` once [`load_timeout`](super::CacheConfig::load_timeout)
    /// passed (its future is dropped then).
    async fn bounded<Fut: Future>(&self, load: Fut) -> Option<Fut::Output> {
        tokio::time::timeout(self.inner.load_timeout, load).await.ok()
    }

    /// The error of a load past `load_timeout`, logged: a loader that hangs needs
    /// attention.
    fn load_timed_out(&self) -> CoalescedError {
        let (cache, load_timeout) = (self.inner.name, self.inner.load_timeout);
        tracing::warn!(target: "stayfast::cache", cache, ?load_timeout, "loader dropped: it outlasted load_timeout");
        CoalescedError::load_timed_out(cache, load_timeout)
    }

    /// Stores a loaded value; what the call counts.
    async fn store_loaded(&self, key: &str, json: String, ttl: Option<Duration>) -> Outcome {
        match self.write(key, json, ttl).await {
            Ok(()) => Outcome::Miss,
            Err(e @ StoreError::TooLarge { .. }) => {
                self.report("loaded value not cached", &e);
                Outcome::Miss
            }
            Err(e) => {
                self.report("storing the loaded value failed", &e);
                Outcome::Error
            }
        }
    }

    /// Counts a failed lookup (`error`), logs it; what the call does next.
    fn lookup_failed(&self, e: &StoreError, tally: &mut Tally<'_>) -> Seen {
        tally.count(Outcome::Error);
        if let StoreError::Corrupt { .. } = e {
            self.report("entry does not decode; loading and replacing it", e);
            Seen::Corrupt
        } else {
            self.report("lookup failed; loading without caching", e);
            Seen::Unavailable
        }
    }

    fn table_full(&self) {
        let (cache, max) = (self.inner.name, self.inner.flights.max());
        let what = "too many entries loading at once (max_in_flight); loading without coalescing";
        // Counted every time (`error`); logged once as a warning, then at debug level.
        if self.inner.flights.first_time_full() {
            tracing::warn!(target: "stayfast::cache", cache, max_in_flight = max, "{what}");
        } else {
            tracing::debug!(target: "stayfast::cache", cache, max_in_flight = max, "{what}");
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "a panic without a message"
    }
}
