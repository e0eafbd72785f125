//! In-process paired measurements for the report: the wrappers' overhead on a ready
//! future (against the bare future, the floor, the peer stack and tower's stacks), the
//! blocking-pool offload, and durable file replacement.
//!
//! Unlike criterion, which times one variant after another (so a burst of load from
//! elsewhere on a shared machine lands on whichever variant runs then), every variant
//! here is timed in each round, in an order that rotates round by round, and verdicts
//! are medians (with quartiles) of per-round ratios. The criterion benches
//! (`overhead`, `tower`, `offload`, `files`) remain for one variant's distribution.

use std::{
    convert::Infallible,
    fs::OpenOptions,
    future::Ready,
    hint::black_box,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use stayfast_core::{
    Bulkhead, CallMetrics, CircuitBreaker, Health, Metered, Offload, OffloadConfig, Policy, TimeoutExt,
    config::{BreakerConfig, BulkheadConfig, RetryConfig},
    fs::AtomicFileWrite,
    tower::PolicyLayer,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, limit::ConcurrencyLimit, retry::Retry, service_fn};
use tower_resilience::circuitbreaker::CircuitBreakerLayer;

/// A variant's per-call time (seconds), one figure per round.
#[derive(Clone, Debug)]
pub struct Series {
    /// The variant's name, as the tables and plots show it.
    pub name: &'static str,
    /// What it runs, in a sentence.
    pub description: &'static str,
    /// Seconds per call, one per round.
    pub per_call: Vec<f64>,
}

/// The series of one paired measurement, in the order they were defined.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// One series per variant.
    pub series: Vec<Series>,
}

impl Group {
    /// The variants' `(name, description)`s with their per-call times, in order.
    pub fn of(variants: &[(&'static str, &'static str)], series: Vec<Vec<f64>>) -> Self {
        Self {
            series: variants
                .iter()
                .zip(series)
                .map(|(&(name, description), per_call)| Series {
                    name,
                    description,
                    per_call,
                })
                .collect(),
        }
    }

    /// The series named `name`.
    ///
    /// # Panics
    ///
    /// When there is none: a report naming a variant that was not measured is a bug.
    pub fn get(&self, name: &str) -> &Series {
        self.series
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no series named {name}"))
    }

    /// Per-round ratios of `a`'s time per call to `b`'s.
    pub fn ratio(&self, a: &str, b: &str) -> Vec<f64> {
        crate::stats::ratios(&self.get(a).per_call, &self.get(b).per_call)
    }
}

/// Runs `rounds` rounds of `variants` measurements: `measure(i)` times variant `i` and
/// returns its seconds per call. Round `r` starts at variant `r % variants` and goes
/// round the list, so each variant is timed early in some rounds and late in others.
/// Returns one series per variant.
pub fn rotating_rounds(
    rounds: usize,
    variants: usize,
    mut measure: impl FnMut(usize) -> f64,
) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(rounds); variants];
    for round in 0..rounds {
        for i in 0..variants {
            let index = (round + i) % variants;
            out[index].push(measure(index));
        }
    }
    out
}

/// [`rotating_rounds`] after one discarded call of `measure` per variant: the first
/// timing of a variant pays for its caches, its lazily built state and its metrics'
/// first registration.
pub fn warm_rotating_rounds(
    rounds: usize,
    variants: usize,
    mut measure: impl FnMut(usize) -> f64,
) -> Vec<Vec<f64>> {
    for i in 0..variants {
        let _ = measure(i);
    }
    rotating_rounds(rounds, variants, measure)
}

/// Times `$calls` awaits of `$call` (an expression evaluated afresh each call) in one
/// `block_on` of `$rt`; seconds per call.
macro_rules! per_call {
    ($rt:expr, $calls:expr, $call:expr) => {{
        let calls: usize = $calls;
        $rt.block_on(async {
            let started = Instant::now();
            for _ in 0..calls {
                let _ = black_box($call.await);
            }
            started.elapsed().as_secs_f64() / calls as f64
        })
    }};
}

/// The operation every overhead variant wraps: ready on its first poll.
pub async fn ready() -> Result<u64, io::Error> {
    Ok(black_box(1))
}

