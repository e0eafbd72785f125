//! Offload: blocking closures on the real blocking pool under a deadline; the bound
//! counts abandoned closures until they really return (measured, not assumed); panics
//! are errors; the runtime never lags. Real time throughout: the blocking pool is real.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use stayfast_core::{
    CircuitBreaker, Error, LagWatchdog, Offload, OffloadConfig, OffloadError, Policy,
    config::{BreakerConfig, RetryConfig},
};
use tokio::runtime::Runtime;

// ---- helpers (kept in this file) ----

/// A gate the test opens at the end, so hung closures never make it wait their full
/// sleep.
#[derive(Clone, Default)]
struct Latch(Arc<(Mutex<bool>, Condvar)>);

impl Latch {
    /// Blocks (a blocking thread, never a runtime worker) until opened or `limit` passed.
    fn wait(&self, limit: Duration) {
        let (open, changed) = &*self.0;
        let guard = open.lock().unwrap();
        let _unused = changed.wait_timeout_while(guard, limit, |open| !*open).unwrap();
    }

    fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }
}

/// Live closures, counted at entry and exit (a guard, so unwinding counts too), with the
/// maximum ever seen.
#[derive(Clone, Default)]
struct Live(Arc<(AtomicUsize, AtomicUsize)>);

struct Inside(Live);

impl Live {
    fn enter(&self) -> Inside {
        let now = self.0.0.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.1.fetch_max(now, Ordering::SeqCst);
        Inside(self.clone())
    }

    fn now(&self) -> usize {
        self.0.0.load(Ordering::SeqCst)
    }

    fn max(&self) -> usize {
        self.0.1.load(Ordering::SeqCst)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A multi-thread runtime of two workers (the machine's cores), built by the test so it
/// can be shut down without waiting for hung blocking threads.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Threads of this process named `name` (Linux's `/proc/self/task/*/comm`); `None` where
/// that cannot be read.
fn threads_named(name: &str) -> Option<usize> {
    let mut count = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let comm = std::fs::read_to_string(task.ok()?.path().join("comm")).ok()?;
        count += usize::from(comm.trim_end() == name);
    }
    Some(count)
}

/// Samples [`threads_named`] every millisecond on a thread of its own until `stop` is
/// set; returns the largest count seen.
fn sample_threads(name: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<usize>> {
    std::thread::spawn(move || {
        let mut most = threads_named(name)?;
        while !stop.load(Ordering::Relaxed) {
            most = most.max(threads_named(name)?);
            std::thread::sleep(Duration::from_millis(1));
        }
        Some(most)
    })
}

fn offload(max_threads: u32, max_wait: Duration) -> Offload {
    let mut config = OffloadConfig::default();
    config.max_threads = max_threads;
    config.max_wait = max_wait;
    Offload::new("vector.index", &config).unwrap()
}

fn policy(timeout: Duration) -> Policy {
    policy_of(timeout)
}

fn policy_of(timeout: Duration) -> Policy {
    Policy::builder("vector.query")
        .timeout(timeout)
        .idempotent(true)
        .build()
        .unwrap()
}

/// Metric values summed over snapshots (a `DebuggingRecorder` snapshot resets what it
/// reads, so gauges and counters are accumulated here).
struct Metrics {
    snapshotter: Snapshotter,
    totals: HashMap<(String, Vec<(String, String)>), f64>,
}

impl Metrics {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            totals: HashMap::new(),
        }
    }

    /// The value of `name` whose labels include `label`.
    fn get(&mut self, name: &str, label: (&str, &str)) -> f64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let delta = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => continue,
            };
            *self
                .totals
                .entry((key.key().name().to_owned(), labels))
                .or_default() += delta;
        }
        self.totals
            .iter()
            .filter(|((n, labels), _)| {
                n == name && labels.iter().any(|(k, v)| (k.as_str(), v.as_str()) == label)
            })
            .map(|(_, v)| *v)
            .sum()
    }
}

/// Polls `condition` every millisecond for up to `limit`.
async fn eventually(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    condition()
}

// ---- tests ----

