//! Replicas on separate disks sharing one Redis (#15, `order = "redis"`): three replica
//! processes, each with its own directory, behind a round-robin router without
//! stickiness, while 200 sessions append for 60 s. During the run Redis is killed and
//! restarted (its AOF, `appendfsync always`, brings its data back), frozen
//! (`SIGSTOP`/`SIGCONT`) and write-paused (`CLIENT PAUSE <ms> WRITE`).
//!
//! The replicas are this test binary run again (`current_exe()`) with [`REPLICA_DIR`]
//! set. The router (the test) drives each session as a chat client would: one append
//! at a time, each to the next replica in turn (`A <request> <session> <id>` on its
//! stdin), the next sent when the replica answers `ACK <request> <seq or P> <µs>` (`P`:
//! pending, journaled while Redis was unreachable). `P` asks a replica its pending count.
//!
//! After the run and the replay, from Redis itself: every session's history is
//! gap-free 1..n with each message id once; every acknowledged append is in it exactly
//! once (at the seq its receipt gave, when it gave one); each replica's appends to a
//! session are in the order it acknowledged them; appends started during an outage have
//! a p99 latency within the file write timeout. The replay time after each recovery is
//! printed (`--nocapture`).
//!
//! `STAYFAST_TX_REPLICAS_SECS` shortens the run (default 60 s; each fault lasts 5 % of
//! it, 1 to 3 s).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use stayfast::{
    redis::{Redis, RedisConfig},
    test_util::{RedisServer, Reply},
    transcripts::{Message, Order, Record, TranscriptConfig, TranscriptStore},
};
use support::TempDir;

/// Set in a replica's environment: its transcript directory.
const REPLICA_DIR: &str = "STAYFAST_TX_REPLICA_DIR";
/// Set in a replica's environment: the Redis URL.
const REPLICA_REDIS: &str = "STAYFAST_TX_REPLICA_REDIS";
/// Overrides the run's length, in seconds.
const SECS: &str = "STAYFAST_TX_REPLICAS_SECS";
const REPLICAS: usize = 3;
const SESSIONS: usize = 200;
/// The replicas' append deadline (the store's file write timeout).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The replicas' Redis command deadline.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// The pause between an answer and the session's next append.
const THINK: Duration = Duration::from_millis(20);
const TEST_NAME: &str = "three_replicas_behind_a_round_robin_router_keep_one_order_through_redis_faults";

// ---------------------------------------------------------------------------------
// The replica
// ---------------------------------------------------------------------------------

fn replica(dir: PathBuf, url: String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut rc = RedisConfig::default();
        rc.url = url;
        rc.command_timeout = REDIS_TIMEOUT;
        rc.reconnect_max_delay = Duration::from_millis(200);
        rc.breaker.open_for = Duration::from_millis(300);
        rc.breaker.max_open_for = Duration::from_secs(1);
        let redis = Redis::connect(&rc).await.unwrap();
        let mut config = TranscriptConfig::default();
        config.dir = dir;
        config.order = Order::Redis;
        let store = TranscriptStore::builder(&config)
            .redis(redis)
            .timeouts(Duration::from_secs(1), WRITE_TIMEOUT)
            .open()
            .await
            .unwrap();
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            let parts: Vec<String> = line.split(' ').map(str::to_owned).collect();
            let (store, out) = (store.clone(), Arc::clone(&out));
            match parts.first().map(String::as_str) {
                Some("A") if parts.len() == 4 => {
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let content = format!("{} says hi", parts[3]);
                        let reply = match store
                            .append(&parts[2], Message::new("user", content).with_id(&parts[3]))
                            .await
                        {
                            Ok(r) => {
                                let seq = r.seq().map_or("P".to_owned(), |s| s.to_string());
                                format!("ACK {} {seq} {}", parts[1], t.elapsed().as_micros())
                            }
                            Err(e) => format!("ERR {} {e}", parts[1]),
                        };
                        let mut out = out.lock().unwrap();
                        writeln!(out, "{reply}").unwrap();
                        out.flush().unwrap();
                    });
                }
                Some("P") => {
                    let mut out = out.lock().unwrap();
                    writeln!(out, "PENDING {}", store.pending()).unwrap();
                    out.flush().unwrap();
                }
                _ => {}
            }
        }
    });
}

