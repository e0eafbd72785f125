//! `TranscriptStore`: chat history with the file as the durable record and Redis as the
//! cache of each session's recent window.
//!
//! - **append** assigns the session's next `seq` under its writer lock, appends the
//!   record to the session's file durably (one `write()`, fsync per
//!   [`TranscriptConfig::fsync`]), and only then updates Redis, in the background and
//!   in seq order (one drainer per session): a Redis outage never fails or slows an
//!   append.
//! - **history** reads the Redis window under its deadline, completed with the
//!   records whose pushes are still on their way; when Redis is slow, down, cold or
//!   behind the file, it reads the file instead (under its own deadline) and
//!   repopulates Redis in the background. Every [`History`] says where it came from and
//!   whether that was a fallback.
//! - Session ids never reach the file system: a session's file is
//!   `<dir>/<sha256(id)>.jsonl` (0600, the directory 0700) and its Redis key
//!   `{tx:<sha256(id)>}:log`.
//!
//! # Examples
//!
//! ```
//! use stayfast::transcripts::{HistorySource, Message, TranscriptConfig, TranscriptStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("stayfast-doc-tx-{}", std::process::id()));
//! let mut config = TranscriptConfig::default();
//! config.dir = dir.clone();
//! let store = TranscriptStore::builder(&config).open().await?; // file-only: no Redis given
//!
//! store.append("session-1", Message::new("user", "Where is my order?")).await?;
//! let reply = store.append("session-1", Message::new("assistant", "On its way.")).await?;
//! assert_eq!(reply.seq, 2);
//!
//! let history = store.history("session-1", 10).await?;
//! assert_eq!(history.records.len(), 2);
//! assert_eq!(history.source, HistorySource::File);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

mod builder;
mod config;
mod pushes;
mod read;
mod record;
mod session;
#[cfg(test)]
mod tests;
mod window;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use stayfast_core::{
    Error, FireAndForget, Name,
    fs::{DurableAppend, LogReader, ReadLogError, Repaired},
};

pub use self::{
    builder::TranscriptStoreBuilder,
    config::TranscriptConfig,
    record::{Degradation, History, HistorySource, Message, Record},
};
use self::{
    pushes::{Push, Turn},
    record::{MAX_ID_BYTES, MAX_ROLE_BYTES},
    session::{End, Session, SessionKey, Sessions, Writer},
    window::{Pushed, Window},
};
use crate::StoreError;

/// Chat history per session: the file is the durable record, Redis the cache. See the
/// [module docs](self). Cheap to clone.
///
/// # Cancellation
///
/// Dropping an `append` future before it returns leaves the message either fully
/// appended or absent (never torn); as with any write whose answer was lost, append it
/// again *with the same message id* to find out without duplicating it. Dropping a
/// `history` future has no effect on the data.
///
/// # Examples
///
/// ```no_run
/// # async fn f(app: &stayfast::Stayfast) -> Result<(), stayfast::StoreError> {
/// use stayfast::transcripts::{HistorySource, Message};
/// let chat = app.transcripts();
/// chat.append("session-42", Message::new("user", "Where is my order?").with_id("msg-1")).await?;
/// let history = chat.history("session-42", 20).await?;
/// if history.degraded {
///     // Redis was slow or down: these records came from the file (or none could be read).
///     assert_ne!(history.source, HistorySource::Redis);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TranscriptStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// How long a writer waits for its session's lock: the write deadline.
    write_timeout: std::time::Duration,
    max_message_bytes: usize,
    window: Option<Window>,
    background: FireAndForget,
    appender: DurableAppend,
    reader: LogReader,
    sessions: Sessions,
}

/// A session's file, read back.
struct FileRead {
    records: Vec<Record>,
    /// A damaged line in the middle stopped the read: `records` is the valid prefix.
    damaged: bool,
}

impl TranscriptStore {
    /// A builder over `config`: add Redis, a shared spawner, timeouts, then
    /// [`open`](TranscriptStoreBuilder::open) it.
    ///
    /// ```
    /// # use stayfast::transcripts::{TranscriptConfig, TranscriptStore};
    /// let builder = TranscriptStore::builder(&TranscriptConfig::default());
    /// # let _ = builder;
    /// ```
    pub fn builder(config: &TranscriptConfig) -> TranscriptStoreBuilder {
        TranscriptStoreBuilder::new(config)
    }