#[test]
fn config_parses_validates_and_names_the_field() {
    let config: OffloadConfig = toml::from_str("max_threads = 8\nmax_wait = \"20ms\"").unwrap();
    assert_eq!(
        (config.max_threads, config.max_wait),
        (8, Duration::from_millis(20))
    );
    assert!(config.validate().is_ok());
    let typo = toml::from_str::<OffloadConfig>("max_thread = 8").unwrap_err();
    assert!(typo.to_string().contains("max_thread"), "{typo}");
    let zero: OffloadConfig = toml::from_str("max_threads = 0").unwrap();
    let err = Offload::new("vector.index", &zero).unwrap_err();
    assert_eq!(err.field(), "max_threads");
    assert!(OffloadConfig::default().validate().is_ok());
}

/// A closure that sleeps 10 s under a 100 ms deadline: `Timeout` within 100 ms + 250 ms,
/// while the closure keeps its thread. The runtime is shut down in the background, so
/// the test does not wait for the sleep.
#[test]
fn a_hung_closure_times_out_at_the_deadline() {
    let rt = runtime();
    let offload = offload(4, Duration::ZERO);
    let policy = policy(Duration::from_millis(100));
    let slept = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&slept);
    let (elapsed, err) = rt.block_on(async {
        let start = Instant::now();
        let err = offload
            .run(&policy, move || {
                std::thread::sleep(Duration::from_secs(10));
                s.store(true, Ordering::SeqCst);
                Ok::<_, Infallible>(())
            })
            .await
            .unwrap_err();
        (start.elapsed(), err)
    });
    eprintln!("10 s closure under a 100 ms deadline: Timeout after {elapsed:?}");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.to_string(), "vector.query timed out after 100ms");
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed <= Duration::from_millis(350), "{elapsed:?}");
    assert!(!slept.load(Ordering::SeqCst), "the closure is still sleeping");
    assert_eq!(offload.in_flight(), 1, "an abandoned closure keeps its thread");
    rt.shutdown_background();
}

