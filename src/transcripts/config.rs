//! The `[transcripts]` settings.

use std::{ffi::OsString, path::PathBuf, time::Duration};

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
    /// Directory of the transcript files (created 0700). Empty, the default: the
    /// program's state directory (see [`directory`](Self::directory)), never the working
    /// directory.
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
    /// First part of the hash tag of every Redis key of a session:
    /// `{<key_prefix>:<sha256(session id)>}:log` (and `…:deleted`). Default `"tx"`, the
    /// keys of earlier versions. Two applications sharing one Redis give theirs different
    /// prefixes, or a session id used by both would share one window. 1 to
    /// 64 bytes, without `{`, `}` or whitespace (they would break the hash tag).
    ///
    /// ```
    /// let mut c = stayfast::transcripts::TranscriptConfig::default();
    /// assert_eq!(c.key_prefix, "tx");
    /// c.key_prefix = "support-bot".into(); // keys {support-bot:<hex>}:log
    /// assert!(c.validate().is_ok());
    /// c.key_prefix = "a}b".into();
    /// assert_eq!(c.validate().unwrap_err().field(), "key_prefix");
    /// ```
    pub key_prefix: String,
    /// Where each session's order (its `seq`) comes from: [`Order::File`] (the
    /// default: one machine's directory) or [`Order::Redis`] (replicas on separate
    /// disks sharing one Redis). See
    /// [Running more than one copy](super::TranscriptStore#running-more-than-one-copy).
    ///
    /// ```
    /// # use stayfast::transcripts::{Order, TranscriptConfig};
    /// let c: TranscriptConfig = toml::from_str(r#"order = "redis""#).unwrap();
    /// assert_eq!(c.order, Order::Redis);
    /// ```
    pub order: Order,
    /// With `order = "redis"`: after each append's script, `WAIT` for this many Redis
    /// replicas to acknowledge it (at most [`wait_timeout`](Self::wait_timeout)) before
    /// the append returns; [`SeqSource::Redis`](super::SeqSource::Redis) says how many
    /// did. 0, the default: no `WAIT`.
    ///
    /// ```
    /// let mut c = stayfast::transcripts::TranscriptConfig::default();
    /// c.wait_replicas = 1; // only meaningful with order = "redis"
    /// assert_eq!(c.validate().unwrap_err().field(), "wait_replicas");
    /// ```
    pub wait_replicas: u32,
    /// The `WAIT` bound (default 100ms; at least 1ms). Keep it well under the Redis
    /// command timeout: the script and the `WAIT` share one round trip and its deadline.
    #[serde(with = "duration")]
    pub wait_timeout: Duration,
}

/// Where a session's order comes from ([`TranscriptConfig::order`]).
///
/// ```
/// use stayfast::transcripts::Order;
/// assert_eq!(Order::default(), Order::File);
/// assert_eq!(Order::Redis.as_str(), "redis");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Order {
    /// The session's file assigns the seq (under its lock); Redis caches a window. One
    /// machine's processes may share the directory.
    #[default]
    File,
    /// A Lua script in Redis assigns the seq and stores the record atomically; each
    /// replica's file is its journal of what it acknowledged, replayed into Redis after
    /// an outage. For replicas on separate disks sharing one Redis.
    Redis,
}

impl Order {
    /// `"file"` or `"redis"`.
    ///
    /// ```
    /// assert_eq!(stayfast::transcripts::Order::File.as_str(), "file");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Order::File => "file",
            Order::Redis => "redis",
        }
    }
}

impl Default for TranscriptConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            cache_messages: 100,
            cache_ttl: Duration::from_secs(24 * 3600),
            max_message_bytes: 64 * 1024,
            fsync: FsyncPolicy::Always,
            max_open_sessions: 10_000,
            key_prefix: "tx".to_owned(),
            order: Order::File,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
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
        if self.wait_replicas > 0 && self.order != Order::Redis {
            return Err(ConfigError::new(
                "wait_replicas",
                "needs order = \"redis\" (with file order, Redis holds only a cache)",
            ));
        }
        if self.wait_timeout < Duration::from_millis(1) || self.wait_timeout > MAX_WAIT_TIMEOUT {
            return Err(ConfigError::new(
                "wait_timeout",
                format!("must be 1ms to {}s", MAX_WAIT_TIMEOUT.as_secs()),
            ));
        }
        validate_key_prefix(&self.key_prefix)
    }
}

