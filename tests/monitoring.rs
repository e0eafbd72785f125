//! The monitoring kit in `monitoring/`, proven against a real Prometheus.
//!
//! - `promtool check rules` and `promtool test rules` pass on the rules and their unit
//!   tests;
//! - the Grafana dashboard is importable JSON of the expected shape;
//! - end to end: a redis-server, an in-process `Stayfast` serving `/metrics` on a free
//!   loopback port, and a real `prometheus` (1 s scrape and evaluation, our rules) on
//!   another. `promtool check metrics` finds nothing to say about a real scrape; under
//!   load, a SIGSTOPped Redis makes the circuit-open alert pending, SIGCONT clears it; and
//!   every dashboard expression and every recording rule returns data through
//!   `/api/v1/query`, so each parses and names series the app really exports.
//!
//! `prometheus` and `promtool` come from Debian's `prometheus` package (`scripts/test`
//! installs it): without them these tests fail with the install command, never skip.
//! Every process started here is stopped by its pid. Figures print with `--nocapture`.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::BTreeSet,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use support::{TempDir, free_port, service_settings};

use serde_json::Value;
use stayfast::{
    Cache, KnowledgeStore, Offload, OffloadConfig, Policy, Stayfast, TranscriptStore,
    redis::Redis,
    test_util::RedisServer,
    transcripts::{Message, Order},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the dashboard's template variables become in the test: every value.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("${target}", ".*"),
    ("$target", ".*"),
    ("${operation}", ".*"),
    ("$operation", ".*"),
];

/// The alert the fault must raise, and the breaker it watches.
const CIRCUIT_ALERT: &str = "StayfastCircuitOpen";
const REDIS_TARGET: &str = "redis.main";

/// The GET bound: short, so the fault opens the circuit quickly.
const GET_TIMEOUT: Duration = Duration::from_millis(300);
/// Bounds of the polls (generous: the machine is shared; typical figures are printed).
const READY_WITHIN: Duration = Duration::from_secs(20);
const TARGET_UP_WITHIN: Duration = Duration::from_secs(30);
const ALERT_WITHIN: Duration = Duration::from_secs(30);
const DATA_WITHIN: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(200);

const INSTALL_HINT: &str = "install Debian's `prometheus` package (it carries promtool) without starting \
     its service: run scripts/test as root, or `sudo apt-get install -y --no-install-recommends prometheus` \
     (then `sudo systemctl disable --now prometheus` if it started one); elsewhere put prometheus and \
     promtool from https://prometheus.io/download/ on PATH";

// ---------------------------------------------------------------------------------
// Files and tools
// ---------------------------------------------------------------------------------

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn rules_file() -> PathBuf {
    repo_file("monitoring/prometheus/stayfast.rules.yml")
}

/// `name` on PATH, or a failure that says how to install it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: {INSTALL_HINT}"))
}

/// Runs `promtool args…` (optionally feeding `stdin`), returning success and the output.
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(tool("promtool"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        // Dropped at the end of the statement: promtool sees EOF.
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------
// promtool on the rules, and the dashboard's shape
// ---------------------------------------------------------------------------------

#[test]
fn promtool_check_rules_is_clean() {
    let rules = rules_file();
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    eprintln!("{out}");
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let tests = repo_file("monitoring/prometheus/stayfast.rules.test.yml");
    let (ok, out) = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    eprintln!("{out}");
    assert!(ok, "promtool test rules failed:\n{out}");
}

/// Every alert in the rules file has a unit test in the test file, and every alert
/// points at a runbook paragraph that exists in monitoring/README.md.
#[test]
fn every_alert_has_a_unit_test_and_a_runbook() {
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    let tests = std::fs::read_to_string(repo_file("monitoring/prometheus/stayfast.rules.test.yml")).unwrap();
    let readme = std::fs::read_to_string(repo_file("monitoring/README.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "no alert_rule_test for {alert}"
        );
        let anchor = format!("README.md#{}", alert.to_lowercase());
        assert!(rules.contains(&anchor), "{alert} has no runbook_url {anchor}");
        assert!(
            readme.contains(&format!("### {alert}\n")),
            "no runbook heading `### {alert}` in monitoring/README.md"
        );
    }
    eprintln!("{} alerts, each with a unit test and a runbook", alerts.len());
}

/// Every `expr` of every panel (rows' nested panels included).
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                out.push((format!("{title} / {}", target["refId"]), expr.to_owned()));
            }
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().unwrap(), &mut out);
    out
}

