//! C9, a Jepsen-style append check: concurrent appends of unique ids while Redis is
//! killed and restarted, or paused and resumed, then read back. Every acknowledged append
//! appears exactly once, and per session in acknowledgement order.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    KillRestart,
    PauseResume,
}

/// One acknowledged append.
struct Ack {
    appender: usize,
    id: String,
    seq: u64,
    started: Instant,
    acked: Instant,
}

async fn append_check(fault: Fault) {
    const SESSIONS: usize = 4;
    const APPENDERS: usize = 4; // per session
    const WINDOW: u32 = 20;
    let mut server = TestRedis::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |c| {
        c.cache_messages = WINDOW
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        for a in 0..APPENDERS {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let session = format!("session-{s}");
                let (mut acks, mut failures) = (Vec::new(), 0usize);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("s{s}-a{a}-{i}");
                    let started = Instant::now();
                    match store
                        .append(
                            &session,
                            Message::new("user", format!("text of {id}")).with_id(&id),
                        )
                        .await
                    {
                        Ok(receipt) => {
                            let r = receipt.record;
                            assert_eq!(r.id, id);
                            acks.push(Ack {
                                appender: a,
                                id,
                                seq: r.seq,
                                started,
                                acked: Instant::now(),
                            });
                        }
                        Err(e) => {
                            eprintln!("append {id} failed: {e}");
                            failures += 1;
                        }
                    }
                    i += 1;
                    sleep(Duration::from_millis(3)).await;
                }
                (s, acks, failures)
            }));
        }
    }

    sleep(Duration::from_millis(400)).await;
    match fault {
        Fault::KillRestart => server.kill().unwrap(),
        Fault::PauseResume => server.pause().unwrap(),
    }
    sleep(Duration::from_millis(700)).await;
    match fault {
        Fault::KillRestart => server.restart().await.unwrap(),
        Fault::PauseResume => server.resume().unwrap(),
    }
    let healed = Instant::now();
    sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);

    let mut by_session: BTreeMap<usize, Vec<Ack>> = BTreeMap::new();
    let mut failures = 0;
    for task in tasks {
        let (s, acks, failed) = task.await.unwrap();
        by_session.entry(s).or_default().extend(acks);
        failures += failed;
    }
    settle(&bg).await;

    let (mut lost, mut duplicated, mut reordered, mut acked) = (0usize, 0usize, 0usize, 0usize);
    for (s, acks) in &by_session {
        let session = format!("session-{s}");
        acked += acks.len();
        let file = store.history(&session, usize::MAX).await.unwrap();
        assert_eq!((file.source, file.degraded), (HistorySource::File, false));
        let records = file.records;
        assert!(
            records.len() > WINDOW as usize,
            "{session}: only {} records",
            records.len()
        );
        assert_eq!(
            seqs(&records),
            (1..=records.len() as u64).collect::<Vec<_>>(),
            "{session}: seqs gap-free"
        );
        assert_eq!(
            records,
            file_records(&tmp.tx(), &session),
            "history = the file's lines"
        );
        let mut count: HashMap<&str, usize> = HashMap::new();
        for r in &records {
            *count.entry(r.id.as_str()).or_default() += 1;
            assert_eq!(r.content, format!("text of {}", r.id));
        }
        for ack in acks {
            match count.get(ack.id.as_str()) {
                None => lost += 1,
                Some(1) => {}
                Some(_) => duplicated += 1,
            }
        }
        let seq_of: HashMap<&str, u64> = records.iter().map(|r| (r.id.as_str(), r.seq)).collect();
        for ack in acks {
            assert_eq!(
                seq_of.get(ack.id.as_str()),
                Some(&ack.seq),
                "acknowledged seq = stored seq"
            );
        }
        // Real-time order: an append acknowledged before another started has the
        // smaller seq (per appender, this is its acknowledgement order).
        for a in acks {
            for b in acks {
                if a.acked < b.started && a.seq >= b.seq {
                    reordered += 1;
                }
            }
        }
        for appender in 0..APPENDERS {
            let mine: Vec<u64> = acks
                .iter()
                .filter(|x| x.appender == appender)
                .map(|x| x.seq)
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "{session} appender {appender} reordered"
            );
        }
    }

    // Recovery: every session is served from Redis again, and the window is the file's tail.
    for s in by_session.keys() {
        until_redis(&store, &format!("session-{s}"), WINDOW as usize).await;
    }
    let recovered = healed.elapsed();
    settle(&bg).await;
    for s in by_session.keys() {
        let session = format!("session-{s}");
        let records = file_records(&tmp.tx(), &session);
        assert_eq!(
            window(&server, &session).await,
            tail(&records, WINDOW as usize),
            "{session}"
        );
        let h = store.history(&session, WINDOW as usize).await.unwrap();
        assert_eq!((h.source, h.degraded), (HistorySource::Redis, false));
        assert_eq!(h.records, tail(&records, WINDOW as usize));
    }
    eprintln!(
        "C9 {fault:?}: {SESSIONS} sessions x {APPENDERS} appenders, {acked} acknowledged, {failures} failed; \
         lost {lost}, duplicated {duplicated}, reordered {reordered}; all sessions back on Redis {recovered:?} after the fault ended"
    );
    assert_eq!((lost, duplicated, reordered), (0, 0, 0));
    assert_eq!(failures, 0, "a Redis fault must not fail an append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_append_check_kill_restart() {
    append_check(Fault::KillRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_append_check_pause_resume() {
    append_check(Fault::PauseResume).await;
}
