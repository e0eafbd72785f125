//! The write path: `append` assigns the session's next seq under its writer lock,
//! writes the record to the file, then queues its push to the Redis window.

use std::{io, path::Path, sync::Arc, time::SystemTime};

use stayfast_core::{
    Error, Name,
    fs::{Decided, Decision, FsError, FsyncPolicy, Since, Step},
};

use super::{
    Durability, Inner, TranscriptStore,
    pushes::{Push, Turn},
    record::{End, MAX_ID_BYTES, MAX_ROLE_BYTES, Message, Receipt, Record},
    session::{Seen, Session, SessionKey, Writer},
    window::Pushed,
};
use crate::StoreError;

/// Attempts of one append when the file turns out replaced or damaged under it.
const ROUNDS: usize = 3;

/// What an append decided under the file's locks.
enum Choice {
    /// Appended `record` (`line`, its JSON), after the records `seen` (appended since
    /// the mark).
    Appended {
        record: Record,
        line: String,
        seen: Seen,
    },
    /// The message id is stored already: its record, when among those seen (else it is
    /// in the part of the file this process knew).
    Repeated { record: Option<Record>, seen: Seen },
    /// The lines since the mark do not follow the record this process knows last: the
    /// file was rewritten under it; read it whole.
    Stale,
    /// A line that is not a record (in the whole file, or since the mark).
    Damaged { whole: bool },
}

/// The decision of an append, on the blocking pool under the file's locks: the next
/// seq follows the file's last record — this process's last known one (`last`) or one
/// appended since by another process — and a message id already stored (`in_memory`,
/// or among the lines since) is not stored again.
fn decide(
    since: Since<'_>,
    last: u64,
    in_memory: bool,
    caller_id: bool,
    message: &Message,
) -> Decision<Choice> {
    let whole = matches!(since, Since::Whole(_));
    let mut records = Vec::new();
    for line in since.lines() {
        match Record::decode(line) {
            Some(record) => records.push(record),
            None => return Decision::skip(Choice::Damaged { whole }),
        }
    }
    let base = if whole { 0 } else { last };
    if !whole && records.iter().zip(base + 1..).any(|(r, seq)| r.seq != seq) {
        return Decision::skip(Choice::Stale);
    }
    let id = message.id.clone().unwrap_or_default();
    let seq = records.last().map_or(base, |r| r.seq) + 1;
    if caller_id {
        let stored = records.iter().find(|r| r.id == id).cloned();
        if stored.is_some() || (in_memory && !whole) {
            let seen = Seen { records, whole };
            return Decision::skip(Choice::Repeated { record: stored, seen });
        }
    }
    let record = Record {
        seq,
        id,
        role: message.role.clone(),
        content: message.content.clone(),
        at: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
    };
    let seen = Seen { records, whole };
    // Serialised once: the file gets a copy of the bytes, the Redis push the string.
    let line = record.to_json();
    let mut bytes = Vec::with_capacity(line.len() + 1); // and the newline the file adds
    bytes.extend_from_slice(line.as_bytes());
    Decision::append(bytes, Choice::Appended { record, line, seen })
}

/// A failed append as the caller sees it: waiting out another process's lock is a
/// timeout before anything was written, as waiting out another append of this one is.
fn append_error(e: Error<FsError>, write_timeout: std::time::Duration) -> StoreError {
    match &e {
        Error::Inner { source, .. }
            if source.step() == Step::Lock && source.io().kind() == io::ErrorKind::TimedOut =>
        {
            StoreError::File(Error::Timeout {
                operation: Name::new_static("transcripts.append"),
                after: write_timeout,
            })
        }
        _ => e.into(),
    }
}