// ---------------------------------------------------------------------------------
// The router
// ---------------------------------------------------------------------------------

/// One append request and what became of it.
#[derive(Clone, Debug)]
struct Request {
    session: usize,
    id: String,
    replica: usize,
    sent: Instant,
    /// `Some(None)`: acknowledged pending; `Some(Some(seq))`: with its seq.
    acked: Option<Option<u64>>,
    /// The replica's own measure of the append.
    latency: Duration,
}

struct Router {
    stdins: Vec<Mutex<ChildStdin>>,
    requests: Mutex<Vec<Request>>,
    /// Per session: appends sent so far (the next id's number).
    sent: Vec<AtomicU64>,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
    pending_replies: Mutex<Vec<mpsc::Sender<usize>>>,
    /// Sessions whose next append is due at a time (FIFO: the think time is constant).
    later: Mutex<mpsc::Sender<(Instant, usize)>>,
}

impl Router {
    /// Sends session `session`'s next append to the next replica in turn.
    fn send_next(&self, session: usize) {
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        let n = self.sent[session].fetch_add(1, Ordering::SeqCst);
        self.send(
            session,
            format!("s{session}-m{n}"),
            (session + n as usize) % REPLICAS,
        );
    }

    fn send(&self, session: usize, id: String, replica: usize) {
        let request = {
            let mut requests = self.requests.lock().unwrap();
            requests.push(Request {
                session,
                id: id.clone(),
                replica,
                sent: Instant::now(),
                acked: None,
                latency: Duration::ZERO,
            });
            requests.len() - 1
        };
        let mut stdin = self.stdins[replica].lock().unwrap();
        writeln!(stdin, "A {request} s{session} {id}").unwrap();
        stdin.flush().unwrap();
    }

    /// The replicas' pending records, summed.
    fn pending(&self) -> usize {
        let (tx, rx) = mpsc::channel();
        *self.pending_replies.lock().unwrap() = vec![tx; REPLICAS];
        for stdin in &self.stdins {
            let mut stdin = stdin.lock().unwrap();
            writeln!(stdin, "P").unwrap();
            stdin.flush().unwrap();
        }
        (0..REPLICAS)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .sum()
    }

    fn on_line(&self, line: &str) {
        // The harness's `test <name> ... ` has no newline: the first reply follows it.
        let line = line.rsplit(" ... ").next().unwrap_or(line);
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.first().copied() {
            Some("ACK") if parts.len() == 4 => {
                let index: usize = parts[1].parse().unwrap();
                let session = {
                    let mut requests = self.requests.lock().unwrap();
                    let request = &mut requests[index];
                    request.acked = Some(parts[2].parse().ok());
                    request.latency = Duration::from_micros(parts[3].parse().unwrap());
                    request.session
                };
                // A person's think time: the next message of the session a little later.
                let _ = self.later.lock().unwrap().send((Instant::now() + THINK, session));
            }
            Some("ERR") => {
                // Not expected: the append is retried with its id on the next replica.
                self.errors.lock().unwrap().push(line.to_owned());
                let index: usize = parts[1].parse().unwrap();
                let (session, id, replica) = {
                    let requests = self.requests.lock().unwrap();
                    let r = &requests[index];
                    (r.session, r.id.clone(), r.replica)
                };
                if !self.stop.load(Ordering::SeqCst) {
                    self.send(session, id, (replica + 1) % REPLICAS);
                }
            }
            Some("PENDING") => {
                let n = parts[1].parse().unwrap();
                if let Some(tx) = self.pending_replies.lock().unwrap().pop() {
                    let _ = tx.send(n);
                }
            }
            _ => {} // the test harness's own lines
        }
    }
}

