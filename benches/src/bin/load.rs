//! A load generator for the reference service (`examples/service`): N connections,
//! each sending requests back to back for T seconds (a closed loop: latencies are
//! measured from each request's send, so a stall shows in p99 and in requests/s, not
//! as coordinated-omission-corrected figures), over a mix of the service's routes.
//!
//! Self-contained run (starts a throwaway redis-server and the service binary, then
//! measures with Redis serving and with Redis frozen by SIGSTOP):
//!
//! ```text
//! cargo build --release --example service
//! cargo run --release -p stayfast-benches --bin load -- \
//!     --service target/release/examples/service --connections 32 --seconds 10
//! ```
//!
//! Against a service already running (one phase, as it is): `--url http://127.0.0.1:3000`.
//! `--routes chat,search` keeps the routes whose name ends with one of these (`/chat`
//! matches both chat routes, `upstream` the slow upstream).

use std::{
    collections::BTreeMap,
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, body::Bytes, header::CONTENT_TYPE};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use stayfast_core::test_util::RedisServer;

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The routes each connection cycles through.
const ROUTES: [&str; 4] = ["POST /chat", "GET /chat", "GET /facts/search", "GET /upstream"];

struct Options {
    url: Option<String>,
    service: Option<String>,
    connections: usize,
    seconds: u64,
    routes: Vec<&'static str>,
}

fn options() -> Result<Options, Failure> {
    let mut o = Options {
        url: None,
        service: None,
        connections: 32,
        seconds: 10,
        routes: ROUTES.to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => o.url = Some(value()?),
            "--service" => o.service = Some(value()?),
            "--connections" => o.connections = value()?.parse()?,
            "--seconds" => o.seconds = value()?.parse()?,
            "--routes" => {
                let wanted = value()?;
                o.routes = ROUTES
                    .iter()
                    .copied()
                    .filter(|r| wanted.split(',').any(|w| r.ends_with(w.trim())))
                    .collect();
                if o.routes.is_empty() {
                    return Err(format!("--routes {wanted:?} names none of {ROUTES:?}").into());
                }
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if o.url.is_none() == o.service.is_none() {
        return Err("give either --url <base> or --service <path of the example's binary>".into());
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Failure> {
    let o = options()?;
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    if let Some(url) = &o.url {
        seed(&http, url).await?;
        let phase = load(&http, url, &o).await;
        report("as is", &phase, o.seconds);
        return Ok(());
    }
    let Some(binary) = &o.service else {
        return Ok(());
    };
    let redis = RedisServer::start().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("stayfast-load-{}", std::process::id()));
    // The service's log (its warnings while Redis is frozen) goes to a file, not here.
    let log_path = std::env::temp_dir().join(format!("stayfast-load-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path)?;
    let mut service = tokio::process::Command::new(binary)
        .env("STAYFAST_REDIS__URL", redis.url())
        .env("STAYFAST_TRANSCRIPTS__DIR", &dir)
        .env("SERVICE_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    while get_status(&http, &format!("{url}/health/ready")).await != Some(StatusCode::OK) {
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the service did not become ready within 20 s; see {}",
                log_path.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seed(&http, &url).await?;

    let serving = load(&http, &url, &o).await;
    redis.pause()?;
    let frozen = load(&http, &url, &o).await;
    redis.resume()?;
    println!(
        "{} connections, {} s per phase, routes in turn: {}",
        o.connections,
        o.seconds,
        o.routes.join(", ")
    );
    report("Redis serving", &serving, o.seconds);
    report("Redis frozen (SIGSTOP)", &frozen, o.seconds);

    // SIGTERM: the service's graceful shutdown, then its exit.
    if let Some(pid) = service.id() {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {pid}"))
            .status()?;
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), service.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nthe service's log: {}", log_path.display());
    Ok(())
}

/// One fact for the searches to find.
async fn seed(http: &HttpClient, url: &str) -> Result<(), Failure> {
    let body = r#"{"content":"The shop opens at 9."}"#;
    send(http, Method::POST, &format!("{url}/facts"), Some(body.to_owned())).await?;
    Ok(())
}

async fn get_status(http: &HttpClient, url: &str) -> Option<StatusCode> {
    send(http, Method::GET, url, None).await.ok()
}

async fn send(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: Option<String>,
) -> Result<StatusCode, Failure> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = http.request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// Per route: each request's latency and status (`None`: no HTTP answer).
type Samples = BTreeMap<&'static str, Vec<(Duration, Option<StatusCode>)>>;

async fn load(http: &HttpClient, url: &str, o: &Options) -> Samples {
    let end = Instant::now() + Duration::from_secs(o.seconds);
    let tasks: Vec<_> = (0..o.connections)
        .map(|c| {
            let (http, url, routes) = (http.clone(), url.to_owned(), o.routes.clone());
            tokio::spawn(async move {
                let mut samples = Samples::new();
                let mut n = 0usize;
                while Instant::now() < end {
                    let route = routes[n % routes.len()];
                    let (method, path, body) = match route {
                        "POST /chat" => (
                            Method::POST,
                            format!("/chat/load-{c}"),
                            Some(format!(r#"{{"role":"user","content":"message {n}"}}"#)),
                        ),
                        "GET /chat" => (Method::GET, format!("/chat/load-{c}?limit=20"), None),
                        "GET /facts/search" => (Method::GET, "/facts/search?q=shop".to_owned(), None),
                        _ => (Method::GET, format!("/upstream/key-{}", c % 8), None),
                    };
                    let started = Instant::now();
                    let status = send(&http, method, &format!("{url}{path}"), body).await.ok();
                    samples
                        .entry(route)
                        .or_default()
                        .push((started.elapsed(), status));
                    n += 1;
                }
                samples
            })
        })
        .collect();
    let mut all = Samples::new();
    for task in tasks {
        if let Ok(samples) = task.await {
            for (route, mut s) in samples {
                all.entry(route).or_default().append(&mut s);
            }
        }
    }
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(phase: &str, samples: &Samples, seconds: u64) {
    println!("\n== {phase}");
    println!(
        "{:<18} {:>9} {:>9} {:>9} {:>9}  statuses",
        "route", "req/s", "p50 ms", "p99 ms", "max ms"
    );
    let mut everything = Vec::new();
    let print = |name: &str, list: &[(Duration, Option<StatusCode>)]| {
        let mut times: Vec<Duration> = list.iter().map(|(d, _)| *d).collect();
        times.sort();
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for (_, s) in list {
            let key = s.map_or_else(|| "no answer".to_owned(), |s| s.as_u16().to_string());
            *statuses.entry(key).or_default() += 1;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<18} {:>9.0} {:>9.2} {:>9.2} {:>9.2}  {statuses:?}",
            list.len() as f64 / seconds as f64,
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.99)),
            ms(times.last().copied().unwrap_or_default()),
        );
    };
    for (route, list) in samples {
        print(route, list);
        everything.extend_from_slice(list);
    }
    print("all", &everything);
}