/// The service every tower variant wraps: answers at once.
async fn answer(request: u64) -> Result<u64, io::Error> {
    Ok(black_box(request))
}

/// One call through the peers' equivalent of a full policy: backon retry → failsafe
/// breaker → tokio timeout → `metrics` macros with labels evaluated per call. True when
/// it succeeded.
pub async fn peer_stack_call(breaker: &impl failsafe::futures::CircuitBreaker) -> bool {
    let started = tokio::time::Instant::now();
    let result = (|| async {
        breaker
            .call(async {
                match tokio::time::timeout(Duration::from_secs(1), ready()).await {
                    Ok(result) => result,
                    Err(elapsed) => Err(io::Error::new(io::ErrorKind::TimedOut, elapsed)),
                }
            })
            .await
    })
    .retry(ExponentialBuilder::default().with_jitter())
    .await;
    metrics::histogram!("peer_call_duration_seconds", "operation" => "bench", "target" => "bench")
        .record(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "failure" };
    metrics::counter!("peer_calls_total", "operation" => "bench", "target" => "bench", "outcome" => outcome)
        .increment(1);
    result.is_ok()
}

/// A policy with every feature: 1 s timeout, 5 s deadline, the default retry (with its
/// budget), a breaker, and metrics unless `metrics` is false; a bulkhead if given.
///
/// # Panics
///
/// When the default configuration does not build (a bug).
pub fn full_policy(operation: &str, bulkhead: Option<Bulkhead>, metrics: bool) -> Policy {
    let breaker = CircuitBreaker::new("bench", &BreakerConfig::default()).expect("build a breaker");
    let mut builder = Policy::builder(operation.to_owned())
        .timeout(Duration::from_secs(1))
        .deadline(Duration::from_secs(5))
        .retry(&RetryConfig::default())
        .idempotent(true)
        .breaker(breaker);
    if let Some(bulkhead) = bulkhead {
        builder = builder.bulkhead(bulkhead);
    }
    if !metrics {
        builder = builder.without_metrics();
    }
    builder.build().expect("build a policy")
}

/// The stayfast wrappers the overhead variants time, built once, after the recorder is
/// installed (so their metric handles are the recorder's): one definition for the report
/// and the `overhead` criterion bench, so both time the same things.
pub struct Subjects {
    /// `Metered`'s handles.
    pub metrics: CallMetrics,
    /// A closed breaker.
    pub breaker: CircuitBreaker,
    /// A bulkhead with room.
    pub bulkhead: Bulkhead,
    /// [`full_policy`] with metrics.
    pub policy: Policy,
    /// The same with a bulkhead.
    pub policy_bulkhead: Policy,
    /// The floor's duration histogram.
    pub floor_duration: metrics::Histogram,
    /// The floor's call counter.
    pub floor_calls: metrics::Counter,
}

impl Subjects {
    /// Builds them; install the recorder first.
    pub fn new() -> Self {
        let bulkhead = || Bulkhead::new("bench", &BulkheadConfig::default()).expect("build a bulkhead");
        Self {
            metrics: CallMetrics::new("bench.metered", "bench"),
            breaker: CircuitBreaker::new("bench", &BreakerConfig::default()).expect("build a breaker"),
            bulkhead: bulkhead(),
            policy: full_policy("bench.policy", None, true),
            policy_bulkhead: full_policy("bench.policy_bulkhead", Some(bulkhead()), true),
            floor_duration: metrics::histogram!(
                "floor_call_duration_seconds", "operation" => "bench", "target" => "bench"
            ),
            floor_calls: metrics::counter!(
                "floor_calls_total", "operation" => "bench", "target" => "bench", "outcome" => "success"
            ),
        }
    }
}

impl std::fmt::Debug for Subjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subjects")
            .field("policy", &self.policy)
            .field("policy_bulkhead", &self.policy_bulkhead)
            .finish_non_exhaustive()
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new()
    }
}

/// Tower's timeout + retry (3 attempts) + concurrency limit around `service`: the
/// stack `Policy` with metrics off is held against.
pub fn tower_stack<S>(service: S) -> ConcurrencyLimit<Retry<Attempts, tower::timeout::Timeout<S>>> {
    ServiceBuilder::new()
        .concurrency_limit(1024)
        .retry(Attempts(1))
        .timeout(Duration::from_secs(1))
        .service(service)
}

