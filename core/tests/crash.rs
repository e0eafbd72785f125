//! Crash loops (`docs/testing.md`): a child process writes in a loop and is killed with
//! SIGKILL at random moments; the parent then checks what is left on disk.
//!
//! # The child-process harness
//!
//! The child is this very test binary, re-executed with
//! `--exact crash_child_entry --nocapture --test-threads=1` and two environment
//! variables: [`CHILD_MODE_ENV`] (what to do) and [`CHILD_DIR_ENV`] (where).
//! [`crash_child_entry`] returns at once when the mode variable is unset, so in a normal
//! `cargo test` run it is an empty test.
//!
//! The child speaks a line protocol on stdout; every protocol line starts with
//! [`MARKER`] (libtest may print `test crash_child_entry ... ` on the same line first):
//!
//! - `ack N` after write N returned `Ok` (N = 1, 2, 3…), flushed at once;
//! - `ready` right after the first ack.
//!
//! The parent side is [`spawn_child`] → [`kill_after_ready`], which waits for `ready`
//! (at most [`READY_TIMEOUT`]), sleeps a given offset measured from `ready`, sends
//! SIGKILL, reaps the child and returns every ack printed before the kill. A test adds
//! a child mode (a match arm in [`crash_child_entry`]) and its own on-disk check.
//!
//! Knobs: `STAYFAST_CRASH_ITERATIONS` (kills per test, default 300) and
//! `STAYFAST_CRASH_SEED` (the kill offsets; printed on every run).
#![allow(clippy::unwrap_used)]

use std::{
    env,
    ffi::OsStr,
    fs,
    io::{self, BufRead, BufReader, Write},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

mod support;

use stayfast_core::{
    Policy,
    fs::{AtomicFileWrite, DurableAppend, LogReader},
};
use support::XorShift;

// ---------------------------------------------------------------------------------------
// Harness: child entry, spawning, killing.
// ---------------------------------------------------------------------------------------

/// Selects the child's mode; unset in the parent, so [`crash_child_entry`] is a no-op.
const CHILD_MODE_ENV: &str = "STAYFAST_CRASH_CHILD_MODE";
/// The directory the child writes in.
const CHILD_DIR_ENV: &str = "STAYFAST_CRASH_CHILD_DIR";
/// Name of the `#[test]` the child runs (with `--exact`).
const CHILD_ENTRY: &str = "crash_child_entry";
/// Starts every protocol line the child prints.
const MARKER: &str = "sf-crash: ";
/// How long the parent waits for `ready` (and, after the kill, for the pipe's EOF).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A child still running after this long exits by itself: a guard against orphans.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(120);

/// Child mode: successive versions through [`AtomicFileWrite`].
const MODE_REPLACE: &str = "replace";
/// Child mode: successive versions written in place, naively (the checker's self-test).
const MODE_NAIVE: &str = "naive-replace";
/// Child mode: records 1, 2, 3… appended through [`DurableAppend`].
const MODE_APPEND: &str = "append";
/// Child mode: records appended in 64-byte pieces, naively (the append self-test).
const MODE_NAIVE_APPEND: &str = "naive-append";
/// The log the append modes write.
const LOG: &str = "t.jsonl";

/// The file the replace modes write.
const TARGET: &str = "state.bin";

/// The child's entry point: does nothing unless [`CHILD_MODE_ENV`] is set; otherwise
/// runs that mode's write loop until it is killed (it never returns).
#[test]
fn crash_child_entry() {
    let Ok(mode) = env::var(CHILD_MODE_ENV) else {
        return;
    };
    let dir = PathBuf::from(env::var_os(CHILD_DIR_ENV).expect("STAYFAST_CRASH_CHILD_DIR is set"));
    // Start protocol output on a line of its own, after libtest's `test … ... `.
    emit_raw("\n");
    match mode.as_str() {
        MODE_REPLACE => child_replace(&dir),
        MODE_NAIVE => child_naive(&dir),
        MODE_APPEND => child_append(&dir),
        MODE_NAIVE_APPEND => child_naive_append(&dir),
        other => panic!("unknown {CHILD_MODE_ENV}={other:?}"),
    }
}

/// Child side: prints one protocol line (`ack 3`, `ready`) in one `write` and flushes.
/// The parent gone (EPIPE) or the child too old, the child exits instead.
fn emit(line: &str) {
    emit_raw(&format!("{MARKER}{line}\n"));
}

fn emit_raw(text: &str) {
    let mut out = io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        std::process::exit(3); // the parent closed the pipe: nobody is listening
    }
}

