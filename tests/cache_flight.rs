//! Single flight in `Cache::get_or_insert_with`, against a real redis-server: 1000
//! concurrent misses run one loader; a leader dropped mid-load is taken over by one
//! waiter; a panicking or failing loader reaches every waiter (within its deadline) and
//! is never cached; a waiter past `max_wait` loads on its own, and a hung loader is
//! dropped after `load_timeout` (under paused time); a full flight table loads alone;
//! with Redis stopped, calls still coalesce. Results are counted exactly (through a
//! `DebuggingRecorder` the cache's handles were resolved from), and every test ends with
//! an empty flight table.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    future::Future,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use stayfast::{
    StoreError,
    cache::{Cache, CacheConfig, CoalescedError},
    redis::{Redis, RedisConfig},
    test_util::Reply,
};
use support::cache::{COMMAND_TIMEOUT, Counts, Fixture};

/// Scheduling and process slack on top of a bound.
const SLACK: Duration = Duration::from_millis(250);
/// Longest a gate waits for the calls under test to get where it expects them.
const GATE: Duration = Duration::from_secs(20);

/// Every fixture here is the cache `flight`.
async fn fixture(config: CacheConfig) -> Fixture {
    support::cache::fixture("flight", config).await
}

impl Fixture {
    async fn raw_get(&self, context: &str) -> Option<String> {
        let key = self.cache.key(context).unwrap();
        match self.server.command(&["GET", &key]).await.unwrap() {
            Reply::Bulk(None) => None,
            reply => Some(reply.as_text().unwrap()),
        }
    }

