//! A2, the half-open probe limit: exactly K probes are admitted and K+1 is rejected (also
//! under contention); a hung probe counts as failed once the open duration has passed.

use super::*;

#[tokio::test(start_paused = true)]
async fn breaker_half_open_probe_limit() {
    for k in [1_u32, 3] {
        let (b, log) = logged("probes", &config(1, k, 100));

        // Exactly K probes; K + 1 is rejected; closes only after K successes.
        trip(&b);
        advance(ms(100)).await;
        let probes: Vec<Permit<'_>> = (0..k).map(|_| b.try_acquire().unwrap()).collect();
        assert!(probes.iter().all(Permit::is_probe));
        assert_eq!(b.state(), HalfOpen);
        assert_eq!(rejected_for(&b), ms(100), "K + 1 is rejected (k = {k})");
        let mut probes = probes.into_iter();
        for p in probes.by_ref().take(k as usize - 1) {
            p.record(Health::Success);
            assert_eq!(b.state(), HalfOpen);
            assert!(b.try_acquire().is_err(), "a succeeded probe keeps its slot");
        }
        probes.next().unwrap().record(Health::Success);
        assert_eq!(b.state(), Closed);
        assert_eq!(last(&log).unwrap().2, ProbeSucceeded);

        // One failure re-opens, whatever the other probes do afterwards.
        trip(&b);
        advance(ms(100)).await;
        let mut probes: Vec<_> = (0..k).map(|_| b.try_acquire().unwrap()).collect();
        probes.remove(0).record(Health::Failure);
        assert_eq!(b.state(), Open);
        let opened = last(&log).unwrap();
        assert_eq!(opened.2, ProbeFailed);
        for p in probes {
            p.record(Health::Success);
        }
        assert_eq!(b.state(), Open);
        assert_eq!(last(&log).unwrap(), opened);
        assert_eq!(rejected_for(&b), ms(200));

        // A probe dropped without recording, or recorded as Ignore, gives its slot back.
        advance(ms(200)).await;
        let mut probes: Vec<_> = (0..k).map(|_| b.try_acquire().unwrap()).collect();
        assert!(b.try_acquire().is_err());
        drop(probes.pop());
        let again = b.try_acquire().unwrap();
        assert!(again.is_probe());
        assert!(b.try_acquire().is_err());
        again.record(Health::Ignore);
        probes.push(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_err());
        assert_eq!(b.state(), HalfOpen);
        for p in probes {
            p.record(Health::Success);
        }
        assert_eq!(b.state(), Closed);
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_hung_probe_reopens_after_open_for() {
    let (b, log) = logged("hung", &config(1, 1, 100));
    trip(&b);
    advance(ms(100)).await;
    let hung = b.try_acquire().unwrap();
    advance(ms(99)).await;
    assert!(b.try_acquire().is_err());
    assert_eq!(b.state(), HalfOpen);
    // The probe has now outlived the open duration: it counts as failed.
    advance(ms(1)).await;
    assert_eq!(rejected_for(&b), ms(200));
    assert_eq!(last(&log), Some((HalfOpen, Open, ProbeFailed, 3)));
    // Its late success changes nothing.
    hung.record(Health::Success);
    assert_eq!(b.state(), Open);
    assert_eq!(steps(&log).len(), 3);
}

/// Moves a fresh breaker to half-open with no probe taken, on a paused runtime of its
/// own thread, 1 h ahead of real time, so that real-time runtimes never see its probes
/// outlive the open duration.
fn half_open_breaker(k: u32) -> CircuitBreaker {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let b = CircuitBreaker::new("race", &config(1, k, 3_600_000)).unwrap();
            trip(&b);
            advance(Duration::from_secs(3_600)).await;
            drop(b.try_acquire().unwrap()); // enters half-open; the slot is given back
            assert_eq!(b.state(), HalfOpen);
            b
        })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn breaker_half_open_probe_limit_under_contention() {
    const TASKS: usize = 16;
    for k in [1_u32, 3] {
        for round in 0..25 {
            let breaker = half_open_breaker(k);
            let start = Arc::new(tokio::sync::Barrier::new(TASKS));
            let raced = Arc::new(tokio::sync::Barrier::new(TASKS));
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (b, start, raced) = (breaker.clone(), start.clone(), raced.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        let permit = b.try_acquire();
                        let admitted = permit.is_ok();
                        // Hold every permit until all have raced.
                        raced.wait().await;
                        if let Ok(p) = permit {
                            assert!(p.is_probe());
                            p.record(Health::Success);
                        }
                        admitted
                    })
                })
                .collect();
            let mut admitted = 0;
            for t in tasks {
                admitted += usize::from(t.await.unwrap());
            }
            assert_eq!(admitted, k as usize, "k = {k}, round {round}");
            assert_eq!(breaker.state(), Closed);
        }
    }
}

/// While every half-open probe is out, `retry_after` is the time until they count as
/// failed, not the whole open duration.
#[tokio::test(start_paused = true)]
async fn breaker_half_open_full_retry_after_is_time_left() {
    let (breaker, _log) = logged("halfopen.full", &config(1, 1, 100));
    trip(&breaker);
    advance(ms(100)).await;
    let probe = breaker.try_acquire().unwrap();
    advance(ms(30)).await;
    assert_eq!(rejected_for(&breaker), ms(70));
    drop(probe);
}
