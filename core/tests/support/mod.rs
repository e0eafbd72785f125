//! Shared test helpers: a fake dependency error covering every row of the
//! classification table (`Classify`), small policy/breaker constructors, a seeded
//! generator, counters read back from a debugging recorder, and (with `redis`) the
//! real-server tests' handle config.
#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "redis")]
pub mod redis;

use std::{fmt, time::Duration};

use stayfast_core::{CircuitBreaker, Classify, Verdict, config::BreakerConfig};

/// The error kinds a Redis-like dependency returns, one per row of the classification
/// table: transient (retry if idempotent, a breaker failure), indeterminate (the command
/// may have run), permanent (no retry, a failure), the caller's error (no retry, ignored
/// by the breaker), an expected answer (a success), and retry-after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fake {
    ConnectionRefused,
    ConnectionReset,
    Loading,
    Busy,
    TryAgain,
    NoAuth,
    WrongPass,
    NoPerm,
    Oom,
    WrongType,
    NotFound,
    BadArgument,
    /// A BLPOP whose own timeout passed with a nil reply: an answer, not a failure.
    NilTimeout,
    /// The server asked to be retried after this many milliseconds.
    RetryAfterMs(u64),
}

impl fmt::Display for Fake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Fake {}

impl Classify for Fake {
    fn classify(&self) -> Verdict {
        match self {
            Fake::ConnectionRefused | Fake::Loading | Fake::Busy | Fake::TryAgain => Verdict::transient(),
            Fake::ConnectionReset => Verdict::indeterminate(),
            Fake::NoAuth | Fake::WrongPass | Fake::NoPerm | Fake::Oom => Verdict::permanent(),
            Fake::WrongType | Fake::NotFound | Fake::BadArgument => Verdict::caller_error(),
            Fake::NilTimeout => Verdict::expected(),
            Fake::RetryAfterMs(ms) => Verdict::retry_after(Duration::from_millis(*ms)),
        }
    }
}

/// A breaker that opens after `n` consecutive failures (no rate rule), open for 1 s.
pub fn breaker(n: u32) -> CircuitBreaker {
    let mut config = BreakerConfig::default();
    config.consecutive_failures = Some(n);
    config.failure_rate = None;
    config.open_for = Duration::from_secs(1);
    CircuitBreaker::new("fake.main", &config).expect("valid breaker config")
}

/// A retry config with fixed delays (`delay_ms`, no jitter, no growth) and no budget.
pub fn fixed_retry(max_attempts: u32, delay_ms: u64) -> stayfast_core::config::RetryConfig {
    let mut r = stayfast_core::config::RetryConfig::default();
    r.max_attempts = max_attempts;
    r.min_delay = Duration::from_millis(delay_ms);
    r.max_delay = Duration::from_millis(delay_ms);
    r.multiplier = 1.0;
    r.jitter = false;
    r.budget = None;
    r
}

/// xorshift64 seeded through splitmix64: tiny, deterministic, reproducible from a
/// printed seed (small or zero seeds still give a busy state).
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..=max`.
    pub fn up_to(&mut self, max: u64) -> u64 {
        self.next_u64() % (max + 1)
    }
}

/// The non-zero counters of `metric` in a debugging-recorder snapshot, by the value of
/// their `label`, sorted. (Taking a snapshot drains the recorder: take one per check.)
pub fn counters_by_label(
    recorder: &metrics_util::debugging::DebuggingRecorder,
    metric: &str,
    label: &str,
) -> Vec<(String, u64)> {
    use metrics_util::debugging::DebugValue;
    let mut v: Vec<_> = recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key().clone();
            if key.name() != metric {
                return None;
            }
            let by = key.labels().find(|l| l.key() == label)?.value().to_owned();
            match value {
                DebugValue::Counter(n) if n > 0 => Some((by, n)),
                _ => None,
            }
        })
        .collect();
    v.sort();
    v
}