/// Child side: prints `ack n`, and `ready` after the first; exits when too old.
fn acknowledge(n: u64, started: Instant) {
    emit(&format!("ack {n}"));
    if n == 1 {
        emit("ready");
    }
    if started.elapsed() > CHILD_MAX_LIFETIME {
        std::process::exit(4);
    }
}

/// Parent side: re-executes this test binary as a child in `mode`, writing in `dir`,
/// with stdout piped (the protocol) and stderr inherited (a child's panic shows up in
/// the test output).
fn spawn_child(mode: &str, dir: &Path) -> Child {
    let exe = env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args(["--exact", CHILD_ENTRY, "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE_ENV, mode)
        .env(CHILD_DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child test binary")
}

/// What the parent saw of one child it killed with SIGKILL.
#[derive(Debug)]
struct Killed {
    /// Every `ack n` the child printed before it died, in order (checked to be 1, 2, 3…).
    acks: Vec<u64>,
    /// From `ready` being read to SIGKILL being sent (the requested offset plus latency).
    after_ready: Duration,
}

impl Killed {
    fn last_ack(&self) -> Option<u64> {
        self.acks.last().copied()
    }
}

/// One line of the child's stdout, stamped when the reader thread got it.
enum Line {
    Text(Instant, String),
    Eof,
}

/// Parent side: reads the child's protocol until `ready` (failing after
/// [`READY_TIMEOUT`]), sleeps `offset` measured from the moment `ready` was read, sends
/// SIGKILL (`Child::kill`), reaps the child and reads its stdout to EOF.
///
/// # Errors
///
/// A description (with the child's non-protocol output) when the child never printed
/// `ready`, died by itself instead of by the SIGKILL, or broke the protocol. The child
/// is killed and reaped on every path.
fn kill_after_ready(mut child: Child, offset: Duration) -> Result<Killed, String> {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdout.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf).trim_end_matches('\n').to_owned();
                    if tx.send(Line::Text(Instant::now(), text)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Line::Eof);
    });

    let mut acks = Vec::new();
    let mut other = Vec::new();
    let mut ready_at = None;
    let mut eof = false;
    let wait_until = Instant::now() + READY_TIMEOUT;
    while ready_at.is_none() && !eof {
        let left = wait_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Line::Text(at, text)) => match parse_line(&text) {
                Some(Proto::Ready) => ready_at = Some(at),
                Some(Proto::Ack(n)) => acks.push(n),
                None => other.push(text),
            },
            Ok(Line::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => eof = true,
            Err(mpsc::RecvTimeoutError::Timeout) => break,
        }
    }
    let after_ready = match ready_at {
        Some(at) => {
            thread::sleep((at + offset).saturating_duration_since(Instant::now()));
            at.elapsed()
        }
        None => Duration::ZERO,
    };
    let _ = child.kill(); // SIGKILL on Unix; harmless if the child already exited
    let status = child.wait().map_err(|e| format!("waiting for the child: {e}"))?;

    // Everything the child printed before it died is in the pipe: read it to EOF.
    let drain_until = Instant::now() + READY_TIMEOUT;
    while !eof {
        let left = drain_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Line::Text(_, text)) => match parse_line(&text) {
                Some(Proto::Ack(n)) => acks.push(n),
                Some(Proto::Ready) => other.push(text), // a second `ready`: reported below
                None => other.push(text),
            },
            Ok(Line::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => eof = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err("the child's stdout did not reach EOF after SIGKILL".into());
            }
        }
    }
    let _ = reader.join();

    let context = || format!("status {status}; acks {acks:?}; other output {other:?}");
    if ready_at.is_none() {
        return Err(format!(
            "the child never printed `ready` within {READY_TIMEOUT:?}; {}",
            context()
        ));
    }
    if status.signal() != Some(9) {
        return Err(format!("the child died by itself, not by SIGKILL; {}", context()));
    }
    if acks.iter().zip(1..).any(|(&n, expected)| n != expected) {
        return Err(format!("acks are not 1, 2, 3…; {}", context()));
    }
    if other.iter().any(|l| l.contains(MARKER)) {
        return Err(format!("unexpected protocol line; {}", context()));
    }
    Ok(Killed { acks, after_ready })
}