/// 1000 calls of a hung closure with a bound of 8: 8 run (and time out), the rest wait
/// 20 ms and are shed; the watchdog sees no runtime lag and the live closures never
/// exceed 8. Then 1000 calls of a 2 ms closure allowed to wait: all succeed, and still
/// never more than 8 at once.
#[test]
fn a_thousand_calls_never_lag_the_runtime_nor_pass_the_bound() {
    // Its own thread name (15 bytes at most: Linux's limit), shared by the two workers
    // and every blocking thread of this runtime only, so its threads can be counted.
    const NAME: &str = "sf-offload-1k";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(NAME)
        .enable_all()
        .build()
        .unwrap();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_threads(NAME, Arc::clone(&stop_sampling));
    let offload = offload(8, Duration::from_millis(20));
    let policy = policy(Duration::from_millis(100));
    let latch = Latch::default();
    let live = Live::default();

    let (timeouts, shed, other, hung_lag, samples, took) = rt.block_on(async {
        let watchdog = LagWatchdog::start(Duration::from_millis(5)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = Instant::now();
        let calls: Vec<_> = (0..1000)
            .map(|_| {
                let (latch, live) = (latch.clone(), live.clone());
                tokio::spawn(offload.run(&policy, move || {
                    let _inside = live.enter();
                    latch.wait(Duration::from_secs(10));
                    Ok::<_, Infallible>(())
                }))
            })
            .collect();
        let (mut timeouts, mut shed, mut other) = (0, 0, 0);
        for call in calls {
            match call.await.unwrap() {
                Err(e) if e.is_timeout() => timeouts += 1,
                Err(e) if e.is_shed() => shed += 1,
                _ => other += 1,
            }
        }
        let took = start.elapsed();
        // Let the watchdog wake a few more times after the burst.
        tokio::time::sleep(Duration::from_millis(30)).await;
        (
            timeouts,
            shed,
            other,
            watchdog.max_lag(),
            watchdog.samples(),
            took,
        )
    });
    eprintln!(
        "1000 hung calls, bound 8: {timeouts} timeouts, {shed} shed in {took:?}; \
         live max {}; watchdog max lag {hung_lag:?} over {samples} samples",
        live.max()
    );
    stop_sampling.store(true, Ordering::Relaxed);
    let blocking_threads = sampler.join().unwrap().map(|most| most.saturating_sub(2));
    eprintln!("1000 hung calls, bound 8: at most {blocking_threads:?} blocking threads alive (OS threads)");
    assert_eq!((timeouts, shed, other), (8, 992, 0));
    assert_eq!(live.max(), 8, "exactly the bound ran, never more");
    if let Some(threads) = blocking_threads {
        assert!(threads <= 8, "{threads} blocking threads for a bound of 8");
    }
    assert_eq!(offload.in_flight(), 8);
    assert!(hung_lag < Duration::from_millis(20), "runtime lag {hung_lag:?}");

    latch.open();
    let churn = Offload::new("vector.index", &{
        let mut c = OffloadConfig::default();
        c.max_threads = 8;
        c.max_wait = Duration::from_secs(30);
        c
    })
    .unwrap();
    let churn_live = Live::default();
    let patient = policy_of(Duration::from_secs(30));
    let (ok, churn_lag, took) = rt.block_on(async {
        assert!(eventually(Duration::from_secs(2), || offload.in_flight() == 0).await);
        let watchdog = LagWatchdog::start(Duration::from_millis(5)).unwrap();
        let start = Instant::now();
        let calls: Vec<_> = (0..1000)
            .map(|_| {
                let live = churn_live.clone();
                tokio::spawn(churn.run(&patient, move || {
                    let _inside = live.enter();
                    std::thread::sleep(Duration::from_millis(2));
                    Ok::<_, Infallible>(())
                }))
            })
            .collect();
        let mut ok = 0;
        for call in calls {
            ok += usize::from(call.await.unwrap().is_ok());
        }
        (ok, watchdog.max_lag(), start.elapsed())
    });
    eprintln!(
        "1000 calls of a 2 ms closure, bound 8, allowed to wait: {ok} ok in {took:?}; \
         live max {}; watchdog max lag {churn_lag:?}",
        churn_live.max()
    );
    assert_eq!(ok, 1000);
    assert!(churn_live.max() <= 8, "live max {}", churn_live.max());
    assert!(churn_lag < Duration::from_millis(20), "runtime lag {churn_lag:?}");
    assert_eq!(churn.in_flight(), 0);
    rt.shutdown_background();
}

/// Abandoned closures keep their threads: new callers are shed while they run, the
/// gauge and the counter say so, and the bound is never passed.
#[test]
fn abandoned_closures_keep_their_threads_and_new_callers_are_shed() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let rt = runtime();
    let offload = offload(4, Duration::ZERO);
    let policy = policy(Duration::from_millis(100));
    let latch = Latch::default();
    let live = Live::default();
    let call = |latch: &Latch, live: &Live| {
        let (latch, live) = (latch.clone(), live.clone());
        offload.run(&policy, move || {
            let _inside = live.enter();
            latch.wait(Duration::from_secs(10));
            Ok::<_, Infallible>(())
        })
    };
    let target = ("target", "vector.index");

    rt.block_on(async {
        let hung: Vec<_> = (0..4).map(|_| tokio::spawn(call(&latch, &live))).collect();
        for h in hung {
            assert!(h.await.unwrap().unwrap_err().is_timeout());
        }
    });
    assert_eq!((live.now(), offload.in_flight()), (4, 4));
    assert_eq!(metrics.get("stayfast_offload_in_flight", target), 4.0);
    assert_eq!(metrics.get("stayfast_offload_abandoned_total", target), 4.0);

    let shed = rt.block_on(async {
        let late: Vec<_> = (0..20).map(|_| tokio::spawn(call(&latch, &live))).collect();
        let mut shed = 0;
        for l in late {
            shed += usize::from(l.await.unwrap().unwrap_err().is_shed());
        }
        shed
    });
    assert_eq!(
        shed, 20,
        "every new caller is shed while the abandoned closures run"
    );
    assert_eq!(live.max(), 4);
    assert_eq!(metrics.get("stayfast_calls_total", ("outcome", "shed")), 20.0);
    assert_eq!(metrics.get("stayfast_calls_total", ("outcome", "timeout")), 4.0);

    latch.open();
    rt.block_on(async {
        assert!(eventually(Duration::from_secs(2), || offload.in_flight() == 0).await);
        // The threads are free again: a new caller runs.
        call(&latch, &live).await.unwrap();
    });
    assert_eq!(metrics.get("stayfast_offload_in_flight", target), 0.0);
    assert_eq!(metrics.get("stayfast_offload_abandoned_total", target), 4.0);
    assert_eq!(live.max(), 4, "never above the bound");
    rt.shutdown_background();
}