    /// Waits until the server has executed `n` GETs in all (each call's lookup, and each
    /// leader's second look): the calls under test have all looked, and missed. How long
    /// the GETs took.
    async fn until_gets(&self, n: u64) -> Duration {
        let started = Instant::now();
        while self.server.executions("get").await.unwrap() < n {
            assert!(started.elapsed() < GATE, "fewer than {n} GETs after {GATE:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        // Time for the last replies to reach their calls, and the calls to join the flight.
        tokio::time::sleep(Duration::from_millis(300)).await;
        took
    }

    /// Waits until a call leads a flight.
    async fn until_in_flight(&self) {
        let started = Instant::now();
        while self.cache.in_flight() == 0 {
            assert!(started.elapsed() < GATE, "no flight after {GATE:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn counts(hit: u64, miss: u64, coalesced: u64, loader_error: u64, error: u64) -> Counts {
    Counts {
        hit,
        miss,
        coalesced,
        loader_error,
        error,
    }
}

/// A loader that counts its runs, takes `delay`, and answers `value`.
fn slow_loader<E>(
    runs: &Arc<AtomicUsize>,
    delay: Duration,
    value: &str,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, E>> + Send>> + Send + use<E> {
    let (runs, value) = (runs.clone(), value.to_owned());
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(value)
        })
    }
}

/// Records when it drops: in a loader, as its panic unwinds out of it.
struct Unwound(Arc<OnceLock<Instant>>);

impl Drop for Unwound {
    fn drop(&mut self) {
        let _ = self.0.set(Instant::now());
    }
}

fn max_wait(wait: Duration) -> CacheConfig {
    let mut config = CacheConfig::default();
    config.max_wait = wait;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_misses_run_one_loader() {
    const CALLS: usize = 1000;
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    // The loader lasts until every call has looked and missed: then all 999 others wait
    // on it (none finds the stored value instead), and the counts are exact.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let (cache, runs, gate) = (f.cache.clone(), runs.clone(), gate.clone());
            tokio::spawn(async move {
                let value = cache
                    .get_or_insert_with("cold", None, || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _open = gate.acquire().await.unwrap();
                        Ok::<_, std::io::Error>("loaded once".to_owned())
                    })
                    .await
                    .unwrap();
                (value, Instant::now())
            })
        })
        .collect();
    let looked = f.until_gets(CALLS as u64 + 1).await;
    let opened = Instant::now();
    gate.add_permits(1);
    let mut done = Vec::new();
    for call in calls {
        let (value, at) = call.await.unwrap();
        assert_eq!(value, "loaded once");
        done.push(at - opened);
    }
    done.sort();
    let (gets, sets) = (
        f.server.executions("get").await.unwrap(),
        f.server.executions("set").await.unwrap(),
    );
    eprintln!(
        "{CALLS} concurrent calls on one cold key: all had looked up within {looked:?}; once the loader \
         returned, p50 {:?}, last {:?} until a call had its value; loader runs {}, Redis GETs {gets}, SETs {sets}",
        done[CALLS / 2],
        done[CALLS - 1],
        runs.load(Ordering::SeqCst),
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one loader call");
    assert_eq!(sets, 1, "stored once");
    assert_eq!(
        gets,
        CALLS as u64 + 1,
        "each call's lookup, and the leader's second look"
    );
    let c = f.counts();
    assert_eq!(c, counts(0, 1, CALLS as u64 - 1, 0, 0), "{c:?}");
    assert_eq!(f.cache.in_flight(), 0);
    assert_eq!(f.raw_get("cold").await.as_deref(), Some(r#""loaded once""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cancelled_mid_load_one_waiter_takes_over() {
    let mut f = fixture(CacheConfig::default()).await;
    let (leader_runs, waiter_runs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    const WAITERS: usize = 10;
    const TAKEOVER_LOAD: Duration = Duration::from_millis(100);

    let leader = tokio::spawn({
        let (cache, runs) = (f.cache.clone(), leader_runs.clone());
        async move {
            cache
                .get_or_insert_with("report", None, move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<Result<String, String>>()
                })
                .await
        }
    });
    f.until_in_flight().await;
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (cache, load) = (
                f.cache.clone(),
                slow_loader::<String>(&waiter_runs, TAKEOVER_LOAD, "v2"),
            );
            tokio::spawn(async move { cache.get_or_insert_with("report", None, load).await })
        })
        .collect();
    f.until_gets(2 + WAITERS as u64).await;
    assert_eq!(f.counts(), Counts::default(), "nothing finished yet");

    let aborted = Instant::now();
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().as_deref(), Ok("v2"));
    }
    let took = aborted.elapsed();
    eprintln!(
        "leader aborted mid-load: {WAITERS} waiters done {took:?} later (the takeover's loader takes {TAKEOVER_LOAD:?})"
    );
    assert!(took <= TAKEOVER_LOAD + SLACK, "{took:?}");
    assert_eq!(leader_runs.load(Ordering::SeqCst), 1);
    assert_eq!(waiter_runs.load(Ordering::SeqCst), 1, "one waiter took over");
    // The aborted leader counts nothing; the takeover a miss; the others coalesced.
    let c = f.counts();
    assert_eq!(c, counts(0, 1, WAITERS as u64 - 1, 0, 0), "{c:?}");
    assert_eq!(f.raw_get("report").await.as_deref(), Some(r#""v2""#));
    assert_eq!(f.cache.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_panic_reaches_every_waiter_within_its_deadline_and_the_next_call_loads() {
    const WAIT: Duration = Duration::from_secs(5);
    let mut f = fixture(max_wait(WAIT)).await;
    let waiter_runs = Arc::new(AtomicUsize::new(0));
    const WAITERS: usize = 10;

    let (go, gate) = tokio::sync::oneshot::channel::<()>();
    let unwound = Arc::new(OnceLock::new());
    let leader = tokio::spawn({
        let (cache, unwound) = (f.cache.clone(), unwound.clone());
        async move {
            cache
                .get_or_insert_with("fragile", None, || async move {
                    let _unwinding = Unwound(unwound);
                    let _ = gate.await;
                    panic!("loader exploded");
                    #[allow(unreachable_code)]
                    Ok::<String, StoreError>(String::new())
                })
                .await
        }
    });
    f.until_in_flight().await;
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (cache, load) = (
                f.cache.clone(),
                slow_loader::<StoreError>(&waiter_runs, Duration::ZERO, "x"),
            );
            tokio::spawn(async move {
                let result = cache.get_or_insert_with("fragile", None, load).await;
                (result, Instant::now())
            })
        })
        .collect();
    f.until_gets(2 + WAITERS as u64).await;

    let panicked = Instant::now();
    go.send(()).unwrap();
    assert!(
        leader.await.unwrap_err().is_panic(),
        "the panic goes on in the leader"
    );
    // NOTE: the panic hook runs before the panic unwinds, and with RUST_BACKTRACE=1 the
    // default hook captures and resolves a backtrace first: 150-400 ms on this
    // machine, outside the cache's reach (it learns of the panic only as it unwinds out
    // of the loader). Measured from then, as the loader's locals drop.
    let unwound = *unwound
        .get()
        .expect("the loader's locals dropped as the panic unwound");
    let mut slowest = Duration::ZERO;
    for waiter in waiters {
        let (result, at) = waiter.await.unwrap();
        assert!(at >= unwound, "a waiter learned of the panic before it unwound");
        slowest = slowest.max(at - unwound);
        let Err(StoreError::Coalesced(e)) = result else {
            panic!("{result:?}")
        };
        assert!(e.is_panic(), "{e}");
        assert_eq!(e.message(), Some("loader exploded"));
        assert_eq!(e.cache(), "flight");
    }
    eprintln!(
        "loader panicked: the panic hook took {:?}; every one of {WAITERS} waiters had its error {slowest:?} \
         after the panic unwound (max_wait {WAIT:?})",
        unwound - panicked
    );
    assert!(slowest <= SLACK, "{slowest:?}");
    assert_eq!(waiter_runs.load(Ordering::SeqCst), 0, "no waiter ran its loader");
    assert_eq!(f.cache.in_flight(), 0);
    let c = f.counts();
    assert_eq!(c, counts(0, 0, WAITERS as u64, 0, 0), "{c:?}");

    // Nothing cached, nothing stuck: the next call loads.
    assert_eq!(f.raw_get("fragile").await, None);
    let next = f
        .cache
        .get_or_insert_with(
            "fragile",
            None,
            slow_loader::<StoreError>(&waiter_runs, Duration::ZERO, "ok"),
        )
        .await;
    assert_eq!(next.unwrap(), "ok");
    assert_eq!(waiter_runs.load(Ordering::SeqCst), 1);
    assert_eq!(f.counts(), counts(0, 1, WAITERS as u64, 0, 0));
    assert_eq!(f.cache.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_error_reaches_every_waiter_and_is_not_cached() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    const WAITERS: usize = 10;

    let (go, gate) = tokio::sync::oneshot::channel::<()>();
    let leader = tokio::spawn({
        let (cache, runs) = (f.cache.clone(), runs.clone());
        async move {
            cache
                .get_or_insert_with("profile", None, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.await;
                    Err::<String, _>(std::io::Error::other("database down"))
                })
                .await
        }
    });
    f.until_in_flight().await;
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (cache, load) = (
                f.cache.clone(),
                slow_loader::<std::io::Error>(&runs, Duration::ZERO, "x"),
            );
            tokio::spawn(async move { cache.get_or_insert_with("profile", None, load).await })
        })
        .collect();
    f.until_gets(2 + WAITERS as u64).await;
    go.send(()).unwrap();

