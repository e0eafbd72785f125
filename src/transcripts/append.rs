//! The write path: `append` assigns the session's next seq under its writer lock,
//! writes the record to the file, then queues its push to the Redis window.

use std::{path::Path, sync::Arc, time::SystemTime};

use stayfast_core::fs::FsyncPolicy;

use super::{
    Durability, Inner, TranscriptStore, load,
    pushes::{Push, Turn},
    record::{End, MAX_ID_BYTES, MAX_ROLE_BYTES, Message, Receipt, Record},
    session::SessionKey,
    window::Pushed,
};
use crate::StoreError;

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
    /// (another append to it, slow) outlasted the write deadline ([`Error::Timeout`]:
    /// nothing was written).
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
            let record = inner.find(&path, id).await?;
            return inner.repeated(&path, record).await;
        }
        let record = Record {
            seq: writer.last.seq + 1,
            id: message.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            role: message.role,
            content: message.content,
            at: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        };
        let appended = match inner.appender.append(&path, record.encode()).await {
            Ok(appended) => appended,
            Err(e) => {
                // The write may still land (a timeout) or have half-happened: re-read the
                // file before the next append rather than guess its last seq.
                writer.loaded = false;
                session.set_known(None);
                return Err(e.into());
            }
        };
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
        Ok(Receipt {
            record,
            durability: appended.durability,
        })
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
        Ok(Receipt { record, durability })
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
