//! `TranscriptStore`: chat history with the file as the durable record and Redis as the
//! cache of each session's recent window.
//!
//! - **append** assigns the session's next `seq` under its writer lock, appends the
//!   record to the session's file durably (one `write()`, fsync per
//!   [`TranscriptConfig::fsync`]; its [`Receipt`] says which [`Durability`] it
//!   reached), and only then updates Redis, in the background and in seq order (one
//!   drainer per session): a Redis outage never fails or slows an append.
//! - **history** reads the Redis window under its deadline, completed with the
//!   records whose pushes are still on their way; when Redis is slow, down, cold or
//!   behind the file, it reads the file instead (under its own deadline) and
//!   repopulates Redis in the background. Every [`History`] says where it came from and
//!   whether that was a fallback.
//! - Session ids never reach the file system: a session's file is
//!   `<dir>/<sha256(id)>.jsonl` (0600, the directory 0700) and its Redis key
//!   `{<key_prefix>:<sha256(id)>}:log` ([`TranscriptConfig::key_prefix`], `tx` by
//!   default).
//! - Several processes may share the directory: see
//!   [More than one process](TranscriptStore#more-than-one-process); replicas on
//!   separate disks share one order through Redis with `order = "redis"`: see
//!   [Running more than one copy](TranscriptStore#running-more-than-one-copy).
//!
//! # Examples
//!
//! ```
//! use stayfast::transcripts::{Durability, HistorySource, Message, TranscriptConfig, TranscriptStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("stayfast-doc-tx-{}", std::process::id()));
//! let mut config = TranscriptConfig::default();
//! config.dir = dir.clone();
//! let store = TranscriptStore::builder(&config).open().await?; // file-only: no Redis given
//!
//! store.append("session-1", Message::new("user", "Where is my order?")).await?;
//! let reply = store.append("session-1", Message::new("assistant", "On its way.")).await?;
//! assert_eq!(reply.record.seq, 2);
//! assert_eq!(reply.durability, Durability::Synced); // fsync = "always", the default
//!
//! let history = store.history("session-1", 10).await?;
//! assert_eq!(history.records.len(), 2);
//! assert_eq!(history.source, HistorySource::File);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

mod append;
mod builder;
mod config;
mod maintenance;
mod ordered;
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
};

use stayfast_core::{
    CircuitBreaker, Error, FireAndForget, Name,
    fs::{DurableAppend, FsyncPolicy, LogReader, ReadLogError},
};

