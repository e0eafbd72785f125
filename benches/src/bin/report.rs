//! The bench report: one command runs the Redis measurements (raw fred, raw fred inside
//! `tokio::time::timeout`, raw fred with stayfast's settings, stayfast; current-thread
//! and 2-worker runtimes; 1–200 callers; pool sizes 1–8), the wrappers' overhead on a
//! ready future (against the floor, the peer stack and tower's stacks), the offload and
//! the durable file writes, all in paired rotating rounds, and writes
//! `docs/bench/REPORT.md` with SVG plots beside it.
//!
//! Run: `scripts/bench-report` (or `cargo run --release -p stayfast-benches --bin
//! report --`), with:
//!
//! - `--quick` (or `STAYFAST_BENCH_QUICK=1`): a smoke run of about a minute, written to
//!   `target/bench-report/` unless `--out` says otherwise;
//! - `--only redis,curve,pools,overhead,offload,files`: those sections only (also
//!   written to `target/bench-report/` by default, so a partial run never replaces the
//!   committed report);
//! - `--out DIR`: where to write `REPORT.md` and the SVGs.
//!
//! `STAYFAST_BENCH_OPS` and `STAYFAST_BENCH_DEPLOYMENT` work as in the `redis` bench.

#![forbid(unsafe_code)]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use plotters::chart::SeriesLabelPosition;
use stayfast_benches::{
    install_recorder,
    machine::{self, Machine},
    markdown::{Align, Table},
    micro::{self, Group},
    plot::{BarChart, Line, LineChart},
    redis::{Client, Clients, Deployment, Load, Op, Percentiles, Rounds, paired_latency, paired_throughput},
    stats::Summary,
};

/// The report's sections, as `--only` names them.
const SECTIONS: [&str; 6] = ["redis", "curve", "pools", "overhead", "offload", "files"];

/// The default pool size (stayfast's `RedisConfig::default().pool_size`).
const DEFAULT_POOL: usize = 4;

/// How much to measure.
#[derive(Clone, Debug)]
struct Plan {
    quick: bool,
    /// The README whose Performance section a full run into `docs/bench/` rewrites
    /// (between the `bench-report` markers); `None` for quick, partial or elsewhere runs.
    readme: Option<PathBuf>,
    sections: Vec<&'static str>,
    out: PathBuf,
    ops: Vec<Op>,
    /// The 50-task comparison.
    main: Load,
    sequential_calls: usize,
    sequential_rounds: usize,
    callers: Vec<usize>,
    curve: Load,
    curve_ops: Vec<Op>,
    pools: Vec<usize>,
    pool: Load,
    overhead_calls: usize,
    overhead_rounds: usize,
    offload_calls: usize,
    offload_rounds: usize,
    files_tmpfs_calls: usize,
    files_disk_calls: usize,
    files_rounds: usize,
}