    /// The transcript directory.
    ///
    /// ```
    /// # use stayfast::transcripts::{TranscriptConfig, TranscriptStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-dir-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// assert_eq!(store.dir(), config.dir);
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends `message` to `session` and returns the stored record. The message is in
    /// the file (durable as the `fsync` setting says) when this returns `Ok`; Redis is
    /// updated afterwards in the background.
    ///
    /// With a message id the append is idempotent: when the session already holds a
    /// message with that id, its stored record is returned and nothing is added.
    ///
    /// # Errors
    ///
    /// [`StoreError::TooLarge`] / [`StoreError::InvalidInput`] before any I/O (content
    /// over `max_message_bytes`, an empty or overlong role, id or session id);
    /// [`StoreError::Corrupt`] when the session's file is damaged (nothing is appended
    /// after damage until [`repair`](Self::repair)); [`StoreError::File`] when the write
    /// failed, timed out ([`Error::OutcomeUnknown`]: it may still land — retry with the
    /// same id), the directory's breaker is open, or the wait for the session's writer
    /// (another append to it, slow) outlasted the write deadline ([`Error::Timeout`]:
    /// nothing was written).
    ///
    /// # Cancellation
    ///
    /// See the [type docs](TranscriptStore#cancellation): the record is all there or
    /// absent; retry with the same id.
    ///
    /// ```
    /// # use stayfast::transcripts::{Message, TranscriptConfig, TranscriptStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-append-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// let first = store.append("s", Message::new("user", "hi").with_id("m1")).await?;
    /// let again = store.append("s", Message::new("user", "hi").with_id("m1")).await?; // a retry
    /// assert_eq!(first, again);
    /// assert_eq!(store.history("s", 10).await?.records.len(), 1); // stored once
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn append(&self, session: &str, message: Message) -> Result<Record, StoreError> {
        self.check(&message)?;
        let key = SessionKey::new(session)?;
        let inner = &self.inner;
        let session = inner.sessions.get(&key);
        let path = key.file(&inner.dir);
        let mut writer = inner.lock_writer(&session, "transcripts.append").await?;
        if !writer.loaded {
            let read = inner.read_file(&path).await?;
            if read.damaged {
                return Err(damaged(&path));
            }
            load(&mut writer, &session, &read.records);
        }
        if let Some(id) = &message.id
            && writer.ids.contains(id)
        {
            drop(writer);
            return inner.find(&path, id).await;
        }
        let record = Record {
            seq: writer.last.seq + 1,
            id: message.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            role: message.role,
            content: message.content,
            at: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        };
        if let Err(e) = inner.appender.append(&path, record.encode()).await {
            // The write may still land (a timeout) or have half-happened: re-read the
            // file before the next append rather than guess its last seq.
            writer.loaded = false;
            session.set_known(None);
            return Err(e.into());
        }
        if writer.last.seq == 0 {
            // The first record of a new (or deleted and restarted) file.
            writer.first = End::of(Some(&record));
        }
        let previous = std::mem::replace(&mut writer.last, End::of(Some(&record)));
        writer.ids.insert(record.id.clone());
        session.set_known(Some(&writer));
        // Queued under the writer lock, so in seq order; a running drainer sends it.
        let turn = inner.window.as_ref().and_then(|window| {
            let push = Push {
                record: record.clone(),
                previous,
                first: writer.first.clone(),
            };
            session.pushes.enqueue(push, window.len as usize)
        });
        drop(writer);
        if let Some(turn) = turn {
            let task_inner = Arc::clone(&self.inner);
            // Shed when the spawner is full: the turn is dropped with the task, the
            // window is then behind the file, which `history` notices and repairs.
            let _ = inner.background.spawn("transcripts.cache_push", async move {
                task_inner.drain_pushes(key, turn).await
            });
        }
        Ok(record)
    }

    /// Removes `session`'s file and its Redis window. Returns whether it had a file.
    ///
    /// Once it returns `Ok`, no record of the deleted session is served or stored in
    /// Redis again: the window's delete also records the deleted incarnation (the
    /// file's first record) in a tombstone set (`{tx:<hex>}:deleted`, kept
    /// `max(cache_ttl, 24 h)`), and every push and repopulation carries its
    /// incarnation, so one still in flight — sent before the delete and applied after
    /// it, or issued from a read made before it — is refused by Redis. A session
    /// written again after the delete is a new incarnation, cached as usual.
    ///
    /// # Errors
    ///
    /// [`StoreError::File`] when the file could not be removed; [`StoreError::Redis`]
    /// when the file is gone but the Redis window could not be deleted (it expires by
    /// its TTL, and is never served in place of the file; call again to delete it).
    ///
    /// # Cancellation
    ///
    /// The file removal completes even if the future is dropped; the Redis delete may
    /// not happen.
    ///
    /// ```
    /// # use stayfast::transcripts::{HistorySource, Message, TranscriptConfig, TranscriptStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-delete-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// store.append("s", Message::new("user", "forget me")).await?;
    /// assert!(store.delete_session("s").await?);
    /// assert_eq!(store.history("s", 10).await?.source, HistorySource::None);
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_session(&self, session: &str) -> Result<bool, StoreError> {
        let key = SessionKey::new(session)?;
        let inner = &self.inner;
        let session = inner.sessions.get(&key);
        let mut writer = inner.lock_writer(&session, "transcripts.repair").await?;
        let path = key.file(&inner.dir);
        if !writer.loaded && inner.window.is_some() {
            // The incarnation to tombstone is the file's first record: learn it before
            // the file goes (a read that fails leaves everything as it was).
            let read = inner.read_file(&path).await?;
            load(&mut writer, &session, &read.records);
        }
        let incarnation = (writer.last.seq > 0).then(|| writer.first.incarnation());
        let removed = inner.appender.remove(path).await;
        // Whatever happened, the next writer re-reads the file.
        *writer = Writer::default();
        session.set_known(None);
        session.pushes.clear();
        drop(writer);
        let existed = removed?;
        if let Some(window) = &inner.window {
            window.delete(&key, incarnation.as_deref()).await?;
        }
        Ok(existed)
    }