fn load_dashboard() -> Value {
    let text = std::fs::read_to_string(repo_file("monitoring/grafana/stayfast.json")).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("monitoring/grafana/stayfast.json: {e}"))
}

#[test]
fn dashboard_is_importable() {
    let d = load_dashboard();
    assert_eq!(d["schemaVersion"], 39);
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["id"].is_null(), "an exported id would clash on import");
    let vars: Vec<&Value> = d["templating"]["list"].as_array().unwrap().iter().collect();
    let var = |name: &str| {
        *vars
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["target", "operation"] {
        let v = var(name);
        assert_eq!(v["type"], "query");
        assert_eq!(v["includeAll"], true);
        assert_eq!(v["allValue"], ".*", "`All` must be a regex for =~");
        assert_eq!(v["datasource"]["uid"], "${datasource}");
    }

    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ["timeseries", "stat"].contains(&p["type"].as_str().unwrap()),
            "{title}: type {}",
            p["type"]
        );
        assert!(ids.insert(p["id"].as_u64().unwrap()), "{title}: duplicate id");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let grid = &p["gridPos"];
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the grid"
        );
        assert!(!p["targets"].as_array().unwrap().is_empty(), "{title}: no query");
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: no description"
        );
    }
    // What the issue asks the dashboard to show.
    let all: String = dashboard_exprs(&d).into_iter().map(|(_, e)| e + "\n").collect();
    for needle in [
        "histogram_quantile(0.50, sum by (le, operation, target) (rate(stayfast_call_duration_seconds_bucket",
        "histogram_quantile(0.95, sum by (le, operation, target) (rate(stayfast_call_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, operation, target) (rate(stayfast_call_duration_seconds_bucket",
        "sum by (outcome) (rate(stayfast_calls_total",
        "stayfast_circuit_state",
        "stayfast_circuit_transitions_total",
        "stayfast_fallbacks_total",
        "stayfast:cache_hit_ratio:rate5m",
        "stayfast_background_in_flight",
        r#"stayfast_background_tasks_total{outcome="shed"}"#,
        "stayfast_offload_in_flight",
        "stayfast_offload_abandoned_total",
        "stayfast:redis_pool_saturation:avg1m",
        "stayfast_runtime_lag_seconds_bucket",
        "stayfast_transcripts_pending_records",
        "stayfast_transcripts_replayed_total",
    ] {
        assert!(all.contains(needle), "no panel shows {needle}");
    }
    eprintln!(
        "dashboard: {} panels, {} queries",
        panels.len(),
        dashboard_exprs(&d).len()
    );
}

// ---------------------------------------------------------------------------------
// HTTP, the plain way (no client in the dev-dependencies): HTTP/1.0, so the server
// closes the connection after the body and never chunks it.
// ---------------------------------------------------------------------------------

async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no header end in {response:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {head:?}"))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("GET {path} took over 5 s"))?
}

/// Percent-encodes a query parameter (everything but RFC 3986's unreserved bytes).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------------