/// The same with tower-resilience's breaker (defaults) between the retry and the
/// timeout: the closest tower stack to the full `Policy`.
pub fn tower_full_stack<S>(
    service: S,
) -> ConcurrencyLimit<
    Retry<
        Attempts,
        tower_resilience::circuitbreaker::CircuitBreaker<
            tower::timeout::Timeout<S>,
            tower_resilience::circuitbreaker::DefaultClassifier,
        >,
    >,
> {
    let breaker = CircuitBreakerLayer::builder()
        .build()
        .expect("build tower-resilience's breaker");
    ServiceBuilder::new()
        .concurrency_limit(1024)
        .retry(Attempts(1))
        .layer(breaker)
        .timeout(Duration::from_secs(1))
        .service(service)
}

/// The policy the offload variants run a trivial closure under: a 1 s timeout,
/// idempotent.
pub fn offload_policy() -> Policy {
    Policy::builder("bench.offload")
        .timeout(Duration::from_secs(1))
        .idempotent(true)
        .build()
        .expect("build a policy")
}

/// The durable-write wrapper the file variants use (a 30 s bound per write), its
/// blocking work on `rt`.
pub fn file_writer(rt: &tokio::runtime::Runtime) -> AtomicFileWrite {
    let _guard = rt.enter();
    AtomicFileWrite::new(
        Policy::builder("fs.write")
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a policy"),
    )
}

/// Retries an error up to 3 attempts in all, like the stayfast policy's default.
#[derive(Clone, Debug)]
pub struct Attempts(pub u32);

impl<E> tower::retry::Policy<u64, u64, E> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        if result.is_ok() || self.0 >= 3 {
            return None;
        }
        self.0 += 1;
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        Some(*request)
    }
}

/// One call through `service` as a tower stack makes it: ready, then call.
async fn tower_call<S: Service<u64>>(service: &mut S) -> Option<S::Response> {
    service.ready().await.ok()?.call(black_box(7)).await.ok()
}

/// The overhead variants, in the order the report lists them: `(name, description)`.
pub const OVERHEAD_VARIANTS: [(&str, &str); 15] = [
    ("bare", "the ready future alone"),
    ("tokio_timeout", "`tokio::time::timeout(1 s)` around it"),
    ("stayfast_timeout", "stayfast's `.timeout(1 s)`"),
    (
        "stayfast_metered",
        "`Metered` (duration histogram + outcome counter, cached handles)",
    ),
    (
        "stayfast_breaker",
        "a closed `CircuitBreaker` permit, recorded as a success",
    ),
    ("stayfast_bulkhead", "a `Bulkhead` slot"),
    (
        "floor",
        "what any metered call must cost: two clock reads, one histogram record, one counter increment",
    ),
    (
        "policy_full",
        "`Policy`: timeout, deadline, retry + budget, breaker, metrics",
    ),
    ("policy_full_bulkhead", "the same `Policy` with a bulkhead"),
    (
        "peer_stack",
        "backon retry → failsafe breaker → tokio timeout → `metrics` macros with per-call labels",
    ),
    (
        "bare_service",
        "a tower `service_fn` answering at once, `ready` then `call`",
    ),
    (
        "policy_no_metrics",
        "the full `Policy` with metrics off, called directly",
    ),
    (
        "layer_no_metrics",
        "that policy as a `PolicyLayer` around the service",
    ),
    (
        "tower_stack",
        "tower: concurrency limit → retry (3 attempts) → timeout",
    ),
    (
        "tower_full_stack",
        "tower: concurrency limit → retry → tower-resilience breaker → timeout",
    ),
];