    /// Takes the damaged lines out of `session`'s file, which
    /// [`append`](Self::append) refuses to extend (with [`StoreError::Corrupt`]) while
    /// they are there: every valid record is kept with its seq, in order; every removed
    /// byte is moved to a quarantine file next to the transcript
    /// (`<file>.quarantine-<offset>`, mode 0600) for a human to look at. The seqs of
    /// removed lines are not reused: the next append follows the last valid record.
    /// Returns what was done; a whole file is left untouched.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for a bad session id; [`StoreError::ReadLog`] when
    /// the file cannot be read or replaced (it is then unchanged).
    ///
    /// # Cancellation
    ///
    /// The repair runs on the blocking pool and completes (or leaves the file as it
    /// was) even if the future is dropped.
    ///
    /// ```
    /// # use stayfast::transcripts::{Message, TranscriptConfig, TranscriptStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-repair-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// store.append("s", Message::new("user", "one")).await?;
    /// # let file = std::fs::read_dir(&config.dir)?.next().unwrap()?.path();
    /// # use std::io::Write;
    /// # std::fs::OpenOptions::new().append(true).open(&file)?.write_all(b"not a record\n")?;
    /// # let store = TranscriptStore::builder(&config).open().await?;
    /// // A damaged line is in the file: appends are refused until it is taken out.
    /// assert!(store.append("s", Message::new("user", "two")).await.is_err());
    /// let repaired = store.repair("s").await?;
    /// assert_eq!((repaired.kept, repaired.quarantined), (1, 1));
    /// assert_eq!(store.append("s", Message::new("user", "two")).await?.seq, 2);
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn repair(&self, session: &str) -> Result<Repaired, StoreError> {
        let key = SessionKey::new(session)?;
        let inner = &self.inner;
        let session = inner.sessions.get(&key);
        let mut writer = inner.lock_writer(&session, "transcripts.delete").await?;
        let repaired = inner
            .reader
            .repair(key.file(&inner.dir), |line| Record::decode(line).is_some())
            .await;
        // Whatever happened, the next writer re-reads the file; the window is rebuilt
        // from it by the next `history`.
        *writer = Writer::default();
        session.set_known(None);
        drop(writer);
        let repaired = repaired?;
        if let Some(quarantine) = &repaired.quarantine {
            tracing::warn!(target: "stayfast::transcripts", quarantine = %quarantine.display(),
                kept = repaired.kept, quarantined = repaired.quarantined,
                "took damaged lines out of a transcript");
        }
        Ok(repaired)
    }

    /// Makes every append so far durable: fsyncs every file with appends not yet
    /// synced, whether or not its session is still in memory; nothing to do with
    /// `fsync = "always"`, where each append already is. With `every_ms` a timer does
    /// this within the interval anyway; with `never` only this (and shutdown) does.
    ///
    /// # Errors
    ///
    /// The first [`StoreError::File`] met; the other files are still synced.
    ///
    /// # Cancellation
    ///
    /// Files already synced stay synced; the rest are not.
    ///
    /// ```
    /// # use stayfast::{fs::FsyncPolicy, transcripts::{Message, TranscriptConfig, TranscriptStore}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-flush-{}", std::process::id()));
    /// config.fsync = FsyncPolicy::Never; // batch: durable at flush
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// store.append("s", Message::new("user", "hi")).await?;
    /// store.flush().await?; // now on disk
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<(), StoreError> {
        // The appender knows every file it left unsynced, evicted sessions' included.
        self.inner.appender.sync_all().await?;
        Ok(())
    }

