//! Benchmarks of stayfast against the raw call and its peer crates; see `benches/`.
//! Nothing here is published.
//!
//! The library holds what the benches and the report (`src/bin/report.rs`, run by
//! `scripts/bench-report`) share: the Redis clients and their paired measurements
//! ([`redis`]), the in-process paired measurements of the wrappers, the offload and the
//! file writes ([`micro`]), the statistics ([`stats`]), and the report's pieces
//! ([`machine`], [`markdown`], [`plot`]).

#![forbid(unsafe_code)]

pub mod machine;
pub mod markdown;
pub mod micro;
pub mod plot;
pub mod redis;
pub mod stats;

use std::{thread, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stayfast_core::telemetry::HISTOGRAM_BUCKETS;

/// Installs the Prometheus recorder globally (with the facade's histogram buckets),
/// describes stayfast's metrics, and drains its histograms every second, as a
/// service's scrape or upkeep task would: every variant of a bench pays for the same
/// recorder.
///
/// # Panics
///
/// When a recorder is already installed, or the upkeep thread cannot start.
pub fn install_recorder() -> PrometheusHandle {
    // `HISTOGRAM_BUCKETS`, as the facade's telemetry sets them: without buckets the exporter
    // keeps summaries, whose upkeep (a DDSketch per series) costs CPU a service never pays.
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &HISTOGRAM_BUCKETS)
        .expect("valid buckets")
        .install_recorder()
        .expect("install the Prometheus recorder");
    stayfast_core::telemetry::describe_metrics("stayfast");
    let upkeep = handle.clone();
    thread::Builder::new()
        .name("prometheus-upkeep".to_owned())
        .spawn(move || {
            loop {
                thread::sleep(Duration::from_secs(1));
                upkeep.run_upkeep();
            }
        })
        .expect("spawn the upkeep thread");
    handle
}
