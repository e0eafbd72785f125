//! `Cache`: JSON values in Redis with a TTL, keyed by a stable hash of their context.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stayfast_core::config::{ConfigError, duration};

/// The `[cache]` settings.
///
/// ```
/// let c: stayfast::cache::CacheConfig = toml::from_str(r#"ttl = "10m""#).unwrap();
/// assert_eq!(c.ttl, std::time::Duration::from_secs(600));
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            prefix: "cache".into(),
            version: 1,
            ttl: Duration::from_secs(3600),
            max_value_bytes: 1024 * 1024,
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
        if self.max_value_bytes == 0 {
            return Err(ConfigError::new("max_value_bytes", "must be at least 1"));
        }
        Ok(())
    }
}