/// A protocol line.
#[derive(Debug, PartialEq, Eq)]
enum Proto {
    Ack(u64),
    Ready,
}

/// The protocol message in `line`, if any (anything before [`MARKER`] is ignored).
fn parse_line(line: &str) -> Option<Proto> {
    let (_, msg) = line.split_once(MARKER)?;
    match msg.split_once(' ') {
        Some(("ack", n)) => n.parse().ok().map(Proto::Ack),
        None if msg == "ready" => Some(Proto::Ready),
        _ => None,
    }
}

/// A fresh, empty directory for one child: on tmpfs (`/dev/shm`) when there is one,
/// else in the temp dir; named after the test process's pid, `tag` and a counter.
fn crash_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        env::temp_dir()
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("stayfast-crash-{}-{tag}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap();
    dir
}

/// `STAYFAST_CRASH_ITERATIONS`, else `default`.
fn iterations(default: usize) -> usize {
    match env::var("STAYFAST_CRASH_ITERATIONS") {
        Ok(v) => v.trim().parse().expect("STAYFAST_CRASH_ITERATIONS is a number"),
        Err(_) => default,
    }
}

/// `STAYFAST_CRASH_SEED`, else one derived from the clock and pid.
fn seed() -> u64 {
    match env::var("STAYFAST_CRASH_SEED") {
        Ok(v) => v.trim().parse().expect("STAYFAST_CRASH_SEED is a u64"),
        Err(_) => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            (nanos as u64) ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// Histogram of acks per kill, in buckets 0, 1, 2–4, 5–9, 10–49, 50+.
#[derive(Debug, Default)]
struct AckHistogram([usize; 6]);

impl AckHistogram {
    const LABELS: [&'static str; 6] = ["0", "1", "2-4", "5-9", "10-49", "50+"];

    fn add(&mut self, acks: usize) {
        let bucket = match acks {
            0 => 0,
            1 => 1,
            2..=4 => 2,
            5..=9 => 3,
            10..=49 => 4,
            _ => 5,
        };
        self.0[bucket] += 1;
    }

    fn with_at_least_one(&self) -> usize {
        self.0[1..].iter().sum()
    }
}

impl std::fmt::Display for AckHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (label, count) in Self::LABELS.iter().zip(self.0) {
            write!(f, "[{label}: {count}] ")?;
        }
        Ok(())
    }
}

/// True for the crate's temp-file names: `.sf-` + 16 hex digits + `.tmp`.
fn is_crate_temp(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    let Some(hex) = name.strip_prefix(".sf-").and_then(|r| r.strip_suffix(".tmp")) else {
        return false;
    };
    hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// Self-checking versions.
// ---------------------------------------------------------------------------------------

/// Version `n`'s bytes: `v{n}\n`, a body of 8–64 KiB of xorshift words seeded by `n`,
/// and a trailer `\nend v{n} len {bytes before the trailer} sum {FNV-style hash of the
/// body's 64-bit words}\n`. A prefix, an empty file or a mix of two versions never
/// equals any version.
fn version_bytes(n: u64) -> Vec<u8> {
    let mut rng = XorShift::new(n);
    let words = (8 * 1024 + rng.up_to(56 * 1024) as usize) / 8;
    let header = format!("v{n}\n");
    let body_end = header.len() + words * 8;
    let mut out = Vec::with_capacity(body_end + 64);
    out.extend_from_slice(header.as_bytes());
    out.resize(body_end, 0);
    let mut sum = 0xcbf2_9ce4_8422_2325_u64;
    for word in out[header.len()..].chunks_exact_mut(8) {
        let w = rng.next_u64();
        word.copy_from_slice(&w.to_le_bytes());
        sum = (sum ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }
    out.extend_from_slice(format!("\nend v{n} len {body_end} sum {sum:016x}\n").as_bytes());
    out
}

/// The version `bytes` is exactly, or why it is none (torn, empty, garbage).
fn parse_version(bytes: &[u8]) -> Result<u64, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let header_end = bytes.iter().take(24).position(|&b| b == b'\n');
    let n = header_end
        .and_then(|end| std::str::from_utf8(&bytes[..end]).ok())
        .and_then(|h| h.strip_prefix('v'))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("no `v<n>` header ({} bytes)", bytes.len()))?;
    let expected = version_bytes(n);
    if bytes == expected.as_slice() {
        return Ok(n);
    }
    let first_diff = bytes
        .iter()
        .zip(&expected)
        .position(|(a, b)| a != b)
        .unwrap_or(bytes.len().min(expected.len()));
    Err(format!(
        "torn v{n}: {} bytes, expected {}, first difference at byte {first_diff}",
        bytes.len(),
        expected.len()
    ))
}

// ---------------------------------------------------------------------------------------
// Child modes.
// ---------------------------------------------------------------------------------------

/// Child: versions 1, 2, 3… through `AtomicFileWrite` on a current-thread runtime.
fn child_replace(dir: &Path) -> ! {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let policy = Policy::builder("crash.replace")
        .timeout(Duration::from_secs(5))
        .without_metrics()
        .build()
        .unwrap();
    let writer = AtomicFileWrite::new(policy);
    let target = dir.join(TARGET);
    rt.block_on(async {
        for n in 1.. {
            let contents = version_bytes(n);
            if let Err(e) = writer.write(target.clone(), contents).await {
                panic!("child write v{n} failed: {e}");
            }
            acknowledge(n, started);
        }
    });
    unreachable!("the write loop is endless")
}

/// Child: the naive writer — truncate in place, then produce the content and write it
/// in 4 KiB chunks; no temp, no fsync. Its torn files prove the checker sees tearing.
fn child_naive(dir: &Path) -> ! {
    /// Small chunks widen the window in which the file is truncated or partial.
    const CHUNK: usize = 4 * 1024;
    let started = Instant::now();
    let target = dir.join(TARGET);
    for n in 1.. {
        // As naive code does (`to_writer(File::create(path)?)`): truncate first, then
        // produce the content and write it out.
        let mut file = fs::File::create(&target).unwrap();
        let contents = version_bytes(n);
        for chunk in contents.chunks(CHUNK) {
            file.write_all(chunk).unwrap();
        }
        drop(file);
        acknowledge(n, started);
    }
    unreachable!("the write loop is endless")
}

// ---------------------------------------------------------------------------------------
// The replace crash loop.
// ---------------------------------------------------------------------------------------

/// What one kill left in a replace-mode directory.
#[derive(Debug)]
struct ReplaceState {
    /// The complete version found at the target.
    version: Option<u64>,
    /// Crate temp files left by the kill (all removed by the sweep).
    temps: usize,
}

/// Checks a replace-mode directory after a kill: the target absent (only if nothing
/// was acked) or exactly one complete version equal to the last ack or the next one;
/// other entries only crate temps; after `sweep_stale_temps(dir, 0)`, only the target.
fn check_replace(
    dir: &Path,
    last_ack: Option<u64>,
    rt: &tokio::runtime::Runtime,
    writer: &AtomicFileWrite,
) -> Result<ReplaceState, String> {
    let names = list(dir);
    let strangers: Vec<_> = names
        .iter()
        .filter(|n| *n != TARGET && !is_crate_temp(OsStr::new(n)))
        .collect();
    if !strangers.is_empty() {
        return Err(format!(
            "files other than the target and crate temps: {strangers:?}"
        ));
    }
    let temps = names.iter().filter(|n| *n != TARGET).count();
    let version = match fs::read(dir.join(TARGET)) {
        Ok(bytes) => Some(parse_version(&bytes)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading the target: {e}")),
    };
    match (version, last_ack) {
        (None, None) => {}
        (None, Some(a)) => return Err(format!("target absent although v{a} was acked")),
        (Some(v), a) => {
            let a = a.unwrap_or(0);
            if v != a && v != a + 1 {
                return Err(format!(
                    "found v{v}, but the last ack was {a} (expected {a} or {})",
                    a + 1
                ));
            }
        }
    }
    let removed = rt
        .block_on(writer.sweep_stale_temps(dir, Duration::ZERO))
        .map_err(|e| format!("sweep failed: {e}"))?;
    let after = list(dir);
    let expected: Vec<String> = version.iter().map(|_| TARGET.to_owned()).collect();
    if after != expected || removed != temps {
        return Err(format!(
            "after the sweep (removed {removed} of {temps} temps) the dir holds {after:?}, expected {expected:?}"
        ));
    }
    Ok(ReplaceState { version, temps })
}

/// Totals of one kill loop.
#[derive(Debug, Default)]
struct LoopReport {
    kills: usize,
    histogram: AckHistogram,
    /// `(iteration, offset, what was wrong)` for every kill whose check failed.
    failures: Vec<(usize, Duration, String)>,
    /// Kills that found the last acked version / the one after it.
    at_last_ack: usize,
    at_next: usize,
    /// Kills that left at least one temp file, and how many temps in all.
    runs_with_temps: usize,
    temps: usize,
    /// Sum of ready→kill delays.
    after_ready: Duration,
    elapsed: Duration,
}

impl std::fmt::Display for LoopReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mean_ms = self.after_ready.as_secs_f64() * 1e3 / self.kills.max(1) as f64;
        write!(
            f,
            "{} kills in {:.2?} (mean ready→kill {mean_ms:.1} ms); acks per kill {}; \
             found last ack {} / ack+1 {}; runs leaving temps {} ({} temps); failed checks {}",
            self.kills,
            self.elapsed,
            self.histogram,
            self.at_last_ack,
            self.at_next,
            self.runs_with_temps,
            self.temps,
            self.failures.len()
        )
    }
}