/// `prometheus` on a free loopback port, scraping `scrape` every second and evaluating
/// our rules every second, its data in a temp dir. Stopped by pid on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    fn start(scrape: SocketAddr) -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        let rules = rules_file().to_str().unwrap().replace('\'', "''");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - '{rules}'\n\
                 scrape_configs:\n  - job_name: stayfast\n    static_configs:\n      - targets: ['{scrape}']\n"
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, addr, dir }
    }

    /// The tail of its log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Panics (with its log) if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("prometheus exited ({status}):\n{}", self.log_tail());
        }
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = http_get(self.addr, path)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status}: {e}: {body}"));
        assert_eq!(json["status"], "success", "GET {path}: {status}: {body}");
        json
    }

    /// `/api/v1/query`: the instant vector, or the error Prometheus gave (a parse error).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (status, body) = http_get(self.addr, &path).await?;
        let json: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {} {}", json["errorType"], json["error"]));
        }
        Ok(json["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SIGTERM by pid (a clean TSDB close), SIGKILL by pid if it lingers.
        let pid = self.child.id();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {pid}"))
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every [`POLL_EVERY`] until it returns `Some`, or panics after `within`
/// with `what` and the last state `check` reported.
async fn poll<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(done) => return (done, started.elapsed()),
            Err(last) => last,
        };
        assert!(
            started.elapsed() < within,
            "{what}: not within {within:?}; last: {last}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

// ---------------------------------------------------------------------------------
// The service under watch, and its workload
// ---------------------------------------------------------------------------------

/// What the workload calls, cloned out of the `Stayfast`.
#[derive(Clone)]
struct Stores {
    transcripts: TranscriptStore,
    /// A replica's store in `order = "redis"`: its pending records and replays.
    ordered: TranscriptStore,
    knowledge: KnowledgeStore,
    cache: Cache,
    redis: Redis,
    /// A blocking "library" behind a 50 ms deadline, 4 threads at most.
    offload: Offload,
    index_query: Policy,
}

/// One round of the workload: appends, history, facts, the cache, and a Redis GET under
/// its short bound. Errors are expected while Redis is stopped: they are what the
/// metrics show.
///
/// Also an offloaded blocking call (every 40th one past its deadline: abandoned) and,
/// every 20th round, five concurrent `get_or_insert_with` on one cold key (one load,
/// four coalesced waits).
async fn workload_round(s: &Stores, n: u64) {
    let session = format!("monitoring-{}", n % 8);
    let _ = s
        .transcripts
        .append(&session, Message::new("user", format!("message {n}")))
        .await;
    let _ = s.transcripts.history(&session, 20).await;
    let _ = s
        .ordered
        .append(&session, Message::new("user", format!("ordered {n}")))
        .await;
    if n.is_multiple_of(25) {
        let _ = s
            .knowledge
            .store_fact(
                format!("Monitoring fact number {n}"),
                serde_json::json!({"round": n}),
            )
            .await;
    }
    let _ = s.knowledge.search("monitoring fact", 5).await;
    let _: Result<u64, _> = s
        .cache
        .get_or_insert_with(&("square", n % 20), None, || async move {
            Ok::<_, std::io::Error>((n % 20).pow(2))
        })
        .await;
    let _ = s.cache.get::<u64>(&("square", n % 40)).await;
    let _ = s.redis.get::<Option<String>>("monitoring:k").await;
    let work = if n.is_multiple_of(40) { 100 } else { 1 };
    let _ = s
        .offload
        .run(&s.index_query, move || {
            std::thread::sleep(Duration::from_millis(work));
            Ok::<_, std::convert::Infallible>(())
        })
        .await;
    if n.is_multiple_of(20) {
        let callers = (0..5).map(|_| {
            let cache = s.cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_insert_with(&("cold", n), None, || async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::io::Error>(n)
                    })
                    .await
            })
        });
        for caller in callers.collect::<Vec<_>>() {
            let _ = caller.await;
        }
    }
}

/// Runs [`workload_round`] in a loop on its own task until dropped.
struct Workload {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    fn start(stores: Stores) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    workload_round(&stores, rounds.fetch_add(1, Ordering::Relaxed)).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Self { stop, rounds, task }
    }

    fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.rounds.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------
