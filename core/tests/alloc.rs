//! After a policy is built, a call allocates nothing and registers no metric — on the
//! success path and on the error paths (the operation's error, an open circuit, a
//! timeout, retries given up) — except `BudgetExhausted`, which boxes the last error:
//! one allocation — also under a subscriber that does not want the calls' spans. A
//! counting global allocator and a counting recorder prove it. (Its
//! own test binary: the allocator and the recorder are process-wide.)
#![allow(clippy::unwrap_used)]
// A global allocator can only be written with `unsafe`; this harness delegates to
// `System` unchanged and only counts. The library itself forbids unsafe code.
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    future::Future,
    io,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use stayfast_core::{
    CircuitBreaker, Error, Policy,
    config::{BreakerConfig, BudgetConfig, RetryConfig},
};

struct CountingAlloc;

thread_local! {
    /// Allocations made by this thread: the harness's or the allocator's own threads
    /// (which allocate now and then, whatever the test does) are not counted.
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// This thread's allocations so far.
fn allocated() -> usize {
    ALLOCATIONS.with(std::cell::Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // A const-initialised `Cell` without a destructor: no allocation, no recursion.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A recorder that counts registrations and records into shared atomics.
#[derive(Default)]
struct CountingRecorder {
    registrations: AtomicUsize,
    cell: Arc<Cell>,
}

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    fn absolute(&self, _: u64) {}
}
impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, _: f64) {}
}
impl HistogramFn for Cell {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        self.registrations.fetch_add(1, Ordering::SeqCst);
        Counter::from_arc(self.cell.clone())
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        self.registrations.fetch_add(1, Ordering::SeqCst);
        Gauge::from_arc(self.cell.clone())
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        self.registrations.fetch_add(1, Ordering::SeqCst);
        Histogram::from_arc(self.cell.clone())
    }
}

/// Allocations made by `n` calls of `call`, after one warm-up call (lazily initialised
/// statics, if any).
fn allocations(n: usize, mut call: impl FnMut()) -> usize {
    call();
    let before = allocated();
    for _ in 0..n {
        call();
    }
    allocated() - before
}

