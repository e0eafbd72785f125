//! The breaker's metrics: the state gauge and the transitions counter, by `to` and
//! `reason`.

use super::*;

/// Reads the breaker's gauge and accumulates its transition counters, snapshot by
/// snapshot (a `DebuggingRecorder` snapshot resets what it reads).
struct Seen {
    snapshotter: Snapshotter,
    transitions: HashMap<(String, String), u64>,
}

impl Seen {
    fn gauge(&mut self, target: &str) -> f64 {
        let mut gauge = None;
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let labels: HashMap<&str, &str> = key.labels().map(|l| (l.key(), l.value())).collect();
            assert_eq!(labels.get("target"), Some(&target));
            match (kind, key.name(), value) {
                (MetricKind::Gauge, "stayfast_circuit_state", DebugValue::Gauge(v)) => {
                    gauge = Some(v.into_inner());
                }
                (MetricKind::Counter, "stayfast_circuit_transitions_total", DebugValue::Counter(n)) => {
                    *self
                        .transitions
                        .entry((labels["to"].to_owned(), labels["reason"].to_owned()))
                        .or_default() += n;
                }
                other => panic!("unexpected metric {other:?}"),
            }
        }
        gauge.unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_metrics_state_gauge_and_transitions_counter() {
    let recorder = DebuggingRecorder::new();
    let mut seen = Seen {
        snapshotter: recorder.snapshotter(),
        transitions: HashMap::new(),
    };
    let _local = metrics::set_default_local_recorder(&recorder);

    let b = CircuitBreaker::new("redis.main", &config(1, 1, 100)).unwrap();
    assert_eq!(seen.gauge("redis.main"), 0.0);
    trip(&b);
    assert_eq!(seen.gauge("redis.main"), 1.0);
    advance(ms(100)).await;
    let probe = b.try_acquire().unwrap();
    assert_eq!(seen.gauge("redis.main"), 2.0);
    probe.record(Health::Success);
    assert_eq!(seen.gauge("redis.main"), 0.0);
    b.disable();
    assert_eq!(seen.gauge("redis.main"), 3.0);
    b.force_open();
    assert_eq!(seen.gauge("redis.main"), 1.0);
    b.reset();
    assert_eq!(seen.gauge("redis.main"), 0.0);
    trip(&b);
    assert_eq!(seen.gauge("redis.main"), 1.0);

    let expected: HashMap<(String, String), u64> = [
        ("open", "failure_threshold", 2),
        ("half_open", "break_elapsed", 1),
        ("closed", "probe_succeeded", 1),
        ("disabled", "manual", 1),
        ("open", "manual", 1),
        ("closed", "manual", 1),
    ]
    .into_iter()
    .map(|(to, reason, n)| ((to.to_owned(), reason.to_owned()), n))
    .collect();
    assert_eq!(seen.transitions, expected);
}