/// With `max_wait`, new callers wait for the abandoned closures to finish, and only
/// then run: measured from when the test releases them.
#[test]
fn new_callers_wait_until_the_abandoned_closures_finish() {
    let rt = runtime();
    let offload = offload(2, Duration::from_secs(5));
    let policy = policy(Duration::from_millis(100));
    let latch = Latch::default();
    let live = Live::default();
    let released = Arc::new(Mutex::new(None::<Instant>));

    let (waited, after_release) = rt.block_on(async {
        for _ in 0..2 {
            let (latch, live) = (latch.clone(), live.clone());
            let hung = offload.run(&policy, move || {
                let _inside = live.enter();
                latch.wait(Duration::from_secs(10));
                Ok::<_, Infallible>(())
            });
            assert!(hung.await.unwrap_err().is_timeout());
        }
        let start = Instant::now();
        let waiting: Vec<_> = (0..6)
            .map(|_| {
                let live = live.clone();
                let released = Arc::clone(&released);
                tokio::spawn(offload.run(&policy, move || {
                    let _inside = live.enter();
                    let at = released
                        .lock()
                        .unwrap()
                        .expect("ran before the abandoned closures finished");
                    Ok::<_, Infallible>(at.elapsed())
                }))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(waiting.iter().all(|w| !w.is_finished()), "they wait for a thread");
        assert_eq!(live.now(), 2);
        *released.lock().unwrap() = Some(Instant::now());
        latch.open();
        let mut after_release = Duration::ZERO;
        for w in waiting {
            after_release = after_release.max(w.await.unwrap().unwrap());
        }
        (start.elapsed(), after_release)
    });
    eprintln!(
        "6 callers queued behind 2 abandoned closures: done {waited:?} after they came, \
         the last one {after_release:?} after the release"
    );
    assert_eq!(live.max(), 2, "never above the bound");
    assert_eq!(offload.in_flight(), 0);
    rt.shutdown_background();
}

/// A dropped caller (not a timeout) also abandons its closure, once, and the policy
/// records `cancelled`.
#[test]
fn a_dropped_caller_abandons_its_closure() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let rt = runtime();
    let offload = offload(2, Duration::ZERO);
    let unbounded = Policy::builder("vector.query").build().unwrap();
    let latch = Latch::default();
    let l = latch.clone();
    rt.block_on(async {
        let call = offload.run(&unbounded, move || {
            l.wait(Duration::from_secs(10));
            Ok::<_, Infallible>(())
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(50), call)
                .await
                .is_err()
        );
    });
    let target = ("target", "vector.index");
    assert_eq!(metrics.get("stayfast_offload_abandoned_total", target), 1.0);
    assert_eq!(metrics.get("stayfast_offload_in_flight", target), 1.0);
    assert_eq!(metrics.get("stayfast_calls_total", ("outcome", "cancelled")), 1.0);
    latch.open();
    rt.block_on(async {
        assert!(eventually(Duration::from_secs(2), || offload.in_flight() == 0).await);
        // A call that finished is never counted as abandoned.
        offload.run(&unbounded, || Ok::<_, Infallible>(())).await.unwrap();
    });
    assert_eq!(metrics.get("stayfast_offload_in_flight", target), 0.0);
    assert_eq!(metrics.get("stayfast_offload_abandoned_total", target), 1.0);
    rt.shutdown_background();
}

/// A closure tokio's blocking pool never started (the pool was at its own limit) does
/// not run after its caller gave up: it is dropped and its slot freed.
#[test]
fn a_closure_the_pool_never_started_does_not_run() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let offload = offload(2, Duration::ZERO);
    let policy = policy(Duration::from_millis(100));
    let latch = Latch::default();
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    rt.block_on(async {
        let l = latch.clone();
        let _occupied = tokio::task::spawn_blocking(move || l.wait(Duration::from_secs(10)));
        let err = offload
            .run(&policy, move || {
                r.store(true, Ordering::SeqCst);
                Ok::<_, Infallible>(())
            })
            .await
            .unwrap_err();
        assert!(err.is_timeout());
        assert_eq!(
            offload.in_flight(),
            1,
            "queued in the pool, still holding its slot"
        );
        latch.open();
        assert!(eventually(Duration::from_secs(2), || offload.in_flight() == 0).await);
    });
    assert!(
        !ran.load(Ordering::SeqCst),
        "an abandoned, unstarted closure never runs"
    );
    rt.shutdown_background();
}

