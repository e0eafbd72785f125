//! Why the Redis handle batches its call metrics: the cost of one call's record
//! (`CallMetrics::record`: a histogram value and a counter) through the Prometheus
//! recorder, from one thread, from two threads writing the same series, and from two
//! threads each writing its own series. Same work in all three; only the sharing
//! differs, so the gap is what moving the series' cache lines between cores costs.
//!
//! Run: `cargo bench -p stayfast-benches --bench metrics_contention`.

mod support;

use std::{hint::black_box, thread, time::Duration, time::Instant};

use stayfast_core::{CallMetrics, Outcome};

const RECORDS: u32 = 2_000_000;

/// Nanoseconds per record per thread, each thread recording `RECORDS` times into its
/// own entry of `metrics` (the same handles repeated, or one each).
fn per_record(metrics: &[CallMetrics]) -> f64 {
    let started = Instant::now();
    thread::scope(|scope| {
        for m in metrics {
            scope.spawn(move || {
                for _ in 0..RECORDS {
                    m.record(Outcome::Success, black_box(Duration::from_micros(50)));
                }
            });
        }
    });
    started.elapsed().as_nanos() as f64 / f64::from(RECORDS)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let _recorder = support::install_recorder();
    let shared = CallMetrics::new("bench.op", "bench.shared");
    let own = [
        CallMetrics::new("bench.op", "bench.one"),
        CallMetrics::new("bench.op", "bench.two"),
    ];
    println!("| writers | ns per record, per thread (median of 5) |");
    println!("|---|---|");
    for (label, metrics) in [
        ("one thread", vec![shared.clone()]),
        ("two threads, one series", vec![shared.clone(), shared.clone()]),
        ("two threads, a series each", own.to_vec()),
    ] {
        let mut rounds: Vec<f64> = (0..5).map(|_| per_record(&metrics)).collect();
        rounds.sort_by(f64::total_cmp);
        println!("| {label} | {:.1} |", rounds[2]);
    }
}
