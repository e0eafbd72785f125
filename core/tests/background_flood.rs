//! D3 (`docs/testing.md`): 10⁶ submissions against a stalled sink: in-flight stays
//! within the cap, the excess is shed and counted. Its own test binary, so the
//! peak-RSS figure is this test's alone.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use stayfast_core::{BackgroundConfig, FireAndForget, SpawnError};

/// A `/proc/self/status` field in KiB (Linux).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_submissions_against_a_stalled_sink_shed_exactly_and_stay_small() {
    const SUBMISSIONS: usize = 1_000_000;
    const CAP: u32 = 1024;
    let mut config = BackgroundConfig::default();
    config.max_in_flight = CAP;
    config.task_timeout = None;
    let spawner = FireAndForget::new("flood", &config).unwrap();
    let baseline = status_kib("VmRSS:");
    let started = std::time::Instant::now();
    let mut shed = 0usize;
    for i in 0..SUBMISSIONS {
        // A stalled sink: each task waits forever (a paused Redis, say).
        let payload = vec![i as u8; 64];
        match spawner.spawn("repopulate", async move {
            std::future::pending::<()>().await;
            drop(payload);
            Ok::<_, std::io::Error>(())
        }) {
            Ok(()) => {}
            Err(SpawnError::Shed) => shed += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let spawn_time = started.elapsed();
    assert_eq!(shed, SUBMISSIONS - CAP as usize, "shed exactly the excess");
    assert_eq!(spawner.in_flight(), CAP as usize);
    let peak = status_kib("VmHWM:");
    let report = spawner.shutdown(Duration::from_millis(50)).await;
    assert_eq!(report.aborted, CAP as usize);
    assert_eq!(spawner.in_flight(), 0);
    match (baseline, peak) {
        (Some(base), Some(peak)) => {
            let grown_mib = peak.saturating_sub(base) as f64 / 1024.0;
            println!(
                "{SUBMISSIONS} submissions in {spawn_time:?} ({:.0} ns each): shed {shed}, peak RSS {grown_mib:.1} MiB above baseline",
                spawn_time.as_nanos() as f64 / SUBMISSIONS as f64
            );
            assert!(grown_mib < 64.0, "peak RSS grew {grown_mib:.1} MiB");
        }
        _ => println!("no /proc/self/status here: RSS not measured"),
    }
}