impl Plan {
    fn from_args() -> Self {
        let mut quick = std::env::var("STAYFAST_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let (mut only, mut out) = (None::<Vec<&'static str>>, None::<PathBuf>);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--out" => out = Some(args.next().expect("--out DIR").into()),
                "--only" => {
                    let names = args
                        .next()
                        .expect("--only redis,curve,pools,overhead,offload,files");
                    only = Some(
                        names
                            .split(',')
                            .map(|n| {
                                SECTIONS
                                    .into_iter()
                                    .find(|s| s.eq_ignore_ascii_case(n.trim()))
                                    .unwrap_or_else(|| panic!("--only {n}: expected one of {SECTIONS:?}"))
                            })
                            .collect(),
                    );
                }
                // `cargo bench`/`cargo test` pass these to every target; nothing to do.
                "--bench" | "--test" => {}
                "-h" | "--help" => {
                    println!(
                        "report [--quick] [--only {}] [--out DIR]\n\
                         Runs the benches and writes REPORT.md and SVG plots (default docs/bench/; \
                         target/bench-report/ for --quick or --only).",
                        SECTIONS.join(",")
                    );
                    std::process::exit(0);
                }
                other => panic!("unknown argument {other}; try --help"),
            }
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let partial = quick || only.is_some();
        let readme = (!partial && out.is_none()).then(|| workspace.join("README.md"));
        let out = out.unwrap_or_else(|| {
            if partial {
                workspace.join("target/bench-report")
            } else {
                workspace.join("docs/bench")
            }
        });
        let sections = only.unwrap_or_else(|| SECTIONS.to_vec());
        let ops = Op::selected();
        if quick {
            Self {
                quick,
                readme,
                sections,
                out,
                curve_ops: ops.iter().copied().filter(|op| *op == Op::Get).collect(),
                ops,
                main: Load {
                    tasks: 50,
                    window: Duration::from_millis(50),
                    rounds: 3,
                },
                sequential_calls: 1_000,
                sequential_rounds: 1,
                callers: vec![1, 10, 50, 200],
                curve: Load {
                    tasks: 0,
                    window: Duration::from_millis(50),
                    rounds: 3,
                },
                pools: vec![1, 2, 4, 8],
                pool: Load {
                    tasks: 50,
                    window: Duration::from_millis(50),
                    rounds: 3,
                },
                overhead_calls: 5_000,
                overhead_rounds: 5,
                offload_calls: 200,
                offload_rounds: 5,
                files_tmpfs_calls: 50,
                files_disk_calls: 3,
                files_rounds: 3,
            }
        } else {
            Self {
                quick,
                readme,
                sections,
                out,
                curve_ops: ops.clone(),
                ops,
                main: Load {
                    tasks: 50,
                    window: Duration::from_millis(100),
                    rounds: 31,
                },
                sequential_calls: 15_000,
                sequential_rounds: 3,
                callers: vec![1, 2, 5, 10, 20, 50, 100, 200],
                curve: Load {
                    tasks: 0,
                    window: Duration::from_millis(100),
                    rounds: 15,
                },
                pools: vec![1, 2, 4, 8],
                pool: Load {
                    tasks: 50,
                    window: Duration::from_millis(100),
                    rounds: 21,
                },
                overhead_calls: 100_000,
                overhead_rounds: 41,
                offload_calls: 2_000,
                offload_rounds: 41,
                files_tmpfs_calls: 500,
                files_disk_calls: 20,
                files_rounds: 21,
            }
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.sections.contains(&section)
    }

    /// The command that reproduces `section` alone.
    fn command(&self, section: &str) -> String {
        let quick = if self.quick { " --quick" } else { "" };
        format!("scripts/bench-report{quick} --only {section}")
    }
}

/// The two runtimes every Redis figure is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    CurrentThread,
    TwoWorkers,
}

impl Flavor {
    const ALL: [Flavor; 2] = [Flavor::CurrentThread, Flavor::TwoWorkers];

    fn label(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current-thread",
            Flavor::TwoWorkers => "2 workers",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current-thread",
            Flavor::TwoWorkers => "2-workers",
        }
    }

    fn runtime(self) -> tokio::runtime::Runtime {
        match self {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::TwoWorkers => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
        }
        .enable_all()
        .build()
        .expect("a tokio runtime")
    }
}

/// The 50-task comparison of one command on one runtime.
struct MainFigures {
    flavor: Flavor,
    op: Op,
    /// Per client of `Client::ALL`, one set of percentiles per round.
    latency: Vec<Vec<Percentiles>>,
    rounds: Rounds,
}

/// Throughput of the curve's clients at each point of a sweep (callers or pool sizes).
struct Sweep {
    flavor: Flavor,
    op: Op,
    points: Vec<(usize, Rounds)>,
}

