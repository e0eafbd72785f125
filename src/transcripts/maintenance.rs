//! Upkeep of a session's file outside the append path: deleting it (and its window),
//! taking damaged lines out of it, and syncing what the fsync policy left unsynced.

use stayfast_core::fs::Repaired;

use super::{
    TranscriptStore, load,
    record::Record,
    session::{SessionKey, Writer},
};
use crate::StoreError;

impl TranscriptStore {
    /// Removes `session`'s file and its Redis window. Returns whether it had a file.
    ///
    /// Once it returns `Ok`, no record of the deleted session is served or stored in
    /// Redis again: the window's delete also records the deleted incarnation (the
    /// file's first record) in a tombstone set (`{<key_prefix>:<hex>}:deleted`, kept
    /// `max(cache_ttl, 24 h)`), and every push and repopulation carries its
    /// incarnation, so one still in flight — sent before the delete and applied after
    /// it, or issued from a read made before it — is refused by Redis. A session
    /// written again after the delete is a new incarnation, cached as usual.
    ///
    /// With `order = "redis"` it removes this replica's journal, its pending records and
    /// the session's order in Redis; it waits for a replay of the session's pending
    /// records already under way, and appends of the session wait for it, so neither
    /// brings the deleted session back. Other replicas' journals are theirs to delete.
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
        if self.inner.ordered.is_some() {
            return self.delete_ordered(key).await;
        }
        let inner = &self.inner;
        let session = inner.sessions.get(&key);
        let mut writer = inner.lock_writer(&session, "transcripts.delete").await?;
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
    /// assert_eq!(store.append("s", Message::new("user", "two")).await?.record.seq, 2);
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn repair(&self, session: &str) -> Result<Repaired, StoreError> {
        let key = SessionKey::new(session)?;
        let inner = &self.inner;
        let session = inner.sessions.get(&key);
        let mut writer = inner.lock_writer(&session, "transcripts.repair").await?;
        let repaired = if inner.ordered.is_some() {
            inner
                .reader
                .repair(key.file(&inner.dir), super::ordered::is_entry)
                .await
        } else {
            inner
                .reader
                .repair(key.file(&inner.dir), |line| Record::decode(line).is_some())
                .await
        };
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
}
