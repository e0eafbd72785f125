//! What a transcript holds: the message a caller appends, the record stored for it and
//! the receipt saying how durably, the history read back, and a file's end (its first or last record) as the writer, the
//! pushes and the read path compare it.

use serde::{Deserialize, Serialize};
use stayfast_core::{FallbackReason, fs::Durability};

/// Longest accepted role, in bytes.
pub(crate) const MAX_ROLE_BYTES: usize = 64;
/// Longest accepted message id, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 128;

/// A message to append to a session.
///
/// Give it an id ([`with_id`](Self::with_id)) when the append may be retried: a second
/// append with the same id returns the stored record instead of adding another.
///
/// ```
/// use stayfast::transcripts::Message;
/// let m = Message::new("user", "Where is my order?").with_id("msg-42");
/// assert_eq!(m.id.as_deref(), Some("msg-42"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// Who wrote it (`"user"`, `"assistant"`…): 1 to 64 bytes.
    pub role: String,
    /// The text: any UTF-8, NUL and CRLF included, up to `max_message_bytes`.
    pub content: String,
    /// The caller's id for it (1 to 128 bytes); a UUID v4 is assigned when absent.
    pub id: Option<String>,
}

impl Message {
    /// A message without an id.
    ///
    /// ```
    /// let m = stayfast::transcripts::Message::new("assistant", "Hello!");
    /// assert!(m.id.is_none());
    /// ```
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            id: None,
        }
    }

    /// The same message with the caller's id, making its append idempotent.
    ///
    /// ```
    /// let m = stayfast::transcripts::Message::new("user", "hi").with_id("m1");
    /// assert_eq!(m.id.as_deref(), Some("m1"));
    /// ```
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// A stored message: one JSON line of the transcript file, and one element of the
/// session's Redis window.
///
/// ```
/// # use stayfast::transcripts::Record;
/// let line = r#"{"seq":1,"id":"m1","role":"user","content":"hi","at":"2026-11-24T10:00:00.000000Z"}"#;
/// let record: Record = serde_json::from_str(line).unwrap();
/// assert_eq!((record.seq, record.content.as_str()), (1, "hi"));
/// ```
///
/// Fields this version does not know are ignored when a record is read: a file (or a
/// window) written by a newer version is still served.
///
/// ```
/// # use stayfast::transcripts::Record;
/// let newer = r#"{"seq":2,"id":"m2","role":"user","content":"hi","at":"2026-11-24T10:00:01.000000Z","lang":"en"}"#;
/// assert_eq!(serde_json::from_str::<Record>(newer).unwrap().seq, 2);
/// ```
// No `deny_unknown_fields`: a record with an unknown field was written whole by a newer
// writer, and refusing it would hide every record after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// Position in the session, from 1, gap-free: assigned under the session's writer
    /// lock.
    pub seq: u64,
    /// The message id (the caller's, or a UUID v4).
    pub id: String,
    /// Who wrote it.
    pub role: String,
    /// The text.
    pub content: String,
    /// When it was appended (RFC 3339, UTC, microseconds).
    pub at: String,
}

/// What [`append`](super::TranscriptStore::append) stored, and how durable it was when
/// `append` returned: [`Durability::Synced`] when the file was fsynced with the record in
/// it (it survives a power loss), [`Durability::Written`] when it is in the operating
/// system's cache, awaiting the fsync policy's timer or a
/// [`flush`](super::TranscriptStore::flush) (it survives a crash of the process, not of
/// the machine). See `append` for the level each
/// [`FsyncPolicy`](stayfast_core::fs::FsyncPolicy) gives.
///
/// ```
/// # use stayfast::transcripts::{Durability, Message, TranscriptConfig, TranscriptStore};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut config = TranscriptConfig::default();
/// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-receipt-{}", std::process::id()));
/// let store = TranscriptStore::builder(&config).open().await?;
/// let receipt = store.append("s", Message::new("user", "hi")).await?;
/// assert_eq!(receipt.record.seq, 1);
/// if receipt.durability != Durability::Synced {
///     store.flush().await?; // needed on disk before answering? sync it now
/// }
/// # std::fs::remove_dir_all(&config.dir)?;
/// # Ok(()) }
/// ```
// A struct, not a tuple: later fields (where the record stands in Redis) are additions.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The stored record (for a repeated message id, the one stored first).
    pub record: Record,
    /// How durable the record was when `append` returned.
    pub durability: Durability,
    /// Who assigned `record.seq`: the file, Redis, or nobody yet (pending). Use
    /// [`seq`](Self::seq) rather than `record.seq` when the store may run with
    /// `order = "redis"`.
    pub seq_source: SeqSource,
}