/// Every overhead variant timed over `calls` calls per round, `rounds` paired rounds, on
/// a current-thread runtime. Install the Prometheus recorder first: everything metered
/// here is built after it, as in a service.
///
/// # Panics
///
/// When a runtime or a stack cannot be built.
pub fn overhead(calls: usize, rounds: usize) -> Group {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build a current-thread runtime");
    let subjects = Subjects::new();
    let quiet = full_policy("bench.quiet", None, false);
    let peer_breaker = failsafe::Config::new().build();
    let mut bare_service = service_fn(answer);
    let mut layered = PolicyLayer::new(full_policy("bench.layer", None, false)).layer(service_fn(answer));
    let mut tower_stack = tower_stack(service_fn(answer));
    let mut tower_full_stack = tower_full_stack(service_fn(answer));

    let peer_call = || peer_stack_call(&peer_breaker);

    let series = warm_rotating_rounds(rounds, OVERHEAD_VARIANTS.len(), |i| match i {
        0 => per_call!(rt, calls, ready()),
        1 => per_call!(rt, calls, tokio::time::timeout(Duration::from_secs(1), ready())),
        2 => per_call!(rt, calls, ready().timeout(Duration::from_secs(1))),
        3 => per_call!(rt, calls, Metered::new(ready(), subjects.metrics.clone())),
        4 => per_call!(rt, calls, async {
            let permit = subjects.breaker.try_acquire().expect("the breaker is closed");
            let result = ready().await;
            permit.record(Health::Success);
            result
        }),
        5 => per_call!(rt, calls, async {
            let _slot = subjects.bulkhead.acquire().await.expect("a free slot");
            ready().await
        }),
        6 => per_call!(rt, calls, async {
            let started = tokio::time::Instant::now();
            let result = ready().await;
            subjects.floor_duration.record(started.elapsed().as_secs_f64());
            subjects.floor_calls.increment(1);
            result
        }),
        7 => per_call!(rt, calls, subjects.policy.call(ready)),
        8 => per_call!(rt, calls, subjects.policy_bulkhead.call(ready)),
        9 => per_call!(rt, calls, peer_call()),
        10 => per_call!(rt, calls, tower_call(&mut bare_service)),
        11 => per_call!(rt, calls, quiet.call(|| answer(black_box(7)))),
        12 => per_call!(rt, calls, tower_call(&mut layered)),
        13 => per_call!(rt, calls, tower_call(&mut tower_stack)),
        _ => per_call!(rt, calls, tower_call(&mut tower_full_stack)),
    });
    Group::of(&OVERHEAD_VARIANTS, series)
}

/// The blocking work offloaded: as little as possible, so the hop and the wrapper are
/// measured.
fn trivial() -> u64 {
    black_box(1)
}

/// The offload variants: `(name, description)`.
pub const OFFLOAD_VARIANTS: [(&str, &str); 3] = [
    ("bare", "`tokio::time::timeout(1 s, spawn_blocking(f))`"),
    (
        "stayfast_offload",
        "`Offload::run` under a policy with a 1 s timeout and metrics",
    ),
    (
        "stayfast_offload_full",
        "the same with a breaker, retry and a deadline",
    ),
];

/// A trivial closure offloaded to the blocking pool, bare and through stayfast's
/// `Offload`, on a current-thread runtime: `calls` per round, `rounds` paired rounds.
///
/// # Panics
///
/// When a runtime or the offload cannot be built.
pub fn offload(calls: usize, rounds: usize) -> Group {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build a current-thread runtime");
    let offload = Offload::new("bench", &OffloadConfig::default()).expect("build an offload");
    let policy = offload_policy();
    let full = full_policy("bench.offload_full", None, true);
    let series = warm_rotating_rounds(rounds, OFFLOAD_VARIANTS.len(), |i| match i {
        0 => per_call!(
            rt,
            calls,
            tokio::time::timeout(Duration::from_secs(1), tokio::task::spawn_blocking(trivial))
        ),
        1 => per_call!(rt, calls, offload.run(&policy, || Ok::<_, Infallible>(trivial()))),
        _ => per_call!(rt, calls, offload.run(&full, || Ok::<_, Infallible>(trivial()))),
    });
    Group::of(&OFFLOAD_VARIANTS, series)
}

/// The bytes each file variant writes.
pub const PAYLOAD: usize = 4096;

/// A fresh temporary file name in `dir`.
pub fn temp_name(dir: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(".bench-{:016x}.tmp", N.fetch_add(1, Ordering::Relaxed)))
}