/// Longest `wait_timeout`: an append waits for it.
const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest `key_prefix`, in bytes.
const MAX_KEY_PREFIX_BYTES: usize = 64;

fn validate_key_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() || prefix.len() > MAX_KEY_PREFIX_BYTES {
        return Err(ConfigError::new(
            "key_prefix",
            format!("must be 1 to {MAX_KEY_PREFIX_BYTES} bytes, is {}", prefix.len()),
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| matches!(c, '{' | '}') || c.is_whitespace())
    {
        return Err(ConfigError::new(
            "key_prefix",
            format!("may not contain {c:?}: braces and whitespace would break the keys' hash tag"),
        ));
    }
    Ok(())
}

impl TranscriptConfig {
    /// Where the transcript files live: `dir` when set; else the program's state
    /// directory — `$STATE_DIRECTORY/transcripts` under systemd (`StateDirectory=`),
    /// else `$XDG_STATE_HOME/<program>/transcripts`, else
    /// `$HOME/.local/state/<program>/transcripts`, `<program>` being the executable's
    /// name — so a run does not litter its working directory, and two programs do not
    /// share their transcripts by accident. A service should set `dir` to a persistent
    /// volume.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for `dir` when it is empty and none of those is known.
    ///
    /// ```
    /// let mut c = stayfast::transcripts::TranscriptConfig::default();
    /// c.dir = "/var/lib/app/transcripts".into();
    /// assert_eq!(c.directory().unwrap(), std::path::Path::new("/var/lib/app/transcripts"));
    /// ```
    pub fn directory(&self) -> Result<PathBuf, ConfigError> {
        if !self.dir.as_os_str().is_empty() {
            return Ok(self.dir.clone());
        }
        let program = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "stayfast".to_owned());
        state_directory(|name| std::env::var_os(name), &program).ok_or_else(|| {
            ConfigError::new(
                "dir",
                "not set, and no state directory is known (no $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME): \
                 set where the transcript files live",
            )
        })
    }
}

/// The default transcript directory of `program`, from the environment `var`.
fn state_directory(var: impl Fn(&str) -> Option<OsString>, program: &str) -> Option<PathBuf> {
    let set = |name| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(state) = set("STATE_DIRECTORY") {
        // systemd may list several, separated by colons: the first is the service's own.
        let first = state.to_string_lossy().split(':').next().map(PathBuf::from)?;
        return Some(first.join("transcripts"));
    }
    let base = set("XDG_STATE_HOME").or_else(|| set("HOME").map(|home| home.join(".local/state")))?;
    Some(base.join(program).join("transcripts"))
}

/// Largest Redis window: repopulation passes it to one Lua `unpack`, whose stack is
/// limited to about 8000 values.
pub(crate) const MAX_CACHE_MESSAGES: u32 = 4096;

#[cfg(test)]
mod tests {
    use std::{ffi::OsString, path::PathBuf};

    use super::state_directory;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_default_directory_is_the_programs_state_directory_never_the_working_one() {
        let at = |pairs: &[(&str, &str)]| state_directory(env(pairs), "chatd");
        assert_eq!(
            at(&[("HOME", "/home/u")]),
            Some(PathBuf::from("/home/u/.local/state/chatd/transcripts"))
        );
        assert_eq!(
            at(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/state")]),
            Some(PathBuf::from("/state/chatd/transcripts"))
        );
        assert_eq!(
            at(&[
                ("HOME", "/home/u"),
                ("STATE_DIRECTORY", "/var/lib/chatd:/var/lib/other")
            ]),
            Some(PathBuf::from("/var/lib/chatd/transcripts"))
        );
        assert_eq!(at(&[("HOME", "")]), None, "an empty variable is not a directory");
        assert_eq!(at(&[]), None);
    }
}