    let own = leader.await.unwrap().unwrap_err();
    assert_eq!(own.to_string(), "database down", "the loader's own error, as is");
    assert!(own.get_ref().unwrap().downcast_ref::<CoalescedError>().is_none());
    for waiter in waiters {
        let e = waiter.await.unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            "cache `flight`: the concurrent load this call waited on failed: database down"
        );
        let coalesced = e.get_ref().unwrap().downcast_ref::<CoalescedError>().unwrap();
        assert!(coalesced.is_loader_error());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one loader ran");
    assert_eq!(f.raw_get("profile").await, None, "the error is not cached");
    assert_eq!(f.cache.in_flight(), 0);
    let c = f.counts();
    assert_eq!(c, counts(0, 0, WAITERS as u64, 1, 0), "{c:?}");

    let next = f
        .cache
        .get_or_insert_with(
            "profile",
            None,
            slow_loader::<std::io::Error>(&runs, Duration::ZERO, "back"),
        )
        .await;
    assert_eq!(next.unwrap(), "back");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the next call ran the loader again"
    );
    assert_eq!(f.raw_get("profile").await.as_deref(), Some(r#""back""#));
    assert_eq!(f.counts(), counts(0, 1, WAITERS as u64, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_past_max_wait_loads_on_its_own_and_the_load_goes_on() {
    const WAIT: Duration = Duration::from_millis(200);
    const LOAD: Duration = Duration::from_millis(1000);
    let mut f = fixture(max_wait(WAIT)).await;
    let runs = Arc::new(AtomicUsize::new(0));

    let leader = tokio::spawn({
        let (cache, load) = (f.cache.clone(), slow_loader::<String>(&runs, LOAD, "slow"));
        async move { cache.get_or_insert_with("slow", None, load).await }
    });
    f.until_in_flight().await;
    let started = Instant::now();
    let waited = f
        .cache
        .get_or_insert_with("slow", None, slow_loader::<String>(&runs, Duration::ZERO, "own"))
        .await;
    let took = started.elapsed();
    eprintln!("waiter loaded on its own after {took:?} (max_wait {WAIT:?}, the load takes {LOAD:?})");
    assert_eq!(waited.as_deref(), Ok("own"), "its own load's value");
    assert!(took >= WAIT && took <= WAIT + SLACK, "{took:?}");
    assert_eq!(f.raw_get("slow").await.as_deref(), Some(r#""own""#), "stored");

    assert_eq!(leader.await.unwrap().as_deref(), Ok("slow"), "the load went on");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(f.raw_get("slow").await.as_deref(), Some(r#""slow""#));
    assert_eq!(f.counts(), counts(0, 2, 0, 0, 0));
    assert_eq!(f.cache.in_flight(), 0);
}

/// A cache over a closed Redis handle: every lookup fails at once, without I/O or
/// timers (so it runs under paused time), and flights still coalesce.
async fn closed_cache(config: CacheConfig) -> Cache {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again
    let mut c = RedisConfig::default();
    c.url = format!("redis://127.0.0.1:{port}");
    c.connect_timeout = Duration::from_millis(50);
    let redis = Redis::connect(&c).await.unwrap();
    redis.close().await;
    Cache::new(redis, "hung", &config).unwrap()
}

#[tokio::test]
async fn hung_loader_holds_its_key_for_max_wait_then_later_calls_load_and_it_is_dropped_at_load_timeout() {
    use tokio::time::Instant;
    const WAIT: Duration = Duration::from_secs(2);
    const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
    const CALLERS: usize = 5;
    let mut config = max_wait(WAIT);
    config.load_timeout = LOAD_TIMEOUT;
    let cache = closed_cache(config).await;
    tokio::time::pause();

    let t = Instant::now();
    let probe = cache.get::<String>("probe").await;
    eprintln!("a lookup takes {:?}: {probe:?}", t.elapsed());
    let started = Instant::now();
    let hung = tokio::spawn({
        let cache = cache.clone();
        async move {
            let result = cache
                .get_or_insert_with("stuck", None, std::future::pending::<Result<String, String>>)
                .await;
            (result, Instant::now())
        }
    });
    // NOTE: a sleep, not `yield_now`: the leader's lookup may wait on a timer, and
    // paused time advances only while every task is idle.
    while cache.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Later callers, one second apart: each waits `max_wait` at most, then loads.
    let runs = Arc::new(AtomicUsize::new(0));
    let mut later = Vec::new();
    for i in 0..CALLERS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cache, load) = (cache.clone(), own_loader(&runs, i));
        later.push(tokio::spawn(async move {
            let joined = Instant::now();
            let result = tokio::time::timeout(4 * WAIT, cache.get_or_insert_with("stuck", None, load)).await;
            (i, result, joined.elapsed())
        }));
    }
    for call in later {
        let (i, result, took) = call.await.unwrap();
        let result = result.unwrap_or_else(|_| panic!("caller {i} still waiting after {:?}", 4 * WAIT));
        assert_eq!(result, Ok(format!("own {i}")), "caller {i}: its own load's value");
        // The lookup fails at once; then `max_wait`, then its own load (10 ms).
        assert!(
            took >= WAIT && took <= WAIT + Duration::from_millis(100),
            "caller {i}: {took:?}"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), CALLERS, "each ran its own load");
    assert_eq!(cache.in_flight(), 1, "the hung load still holds its flight");

    let (result, at) = tokio::time::timeout(2 * LOAD_TIMEOUT, hung)
        .await
        .expect("the hung loader's call is bounded")
        .unwrap();
    let e = result.unwrap_err();
    assert_eq!(
        e,
        "cache `hung`: the load did not finish within 30s (load_timeout)"
    );
    let took = at - started;
    assert!(
        took >= LOAD_TIMEOUT && took <= LOAD_TIMEOUT + Duration::from_millis(100),
        "{took:?}"
    );
    assert_eq!(cache.in_flight(), 0, "the flight ended with it");
}

#[tokio::test]
async fn a_load_timeout_reaches_the_waiters() {
    use tokio::time::Instant;
    const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
    let mut config = max_wait(Duration::from_secs(5));
    config.load_timeout = LOAD_TIMEOUT;
    let cache = closed_cache(config).await;
    tokio::time::pause();

    let started = Instant::now();
    let hung = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_insert_with("stuck", None, std::future::pending::<Result<String, String>>)
                .await
        }
    });
    while cache.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let waiter = cache
        .get_or_insert_with("stuck", None, own_loader(&runs, 0))
        .await;
    let took = started.elapsed();
    let expected = Err("cache `hung`: the load did not finish within 1s (load_timeout)".to_owned());
    assert_eq!(waiter, expected, "the waiter gets the leader's timeout");
    assert_eq!(hung.await.unwrap(), expected);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the waiter's loader never ran");
    assert!(
        took >= LOAD_TIMEOUT && took <= LOAD_TIMEOUT + Duration::from_millis(100),
        "{took:?}"
    );
    assert_eq!(cache.in_flight(), 0);
}

/// A loader that counts its runs and answers `own <i>` after 10 ms.
fn own_loader(
    runs: &Arc<AtomicUsize>,
    i: usize,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + use<> {
    let runs = runs.clone();
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(format!("own {i}"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flight_table_loads_alone_and_counts_error() {
    let mut config = CacheConfig::default();
    config.max_in_flight = 1;
    let mut f = fixture(config).await;
    let runs = Arc::new(AtomicUsize::new(0));

    let (go, gate) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn({
        let cache = f.cache.clone();
        async move {
            cache
                .get_or_insert_with("a", None, || async move {
                    let _ = gate.await;
                    Ok::<_, String>(1)
                })
                .await
        }
    });
    f.until_in_flight().await;
    // Another entry, with the one flight taken: loaded and stored, uncoalesced.
    for _ in 0..2 {
        let b = f
            .cache
            .get_or_insert_with("b", None, slow_loader::<String>(&runs, Duration::ZERO, "b"))
            .await;
        assert_eq!(b.as_deref(), Ok("b"));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "stored by the first, a hit for the second"
    );
    assert_eq!(f.cache.in_flight(), 1);
    go.send(()).unwrap();
    assert_eq!(first.await.unwrap(), Ok(1));
    assert_eq!(f.cache.in_flight(), 0);
    assert_eq!(f.counts(), counts(1, 1, 0, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_calls_still_coalesce_within_one_bound() {
    let mut f = fixture(CacheConfig::default()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    const CALLS: usize = 20;
    const LOAD: Duration = Duration::from_millis(300);
    // SIGSTOP: every lookup waits out its bound, then the calls coalesce on one load.
    f.server.pause().unwrap();

    let started = Instant::now();
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let (cache, load) = (f.cache.clone(), slow_loader::<String>(&runs, LOAD, "loaded"));
            tokio::spawn(async move { cache.get_or_insert_with("down", None, load).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().as_deref(), Ok("loaded"));
    }
    let took = started.elapsed();
    f.server.resume().unwrap();
    eprintln!(
        "Redis stopped: {CALLS} concurrent calls done in {took:?}, loader runs {} (bound {COMMAND_TIMEOUT:?} + load {LOAD:?})",
        runs.load(Ordering::SeqCst)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "coalesced without Redis");
    assert!(
        took <= COMMAND_TIMEOUT + LOAD + SLACK,
        "one bound, no store: {took:?}"
    );
    // Every lookup failed: `error` each, coalesced or not.
    assert_eq!(f.counts(), counts(0, 0, 0, 0, CALLS as u64));
    assert_eq!(f.cache.in_flight(), 0);
}