/// The durable sequence, hand-written, for one `spawn_blocking`.
///
/// # Errors
///
/// The first failing step's.
pub fn one_hop(dir: &Path, target: &Path, data: &[u8]) -> io::Result<()> {
    let temp = temp_name(dir);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, target)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The one-hop sequence with the checks `AtomicFileWrite` makes: the directory's
/// identity (`stat`), the target's mode and type (`lstat`), the exact mode (`fchmod`).
///
/// # Errors
///
/// The first failing step's.
pub fn one_hop_same_guarantees(dir: &Path, target: &Path, data: &[u8]) -> io::Result<()> {
    let _identity = std::fs::metadata(dir)?;
    let mode = match std::fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_file() => m.permissions().mode() & 0o7777,
        _ => 0o600,
    };
    let temp = temp_name(dir);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, target)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The same sequence as six `tokio::fs` calls: six blocking-pool hops.
///
/// # Errors
///
/// The first failing step's.
pub async fn six_calls(dir: &Path, target: &Path, data: &[u8]) -> io::Result<()> {
    let temp = temp_name(dir);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, data).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&temp, target).await?;
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// The file variants: `(name, description)`.
pub const FILE_VARIANTS: [(&str, &str); 5] = [
    (
        "stayfast_atomic_write",
        "stayfast's `AtomicFileWrite` (temp file, fsync, rename, directory fsync)",
    ),
    (
        "hand_written_one_hop",
        "the same sequence hand-written in one `spawn_blocking`",
    ),
    (
        "hand_written_same_guarantees",
        "that, plus the checks `AtomicFileWrite` makes (directory identity, target mode, fchmod)",
    ),
    (
        "tokio_fs_six_calls",
        "the same sequence as six `tokio::fs` calls (six hops)",
    ),
    (
        "tokio_fs_write_not_durable",
        "`tokio::fs::write` (no fsync: not durable)",
    ),
];

/// Durable replacement of a 4 KiB file in `dir` (created, and removed afterwards),
/// each variant `calls` times per round, `rounds` paired rounds, on a one-worker
/// runtime.
///
/// # Errors
///
/// When `dir` cannot be created or a write fails.
///
/// # Panics
///
/// When a runtime or the writer cannot be built.
pub fn files(dir: &Path, calls: usize, rounds: usize) -> io::Result<Group> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let data: Arc<[u8]> = vec![b'x'; PAYLOAD].into();
    let writer = file_writer(&rt);
    std::fs::create_dir_all(dir)?;
    let target = dir.join("state.bin");
    let mut failure: Option<io::Error> = None;
    let mut check = |result: io::Result<()>| {
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
    };
    let series = warm_rotating_rounds(rounds, FILE_VARIANTS.len(), |i| {
        let started = Instant::now();
        rt.block_on(async {
            for _ in 0..calls {
                let result = match i {
                    0 => writer
                        .write(target.clone(), data.clone())
                        .await
                        .map_err(io::Error::other),
                    1 => {
                        let (d, t, b) = (dir.to_owned(), target.clone(), data.clone());
                        tokio::task::spawn_blocking(move || one_hop(&d, &t, &b))
                            .await
                            .map_err(io::Error::other)
                            .and_then(|r| r)
                    }
                    2 => {
                        let (d, t, b) = (dir.to_owned(), target.clone(), data.clone());
                        tokio::task::spawn_blocking(move || one_hop_same_guarantees(&d, &t, &b))
                            .await
                            .map_err(io::Error::other)
                            .and_then(|r| r)
                    }
                    3 => six_calls(dir, &target, &data).await,
                    _ => tokio::fs::write(target.clone(), black_box(data.clone())).await,
                };
                check(result);
            }
        });
        started.elapsed().as_secs_f64() / calls as f64
    });
    let _ = std::fs::remove_dir_all(dir);
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Group::of(&FILE_VARIANTS, series))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_their_order() {
        let mut order = Vec::new();
        let series = rotating_rounds(3, 3, |i| {
            order.push(i);
            i as f64
        });
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert_eq!(series, [vec![0.0; 3], vec![1.0; 3], vec![2.0; 3]]);
    }
}