#[derive(Default)]
struct Results {
    main: Vec<MainFigures>,
    curves: Vec<Sweep>,
    pools: Vec<Sweep>,
    overhead: Option<Group>,
    offload: Option<Group>,
    files: Vec<(&'static str, String, Group)>,
    timings: Vec<(&'static str, Duration)>,
}

fn note(message: &str) {
    eprintln!("[{}] {message}", machine::now_utc());
}

fn redis_sections(plan: &Plan, url: &str, results: &mut Results) {
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        rt.block_on(async {
            let clients = Arc::new(Clients::connect(url, DEFAULT_POOL).await);
            clients.seed().await;
            // Warm-up: connections, the handle's lanes, the allocator.
            let _ = paired_throughput(
                &clients,
                &Client::ALL,
                Op::Get,
                Load {
                    rounds: 1,
                    ..plan.main
                },
            )
            .await;
            if plan.runs("redis") {
                let started = Instant::now();
                for &op in &plan.ops {
                    note(&format!("redis: {} on {}", op.name(), flavor.label()));
                    let latency = paired_latency(
                        &clients,
                        &Client::ALL,
                        op,
                        plan.sequential_calls,
                        plan.sequential_rounds,
                    )
                    .await;
                    let rounds = paired_throughput(&clients, &Client::ALL, op, plan.main).await;
                    results.main.push(MainFigures {
                        flavor,
                        op,
                        latency,
                        rounds,
                    });
                }
                results.timings.push(("redis", started.elapsed()));
            }
            if plan.runs("curve") {
                let started = Instant::now();
                for &op in &plan.curve_ops {
                    note(&format!("curve: {} on {}", op.name(), flavor.label()));
                    let mut points = Vec::new();
                    for &tasks in &plan.callers {
                        let load = Load { tasks, ..plan.curve };
                        points.push((tasks, paired_throughput(&clients, &Client::CURVE, op, load).await));
                    }
                    results.curves.push(Sweep { flavor, op, points });
                }
                results.timings.push(("curve", started.elapsed()));
            }
            if let Ok(clients) = Arc::try_unwrap(clients) {
                clients.quit().await;
            }
            if plan.runs("pools") {
                let started = Instant::now();
                let op = Op::Get;
                note(&format!("pools: {} on {}", op.name(), flavor.label()));
                let mut points = Vec::new();
                for &size in &plan.pools {
                    let clients = Arc::new(Clients::connect(url, size).await);
                    let _ = paired_throughput(
                        &clients,
                        &Client::CURVE,
                        op,
                        Load {
                            rounds: 1,
                            ..plan.pool
                        },
                    )
                    .await;
                    points.push((
                        size,
                        paired_throughput(&clients, &Client::CURVE, op, plan.pool).await,
                    ));
                    if let Ok(clients) = Arc::try_unwrap(clients) {
                        clients.quit().await;
                    }
                }
                results.pools.push(Sweep { flavor, op, points });
                results.timings.push(("pools", started.elapsed()));
            }
        });
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summary(values: &[f64]) -> Option<Summary> {
    Summary::of(values)
}

/// `median (q1–q3)`, and `≈` when the quartiles straddle 1 (no difference within noise).
fn ratio_cell(values: &[f64]) -> String {
    match summary(values) {
        Some(s) if s.spans(1.0) => format!("{} ≈", s.display(2)),
        Some(s) => s.display(2),
        None => "n/a".to_owned(),
    }
}

fn figure_cell(values: &[f64], scale: f64, decimals: usize) -> String {
    summary(values).map_or_else(|| "n/a".to_owned(), |s| s.scaled(scale).display(decimals))
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    summary(&values.into_iter().collect::<Vec<_>>()).map_or(f64::NAN, |s| s.median)
}

/// The per-round p50 difference (µs) of `a` over `b`.
fn p50_gaps(m: &MainFigures, a: usize, b: usize) -> Vec<f64> {
    m.latency[a]
        .iter()
        .zip(&m.latency[b])
        .map(|(a, b)| micros(a.p50) - micros(b.p50))
        .collect()
}

fn client_index(client: Client) -> usize {
    Client::ALL
        .iter()
        .position(|c| *c == client)
        .expect("one of the four")
}

fn write_plot(result: Result<(), stayfast_benches::plot::PlotError>, written: &mut Vec<String>, name: &str) {
    match result {
        Ok(()) => written.push(name.to_owned()),
        Err(e) => eprintln!("{name}: {e}"),
    }
}

/// The key ratios: the Redis comparison under 50 tasks, then the wrappers' — the part of
/// the report the README carries.
fn key_ratios(plan: &Plan, results: &Results) -> String {
    let mut md = String::new();
    if !results.main.is_empty() {
        let _ = writeln!(
            md,
            "Redis, {} tasks, default pool ({DEFAULT_POOL}), against one local redis-server; throughput and CPU \
             ratios from {} paired rounds, p50 differences from {} paired rounds of {} sequential calls \
             (reproduce: `{}`):\n",
            plan.main.tasks,
            plan.main.rounds,
            plan.sequential_rounds,
            plan.sequential_calls,
            plan.command("redis")
        );
        md.push_str(&redis_ratios(results));
        let _ = writeln!(md, "The rest:\n");
    }
    let mut key = Table::new([
        ("figure", Align::Left),
        ("median (quartiles)", Align::Right),
        ("reproduce", Align::Left),
    ]);
    if let Some(g) = &results.overhead {
        for (what, a, b) in [
            (
                "full `Policy` (metrics on) ÷ the floor, time per call",
                "policy_full",
                "floor",
            ),
            (
                "full `Policy` (metrics on) ÷ the peer stack, time per call",
                "policy_full",
                "peer_stack",
            ),
            (
                "`Policy`, metrics off ÷ tower's timeout + retry + limit, time per call",
                "policy_no_metrics",
                "tower_stack",
            ),
            (
                "`PolicyLayer`, metrics off ÷ tower's timeout + retry + limit, time per call",
                "layer_no_metrics",
                "tower_stack",
            ),
        ] {
            key.row([
                what.to_owned(),
                ratio_cell(&g.ratio(a, b)),
                format!("`{}`", plan.command("overhead")),
            ]);
        }
    }
    if let Some(g) = &results.offload {
        key.row([
            "`Offload::run` ÷ bare `timeout(spawn_blocking)`, time per call".to_owned(),
            ratio_cell(&g.ratio("stayfast_offload", "bare")),
            format!("`{}`", plan.command("offload")),
        ]);
    }
    for (place, _, g) in &results.files {
        key.row([
            format!(
                "`AtomicFileWrite` ÷ the hand-written sequence with the same checks ({place}), time per call"
            ),
            ratio_cell(&g.ratio("stayfast_atomic_write", "hand_written_same_guarantees")),
            format!("`{}`", plan.command("files")),
        ]);
    }
    md.push_str(&key.render());
    md.push('\n');
    md
}

/// The README's generated block: where the figures come from, the key ratios, two plots.
fn readme_block(minutes: f64, machine: &Machine, load_end: &str, plan: &Plan, results: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\nGenerated {} by `scripts/bench-report` ({minutes:.1} min) on {} cores of an {} ({:.1} GiB, Linux {}, \
         {}, {}); load average {} at the start, {load_end} at the end. Every ratio is the median of per-round \
         ratios from paired rotating rounds, with the quartiles; `≈` marks no difference within this run's noise. \
         Every absolute figure, the curves and the plots: [docs/bench/REPORT.md](docs/bench/REPORT.md).\n",
        machine::now_utc(),
        machine.cores,
        machine.cpu,
        machine.memory_gib,
        machine.kernel,
        machine.rustc,
        machine.redis.split(" sha=").next().unwrap_or(&machine.redis),
        machine.load,
    );
    md.push_str(&key_ratios(plan, results));
    md.push_str(
        "\n![stayfast ÷ raw fred, calls per second, by concurrent callers (GET, 2 workers)](docs/bench/curve-ratio-2-workers-get.svg)\n\n\
         ![time per call of each wrapper on a ready future](docs/bench/overhead.svg)\n\n",
    );
    md
}

#[allow(clippy::too_many_lines)] // one report, top to bottom
fn render(
    plan: &Plan,
    machine: &Machine,
    deployment: &str,
    results: &Results,
    load_end: &str,
    took: Duration,
) -> String {
    let mut md = String::new();
    let mut plots = Vec::new();
    let out = &plan.out;
    let _ = writeln!(md, "# stayfast bench report\n");
    let _ = writeln!(
        md,
        "Generated {} by `scripts/bench-report{}` in {:.1} min{}.\n",
        machine::now_utc(),
        if plan.quick { " --quick" } else { "" },
        took.as_secs_f64() / 60.0,
        if plan.quick {
            " — **a quick smoke run: too few rounds to judge anything by**"
        } else {
            ""
        }
    );
    let mut t = Table::new([("machine", Align::Left), ("", Align::Left)]);
    t.row(["CPU", machine.cpu.as_str()])
        .row(["cores", &machine.cores.to_string()])
        .row(["memory", &format!("{:.1} GiB", machine.memory_gib)])
        .row(["kernel", &format!("Linux {}", machine.kernel)])
        .row(["rustc", machine.rustc.as_str()])
        .row([
            "redis-server",
            &format!("{} ({deployment}, loopback)", machine.redis),
        ])
        .row([
            "load average (1, 5, 15 min)",
            &format!("{} at the start, {load_end} at the end", machine.load),
        ]);
    md.push_str(&t.render());
    md.push_str(
        "\nHow to read it: every comparison is measured in **paired rotating rounds** — each round times every \
         variant back to back, in an order that rotates round by round, so a burst of load from elsewhere on \
         the machine lands on one round of each rather than on one variant's whole measurement. A ratio is the \
         **median of the per-round ratios**, with the first and third quartiles in brackets; `≈` marks a ratio \
         whose quartiles straddle 1.00, i.e. no difference within this run's noise. Throughput ratios above 1 \
         favour stayfast; time and CPU ratios below 1 do. The Prometheus recorder is installed throughout, as \
         in a service.\n\n",
    );

    // The key ratios first.
    let _ = writeln!(md, "## Key ratios\n");
    md.push_str(&key_ratios(plan, results));

    // Redis, 50 tasks.
    if !results.main.is_empty() {
        let _ = writeln!(
            md,
            "## Redis: {} tasks, default pool ({DEFAULT_POOL})\n\nReproduce: `{}`. Clients:\n",
            plan.main.tasks,
            plan.command("redis")
        );
        for c in Client::ALL {
            let _ = writeln!(md, "- **{}**: {}", c.label(), c.description());
        }
        let _ = writeln!(
            md,
            "\nSequential latency: {} rounds of {} calls per client; throughput: {} paired rounds of {} ms per \
             client, {} tasks calling back to back; client CPU per call from `/proc/self/task/*/schedstat` (all \
             of this process's threads, redis-server excluded). Sequential calls are made from the runtime's \
             `block_on` thread and the 50 tasks are spawned onto the runtime, as in the `redis` bench.\n",
            plan.sequential_rounds,
            plan.sequential_calls,
            plan.main.rounds,
            plan.main.window.as_millis(),
            plan.main.tasks
        );
        md.push_str("Ratios: under Key ratios above.\n\n");
        let mut t = Table::new([
            ("command", Align::Left),
            ("runtime", Align::Left),
            ("client", Align::Left),
            ("p50 µs", Align::Right),
            ("p90 µs", Align::Right),
            ("p99 µs", Align::Right),
            ("p99.9 µs", Align::Right),
            ("calls/s (quartiles)", Align::Right),
            ("CPU µs per call", Align::Right),
        ]);
        for m in &results.main {
            for (i, c) in Client::ALL.into_iter().enumerate() {
                let p = |f: fn(&Percentiles) -> Duration| {
                    format!("{:.1}", median(m.latency[i].iter().map(|x| micros(f(x)))))
                };
                t.row([
                    m.op.name().to_owned(),
                    m.flavor.label().to_owned(),
                    c.label().to_owned(),
                    p(|x| x.p50),
                    p(|x| x.p90),
                    p(|x| x.p99),
                    p(|x| x.p999),
                    figure_cell(m.rounds.ops(c), 1.0, 0),
                    figure_cell(m.rounds.cpu(c), 1e6, 2),
                ]);
            }
        }
        md.push_str(&t.render());
        md.push('\n');
        for m in &results.main {
            let name = format!("latency-{}-{}.svg", m.flavor.slug(), m.op.name().to_lowercase());
            let chart = LineChart {
                title: format!("{} sequential latency, {} runtime", m.op.name(), m.flavor.label()),
                x_desc: "percentile".into(),
                y_desc: "µs per call (log scale)".into(),
                categories: ["p50", "p90", "p99", "p99.9"].map(String::from).to_vec(),
                lines: Client::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Line {
                        label: c.label().into(),
                        points: (0..4)
                            .map(|k| {
                                summary(
                                    &m.latency[i]
                                        .iter()
                                        .map(|p| micros(p.labelled()[k].1))
                                        .collect::<Vec<_>>(),
                                )
                            })
                            .collect(),
                    })
                    .collect(),
                log_y: true,
                legend: SeriesLabelPosition::UpperLeft,
            };
            write_plot(chart.write(&out.join(&name)), &mut plots, &name);
            let _ = writeln!(md, "![{}]({name})", chart.title);
        }
        md.push('\n');
    }

    for (sweeps, heading, x_desc, section) in [
        (
            &results.curves,
            "throughput against concurrent callers",
            "concurrent callers",
            "curve",
        ),
        (
            &results.pools,
            "throughput against pool size",
            "pool size (connections per client)",
            "pools",
        ),
    ] {
        if sweeps.is_empty() {
            continue;
        }
        let load = if section == "curve" { plan.curve } else { plan.pool };
        let _ = writeln!(
            md,
            "## Redis: {heading}\n\nReproduce: `{}`. {} paired rounds of {} ms per client at each point; {}. \
             Points are medians, bars the quartiles. The points are measured one after another, so the \
             absolute calls/s also move with the machine's load from point to point; the ratios, paired \
             within each point, are the figures to read.\n",
            plan.command(section),
            load.rounds,
            load.window.as_millis(),
            if section == "curve" {
                format!("pool {DEFAULT_POOL}")
            } else {
                format!(
                    "{} tasks; stayfast's `pool_size` and the raw pools alike",
                    load.tasks
                )
            }
        );
        let mut t = Table::new([
            ("command", Align::Left),
            ("runtime", Align::Left),
            (if section == "curve" { "callers" } else { "pool" }, Align::Right),
            ("raw fred calls/s", Align::Right),
            ("raw + timeout calls/s", Align::Right),
            ("stayfast calls/s", Align::Right),
            ("stayfast ÷ raw", Align::Right),
            ("stayfast ÷ raw + timeout", Align::Right),
        ]);
        for s in sweeps {
            for (x, r) in &s.points {
                t.row([
                    s.op.name().to_owned(),
                    s.flavor.label().to_owned(),
                    x.to_string(),
                    format!("{:.0}", median(r.ops(Client::Raw).iter().copied())),
                    format!("{:.0}", median(r.ops(Client::RawTimeout).iter().copied())),
                    format!("{:.0}", median(r.ops(Client::Stayfast).iter().copied())),
                    ratio_cell(&r.ratio(Client::Stayfast, Client::Raw)),
                    ratio_cell(&r.ratio(Client::Stayfast, Client::RawTimeout)),
                ]);
            }
        }
        md.push_str(&t.render());
        md.push('\n');
        for s in sweeps {
            let name = format!("{section}-{}-{}.svg", s.flavor.slug(), s.op.name().to_lowercase());
            let chart = LineChart {
                title: format!("{} {heading}, {} runtime", s.op.name(), s.flavor.label()),
                x_desc: x_desc.into(),
                y_desc: "calls per second".into(),
                categories: s.points.iter().map(|(x, _)| x.to_string()).collect(),
                lines: Client::CURVE
                    .iter()
                    .map(|c| Line {
                        label: c.label().into(),
                        points: s.points.iter().map(|(_, r)| summary(r.ops(*c))).collect(),
                    })
                    .collect(),
                log_y: false,
                legend: SeriesLabelPosition::LowerRight,
            };
            write_plot(chart.write(&out.join(&name)), &mut plots, &name);
            let _ = writeln!(md, "![{}]({name})", chart.title);
            let name = format!(
                "{section}-ratio-{}-{}.svg",
                s.flavor.slug(),
                s.op.name().to_lowercase()
            );
            let chart = LineChart {
                title: format!(
                    "{} stayfast ÷ raw throughput, {} runtime",
                    s.op.name(),
                    s.flavor.label()
                ),
                x_desc: x_desc.into(),
                y_desc: "ratio of calls per second (paired rounds)".into(),
                categories: s.points.iter().map(|(x, _)| x.to_string()).collect(),
                lines: [Client::Raw, Client::RawTimeout]
                    .iter()
                    .map(|c| Line {
                        label: format!("stayfast ÷ {}", c.label()),
                        points: s
                            .points
                            .iter()
                            .map(|(_, r)| summary(&r.ratio(Client::Stayfast, *c)))
                            .collect(),
                    })
                    .chain([Line {
                        label: "parity".into(),
                        points: s.points.iter().map(|_| Summary::of(&[1.0])).collect(),
                    }])
                    .collect(),
                log_y: false,
                legend: SeriesLabelPosition::LowerLeft,
            };
            write_plot(chart.write(&out.join(&name)), &mut plots, &name);
            let _ = writeln!(md, "![{}]({name})", chart.title);
        }
        md.push('\n');
    }

    if let Some(g) = &results.overhead {
        let _ = writeln!(
            md,
            "## Overhead per wrapper, on a ready future\n\nReproduce: `{}`. Current-thread runtime; {} paired \
             rounds of {} calls per variant, all variants in every round. The criterion benches \
             (`cargo bench -p stayfast-benches --bench overhead`, `--bench tower`) time the same variants one \
             after another.\n",
            plan.command("overhead"),
            plan.overhead_rounds,
            plan.overhead_calls
        );
        let mut t = Table::new([
            ("ratio of time per call", Align::Left),
            ("median (quartiles)", Align::Right),
        ]);
        for (a, b) in [
            ("policy_full", "floor"),
            ("policy_full", "peer_stack"),
            ("policy_full_bulkhead", "peer_stack"),
            ("policy_no_metrics", "tower_stack"),
            ("layer_no_metrics", "tower_stack"),
            ("layer_no_metrics", "tower_full_stack"),
            ("stayfast_timeout", "tokio_timeout"),
        ] {
            t.row([format!("`{a}` ÷ `{b}`"), ratio_cell(&g.ratio(a, b))]);
        }
        md.push_str(&t.render());
        md.push('\n');
        md.push_str(&group_table(g, 1e9, 1, "ns per call"));
        let name = "overhead.svg";
        let chart = BarChart {
            title: "Overhead per wrapper on a ready future (ns per call, median; line: quartiles)".into(),
            x_desc: "ns per call".into(),
            bars: g
                .series
                .iter()
                .filter_map(|s| summary(&s.per_call).map(|v| (s.name.to_owned(), v.scaled(1e9))))
                .collect(),
        };
        write_plot(chart.write(&out.join(name)), &mut plots, name);
        let _ = writeln!(md, "\n![{}]({name})\n", chart.title);
    }

    if let Some(g) = &results.offload {
        let _ = writeln!(
            md,
            "## Offload to the blocking pool\n\nReproduce: `{}`. A trivial closure; current-thread runtime; {} \
             paired rounds of {} calls per variant.\n",
            plan.command("offload"),
            plan.offload_rounds,
            plan.offload_calls
        );
        let mut t = Table::new([
            ("ratio of time per call", Align::Left),
            ("median (quartiles)", Align::Right),
        ]);
        for (a, b) in [("stayfast_offload", "bare"), ("stayfast_offload_full", "bare")] {
            t.row([format!("`{a}` ÷ `{b}`"), ratio_cell(&g.ratio(a, b))]);
        }
        md.push_str(&t.render());
        md.push('\n');
        md.push_str(&group_table(g, 1e6, 2, "µs per call"));
        md.push('\n');
    }

    if !results.files.is_empty() {
        let _ = writeln!(
            md,
            "## Durable file replacement ({} bytes)\n\nReproduce: `{}`. One-worker runtime; {} paired rounds; \
             {} writes per variant per round on tmpfs, {} on the work disk.\n",
            micro::PAYLOAD,
            plan.command("files"),
            plan.files_rounds,
            plan.files_tmpfs_calls,
            plan.files_disk_calls
        );
        for (place, dir, g) in &results.files {
            let _ = writeln!(md, "### {place} (`{dir}`)\n");
            let mut t = Table::new([
                ("ratio of time per call", Align::Left),
                ("median (quartiles)", Align::Right),
            ]);
            for (a, b) in [
                ("stayfast_atomic_write", "hand_written_same_guarantees"),
                ("stayfast_atomic_write", "hand_written_one_hop"),
                ("stayfast_atomic_write", "tokio_fs_six_calls"),
            ] {
                t.row([format!("`{a}` ÷ `{b}`"), ratio_cell(&g.ratio(a, b))]);
            }
            md.push_str(&t.render());
            md.push('\n');
            md.push_str(&group_table(g, 1e6, 1, "µs per call"));
            md.push('\n');
        }
    }

    let _ = writeln!(md, "## This run\n");
    let mut t = Table::new([("section", Align::Left), ("time", Align::Right)]);
    for section in SECTIONS {
        let spent: Duration = results
            .timings
            .iter()
            .filter(|(s, _)| *s == section)
            .map(|(_, d)| *d)
            .sum();
        if results.timings.iter().any(|(s, _)| *s == section) {
            t.row([section.to_owned(), format!("{:.0} s", spent.as_secs_f64())]);
        }
    }
    t.row(["whole run".to_owned(), format!("{:.0} s", took.as_secs_f64())]);
    md.push_str(&t.render());
    let _ = writeln!(md, "\nPlots written: {}.", plots.join(", "));
    md
}

/// The Redis key ratios: per command and runtime, stayfast against each raw client.
fn redis_ratios(results: &Results) -> String {
    let mut md = String::new();
    let mut ratios = Table::new([
        ("command", Align::Left),
        ("runtime", Align::Left),
        ("stayfast ÷ raw, calls/s", Align::Right),
        ("÷ raw + timeout, calls/s", Align::Right),
        ("÷ raw, stayfast's settings, calls/s", Align::Right),
        ("p50 − raw (µs)", Align::Right),
        ("p50 − raw, stayfast's settings (µs)", Align::Right),
        ("CPU per call ÷ raw", Align::Right),
    ]);
    let stayfast = client_index(Client::Stayfast);
    for m in &results.main {
        ratios.row([
            m.op.name().to_owned(),
            m.flavor.label().to_owned(),
            ratio_cell(&m.rounds.ratio(Client::Stayfast, Client::Raw)),
            ratio_cell(&m.rounds.ratio(Client::Stayfast, Client::RawTimeout)),
            ratio_cell(&m.rounds.ratio(Client::Stayfast, Client::RawTuned)),
            figure_cell(&p50_gaps(m, stayfast, client_index(Client::Raw)), 1.0, 1),
            figure_cell(&p50_gaps(m, stayfast, client_index(Client::RawTuned)), 1.0, 1),
            ratio_cell(&m.rounds.cpu_ratio(Client::Stayfast, Client::Raw)),
        ]);
    }
    md.push_str(&ratios.render());
    md.push('\n');
    md
}

/// A group's variants: name, description, time per call (scaled by `scale`).
fn group_table(g: &Group, scale: f64, decimals: usize, unit: &str) -> String {
    let mut t = Table::new([
        ("variant", Align::Left),
        ("what it runs", Align::Left),
        (unit, Align::Right),
    ]);
    for s in &g.series {
        t.row([
            format!("`{}`", s.name),
            s.description.to_owned(),
            figure_cell(&s.per_call, scale, decimals),
        ]);
    }
    t.render()
}

fn main() {
    let plan = Plan::from_args();
    let started = Instant::now();
    let machine = Machine::describe();
    note(&format!(
        "{} report into {} ({}); load {}",
        if plan.quick { "quick" } else { "full" },
        plan.out.display(),
        plan.sections.join(", "),
        machine.load
    ));
    std::fs::create_dir_all(&plan.out).expect("create the report's directory");
    let _recorder = install_recorder();
    let mut results = Results::default();

    // redis-server is a child process, independent of any runtime: start it once.
    let boot = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut deployment_label = "not run";
    if ["redis", "curve", "pools"].iter().any(|s| plan.runs(s)) {
        let deployment = boot.block_on(Deployment::start());
        deployment_label = deployment.describe();
        redis_sections(&plan, &deployment.url(), &mut results);
        drop(deployment);
    }
    if plan.runs("overhead") {
        note("overhead");
        let t = Instant::now();
        results.overhead = Some(micro::overhead(plan.overhead_calls, plan.overhead_rounds));
        results.timings.push(("overhead", t.elapsed()));
    }
    if plan.runs("offload") {
        note("offload");
        let t = Instant::now();
        results.offload = Some(micro::offload(plan.offload_calls, plan.offload_rounds));
        results.timings.push(("offload", t.elapsed()));
    }
    if plan.runs("files") {
        let t = Instant::now();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut places = vec![(
            "work disk",
            workspace.join("target/bench-report-files"),
            plan.files_disk_calls,
        )];
        if Path::new("/dev/shm").is_dir() {
            places.insert(
                0,
                (
                    "tmpfs",
                    PathBuf::from(format!("/dev/shm/stayfast-report-{}", std::process::id())),
                    plan.files_tmpfs_calls,
                ),
            );
        }
        for (place, dir, calls) in places {
            note(&format!("files: {place}"));
            match micro::files(&dir, calls, plan.files_rounds) {
                Ok(g) => {
                    let shown = dir.strip_prefix(&workspace).unwrap_or(&dir).display().to_string();
                    results.files.push((place, shown, g));
                }
                Err(e) => eprintln!("files on {place} ({}): {e}", dir.display()),
            }
        }
        results.timings.push(("files", t.elapsed()));
    }
    let took = started.elapsed();
    let report = render(
        &plan,
        &machine,
        deployment_label,
        &results,
        &machine::load_average(),
        took,
    );
    let path = plan.out.join("REPORT.md");
    std::fs::write(&path, &report).expect("write REPORT.md");
    if let Some(readme) = &plan.readme {
        let block = readme_block(
            took.as_secs_f64() / 60.0,
            &machine,
            &machine::load_average(),
            &plan,
            &results,
        );
        let text = std::fs::read_to_string(readme).expect("read README.md");
        match stayfast_benches::markdown::replace_block(&text, &block) {
            Ok(updated) => {
                std::fs::write(readme, updated).expect("write README.md");
                note(&format!(
                    "rewrote the Performance figures in {}",
                    readme.display()
                ));
            }
            Err(why) => eprintln!("README.md left as it is: {why}"),
        }
    }
    note(&format!(
        "wrote {} in {:.1} min",
        path.display(),
        took.as_secs_f64() / 60.0
    ));
}
