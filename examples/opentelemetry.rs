//! stayfast's metrics in an OpenTelemetry pipeline, through the `metrics` facade alone:
//! install `metrics-exporter-otel`'s recorder instead of the Prometheus exporter, and
//! every policy, store and Redis call reports to your `MeterProvider`.
//!
//! This example exports to memory and prints what arrived; a service hands the
//! provider an OTLP exporter (`opentelemetry-otlp`) instead.
//!
//! `cargo run --example opentelemetry`

use std::{io, time::Duration};

use metrics_exporter_otel::OpenTelemetryRecorder;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use stayfast::Policy;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    // The one line that differs from a Prometheus setup: before any policy is built.
    metrics::set_global_recorder(OpenTelemetryRecorder::new(provider.meter("my-service")))?;

    let charge = Policy::builder("payments.charge")
        .target("payments")
        .timeout(Duration::from_millis(250))
        .build()?;
    for amount in [10, 20, 30] {
        charge.call(|| async move { Ok::<_, io::Error>(amount) }).await?;
    }
    let _ = charge
        .call(|| async { Err::<u32, _>(io::Error::from(io::ErrorKind::ConnectionRefused)) })
        .await;

    provider.force_flush()?;
    for resource in exporter.get_finished_metrics()? {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                println!("{}: {:?}", metric.name(), metric.data());
            }
        }
    }
    provider.shutdown()?;
    Ok(())
}
