//! After a policy is built, a call allocates nothing and registers no metric: a counting
//! global allocator and a counting recorder prove it. (Its own test binary: the
//! allocator and the recorder are process-wide.)
#![allow(clippy::unwrap_used)]
// A global allocator can only be written with `unsafe`; this harness delegates to
// `System` unchanged and only counts. The library itself forbids unsafe code.
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    future::Future,
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
    CircuitBreaker, Policy,
    config::{BreakerConfig, RetryConfig},
};

struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
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
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = || {
        let fut = pin!(policy.call(|| async { Ok::<_, std::io::Error>(1u8) }));
        assert!(matches!(fut.poll(&mut cx), Poll::Ready(Ok(1))));
    };
    call(); // warm up: lazily initialised statics, if any
    let registered = recorder.registrations.load(Ordering::SeqCst);
    let recorded = recorder.cell.0.load(Ordering::SeqCst);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..1000 {
        call();
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    println!(
        "1000 calls: {allocations} allocations, {} registrations",
        recorder.registrations.load(Ordering::SeqCst) - registered
    );
    assert_eq!(allocations, 0, "allocations per 1000 calls");
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