pub use self::{
    builder::TranscriptStoreBuilder,
    config::{Order, TranscriptConfig},
    ordered::{TRANSCRIPTS_PENDING_RECORDS, TRANSCRIPTS_REPLAY_FAILURES_TOTAL, TRANSCRIPTS_REPLAYED_TOTAL},
    record::{Degradation, History, HistorySource, Message, Receipt, Record, SeqSource},
};
use self::{
    record::End,
    session::{Session, SessionKey, Sessions, Writer},
    window::Window,
};
use crate::StoreError;
/// How durable an appended record is (a [`Receipt`] says it): the file layer's levels.
pub use stayfast_core::fs::Durability;

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
/// # More than one process
///
/// Several processes may append to one directory — a restart overlapping the old
/// process, several workers, a volume shared by the containers of one machine. Each
/// session file is guarded by an advisory lock (`flock`), taken after this process's
/// own per-file lock and held while an append reads the file's last seq and writes its
/// record, and while a rollback, a torn-tail cut, a [`repair`](Self::repair) or a
/// [`delete_session`](Self::delete_session) changes the file. So, across processes as
/// within one:
///
/// - seqs are unique and gap-free per session: the next one comes from the file, under
///   the lock (when the file changed since this process's last append, the new lines are
///   read — only them when it merely grew; nothing is read when it did not change);
/// - a message id is stored once: an append repeated in another process returns the
///   stored record;
/// - a torn last line is cut only by a holder of the lock (a crashed writer's leftover);
///   a reader that cannot take it at once treats the line as not yet written and skips
///   it, never cutting another process's append in progress.
///
/// A wait for the lock is bounded by the write deadline: past it the append fails with
/// [`Error::Timeout`] and nothing was written. A reader does not
/// take the lock (it reads the complete lines), so it may, rarely, serve a record whose
/// fsync then fails in its writer and is taken back out.
///
/// The lock holds on local file systems (ext4, xfs, btrfs, tmpfs, APFS…). On NFS it
/// holds only with working lock support (NFSv4, or NFSv3 with `lockd`; not with the
/// `nolock` mount option), and some FUSE and SMB mounts do not honour it (nor share
/// it between machines): keep the directory local there, or give each process its own.
/// With Redis, the processes sharing a session's keys share its window; a `history`
/// trusts the window when it ends with the last record *this* process knows of, so it
/// can miss records another process appended whose pushes have not reached Redis yet.
/// Replicas on separate disks cannot share one order through their files at all: that
/// needs `order = "redis"` (next section).
///
/// # Running more than one copy
///
/// [`TranscriptConfig::order`] chooses where a session's order comes from:
///
/// - **`"file"`** (the default): the session's file assigns each seq under its lock.
///   One machine's processes may share the directory (above); Redis only caches a
///   window. Replicas on separate disks must not share sessions in this mode: each
///   would number its own messages.
/// - **`"redis"`**: for replicas on separate disks behind a load balancer without
///   sticky sessions, sharing one Redis. One Lua script assigns the seq (`INCR` of the
///   session's counter) and stores the record, atomically, by message id: an id already
///   stored gets its stored seq back and nothing is added, so a retry, a replay or the
///   same message sent to two replicas is stored once. Redis keeps each session's whole
///   history — `{<key_prefix>:<hex>}:seq` (the counter), `…:ids` (a hash, message id →
///   seq) and `…:history` (a list, record `seq` at index `seq - 1`) — with no TTL
///   (Redis is the order's system of record; [`delete_session`](Self::delete_session)
///   removes them); the file order's `…:log` and `…:deleted` keys are not used. Each
///   replica's file is its **journal** of what it acknowledged: the record is written
///   (and fsynced per [`TranscriptConfig::fsync`]) *before* Redis is asked, and the
///   seq Redis gave is journaled after (a confirmation line, not fsynced on its own: a
///   lost one only makes the record look pending, and its replay returns the stored
///   seq).
///
/// While Redis is unreachable (down, slow past its deadline, its circuit open) an
/// append still succeeds, journaled only: its [`Receipt`] says
/// [`SeqSource::Pending`] ([`Receipt::seq`] is `None`, `record.seq` 0, never a real
/// seq). A background replay sends the pending records to the script when Redis
/// answers again — woken by an append that reached Redis, and every 250 ms while any
/// is pending — in this replica's journal order per session, in batches, each record
/// stored once whatever the retries; a store opened on a directory with pending records
/// replays them (the open reads every journal in the directory once to find them). An
/// append to a session with records still pending queues behind them (pending too), so
/// one replica's records of a session keep their order in Redis. Records of different
/// replicas journaled during one outage are ordered by when each replica replays them.
/// [`pending`](Self::pending) counts them; `history` during the outage serves this
/// replica's journal, with [`History::partial`] set (other replicas' records are
/// missing, its own pending ones have seq 0).
///
/// What an acknowledged append survives, in redis order:
///
/// - its **replica's journal** holds it per the fsync policy (`always`: a power loss of
///   that machine), whether Redis answered or not;
/// - its **seq and its place in the shared history** are as durable as Redis makes the
///   script's writes: with AOF `appendfsync always`, a Redis crash or restart; with
///   `everysec` (Redis's default when AOF is on), up to about a second of writes can be
///   lost — the seqs of those appends may then be handed out again to other records;
///   without persistence, a Redis restart loses the whole order. The journal does not
///   re-seed a Redis that lost its data: run Redis with AOF;
/// - **replicas**: with [`wait_replicas`](TranscriptConfig::wait_replicas) = N, the
///   append sends `WAIT N wait_timeout` after the script, on the same connection, and
///   [`SeqSource::Redis`] says how many Redis replicas acknowledged the write; fewer
///   than N (the timeout passed) is reported, not an error. A failover to a replica
///   that had not received the write loses it (the Redis replication caveat `WAIT`
///   narrows but does not close).
///
/// The cost, measured on the chaos test's machine: one Redis round trip per append
/// (two commands with `WAIT`, one pipeline), plus the journal's write and fsync.
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
    /// The appender's policy: what a repeated append's receipt can claim.
    fsync: FsyncPolicy,
    window: Option<Window>,
    background: FireAndForget,
    appender: DurableAppend,
    reader: LogReader,
    sessions: Sessions,
    /// `order = "redis"`: the script's Redis, the pending records, the replay's wake-up.
    ordered: Option<Arc<ordered::RedisOrder>>,
    /// The transcript directory's breaker (`fs.transcripts`), kept for
    /// [`TranscriptStore::breaker`]: the appender and reader hold their own clones.
    breaker: CircuitBreaker,
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

    /// The transcript directory's breaker (`target` = `fs.transcripts`), shared by
    /// every append and read: its state for a readiness check.
    ///
    /// ```
    /// # use stayfast::{breaker::State, transcripts::{TranscriptConfig, TranscriptStore}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-breaker-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// assert_eq!(store.breaker().target().as_str(), "fs.transcripts");
    /// assert_eq!(store.breaker().state(), State::Closed);
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }
}

/// Fills `writer` from the file's records.
fn load(writer: &mut Writer, session: &Session, records: &[Record]) {
    writer.last = End::of(records.last());
    writer.first = End::of(records.first());
    writer.ids = records.iter().map(|r| r.id.clone()).collect();
    writer.loaded = true;
    // Read without the file's cross-process lock: the next append checks it whole.
    writer.mark = None;
    session.set_known(Some(writer));
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
        self.lock_within(&session.writer, operation).await
    }

    /// `lock`, waited for no longer than the write deadline (then a timeout of
    /// `operation`).
    pub(crate) async fn lock_within<'a, T>(
        &self,
        lock: &'a tokio::sync::Mutex<T>,
        operation: &'static str,
    ) -> Result<tokio::sync::MutexGuard<'a, T>, StoreError> {
        // Free (the common case: one append of a session at a time): no timer to arm.
        if let Ok(guard) = lock.try_lock() {
            return Ok(guard);
        }
        tokio::time::timeout(self.write_timeout, lock.lock())
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