// The end-to-end test
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_against_a_real_prometheus() {
    let started = Instant::now();
    // Fail early, with the install command, before starting anything.
    tool("prometheus");
    tool("promtool");

    let server = RedisServer::start().await.unwrap();
    let dir = TempDir::new("monitoring");
    let settings = service_settings(&server, &dir, GET_TIMEOUT);
    let app = Stayfast::from_settings(&settings).await.unwrap();
    let metrics = settings.metrics.listen;
    let ordered = {
        let mut config = settings.transcripts.clone();
        config.dir = dir.0.join("ordered");
        config.order = Order::Redis;
        TranscriptStore::builder(&config)
            .redis(app.redis().unwrap().clone())
            .open()
            .await
            .unwrap()
    };
    let stores = Stores {
        transcripts: app.transcripts().clone(),
        ordered,
        knowledge: app.knowledge().unwrap().clone(),
        cache: app.cache().unwrap().clone(),
        redis: app.redis().unwrap().clone(),
        offload: {
            let mut config = OffloadConfig::default();
            config.max_threads = 4;
            Offload::new("offload.index", &config).unwrap()
        },
        index_query: Policy::builder("index.query")
            .target("offload.index")
            .timeout(Duration::from_millis(50))
            .idempotent(true)
            .build()
            .unwrap(),
    };
    let workload = Workload::start(stores);

    // Prometheus first: its target discovery takes seconds, the rest happens meanwhile.
    let mut prometheus = Prometheus::start(metrics);
    let spawned = Instant::now();

    // `promtool check metrics` on a real scrape, once the workload has touched
    // every store.
    poll("two workload rounds", READY_WITHIN, async || {
        match workload.rounds() {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} rounds")),
        }
    })
    .await;
    let (status, scrape) = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{scrape}");
    let (ok, lint) = promtool(&["check", "metrics"], Some(&scrape));
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics on a real scrape:\n{lint}"
    );
    eprintln!(
        "promtool check metrics: clean on a {} byte scrape ({} samples)",
        scrape.len(),
        scrape
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    );

    poll("prometheus ready", READY_WITHIN, async || {
        prometheus.assert_running();
        match http_get(prometheus.addr, "/-/ready").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let ready = spawned.elapsed();
    eprintln!("prometheus ready {ready:?} after its start");

    let (_, up) = poll("the stayfast target up", TARGET_UP_WITHIN, async || {
        let targets = prometheus.get_json("/api/v1/targets").await;
        let active = &targets["data"]["activeTargets"];
        match active.as_array().and_then(|a| a.first()) {
            Some(t) if t["health"] == "up" => Ok(()),
            _ => Err(active.to_string()),
        }
    })
    .await;
    eprintln!(
        "target up {up:?} after ready ({:?} after the start)",
        spawned.elapsed()
    );

    // The fault: the breaker opens under the workload's GETs, the alert goes pending.
    server.pause().unwrap();
    let (state, pending) =
        poll(
            "circuit-open alert pending or firing",
            ALERT_WITHIN,
            async || match circuit_alert(&prometheus).await {
                Some(state) => Ok(state),
                None => Err("no StayfastCircuitOpen alert for redis.main".to_owned()),
            },
        )
        .await;
    eprintln!("{CIRCUIT_ALERT} {state} {pending:?} after SIGSTOP");
    fallback_free_panels_show_the_fault(&prometheus).await;

    server.resume().unwrap();
    let (_, cleared) = poll(
        "circuit-open alert cleared",
        ALERT_WITHIN,
        async || match circuit_alert(&prometheus).await {
            None => Ok(()),
            Some(state) => Err(format!("still {state}")),
        },
    )
    .await;
    eprintln!("{CIRCUIT_ALERT} cleared {cleared:?} after SIGCONT");

    every_expression_returns_data(&prometheus).await;

    let rounds = workload.stop().await;
    eprintln!("workload: {rounds} rounds");
    let report = app.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.aborted, 0);
    drop(prometheus);
    eprintln!("end to end: {:?}", started.elapsed());
}