/// Runs `kills` spawn → kill-after-ready → check iterations of a replace-type `mode`.
/// A child that misbehaves (no `ready`, death without SIGKILL) fails the test at once;
/// a failed on-disk check is recorded in the report.
fn replace_kill_loop(mode: &str, kills: usize, rng: &mut XorShift) -> LoopReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let policy = Policy::builder("crash.sweep").without_metrics().build().unwrap();
    let writer = AtomicFileWrite::new(policy);
    let mut report = LoopReport {
        kills,
        ..LoopReport::default()
    };
    let started = Instant::now();
    for i in 0..kills {
        let dir = crash_dir(mode);
        let offset = Duration::from_micros(rng.up_to(40_000));
        let killed = match kill_after_ready(spawn_child(mode, &dir), offset) {
            Ok(killed) => killed,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                panic!("{mode} iteration {i}: {e}");
            }
        };
        report.histogram.add(killed.acks.len());
        report.after_ready += killed.after_ready;
        match check_replace(&dir, killed.last_ack(), &rt, &writer) {
            Ok(state) => {
                if state.version == killed.last_ack() {
                    report.at_last_ack += 1;
                } else {
                    report.at_next += 1;
                }
                report.temps += state.temps;
                report.runs_with_temps += usize::from(state.temps > 0);
            }
            Err(e) => report.failures.push((
                i,
                offset,
                format!(
                    "{e} (last ack {:?}, {:?} after ready)",
                    killed.last_ack(),
                    killed.after_ready
                ),
            )),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
    report.elapsed = started.elapsed();
    report
}

