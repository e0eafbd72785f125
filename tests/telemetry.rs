//! The Prometheus exporter end to end: installed before anything is built, a `/metrics`
//! scrape over HTTP parsed as the exposition format, holding the core metrics with their
//! types, exact label keys and the 12 buckets of `HISTOGRAM_BUCKETS`; the listener on loopback; a second
//! install an error, not a panic. One test: the recorder is process-wide.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeMap, net::TcpListener, time::Duration};
use support::scrape;

use stayfast::{
    BackgroundConfig, CircuitBreaker, FireAndForget, Policy,
    config::{BreakerConfig, RetryConfig},
    telemetry::{Telemetry, TelemetryConfig, TelemetryError},
};

/// `# TYPE name kind` lines, by name.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The label keys of the first sample of `name`, in order.
fn label_keys(text: &str, name: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .unwrap_or_else(|| panic!("no {name}"));
    let inside = &line[name.len() + 1..line.find('}').unwrap()];
    inside
        .split(',')
        .map(|kv| kv.split('=').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_holds_every_core_metric_with_types_labels_and_buckets() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = TelemetryConfig::default();
    assert!(config.listen.ip().is_loopback(), "loopback by default");
    config.http_listener = true;
    config.listen.set_port(port);
    let telemetry = Telemetry::install(&config).unwrap();
    assert_eq!(telemetry.listening(), Some(config.listen));
    assert!(matches!(
        Telemetry::install(&config),
        Err(TelemetryError::AlreadyInstalled)
    ));

    // Built after the recorder: their handles bind to it.
    let mut bc = BreakerConfig::default();
    bc.consecutive_failures = Some(2);
    let breaker = CircuitBreaker::new("t.main", &bc).unwrap();
    let mut retry = RetryConfig::default();
    retry.min_delay = Duration::from_millis(1);
    retry.max_delay = Duration::from_millis(1);
    let policy = Policy::builder("t.op")
        .retry(&retry)
        .idempotent(true)
        .breaker(breaker)
        .build()
        .unwrap();
    policy
        .call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    let refused = || async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) };
    let _ = policy.call(refused).await;
    let _ = policy
        .call_with_fallback(|_| refused(), |_| async { Ok(()) })
        .await;
    let spawner = FireAndForget::new("t.spawner", &BackgroundConfig::default()).unwrap();
    spawner
        .spawn("job", async { Ok::<_, std::io::Error>(()) })
        .unwrap();
    spawner.shutdown(Duration::from_secs(1)).await;

    let text = scrape(config.listen).await;
    let kinds = types(&text);
    for (name, kind) in [
        ("stayfast_call_duration_seconds", "histogram"),
        ("stayfast_calls_total", "counter"),
        ("stayfast_attempts_total", "counter"),
        ("stayfast_retries_total", "counter"),
        ("stayfast_fallbacks_total", "counter"),
        ("stayfast_circuit_state", "gauge"),
        ("stayfast_circuit_transitions_total", "counter"),
        ("stayfast_background_in_flight", "gauge"),
        ("stayfast_background_tasks_total", "counter"),
    ] {
        assert_eq!(kinds.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert_eq!(
        label_keys(&text, "stayfast_call_duration_seconds_bucket"),
        ["operation", "target", "le"]
    );
    assert_eq!(
        label_keys(&text, "stayfast_calls_total"),
        ["operation", "target", "outcome"]
    );
    assert_eq!(
        label_keys(&text, "stayfast_attempts_total"),
        ["operation", "target"]
    );
    assert_eq!(
        label_keys(&text, "stayfast_fallbacks_total"),
        ["operation", "target", "reason"]
    );
    assert_eq!(label_keys(&text, "stayfast_circuit_state"), ["target"]);
    assert_eq!(
        label_keys(&text, "stayfast_circuit_transitions_total"),
        ["target", "to", "reason"]
    );
    assert_eq!(
        label_keys(&text, "stayfast_background_tasks_total"),
        ["spawner", "outcome"]
    );
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("stayfast_call_duration_seconds_bucket{operation=\"t.op\""))
        .collect();
    assert_eq!(buckets.len(), 13, "12 buckets and +Inf: {buckets:#?}");
    for bound in [
        "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "2", "5", "10", "30", "60", "+Inf",
    ] {
        assert!(
            buckets.iter().any(|l| l.contains(&format!("le=\"{bound}\""))),
            "bucket {bound}"
        );
    }
    assert!(
        text.contains("stayfast_calls_total{operation=\"t.op\",target=\"t.main\",outcome=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("stayfast_calls_total{operation=\"t.op\",target=\"t.main\",outcome=\"fallback\"} 1")
    );
    assert!(
        text.contains("# HELP stayfast_calls_total"),
        "metrics are described"
    );
    // `render()` serves the same series (their order is not fixed between renders).
    let sorted = |t: &str| {
        let mut lines: Vec<String> = t.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&text), sorted(&telemetry.render()));
}
