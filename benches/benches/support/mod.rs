//! What the benches share (the rest lives in the `stayfast_benches` library).

use metrics_exporter_prometheus::PrometheusHandle;
pub(crate) use stayfast_benches::install_recorder;

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