impl Receipt {
    /// The record's seq in its session's order, `None` while it is
    /// [`SeqSource::Pending`] (journaled by this replica, not yet in Redis).
    ///
    /// ```
    /// # use stayfast::transcripts::{Message, TranscriptConfig, TranscriptStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-seq-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// let receipt = store.append("s", Message::new("user", "hi")).await?;
    /// assert_eq!(receipt.seq(), Some(1)); // file order: always assigned
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub fn seq(&self) -> Option<u64> {
        match self.seq_source {
            SeqSource::Pending => None,
            _ => Some(self.record.seq),
        }
    }

    /// Whether the record awaits its seq: Redis was unreachable, the record is in this
    /// replica's journal only, and will be replayed into Redis (once, by message id).
    ///
    /// ```
    /// # use stayfast::transcripts::{Message, TranscriptConfig, TranscriptStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-pending-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// assert!(!store.append("s", Message::new("user", "hi")).await?.is_pending());
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub fn is_pending(&self) -> bool {
        self.seq_source == SeqSource::Pending
    }
}

/// Who assigned a [`Receipt`]'s seq.
///
/// ```
/// use stayfast::transcripts::SeqSource;
/// let waited = SeqSource::Redis { replicas: Some(1) }; // WAIT: one replica confirmed
/// assert_ne!(waited, SeqSource::Pending);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SeqSource {
    /// `order = "file"`: the session's file, under its lock.
    File,
    /// `order = "redis"`: the append script, which stored the record in Redis with it.
    Redis {
        /// With `wait_replicas` > 0: how many Redis replicas acknowledged the write
        /// within `wait_timeout` (`WAIT`'s reply; the claim holds when it is at least
        /// `wait_replicas`); `None` when no `WAIT` was asked.
        replicas: Option<u32>,
    },
    /// `order = "redis"`, Redis unreachable: journaled (and synced per the fsync
    /// policy) by this replica only; `record.seq` is 0, which is never a seq (they
    /// start at 1). The replay gives it its seq when Redis is back.
    Pending,
}

impl Record {
    /// One line of JSON, no newline (JSON escapes every control character, so the
    /// content's own newlines cannot split a record).
    pub(crate) fn encode(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }

