//! What the benches share.

use std::{thread, time::Duration};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the Prometheus recorder globally, describes stayfast's metrics, and drains
/// its histograms every second, as a service's scrape or upkeep task would: every
/// variant of a bench pays for the same recorder.
pub(crate) fn install_recorder() -> PrometheusHandle {
    let handle = PrometheusBuilder::new()
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
