//! Raw fred against the same commands through stayfast's `Redis` handle, on one
//! throwaway redis-server, in one run: sequential latency (p50, p99) and the throughput
//! of 50 concurrent tasks, for GET, HSET and HGETALL. Four clients (see
//! `stayfast_benches::redis`): raw fred as it comes (no deadline at all: the
//! configuration that hangs); the same inside `tokio::time::timeout(2 s)`; raw fred
//! given what stayfast gives it — the same per-command deadline and connection settings,
//! so the gap to it is the wrapper's own cost; and stayfast. Runs rotate (A/B/C/D, then
//! B/C/D/A…) so drift hits all, and throughput is judged by the median of per-round
//! ratios; the Prometheus recorder is installed, as in production.
//!
//! The report (`scripts/bench-report`) runs the same measurements, from the same code,
//! on both a current-thread and a 2-worker runtime, over 1–200 callers and pool sizes
//! 1–8.
//!
//! Run: `cargo bench -p stayfast-benches --bench redis` (needs redis-server installed);
//! `STAYFAST_BENCH_OPS=get` runs only the named commands;
//! `STAYFAST_BENCH_DEPLOYMENT=cluster` runs the same against a 3-primary loopback
//! Redis Cluster (every client connected to it as a cluster).

mod support;

use std::{sync::Arc, time::Duration};

use stayfast_benches::{
    redis::{Client, Clients, Deployment, Load, Op, paired_latency, paired_throughput},
    stats::Summary,
};

const POOL: usize = 4;
const SEQUENTIAL: usize = 20_000;
const LATENCY_ROUNDS: usize = 3;
const LOAD: Load = Load {
    tasks: 50,
    window: Duration::from_millis(100),
    rounds: 31,
};

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    Summary::of(&values.collect::<Vec<_>>()).map_or(f64::NAN, |s| s.median)
}

fn main() {
    let Some((_recorder, rt)) = support::real_server_bench() else {
        return;
    };
    rt.block_on(async {
        let deployment = Deployment::start().await;
        let url = deployment.url();
        println!("against {url} ({})", deployment.describe());
        let clients = Arc::new(Clients::connect(&url, POOL).await);
        clients.seed().await;

        println!("| command | client | p50 | p99 | ops/s, {} tasks (median) | client CPU per call |", LOAD.tasks);
        println!("|---|---|---|---|---|---|");
        let mut summary = Vec::new();
        for op in Op::selected() {
            let latency = paired_latency(&clients, &Client::ALL, op, SEQUENTIAL, LATENCY_ROUNDS).await;
            let rounds = paired_throughput(&clients, &Client::ALL, op, LOAD).await;
            let p50 = |i: usize| median_of(latency[i].iter().map(|p| micros(p.p50)));
            for (i, client) in Client::ALL.into_iter().enumerate() {
                let cpu = Summary::of(rounds.cpu(client))
                    .map_or_else(|| "n/a".to_owned(), |s| format!("{:.2} µs", s.median * 1e6));
                println!(
                    "| {} | {} | {:.1} µs | {:.1} µs | {:.0} | {cpu} |",
                    op.name(),
                    client.description(),
                    p50(i),
                    median_of(latency[i].iter().map(|p| micros(p.p99))),
                    median_of(rounds.ops(client).iter().copied()),
                );
            }
            let ratio = |baseline: Client| {
                Summary::of(&rounds.ratio(Client::Stayfast, baseline)).map_or_else(|| "n/a".to_owned(), |s| s.display(2))
            };
            let stayfast = Client::ALL.len() - 1;
            summary.push(format!(
                "{}: p50 {:+.1} µs vs raw, {:+.1} µs vs raw with stayfast's settings (target ≤ 3 µs); throughput, median of \
                 {} paired rounds (quartiles): {}× raw, {}× raw inside tokio::time::timeout, {}× raw with stayfast's \
                 settings (target ≥ 0.95)",
                op.name(),
                p50(stayfast) - p50(0),
                p50(stayfast) - p50(2),
                LOAD.rounds,
                ratio(Client::Raw),
                ratio(Client::RawTimeout),
                ratio(Client::RawTuned),
            ));
        }
        println!();
        for line in summary {
            println!("{line}");
        }
        if let Ok(clients) = Arc::try_unwrap(clients) {
            clients.quit().await;
        }
    });
}