// ---------------------------------------------------------------------------------------
// Append: records through DurableAppend, recovered by LogReader.
// ---------------------------------------------------------------------------------------

/// Record `n`: `{"seq":n,"pad":"…"}` with a pad whose length is a function of `n`, so a
/// reader can tell a complete record from a torn one. Every eighth record is 256 KiB, 64
/// pages (under the reader's 1 MiB cap): the kernel copies a write page by page and stops
/// at a pending SIGKILL, so a kill can tear such a record although it is one `write()`.
fn append_record(n: u64) -> Vec<u8> {
    format!("{{\"seq\":{n},\"pad\":\"{}\"}}", "x".repeat(pad_len(n))).into_bytes()
}

fn pad_len(n: u64) -> usize {
    if n.is_multiple_of(8) {
        256 << 10
    } else {
        100 + (n * 7919 % 1900) as usize
    }
}

/// The sequence number of a complete, well-formed record (checked without building
/// the expected record: the big ones would cost a megabyte each).
fn record_seq(record: &[u8]) -> Option<u64> {
    let rest = record.strip_prefix(b"{\"seq\":")?;
    let comma = rest.iter().position(|b| *b == b',')?;
    let n: u64 = std::str::from_utf8(&rest[..comma]).ok()?.parse().ok()?;
    let pad = rest[comma..].strip_prefix(b",\"pad\":\"")?.strip_suffix(b"\"}")?;
    (pad.len() == pad_len(n) && pad.iter().all(|b| *b == b'x')).then_some(n)
}