    fn check(&self, message: &Message) -> Result<(), StoreError> {
        let max = self.inner.max_message_bytes;
        if message.content.len() > max {
            return Err(StoreError::TooLarge {
                what: "message content",
                len: message.content.len(),
                max,
            });
        }
        if message.role.is_empty() || message.role.len() > MAX_ROLE_BYTES {
            return Err(StoreError::InvalidInput {
                what: "role",
                problem: format!("must be 1 to {MAX_ROLE_BYTES} bytes, is {}", message.role.len()),
            });
        }
        if let Some(id) = &message.id
            && (id.is_empty() || id.len() > MAX_ID_BYTES)
        {
            return Err(StoreError::InvalidInput {
                what: "message id",
                problem: format!("must be 1 to {MAX_ID_BYTES} bytes, is {}", id.len()),
            });
        }
        Ok(())
    }
}

/// Fills `writer` from the file's records.
fn load(writer: &mut Writer, session: &Session, records: &[Record]) {
    writer.last = End::of(records.last());
    writer.first = End::of(records.first());
    writer.ids = records.iter().map(|r| r.id.clone()).collect();
    writer.loaded = true;
    session.set_known(Some(writer));
}

fn damaged(path: &Path) -> StoreError {
    StoreError::Corrupt {
        what: "transcript file",
        problem: format!(
            "{} has a damaged line; nothing is appended after damage until \
             TranscriptStore::repair takes it out",
            path.display()
        ),
    }
}

impl Inner {
    /// The session's writer lock, waited for no longer than the write deadline: a
    /// writer stuck behind a slow one (a file that hangs) gives up as a timeout of
    /// `operation`, as its own write would.
    async fn lock_writer<'a>(
        &self,
        session: &'a Session,
        operation: &'static str,
    ) -> Result<tokio::sync::MutexGuard<'a, Writer>, StoreError> {
        tokio::time::timeout(self.write_timeout, session.writer.lock())
            .await
            .map_err(|_| {
                StoreError::File(Error::Timeout {
                    operation: Name::new_static(operation),
                    after: self.write_timeout,
                })
            })
    }

    /// Every valid record of the file. A torn tail is cut (after a backup copy), as a
    /// crash mid-append leaves it; damage in the middle keeps the valid prefix.
    async fn read_file(&self, path: &Path) -> Result<FileRead, StoreError> {
        let read = self
            .reader
            .read(path, |line| Record::decode(line).is_some())
            .await;
        let (lines, damaged) = match read {
            Ok(recovered) => {
                if let Some(torn) = &recovered.torn {
                    tracing::warn!(target: "stayfast::transcripts", path = %path.display(),
                        offset = torn.offset, bytes = torn.len, backup = %torn.backup.display(),
                        "cut a torn record at the end of a transcript");
                }
                (recovered.records, false)
            }
            Err(Error::Inner {
                source: ReadLogError::Corrupt(c),
                ..
            }) => (c.valid, true),
            Err(e) => return Err(e.into()),
        };
        let records = lines.iter().filter_map(|l| Record::decode(l)).collect();
        Ok(FileRead { records, damaged })
    }

    /// The stored record with message id `id` (a repeated append).
    async fn find(&self, path: &Path, id: &str) -> Result<Record, StoreError> {
        let read = self.read_file(path).await?;
        read.records
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| StoreError::Corrupt {
                what: "transcript file",
                problem: format!("{} lost a record it held", path.display()),
            })
    }

    /// Sends the session's queued pushes, in batches of all that waits; the first
    /// error ends the turn (and drops the rest: see [`Turn`]).
    async fn drain_pushes(&self, key: SessionKey, mut turn: Turn) -> Result<(), StoreError> {
        let Some(window) = &self.window else { return Ok(()) };
        while let Some(batch) = turn.next() {
            let pushed = window.push(&key, &batch).await?;
            if pushed == Pushed::Deleted {
                return Ok(());
            }
            if pushed == Pushed::Gap {
                let read = self.read_file(&key.file(&self.dir)).await?;
                if !read.damaged {
                    self.replace(&key, &read.records).await?;
                }
            }
        }
        Ok(())
    }

    async fn replace(&self, key: &SessionKey, records: &[Record]) -> Result<(), StoreError> {
        let Some(window) = &self.window else { return Ok(()) };
        let tail = &records[records.len().saturating_sub(window.len as usize)..];
        window.replace(key, &End::of(records.first()), tail).await?;
        Ok(())
    }

    /// Rebuilds the window from `records` (the file's last ones, oldest first, of the
    /// file whose first record is `first`) in the background.
    fn repopulate_in_background(&self, key: &SessionKey, first: &End, records: &[Record]) {
        let Some(window) = &self.window else { return };
        if records.is_empty() {
            return;
        }
        let tail = records[records.len().saturating_sub(window.len as usize)..].to_vec();
        let (window, first, key) = (window.clone(), first.clone(), key.clone());
        let _ = self.background.spawn("transcripts.cache_repopulate", async move {
            window.replace(&key, &first, &tail).await?;
            Ok::<(), StoreError>(())
        });
    }
}