/// A panic is an error carrying its message, counted as a failure; the next call works
/// and the gauge is back to zero.
#[test]
fn a_panic_is_an_error_with_its_message() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let rt = runtime();
    let offload = offload(2, Duration::ZERO);
    let policy = policy(Duration::from_secs(2));
    let live = Live::default();
    let l = live.clone();
    rt.block_on(async {
        let page = 7;
        let err = offload
            .run(&policy, move || -> Result<(), io::Error> {
                let _inside = l.enter();
                panic!("index corrupted at page {page}")
            })
            .await
            .unwrap_err();
        match &err {
            Error::Inner {
                source: OffloadError::Panicked(message),
                attempts: 1,
                ..
            } => assert_eq!(message, "index corrupted at page 7"),
            other => panic!("unexpected {other:?}"),
        }
        // The message shows its own level; the panic is its source.
        assert_eq!(err.to_string(), "vector.query failed after 1 attempt");
        assert_eq!(
            stayfast_core::ErrorChain(&err).to_string(),
            "vector.query failed after 1 attempt: the blocking closure panicked: index corrupted at page 7"
        );
        assert_eq!(
            offload.in_flight(),
            0,
            "the slot is freed when the closure unwinds"
        );
        let answer = offload.run(&policy, || Ok::<_, io::Error>(42)).await.unwrap();
        assert_eq!(answer, 42);
    });
    assert_eq!(live.now(), 0);
    let target = ("target", "vector.index");
    assert_eq!(metrics.get("stayfast_offload_in_flight", target), 0.0);
    assert_eq!(metrics.get("stayfast_offload_abandoned_total", target), 0.0);
    assert_eq!(metrics.get("stayfast_calls_total", ("outcome", "failure")), 1.0);
    assert_eq!(metrics.get("stayfast_calls_total", ("outcome", "success")), 1.0);
    rt.shutdown_background();
}

/// The closure's own errors go through the policy: classified, retried (each attempt on
/// a thread of its own), and counted by the breaker, which then rejects without running
/// the closure.
#[test]
fn closure_errors_are_classified_retried_and_trip_the_breaker() {
    let rt = runtime();
    let offload = offload(2, Duration::ZERO);
    let mut retry = RetryConfig::default();
    retry.min_delay = Duration::from_millis(1);
    retry.max_delay = Duration::from_millis(1);
    retry.budget = None;
    let retrying = Policy::builder("vector.query")
        .timeout(Duration::from_secs(2))
        .retry(&retry)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let answer = rt.block_on(
        offload.run(&retrying, move || match r.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
            _ => Ok("found"),
        }),
    );
    assert_eq!(answer.unwrap(), "found");
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    let mut config = BreakerConfig::default();
    config.consecutive_failures = Some(2);
    config.failure_rate = None;
    let breaker = CircuitBreaker::new("vector.index", &config).unwrap();
    let guarded = Policy::builder("vector.query")
        .timeout(Duration::from_secs(2))
        .breaker(breaker)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    rt.block_on(async {
        for _ in 0..2 {
            let r = Arc::clone(&runs);
            let err = offload
                .run(&guarded, move || -> Result<(), io::Error> {
                    r.fetch_add(1, Ordering::SeqCst);
                    panic!("segfault avoided")
                })
                .await
                .unwrap_err();
            assert!(err.is_inner());
        }
        let r = Arc::clone(&runs);
        let err = offload
            .run(&guarded, move || {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, io::Error>(())
            })
            .await
            .unwrap_err();
        assert!(err.is_circuit_open(), "{err}");
    });
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "a rejected call never runs the closure"
    );
    rt.shutdown_background();
}