/// One test, so no other test of this binary allocates while it counts: a ready success,
/// the error paths (the operation's error, a timeout under paused time, an open
/// circuit), none allocates or registers a metric.
#[test]
fn a_call_allocates_nothing_and_registers_no_metric() {
    let recorder: &'static CountingRecorder = Box::leak(Box::default());
    metrics::set_global_recorder(recorder).unwrap();
    let breaker = CircuitBreaker::new("bench.main", &BreakerConfig::default()).unwrap();
    let policy = Policy::builder("bench.get")
        .timeout(Duration::from_secs(1))
        .deadline(Duration::from_secs(5))
        .retry(&RetryConfig::default())
        .idempotent(true)
        .breaker(breaker)
        .build()
        .unwrap();
    // Every policy is built before counting: building registers its metrics.
    let open = CircuitBreaker::new("bench.open", &BreakerConfig::default()).unwrap();
    open.force_open();
    let rejecting = Policy::builder("bench.rejected").breaker(open).build().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let timing_out = runtime.block_on(async {
        Policy::builder("bench.slow")
            .timeout(Duration::from_millis(10))
            .idempotent(true)
            .build()
            .unwrap()
    });
    let retry = |budget: Option<BudgetConfig>| {
        let mut r = RetryConfig::default();
        r.max_attempts = 3;
        r.min_delay = Duration::from_millis(1);
        r.max_delay = Duration::from_millis(1);
        r.jitter = false;
        r.budget = budget;
        r
    };
    let (retrying, budgeted) = runtime.block_on(async {
        let mut none_left = BudgetConfig::default();
        none_left.ratio = 0.0001; // 1001 calls deposit a tenth of a retry
        none_left.min_retries = 0;
        let policy = |name: &'static str, budget| {
            Policy::builder(name)
                .retry(&retry(budget))
                .idempotent(true)
                .build()
                .unwrap()
        };
        (
            policy("bench.retried", None),
            policy("bench.budget", Some(none_left)),
        )
    });
    let mut cx = Context::from_waker(Waker::noop());
    let registered = {
        let fut = pin!(policy.call(|| async { Ok::<_, io::Error>(1u8) }));
        assert!(matches!(fut.poll(&mut cx), Poll::Ready(Ok(1))));
        recorder.registrations.load(Ordering::SeqCst)
    };
    let recorded = recorder.cell.0.load(Ordering::SeqCst);

    let success = allocations(1000, || {
        let fut = pin!(policy.call(|| async { Ok::<_, io::Error>(1u8) }));
        assert!(matches!(fut.poll(&mut cx), Poll::Ready(Ok(1))));
    });

    // The operation's own error, not retried (the caller's mistake): `Error::Inner`.
    let failure = allocations(1000, || {
        let fut = pin!(policy.call(|| async { Err::<u8, _>(io::Error::from(io::ErrorKind::NotFound)) }));
        assert!(matches!(fut.poll(&mut cx), Poll::Ready(Err(Error::Inner { .. }))));
    });

    // An open circuit: `Error::CircuitOpen`, not attempted.
    let rejected = allocations(1000, || {
        let fut = pin!(rejecting.call(|| async { Ok::<_, io::Error>(1u8) }));
        assert!(matches!(
            fut.poll(&mut cx),
            Poll::Ready(Err(Error::CircuitOpen { .. }))
        ));
    });

    // A per-attempt timeout under paused time (no retry: one attempt, one timer).
    let timeout = runtime.block_on(async {
        // Awaited, so the paused clock jumps to each timer; the runtime's own work
        // between the calls is counted too.
        let once = || async {
            let result = timing_out
                .call(std::future::pending::<Result<u8, io::Error>>)
                .await;
            assert!(matches!(result, Err(Error::Timeout { .. })));
        };
        once().await;
        let before = allocated();
        for _ in 0..1000 {
            once().await;
        }
        allocated() - before
    });

    // A transient error retried twice, then given up: three attempts, two backoffs.
    let retried_calls = || {
        runtime.block_on(async {
            let once = || async {
                let result = retrying
                    .call(|| async { Err::<u8, _>(io::Error::from(io::ErrorKind::ConnectionRefused)) })
                    .await;
                assert!(matches!(result, Err(Error::Inner { attempts: 3, .. })));
            };
            once().await;
            let before = allocated();
            for _ in 0..1000 {
                once().await;
            }
            allocated() - before
        })
    };
    let retried = retried_calls();

    // The budget refuses the retry: `BudgetExhausted` boxes the last attempt's error
    // (the enum would otherwise hold itself), one allocation per such call.
    let exhausted = runtime.block_on(async {
        let once = || async {
            let result = budgeted
                .call(|| async { Err::<u8, _>(io::Error::from(io::ErrorKind::ConnectionRefused)) })
                .await;
            assert!(matches!(result, Err(Error::BudgetExhausted { .. })));
        };
        once().await;
        let before = allocated();
        for _ in 0..1000 {
            once().await;
        }
        allocated() - before
    });

    // A subscriber that does not want the calls' spans (the usual `INFO`): a retried
    // call, the path with the most to trace, still allocates nothing.
    let quiet = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(io::sink)
        .finish();
    let untraced = tracing::subscriber::with_default(quiet, retried_calls);

    println!(
        "allocations per 1000 calls: success {success}, failure {failure}, rejected {rejected}, \
         timeout {timeout}, retried {retried}, budget exhausted {exhausted}, retried under an \
         INFO subscriber {untraced}; {} registrations",
        recorder.registrations.load(Ordering::SeqCst) - registered
    );
    assert_eq!(
        untraced, 0,
        "allocations per 1000 retried calls under an INFO subscriber"
    );
    assert_eq!(success, 0, "allocations per 1000 successful calls");
    assert_eq!(failure, 0, "allocations per 1000 failed calls");
    assert_eq!(rejected, 0, "allocations per 1000 rejected calls");
    assert_eq!(timeout, 0, "allocations per 1000 timed-out calls");
    assert_eq!(retried, 0, "allocations per 1000 retried calls");
    assert_eq!(
        exhausted, 1000,
        "allocations per 1000 budget-exhausted calls (the Box)"
    );
    assert_eq!(
        recorder.registrations.load(Ordering::SeqCst),
        registered,
        "metric registrations"
    );
    assert!(
        recorder.cell.0.load(Ordering::SeqCst) > recorded,
        "the calls were metered"
    );
}
