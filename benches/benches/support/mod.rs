//! What the benches share.

use std::{thread, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stayfast_core::telemetry::HISTOGRAM_BUCKETS;

/// Installs the Prometheus recorder globally (with the facade's histogram buckets),
/// describes stayfast's metrics, and drains
/// its histograms every second, as a service's scrape or upkeep task would: every
/// variant of a bench pays for the same recorder.
pub(crate) fn install_recorder() -> PrometheusHandle {
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

/// For the benches that time real servers rather than run under criterion: `None` when
/// `cargo test --benches` or `--list` runs the binary (nothing to time then); else the
/// Prometheus recorder installed and a two-worker runtime, like the 2-core machine
/// these figures come from. Keep the handle: it owns the recorder's upkeep.
#[allow(dead_code)] // the criterion benches do not use it
pub(crate) fn real_server_bench() -> Option<(PrometheusHandle, tokio::runtime::Runtime)> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return None;
    }
    let recorder = install_recorder();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    Some((recorder, runtime))
}
