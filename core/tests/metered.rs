//! Metered futures record their outcome once (cancelled included).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use stayfast_core::{CallMetrics, Metered, TimeoutExt};

fn outcomes(recorder: &DebuggingRecorder) -> Vec<(String, u64)> {
    support::counters_by_label(recorder, "stayfast_calls_total", "outcome")
}

#[tokio::test(start_paused = true)]
async fn a_dropped_metered_future_records_cancelled_exactly_once() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let metrics = CallMetrics::new("fs.read", "fs.transcripts");
    let slow = Metered::new(
        async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, std::io::Error>(())
        },
        metrics.clone(),
    );
    // An outer timeout drops it after it started.
    assert!(slow.timeout(Duration::from_secs(1)).await.is_err());
    // Never polled: records nothing.
    drop(Metered::new(
        async { Ok::<_, std::io::Error>(()) },
        metrics.clone(),
    ));
    // Finished: records its outcome, and nothing more when dropped.
    let done = Metered::new(async { Ok::<_, std::io::Error>(()) }, metrics.clone()).await;
    assert!(done.is_ok());
    let timed_out = Metered::new(
        std::future::pending::<()>().timeout(Duration::from_millis(5)),
        metrics,
    )
    .await;
    assert!(timed_out.is_err());
    assert_eq!(
        outcomes(&recorder),
        [
            ("cancelled".to_owned(), 1),
            ("success".to_owned(), 1),
            ("timeout".to_owned(), 1)
        ]
    );
}