impl TranscriptStore {
    /// Appends `message` to `session` and returns the stored record in a [`Receipt`]
    /// that says how durable it is. The message is in the file when this returns `Ok`;
    /// Redis is updated afterwards in the background.
    ///
    /// With a message id the append is idempotent: when the session already holds a
    /// message with that id, its stored record is returned and nothing is added.
    ///
    /// # Durability
    ///
    /// What [`Receipt::durability`] reports, per
    /// [`TranscriptConfig::fsync`](super::TranscriptConfig::fsync):
    ///
    /// - [`FsyncPolicy::Always`] (the default): [`Durability::Synced`]: the file was
    ///   fsynced after the record was written, before `append` returned.
    /// - [`FsyncPolicy::EveryMs`]: [`Durability::Synced`] when the interval had passed
    ///   since the file's last fsync (or this store never synced it), so this append
    ///   synced it; otherwise [`Durability::Written`]: a timer syncs it within the
    ///   interval, even if no other append comes.
    /// - [`FsyncPolicy::Never`]: [`Durability::Written`] until [`flush`](Self::flush)
    ///   (or the app's shutdown) syncs it.
    /// - A repeated message id: with `Always` the file is fsynced again before
    ///   returning `Synced` (the first append's answer, which the caller lost, is not
    ///   known here); otherwise `Written`, which it is at least. A receipt never claims
    ///   more than was reached.
    ///
    /// # Errors
    ///
    /// [`StoreError::TooLarge`] / [`StoreError::InvalidInput`] before any I/O (content
    /// over `max_message_bytes`, an empty or overlong role, id or session id);
    /// [`StoreError::Corrupt`] when the session's file is damaged (nothing is appended
    /// after damage until [`repair`](Self::repair)); [`StoreError::File`] when the write
    /// failed (with `fsync = "always"`, the fsync too: the record is then taken back
    /// out), timed out ([`Error::OutcomeUnknown`]: it may still land — retry with the
    /// same id), the directory's breaker is open, or the wait for the session's writer
    /// (another append to it, slow) or for its file's lock (held by another process: see
    /// [More than one process](TranscriptStore#more-than-one-process)) outlasted the
    /// write deadline ([`Error::Timeout`]: nothing was written).
    ///
    /// [`Error::OutcomeUnknown`]: crate::Error::OutcomeUnknown
    /// [`Error::Timeout`]: crate::Error::Timeout
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
    /// assert_eq!(first.record, again.record);
    /// assert_eq!(store.history("s", 10).await?.records.len(), 1); // stored once
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn append(&self, session: &str, message: Message) -> Result<Receipt, StoreError> {
        self.check(&message)?;
        let key = SessionKey::new(session)?;
        if self.inner.ordered.is_some() {
            return self.append_ordered(key, message).await;
        }
        let inner = &self.inner;
        let session = inner.sessions.get(&key);
        let path = key.file(&inner.dir);
        let mut writer = inner.lock_writer(&session, "transcripts.append").await?;
        let caller_id = message.id.is_some();
        let id = message
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let message = Arc::new(Message {
            id: Some(id.clone()),
            ..message
        });
        // Damage seen once in the whole file: the reader gets a chance to repair a tail
        // a crash left (zeros), once.
        let mut read_damage = false;
        for _ in 0..ROUNDS {
            // Memory is trusted only from a mark: the file as this process's last append
            // (under the cross-process lock) left it.
            let known = writer.mark.filter(|_| writer.loaded);
            let in_memory = caller_id && known.is_some() && writer.ids.contains(&id);
            let (last, message) = (writer.last.seq, Arc::clone(&message));
            let decided = inner
                .appender
                .append_since(&path, known, move |since| {
                    decide(since, last, in_memory, caller_id, &message)
                })
                .await;
            let decided = match decided {
                Ok(decided) => decided,
                Err(e) => {
                    // The write may still land (a timeout) or have half-happened: re-read the
                    // file before the next append rather than guess its last seq.
                    writer.loaded = false;
                    writer.mark = None;
                    session.set_known(None);
                    return Err(append_error(e, inner.write_timeout));
                }
            };
            let Decided {
                value,
                appended,
                mark,
                ..
            } = decided;
            match value {
                Choice::Stale => writer.mark = None,
                Choice::Damaged { whole } => {
                    writer.mark = None;
                    if whole {
                        if read_damage {
                            return Err(damaged(&path));
                        }
                        read_damage = true;
                        if inner.read_file(&path).await?.damaged {
                            return Err(damaged(&path));
                        }
                    }
                }
                Choice::Repeated { record, seen } => {
                    writer.observe(seen, mark);
                    session.set_known(Some(&writer));
                    drop(writer);
                    let record = match record {
                        Some(record) => record,
                        None => inner.find(&path, &id).await?,
                    };
                    return inner.repeated(&path, record).await;
                }
                Choice::Appended { record, line, seen } => {
                    writer.observe(seen, mark);
                    let Some(appended) = appended else {
                        return Err(damaged(&path));
                    };
                    return Ok(self.appended(&key, &session, writer, (record, line), appended.durability));
                }
            }
        }
        Err(StoreError::File(Error::Inner {
            operation: Name::new_static("transcripts.append"),
            source: FsError::new(
                &path,
                Step::Lock,
                io::Error::other(format!(
                    "replaced or damaged by another process at each of {ROUNDS} attempts; nothing was written"
                )),
            ),
            attempts: ROUNDS as u32,
        }))
    }

    /// Books an appended record in the session's writer and queues its push to Redis.
    fn appended(
        &self,
        key: &SessionKey,
        session: &Arc<Session>,
        mut writer: tokio::sync::MutexGuard<'_, Writer>,
        (record, line): (Record, String),
        durability: Durability,
    ) -> Receipt {
        let inner = &self.inner;
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
                line,
                previous,
                first: writer.first.clone(),
            };
            session.pushes.enqueue(push, window.len as usize)
        });
        drop(writer);
        if let Some(turn) = turn {
            let task_inner = Arc::clone(&self.inner);
            let key = key.clone();
            // Shed when the spawner is full: the turn is dropped with the task, the
            // window is then behind the file, which `history` notices and repairs.
            // Boxed: the drainer's future (a Redis call's whole state machine) is many
            // kilobytes, which the spawn would otherwise copy several times per append.
            let drain = Box::pin(async move { task_inner.drain_pushes(key, turn).await });
            let _ = inner.background.spawn("transcripts.cache_push", drain);
        }
        Receipt {
            record,
            durability,
            seq_source: super::SeqSource::File,
        }
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

    /// The receipt of a repeated append of `record`, stored by an earlier one whose
    /// durability is not known here: under `Always` the file is synced again (the
    /// caller was promised `Synced`), otherwise it is at least `Written`.
    async fn repeated(&self, path: &Path, record: Record) -> Result<Receipt, StoreError> {
        let durability = if self.fsync == FsyncPolicy::Always {
            self.appender.sync(path).await?;
            Durability::Synced
        } else {
            Durability::Written
        };
        Ok(Receipt {
            record,
            durability,
            seq_source: super::SeqSource::File,
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
}
