//! The `[transcripts]` settings.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use stayfast_core::{
    config::{ConfigError, duration},
    fs::FsyncPolicy,
};

/// The `[transcripts]` settings.
///
/// ```
/// let c: stayfast::transcripts::TranscriptConfig = toml::from_str(r#"
///     dir = "/var/lib/app/transcripts"
///     cache_messages = 50
///     fsync = { every_ms = 100 }
/// "#).unwrap();
/// assert_eq!(c.cache_messages, 50);
/// assert!(c.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TranscriptConfig {
    /// Directory of the transcript files (created 0700).
    pub dir: PathBuf,
    /// Messages of each session kept in Redis (the recent window).
    pub cache_messages: u32,
    /// Time to live of a session's Redis window after its last write.
    #[serde(with = "duration")]
    pub cache_ttl: Duration,
    /// Largest accepted message content, in bytes (checked before any I/O).
    pub max_message_bytes: usize,
    /// When appended records are fsynced.
    pub fsync: FsyncPolicy,
    /// Sessions whose writer state (lock, last seq, recent message ids) is kept in
    /// memory; the least recently used idle one is forgotten past this.
    pub max_open_sessions: usize,
}

impl Default for TranscriptConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("transcripts"),
            cache_messages: 100,
            cache_ttl: Duration::from_secs(24 * 3600),
            max_message_bytes: 64 * 1024,
            fsync: FsyncPolicy::Always,
            max_open_sessions: 10_000,
        }
    }
}

impl TranscriptConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    ///
    /// ```
    /// let mut c = stayfast::transcripts::TranscriptConfig::default();
    /// c.cache_messages = 0;
    /// assert_eq!(c.validate().unwrap_err().field(), "cache_messages");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::new("dir", "must not be empty"));
        }
        if self.cache_messages == 0 || self.cache_messages > MAX_CACHE_MESSAGES {
            return Err(ConfigError::new(
                "cache_messages",
                format!("must be 1 to {MAX_CACHE_MESSAGES} (one Lua call rewrites the window)"),
            ));
        }
        if self.cache_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "cache_ttl",
                "must be at least 1s (Redis expires in whole seconds)",
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(ConfigError::new("max_message_bytes", "must be at least 1"));
        }
        if self.max_open_sessions == 0 {
            return Err(ConfigError::new("max_open_sessions", "must be at least 1"));
        }
        Ok(())
    }
}

/// Largest Redis window: repopulation passes it to one Lua `unpack`, whose stack is
/// limited to about 8000 values.
pub(crate) const MAX_CACHE_MESSAGES: u32 = 4096;
