//! [`Backoff`]: exponential delays with jitter, saturating and capped.

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::config::{ConfigError, RetryConfig};

/// The delay before each retry: `min_delay × multiplier^(n-1)`, capped at `max_delay`,
/// drawn uniformly from `[min_delay, that]` when jitter is on.
///
/// The arithmetic saturates (a huge attempt number gives `max_delay`, never an overflow
/// or a panic) and the cap is applied after jitter, so every delay lies in
/// `[min_delay, max_delay]`. The random source is a lock-free SplitMix64, seeded from
/// the OS's hash randomness unless [`seeded`](Self::seeded).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stayfast_core::{config::RetryConfig, retry::Backoff};
///
/// let mut config = RetryConfig::default();
/// config.min_delay = Duration::from_millis(100);
/// config.max_delay = Duration::from_secs(1);
/// config.jitter = false;
/// let backoff = Backoff::new(&config).unwrap();
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(2), Duration::from_millis(200));
/// assert_eq!(backoff.delay(2049), Duration::from_secs(1));
/// ```
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    multiplier: f64,
    jitter: bool,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff from the delay settings of `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    ///
    /// ```
    /// # use stayfast_core::{config::RetryConfig, retry::Backoff};
    /// let mut config = RetryConfig::default();
    /// config.multiplier = 0.5;
    /// assert_eq!(Backoff::new(&config).unwrap_err().field(), "multiplier");
    /// ```
    pub fn new(config: &RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            min: config.min_delay,
            max: config.max_delay,
            multiplier: config.multiplier,
            jitter: config.jitter,
            rng: SplitMix64::new(RandomState::new().hash_one(0x5eed_u64)),
        })
    }

    /// The same backoff with a fixed random seed, for reproducible tests.
    ///
    /// ```
    /// # use stayfast_core::{config::RetryConfig, retry::Backoff};
    /// let a = Backoff::new(&RetryConfig::default()).unwrap().seeded(7);
    /// let b = Backoff::new(&RetryConfig::default()).unwrap().seeded(7);
    /// assert_eq!(a.delay(3), b.delay(3));
    /// ```
    #[must_use]
    pub fn seeded(mut self, seed: u64) -> Self {
        self.rng = SplitMix64::new(seed);
        self
    }

    /// The delay before retry number `retry` (1 = the first retry).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stayfast_core::{config::RetryConfig, retry::Backoff};
    /// let backoff = Backoff::new(&RetryConfig::default()).unwrap(); // 50ms × 2^(n-1), jittered, ≤ 2s
    /// let third = backoff.delay(3);
    /// assert!(Duration::from_millis(50) <= third && third <= Duration::from_millis(200));
    /// assert!(backoff.delay(u32::MAX) <= Duration::from_secs(2)); // saturates, never panics
    /// ```
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.min.as_secs_f64() * self.multiplier.powi(exponent);
        let upper = Duration::try_from_secs_f64(grown).map_or(self.max, |d| d.min(self.max));
        let delay = if self.jitter {
            let span = upper.saturating_sub(self.min).as_secs_f64();
            self.min + Duration::try_from_secs_f64(span * self.rng.next_unit()).unwrap_or_default()
        } else {
            upper
        };
        // NOTE: the cap is applied after jitter, so no delay ever exceeds `max`.
        delay.clamp(self.min, self.max)
    }
}

/// SplitMix64 over an atomic counter: each draw is one `fetch_add` and a mix, so a
/// backoff shared by many callers needs no lock.
#[derive(Debug)]
struct SplitMix64(AtomicU64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    fn next_u64(&self) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self.0.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from [0, 1).
    fn next_unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
