//! `CacheConfig`: the `[cache]` settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stayfast_core::config::{ConfigError, duration};

use super::MAX_TTL;

/// The longest `max_wait` and `load_timeout` accepted: far above any load worth waiting for, and far below
/// the point where a deadline `now + max_wait` could overflow.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The `[cache]` settings.
///
/// ```
/// let c: stayfast::cache::CacheConfig = toml::from_str(r#"ttl = "10m""#).unwrap();
/// assert_eq!(c.ttl, std::time::Duration::from_secs(600));
/// assert_eq!(c.max_wait, std::time::Duration::from_secs(10)); // the default
/// assert_eq!(c.load_timeout, std::time::Duration::from_secs(60)); // the default
/// assert!(c.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Namespace of every key: `<prefix>:v<version>:<sha256 hex>`.
    pub prefix: String,
    /// Part of every key: bump it when the cached values' shape changes, and old entries
    /// are simply never read again (they expire).
    pub version: u32,
    /// Time to live of an entry unless a call says otherwise.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// Largest value stored, in bytes of its JSON; larger ones are not cached.
    pub max_value_bytes: usize,
    /// How long a [`get_or_insert_with`](super::Cache::get_or_insert_with) call waits for
    /// a concurrent call's load of the same entry before giving up on it and running its
    /// own loader (uncoalesced). At most 24 hours.
    #[serde(with = "duration")]
    pub max_wait: Duration,
    /// Longest a loader run by [`get_or_insert_with`](super::Cache::get_or_insert_with)
    /// may take: past it, the loader's future is dropped (cancelled) and the call fails
    /// with a [`CoalescedError`](super::CoalescedError) (timed out), as do the calls
    /// waiting on it. So one hung loader holds its entry's flight this long at most,
    /// never forever. At most 24 hours.
    #[serde(with = "duration")]
    pub load_timeout: Duration,
    /// Distinct entries loaded at once with coalescing (one flight each); a call that
    /// would start one more loads on its own, uncoalesced, and counts `error`.
    pub max_in_flight: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            prefix: "cache".into(),
            version: 1,
            ttl: Duration::from_secs(3600),
            max_value_bytes: 1024 * 1024,
            max_wait: Duration::from_secs(10),
            // NOTE: well above `max_wait`: waiters have left for their own loads long
            // before; this only frees an entry from a loader that will never finish.
            load_timeout: Duration::from_secs(60),
            max_in_flight: 10_000,
        }
    }
}

impl CacheConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    ///
    /// ```
    /// let mut c = stayfast::cache::CacheConfig::default();
    /// c.ttl = std::time::Duration::ZERO;
    /// assert_eq!(c.validate().unwrap_err().field(), "ttl");
    ///
    /// let mut c = stayfast::cache::CacheConfig::default();
    /// c.max_wait = std::time::Duration::ZERO;
    /// assert_eq!(c.validate().unwrap_err().field(), "max_wait");
    ///
    /// let mut c = stayfast::cache::CacheConfig::default();
    /// c.load_timeout = std::time::Duration::from_secs(25 * 3600);
    /// assert_eq!(c.validate().unwrap_err().field(), "load_timeout");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty() || self.prefix.len() > 64 {
            return Err(ConfigError::new("prefix", "must be 1 to 64 bytes"));
        }
        if self.ttl < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "ttl",
                "must be at least 1s (Redis expires in whole seconds)",
            ));
        }
        if self.ttl > MAX_TTL {
            return Err(ConfigError::new("ttl", "must be at most 100 years"));
        }
        if self.max_value_bytes == 0 {
            return Err(ConfigError::new("max_value_bytes", "must be at least 1"));
        }
        if self.max_wait.is_zero() {
            return Err(ConfigError::new("max_wait", "must be greater than zero"));
        }
        if self.max_wait > MAX_WAIT {
            return Err(ConfigError::new("max_wait", "must be at most 24 hours"));
        }
        if self.load_timeout.is_zero() {
            return Err(ConfigError::new("load_timeout", "must be greater than zero"));
        }
        if self.load_timeout > MAX_WAIT {
            return Err(ConfigError::new("load_timeout", "must be at most 24 hours"));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        Ok(())
    }
}