/// Child: records 1, 2, 3… through `DurableAppend` (fsync per record).
fn child_append(dir: &Path) -> ! {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let policy = Policy::builder("crash.append")
        .timeout(Duration::from_secs(5))
        .without_metrics()
        .build()
        .unwrap();
    let log = DurableAppend::new(policy);
    let path = dir.join(LOG);
    rt.block_on(async {
        for n in 1.. {
            if let Err(e) = log.append(&path, append_record(n)).await {
                panic!("child append {n} failed: {e}");
            }
            acknowledge(n, started);
        }
    });
    unreachable!("the append loop is endless")
}

/// Child: each record and its newline written in 64-byte pieces, no fsync.
fn child_naive_append(dir: &Path) -> ! {
    let started = Instant::now();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG))
        .unwrap();
    for n in 1.. {
        let mut line = append_record(n);
        line.push(b'\n');
        for piece in line.chunks(64) {
            file.write_all(piece).unwrap();
        }
        acknowledge(n, started);
    }
    unreachable!("the append loop is endless")
}

/// After a kill: the log, recovered by `LogReader`, holds records 1..=k with no gap and
/// no duplicate, k being the last ack or the one after; a second read finds it clean.
fn check_append(
    dir: &Path,
    last_ack: Option<u64>,
    rt: &tokio::runtime::Runtime,
    reader: &LogReader,
) -> Result<bool, String> {
    let path = dir.join(LOG);
    let recovered = rt
        .block_on(reader.read(&path, |r| record_seq(r).is_some()))
        .map_err(|e| format!("log did not load: {e}"))?;
    let seqs: Vec<u64> = recovered
        .records
        .iter()
        .map(|r| record_seq(r).unwrap_or(0))
        .collect();
    let k = seqs.len() as u64;
    if seqs != (1..=k).collect::<Vec<_>>() {
        return Err(format!("records are not 1..={k} in order: {seqs:?}"));
    }
    let a = last_ack.unwrap_or(0);
    if k != a && k != a + 1 {
        return Err(format!("{k} records, but the last ack was {a}"));
    }
    let again = rt
        .block_on(reader.read(&path, |r| record_seq(r).is_some()))
        .map_err(|e| e.to_string())?;
    if again.torn.is_some() || again.records.len() as u64 != k {
        return Err("the repaired log is not clean on a second read".into());
    }
    Ok(recovered.torn.is_some())
}

/// The naive loader: every line must be a complete record, the last one included.
fn check_naive_append(dir: &Path) -> Result<(), String> {
    let bytes = fs::read(dir.join(LOG)).map_err(|e| e.to_string())?;
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        return Err("torn last record".into());
    }
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        record_seq(line).ok_or("an invalid record")?;
    }
    Ok(())
}