fn spawn_replica(dir: &std::path::Path, url: &str) -> (Child, ChildStdin, std::process::ChildStdout) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(REPLICA_DIR, dir)
        .env(REPLICA_REDIS, url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdin, stdout)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn history_key(session: usize) -> String {
    let hex: String = Sha256::digest(format!("s{session}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{{tx:{hex}}}:history")
}

/// Polls the replicas until none has a pending record; how long that took.
fn until_replayed(router: &Router, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let pending = router.pending();
        if pending == 0 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{pending} records still pending {within:?} after recovery"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_replicas_behind_a_round_robin_router_keep_one_order_through_redis_faults() {
    if let (Some(dir), Ok(url)) = (std::env::var_os(REPLICA_DIR), std::env::var(REPLICA_REDIS)) {
        replica(dir.into(), url);
        return;
    }
    let secs: u64 = std::env::var(SECS)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let run = Duration::from_secs(secs);
    let fault = (run / 20).clamp(Duration::from_secs(1), Duration::from_secs(3));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut server = rt
        .block_on(RedisServer::start_with_args(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]))
        .unwrap();
    let scratch = TempDir::new("tx-replicas");
    let mut children = Vec::new();
    let mut stdins = Vec::new();
    let mut stdouts = Vec::new();
    for r in 0..REPLICAS {
        let dir = scratch.0.join(format!("replica-{r}"));
        let (child, stdin, stdout) = spawn_replica(&dir, &server.url());
        children.push(child);
        stdins.push(Mutex::new(stdin));
        stdouts.push(stdout);
    }
    let (later, due) = mpsc::channel();
    let router = Arc::new(Router {
        stdins,
        requests: Mutex::new(Vec::new()),
        sent: (0..SESSIONS).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
        pending_replies: Mutex::new(Vec::new()),
        later: Mutex::new(later),
    });
    {
        let router = Arc::clone(&router);
        std::thread::spawn(move || {
            for (due, session) in due {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                router.send_next(session);
            }
        });
    }
    for stdout in stdouts {
        let router = Arc::clone(&router);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                router.on_line(&line);
            }
        });
    }
    // Every replica up (its store open) before the clock starts.
    router.pending();

    let start = Instant::now();
    for session in 0..SESSIONS {
        router.send_next(session);
    }
    let at = |fraction: f64| {
        let due = run.mul_f64(fraction);
        std::thread::sleep(due.saturating_sub(start.elapsed()));
    };
    // (name, start, recovered, replay time)
    let mut outages: Vec<(&str, Instant, Instant, Duration)> = Vec::new();

    at(0.15);
    let t = Instant::now();
    server.kill().unwrap();
    std::thread::sleep(fault);
    rt.block_on(server.restart()).unwrap();
    let back = Instant::now();
    outages.push((
        "kill + restart",
        t,
        back,
        until_replayed(&router, Duration::from_secs(30)),
    ));

    at(0.45);
    let t = Instant::now();
    server.pause().unwrap(); // SIGSTOP
    std::thread::sleep(fault);
    server.resume().unwrap(); // SIGCONT
    let back = Instant::now();
    outages.push((
        "SIGSTOP",
        t,
        back,
        until_replayed(&router, Duration::from_secs(30)),
    ));

    at(0.70);
    let t = Instant::now();
    let ms = fault.as_millis().to_string();
    assert_eq!(
        rt.block_on(server.command(&["CLIENT", "PAUSE", &ms, "WRITE"]))
            .unwrap(),
        Reply::Simple("OK".into())
    );
    std::thread::sleep(fault);
    let back = Instant::now();
    outages.push((
        "CLIENT PAUSE WRITE",
        t,
        back,
        until_replayed(&router, Duration::from_secs(30)),
    ));

    at(1.0);
    router.stop.store(true, Ordering::SeqCst);
    let stopped = Instant::now();
    // Every request answered (each is bounded by the write deadline), then replayed.
    loop {
        let open = router
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.acked.is_none())
            .count();
        if open == 0 {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "{open} appends never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let final_replay = until_replayed(&router, Duration::from_secs(30));
    let elapsed = start.elapsed();

    // Redis's histories, read raw.
    let mut histories: Vec<Vec<Record>> = Vec::new();
    for session in 0..SESSIONS {
        let reply = rt
            .block_on(server.command(&["LRANGE", &history_key(session), "0", "-1"]))
            .unwrap();
        let records = match reply {
            Reply::Array(Some(items)) => items
                .into_iter()
                .map(|i| match i {
                    Reply::Bulk(Some(b)) => serde_json::from_slice(&b).unwrap(),
                    other => panic!("history element {other:?}"),
                })
                .collect(),
            other => panic!("LRANGE replied {other:?}"),
        };
        histories.push(records);
    }
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let requests = router.requests.lock().unwrap().clone();
    let errors = router.errors.lock().unwrap().clone();
    check(&histories, &requests);

    // Figures.
    let acked: Vec<&Request> = requests.iter().filter(|r| r.acked.is_some()).collect();
    let pending_acks = acked.iter().filter(|r| r.acked == Some(None)).count();
    let during = |r: &&&Request| outages.iter().any(|(_, s, e, _)| r.sent >= *s && r.sent < *e);
    let mut all: Vec<Duration> = acked.iter().map(|r| r.latency).collect();
    let mut out: Vec<Duration> = acked.iter().filter(during).map(|r| r.latency).collect();
    all.sort();
    out.sort();
    println!(
        "{} appends acknowledged by {REPLICAS} replicas over {SESSIONS} sessions in {:.1} s ({:.0}/s), \
         {pending_acks} of them pending (journaled during an outage), {} append errors",
        acked.len(),
        elapsed.as_secs_f64(),
        acked.len() as f64 / elapsed.as_secs_f64(),
        errors.len()
    );
    println!(
        "append latency: all p50 {:?} p99 {:?} max {:?}; during outages ({} appends) p50 {:?} p99 {:?} max {:?}",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or_default(),
        out.len(),
        percentile(&out, 0.5),
        percentile(&out, 0.99),
        out.last().copied().unwrap_or_default(),
    );
    for (name, s, e, replay) in &outages {
        println!(
            "{name}: outage {:?}, every pending record replayed {replay:?} after recovery",
            e.duration_since(*s)
        );
    }
    println!("after the run: the rest replayed in {final_replay:?}");
    for e in errors.iter().take(5) {
        println!("  e.g. {e}");
    }
    assert!(
        acked.len() > 1000,
        "too few appends to mean anything: {}",
        acked.len()
    );
    assert!(
        pending_acks > 0,
        "no append went pending: the faults did not bite"
    );
    assert!(
        percentile(&out, 0.99) <= WRITE_TIMEOUT,
        "p99 append latency during the outages {:?} over the write timeout {WRITE_TIMEOUT:?}",
        percentile(&out, 0.99)
    );
}