/// A panel whose query ends in `or vector(0)` (zero instead of "no data" when all is
/// well) always returns data, so the check after the fault proves nothing about it:
/// during the fault, its query without that fallback must return data of its own.
async fn fallback_free_panels_show_the_fault(prometheus: &Prometheus) {
    let mut checked = 0;
    for (panel, expr) in dashboard_exprs(&load_dashboard()) {
        let Some(base) = expr.strip_suffix(" or vector(0)") else {
            continue;
        };
        let mut base = base.to_owned();
        for (var, value) in SUBSTITUTIONS {
            base = base.replace(var, value);
        }
        // Bounded poll: the next scrape may be a second away.
        poll(
            &format!("{panel} showing the fault"),
            ALERT_WITHIN,
            async || match prometheus.query(&base).await {
                Ok(result) if !result.is_empty() => Ok(()),
                Ok(_) => Err(format!("no data from {base}")),
                Err(e) => panic!("{panel}: does not evaluate: {e}\n  {base}"),
            },
        )
        .await;
        checked += 1;
    }
    assert!(checked > 0, "no `or vector(0)` panel: drop this check");
    eprintln!("{checked} panel(s) with `or vector(0)` show the fault on their own");
}

/// The state (`pending` / `firing`) of the circuit-open alert on Redis, if active.
async fn circuit_alert(prometheus: &Prometheus) -> Option<String> {
    let alerts = prometheus.get_json("/api/v1/alerts").await;
    alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == CIRCUIT_ALERT && a["labels"]["target"] == REDIS_TARGET)
        .map(|a| a["state"].as_str().unwrap_or("?").to_owned())
}

/// One expression to run: where it comes from and the PromQL.
struct Expression {
    source: String,
    expr: String,
}

/// Every dashboard expression (variables substituted) and every recording rule (its
/// expression and its recorded series) returns data; every rule Prometheus loaded is
/// healthy.
async fn every_expression_returns_data(prometheus: &Prometheus) {
    let mut expressions = Vec::new();
    for (panel, expr) in dashboard_exprs(&load_dashboard()) {
        let mut expr = expr;
        for (var, value) in SUBSTITUTIONS {
            expr = expr.replace(var, value);
        }
        assert!(!expr.contains('$'), "{panel}: a variable left in {expr}");
        expressions.push(Expression {
            source: format!("panel {panel}"),
            expr,
        });
    }

    // The rules as Prometheus loaded them: every one healthy (alerts included, so each
    // alert's expression parses and evaluates).
    let rules = prometheus.get_json("/api/v1/rules").await;
    let mut recorded = 0;
    let mut alerts = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["name"].as_str().unwrap().to_owned();
            let query = rule["query"].as_str().unwrap().to_owned();
            assert!(
                rule["health"] == "ok",
                "rule {name}: health {} {}",
                rule["health"],
                rule["lastError"]
            );
            if rule["type"] == "recording" {
                recorded += 1;
                expressions.push(Expression {
                    source: format!("rule {name}"),
                    expr: query,
                });
                expressions.push(Expression {
                    source: format!("recorded series {name}"),
                    expr: name,
                });
            } else {
                alerts += 1;
            }
        }
    }
    assert!(recorded > 0 && alerts > 0, "no rules loaded: {rules}");

    // Bounded poll: the 1-minute windows need two scrapes of every series.
    let started = Instant::now();
    let empty = loop {
        let mut empty = Vec::new();
        for e in &expressions {
            match prometheus.query(&e.expr).await {
                Ok(result) if result.is_empty() => empty.push(e),
                Ok(_) => {}
                Err(error) => panic!("{}: does not evaluate: {error}\n  {}", e.source, e.expr),
            }
        }
        if empty.is_empty() || started.elapsed() > DATA_WITHIN {
            break empty;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    eprintln!(
        "{} expressions ({} dashboard queries, {recorded} recording rules and their series), \
         {alerts} alerts healthy; data from {} in {:?}",
        expressions.len(),
        expressions
            .iter()
            .filter(|e| e.source.starts_with("panel"))
            .count(),
        expressions.len() - empty.len(),
        started.elapsed()
    );
    assert!(
        empty.is_empty(),
        "expressions that returned no data:\n{}",
        empty
            .iter()
            .map(|e| format!("  {}: {}", e.source, e.expr))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