/// After each kill, the log loads gap-free up to the last acknowledged record.
#[test]
fn crash_loop_kill9_append() {
    let kills = iterations(300);
    let naive_kills = (kills / 2).max(50);
    let seed = seed() ^ 0xA99E;
    println!("crash_loop_kill9_append: seed {seed}, {kills} kills");
    let mut rng = XorShift::new(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let reader = LogReader::new(Policy::builder("crash.read").without_metrics().build().unwrap());
    let started = Instant::now();
    let mut histogram = AckHistogram::default();
    let (mut failures, mut torn) = (Vec::new(), 0);
    for i in 0..kills {
        let dir = crash_dir(MODE_APPEND);
        let offset = Duration::from_micros(rng.up_to(40_000));
        let killed = kill_after_ready(spawn_child(MODE_APPEND, &dir), offset)
            .unwrap_or_else(|e| panic!("iteration {i}: {e}"));
        histogram.add(killed.acks.len());
        match check_append(&dir, killed.last_ack(), &rt, &reader) {
            Ok(was_torn) => torn += usize::from(was_torn),
            Err(e) => failures.push((i, offset, e)),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
    println!(
        "DurableAppend: {kills} kills in {:?}, acks per kill {histogram}, {torn} torn tails repaired",
        started.elapsed()
    );
    let mut naive_torn = 0;
    for i in 0..naive_kills {
        let dir = crash_dir(MODE_NAIVE_APPEND);
        let offset = Duration::from_micros(rng.up_to(40_000));
        kill_after_ready(spawn_child(MODE_NAIVE_APPEND, &dir), offset)
            .unwrap_or_else(|e| panic!("naive iteration {i}: {e}"));
        naive_torn += usize::from(check_naive_append(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
    println!("naive appender (self-test): torn in {naive_torn} of {naive_kills} kills");
    assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
    let acked = histogram.with_at_least_one();
    assert!(
        acked * 10 >= kills * 9,
        "only {acked} of {kills} kills came after an ack"
    );
    assert!(
        naive_torn > 0,
        "seed {seed}: the naive appender was never caught torn: the kill timing cannot see tearing"
    );
    // The repair path must have been exercised, not only its absence: a kill landed in
    // the middle of a large record's write at least once and the reader cut it.
    assert!(
        torn > 0,
        "seed {seed}: no kill tore a record in {kills} kills: the torn-tail repair went untested"
    );
}

/// After each kill, the file is absent or exactly one complete version (the last
/// acknowledged one or the next), and only the crate's temps are left, then swept.
#[test]
fn crash_loop_kill9_replace() {
    let kills = iterations(300);
    let naive_kills = (kills / 2).max(50);
    let seed = seed();
    println!("crash_loop_kill9_replace: seed {seed} (STAYFAST_CRASH_SEED), {kills} kills");
    let mut rng = XorShift::new(seed);

    let atomic = replace_kill_loop(MODE_REPLACE, kills, &mut rng);
    println!("AtomicFileWrite: {atomic}");
    let naive = replace_kill_loop(MODE_NAIVE, naive_kills, &mut rng);
    println!("naive in-place writer (self-test): {naive}");
    let empty = naive
        .failures
        .iter()
        .filter(|f| f.2.starts_with("empty file"))
        .count();
    let partial = naive.failures.iter().filter(|f| f.2.starts_with("torn")).count();
    println!(
        "  naive torn in {} of {naive_kills} kills: {empty} empty, {partial} partial, {} other",
        naive.failures.len(),
        naive.failures.len() - empty - partial
    );
    for (i, offset, e) in naive.failures.iter().take(3) {
        println!("  naive example: iteration {i}, offset {offset:?}: {e}");
    }

    assert!(
        atomic.failures.is_empty(),
        "seed {seed}: {} of {kills} kills left a bad state, first ones: {:#?}",
        atomic.failures.len(),
        &atomic.failures[..atomic.failures.len().min(10)]
    );
    let acked = atomic.histogram.with_at_least_one();
    assert!(
        acked * 10 >= kills * 9,
        "seed {seed}: only {acked} of {kills} kills came after at least one ack"
    );
    assert!(
        !naive.failures.is_empty(),
        "seed {seed}: the naive writer survived all {naive_kills} kills: the checker cannot see tearing"
    );
}

#[test]
fn version_checker_rejects_prefixes_and_mixes() {
    for n in [1, 2, 77, 1_000_003] {
        let v = version_bytes(n);
        assert!((8 * 1024..=64 * 1024 + 100).contains(&v.len()), "{}", v.len());
        assert_eq!(parse_version(&v), Ok(n));
        for cut in [0, 1, 3, v.len() / 2, v.len() - 1] {
            assert!(parse_version(&v[..cut]).is_err(), "v{n} cut at {cut}");
        }
        // A mix: the start of v(n), the rest of v(n+1), cut after the headers.
        let w = version_bytes(n + 1);
        let k = v.len().min(w.len()) / 2;
        let mix: Vec<u8> = v[..k].iter().chain(&w[k..]).copied().collect();
        assert!(parse_version(&mix).is_err(), "mix of v{n} and v{}", n + 1);
    }
    assert_eq!(
        parse_line("test crash_child_entry ... sf-crash: ack 12"),
        Some(Proto::Ack(12))
    );
    assert_eq!(parse_line("sf-crash: ready"), Some(Proto::Ready));
    assert_eq!(parse_line("running 1 test"), None);
    assert!(is_crate_temp(OsStr::new(".sf-0123456789abcdef.tmp")));
    assert!(!is_crate_temp(OsStr::new(".sf-0123456789abcdeg.tmp")));
    assert!(!is_crate_temp(OsStr::new("x.sf-0123456789abcdef.tmp")));
}