/// Checks Redis's histories against the router's requests.
fn check(histories: &[Vec<Record>], requests: &[Request]) {
    let mut problems = Vec::new();
    let requested: HashSet<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    for (session, history) in histories.iter().enumerate() {
        let seqs: Vec<u64> = history.iter().map(|r| r.seq).collect();
        if seqs != (1..=history.len() as u64).collect::<Vec<_>>() {
            problems.push(format!(
                "s{session}: seqs are not 1..={}: {seqs:?}",
                history.len()
            ));
        }
        let mut ids = HashSet::new();
        for r in history {
            if !ids.insert(r.id.as_str()) {
                problems.push(format!("s{session}: {} stored twice", r.id));
            }
            if !requested.contains(r.id.as_str()) {
                problems.push(format!("s{session}: {} never requested", r.id));
            }
        }
    }
    // Where each id sits in Redis.
    let mut position: HashMap<(usize, &str), u64> = HashMap::new();
    for (session, history) in histories.iter().enumerate() {
        for r in history {
            position.entry((session, r.id.as_str())).or_insert(r.seq);
        }
    }
    // Per (session, replica): the seqs of its acknowledged appends, in ack order.
    let mut per_replica: BTreeMap<(usize, usize), Vec<(u64, &str)>> = BTreeMap::new();
    for r in requests {
        let Some(acked) = r.acked else { continue };
        match position.get(&(r.session, r.id.as_str())) {
            None => problems.push(format!("s{}: acknowledged {} is not in Redis", r.session, r.id)),
            Some(&seq) => {
                if let Some(told) = acked
                    && told != seq
                {
                    problems.push(format!(
                        "s{}: {} acknowledged at {told}, stored at {seq}",
                        r.session, r.id
                    ));
                }
                per_replica
                    .entry((r.session, r.replica))
                    .or_default()
                    .push((seq, &r.id));
            }
        }
    }
    for ((session, replica), seqs) in &per_replica {
        if let Some(w) = seqs.windows(2).find(|w| w[1].0 <= w[0].0) {
            problems.push(format!(
                "s{session}: replica {replica} acknowledged {} then {}, stored at {} then {}",
                w[0].1, w[1].1, w[0].0, w[1].0
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems, e.g.:\n{}",
        problems.len(),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