    /// The record's JSON line (without its newline).
    pub(crate) fn to_json(&self) -> String {
        // Room for the JSON of the fields and the newline the file adds: one allocation,
        // not a growing buffer's several.
        let size = 64 + self.id.len() + self.role.len() + self.content.len() + self.at.len();
        let mut line = Vec::with_capacity(size + self.content.len() / 8);
        // A struct of strings and an integer always serializes, to UTF-8.
        match serde_json::to_writer(&mut line, self) {
            Ok(()) => String::from_utf8(line).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The last record of a session's file: its seq, and its identity (message id and
/// timestamp). The Redis window is trusted only when it ends with this very record, and
/// a push extends it only after it: a seq alone cannot tell this session's records
/// from a deleted session's that a late push or repopulation left in the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct End {
    /// 0 for an empty file.
    pub(crate) seq: u64,
    pub(crate) id: String,
    pub(crate) at: String,
}

impl End {
    /// The end of a file whose last record is `last` (`None`: an empty file).
    pub(crate) fn of(last: Option<&Record>) -> Self {
        last.map_or_else(Self::default, |r| Self {
            seq: r.seq,
            id: r.id.clone(),
            at: r.at.clone(),
        })
    }

    /// The incarnation a file whose first record is this one belongs to: a session
    /// deleted and written again starts a new one (a new first record: a fresh
    /// timestamp and id), so Redis can refuse a late write of a deleted incarnation
    /// while accepting the new one's. An unambiguous encoding of the id and timestamp.
    pub(crate) fn incarnation(&self) -> String {
        serde_json::to_string(&(&self.id, &self.at)).unwrap_or_default()
    }

    /// Whether `record` is this very record.
    pub(crate) fn is(&self, record: &Record) -> bool {
        record.seq == self.seq && record.id == self.id && record.at == self.at
    }
}

/// Where a [`History`] was read from.
///
/// ```
/// assert_eq!(stayfast::transcripts::HistorySource::Redis.as_str(), "redis");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HistorySource {
    /// The session's Redis window (its newest records possibly still on their way
    /// there: an append's push is sent in the background, and until Redis acknowledges
    /// it the store serves the record from memory, as the file holds it).
    Redis,
    /// The transcript file.
    File,
    /// Nowhere: the session has no messages.
    None,
}

impl HistorySource {
    /// `"redis"`, `"file"` or `"none"`.
    ///
    /// ```
    /// assert_eq!(stayfast::transcripts::HistorySource::File.as_str(), "file");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            HistorySource::Redis => "redis",
            HistorySource::File => "file",
            HistorySource::None => "none",
        }
    }
}

/// [`as_str`](HistorySource::as_str): `redis`, `file` or `none`.
///
/// ```
/// assert_eq!(stayfast::transcripts::HistorySource::Redis.to_string(), "redis");
/// ```
impl std::fmt::Display for HistorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last messages of a session, oldest first, and how they were obtained.
///
/// ```
/// # use stayfast::transcripts::{History, HistorySource};
/// fn show(h: &History) {
///     if h.degraded {
///         eprintln!("served from {} while Redis misbehaves", h.source.as_str());
///     }
///     for r in &h.records {
///         println!("{} {}: {}", r.seq, r.role, r.content);
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// Oldest first.
    pub records: Vec<Record>,
    /// Where they came from.
    pub source: HistorySource,
    /// Whether a failure made this a fallback: Redis down, slow or its circuit open,
    /// a damaged file whose valid part was served, or a file that could not be read
    /// in time (nothing served). [`reason`](Self::reason) says which.
    pub degraded: bool,
    /// Why it is degraded; `None` when it is not.
    pub reason: Option<Degradation>,
    /// With `order = "redis"`, Redis unreachable: served from this replica's journal,
    /// which lacks what other replicas appended; its records this replica appended
    /// during the outage have seq 0 (pending), in this replica's order.
    pub partial: bool,
}

impl History {
    pub(crate) fn new(records: Vec<Record>, source: HistorySource, reason: Option<Degradation>) -> Self {
        Self {
            records,
            source,
            degraded: reason.is_some(),
            reason,
            partial: false,
        }
    }
}

/// Why a [`History`] is degraded. When several things failed, the one that shaped the
/// answer: an unreadable file over a damaged one over Redis.
///
/// ```
/// # use stayfast::{FallbackReason, transcripts::{Degradation, History}};
/// fn explain(h: &History) -> &'static str {
///     match h.reason {
///         None => "complete",
///         Some(Degradation::Redis(FallbackReason::Timeout)) => "Redis slow: served from the file",
///         Some(Degradation::Redis(_)) => "Redis down: served from the file",
///         Some(Degradation::FileUnavailable(_)) => "no history could be read in time",
///         Some(Degradation::Damaged) => "the transcript is damaged: its valid part",
///         Some(_) => "degraded",
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Degradation {
    /// Redis failed (timed out, refused, its circuit open): the file served the
    /// records.
    Redis(FallbackReason),
    /// The file could not be read either (it timed out, or its circuit is open): no
    /// records are served, and `source` is [`HistorySource::None`].
    FileUnavailable(FallbackReason),
    /// The file is damaged: its valid records before the damage are served
    /// ([`TranscriptStore::repair`](super::TranscriptStore::repair) takes it out).
    Damaged,
}
