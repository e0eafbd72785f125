//! `KnowledgeStore`: facts in Redis, with a token index for AND search.

use serde::{Deserialize, Serialize};
use stayfast_core::config::ConfigError;

/// The `[knowledge]` settings.
///
/// ```
/// let c: stayfast::knowledge::KnowledgeConfig = toml::from_str(r#"prefix = "facts""#).unwrap();
/// assert_eq!(c.prefix, "facts");
/// assert!(c.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KnowledgeConfig {
    /// Namespace of every key, and their hash tag: `{<prefix>}:fact:<id>`,
    /// `{<prefix>}:idx:<token>`.
    pub prefix: String,
    /// Largest accepted `content`, in bytes (checked before any I/O).
    pub max_content_bytes: usize,
    /// Largest accepted `metadata`, in bytes of its JSON.
    pub max_metadata_bytes: usize,
    /// `COUNT` hint of each SCAN page.
    pub scan_count: u32,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            prefix: "kb".into(),
            max_content_bytes: 64 * 1024,
            max_metadata_bytes: 16 * 1024,
            scan_count: 500,
        }
    }
}

impl KnowledgeConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    ///
    /// ```
    /// let mut c = stayfast::knowledge::KnowledgeConfig::default();
    /// c.prefix = "a{b".into();
    /// assert_eq!(c.validate().unwrap_err().field(), "prefix");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty() || self.prefix.len() > 64 {
            return Err(ConfigError::new("prefix", "must be 1 to 64 bytes"));
        }
        if self.prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                "prefix",
                "must not contain `{` or `}` (it is the hash tag)",
            ));
        }
        if self.max_content_bytes == 0 {
            return Err(ConfigError::new("max_content_bytes", "must be at least 1"));
        }
        if self.max_metadata_bytes == 0 {
            return Err(ConfigError::new("max_metadata_bytes", "must be at least 1"));
        }
        if self.scan_count == 0 {
            return Err(ConfigError::new("scan_count", "must be at least 1"));
        }
        Ok(())
    }
}
