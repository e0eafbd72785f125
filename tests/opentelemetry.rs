//! Metrics reach an OpenTelemetry pipeline through the `metrics` facade alone (#17): with
//! `metrics-exporter-otel`'s recorder installed instead of the Prometheus one, a policy's
//! calls arrive in the OpenTelemetry SDK — counters by outcome, the duration histogram —
//! with no second metrics path in stayfast. (Its own test binary: the recorder is
//! process-wide.)
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, io};

use metrics_exporter_otel::OpenTelemetryRecorder;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
    data::{AggregatedMetrics, MetricData},
};
use stayfast::{Error, Policy, Stayfast, transcripts::Message};

#[tokio::test]
async fn policy_metrics_reach_the_opentelemetry_sdk() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    metrics::set_global_recorder(OpenTelemetryRecorder::new(provider.meter("stayfast-test"))).unwrap();

    // The facade starts on the application's recorder (no `/metrics` listener asked for).
    let dir = std::env::temp_dir().join(format!("stayfast-otel-{}", std::process::id()));
    let mut settings = stayfast::Settings::default();
    settings.redis.enabled = false;
    settings.transcripts.dir = dir.clone();
    let app = Stayfast::from_settings(&settings).await.unwrap();
    assert!(
        app.telemetry().is_none(),
        "stayfast installed no recorder of its own"
    );
    app.transcripts()
        .append("s1", Message::new("user", "hello"))
        .await
        .unwrap();
    app.shutdown(std::time::Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);

    let policy = Policy::builder("payments.charge")
        .target("payments")
        .build()
        .unwrap();
    for _ in 0..3 {
        policy.call(|| async { Ok::<_, io::Error>(()) }).await.unwrap();
    }
    let refused = policy
        .call(|| async { Err::<(), _>(io::Error::from(io::ErrorKind::PermissionDenied)) })
        .await;
    assert!(matches!(refused, Err(Error::Inner { .. })));
    provider.force_flush().unwrap();

    let (mut calls, mut durations) = (BTreeMap::new(), 0);
    for resource in exporter.get_finished_metrics().unwrap() {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                match (metric.name(), metric.data()) {
                    ("stayfast_calls_total", AggregatedMetrics::U64(MetricData::Sum(sum))) => {
                        for point in sum.data_points() {
                            let label = |name: &str| {
                                point
                                    .attributes()
                                    .find(|kv| kv.key.as_str() == name)
                                    .map(|kv| kv.value.to_string())
                                    .unwrap()
                            };
                            let key = (label("operation"), label("outcome"));
                            calls.insert(key, point.value());
                        }
                    }
                    ("stayfast_call_duration_seconds", AggregatedMetrics::F64(MetricData::Histogram(h))) => {
                        durations += h
                            .data_points()
                            .filter(|p| p.attributes().any(|kv| kv.value.to_string() == "payments.charge"))
                            .map(|p| p.count())
                            .sum::<u64>();
                    }
                    _ => {}
                }
            }
        }
    }
    calls.retain(|_, n| *n > 0);
    println!("in the OpenTelemetry SDK: calls {calls:?}, {durations} durations of payments.charge");
    let count =
        |operation: &str, outcome: &str| calls.get(&(operation.to_owned(), outcome.to_owned())).copied();
    assert_eq!(count("payments.charge", "success"), Some(3));
    assert_eq!(count("payments.charge", "failure"), Some(1));
    assert_eq!(durations, 4, "one duration per call");
    assert_eq!(
        count("transcripts.append", "success"),
        Some(1),
        "the facade's stores report to the application's recorder too"
    );
}
